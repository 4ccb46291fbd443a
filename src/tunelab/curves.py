"""The training curve: loss and validation loss per step, as SVG and as terminal text.

The one drawing of the curve: `loss.svg` beside `metrics.jsonl`, the studio's job page and
the evaluation report's fine-tuned models all use `loss_chart`/`loss_svg`, `jobs show` and
`jobs metrics` use `terminal_curve`. Input is the engine's metric records (`metrics.jsonl`
lines, or the registry's metrics): dicts with `step`, `loss` and, at evaluations,
`val_loss`. Light (no torch).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable
from pathlib import Path

import orjson

from tunelab.html_blocks import escape, svg

METRICS_FILE = "metrics.jsonl"  # one record per step, beside a training run's output
LOSS_CURVE_FILE = "loss.svg"  # its curve, redrawn at each checkpoint
CHECKPOINT_DIR = re.compile(r"step-(\d+)")  # a checkpoint under the run's checkpoints/
TRAIN_KEYS, VAL_KEYS = ("loss", "train_loss"), ("val_loss", "valid_loss")
TRAIN_MARK, VAL_MARK = "·", "o"
SVG_WIDTH, SVG_HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 36, 30
TRAIN_COLOUR, VAL_COLOUR = "#3b5bdb", "#d9480f"
# The metrics each training method records beside its loss, one chart each.
METHOD_METRICS = {
    "dpo": ("preference_accuracy", "reward_margin"),
    "reinforcement": ("reward_mean",),
}


def read_metrics(path: Path) -> list[dict]:
    """The records of a `metrics.jsonl`; [] when there is none. A line cut short by a crash
    is left out."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def run_metrics(directory: Path) -> tuple[Path, list[dict]] | None:
    """The steps that trained the model in `directory`: a training output's `metrics.jsonl`,
    or for one of its checkpoints (`checkpoints/step-N`) its run's steps up to N; with the
    file they came from. None when there are none."""
    last_step = None
    checkpoint = CHECKPOINT_DIR.fullmatch(directory.name)
    if checkpoint and directory.parent.name == "checkpoints":
        directory, last_step = directory.parent.parent, int(checkpoint.group(1))
    path = directory / METRICS_FILE
    records = read_metrics(path)
    if last_step is not None:
        records = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= last_step]
    return (path, records) if records else None


def loss_series(records: Iterable[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training points, validation points) as (step, loss), in step order. Reads the
    engine's names (`loss`, `val_loss`) and OpenAI's metric events' (`train_loss`,
    `valid_loss`), so a hosted job's curve draws too."""
    return _series(records, TRAIN_KEYS, VAL_KEYS)


