"""`/v1/fine_tuning/jobs`: OpenAI's fine-tuning API over local jobs in the registry.

Creating a job queues it and (unless the server was told not to) starts the local worker;
training never runs inside a request. Lists are newest first with cursor pagination
(`after`, `limit`), as the SDK's pagers expect.

Every handler reads or writes the registry, blocking I/O: they are plain functions, which
FastAPI runs in its thread pool, so a slow registry never stalls the event loop (and each
opens its `Store` in the thread it runs in).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tunelab.errors import TunelabError
from tunelab.evals.graders import parse_grader
from tunelab.providers import jobs as api
from tunelab.providers.methods import SUPERVISED, settings_from_method
from tunelab.providers.registry import DEFAULT_PROVIDER as THIS_MACHINE  # the server's jobs
from tunelab.providers.registry import runs_here
from tunelab.providers.wire import checkpoint_object, event_object, job_object
from tunelab.registry import Job, Store
from tunelab.server.errors import ApiError
from tunelab.server.model_access import check_served

router = APIRouter()
OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


class MethodSection(BaseModel):
    """`method.supervised` or `method.dpo`: the method's hyperparameters."""

    model_config = ConfigDict(extra="forbid")  # an unknown field is refused by name
    hyperparameters: dict = Field(default_factory=dict)


class ReinforcementSection(MethodSection):
    """`method.reinforcement`: its hyperparameters and the grader that scores the answers."""

    grader: dict | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused by name
    type: str = SUPERVISED
    supervised: MethodSection | None = None
    dpo: MethodSection | None = None
    reinforcement: ReinforcementSection | None = None


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused by name
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict | None = None  # OpenAI's legacy place for them
    method: Method | None = None
    suffix: str | None = None  # its limits are the API's (`JobSpec`), as for every caller
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)  # what training can seed
    metadata: dict[str, str] | None = None


# What local training does of OpenAI's methods.
LOCAL_METHODS = ("supervised", "dpo", "reinforcement")


def settings_of(body: CreateJob) -> dict:
    """Settings from `method.<type>.hyperparameters` or the legacy field; "auto" means
    default."""
    kind = body.method.type if body.method is not None else SUPERVISED
    if kind not in LOCAL_METHODS:
        raise ApiError(
            400,
            f"method {kind!r} is not supported by local jobs; use one of "
            f"{', '.join(LOCAL_METHODS)}.",
            code="unsupported_value",
            param="method.type",
        )
    given = dict(body.hyperparameters or {})
    section = getattr(body.method, kind, None) if body.method is not None else None
    if section is not None:
        given.update(section.hyperparameters)
    settings = settings_from_method(kind, given)
    return {k: v for k, v in settings.items() if v != "auto"}


def grader_of(body: CreateJob) -> dict | None:
    """A reinforcement job's grader, checked as `graders/validate` checks one."""
    section = body.method.reinforcement if body.method is not None else None
    if section is None or section.grader is None:
        return None
    try:
        parse_grader(section.grader)
    except TunelabError as err:
        raise ApiError(
            400, err.message, code=err.code, param="method.reinforcement.grader"
        ) from None
    return section.grader


@router.post("/fine_tuning/jobs")
def create_job(body: CreateJob, request: Request) -> dict:
    check_served(body.model, request.app.state.config)
    job = api.create_job_from_files(
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        hyperparameters=settings_of(body),
        suffix=body.suffix,
        seed=body.seed,
        metadata=body.metadata,
        start_worker=request.app.state.config.start_worker,
        grader=grader_of(body),
    )
    return job_object(job)


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict:
    wanted = _metadata_filter(request)
    limit = max(1, min(limit, 100))
    with Store() as store:
        if after is not None:
            store.get_job(after)  # 404 for an unknown cursor
        rows = store.list_jobs(
            limit=100_000 if wanted else limit + 1, after=after, provider=THIS_MACHINE
        )
    if wanted:
        rows = [r for r in rows if all(r.metadata.get(k) == v for k, v in wanted.items())]
    page = rows[:limit]
    return {"object": "list", "data": [job_object(r) for r in page], "has_more": len(rows) > limit}


def _metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query parameters, as the SDK sends `metadata={...}`."""
    return {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }


def _local_job(job_id: str) -> Job:
    job = api.get_job(job_id)
    if not runs_here(job.provider):
        raise ApiError(404, f"No fine-tuning job {job_id} on this server.", code="job_not_found")
    return job


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str) -> dict:
    return job_object(_local_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str) -> dict:
    _local_job(job_id)
    return job_object(api.cancel_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str) -> dict:
    _local_job(job_id)
    return job_object(api.pause_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, request: Request) -> dict:
    _local_job(job_id)
    start = request.app.state.config.start_worker
    return job_object(api.resume_job(job_id, start_worker=start))


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(job_id: str, after: str | None = None, limit: int = 20) -> dict:
    job = _local_job(job_id)
    with Store() as store:
        events = store.list_events(job.id, limit=1_000_000)[::-1]  # newest first
    data = [event_object(e) for e in events]
    return _page(data, after, limit)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, after: str | None = None, limit: int = 10) -> dict:
    job = _local_job(job_id)
    data = [checkpoint_object(p) for p in api.list_checkpoints(job.id)]
    return _page(data, after, limit)


def _page(data: list[dict], after: str | None, limit: int) -> dict:
    if after is not None:
        ids = [item["id"] for item in data]
        if after not in ids:
            raise ApiError(
                404, f"No item {after} to continue after.", code="not_found", param="after"
            )
        data = data[ids.index(after) + 1 :]
    limit = max(1, min(limit, 100))
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit}
