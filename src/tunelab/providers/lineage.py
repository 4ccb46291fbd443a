"""How a model was made, and what was made of a dataset: the chain data → job → model →
evaluations and exports, read from the registry.

Files, jobs and models are linked by id (a job names its training and validation file, a
model its job); evaluations and exports by checksum: an evaluation run records the SHA-256
of the data it read (`data.sha256`), an export's model card the SHA-256 of the training file
(`engine.export`), so a copy of the same bytes under another name is still found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunelab import registry as job_registry
from tunelab.errors import TunelabError
from tunelab.registry import EvalRun, File, Job, Model

RUNS_READ = 1000  # the most recent evaluation runs searched
MODEL_CARD = "README.md"
CARD_CHECKSUM = re.compile(r"`([0-9a-f]{64})` \(SHA-256 of the training file\)")


@dataclass(frozen=True)
class Export:
    """An exported model directory and the training file's checksum its card names."""

    path: Path
    checksum: str


@dataclass(frozen=True)
class DatasetLineage:
    file: File
    jobs: tuple[Job, ...]  # trained on it, or validated on it
    evaluations: tuple[EvalRun, ...]  # run on its bytes


@dataclass(frozen=True)
class ModelLineage:
    model: Model
    job: Job | None
    training_file: File | None
    validation_file: File | None
    evaluations: tuple[EvalRun, ...]  # that evaluated it
    exports: tuple[Export, ...]  # whose card names its training file's checksum


@dataclass(frozen=True)
class EvaluationLineage:
    run: EvalRun
    models: tuple[tuple[str, Model | None], ...]  # each name, with the registry's model
    data_files: tuple[File, ...]  # registry files with the bytes it read


def dataset_lineage(file_id: str) -> DatasetLineage:
    """The jobs trained (or validated) on a registry file and the evaluations of its bytes."""
    with job_registry.Store() as store:
        file = store.get_file(file_id)
        jobs = [
            j
            for j in store.list_jobs(limit=RUNS_READ)
            if file.id in (j.training_file, j.validation_file)
        ]
        runs = _runs_on(store, file.checksum)
    return DatasetLineage(file, tuple(jobs), runs)


def model_lineage(model_id: str, exports_dir: Path | None = None) -> ModelLineage:
    """A model's job and data, the evaluations naming it, and the exports under
    `exports_dir` of a model trained on the same data."""
    with job_registry.Store() as store:
        model = store.get_model(model_id)
        job = store.get_job(model.job_id) if model.job_id else None
        train = _file(store, job.training_file if job else None)
        val = _file(store, job.validation_file if job else None)
        runs = tuple(
            r for r in store.list_eval_runs(limit=RUNS_READ) if model.id in (r.models or ())
        )
    exports = tuple(e for e in find_exports(exports_dir) if train and e.checksum == train.checksum)
    return ModelLineage(model, job, train, val, runs, exports)


def evaluation_lineage(run_id: str) -> EvaluationLineage:
    """The models an evaluation ran and the registry files holding the data it read."""
    with job_registry.Store() as store:
        run = store.get_eval_run(run_id)
        models = tuple((name, store.find_model(name)) for name in run.models or ())
        checksum = (run.data or {}).get("sha256")
        files = tuple(f for f in store.list_files(limit=RUNS_READ) if checksum == f.checksum)
    return EvaluationLineage(run, models, files)


def find_exports(exports_dir: Path | None) -> list[Export]:
    """The exports under `exports_dir` whose model card names a training file's checksum."""
    if exports_dir is None or not exports_dir.is_dir():
        return []
    found = []
    for directory in sorted(exports_dir.iterdir()):
        try:
            card = (directory / MODEL_CARD).read_text(encoding="utf-8")
        except OSError:
            continue
        match = CARD_CHECKSUM.search(card)
        if match:
            found.append(Export(directory, match.group(1)))
    return found


def _runs_on(store, checksum: str) -> tuple[EvalRun, ...]:
    runs = store.list_eval_runs(limit=RUNS_READ)
    return tuple(r for r in runs if checksum and (r.data or {}).get("sha256") == checksum)


def _file(store, file_id: str | None) -> File | None:
    if not file_id:
        return None
    try:
        return store.get_file(file_id)
    except TunelabError:  # a file deleted since: the job still names it
        return None
