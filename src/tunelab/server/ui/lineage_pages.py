"""Lineage: how a model was made and what was made of a dataset, on one page each.

A model's page shows its job, the job's data, the evaluations that ran it and the exports
of a model trained on the same data; a dataset's, the jobs trained on it and the
evaluations of its bytes; an evaluation's, the models and data it used. The queries are
`tunelab.providers.lineage`'s; this module only renders them.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.providers import lineage
from tunelab.server.ui.web import error_page, page
from tunelab.server.ui.workspace import studio_dir

router = APIRouter()


@router.get("/lineage/models/{model_id:path}")
async def model_lineage_page(request: Request, model_id: str):
    exports = studio_dir() / "exports"
    return await _lineage_page(request, "models", lineage.model_lineage, model_id, exports)


@router.get("/lineage/files/{file_id}")
async def file_lineage_page(request: Request, file_id: str):
    return await _lineage_page(request, "data", lineage.dataset_lineage, file_id)


@router.get("/lineage/evals/{run_id}")
async def eval_lineage_page(request: Request, run_id: str):
    return await _lineage_page(request, "evals", lineage.evaluation_lineage, run_id)


TEMPLATES = {
    "models": "lineage_model.html",
    "data": "lineage_file.html",
    "evals": "lineage_eval.html",
}


async def _lineage_page(request: Request, nav: str, query: Callable, *args):
    """The lineage `query(*args)` finds (off the event loop), on the page of its `nav`
    section; a 404 page when what it starts from is not found."""
    try:
        found = await run_in_threadpool(query, *args)
    except TunelabError as err:
        return error_page(request, err, 404)
    return page(request, TEMPLATES[nav], nav=nav, lineage=found)
