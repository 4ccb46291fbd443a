"""The loss chart of a job, drawn as SVG on the server (no chart library in the browser).

Numbers only reach the SVG; the one text a user chose (nothing, here) would be escaped.
"""

from __future__ import annotations

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 30


def loss_chart(metrics: list[dict]) -> str:
    """Training loss per step (solid) and validation loss where measured (dashed, dots)."""
    train = [(m["step"], m["loss"]) for m in metrics if _finite(m.get("loss"))]
    val = [(m["step"], m["val_loss"]) for m in metrics if _finite(m.get("val_loss"))]
    if not train and not val:
        return '<p class="muted" id="loss-chart-empty">No steps yet.</p>'
    points = train + val
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    lo_x, hi_x = min(steps), max(max(steps), min(steps) + 1)
    lo_y, hi_y = min(losses), max(losses)
    pad = (hi_y - lo_y) * 0.08 or 0.5
    lo_y, hi_y = max(0.0, lo_y - pad), hi_y + pad

    def x(step: float) -> float:
        return LEFT + (step - lo_x) / (hi_x - lo_x) * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return HEIGHT - BOTTOM - (value - lo_y) / (hi_y - lo_y) * (HEIGHT - TOP - BOTTOM)

    shapes = _axes(lo_x, hi_x, lo_y, hi_y, y)
    if train:
        shapes.append(f'<polyline class="train" points="{_points(train, x, y)}"/>')
    if val:
        shapes.append(f'<polyline class="val" points="{_points(val, x, y)}"/>')
        shapes += [
            f'<circle class="val-dot" cx="{x(s):.1f}" cy="{y(v):.1f}" r="3"/>' for s, v in val
        ]
    shapes.append(f'<text class="legend-train" x="{LEFT}" y="16">— training loss</text>')
    if val:
        shapes.append(
            f'<text class="legend-val" x="{LEFT + 130}" y="16">- - validation loss</text>'
        )
    return (
        f'<svg id="loss-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="training and validation loss" data-points="{len(train)}">'
        + "".join(shapes)
        + "</svg>"
    )


def _axes(lo_x, hi_x, lo_y, hi_y, y) -> list[str]:
    base = HEIGHT - BOTTOM
    shapes = [
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text x="{LEFT}" y="{base + 18}">step {lo_x:g}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{base + 18}" text-anchor="end">step {hi_x:g}</text>',
    ]
    for i in range(5):
        value = lo_y + (hi_y - lo_y) * i / 4
        shapes.append(
            f'<line class="grid-line" x1="{LEFT}" y1="{y(value):.1f}" '
            f'x2="{WIDTH - RIGHT}" y2="{y(value):.1f}"/>'
        )
        shapes.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3g}</text>'
        )
    return shapes


def _points(series: list[tuple[float, float]], x, y) -> str:
    return " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in series)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
