"""The training curve: loss and validation loss per step, as SVG and as terminal text.

Input is the engine's metric records (`metrics.jsonl` lines, or the registry's metrics):
dicts with `step`, `loss` and, at evaluations, `val_loss`. Light (no torch): `jobs show`
draws it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tunelab.html_blocks import escape

TRAIN_MARK, VAL_MARK = "·", "o"
SVG_WIDTH, SVG_HEIGHT, MARGIN = 640, 260, 48


def loss_series(records: Iterable[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training points, validation points) as (step, loss), in step order."""
    train, val = {}, {}
    for record in records:
        step = record.get("step")
        if not isinstance(step, int):
            continue
        if isinstance(record.get("loss"), (int, float)):
            train[step] = float(record["loss"])
        if isinstance(record.get("val_loss"), (int, float)):
            val[step] = float(record["val_loss"])
    return sorted(train.items()), sorted(val.items())


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


def loss_svg(records: Iterable[dict], title: str = "training loss") -> str:
    """A standalone SVG of the curve (also valid inline in HTML); empty without points."""
    train, val = loss_series(records)
    if not train and not val:
        return ""
    first, last, low, high = _bounds(train, val)
    plot_w, plot_h = SVG_WIDTH - 2 * MARGIN, SVG_HEIGHT - 2 * MARGIN

    def xy(step: int, loss: float) -> str:
        x = MARGIN + (step - first) / (last - first) * plot_w
        y = MARGIN + (high - loss) / (high - low) * plot_h
        return f"{x:.1f},{y:.1f}"

    shapes = [
        f'<rect x="{MARGIN}" y="{MARGIN}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#ccc"/>',
        _text(MARGIN - 6, MARGIN + 4, f"{high:.3f}", "end"),
        _text(MARGIN - 6, MARGIN + plot_h + 4, f"{low:.3f}", "end"),
        _text(MARGIN, SVG_HEIGHT - MARGIN + 18, f"step {first}", "start"),
        _text(MARGIN + plot_w, SVG_HEIGHT - MARGIN + 18, f"step {last}", "end"),
        _text(SVG_WIDTH / 2, MARGIN - 16, title, "middle"),
    ]
    for points, colour, name in ((train, "#1f77b4", "training"), (val, "#d62728", "validation")):
        if points:
            path = " ".join(xy(step, loss) for step, loss in points)
            shapes.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                          f'stroke-width="1.5"><title>{name} loss</title></polyline>')  # fmt: skip
    if val:
        right = SVG_WIDTH - MARGIN
        shapes.append(_text(right, MARGIN - 4, "— validation", "end", "#d62728"))
        shapes.append(_text(right - 90, MARGIN - 4, "— training", "end", "#1f77b4"))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" '
        f'width="{SVG_WIDTH}" height="{SVG_HEIGHT}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="12">' + "".join(shapes) + "</svg>\n"
    )


def _text(x: float, y: float, text: str, anchor: str, fill: str = "#333") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}">{escape(text)}</text>'
    )
