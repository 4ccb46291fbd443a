"""Measured local training speed, per base model and method, for honest time estimates.

`$TUNELAB_HOME/throughput.json` maps a base model's name to one measurement per method:

    {"smollm2-135m": {"lora": {"tokens_per_second": 812.0, "eval_tokens_per_second": 2400.0,
                               "overhead_seconds": 1.3, "measured_at": "...", "device": "cpu"}}}

`tokens_per_second` is the optimizer steps' speed, `eval_tokens_per_second` the validation
passes' speed and `overhead_seconds` what a run costs besides its steps and validation passes
(tokenizing, checkpoints, writing the output). Light on purpose (no torch): `analyze`, `jobs
create` and `train --dry-run` read it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from tunelab.io import atomic_write_text
from tunelab.settings import get_settings

THROUGHPUT_FILE = "throughput.json"
# Training FLOPs per parameter per token: forward 2N, backward 2N for activations, plus 2N
# for weight gradients when every weight is trained (LoRA's are negligible). A validation
# pass is the forward alone: 2N.
FLOPS_PER_TOKEN = {"lora": 4, "full": 6}
EVAL_FLOPS_PER_TOKEN = 2


def _read_table() -> dict:
    try:
        table = json.loads((get_settings().home / THROUGHPUT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _by_method(entry) -> dict[str, dict]:
    """One model's measurements by method; an older single record counts for its method."""
    if not isinstance(entry, dict):
        return {}
    if "tokens_per_second" in entry:  # the format before measurements were kept per method
        return {entry.get("method", "lora"): entry}
    return {m: e for m, e in entry.items() if isinstance(e, dict)}


def read_throughput(base_model: str, method: str | None = None) -> dict | None:
    """The measurement for `base_model` trained with `method`, with the `method` it was taken
    with: the same method's when there is one, else another method's (scaled when used)."""
    measured = {
        m: e
        for m, e in _by_method(_read_table().get(base_model)).items()
        if _positive(e.get("tokens_per_second"))
    }
    if not measured:
        return None
    chosen = method if method in measured else sorted(measured)[0]
    return {**measured[chosen], "method": chosen}


def estimate_seconds(
    base_model: str, method: str, train_tokens: int, eval_tokens: int = 0
) -> tuple[float, dict] | None:
    """Seconds a run processing `train_tokens` in its steps and `eval_tokens` in its
    validation passes would take here, and the measurement it comes from (None: unmeasured)."""
    measured = read_throughput(base_model, method)
    if measured is None:
        return None
    own = FLOPS_PER_TOKEN[method]
    cost = own / FLOPS_PER_TOKEN.get(measured["method"], own)  # 1 when the method's own
    rate = measured["tokens_per_second"] / cost
    eval_rate = measured.get("eval_tokens_per_second")
    if not _positive(eval_rate) or measured["method"] != method:
        eval_rate = rate * FLOPS_PER_TOKEN[method] / EVAL_FLOPS_PER_TOKEN
    overhead = measured.get("overhead_seconds")
    overhead = overhead if _positive(overhead) else 0.0
    return train_tokens / rate + eval_tokens / eval_rate + overhead, measured


def record_throughput(
    base_model: str,
    method: str,
    *,
    tokens_per_second: float,
    device: str,
    eval_tokens_per_second: float | None = None,
    overhead_seconds: float | None = None,
) -> None:
    """Store a run's speeds as the measurement for `base_model` trained with `method`."""
    table = _read_table()
    entry = _by_method(table.get(base_model))
    entry[method] = {
        "tokens_per_second": round(tokens_per_second, 1),
        "eval_tokens_per_second": round(eval_tokens_per_second, 1)
        if eval_tokens_per_second
        else None,
        "overhead_seconds": round(overhead_seconds, 3) if overhead_seconds is not None else None,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device,
    }
    table[base_model] = entry
    atomic_write_text(get_settings().home / THROUGHPUT_FILE, json.dumps(table, indent=2) + "\n")
