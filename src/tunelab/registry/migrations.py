"""The registry's schema, as numbered migrations.

Each migration is a list of statements applied in one immediate transaction together with
`PRAGMA user_version = N`, so two processes opening a new database at once apply it once:
the second waits for the first's lock, then finds the version already raised. Never edit a
migration that has shipped; add the next one.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
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
