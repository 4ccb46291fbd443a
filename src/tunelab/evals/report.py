"""A self-contained HTML report of one evaluation run: tables, confusion heatmaps, Elo chart,
and the loss curve of each fine-tuned model compared.

No scripts, no external assets: the file opens anywhere and can be attached to a review.
"""

from __future__ import annotations

from datetime import datetime, timezone

from tunelab.curves import loss_chart, loss_series
from tunelab.evals.result import partial_message
from tunelab.html_blocks import escape, report_page, svg, table

SAMPLE_ITEMS = 40  # answers shown per report; result.json holds them all
# Confusion cells are shaded by their share of the row in tenths, with classes rather than
# style attributes, so that a page with a strict Content Security Policy (the studio) can
# embed the sections and shade them with its own stylesheet.
HEAT_STYLE = "".join(
    f".heat td.heat-{n} {{ background:rgba(59,91,219,{n / 10:.1f});"
    f"{' color:#fff;' if n > 5 else ''} }}\n"
    for n in range(11)
)
_EXTRA_STYLE = (
    HEAT_STYLE
    + """
.heat td.cell { text-align:center; min-width:34px; }
.answers td { vertical-align:top; font-size:13px; } .answers .q { max-width:360px; }
.right { color:var(--ok); } .wrong { color:var(--err); }
pre { white-space:pre-wrap; margin:0; font:12px ui-monospace,monospace; }
"""
)


def render_report(result: dict) -> str:
    sections = render_sections(result)
    when = datetime.fromtimestamp(result["created_at"], timezone.utc).strftime("%Y-%m-%d %H:%M")
    data = result["data"]
    header = (
        f"<h1>Evaluation: {escape(result['kind'])}</h1><p class='meta'><span>run "
        f"{escape(result['id'])}</span><span>{escape(when)} UTC</span>"
        f"<span>{escape(data.get('path', ''))}</span>"
        f"<span>{escape(data.get('n_items', ''))} items</span></p>"
    )
    for note in (result.get("options") or {}).get("notes") or []:  # e.g. where answers came from
        header += f"<p class='meta'>{escape(note)}</p>"
    if result.get("partial"):
        said = partial_message(result["partial"])
        header += f"<p class='meta'><strong>partial</strong>: {escape(said)}</p>"
    return report_page(
        f"tunelab eval {result['id']}",
        header + sections,
        "tunelab · result.json beside this file holds every answer",
        style=_EXTRA_STYLE,
    )


def render_sections(result: dict, *, answers: bool = True) -> str:
    """The report's body for its kind (tables, heatmaps, charts), the fine-tuned models' loss
    curves, then sample answers (`answers`: the studio pages through them itself), without its
    page: every user string escaped and no style attribute, so that the studio can embed it."""
    kind = result["kind"]
    sections = {
        "classify": _classify_sections,
        "queries": _queries_sections,
        "judge": _judge_sections,
        "pairwise": _judge_sections,
        "grade": _grade_sections,
        "tools": _tools_sections,
    }[kind](result)
    sample = "" if kind == "pairwise" or not answers else _answers(result, ANSWER_MARKS[kind])
    return sections + _training_section(result.get("training") or {}) + sample


# Which answers the sample marks right (✓) or wrong (✗); a judge's answers get no mark.
ANSWER_MARKS = {
    "classify": lambda o: o.get("correct"),
    "queries": lambda o: o.get("exact") or o.get("execution"),
    "judge": lambda o: None,
    "grade": lambda o: o.get("passed"),
    "tools": lambda o: o.get("exact"),
}


# -- classification -------------------------------------------------------------------------


def _classify_sections(result: dict) -> str:
    rows = []
    for name, m in result["models"].items():
        low, high = m.get("accuracy_ci") or (None, None)
        interval = f"{low:.1%} – {high:.1%}" if low is not None else None
        rows.append(
            [
                name,
                _method(m),
                f"{m['accuracy']:.1%}",
                interval,
                f"{m['macro_f1']:.3f}",
                f"{m['invalid_rate']:.1%}",
                m.get("answers_per_second"),
            ]
        )
    html = "<h2>Models</h2>" + table(
        ["model", "method", "accuracy", "95% interval", "macro-F1", "invalid", "answers/s"],
        rows,
        {2, 4, 5, 6},
    )
    notes = [f"{name}: {m['note']}" for name, m in result["models"].items() if m.get("note")]
    html += "".join(f"<p>{escape(note)}</p>" for note in notes)
    html += _comparisons(result.get("comparisons") or [])
    for name, m in result["models"].items():
        html += f"<h2>{escape(name)}</h2>" + _per_class(m) + _confusion(m["confusion_matrix"])
    return html


def _method(metrics: dict) -> str:
    """How a model's labels were obtained: label scoring or generation."""
    method = metrics.get("method", "generate")
    if method == "score":
        return f"label scoring ({metrics.get('normalize', 'sum')} log-likelihood)"
    return "generation" + (" (fallback)" if metrics.get("note") else "")


