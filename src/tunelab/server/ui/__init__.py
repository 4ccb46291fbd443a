"""tunelab studio: the web UI of seed 004, served by `tunelab serve` at `/` beside the API.

Server-rendered Jinja2 pages (autoescaped: file contents, model answers and job names are
data, never markup), htmx and its server-sent-events extension vendored under `static/`
(no CDN, no build step, no inline script), charts drawn as SVG on the server. Each page is
a thin front end over the Python API: `tunelab.data` for formatting and analysis,
`tunelab.providers.jobs` and `.models` for jobs and models, `tunelab.evals` for evaluations,
and the server's own inference service for chat. Training never runs in a request: jobs go
to the worker; evaluations run in a background thread of the server.
"""

from __future__ import annotations

from fastapi import FastAPI

from tunelab.server.ui import (
    auth,
    chat_pages,
    conversation_pages,
    data_pages,
    eval_pages,
    job_pages,
    lineage_pages,
    model_pages,
)
from tunelab.server.ui.web import STATIC_DIR, security_headers


def install_ui(app: FastAPI) -> None:
    """Mount the studio's pages, login and static files on `app`."""
    from fastapi.staticfiles import StaticFiles  # only when the studio is mounted

    app.middleware("http")(security_headers)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    pages = (data_pages, conversation_pages, job_pages, chat_pages, eval_pages, model_pages)
    for module in (auth, *pages, lineage_pages):
        app.include_router(module.router)
