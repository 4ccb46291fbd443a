"""The studio's own files: sources users upload (or pick under the data directory), the chat
datasets that saved conversations are appended to, and the datasets formatted from them. Kept
under `TUNELAB_HOME/studio/`; the formatted training and validation files are also recorded in
the registry, where jobs find them.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import orjson

from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text, commit, staged_write
from tunelab.settings import get_settings

PREVIEW_LINES = 8
PREVIEW_CHARS = 4000
CHAT_ORIGIN = "chat"  # a source the Chat page's saved conversations are appended to


def studio_dir() -> Path:
    return get_settings().home / "studio"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def safe_name(name: str) -> str:
    """A client's file name as a label: no directories, nothing odd."""
    name = Path(name or "upload").name
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._")
    return cleaned[:80] or "upload"


def write_meta(directory: Path, meta: dict) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        directory / "meta.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2).decode()
    )
    return meta


def read_meta(kind: str, item_id: str) -> dict:
    if not item_id.replace("-", "").isalnum():
        raise TunelabError("not_found", f"no {kind} {item_id!r}.")
    path = studio_dir() / kind / item_id / "meta.json"
    if not path.exists():
        raise TunelabError("not_found", f"no {kind[:-1]} {item_id!r}.")
    return orjson.loads(path.read_bytes())


def list_meta(kind: str) -> list[dict]:
    root = studio_dir() / kind
    if not root.exists():
        return []
    metas = [orjson.loads(p.read_bytes()) for p in root.glob("*/meta.json")]
    return sorted(metas, key=lambda m: m.get("created_at", 0), reverse=True)


def add_source(path: Path, name: str, origin: str) -> dict:
    """Record a source: an uploaded copy (`origin` upload) or a file under the data directory."""
    source_id = new_id("src")
    meta = {
        "id": source_id,
        "name": name,
        "path": str(path),
        "origin": origin,
        "bytes": path.stat().st_size,
        "created_at": int(time.time()),
    }
    return write_meta(studio_dir() / "sources" / source_id, meta)


def upload_target(name: str) -> tuple[str, Path]:
    source_id = new_id("src")
    directory = studio_dir() / "sources" / source_id
    directory.mkdir(parents=True, exist_ok=True)
    return source_id, directory / safe_name(name)


def head_text(path: Path) -> list[str]:
    """The first lines of a text file, for a preview (shown as text, never as markup)."""
    lines = []
    with path.open("rb") as handle:
        for raw in handle:
            lines.append(raw.decode("utf-8", errors="replace").rstrip("\r\n")[:PREVIEW_CHARS])
            if len(lines) >= PREVIEW_LINES:
                break
    return lines


def under(directory: Path, relative: str) -> Path:
    """`relative` inside `directory`, refusing anything that leaves it (.., links, absolute)."""
    root = directory.resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise TunelabError(
            "path_outside_data_dir", f"{relative!r} is not inside the data directory."
        )
    if not target.is_file():
        raise TunelabError("source_not_found", f"{relative!r} is not a file in the data directory.")
    return target


def data_dir_files(directory: Path | None, limit: int = 200) -> list[str]:
    if directory is None or not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not any(
            part.startswith(".") for part in path.relative_to(directory).parts
        ):
            found.append(str(path.relative_to(directory)))
            if len(found) >= limit:
                break
    return found


# Saves of conversations come from request threads; one file is appended by one at a time.
_chat_lock = threading.Lock()


def append_chat_example(dataset: str, messages: list[dict]) -> dict:
    """Append one chat example to the studio's chat dataset `dataset` (a source, created on
    first use, that the Data page formats into training data); returns the source's record.

    The file is rewritten whole and renamed into place: a reader sees it before or after the
    append, never half a line.
    """
    name = f"{safe_name(dataset)}.jsonl"
    line = orjson.dumps({"messages": messages}) + b"\n"
    with _chat_lock:
        meta = _chat_source(name)
        path = Path(meta["path"])
        existing = path.read_bytes() if path.exists() else b""
        with staged_write(path, "wb") as (handle, tmp):
            handle.write(existing + line)
        commit(tmp, path)
        meta.update(bytes=path.stat().st_size, examples=meta.get("examples", 0) + 1)
        return write_meta(path.parent, meta)


def _chat_source(name: str) -> dict:
    """The studio's chat dataset called `name`, or a new empty one."""
    for meta in list_meta("sources"):
        if meta.get("origin") == CHAT_ORIGIN and meta.get("name") == name:
            return meta
    source_id = new_id("src")
    path = studio_dir() / "sources" / source_id / name
    return {
        "id": source_id,
        "name": name,
        "path": str(path),
        "origin": CHAT_ORIGIN,
        "bytes": 0,
        "examples": 0,
        "created_at": int(time.time()),
    }
