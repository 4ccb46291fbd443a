"""The registry's schema, as numbered migrations.

Each migration is a list of statements applied in one write transaction together with the
new schema version (SQLite's `PRAGMA user_version`, PostgreSQL's `tunelab_schema` row), so
two processes opening a new database at once apply it once: the second waits for the
first's lock, then finds the version already raised. Never change what a shipped migration
does; add the next one.

The statements are SQLAlchemy constructs, compiled for the database at hand. Migrations 1
and 2 create the tables `registry.schema` defines, which are exactly the tables they have
always created. A later change to a table is a new migration (an `ALTER TABLE`) together
with the same change in `schema`; since a new database then gets the table in its latest
form from the first migration, the altering one must find its change already there and
leave it (e.g. add a column only where it is missing).
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.base import Executable

from tunelab.registry import schema


def _create(*tables: Table) -> list[Executable]:
    """The statements creating `tables` and their indexes."""
    statements: list[Executable] = []
    for table in tables:
        statements.append(CreateTable(table))
        indexes = sorted(table.indexes, key=lambda index: str(index.name))
        statements.extend(CreateIndex(index) for index in indexes)
    return statements


MIGRATIONS: list[list[Executable]] = [
    # 1: files, jobs and what jobs produce.
    _create(
        schema.files,
        schema.jobs,
        schema.job_events,
        schema.job_metrics,
        schema.job_checkpoints,
        schema.models,
    ),
    # 2: evaluation runs and every answer they scored.
    _create(schema.eval_runs, schema.eval_outputs),
    # 3: model aliases (an old model's name answered by its replacement).
    _create(schema.model_aliases),
]
