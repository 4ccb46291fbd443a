"""The registry: every file, job, event, metric, checkpoint and model tunelab knows.

`Store` is the only code that queries the registry's tables. Its queries are SQLAlchemy
Core expressions over the tables of `registry.schema`, one text for SQLite (the default)
and PostgreSQL (`TUNELAB_DATABASE_URL=postgresql://...`, or a URL passed as `path`, for
workers on several machines); `registry.database` holds the connection and what each
database guarantees (SQLite's WAL mode, immediate write transactions and lock retries;
read-only registries; migrations on open). Rows come back as the typed records of
`tunelab.registry.records` (JSON columns decoded), the same types from either database.

Open one `Store` per thread: a SQLite connection must not be shared between threads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Select, Table, delete, func, insert, or_, select, tuple_, update

from tunelab.registry.aliases import ModelAliases
from tunelab.registry.database import Database
from tunelab.registry.eval_runs import EvalRuns
from tunelab.registry.records import Checkpoint, Event, File, Job, Model, Record, not_found
from tunelab.registry.schema import files, job_checkpoints, job_events, job_metrics, jobs, models
from tunelab.registry.writes import JobChanges, NewJob, check_names, new_id
from tunelab.settings import get_settings

if TYPE_CHECKING:
    from typing_extensions import Unpack

R = TypeVar("R", bound=Record)


def now() -> int:
    return int(time.time())


class Store(EvalRuns, ModelAliases):
    """The registry at `path`, a SQLite file or a PostgreSQL URL (default:
    `$TUNELAB_DATABASE_URL` when set, else `$TUNELAB_HOME/registry.db`)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            path = get_settings().database_url or get_settings().registry_path
        self._db = Database(path)
        self.path = self._db.path
        self.read_only = self._db.read_only

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self._db.version()

    def _one(self, record: type[R], query: Select[Any]) -> R | None:
        row = self._db.execute(query).mappings().first()
        return record.from_row(row) if row is not None else None

    def _by_either_id(self, record: type[R], table: Table, noun: str, key: str) -> R:
        """The `noun` (file or job) whose tunelab id, or else whose provider's id, is `key`."""
        by_id = table.c.id == key
        query = select(table).where(or_(by_id, table.c[f"provider_{noun}_id"] == key))
        row = self._one(record, query.order_by(by_id.desc()).limit(1))
        if row is None:
            raise not_found(noun, key)
        return row

    def _all(self, record: type[R], query: Select[Any]) -> list[R]:
        return [record.from_row(row) for row in self._db.execute(query).mappings()]

    # -- files ------------------------------------------------------------------------------

    def add_file(
        self,
        *,
        provider: str,
        filename: str,
        purpose: str,
        bytes: int,
        checksum: str,
        status: str,
        path: str | None = None,
        provider_file_id: str | None = None,
        validation: dict[str, Any] | None = None,
    ) -> File:
        file_id = new_id("file")
        row = {
            "id": file_id,
            "provider": provider,
            "provider_file_id": provider_file_id,
            "filename": filename,
            "purpose": purpose,
            "bytes": bytes,
            "checksum": checksum,
            "path": path,
            "status": status,
            "validation": validation,
            "created_at": now(),
        }
        with self._db.write() as db:
            db.execute(insert(files).values(row))
        return self.get_file(file_id)

    def get_file(self, file_id: str) -> File:
        """A file by tunelab's id or by its provider's id."""
        return self._by_either_id(File, files, "file", file_id)

    def find_file(self, provider: str, checksum: str, purpose: str) -> File | None:
        """A file with these bytes already registered for `provider` (an upload to reuse)."""
        query = select(files).where(
            files.c.provider == provider,
            files.c.checksum == checksum,
            files.c.purpose == purpose,
            files.c.status != "error",
        )
        return self._one(File, query.order_by(files.c.created_at.desc()).limit(1))

    def list_files(
        self, limit: int = 100, *, provider: str | None = None, purpose: str | None = None
    ) -> list[File]:
        """Newest first."""
        query = select(files)
        if provider is not None:
            query = query.where(files.c.provider == provider)
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        newest_first = (files.c.created_at.desc(), files.c.rowid.desc())
        return self._all(File, query.order_by(*newest_first).limit(limit))

    def delete_file(self, file_id: str) -> None:
        file = self.get_file(file_id)
        with self._db.write() as db:
            db.execute(delete(files).where(files.c.id == file.id))

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, **fields: Unpack[NewJob]) -> Job:
        """Insert a job; `provider`, `model` and `status` are required, `id` is generated."""
        check_names("create_job", fields, NewJob)
        job_id = fields.get("id") or new_id("ftjob")
        row = {"created_at": now(), **fields, "id": job_id, "updated_at": time.time()}
        with self._db.write() as db:
            db.execute(insert(jobs).values(row))
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> Job:
        """A job by tunelab's id or by its provider's id."""
        return self._by_either_id(Job, jobs, "job", job_id)

    def list_jobs(
        self,
        *,
        limit: int = 20,
        after: str | None = None,
        provider: str | None = None,
        statuses: tuple[str, ...] | None = None,
    ) -> list[Job]:
        """Newest first; `after` (a job id) continues a previous page."""
        query = select(jobs)
        if provider is not None:
            query = query.where(jobs.c.provider == provider)
        if statuses:
            query = query.where(jobs.c.status.in_(statuses))
        if after is not None:
            anchor = self.get_job(after)
            anchors = jobs.alias("anchor")
            anchor_row = select(anchors.c.rowid).where(anchors.c.id == anchor.id)
            position = tuple_(anchor.created_at, anchor_row.scalar_subquery())
            query = query.where(tuple_(jobs.c.created_at, jobs.c.rowid) < position)
        newest_first = (jobs.c.created_at.desc(), jobs.c.rowid.desc())
        return self._all(Job, query.order_by(*newest_first).limit(limit))

    def update_job(
        self, job_id: str, *, expect: tuple[str, ...] | None = None, **fields: Unpack[JobChanges]
    ) -> Job | None:
        """Set `fields` on the job; with `expect`, only if its status is one of those.

        Returns the updated job, or None when `expect` did not match (someone else moved the
        job first: a compare-and-set, so two processes never both act on one transition).
        """
        check_names("update_job", fields, JobChanges)
        statement = update(jobs).where(jobs.c.id == job_id)
        if expect is not None:
            statement = statement.where(jobs.c.status.in_(expect))
        with self._db.write() as db:
            changed = db.execute(statement.values(**fields, updated_at=time.time())).rowcount
        if not changed:
            if expect is None:
                self.get_job(job_id)  # raises job_not_found
            return None
        return self.get_job(job_id)

    def claim_next_job(self, provider: str, worker: Mapping[str, Any]) -> Job | None:
        """Atomically move the oldest queued job of `provider` to running for `worker`.

        `worker` holds `worker_id`, `worker_pid` and `worker_host`. Two workers never claim
        the same job: the select and the update share one write transaction, immediate on
        SQLite; on PostgreSQL the select locks the row and skips those other workers hold.
        """
        oldest_queued = (
            select(jobs.c.id)
            .where(jobs.c.provider == provider, jobs.c.status == "queued")
            .order_by(jobs.c.created_at, jobs.c.rowid)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        stamp = time.time()
        claimed = {
            "status": "running",
            "raw_status": "running",
            "worker_id": worker["worker_id"],
            "worker_pid": worker["worker_pid"],
            "worker_host": worker["worker_host"],
            "heartbeat_at": stamp,
            "updated_at": stamp,
            "error_code": None,
            "error_message": None,
        }
        with self._db.write() as db:
            job_id = db.execute(oldest_queued).scalar()
            if job_id is None:
                return None
            db.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(**claimed, started_at=func.coalesce(jobs.c.started_at, int(stamp)))
            )
        return self.get_job(job_id)

    def heartbeat(self, job_id: str, worker_id: str) -> int:
        """Record that `worker_id` is alive on the job; returns its `cancel_requested` flag."""
        mine = update(jobs).where(jobs.c.id == job_id, jobs.c.worker_id == worker_id)
        with self._db.write() as db:
            db.execute(mine.values(heartbeat_at=time.time()))
            flag = db.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
        return int(flag or 0)

    def delete_job(self, job_id: str) -> None:
        job = self.get_job(job_id)
        with self._db.write() as db:
            db.execute(delete(jobs).where(jobs.c.id == job.id))

    # -- events, metrics, checkpoints -------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        created_at: int | None = None,
        event_id: str | None = None,
    ) -> None:
        """Append an event; an `event_id` seen before (a provider's, re-synced) is ignored."""
        row = {
            "id": event_id or new_id("ftevent"),
            "job_id": job_id,
            "created_at": created_at or now(),
            "level": level,
            "type": type,
            "message": message,
            "data": data,
        }
        with self._db.write() as db:
            db.execute(self._db.insert(job_events).values(row).on_conflict_do_nothing())

    def list_events(self, job_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Oldest first; `seq` orders them and `after_seq` continues a previous read."""
        query = select(job_events).where(job_events.c.job_id == job_id)
        query = query.where(job_events.c.seq > after_seq)
        return self._all(Event, query.order_by(job_events.c.seq).limit(limit))

    def add_metric(self, job_id: str, step: int, data: dict[str, Any]) -> None:
        """The engine's record of one step; a step recorded again is replaced."""
        row = {"job_id": job_id, "step": step, "data": data}
        with self._db.write() as db:
            db.execute(self._db.upsert(job_metrics, key=("job_id", "step")), row)

    def list_metrics(self, job_id: str) -> list[dict[str, Any]]:
        """The engine's per-step records (step, loss, tokens, ...), as it reported them."""
        query = select(job_metrics.c.data).where(job_metrics.c.job_id == job_id)
        return list(self._db.execute(query.order_by(job_metrics.c.step)).scalars())

    def add_checkpoint(
        self,
        job_id: str,
        step: int,
        *,
        fine_tuned_model_checkpoint: str | None,
        metrics: dict[str, Any] | None = None,
        created_at: int | None = None,
        checkpoint_id: str | None = None,
    ) -> None:
        """Record a checkpoint; one recorded again at the same step is replaced."""
        row = {
            "id": checkpoint_id or new_id("ftckpt"),
            "job_id": job_id,
            "step": step,
            "created_at": created_at or now(),
            "fine_tuned_model_checkpoint": fine_tuned_model_checkpoint,
            "metrics": metrics or {},
        }
        with self._db.write() as db:
            db.execute(self._db.upsert(job_checkpoints, key=("job_id", "step")), row)

    def delete_checkpoints(self, job_id: str, steps: list[int]) -> None:
        doomed = (job_checkpoints.c.job_id == job_id, job_checkpoints.c.step.in_(steps))
        with self._db.write() as db:
            db.execute(delete(job_checkpoints).where(*doomed))

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Newest first, as OpenAI lists them."""
        query = select(job_checkpoints).where(job_checkpoints.c.job_id == job_id)
        return self._all(Checkpoint, query.order_by(job_checkpoints.c.step.desc()))

    # -- models -----------------------------------------------------------------------------

    def put_model(
        self,
        model_id: str,
        *,
        provider: str,
        kind: str,
        base_model: str | None = None,
        job_id: str | None = None,
        path: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Model:
        """Record (or update) a model: "base" or "fine-tuned", and where it lives."""
        row = {
            "id": model_id,
            "provider": provider,
            "kind": kind,
            "base_model": base_model,
            "job_id": job_id,
            "path": path,
            "created_at": now(),
            "details": details or {},
        }
        with self._db.write() as db:
            db.execute(self._db.upsert(models, key=("id",)), row)
        return self.get_model(model_id)

    def find_model(self, model_id: str) -> Model | None:
        return self._one(Model, select(models).where(models.c.id == model_id))

    def get_model(self, model_id: str) -> Model:
        row = self.find_model(model_id)
        if row is None:
            raise not_found("model", model_id)
        return row

    def list_models(self, provider: str | None = None) -> list[Model]:
        query = select(models).order_by(models.c.created_at.desc(), models.c.rowid.desc())
        if provider is not None:
            query = query.where(models.c.provider == provider)
        return self._all(Model, query)

    def delete_model(self, model_id: str) -> None:
        self.get_model(model_id)
        with self._db.write() as db:
            db.execute(delete(models).where(models.c.id == model_id))
