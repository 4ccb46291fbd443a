"""Jobs: create one (any provider that trains), list them by status, and a live job page.

The page is server-rendered and kept current by server-sent events: every second the
server reads the registry (in a thread) and sends the parts that changed (status and
progress, the loss chart, events, checkpoints). Training runs in the worker, never here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tunelab.catalog import DEFAULT_MODEL
from tunelab.curves import METHOD_METRICS, loss_chart, metric_chart
from tunelab.errors import TunelabError
from tunelab.evals.graders import parse_grader
from tunelab.providers import jobs
from tunelab.providers.base import TERMINAL_STATUSES
from tunelab.providers.local import jobs as local
from tunelab.providers.methods import METHOD_TYPES, SUPERVISED, describe_method
from tunelab.providers.models import list_models
from tunelab.providers.registry import runs_here, this_machine
from tunelab.registry import Store
from tunelab.server.ui.web import (
    error_page,
    form_number,
    form_text,
    page,
    see_other,
    sse,
    templates,
    trusted_html,
)

router = APIRouter()
STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
TRAINING_PROVIDERS = jobs.PROVIDERS
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
# Settings of `tunelab train` the form offers beside OpenAI's three (local jobs).
LOCAL_SETTINGS = (("max_steps", int), ("lora_rank", int), ("max_seq_len", int), ("eval_every", int))
# Each training method's own settings (`TrainConfig`'s names), offered when it is chosen.
METHOD_SETTINGS = {
    "dpo": (("dpo_beta", float),),
    "reinforcement": (("rl_group_size", int), ("rl_max_answer_tokens", int)),
}
LIVE_SECONDS = 1.0


@router.get("/jobs")
async def jobs_list(request: Request, status: str | None = None):
    found = await run_in_threadpool(jobs.list_jobs, limit=200)
    shown = [j for j in found if status in (None, "", j.status)]
    return page(request, "jobs.html", jobs=shown, status=status, statuses=STATUSES)


@router.get("/jobs/new")
async def job_form(
    request: Request,
    training_file: str | None = None,
    validation_file: str | None = None,
    model: str | None = None,
):
    with Store() as store:
        files = [
            f
            for f in store.list_files(limit=200, provider=this_machine())
            if f.status == "processed"
        ]
    base_models = [m for m in list_models(kind="base") if m.provider in TRAINING_PROVIDERS]
    tuned = [m for m in list_models() if m.kind != "base" and runs_here(m.provider)]
    return page(
        request,
        "job_new.html",
        nav="jobs",
        files=files,
        base_models=base_models,
        tuned=tuned,
        providers=TRAINING_PROVIDERS,
        methods=METHOD_TYPES,
        chosen_model=model or DEFAULT_MODEL,
        training_file=training_file,
        validation_file=validation_file,
        error=None,
    )


@router.post("/jobs")
async def job_create(request: Request):
    form = await request.form()
    try:
        grader = await _grader(form)
        spec = await run_in_threadpool(_spec, form, grader)
        start = bool(form.get("start")) and request.app.state.config.start_worker
        job = await run_in_threadpool(jobs.create_job, spec, start_worker=start)
    except TunelabError as err:
        return error_page(request, err)
    return see_other(f"/jobs/{job.id}")


async def _grader(form) -> dict | None:
    """A reinforcement job's grader: the uploaded file, else the JSON box; checked as
    `POST /v1/fine_tuning/jobs` checks it. None for the other methods."""
    if form_text(form, "training_method", SUPERVISED) != "reinforcement":
        return None
    upload = form.get("grader_file")
    text = (
        (await upload.read()).decode("utf-8", "replace") if getattr(upload, "filename", "") else ""
    )
    text = text.strip() or form_text(form, "grader", "")
    if not text:
        return None  # JobSpec says a reinforcement job needs one
    try:
        grader = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise TunelabError("invalid_grader", f"the grader is not JSON: {err}.") from None
    parse_grader(grader)
    return grader


def _method_settings(form) -> dict:
    """The chosen method and its own settings, under `TrainConfig`'s names."""
    method = form_text(form, "training_method", SUPERVISED)
    if method not in METHOD_TYPES:
        raise TunelabError("invalid_form", f"training method {method!r} is not one of ours.")
    if method == SUPERVISED:
        return {}
    own = {name: form_number(form, name, kind) for name, kind in METHOD_SETTINGS.get(method, ())}
    return {"training_method": method} | {k: v for k, v in own.items() if v is not None}


