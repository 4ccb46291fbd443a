"""The registry: tunelab's single source of truth for files, jobs and models (SQLite or
PostgreSQL, through SQLAlchemy Core).

The store returns the typed records of `tunelab.registry.records` (each one offered here).
`Store` and `new_id` load on first use (PEP 562): SQLAlchemy takes a few hundred
milliseconds to import, which commands that only read a record's type do not pay.
"""

import importlib
from typing import TYPE_CHECKING

from tunelab.registry import records
from tunelab.registry.records import *  # noqa: F403 (the names of records.__all__)

if TYPE_CHECKING:
    from tunelab.registry.store import Store
    from tunelab.registry.writes import new_id

_LAZY = {"Store": "store", "new_id": "writes"}

__all__ = [*records.__all__, "Store", "new_id"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tunelab.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tunelab.registry.{module}"), name)
