"""Suite-wide isolation: no test reads or writes the user's tunelab home or `.env`."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Point TUNELAB_HOME at a per-test temporary directory and hide real API keys."""
    home = tmp_path_factory.mktemp("tunelab-home")
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    secrets = ("OPENAI_API_KEY", "TOGETHER_API_KEY", "ANTHROPIC_API_KEY", "TUNELAB_API_KEY")
    for name in (*secrets, "TUNELAB_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def smollm2_home(isolated_home, tmp_path_factory, monkeypatch):
    """One TUNELAB_HOME for every SmolLM2 test of the session: the conversion happens once."""
    home = tmp_path_factory.getbasetemp() / "smollm2-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    return home
