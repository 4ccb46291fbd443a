"""The pieces of every HTML page tunelab writes in Python: escaping, tables, SVG, the report page.

The analysis report (`tunelab.data.report_html`), the evaluation report
(`tunelab.evals.report`), the loss curve (`tunelab.curves`), the API reference page and the
studio's streamed fragments build on these, so that user text is escaped one way everywhere.
Reports are self-contained (no script, no external asset) and their sections carry no
`style` attribute, so a page with a strict Content Security Policy (the studio) can embed
them and style their classes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

REPORT_STYLE = """
:root { --fg:#1f2430; --muted:#667085; --line:#e4e7ec; --bg:#fff; --panel:#f7f8fa;
  --accent:#3b5bdb; --warn:#b54708; --err:#b42318; --ok:#027a48; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; }
main { max-width:980px; margin:0 auto; padding:32px 24px 48px; }
h1 { font-size:26px; margin:0 0 4px; } h3 { font-size:15px; margin:20px 0 8px; }
h2 { font-size:19px; margin:36px 0 12px; padding-bottom:6px; border-bottom:1px solid var(--line); }
.meta, .muted, footer { color:var(--muted); } .meta span { margin-right:18px; white-space:nowrap; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:12px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:10px;
  padding:12px 14px; }
.card .label { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.card .value { font-size:24px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .sub { font-size:12px; color:var(--muted); }
table { border-collapse:collapse; width:100%; margin:6px 0 12px;
  font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); }
th { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
td.num, th.num { text-align:right; } tr.current td { background:#eef2ff; font-weight:600; }
.err { color:var(--err); font-weight:600; } .warn { color:var(--warn); font-weight:600; }
.ok { color:var(--ok); font-weight:600; }
ul.notes { padding-left:20px; } ul.notes li { color:var(--warn); }
svg { width:100%; height:auto; display:block; margin:4px 0 14px; }
svg text { font:11px system-ui,sans-serif; fill:var(--muted); }
svg .bar { fill:var(--accent); } svg .axis { stroke:#98a2b3; }
svg .marker { stroke:var(--warn); stroke-dasharray:4 3; } svg text.mark { fill:var(--warn); }
svg text.legend-train { fill:var(--accent); } svg text.legend-val { fill:#d9480f; }
footer { margin-top:40px; font-size:12px; border-top:1px solid var(--line); padding-top:10px; }
"""


def percent(value: object) -> str:
    """A fraction as a percentage, "—" when it is no number. A single bad answer in
    thousands must not read as "0.0%"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return "< 0.1%" if 0 < value < 0.001 else f"{value * 100:.1f}%"


def escape(value: object) -> str:
    """`value` as text in HTML, quotes included (safe in an attribute too)."""
    return html.escape(str(value), quote=True)


def table(
    headers: Sequence[object],
    rows: Iterable[Sequence[object]],
    numeric: Iterable[int] = (),
    highlight: Iterable[int] = (),
) -> str:
    """A table of escaped cells (None shows as "—"); `numeric` columns are right-aligned,
    `highlight` rows marked `current`."""
    numeric, highlight = set(numeric), set(highlight)

    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="num"' if i in numeric else ""
        return f"<{tag}{cls}>{escape('—' if value is None else value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        ('<tr class="current">' if r in highlight else "<tr>")
        + "".join(cell("td", i, v) for i, v in enumerate(row))
        + "</tr>"
        for r, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def svg(
    width: int,
    height: float,
    title: str,
    shapes: Iterable[str],
    attributes: dict[str, object] | None = None,
) -> str:
    """An inline SVG chart of already drawn `shapes`; `title` (escaped) is its accessible name,
    `attributes` (escaped) are added to the `<svg>` element."""
    extra = "".join(f' {name}="{escape(value)}"' for name, value in (attributes or {}).items())
    return (
        f'<svg viewBox="0 0 {width} {height:.0f}" role="img" aria-label="{escape(title)}"{extra}>'
        + "".join(shapes)
        + "</svg>"
    )


def report_page(title: str, body: str, footer: str, *, style: str = "") -> str:
    """A complete, self-contained HTML document: `body` (markup) in the report style plus
    `style`, under an escaped `title`, ending with an escaped `footer` line."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{REPORT_STYLE}{style}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n<footer>{escape(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
