"""Artefacts on storage every machine reaches: `TUNELAB_ARTIFACTS`, a directory or an fsspec URL.

With it set, a local job's training files are copied there when the job is created
(`files/<checksum>.jsonl`); a worker on any machine fetches them into its own TUNELAB_HOME
before training; the job's directory (adapter or weights, metrics.jsonl, loss.svg,
tunelab_config.json, finetune.log, and its checkpoints while the job is unfinished) is uploaded to
`jobs/<job id>/` when the job ends, before its status says so; and whoever uses the `ft:`
model (chat, export, serve, training further) fetches that directory when this machine lacks
it. Unset, nothing leaves TUNELAB_HOME.

A directory upload ends with its manifest (`.tunelab-manifest.json`: the files and a token),
written last, so no reader fetches a half-uploaded directory; the fetched copy keeps the
manifest, so a directory is fetched again only when another machine uploaded a newer one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

import orjson

from tunelab.errors import TunelabError
from tunelab.settings import get_settings

MANIFEST = ".tunelab-manifest.json"


class Artifacts:
    """The shared artefact store at `url` (a path or any URL fsspec knows: file://, s3://, …)."""

    def __init__(self, url: str) -> None:
        import fsspec

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

    # -- directories: uploaded whole, manifest last ------------------------------------------

    def put_dir(self, local: Path, key: str, *, leave_out: tuple[str, ...] = ()) -> None:
        """Upload `local` to `key`, replacing what was there (`leave_out`: top-level names)."""
        files = _files_of(local, leave_out)
        root = self._path(key)
        with self._reaching(f"upload {key}"):
            if self.fs.exists(f"{root}/{MANIFEST}"):
                self.fs.rm(f"{root}/{MANIFEST}")  # readers wait for the new one
            for name in files:
                self.fs.makedirs(f"{root}/{name}".rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(local / name), f"{root}/{name}")
            self._remove_stale(root, set(files))
            manifest = orjson.dumps({"files": files, "token": secrets.token_hex(8)})
            self.fs.pipe_file(f"{root}/{MANIFEST}", manifest)
        (local / MANIFEST).write_bytes(manifest)  # this copy matches the store's

    def _remove_stale(self, root: str, kept: set[str]) -> None:
        """Files an earlier upload left (checkpoints the engine has since removed)."""
        for path in self.fs.find(root):
            name = path[len(root) :].lstrip("/")
            if name not in kept and name != MANIFEST:
                self.fs.rm(path)

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
