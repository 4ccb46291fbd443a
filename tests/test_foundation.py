"""Errors, settings and atomic output: the guarantees every command relies on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunelab import settings
from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text, check_output_path, commit, staged_write


def test_error_renders_location_and_hint():
    err = TunelabError("bad_line", "not JSON", hint="fix it", path="data.jsonl", line=7)
    assert str(err) == "data.jsonl:7: not JSON (hint: fix it)"
    assert err.to_dict()["code"] == "bad_line"


def test_home_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "h"))
    assert settings.get_settings().home == tmp_path / "h"


def test_dotenv_is_loaded_without_overriding_environment(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("TUNELAB_TEST_A=from-file\nTUNELAB_TEST_B=from-file\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_TEST_B", "from-env")
    monkeypatch.delenv("TUNELAB_TEST_A", raising=False)
    monkeypatch.setattr(settings, "_dotenv_loaded", False)
    settings.load_env()
    assert os.environ["TUNELAB_TEST_A"] == "from-file"
    assert os.environ["TUNELAB_TEST_B"] == "from-env"
    monkeypatch.delenv("TUNELAB_TEST_A")


def test_missing_secret_names_the_variable_not_a_value(monkeypatch):
    monkeypatch.setattr(settings, "_dotenv_loaded", True)
    with pytest.raises(TunelabError) as info:
        settings.get_secret("TOGETHER_API_KEY", "create a Together job")
    assert info.value.code == "missing_api_key"
    assert "TOGETHER_API_KEY" in info.value.message


def test_existing_output_is_refused_without_force(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me")
    with pytest.raises(TunelabError) as info:
        check_output_path(out, force=False)
    assert info.value.code == "output_exists"
    check_output_path(out, force=True)
    assert out.read_text() == "keep me"


def test_output_may_not_be_the_input(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("x")
    with pytest.raises(TunelabError) as info:
        check_output_path(src, force=True, inputs=(src,))
    assert info.value.code == "output_is_input"


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    out = tmp_path / "report.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), staged_write(out) as (handle, _tmp):
        handle.write("half")
        raise RuntimeError("disk full")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


def test_atomic_write_replaces_content(tmp_path):
    out = tmp_path / "a" / "b.txt"
    atomic_write_text(out, "new")
    assert out.read_text() == "new"
    with staged_write(out) as (handle, tmp):
        handle.write("newer")
    assert out.read_text() == "new"  # not visible until committed
    commit(tmp, out)
    assert Path(out).read_text() == "newer"


def test_cli_version_and_unknown_command(capsys):
    assert main(["--version"]) == 0
    assert "tunelab" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_written_files_get_normal_permissions(tmp_path):
    out = tmp_path / "shared.html"
    atomic_write_text(out, "<html></html>")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