def _spec(form, grader: dict | None = None) -> jobs.JobSpec:
    """The form as a JobSpec: files by registry id, only the settings the user gave."""
    with Store() as store:
        train = store.get_file(form_text(form, "training_file", ""))
        val_id = form_text(form, "validation_file")
        val = store.get_file(val_id) if val_id else None
    settings = {
        name: form_number(
            form, name, float if name.startswith("learning") else int, allow_auto=True
        )
        for name in HYPERPARAMETERS
    }
    settings.update({name: form_number(form, name, kind) for name, kind in LOCAL_SETTINGS})
    settings.update(_method_settings(form))
    return jobs.JobSpec(
        training_file=Path(train.path),
        validation_file=Path(val.path) if val else None,
        model=form_text(form, "model", DEFAULT_MODEL),
        provider=form_text(form, "provider", this_machine()),
        hyperparameters={k: v for k, v in settings.items() if v is not None},
        suffix=form_text(form, "suffix"),
        name=form_text(form, "name"),
        seed=form_number(form, "seed", int),
        grader=grader,
    )


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str):
    try:
        view = await run_in_threadpool(_view, job_id)
    except TunelabError as err:
        return error_page(request, err, 404)
    return page(request, "job.html", nav="jobs", **view)


def _view(job_id: str) -> dict:
    """Everything the job page shows, read once."""
    job = jobs.get_job(job_id)
    metrics = jobs.list_metrics(job_id)
    method = job.method or SUPERVISED
    return {
        "job": job,
        "method": describe_method(job.hyperparameters) if job.method else method,
        "grader": job.metadata.get(local.GRADER_KEY),
        "chart": trusted_html(loss_chart(metrics, element_id="loss-chart") or NO_STEPS),
        "method_charts": _method_charts(method, metrics),
        "events": jobs.list_events(job_id)[-200:][::-1],
        "checkpoints": jobs.list_checkpoints(job_id),
        "finished": job.status in TERMINAL_STATUSES,
        "eta": max(0, job.estimated_finish - time.time()) if job.estimated_finish else None,
    }


def _method_charts(method: str, metrics: list[dict]):
    """The curves of the method's own metrics (DPO's preference accuracy and reward margin,
    reinforcement's mean reward), each as (title, chart), once steps have them."""
    charts = []
    for name in METHOD_METRICS.get(method, ()):
        chart = metric_chart(metrics, name, element_id=f"{name.replace('_', '-')}-chart")
        if chart:
            charts.append((name.replace("_", " ").capitalize(), trusted_html(chart)))
    return charts


NO_STEPS = '<p class="muted" id="loss-chart-empty">No steps yet.</p>'
PARTS = ("status", "chart", "method_charts", "events", "checkpoints")


@router.get("/jobs/{job_id}/live")
async def job_live(request: Request, job_id: str):
    """Server-sent events: each part of the job page again whenever it changed."""

    async def events():
        sent: dict[str, str] = {}
        while not await request.is_disconnected():
            view = await run_in_threadpool(_view, job_id)
            for part in PARTS:
                html = templates.get_template(f"_job_{part}.html").render(request=request, **view)
                if sent.get(part) != html:
                    sent[part] = html
                    yield sse(part, html)
            if view["finished"]:
                yield sse("done", "")
                return
            await asyncio.sleep(LIVE_SECONDS)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.post("/jobs/{job_id}/{action}")
async def job_action(request: Request, job_id: str, action: str):
    start = request.app.state.config.start_worker
    actions = {
        "cancel": jobs.cancel_job,
        "pause": jobs.pause_job,
        "resume": lambda i: jobs.resume_job(i, start_worker=start),
        "run": lambda i: _run(i, start),
        "delete": jobs.delete_job,
    }
    if action not in actions:
        return error_page(request, TunelabError("unknown_action", f"no action {action!r}."), 404)
    try:
        await run_in_threadpool(actions[action], job_id)
    except TunelabError as err:
        return error_page(request, err)
    return see_other("/jobs" if action == "delete" else f"/jobs/{job_id}")


def _run(job_id: str, start: bool) -> None:
    """The "Run" button of a job created without starting: start a worker for the queue."""
    job = jobs.get_job(job_id)
    if job.status != "queued" or not runs_here(job.provider):
        raise TunelabError("job_not_waiting", f"job {job_id} is {job.status}, not waiting to run.")
    if start:
        local.start_worker()
