"""`/v1/files`: upload, list, retrieve, download and delete training files (OpenAI's shapes).

An upload streams to a staging file inside `TUNELAB_HOME` while its size is counted; past the
limit it stops, the staging file is removed, and the answer is 413: nothing is recorded.
The stored name is the server's own (by checksum): a client-supplied name is only a label.

The registry is blocking I/O: the upload records its file in a worker thread, and the other
handlers are plain functions, which FastAPI runs in its thread pool, so a slow registry never
stalls the event loop (each opens its `Store` in the thread it runs in).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import FileResponse

from tunelab.errors import TunelabError
from tunelab.providers.local import jobs as local
from tunelab.providers.local.artifacts import training_path
from tunelab.providers.registry import runs_here, this_machine
from tunelab.providers.wire import file_object
from tunelab.registry import File, Store
from tunelab.server.errors import ApiError
from tunelab.settings import writable_home

router = APIRouter()
PURPOSES = ("fine-tune",)
CHUNK = 1 << 20


@router.post("/files")
async def upload_file(request: Request) -> dict:
    form = await request.form()
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile) and not hasattr(upload, "read"):
        raise ApiError(
            400,
            "Missing the 'file' field (multipart/form-data).",
            code="missing_required_parameter",
            param="file",
        )
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}.",
            code="invalid_value",
            param="purpose",
        )
    staged = await _stage(upload, request.app.state.config.max_upload_bytes)
    name = Path(upload.filename or "upload.jsonl").name  # a label, never a path
    try:
        row = await asyncio.to_thread(_record, staged, name, purpose)
    finally:
        staged.unlink(missing_ok=True)
    return file_object(row)


def _record(staged: Path, filename: str, purpose: str) -> File:
    with Store() as store:
        return local.store_upload(store, staged, filename, purpose)


async def _stage(upload, limit: int) -> Path:
    """Copy the upload to a staging file, refusing (413) past `limit` bytes."""
    directory = writable_home("store uploaded files") / "files"
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / f".upload-{secrets.token_hex(8)}.tmp"
    size = 0
    try:
        with staged.open("wb") as handle:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413,
                        f"The file is larger than this server's limit ({limit / (1 << 20):g} MB).",
                        code="file_too_large",
                        param="file",
                    )
                handle.write(chunk)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


@router.get("/files")
def list_files(
    purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc"
) -> dict:
    with Store() as store:
        rows = store.list_files(limit=100_000, provider=this_machine(), purpose=purpose)
    if order == "asc":
        rows.reverse()
    if after is not None:
        ids = [row.id for row in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    page = rows[: max(1, min(limit, 10000))]
    return {
        "object": "list",
        "data": [file_object(r) for r in page],
        "has_more": len(rows) > len(page),
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }


def _local_file(file_id: str) -> File:
    with Store() as store:
        row = store.get_file(file_id)
    if not runs_here(row.provider):
        raise ApiError(404, f"No such File object: {file_id}", code="file_not_found", param="id")
    return row


@router.get("/files/{file_id}")
def retrieve_file(file_id: str) -> dict:
    return file_object(_local_file(file_id))


@router.get("/files/{file_id}/content")
def file_content(file_id: str) -> FileResponse:
    row = _local_file(file_id)
    try:  # kept here, else fetched from the artefact store another machine uploaded it to
        path = training_path(row)
    except TunelabError as err:
        if err.code != "artifact_not_here":
            raise
        raise ApiError(
            404, f"The content of {file_id} is no longer stored.", code="file_not_found"
        ) from None
    return FileResponse(path, media_type="application/jsonl", filename=row.filename)


@router.delete("/files/{file_id}")
def delete_file(file_id: str) -> dict:
    row = _local_file(file_id)
    with Store() as store:
        store.delete_file(row.id)
        shared = any(other.path == row.path for other in store.list_files(limit=100_000))
    if row.path and not shared:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(row.path)
    return {"id": row.id, "object": "file", "deleted": True}
