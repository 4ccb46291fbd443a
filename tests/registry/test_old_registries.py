"""Registries written before the store spoke SQLAlchemy: they open, migrate and keep working.

`OLD_MIGRATIONS` is the schema as those versions wrote it, statement for statement; rows are
inserted with plain SQL as they stored them (JSON columns as text).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from test_store import WORKER, query, tables, user_version

from tunelab.registry.migrations import MIGRATIONS
from tunelab.registry.store import Store

OLD_MIGRATIONS: list[list[str]] = [
    # 1: files, jobs and what jobs produce.
    [
        """CREATE TABLE files (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            provider_file_id TEXT,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            checksum TEXT NOT NULL,
            path TEXT,
            status TEXT NOT NULL,
            validation TEXT,
            created_at INTEGER NOT NULL
        )""",
        "CREATE INDEX files_by_checksum ON files (provider, checksum)",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            provider_job_id TEXT,
            name TEXT,
            model TEXT NOT NULL,
            training_file TEXT,
            validation_file TEXT,
            hyperparameters TEXT NOT NULL DEFAULT '{}',
            resolved_hyperparameters TEXT,
            method TEXT,
            suffix TEXT,
            seed INTEGER,
            metadata TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,
            raw_status TEXT,
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER,
            updated_at REAL,
            error_code TEXT,
            error_message TEXT,
            fine_tuned_model TEXT,
            trained_tokens INTEGER,
            estimated_finish INTEGER,
            output_dir TEXT,
            worker_id TEXT,
            worker_pid INTEGER,
            worker_host TEXT,
            heartbeat_at REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            progress TEXT
        )""",
        "CREATE INDEX jobs_by_status ON jobs (provider, status, created_at)",
        """CREATE UNIQUE INDEX jobs_by_provider_id ON jobs (provider, provider_job_id)
            WHERE provider_job_id IS NOT NULL""",
        """CREATE TABLE job_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL,
            level TEXT NOT NULL,
            type TEXT NOT NULL,
            message TEXT NOT NULL,
            data TEXT
        )""",
        "CREATE INDEX job_events_by_job ON job_events (job_id, seq)",
        """CREATE TABLE job_metrics (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (job_id, step)
        )""",
        """CREATE TABLE job_checkpoints (
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            fine_tuned_model_checkpoint TEXT,
            metrics TEXT NOT NULL DEFAULT '{}',
            UNIQUE (job_id, step)
        )""",
        """CREATE TABLE models (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            kind TEXT NOT NULL,
            base_model TEXT,
            job_id TEXT,
            path TEXT,
            created_at INTEGER NOT NULL,
            details TEXT NOT NULL DEFAULT '{}'
        )""",
    ],
    # 2: evaluation runs and every answer they scored.
    [
        """CREATE TABLE eval_runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            finished_at INTEGER,
            models TEXT NOT NULL DEFAULT '[]',
            data TEXT NOT NULL DEFAULT '{}',
            options TEXT NOT NULL DEFAULT '{}',
            metrics TEXT,
            json_path TEXT,
            html_path TEXT,
            error_message TEXT
        )""",
        "CREATE INDEX eval_runs_by_time ON eval_runs (created_at)",
        """CREATE TABLE eval_outputs (
            run_id TEXT NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            item INTEGER NOT NULL,
            output TEXT NOT NULL,
            PRIMARY KEY (run_id, model, item)
        )""",
    ],
]


def old_registry(path: Path, version: int) -> None:
    """A registry as the old store left it after `version` migrations, with one job in it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        for number in range(1, version + 1):
            for statement in OLD_MIGRATIONS[number - 1]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute(
            "INSERT INTO jobs (id, provider, model, status, created_at, hyperparameters, "
            "metadata, progress) VALUES ('ftjob-old', 'local', 'base', 'queued', 10, "
            """'{"n_epochs": 2}', '{"team": "a"}', NULL)"""
        )
        db.execute(
            "INSERT INTO job_events (id, job_id, created_at, level, type, message, data) "
            """VALUES ('ftevent-old', 'ftjob-old', 10, 'info', 'message', 'made', '{"i": 1}')"""
        )
        db.execute(
            "INSERT INTO models (id, provider, kind, created_at, details) "
            """VALUES ('old-model', 'local', 'fine-tuned', 10, '{"gguf": true}')"""
        )


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_registry_opens_migrates_and_keeps_its_rows(tmp_path, version):
    path = tmp_path / "registry.db"
    old_registry(path, version)
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        job = store.get_job("ftjob-old")
        assert (job.hyperparameters, job.metadata, job.progress) == (
            {"n_epochs": 2},
            {"team": "a"},
            None,
        )
        assert [(e.message, e.data) for e in store.list_events(job.id)] == [("made", {"i": 1})]
        assert store.get_model("old-model").details == {"gguf": True}
        run = store.create_eval_run("queries", models=["m"], data={}, options={})
        store.add_eval_outputs(run.id, "m", [{"score": 1}])
        assert [o.output for o in store.list_eval_outputs(run.id)] == [{"score": 1}]
    assert user_version(path) == len(MIGRATIONS)
    assert "eval_runs" in tables(path)


def test_an_old_registry_keeps_its_order_sequences_and_replacements(tmp_path):
    path = tmp_path / "registry.db"
    old_registry(path, len(OLD_MIGRATIONS))
    with Store(path) as store:
        newer = store.create_job(provider="local", model="base", status="queued", created_at=10)
        assert [j.id for j in store.list_jobs()] == [newer.id, "ftjob-old"]
        assert [j.id for j in store.list_jobs(after=newer.id)] == ["ftjob-old"]
        store.add_event("ftjob-old", "later")
        events = store.list_events("ftjob-old")
        assert [e.message for e in events] == ["made", "later"] and events[0].seq < events[1].seq
        store.add_checkpoint("ftjob-old", 1, fine_tuned_model_checkpoint="a")
        store.add_checkpoint("ftjob-old", 1, fine_tuned_model_checkpoint="b")
        assert [c.fine_tuned_model_checkpoint for c in store.list_checkpoints("ftjob-old")] == ["b"]
        assert store.claim_next_job("local", WORKER).id == "ftjob-old"
        store.delete_job("ftjob-old")  # the old foreign keys still cascade
    assert query(path, "SELECT COUNT(*) FROM job_events") == [(0,)]
    assert query(path, "SELECT COUNT(*) FROM job_checkpoints") == [(0,)]


def test_a_new_registry_has_the_columns_an_old_one_has(tmp_path):
    """New and old registries are one schema: the same columns, types and keys, table by table."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    old_registry(old, len(OLD_MIGRATIONS))
    Store(new).close()
    for table in tables(old):
        # A key column's NOT NULL may now be spelt out; an INTEGER key is never NULL anyway.
        columns = f"""SELECT name, type, "notnull" OR pk > 0, pk, dflt_value
                      FROM pragma_table_info('{table}')"""
        assert query(new, columns) == query(old, columns), table
    # The old tables' indexes (later migrations add tables of their own).
    names = ", ".join(f"'{table}'" for table in tables(old))
    indexes = f"""SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ({names})
                  ORDER BY name"""
    assert query(new, indexes) == query(old, indexes)
