"""The registry's tables, defined once for SQLite and PostgreSQL (SQLAlchemy Core).

Types are chosen to give both databases what the registry has always stored: integers are
`INTEGER` on SQLite (so `job_events.seq` is SQLite's auto-incrementing row id) and `BIGINT`
on PostgreSQL, timestamps with fractions are `REAL`/`DOUBLE PRECISION`, and the JSON
columns are text holding JSON (as every registry ever written has them), decoded on read.

Lists are ordered by insertion among rows of the same second. SQLite keeps that order as
each table's implicit `rowid`; on PostgreSQL the tables that need it carry a `rowid`
identity column. The column is declared here for both, so that a query names `rowid` in
one text, and is left out of SQLite's `CREATE TABLE`, where it exists already.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.types import TypeEngine


class JSONText(TypeDecorator[Any]):
    """JSON stored as text: encoded on write, decoded on read; None stays NULL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


INT = BigInteger().with_variant(Integer(), "sqlite")
FLOAT: TypeEngine[float] = Double().with_variant(REAL(), "sqlite")
metadata = MetaData()


def _rowid() -> Column[int]:
    return Column("rowid", INT, Identity(always=True), info={"sqlite_rowid": True})


@compiles(CreateColumn, "sqlite")
def _create_column_on_sqlite(element: CreateColumn, compiler: DDLCompiler, **kw: Any) -> Any:
    if element.element.info.get("sqlite_rowid"):
        return None  # SQLite's own rowid
    return compiler.visit_create_column(element, **kw)


def _text(name: str, nullable: bool = True, **kw: Any) -> Column[str]:
    return Column(name, Text, nullable=nullable, **kw)


def _int(name: str, nullable: bool = True, **kw: Any) -> Column[int]:
    return Column(name, INT, nullable=nullable, **kw)


def _json(name: str, default: str | None = None) -> Column[Any]:
    return Column(name, JSONText, nullable=default is None, server_default=default)


def _listed_table(name: str, *columns: Any) -> Table:
    """A table of records named by a tunelab id and listed in insertion order (`rowid`)."""
    return Table(name, metadata, _rowid(), _text("id", primary_key=True), *columns)


files = _listed_table(
    "files",
    _text("provider", False),
    _text("provider_file_id"),
    _text("filename", False),
    _text("purpose", False),
    _int("bytes", False),
    _text("checksum", False),
    _text("path"),
    _text("status", False),
    _json("validation"),
    _int("created_at", False),
)
Index("files_by_checksum", files.c.provider, files.c.checksum)

jobs = _listed_table(
    "jobs",
    _text("provider", False),
    _text("provider_job_id"),
    _text("name"),
    _text("model", False),
    _text("training_file"),
    _text("validation_file"),
    _json("hyperparameters", "{}"),
    _json("resolved_hyperparameters"),
    _text("method"),
    _text("suffix"),
    _int("seed"),
    _json("metadata", "{}"),
    _text("status", False),
    _text("raw_status"),
    _int("created_at", False),
    _int("started_at"),
    _int("finished_at"),
    Column("updated_at", FLOAT),
    _text("error_code"),
    _text("error_message"),
    _text("fine_tuned_model"),
    _int("trained_tokens"),
    _int("estimated_finish"),
    _text("output_dir"),
    _text("worker_id"),
    _int("worker_pid"),
    _text("worker_host"),
    Column("heartbeat_at", FLOAT),
    _int("cancel_requested", False, server_default=text("0")),
    _json("progress"),
)
Index("jobs_by_status", jobs.c.provider, jobs.c.status, jobs.c.created_at)
_has_provider_id = jobs.c.provider_job_id.is_not(None)
Index(
    "jobs_by_provider_id",
    jobs.c.provider,
    jobs.c.provider_job_id,
    unique=True,
    sqlite_where=_has_provider_id,
    postgresql_where=_has_provider_id,
)


def _job_id() -> Column[str]:
    return Column("job_id", Text, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)


job_events = Table(
    "job_events",
    metadata,
    Column("seq", INT, Identity(), primary_key=True),
    _text("id", False, unique=True),
    _job_id(),
    _int("created_at", False),
    _text("level", False),
    _text("type", False),
    _text("message", False),
    _json("data"),
    sqlite_autoincrement=True,
)
Index("job_events_by_job", job_events.c.job_id, job_events.c.seq)

job_metrics = Table(
    "job_metrics",
    metadata,
    _job_id(),
    _int("step", False),
    Column("data", JSONText, nullable=False),
    PrimaryKeyConstraint("job_id", "step"),
)

job_checkpoints = Table(
    "job_checkpoints",
    metadata,
    _text("id", primary_key=True),
    _job_id(),
    _int("step", False),
    _int("created_at", False),
    _text("fine_tuned_model_checkpoint"),
    _json("metrics", "{}"),
    UniqueConstraint("job_id", "step"),
)

models = _listed_table(
    "models",
    _text("provider", False),
    _text("kind", False),
    _text("base_model"),
    _text("job_id"),
    _text("path"),
    _int("created_at", False),
    _json("details", "{}"),
)

# A name that answers as another model: an application written against an old model (an
# OpenAI `ft:` name) keeps its name and gets the replacement.
model_aliases = Table(
    "model_aliases",
    metadata,
    _text("alias", primary_key=True),
    _text("target", False),
    _int("created_at", False),
)

eval_runs = _listed_table(
    "eval_runs",
    _text("kind", False),
    _text("status", False),
    _int("created_at", False),
    _int("finished_at"),
    _json("models", "[]"),
    _json("data", "{}"),
    _json("options", "{}"),
    _json("metrics"),
    _text("json_path"),
    _text("html_path"),
    _text("error_message"),
)
Index("eval_runs_by_time", eval_runs.c.created_at)

eval_outputs = Table(
    "eval_outputs",
    metadata,
    Column("run_id", Text, ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
    _text("model", False),
    _int("item", False),
    Column("output", JSONText, nullable=False),
    PrimaryKeyConstraint("run_id", "model", "item"),
)

# PostgreSQL's schema version (SQLite keeps it in `PRAGMA user_version`): one row.
tunelab_schema = Table("tunelab_schema", MetaData(), _int("version", False))
