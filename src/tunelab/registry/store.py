"""The registry: every file, job, event, metric, checkpoint and model tunelab knows.

`Store` is the only code that touches SQL. SQLite in WAL mode lets readers run beside one
writer; every write is an immediate transaction (the write lock is taken up front, so two
writers queue on the busy timeout instead of failing mid-transaction), and a lock that
outlasts the timeout is retried rather than shown to the user as "database is locked".
Rows come back as the typed records of `tunelab.registry.records` (JSON columns decoded), the
same types any other backend returns.

Open one `Store` per thread: a SQLite connection must not be shared between threads.

With `TUNELAB_DATABASE_URL=postgresql://...` (or a URL passed as `path`) the registry lives
on PostgreSQL instead, for workers on several machines: the same queries and migrations,
translated by `registry.postgres`, and a claim that skips rows other workers hold.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import orjson

from tunelab.errors import TunelabError
from tunelab.io import can_create
from tunelab.registry.migrations import MIGRATIONS
from tunelab.registry.postgres import PostgresConnection
from tunelab.registry.postgres import is_url as is_postgres_url
from tunelab.registry.records import (
    Checkpoint,
    EvalOutput,
    EvalRun,
    Event,
    File,
    Job,
    Model,
    Record,
)
from tunelab.settings import get_settings

R = TypeVar("R", bound=Record)
BUSY_TIMEOUT_MS = 30_000
LOCK_RETRIES = 20  # beyond the busy timeout: 10 minutes of a held lock before giving up
JSON_COLUMNS = frozenset(
    {
        "validation",
        "hyperparameters",
        "resolved_hyperparameters",
        "metadata",
        "progress",
        "data",
        "metrics",
        "details",
        "models",
        "options",
        "output",
    }
)
JOB_COLUMNS = frozenset(
    {
        "provider", "provider_job_id", "name", "model", "training_file", "validation_file",
        "hyperparameters", "resolved_hyperparameters", "method", "suffix", "seed", "metadata",
        "status", "raw_status", "created_at", "started_at", "finished_at", "error_code",
        "error_message", "fine_tuned_model", "trained_tokens", "estimated_finish",
        "output_dir", "worker_id", "worker_pid", "worker_host", "heartbeat_at",
        "cancel_requested", "progress",
    }
)  # fmt: skip


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `ftjob-` and 24 random hex digits."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


EVAL_COLUMNS = frozenset(
    {"status", "finished_at", "metrics", "json_path", "html_path", "error_message"}
)


class EvalRuns:
    """Evaluation runs: what was evaluated, on what data, the metrics and every answer.

    Mixed into `Store` (it uses the store's transaction plumbing).
    """

    def create_eval_run(
        self, kind: str, *, models: list[str], data: dict, options: dict
    ) -> EvalRun:
        row = {"id": new_id("evalrun"), "kind": kind, "status": "running", "created_at": now(),
               "models": models, "data": data, "options": options}  # fmt: skip
        with self._write() as db:
            _insert(db, "eval_runs", row)
        return self.get_eval_run(row["id"])

    def update_eval_run(self, run_id: str, **fields) -> EvalRun:
        unknown = set(fields) - EVAL_COLUMNS
        if unknown:
            raise ValueError(f"unknown eval run fields: {sorted(unknown)}")
        columns = ", ".join(f"{name} = ?" for name in fields)
        values = [_encode(name, value) for name, value in fields.items()]
        with self._write() as db:
            db.execute(f"UPDATE eval_runs SET {columns} WHERE id = ?", (*values, run_id))
        return self.get_eval_run(run_id)

    def get_eval_run(self, run_id: str) -> EvalRun:
        row = self._one(EvalRun, "SELECT * FROM eval_runs WHERE id = ?", (run_id,))
        if row is None:
            raise TunelabError(
                "eval_run_not_found",
                f"no evaluation run {run_id} in the registry.",
                hint="`tunelab eval list` shows the runs",
            )
        return row

    def list_eval_runs(self, limit: int = 50, kind: str | None = None) -> list[EvalRun]:
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        return self._all(
            EvalRun,
            f"SELECT * FROM eval_runs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )

    def add_eval_outputs(self, run_id: str, model: str, outputs: list[dict]) -> None:
        rows = [(run_id, model, index, _encode("output", out)) for index, out in enumerate(outputs)]
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO eval_outputs (run_id, model, item, output) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )

    def list_eval_outputs(self, run_id: str, model: str | None = None) -> list[EvalOutput]:
        where, params = ("AND model = ?", (model,)) if model else ("", ())
        return self._all(
            EvalOutput,
            f"SELECT model, item, output FROM eval_outputs WHERE run_id = ? {where} "
            "ORDER BY model, item",
            (run_id, *params),
        )


class Store(EvalRuns):
    """The registry at `path`, a SQLite file or a PostgreSQL URL (default:
    `$TUNELAB_DATABASE_URL` when set, else `$TUNELAB_HOME/registry.db`)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            path = get_settings().database_url or get_settings().registry_path
        self._skip_locked = ""
        if is_postgres_url(path):
            self.path, self.read_only = str(path), False
            self._db = PostgresConnection(self.path)
            self._skip_locked = self._db.skip_locked
            self._migrate()
            return
        self.path = Path(path)
        # A registry in a place that cannot be written (a read-only mount) is opened
        # read-only, so that listing and showing still work; a write says why it cannot.
        self.read_only = not can_create(self.path)
        try:
            self._db = self._open_read_only() if self.read_only else self._open()
        except sqlite3.DatabaseError as err:
            raise _unusable(self.path, err) from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _connect(self.path)
        _retry_locked(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
        self._migrate()
        return self._db

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.exists():  # nothing recorded yet: an empty registry in memory
            self.read_only = False
            self._db = _connect(":memory:")
            self._migrate()
            self.read_only = True
            return self._db
        # Read-only but shared: a writer elsewhere (a worker of the user who owns it) keeps
        # the -wal/-shm files SQLite needs to read consistently. On a read-only mount there
        # are none and none can be made: `immutable` then tells SQLite not to look for them.
        self._db = _connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            self._version()
        except sqlite3.OperationalError:
            self._db.close()
            self._db = _connect(f"file:{self.path}?mode=ro&immutable=1", uri=True)
        if self._version() < len(MIGRATIONS):
            raise self._read_only_error()
        return self._db

    def _read_only_error(self) -> TunelabError:
        return TunelabError(
            "registry_read_only",
            f"the registry {self.path} is in a place that cannot be written.",
            hint="set TUNELAB_HOME to a writable directory, or make this one writable",
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An immediate transaction: the write lock is held from the start."""
        if self.read_only:
            raise self._read_only_error()
        try:
            _retry_locked(lambda: self._db.execute("BEGIN IMMEDIATE"))
        except sqlite3.OperationalError as err:
            if "readonly" in str(err) or "read-only" in str(err):
                raise self._read_only_error() from None
            raise
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already
                self._db.execute("ROLLBACK")
            raise
        _retry_locked(lambda: self._db.execute("COMMIT"))

    def _migrate(self) -> None:
        if self._version() >= len(MIGRATIONS):
            return
        with self._write() as db:
            version = self._version()  # another process may have migrated meanwhile
            for number in range(version + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[number - 1]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def _version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @property
    def schema_version(self) -> int:
        return self._version()

    def _one(self, record: type[R], sql: str, params: tuple = ()) -> R | None:
        row = self._db.execute(sql, params).fetchone()
        return record.from_row(_decode(row)) if row is not None else None

    def _all(self, record: type[R], sql: str, params: tuple = ()) -> list[R]:
        return [record.from_row(_decode(row)) for row in self._db.execute(sql, params)]

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
        validation: dict | None = None,
    ) -> File:
        row = {
            "id": new_id("file"),
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
        with self._write() as db:
            _insert(db, "files", row)
        return self.get_file(row["id"])

    def get_file(self, file_id: str) -> File:
        row = self._one(
            File,
            "SELECT * FROM files WHERE id = ? OR provider_file_id = ? ORDER BY id = ? DESC",
            (file_id, file_id, file_id),
        )
        if row is None:
            raise TunelabError(
                "file_not_found",
                f"no file {file_id} in the registry.",
                hint="GET /v1/files on `tunelab serve` lists the files it holds",
            )
        return row

    def find_file(self, provider: str, checksum: str, purpose: str) -> File | None:
        """A file with these bytes already registered for `provider` (an upload to reuse)."""
        return self._one(
            File,
            "SELECT * FROM files WHERE provider = ? AND checksum = ? AND purpose = ? "
            "AND status != 'error' ORDER BY created_at DESC LIMIT 1",
            (provider, checksum, purpose),
        )

    def list_files(
        self, limit: int = 100, *, provider: str | None = None, purpose: str | None = None
    ) -> list[File]:
        """Newest first."""
        where, params = [], []
        for column, value in (("provider", provider), ("purpose", purpose)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM files" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return self._all(File, sql, (*params, limit))

    def delete_file(self, file_id: str) -> None:
        file = self.get_file(file_id)
        with self._write() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file.id,))

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, **fields) -> Job:
        """Insert a job; `provider`, `model` and `status` are required, `id` is generated."""
        unknown = set(fields) - JOB_COLUMNS - {"id"}
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        row = {"id": new_id("ftjob"), "created_at": now(), **fields, "updated_at": time.time()}
        with self._write() as db:
            _insert(db, "jobs", row)
        return self.get_job(row["id"])

    def get_job(self, job_id: str) -> Job:
        """A job by tunelab's id or by its provider's id."""
        row = self._one(
            Job,
            "SELECT * FROM jobs WHERE id = ? OR provider_job_id = ? ORDER BY id = ? DESC LIMIT 1",
            (job_id, job_id, job_id),
        )
        if row is None:
            raise TunelabError(
                "job_not_found",
                f"no job {job_id} in the registry.",
                hint="`tunelab jobs list` shows the jobs tunelab knows",
            )
        return row

    def list_jobs(
        self,
        *,
        limit: int = 20,
        after: str | None = None,
        provider: str | None = None,
        statuses: tuple[str, ...] | None = None,
    ) -> list[Job]:
        """Newest first; `after` (a job id) continues a previous page."""
        where, params = [], []
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if after is not None:
            anchor = self.get_job(after)
            where.append("(created_at, rowid) < (?, (SELECT rowid FROM jobs WHERE id = ?))")
            params.extend([anchor.created_at, anchor.id])
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return self._all(Job, sql, (*params, limit))

    def update_job(
        self, job_id: str, *, expect: tuple[str, ...] | None = None, **fields
    ) -> Job | None:
        """Set `fields` on the job; with `expect`, only if its status is one of those.

        Returns the updated job, or None when `expect` did not match (someone else moved the
        job first: a compare-and-set, so two processes never both act on one transition).
        """
        unknown = set(fields) - JOB_COLUMNS
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        fields["updated_at"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE jobs SET {columns} WHERE id = ?"
        params = [_encode(name, value) for name, value in fields.items()] + [job_id]
        if expect is not None:
            sql += f" AND status IN ({', '.join('?' * len(expect))})"
            params.extend(expect)
        with self._write() as db:
            changed = db.execute(sql, params).rowcount
        if not changed:
            if expect is None:
                self.get_job(job_id)  # raises job_not_found
            return None
        return self.get_job(job_id)

    def claim_next_job(self, provider: str, worker: dict) -> Job | None:
        """Atomically move the oldest queued job of `provider` to running for `worker`.

        `worker` holds `worker_id`, `worker_pid` and `worker_host`. Two workers never claim
        the same job: the select and the update share one immediate transaction.
        """
        stamp = time.time()
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE provider = ? AND status = 'queued' "
                f"ORDER BY created_at, rowid LIMIT 1{self._skip_locked}",
                (provider,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', raw_status = 'running', worker_id = ?, "
                "worker_pid = ?, worker_host = ?, heartbeat_at = ?, updated_at = ?, "
                "started_at = COALESCE(started_at, ?), error_code = NULL, error_message = NULL "
                "WHERE id = ?",
                (
                    worker["worker_id"],
                    worker["worker_pid"],
                    worker["worker_host"],
                    stamp,
                    stamp,
                    int(stamp),
                    row["id"],
                ),
            )
        return self.get_job(row["id"])

    def heartbeat(self, job_id: str, worker_id: str) -> int:
        """Record that `worker_id` is alive on the job; returns its `cancel_requested` flag."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker_id = ?",
                (time.time(), job_id, worker_id),
            )
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row["cancel_requested"]) if row else 0

    def delete_job(self, job_id: str) -> None:
        job = self.get_job(job_id)
        with self._write() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    # -- events, metrics, checkpoints -------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict | None = None,
        created_at: int | None = None,
        event_id: str | None = None,
    ) -> None:
        """Append an event; an `event_id` seen before (a provider's, re-synced) is ignored."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO job_events (id, job_id, created_at, level, type, message, "
                "data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id or new_id("ftevent"),
                    job_id,
                    created_at or now(),
                    level,
                    type,
                    message,
                    _encode("data", data),
                ),
            )

    def list_events(self, job_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Oldest first; `seq` orders them and `after_seq` continues a previous read."""
        return self._all(
            Event,
            "SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )

    def add_metric(self, job_id: str, step: int, data: dict) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO job_metrics (job_id, step, data) VALUES (?, ?, ?)",
                (job_id, step, _encode("data", data)),
            )

    def list_metrics(self, job_id: str) -> list[dict]:
        """The engine's per-step records (step, loss, tokens, ...), as it reported them."""
        rows = self._db.execute(
            "SELECT data FROM job_metrics WHERE job_id = ? ORDER BY step", (job_id,)
        )
        return [orjson.loads(row["data"]) for row in rows]

    def add_checkpoint(
        self,
        job_id: str,
        step: int,
        *,
        fine_tuned_model_checkpoint: str | None,
        metrics: dict | None = None,
        created_at: int | None = None,
        checkpoint_id: str | None = None,
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO job_checkpoints (id, job_id, step, created_at, "
                "fine_tuned_model_checkpoint, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    checkpoint_id or new_id("ftckpt"),
                    job_id,
                    step,
                    created_at or now(),
                    fine_tuned_model_checkpoint,
                    _encode("metrics", metrics or {}),
                ),
            )

    def delete_checkpoints(self, job_id: str, steps: list[int]) -> None:
        with self._write() as db:
            db.executemany(
                "DELETE FROM job_checkpoints WHERE job_id = ? AND step = ?",
                [(job_id, step) for step in steps],
            )

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Newest first, as OpenAI lists them."""
        return self._all(
            Checkpoint,
            "SELECT * FROM job_checkpoints WHERE job_id = ? ORDER BY step DESC",
            (job_id,),
        )

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
        details: dict | None = None,
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
        with self._write() as db:
            _insert(db, "models", row, replace=True)
        return self.get_model(model_id)

    def find_model(self, model_id: str) -> Model | None:
        return self._one(Model, "SELECT * FROM models WHERE id = ?", (model_id,))

    def get_model(self, model_id: str) -> Model:
        row = self.find_model(model_id)
        if row is None:
            raise TunelabError(
                "model_not_found",
                f"no model {model_id} in the registry.",
                hint="`tunelab models list` shows the models tunelab knows",
            )
        return row

    def list_models(self, provider: str | None = None) -> list[Model]:
        if provider is None:
            return self._all(Model, "SELECT * FROM models ORDER BY created_at DESC, rowid DESC")
        return self._all(
            Model,
            "SELECT * FROM models WHERE provider = ? ORDER BY created_at DESC, rowid DESC",
            (provider,),
        )

    def delete_model(self, model_id: str) -> None:
        self.get_model(model_id)
        with self._write() as db:
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))


def _insert(db: sqlite3.Connection, table: str, row: dict, replace: bool = False) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    values = [_encode(name, value) for name, value in row.items()]
    db.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", values)


def _encode(column: str, value):
    if column in JSON_COLUMNS and value is not None:
        return orjson.dumps(value).decode()
    return value


def _decode(row: sqlite3.Row) -> dict:
    data = dict(row)
    for column in JSON_COLUMNS.intersection(data):
        if data[column] is not None:
            data[column] = orjson.loads(data[column])
    return data


def _connect(target: str | Path, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, uri=uri)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _unusable(path: Path, err: sqlite3.DatabaseError) -> TunelabError:
    if "not a database" in str(err) or "malformed" in str(err):
        return TunelabError(
            "registry_corrupt",
            f"{path} is not a tunelab registry (SQLite says: {err}).",
            hint="move the file aside (tunelab then starts a new registry), or set "
            "TUNELAB_HOME to another directory",
        )
    return TunelabError(
        "registry_unavailable",
        f"the registry {path} cannot be opened: {err}.",
        hint="check the file and its directory, or set TUNELAB_HOME to another directory",
    )


def _retry_locked(action):
    """Run `action`, retrying while SQLite reports the database locked or busy.

    The busy timeout already waits 30 s; this covers the cases where SQLite returns BUSY
    without waiting (e.g. switching to WAL on a brand-new file) and very long writers.
    """
    for attempt in range(LOCK_RETRIES):
        try:
            return action()
        except sqlite3.OperationalError as err:
            text = str(err)
            if ("locked" not in text and "busy" not in text) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None