def _comparisons(comparisons: list[dict]) -> str:
    if not comparisons:
        return ""
    rows = [
        [
            c["model"],
            c["baseline"],
            f"{c['difference']:+.1%}",
            f"{c['difference_ci'][0]:+.1%} – {c['difference_ci'][1]:+.1%}",
            f"{c['p_value']:.3g}",
        ]
        for c in comparisons
    ]
    return "<h3>Against the baseline, same items</h3>" + table(
        ["model", "baseline", "Δ accuracy", "95% interval", "McNemar p"], rows, {2, 3, 4}
    )


def _per_class(m: dict) -> str:
    rows = [
        [label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for label, c in m["per_class"].items()
    ]
    return "<h3>Per class</h3>" + table(
        ["label", "precision", "recall", "F1", "support"], rows, {1, 2, 3, 4}
    )


def _confusion(confusion: dict) -> str:
    """Rows: gold label; columns: predicted (and invalid). Shade by share of the row."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    columns = confusion.get("columns") or labels
    head = "<tr><th>gold \\ predicted</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for label, row in zip(labels, matrix, strict=True):
        total = sum(row) or 1
        cells = "".join(
            f"<td class='cell heat-{round(10 * count / total)}'>{count}</td>" for count in row
        )
        body.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return (
        f"<h3>Confusion matrix</h3><table class='heat'><thead>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _answers(result: dict, is_right) -> str:
    outputs = result.get("outputs") or {}
    if not outputs:
        return ""
    names = list(outputs)
    head = "<tr><th>item</th><th>gold</th>" + "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for index in range(min(SAMPLE_ITEMS, len(outputs[names[0]]))):
        first = outputs[names[0]][index]
        # A partial run: a model stopped early has no answer to the later items.
        cells = "".join(
            _answer_cell(outputs[n][index], is_right) if index < len(outputs[n]) else "<td>—</td>"
            for n in names
        )
        rows.append(
            f"<tr><td class='q'><pre>{escape(first.get('question', ''))}</pre></td>"
            f"<td><pre>{escape(first.get('gold', ''))}</pre></td>{cells}</tr>"
        )
    return (
        f"<h2>Answers (first {len(rows)})</h2><table class='answers'><thead>{head}</tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _answer_cell(output: dict, is_right) -> str:
    right = is_right(output)
    mark = (
        "" if right is None else ("<b class='right'>✓</b> " if right else "<b class='wrong'>✗</b> ")
    )
    return f"<td>{mark}<pre>{escape(output.get('answer', ''))}</pre></td>"


# -- training -------------------------------------------------------------------------------


def _training_section(curves: dict[str, dict]) -> str:
    """Each fine-tuned model's training and validation loss (`tunelab.evals.training`)."""
    if not curves:
        return ""
    html = (
        "<h2>Training</h2><p class='muted'>How the loss of each fine-tuned model fell while it "
        "trained: training loss per step, validation loss where it was measured.</p>"
    )
    for name, curve in curves.items():
        points = curve.get("metrics") or []
        html += f"<h3>{escape(name)}</h3>" + loss_chart(points, f"training loss: {name}")
        html += f"<p class='meta'>{escape(_training_summary(points, curve.get('source')))}</p>"
    return html


def _training_summary(points: list[dict], source: str | None) -> str:
    """`6 steps · final training loss 1.234 · final validation loss 1.456 · from job ...`."""
    train, val = loss_series(points)
    said = [f"{len(train)} steps"]
    if train:
        said.append(f"final training loss {train[-1][1]:.4f}")
    if val:
        said.append(f"final validation loss {val[-1][1]:.4f}")
    return " · ".join(said + ([f"from {source}"] if source else []))


# -- queries --------------------------------------------------------------------------------


def _queries_sections(result: dict) -> str:
    rows = []
    for name, m in result["models"].items():
        execution = m.get("execution_match")
        rows.append(
            [
                name,
                f"{m['exact_match']:.1%}",
                f"{m['structural_match']:.1%}",
                "—" if execution is None else f"{execution:.1%}",
                f"{m['parse_failure_rate']:.1%}",
                m.get("answers_per_second"),
            ]
        )
    html = "<h2>Models</h2>" + table(
        ["model", "exact match", "structural", "execution match", "parse failures", "answers/s"],
        rows,
        {1, 2, 3, 4, 5},
    )
    notes = result.get("notes") or []
    if notes:
        html += "<ul class='notes'>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
    return html


# -- grade ----------------------------------------------------------------------------------


def _grade_sections(result: dict) -> str:
    grader = result.get("grader") or {}
    models = result.get("models") or {}
    html = f"<h2>Grader {escape(grader.get('name', ''))} ({escape(grader.get('type', ''))})</h2>"
    html += table(
        ["answers", "graded", "mean score", "pass rate", "errors"],
        [
            [
                name,
                m["n_items"],
                _score(m["mean_score"]),
                "—" if m["pass_rate"] is None else f"{m['pass_rate']:.1%}",
                ", ".join(f"{k}: {n}" for k, n in m["errors_by_kind"].items()) or 0,
            ]
            for name, m in models.items()
        ],
        {1, 2, 3, 4},
    )
    subs = [
        (name, sub, mean) for name, m in models.items() for sub, mean in m["sub_scores"].items()
    ]
    if subs:
        html += "<h2>Sub-graders (mean score)</h2>" + table(
            ["answers", "sub-grader", "mean"], [[n, s, _score(v)] for n, s, v in subs], {2}
        )
    return html


# -- tool calls -----------------------------------------------------------------------------


def _tools_sections(result: dict) -> str:
    rows = [
        [
            name,
            f"{m['function_match']:.1%}",
            f"{m['arguments_valid']:.1%}",
            f"{m['exact_match']:.1%}",
            f"{m['no_call_rate']:.1%}",
            m.get("answers_per_second"),
        ]
        for name, m in (result.get("models") or {}).items()
    ]
    return "<h2>Models</h2>" + table(
        ["model", "right function", "valid arguments", "exact", "no call", "answers/s"],
        rows,
        {1, 2, 3, 4, 5},
    )


# -- judge ----------------------------------------------------------------------------------


def _judge_sections(result: dict) -> str:
    html = ""
    models = result.get("models") or {}
    if models and any("traits" in m for m in models.values()):
        traits = sorted({t for m in models.values() for t in m.get("traits", {})})
        rows = [
            [
                name,
                f"{m.get('n_scored', '?')}/{m.get('n', '?')}",
                *(_score(m["traits"].get(t), (m.get("intervals") or {}).get(t)) for t in traits),
                _score(m.get("mean_score"), m.get("mean_interval")),
                m.get("n_parse_failures", 0),
            ]
            for name, m in models.items()
        ]
        html += "<h2>Scores (1–10, 95% interval)</h2>" + table(
            ["model", "items scored", *traits, "mean", "judge parse failures"],
            rows,
            set(range(1, len(traits) + 4)),
        )
    ratings = result.get("ratings") or {}
    if ratings:
        html += "<h2>Ratings (Elo scale, 95% bootstrap interval)</h2>" + _elo_chart(ratings)
        html += table(
            ["model", "rating", "95% interval"],
            [
                [n, f"{r['rating']:.0f}", f"{r['low']:.0f} – {r['high']:.0f}"]
                for n, r in sorted(ratings.items(), key=lambda kv: -kv[1]["rating"])
            ],
            {1, 2},
        )
    if result.get("note"):  # e.g. why a partial pairwise run has no ratings
        html += f"<p>{escape(result['note'])}</p>"
    return html + _parse_failures(result.get("outputs") or {})


def _parse_failures(outputs: dict) -> str:
    """Every judge verdict that could not be read, with the reason."""
    rows = [
        [
            name if "a" not in o else f"{o['a']} vs {o['b']}",
            index + 1,
            o.get("error") or "the verdict could not be read",
        ]
        for name, items in outputs.items()
        for index, o in enumerate(items)
        if o.get("parse_failure")
    ]
    if not rows:
        return ""
    return f"<h2>Judge parse failures ({len(rows)})</h2>" + table(
        ["model", "item", "reason"], rows, {1}
    )


def _score(value, interval=None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if not interval else f"{value:.2f} ({interval[0]:.1f}–{interval[1]:.1f})"


def _elo_chart(ratings: dict) -> str:
    ordered = sorted(ratings.items(), key=lambda kv: -kv[1]["rating"])
    low = min(r["low"] for _, r in ordered) - 20
    high = max(r["high"] for _, r in ordered) + 20
    width, left, row = 640, 190, 28

    def x(value: float) -> float:
        return left + (value - low) / (high - low or 1) * (width - left - 20)

    shapes = []
    for i, (name, r) in enumerate(ordered):
        y = 14 + i * row
        shapes += [
            f"<text x='0' y='{y + 4}'>{escape(name[:30])}</text>",
            f"<line class='axis' x1='{x(r['low']):.1f}' x2='{x(r['high']):.1f}' y1='{y}' "
            f"y2='{y}' stroke-width='2'/>",
            f"<circle class='bar' cx='{x(r['rating']):.1f}' cy='{y}' r='5'/>",
            f"<text x='{x(r['high']) + 6:.1f}' y='{y + 4}'>{r['rating']:.0f} "
            f"[{r['low']:.0f}, {r['high']:.0f}]</text>",
        ]
    return svg(width, 14 + len(ordered) * row, "Elo ratings with intervals", shapes)