def _series(
    records: Iterable[dict], train_keys: tuple[str, ...], val_keys: tuple[str, ...]
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train, val = {}, {}
    for record in records:
        step = record.get("step")
        if not isinstance(step, int):
            continue
        value = _first_finite(record, train_keys)
        if value is not None:
            train[step] = value
        val_value = _first_finite(record, val_keys)
        if val_value is not None:
            val[step] = val_value
    return sorted(train.items()), sorted(val.items())


def _first_finite(record: dict, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if _finite(record.get(key)):
            return float(record[key])
    return None


def _finite(value: object) -> bool:
    """A number that can be drawn (a diverged run logs nan or inf losses)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _bounds(train, val) -> tuple[int, int, float, float]:
    points = train + val
    steps = [s for s, _ in points]
    losses = [loss for _, loss in points]
    low, high = min(losses), max(losses)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return min(steps), max(max(steps), min(steps) + 1), low, high


def terminal_curve(records: Iterable[dict], width: int = 60, height: int = 10) -> list[str]:
    """The curve as plain text lines (no colour, no control characters): training loss `·`,
    validation loss `o`, the loss range on the left and the steps underneath."""
    train, val = loss_series(records)
    if not train and not val:
        return []
    first, last, low, high = _bounds(train, val)
    grid = [[" "] * width for _ in range(height)]
    for points, mark in ((train, TRAIN_MARK), (val, VAL_MARK)):
        for step, loss in points:
            x = round((step - first) / (last - first) * (width - 1))
            y = round((high - loss) / (high - low) * (height - 1))
            grid[y][x] = mark
    labels = [f"{high:.3f}"] + [""] * (height - 2) + [f"{low:.3f}"]
    pad = max(len(label) for label in labels)
    lines = [
        f"{label:>{pad}} │{''.join(row).rstrip()}" for label, row in zip(labels, grid, strict=True)
    ]
    lines.append(f"{'':>{pad}} └{'─' * width}")
    steps = f"step {first}"
    lines.append(f"{'':>{pad}}  {steps}{f'step {last}':>{width - len(steps)}}")
    legend = f"{TRAIN_MARK} training loss" + (f"   {VAL_MARK} validation loss" if val else "")
    lines.append(f"{'':>{pad}}  {legend}")
    return lines


def loss_chart(
    records: Iterable[dict],
    title: str = "training and validation loss",
    *,
    element_id: str | None = None,
) -> str:
    """The curve as inline SVG (HTML reports, the studio): training loss solid, validation loss
    dashed with a dot per measurement, loss gridlines; "" without points. Colours are
    presentation attributes and classes (`train`, `val`, `val-dot`, `legend-*`), so a page's
    stylesheet may restyle it and a strict Content Security Policy allows it."""
    train, val = loss_series(records)
    if not train and not val:
        return ""
    attributes = {"data-points": len(train)} | ({"id": element_id} if element_id else {})
    return svg(SVG_WIDTH, SVG_HEIGHT, title, _shapes(train, val, title), attributes)


def metric_chart(records: Iterable[dict], name: str, *, element_id: str | None = None) -> str:
    """A training method's own metric per step (DPO's `preference_accuracy` or
    `reward_margin`, reinforcement's `reward_mean`) and its validation figure (`val_<name>`),
    drawn as the loss is; "" without points. Unlike a loss, it may be negative."""
    train, val = _series(records, (name,), (f"val_{name}",))
    if not train and not val:
        return ""
    title = name.replace("_", " ")
    attributes = {"data-points": len(train)} | ({"id": element_id} if element_id else {})
    shapes = _shapes(train, val, title, floor=None, what=title)
    return svg(SVG_WIDTH, SVG_HEIGHT, title, shapes, attributes)


def loss_svg(records: Iterable[dict], title: str = "training loss") -> str:
    """The same chart as a standalone SVG file (`loss.svg`); "" without points."""
    train, val = loss_series(records)
    if not train and not val:
        return ""
    attributes = {
        "xmlns": "http://www.w3.org/2000/svg",
        "width": SVG_WIDTH,
        "height": SVG_HEIGHT,
        "font-family": "sans-serif",
        "font-size": 11,
    }
    return svg(SVG_WIDTH, SVG_HEIGHT, title, _shapes(train, val, title), attributes) + "\n"


def _shapes(train, val, title: str, floor: float | None = 0.0, what: str = "loss") -> list[str]:
    """The chart's shapes (of `what`, named in the lines' tooltips); `floor` is the lowest
    value the axis shows (a loss is never negative; None: no floor)."""
    first, last, low, high = _bounds(train, val)
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    if floor is not None:
        low = max(floor, low)
    plot_w, plot_h = SVG_WIDTH - LEFT - RIGHT, SVG_HEIGHT - TOP - BOTTOM

    def x(step: float) -> float:
        return LEFT + (step - first) / (last - first) * plot_w

    def y(loss: float) -> float:
        return TOP + (high - loss) / (high - low) * plot_h

    shapes = [*_frame(first, last, low, high, y), _text(SVG_WIDTH / 2, 14, title, "middle")]
    if train:
        shapes.append(_polyline("train", TRAIN_COLOUR, train, x, y, f"training {what}"))
        shapes.append(_text(LEFT, TOP - 6, "— training", "start", TRAIN_COLOUR, "legend-train"))
    if val:
        shapes.append(_polyline("val", VAL_COLOUR, val, x, y, f"validation {what}"))
        shapes += [
            f'<circle class="val-dot" cx="{x(s):.1f}" cy="{y(v):.1f}" r="3" fill="{VAL_COLOUR}"/>'
            for s, v in val
        ]
        shapes.append(
            _text(LEFT + 90, TOP - 6, "- - validation", "start", VAL_COLOUR, "legend-val")
        )
    return shapes


def _frame(first: int, last: int, low: float, high: float, y) -> list[str]:
    """Axes, five loss gridlines with their values, and the first and last step."""
    base, right = SVG_HEIGHT - BOTTOM, SVG_WIDTH - RIGHT
    shapes = [
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{right}" y2="{base}" stroke="#98a2b3"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#98a2b3"/>',
        _text(LEFT, base + 18, f"step {first}", "start"),
        _text(right, base + 18, f"step {last}", "end"),
    ]
    for i in range(5):
        value = low + (high - low) * i / 4
        shapes.append(
            f'<line class="grid-line" x1="{LEFT}" y1="{y(value):.1f}" x2="{right}" '
            f'y2="{y(value):.1f}" stroke="#e4e7ec"/>'
        )
        shapes.append(_text(LEFT - 6, y(value) + 4, f"{value:.3g}", "end"))
    return shapes


def _polyline(cls: str, colour: str, points, x, y, name: str) -> str:
    path = " ".join(f"{x(step):.1f},{y(loss):.1f}" for step, loss in points)
    dash = ' stroke-dasharray="6 3"' if cls == "val" else ""
    return (
        f'<polyline class="{cls}" points="{path}" fill="none" stroke="{colour}" '
        f'stroke-width="2"{dash}><title>{name}</title></polyline>'
    )


def _text(x: float, y: float, text: str, anchor: str, fill: str = "#667085", cls: str = "") -> str:
    css = f' class="{cls}"' if cls else ""
    return (
        f'<text{css} x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
        f'fill="{fill}">{escape(text)}</text>'
    )
