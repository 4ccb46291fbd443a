"""The HTML helpers every report and page builds on: user text never becomes markup."""

from __future__ import annotations

from tunelab.html_blocks import escape, percent, report_page, svg, table

HOSTILE = '<script>alert("x")</script>'


def test_escape_makes_text_safe_in_elements_and_attributes():
    assert escape(HOSTILE) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert escape("it's") == "it&#x27;s" and escape(3) == "3"


def test_a_table_escapes_every_cell_and_marks_numbers_and_the_current_row():
    html = table(
        ["model", "accuracy"], [[HOSTILE, 0.5], ["base", None]], numeric={1}, highlight={1}
    )
    assert "<script" not in html and escape(HOSTILE) in html
    assert '<th class="num">accuracy</th>' in html and '<td class="num">0.5</td>' in html
    assert '<tr class="current"><td>base</td><td class="num">—</td></tr>' in html


def test_a_report_page_is_self_contained_and_escapes_its_title_and_footer():
    page = report_page(HOSTILE, "<p>body</p>", HOSTILE, style=".x{}")
    assert page.startswith("<!DOCTYPE html>") and "<p>body</p>" in page
    assert "<script" not in page and page.count(escape(HOSTILE)) == 2
    assert ".x{}" in page and "http" not in page  # no external asset
    chart = svg(100, 20.4, HOSTILE, ["<rect/>"])
    assert chart.startswith('<svg viewBox="0 0 100 20"') and "<script" not in chart


def test_a_percentage_reads_right_in_reports_and_the_studio_alike():
    assert percent(0.5) == "50.0%" and percent(1 / 3) == "33.3%" and percent(0) == "0.0%"
    assert percent(0.0004) == "< 0.1%"  # one bad answer in thousands is not "0.0%"
    assert [percent(v) for v in (None, "x", True, float("nan"))] == ["—"] * 4
