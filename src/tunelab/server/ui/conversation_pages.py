"""Generate conversations (seed 004's first step, `tunelab generate-conversations`): an
ideas file, uploaded or one of the studio's sources, answered by a model; the progress page
opens the conversation database as a source when it is written.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.evals.conversations import ConversationRecipe
from tunelab.server.model_access import check_offered
from tunelab.server.ui import background, web, workspace
from tunelab.server.ui.chat_pages import chat_models
from tunelab.server.ui.conversation_tasks import (
    GENERATED_ORIGIN,
    GenerationRequest,
    GenerationTasks,
)

router = APIRouter()
CHUNK = 1 << 20


@router.get("/data/generate")
async def generate_form(request: Request, source: str | None = None):
    models = await run_in_threadpool(chat_models)
    # A conversation database the studio wrote is no ideas file: the others may be.
    sources = [s for s in workspace.list_meta("sources") if s["origin"] != GENERATED_ORIGIN]
    return web.page(
        request, "generate.html", nav="data", models=models, sources=sources, source=source
    )


@router.post("/data/generate")
async def generate_start(request: Request):
    form = await request.form()
    try:
        ideas = await _ideas_source(form)
        model = web.form_text(form, "model", "")
        await run_in_threadpool(check_offered, [model], request.app.state.config)
        max_tokens = web.form_number(form, "max_tokens", int)
        temperature = web.form_number(form, "temperature")
        generation = GenerationRequest(
            ideas_path=Path(ideas["path"]),
            ideas_name=ideas["name"],
            recipe=ConversationRecipe(
                model=model,
                template=web.form_text(form, "template", "{idea}"),
                system_prompt=web.form_text(form, "system"),
                max_tokens=512 if max_tokens is None else max_tokens,
                temperature=0.0 if temperature is None else temperature,
            ),
        )
        task = await run_in_threadpool(GenerationTasks.of(request).start, generation)
    except TunelabError as err:
        return web.error_page(request, err)
    return web.see_other(f"/data/generate/tasks/{task.id}")


async def _ideas_source(form) -> dict:
    """The uploaded ideas file (kept as a source, to pick again) or the source chosen."""
    upload = form.get("ideas")
    if upload is not None and not isinstance(upload, str) and upload.filename:
        _, target = workspace.upload_target(upload.filename)
        with target.open("wb") as handle:  # the body limit is the server's (413 past it)
            while chunk := await upload.read(CHUNK):
                handle.write(chunk)
        return workspace.add_source(target, workspace.safe_name(upload.filename), "upload")
    source_id = web.form_text(form, "source")
    if not source_id:
        raise TunelabError("no_file", "Upload an ideas file or choose one of the sources.")
    return workspace.read_meta("sources", source_id)


background.add_task_routes(
    router,
    "/data/generate/tasks",
    GenerationTasks.of,
    "generate_task.html",
    nav="data",
    made="/data/sources/{task.source_id}",
)
