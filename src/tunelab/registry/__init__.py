"""The registry: tunelab's single source of truth for files, jobs and models (SQLite)."""

from tunelab.registry.store import Store, new_id

__all__ = ["Store", "new_id"]
