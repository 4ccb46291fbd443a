"""Models: every model tunelab knows (fine-tuned ones on any provider, aliases, then base
models); forget a fine-tuned one, or export a local one (merged weights or the LoRA adapter).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tunelab.engine.export import export_model
from tunelab.errors import TunelabError
from tunelab.providers.local.artifacts import model_dir
from tunelab.providers.models import ALIAS, delete_model, list_models
from tunelab.providers.registry import runs_here
from tunelab.registry import Model
from tunelab.server.ui.web import error_page, form_text, page, see_other
from tunelab.server.ui.workspace import safe_name, studio_dir

router = APIRouter()


@router.get("/models")
async def models_page(request: Request, exported: str | None = None):
    models = await run_in_threadpool(lambda: list_models(with_aliases=True))
    tuned = [m for m in models if m.kind not in ("base", ALIAS)]
    aliases = [m for m in models if m.kind == ALIAS]
    base = [m for m in models if m.kind == "base"]
    return page(request, "models.html", tuned=tuned, aliases=aliases, base=base, exported=exported)


def _tuned(name: str) -> Model:
    for model in list_models():
        if model.id == name and model.kind != "base":
            return model
    raise TunelabError("model_not_found", f"no fine-tuned model {name!r}.")


@router.post("/models/delete")
async def model_delete(request: Request):
    form = await request.form()
    try:
        model = await run_in_threadpool(_tuned, form_text(form, "model", ""))
        removed = await run_in_threadpool(delete_model, model.id)
    except TunelabError as err:
        return error_page(request, err)
    if removed.path:
        request.app.state.inference.unload(removed.path)
    return see_other("/models")


@router.post("/models/export")
async def model_export(request: Request):
    form = await request.form()
    try:
        model = await run_in_threadpool(_tuned, form_text(form, "model", ""))
        if not runs_here(model.provider) or not model.path:
            raise TunelabError(
                "not_exportable",
                f"{model.id} is on {model.provider}; only local models are exported here.",
            )
        merge = form_text(form, "format", "merged") == "merged"
        target = (
            studio_dir() / "exports" / f"{safe_name(model.id)}-{'merged' if merge else 'adapter'}"
        )
        source = await run_in_threadpool(model_dir, model)  # fetched if trained elsewhere
        done = await run_in_threadpool(export_model, source, target, merge=merge, force=True)
    except TunelabError as err:
        return error_page(request, err)
    return see_other(f"/models?exported={done['output_dir']}")


@router.get("/models/download")
async def model_download(request: Request, model: str):
    """A local fine-tuned model's directory (adapter or weights, tokenizer, config) as a zip."""
    try:
        found = await run_in_threadpool(_tuned, model)
        if not runs_here(found.provider) or not found.path:
            raise TunelabError("not_downloadable", f"{found.id} is on {found.provider}.")
        source = await run_in_threadpool(model_dir, found)  # fetched if trained elsewhere
        archive = await run_in_threadpool(_zip, Path(source), found.id)
    except TunelabError as err:
        return error_page(request, err)
    return FileResponse(archive, media_type="application/zip", filename=archive.name)


def _zip(directory: Path, name: str) -> Path:
    """The model's files without its checkpoints (those are for resuming, not for use)."""
    target = studio_dir() / "downloads" / safe_name(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent))  # two downloads never share files
    try:
        shutil.copytree(directory, work / "model", ignore=shutil.ignore_patterns("checkpoints"))
        built = Path(shutil.make_archive(str(work / "archive"), "zip", work / "model"))
        built.replace(target.with_suffix(".zip"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target.with_suffix(".zip")
