"""The registry: tunelab's single source of truth for files, jobs and models (SQLite or
PostgreSQL, through SQLAlchemy Core).

The store returns the typed records of `tunelab.registry.records` (each one offered here).
"""

from tunelab.registry import records
from tunelab.registry.records import *  # noqa: F403 (the names of records.__all__)
from tunelab.registry.store import Store
from tunelab.registry.writes import new_id

__all__ = [*records.__all__, "Store", "new_id"]
