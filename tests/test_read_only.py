"""Read-only places: TUNELAB_HOME on a read-only mount, outputs into a read-only folder.

Tests run as root, where a permission bit stops no write: the fixture makes a place
read-only for real (a read-only bind mount; else the immutable attribute; else, for a
normal user, the permission bits) and skips only where none of these is possible.
Reading commands must work read-only; writing ones must say in one line which place
cannot be written and what to do, exit non-zero, and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tiny import save_tiny_model, write_chat_jsonl
from tunelab.cli import main
from tunelab.registry import Store


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only(directory: Path):
    """`directory`'s content at a path where nothing can be written, even by root."""
    view = directory.with_name(directory.name + "-ro")
    view.mkdir()
    if _run("mount", "--bind", str(directory), str(view)):
        try:
            if _run("mount", "-o", "remount,ro,bind", str(view)):
                yield view
                return
        finally:  # lazily if a file is still open there: a mount must never outlive the test
            _run("umount", str(view)) or _run("umount", "-l", str(view))
    view.rmdir()
    if _run("chattr", "-R", "+i", str(directory)):
        try:
            yield directory
        finally:
            _run("chattr", "-R", "-i", str(directory))
        return
    if os.geteuid() != 0:
        for path in (directory, *directory.rglob("*")):
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            yield directory
        finally:
            for path in (directory, *directory.rglob("*")):
                path.chmod(path.stat().st_mode | 0o200)
        return
    pytest.skip("no way to make a directory read-only here (no mount, no chattr, root)")


def digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def home_with_a_lost_job(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    with Store() as store:
        job = store.create_job(
            provider="local",
            model="m",
            status="running",
            worker_pid=None,
            worker_host="gone",
            heartbeat_at=0,
        )
    return home, job.id


def test_reading_commands_work_on_a_read_only_home(
    home_with_a_lost_job, tmp_path, capsys, monkeypatch
):
    home, job_id = home_with_a_lost_job
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    before = digest(home)
    with read_only(home) as view:
        monkeypatch.setenv("TUNELAB_HOME", str(view))
        for argv in (
            ["jobs", "list", "--json"],
            ["jobs", "show", job_id],
            ["models", "list"],
            ["eval", "list"],
            ["validate", str(data)],
            ["analyze", str(data), "--model", "gpt-4o-mini", "--json"],
        ):
            code, out, err = cli(capsys, *argv)
            assert code == 0, (argv, err)
        code, out, err = cli(capsys, "jobs", "show", job_id, "--json")
        assert '"running"' in out  # the lost-worker recovery did not (could not) write
    assert digest(home) == before


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["jobs", "cancel", "JOB"], "registry_read_only"),
        (["jobs", "create", "--train", "DATA", "--no-start"], "home_read_only"),
    ],
)
def test_writing_commands_on_a_read_only_home_say_where_and_what_to_do(
    home_with_a_lost_job, tmp_path, capsys, monkeypatch, argv, code
):
    home, job_id = home_with_a_lost_job
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    argv = [job_id if a == "JOB" else str(data) if a == "DATA" else a for a in argv]
    before = digest(home)
    with read_only(home) as view:
        monkeypatch.setenv("TUNELAB_HOME", str(view))
        exit_code, _, err = cli(capsys, *argv)
    assert exit_code == 1 and f"[{code}]" in err and "hint:" in err
    assert str(view) in err and "TUNELAB_HOME" in err
    assert digest(home) == before


def test_a_registry_that_is_not_a_database_is_one_clear_error(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry.db").write_bytes(b"this is not SQLite\n" * 100)
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    code, _, err = cli(capsys, "jobs", "list")
    assert code == 1 and "[registry_corrupt]" in err and "registry.db" in err
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    assert cli(capsys, "validate", str(data))[0] == 0  # commands without the registry work


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model and a one-step training output made from it."""
    root = tmp_path_factory.mktemp("trained")
    model = save_tiny_model(root / "tiny")
    data = write_chat_jsonl(root / "train.jsonl")
    code = main(
        [
            "train",
            "--model",
            str(model),
            "--train",
            str(data),
            "--output",
            str(root / "run"),
            "--max-steps",
            "1",
            "--json",
        ]
    )
    assert code == 0
    return model, root / "run"


def test_outputs_into_a_read_only_folder_are_refused_up_front(tmp_path, capsys, trained):
    model, run = trained
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    folder = tmp_path / "out"
    folder.mkdir()
    commands = {
        "format": ["format", str(data), "--train-output", "OUT/train.jsonl"],
        "analyze": ["analyze", str(data), "--model", "gpt-4o-mini", "--html", "OUT/r.html"],
        "train": [
            "train",
            "--model",
            str(model),
            "--train",
            str(data),
            "--output",
            "OUT/run",
            "--max-steps",
            "1",
        ],
        "export": ["export", str(run), "--output", "OUT/exported"],
    }
    data_before = data.read_bytes()
    with read_only(folder) as view:
        for name, argv in commands.items():
            argv = [a.replace("OUT", str(view)) for a in argv]
            code, _, err = cli(capsys, *argv)
            assert code == 1 and "[not_writable]" in err, (name, err)
            assert str(view) in err and err.count("error [") == 1, err
    assert list(folder.iterdir()) == [] and data.read_bytes() == data_before


def test_the_bundled_model_converts_to_scratch_when_the_home_is_read_only(tmp_path, monkeypatch):
    from tunelab import catalog

    home = tmp_path / "home"
    home.mkdir()
    with read_only(home) as view:
        monkeypatch.setenv("TUNELAB_HOME", str(view))
        place = catalog._conversion_dir(catalog._CACHE_MARKER)
    assert not place.is_relative_to(view) and place.name == catalog.DEFAULT_MODEL
    shutil.rmtree(home, ignore_errors=True)
