"""Safe file output: atomic writes, no silent overwrites, inputs never touched."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tunelab.errors import TunelabError


def check_output_path(path: Path, *, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse to overwrite an existing output without `force`, or any input at all."""
    path = Path(path)
    resolved = path.resolve()
    for source in map(Path, inputs):
        if source.exists() and resolved == source.resolve():
            raise TunelabError(
                "output_is_input",
                f"output {path} is the input file; tunelab never modifies its input.",
                hint="choose a different output path",
            )
    refuse_overwrite(path, force=force)
    if path.is_dir():
        raise TunelabError("output_is_directory", f"{path} is a directory, not a file path.")
    check_writable(path)


def refuse_overwrite(
    path: Path, *, force: bool, hint: str = "pass --force to overwrite it, or choose another path"
) -> None:
    """Refuse an output that already exists unless `force` says to replace it."""
    if path.exists() and not force:
        raise TunelabError("output_exists", f"{path} already exists.", hint=hint)


def existing_ancestor(path: Path) -> Path:
    """`path` itself if it exists, else its nearest existing parent (what creating it needs)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def can_create(path: Path) -> bool:
    """Whether `path` (a file or directory, existing or not) can be written.

    `os.access` answers for the real situation: a read-only mount or an immutable
    directory stop root too, where a permission bit would not.
    """
    path = Path(path)
    if path.exists() and not os.access(path, os.W_OK):
        return False
    where = existing_ancestor(path.parent)
    return os.access(where, os.W_OK | os.X_OK)


def check_writable(path: Path, what: str = "output") -> None:
    """Refuse, before any work is done, an output that cannot be written."""
    if not can_create(path):
        blocked = path if path.exists() else existing_ancestor(Path(path).parent)
        raise TunelabError(
            "not_writable",
            f"cannot write the {what} {path}: {blocked} is read-only or not writable.",
            hint="choose a path in a writable directory",
        )


@contextlib.contextmanager
def staged_write(path: Path, mode: str = "w") -> Iterator[tuple[IO, Path]]:
    """Write to a temporary file beside `path`; the caller renames it with `commit`.

    Yields the open file and the temporary path. On error the temporary file is removed and
    `path` is untouched. Used directly when several outputs must appear together.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the output, not the temporary file beside it
        raise TunelabError(
            "not_writable",
            f"cannot write {path}: {err.strerror}.",
            hint="choose a path in a writable directory",
        ) from None
    tmp = Path(tmp_name)
    # mkstemp creates 0600; outputs are meant to be shared like any file the user writes.
    os.fchmod(fd, _default_mode())
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle, tmp
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def commit(tmp: Path, path: Path) -> None:
    """Move a staged file into place atomically."""
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never half."""
    with staged_write(path) as (handle, tmp):
        handle.write(text)
    commit(tmp, path)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
