"""What every page shares: the Jinja2 environment, page and fragment responses, the security
headers, server-sent events and form parsing.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from tunelab import __version__
from tunelab.errors import TunelabError, redact_urls
from tunelab.html_blocks import percent
from tunelab.providers.registry import runs_here

UI_DIR = Path(__file__).parent
STATIC_DIR = UI_DIR / "static"
# No inline script or style anywhere: htmx's own indicator styles are turned off (meta
# htmx-config) and every script is a file under /static.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'; frame-src 'self'"
)
# The standalone reports (analysis, evaluation) are complete HTML documents with their own
# inline <style>, as they are written to disk and mailed around: served as they are, they
# are sandboxed and may run no script. The studio's pages embed their sections instead.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
)


def _shown(value):
    """Every value a template shows, with the passwords of URLs in it hidden (an endpoint's
    base URL, a `MODEL@URL` name, an error quoting either)."""
    if isinstance(value, Markup):
        return Markup(redact_urls(str(value)))
    return redact_urls(value) if isinstance(value, str) else value


# Autoescape on for every template: file contents, answers and names are data, never markup.
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(UI_DIR / "templates"), autoescape=True, finalize=_shown
    )
)
templates.env.globals["version"] = __version__
# Pages ask "is this job or model this machine's?" of the provider registry.
templates.env.globals["runs_here"] = runs_here


def _when(timestamp) -> str:
    if not timestamp:
        return "—"
    return dt.datetime.fromtimestamp(int(timestamp)).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _file_name(path) -> str:
    """A file's or directory's name, never where it is on the server: a page seen by a
    client tells nothing of the server's disk."""
    return Path(str(path)).name if path else "—"


templates.env.filters.update(
    when=_when,
    file_name=_file_name,
    duration=_duration,
    number=_number,
    percent=percent,
    tojson_pretty=lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str),
)


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    """A whole page (or, for a template named `_*.html`, a fragment)."""
    context.setdefault("nav", name.split("_")[0].split(".")[0])
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, err: TunelabError, status_code: int = 400) -> HTMLResponse:
    return page(request, "error.html", status_code=status_code, error=err, nav="")


def see_other(url: str) -> RedirectResponse:
    """The answer to a form post: the browser GETs `url` (post/redirect/get)."""
    return RedirectResponse(url, status_code=303)


def sse(event: str, html: str) -> str:
    """One server-sent event whose data is an HTML fragment (every line prefixed)."""
    lines = str(html).split("\n")
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def trusted_html(svg: str) -> Markup:
    """Markup the server drew (SVG charts, report sections): every user string in it went
    through `tunelab.html_blocks.escape` when it was drawn."""
    return Markup(svg)


async def security_headers(request: Request, call_next):
    """CSP and friends on every page the studio serves (the API's JSON needs none)."""
    response = await call_next(request)
    if request.url.path.startswith("/v1/"):
        return response
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if not request.url.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")  # pages show live state
    return response


def form_text(form, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None or not isinstance(value, str):
        return default
    value = value.strip()
    return value if value else default


def form_number(form, name: str, kind=float, *, allow_auto: bool = False):
    """A number from a form field; None when empty (or `auto` where that is allowed)."""
    text = form_text(form, name)
    if text is None or (allow_auto and text.lower() == "auto"):
        return None
    try:
        return kind(text)
    except ValueError as err:
        raise TunelabError(
            "invalid_form",
            f"{name.replace('_', ' ')}: {text!r} is not a {'whole ' if kind is int else ''}number.",
        ) from err
