"""Artefacts on storage every machine reaches: `TUNELAB_ARTIFACTS`, a directory or an fsspec URL.

With it set, a local job's training files are copied there when the job is created
(`files/<checksum>.jsonl`); a worker on any machine fetches them into its own TUNELAB_HOME
before training; the job's directory (adapter or weights, metrics.jsonl, loss.svg,
tunelab_config.json, finetune.log, and its checkpoints while the job is unfinished) is uploaded to
`jobs/<job id>/` when the job ends, before its status says so; and whoever uses the `ft:`
model (chat, export, serve, training further) fetches that directory when this machine lacks
it. Unset, nothing leaves TUNELAB_HOME.

While a job trains, each checkpoint is uploaded too, in the background, as soon as it is
saved (`providers/checkpoint_uploads.py`): a worker machine that dies leaves its last uploaded
checkpoint in the store, and the job resumes from it on any machine.

A directory upload ends with its manifest (`.tunelab-manifest.json`: the files and a token),
which replaces the previous one in one step once every file is sent; files it no longer names
are removed only then. A reader never fetches a half-uploaded directory, and an upload cut
short (a dead machine) leaves the previous one whole. The fetched copy keeps the manifest, so
a directory is fetched again only when another machine uploaded a newer one, and an upload
does not send again the checkpoints the store holds already.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson

from tunelab.errors import TunelabError
from tunelab.settings import get_settings

MANIFEST = ".tunelab-manifest.json"


class Artifacts:
    """The shared artefact store at `url` (a path or any URL fsspec knows: file://, s3://, …)."""

    def __init__(self, url: str) -> None:
        import fsspec  # only with TUNELAB_ARTIFACTS set

        self.url = url.rstrip("/")
        with self._reaching("open"):
            self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")

    def url_of(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    @contextlib.contextmanager
    def _reaching(self, what: str):
        """fsspec's errors (missing backend, refused access, no network) as a TunelabError."""
        try:
            yield
        except (OSError, ImportError, ValueError) as err:
            raise TunelabError(
                "artifacts_unavailable",
                f"cannot {what} in the artefact store {shown(self.url)}: {err}",
                hint="check TUNELAB_ARTIFACTS, the credentials of its storage, and that its "
                "fsspec backend is installed (s3fs for s3://, gcsfs for gs://, …)",
            ) from None

    # -- single files, named by content: an existing one is the same bytes ------------------

    def put_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        with self._reaching(f"upload {key}"):
            if self.fs.exists(target):
                return
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            staging = f"{target}.{secrets.token_hex(4)}.tmp"
            self.fs.put_file(str(local), staging)
            self.fs.mv(staging, target)

    def get_file(self, key: str, local: Path) -> bool:
        """Fetch `key` into `local` (atomically); False when the store has no such file."""
        source = self._path(key)
        with self._reaching(f"fetch {key}"):
            if not self.fs.exists(source):
                return False
            local.parent.mkdir(parents=True, exist_ok=True)
            staging = local.with_name(f".{local.name}.{os.getpid()}.tmp")
            self.fs.get_file(source, str(staging))
        os.replace(staging, local)
        return True

    # -- directories: the files first, the manifest last -----------------------------------

    def put_dir(
        self,
        local: Path,
        key: str,
        *,
        files: dict[str, int] | None = None,
        leave_out: tuple[str, ...] = (),
        fixed: tuple[str, ...] = (),
        stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Upload `local` to `key`, replacing what was there; False when `stop` ended it early.

        `files` (relative name → size; default: every file but the `leave_out` top-level
        names) are sent (those the old manifest names beside their old copies, swapped in
        once all are sent), the new manifest replaces the old one in one step, and only then
        are the files it no longer names removed: wherever the upload stops (a dead
        machine), the store holds the previous complete upload. Files of the top-level
        directories in `fixed` never change once written (a checkpoint): those the store
        holds already are not sent again.
        """
        files = dict(_files_of(local, leave_out) if files is None else files)
        root = self._path(key)
        with self._reaching(f"upload {key}"):
            before = self.manifest(key)
            named = set(orjson.loads(before)["files"]) if before else set()
            unchanged = _unchanged(local, before, fixed)
            staged = {}  # files the old manifest names: swapped in once all are sent
            for name in list(files):
                if stop is not None and stop():
                    return False
                if name not in files or unchanged.get(name) == files[name]:
                    continue  # dropped with its checkpoint, or in the store already
                sent = self._put_member(local / name, f"{root}/{name}", staged=name in named)
                if sent is None:
                    _drop_group(files, name, fixed)  # removed here meanwhile (a pruned checkpoint)
                elif sent != f"{root}/{name}":
                    staged[sent] = f"{root}/{name}"
            for sent, target in staged.items():
                self.fs.mv(sent, target)
            manifest = orjson.dumps({"files": files, "token": secrets.token_hex(8)})
            self._replace(f"{root}/{MANIFEST}", manifest)
            self._remove_stale(root, set(files))
        (local / MANIFEST).write_bytes(manifest)  # this copy matches the store's
        return True

    def _put_member(self, source: Path, target: str, *, staged: bool) -> str | None:
        """Upload one file of a directory to `target`, or beside it when `staged` (a file the
        store's manifest names, which readers may be fetching); returns where it went, None
        when the file no longer exists here."""
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        sent = f"{target}.{secrets.token_hex(4)}.tmp" if staged else target
        try:
            self.fs.put_file(str(source), sent)
        except FileNotFoundError:
            if source.exists():
                raise
            return None
        return sent

    def _remove_stale(self, root: str, kept: set[str]) -> None:
        """Files the manifest no longer names: checkpoints the engine has since pruned, those
        of a succeeded job, files of an upload that stopped part-way."""
        parts = [name.split("/") for name in kept]
        folders = {"", *("/".join(p[:n]) for p in parts for n in range(1, len(p)))}
        found = self.fs.find(root, withdirs=True, detail=True)
        for path in sorted(found, reverse=True):  # a folder's files before the folder
            name = path[len(root) :].lstrip("/")
            if found[path]["type"] == "directory":
                if name not in folders:
                    self.fs.rm(path, recursive=True)  # emptied: a pruned checkpoint's
            elif name not in kept and name != MANIFEST:
                self.fs.rm(path)

    def _replace(self, path: str, data: bytes) -> None:
        staging = f"{path}.{secrets.token_hex(4)}.tmp"
        self.fs.pipe_file(staging, data)
        self.fs.mv(staging, path)

    def manifest(self, key: str) -> bytes | None:
        path = f"{self._path(key)}/{MANIFEST}"
        with self._reaching(f"read {key}"):
            return self.fs.cat_file(path) if self.fs.exists(path) else None

    def sync_dir(self, key: str, local: Path) -> None:
        """Bring `local` up to the store's `key`, when the store has it.

        A local directory with no manifest holds work not yet uploaded (its worker stopped
        before the job ended): it is kept as it is.
        """
        remote = self.manifest(key)
        if remote is None:
            return
        mine = local / MANIFEST
        if local.exists() and (not mine.exists() or mine.read_bytes() == remote):
            return
        staging = local.with_name(f".{local.name}.{os.getpid()}.fetch")
        shutil.rmtree(staging, ignore_errors=True)
        with self._reaching(f"fetch {key}"):
            for name in orjson.loads(remote)["files"]:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{self._path(key)}/{name}", str(staging / name))
        (staging / MANIFEST).write_bytes(remote)
        _swap_in(staging, local)

    def remove(self, key: str) -> None:
        with self._reaching(f"remove {key}"):
            if self.fs.exists(self._path(key)):
                self.fs.rm(self._path(key), recursive=True)


def _unchanged(local: Path, manifest: bytes | None, fixed: tuple[str, ...]) -> dict[str, int]:
    """Name → size of the files of `fixed` directories the store holds (per its `manifest`)
    that need not be sent again: none unless this copy shares that manifest."""
    mine = local / MANIFEST
    if manifest is None or not mine.exists() or mine.read_bytes() != manifest:
        return {}
    files = orjson.loads(manifest)["files"]
    return {name: size for name, size in files.items() if name.split("/", 1)[0] in fixed}


def _drop_group(files: dict[str, int], name: str, fixed: tuple[str, ...]) -> None:
    """Leave out `name`, and with it the whole directory it belongs to under a `fixed` one
    (a checkpoint is of use complete or not at all)."""
    parts = name.split("/")
    group = "/".join(parts[:2]) + "/" if parts[0] in fixed and len(parts) > 2 else name
    for other in [n for n in files if n == name or n.startswith(group)]:
        del files[other]


def _files_of(local: Path, leave_out: tuple[str, ...]) -> dict[str, int]:
    """Relative name → size of every file under `local`, but the manifest and `leave_out`."""
    files = {}
    for path in sorted(local.rglob("*")):
        name = path.relative_to(local).as_posix()
        if path.is_file() and name != MANIFEST and name.split("/", 1)[0] not in leave_out:
            files[name] = path.stat().st_size
    return files


def _swap_in(staging: Path, local: Path) -> None:
    """Put the fetched `staging` where `local` is; a process that fetched it first wins."""
    old = local.with_name(f".{local.name}.{os.getpid()}.old")
    if local.exists():
        os.replace(local, old)
    try:
        os.replace(staging, local)
    except OSError:  # another process put its copy there meanwhile: the same upload
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def shown(url: str) -> str:
    """`url` without any user or password in it, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)


def configured() -> Artifacts | None:
    """The artefact store `TUNELAB_ARTIFACTS` names, or None when it is unset."""
    url = get_settings().artifacts_url
    return Artifacts(url) if url else None
