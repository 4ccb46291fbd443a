"""The registry: tunelab's single source of truth for files, jobs and models (SQLite).

The store returns the typed records of `tunelab.registry.records`.
"""

from tunelab.registry.records import (
    Checkpoint,
    EvalOutput,
    EvalRun,
    Event,
    File,
    Job,
    Model,
)
from tunelab.registry.store import Store, new_id

__all__ = [
    "Checkpoint",
    "EvalOutput",
    "EvalRun",
    "Event",
    "File",
    "Job",
    "Model",
    "Store",
    "new_id",
]
