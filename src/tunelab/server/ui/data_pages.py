"""Data: pick a source (upload, or a path under the data directory), see what it is, format
it as `tunelab format` does, and see the validation findings and the analysis. The formatted
files land in the registry, where the job form finds them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from tunelab.catalog import DEFAULT_MODEL
from tunelab.data.analyze import analyze_file
from tunelab.data.formatter import format_dataset
from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.report_html import render_html, render_sections
from tunelab.data.sources import KINDS, ConversationSchema, SourceOptions, preview_conversations
from tunelab.data.sources.detect import detect_kind, is_sqlite
from tunelab.data.sources.tables import head_table
from tunelab.data.validate import validate_file
from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text
from tunelab.providers.jobs import PROVIDERS
from tunelab.providers.local import jobs as local
from tunelab.providers.models import list_models
from tunelab.providers.registry import this_machine
from tunelab.registry import Store
from tunelab.server.ui import workspace
from tunelab.server.ui.web import (
    REPORT_CSP,
    error_page,
    form_number,
    form_text,
    page,
    see_other,
    trusted_html,
)

router = APIRouter()
CHUNK = 1 << 20
PROMPT_FIELDS = ("instruction", "category_tag", "item_tag", "output_tag")
SCHEMA_FIELDS = ("conversations_table", "messages_table", "role_column", "content_column")


@router.get("/")
def home():
    return see_other("/data")


@router.get("/data")
def data_home(request: Request):
    with Store() as store:
        files = store.list_files(limit=50, provider=this_machine())
    data_dir = request.app.state.config.data_dir
    return page(
        request,
        "data.html",
        sources=workspace.list_meta("sources")[:20],
        datasets=workspace.list_meta("datasets")[:20],
        files=files,
        data_dir=data_dir,
        data_files=workspace.data_dir_files(data_dir),
    )


@router.post("/data/upload")
async def upload(request: Request):
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str) or not upload.filename:
        return error_page(request, TunelabError("no_file", "Choose a file to upload."))
    _, target = workspace.upload_target(upload.filename)
    with target.open("wb") as handle:  # the body limit is the server's (413 past it)
        while chunk := await upload.read(CHUNK):
            handle.write(chunk)
    meta = workspace.add_source(target, workspace.safe_name(upload.filename), "upload")
    return see_other(f"/data/sources/{meta['id']}")


@router.post("/data/open")
async def open_path(request: Request):
    form = await request.form()
    data_dir = request.app.state.config.data_dir
    try:
        if data_dir is None:
            raise TunelabError(
                "no_data_dir",
                "This server has no data directory.",
                hint="start it with `tunelab serve --data-dir DIR`",
            )
        path = workspace.under(Path(data_dir), form_text(form, "path", ""))
    except TunelabError as err:
        return error_page(request, err)
    meta = workspace.add_source(path, path.name, "data_dir")
    return see_other(f"/data/sources/{meta['id']}")


@router.get("/data/sources/{source_id}")
async def source_page(request: Request, source_id: str):
    try:
        meta = workspace.read_meta("sources", source_id)
        preview = await run_in_threadpool(_preview, Path(meta["path"]))
    except TunelabError as err:
        return error_page(request, err, 404 if err.code == "not_found" else 400)
    models = [m for m in list_models(kind="base") if m.provider in PROVIDERS]
    return page(
        request, "data_source.html", nav="data", source=meta, kinds=KINDS, models=models, **preview
    )


def _preview(path: Path) -> dict:
    """The detected kind and the first rows (a database: its tables, counts and a sample; a
    CSV/TSV table: its header and first rows)."""
    try:
        detection = detect_kind(path)
    except TunelabError as err:
        detection, problem = None, err
    else:
        problem = None
    if is_sqlite(path):
        return {
            "detection": detection,
            "problem": problem,
            "lines": None,
            "table": None,
            "database": preview_conversations(path).to_dict(),
        }
    table = _table_head(path)
    return {
        "detection": detection,
        "problem": problem,
        "lines": None if table else workspace.head_text(path),
        "table": table,
        "database": None,
    }


def _table_head(path: Path):
    """A CSV/TSV source's first rows as a table; a table the reader refuses (its error is
    shown above the preview) is previewed as text, where the faulty row can be seen."""
    try:
        return head_table(path, workspace.PREVIEW_LINES)
    except TunelabError:
        return None


@router.post("/data/sources/{source_id}/format")
async def format_source(request: Request, source_id: str):
    form = await request.form()
    try:
        meta = workspace.read_meta("sources", source_id)
        dataset = await run_in_threadpool(_format, meta, form)
    except TunelabError as err:
        return error_page(request, err)
    return see_other(f"/data/datasets/{dataset['id']}")


def _source_options(form) -> SourceOptions:
    system = form.get("system") if form.get("system_override") else None
    prompt_parts = {name: form_text(form, name) for name in PROMPT_FIELDS}
    prompt_parts = {k: v for k, v in prompt_parts.items() if v}
    if form.get("short_template"):
        prompt_parts["template"] = "short"
    prompt = None
    if prompt_parts or form.get("bare_label"):
        prompt = ClassificationPrompt(**prompt_parts, bare_label=bool(form.get("bare_label")))
    schema_parts = {name: form_text(form, name) for name in SCHEMA_FIELDS}
    schema_parts = {k: v for k, v in schema_parts.items() if v}
    return SourceOptions(
        system=system,
        question_field=form_text(form, "question_field"),
        answer_field=form_text(form, "answer_field"),
        context_field=form_text(form, "context_field"),
        text_column=form_text(form, "text_column"),
        label_column=form_text(form, "label_column"),
        prompt=prompt,
        schema=ConversationSchema(**schema_parts) if schema_parts else None,
        max_conversations=form_number(form, "max_conversations", int),
    )


def _format(source: dict, form) -> dict:
    """Format, validate, register and analyze; returns the dataset's record."""
    kind = form_text(form, "kind")
    dataset_id = workspace.new_id("ds")
    directory = workspace.studio_dir() / "datasets" / dataset_id
    directory.mkdir(parents=True, exist_ok=True)
    stem = workspace.safe_name(form_text(form, "name") or Path(source["name"]).stem)
    ratio = form_number(form, "train_ratio") or 0.8
    val_output = directory / f"{stem}_val.jsonl" if ratio < 1.0 else None
    report = format_dataset(
        Path(source["path"]),
        directory / f"{stem}_train.jsonl",
        val_output,
        kind=None if kind in (None, "auto") else kind,
        options=_source_options(form),
        train_ratio=ratio,
        seed=form_number(form, "seed", int) or 42,
    )
    train = Path(report.train_output)
    val = Path(report.val_output) if report.val_output else None
    validation = validate_file(train, val_path=val, model=_model(form))
    analysis = analyze_file(train, val_path=val, model=_model(form))
    with Store() as store:
        summary = validation.to_dict()
        train_file = local.register_file(store, train, summary)
        val_file = local.register_file(store, val, summary) if val else None
    atomic_write_text(directory / "report.html", render_html(analysis))
    meta = {
        "id": dataset_id,
        "name": stem,
        "source": source,
        "created_at": train_file.created_at,
        "format": report.to_dict(),
        "validation": summary,
        "analysis": analysis.to_json(),
        "train_file": train_file.id,
        "val_file": val_file.id if val_file else None,
    }
    return workspace.write_meta(directory, meta)


def _model(form) -> str:

    return form_text(form, "model") or DEFAULT_MODEL


@router.get("/data/datasets/{dataset_id}")
def dataset_page(request: Request, dataset_id: str):
    try:
        meta = workspace.read_meta("datasets", dataset_id)
    except TunelabError as err:
        return error_page(request, err, 404)
    directory = workspace.studio_dir() / "datasets" / dataset_id
    rows = workspace.head_text(directory / f"{meta['name']}_train.jsonl")
    # The findings are listed by line above: the analysis leaves its own summary of them out.
    analysis_html = trusted_html(render_sections(meta["analysis"], findings=False))
    return page(
        request,
        "data_dataset.html",
        nav="data",
        dataset=meta,
        rows=rows,
        analysis_html=analysis_html,
    )


@router.get("/data/datasets/{dataset_id}/report.html")
def dataset_report(dataset_id: str):
    workspace.read_meta("datasets", dataset_id)  # refuses odd ids
    html = (workspace.studio_dir() / "datasets" / dataset_id / "report.html").read_text()
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})
