"""The loss curve, drawn once (`tunelab.curves`) for loss.svg, the studio and the reports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from tunelab.curves import loss_chart, loss_svg, terminal_curve

SVG = "{http://www.w3.org/2000/svg}"


def records(n_steps: int, n_val: int) -> list[dict]:
    metrics = [{"step": s, "loss": 2.0 / s} for s in range(1, n_steps + 1)]
    for m in metrics[:n_val]:
        m["val_loss"] = 2.5 / m["step"]
    return metrics


def polylines(chart: str) -> dict[str, list[tuple[float, float]]]:
    """Each polyline's class and its points."""
    return {
        cls: [tuple(map(float, p.split(","))) for p in points.split()]
        for cls, points in re.findall(r'<polyline class="(\w+)" points="([^"]+)"', chart)
    }


@pytest.mark.parametrize("n_val", [0, 3])
def test_the_chart_draws_training_and_validation_loss(n_val):
    chart = loss_chart(records(6, n_val), element_id="loss-chart")
    assert chart.startswith("<svg") and 'id="loss-chart"' in chart and 'data-points="6"' in chart
    lines = polylines(chart)
    assert len(lines["train"]) == 6 and len(lines.get("val", [])) == n_val
    assert chart.count('class="val-dot"') == n_val
    # Loss falls: each training point is drawn lower on the page (larger y) than the last.
    ys = [y for _, y in lines["train"]]
    assert ys == sorted(ys) and ys[0] < ys[-1]
    assert loss_chart([]) == "" and loss_svg([]) == ""


def test_loss_svg_is_a_standalone_svg_file_of_the_same_chart():
    text = loss_svg(records(5, 2), title='run <"a">')
    root = ET.fromstring(text)  # well-formed XML, in the SVG namespace
    assert root.tag == f"{SVG}svg" and root.get("width") and root.get("aria-label") == 'run <"a">'
    assert {p.get("class") for p in root.iter(f"{SVG}polyline")} == {"train", "val"}
    assert polylines(text) == polylines(loss_chart(records(5, 2), title='run <"a">'))


def test_unusable_losses_are_left_out_of_every_drawing():
    metrics = [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": float("nan")},
        {"step": "3", "loss": 1.0},
        {"step": 4, "loss": 1.5, "val_loss": float("inf")},
    ]
    assert len(polylines(loss_chart(metrics))["train"]) == 2
    assert "val" not in polylines(loss_chart(metrics))
    assert "nan" not in loss_svg(metrics) and len(terminal_curve(metrics)) > 3


def test_a_hosted_jobs_metric_events_draw_the_same_curve():
    """OpenAI's metric events name the losses `train_loss` and `valid_loss`."""
    hosted = [{"step": s, "train_loss": 2.0 / s, "valid_loss": 2.5 / s} for s in range(1, 5)]
    engine = [{"step": s, "loss": 2.0 / s, "val_loss": 2.5 / s} for s in range(1, 5)]
    assert loss_chart(hosted) == loss_chart(engine) and len(terminal_curve(hosted)) > 3
