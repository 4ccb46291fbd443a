"""How the fine-tuned models of an evaluation were trained: their loss curves.

An evaluation's report shows the training and validation loss of every compared model that
tunelab fine-tuned and whose steps it knows: an `ft:` name (or any model) the registry holds
from a job, with the metrics that job reported (local or hosted), or a training output
directory (`tunelab train --output DIR`, or one of its `checkpoints/step-N`) holding
`metrics.jsonl`. Base models, hosted catalog models and unknown names have no curve.
"""

from __future__ import annotations

from pathlib import Path

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.curves import loss_series, run_metrics
from tunelab.settings import get_settings


def training_curves(models: list[str] | tuple[str, ...]) -> dict[str, dict]:
    """`{model: {"source": where the steps came from, "metrics": [{step, loss, val_loss}]}}`
    for each of `models` that is a fine-tune with known steps."""
    curves = {}
    for name in models:
        found = _registry_curve(name) or _directory_curve(name)
        if found is not None:
            source, records = found
            curves[name] = {"source": source, "metrics": _points(records)}
    return curves


def _points(records: list[dict]) -> list[dict]:
    """Only what the chart draws, so that result.json stays small."""
    train, val = loss_series(records)
    points = {step: {"step": step, "loss": loss} for step, loss in train}
    for step, loss in val:
        points.setdefault(step, {"step": step})["val_loss"] = loss
    return [points[step] for step in sorted(points)]


def _registry_curve(name: str) -> tuple[str, list[dict]] | None:
    if not get_settings().registry_path.exists():  # no registry yet: nothing fine-tuned
        return None
    with job_registry.Store() as store:
        model = store.find_model(name)
        if model is None or model.kind != "fine-tuned" or not model.job_id:
            return None
        records = store.list_metrics(model.job_id)
    if records:
        return f"job {model.job_id}", records
    return _directory_curve(model.path) if model.path else None


def _directory_curve(name: str) -> tuple[str, list[dict]] | None:
    """A training output's (or checkpoint's) steps, see `curves.run_metrics`."""
    path = Path(name).expanduser()
    try:
        if not path.is_dir():
            return None
    except (OSError, ValueError):  # not a path at all (too long, a NUL byte)
        return None
    found = run_metrics(path)
    return (str(found[0]), found[1]) if found else None
