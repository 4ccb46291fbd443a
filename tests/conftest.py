"""Suite-wide isolation: no test reads or writes the user's tunelab home or `.env`; and a
PostgreSQL server for the tests of the registry (and of workers) on PostgreSQL, started once
per session."""

from __future__ import annotations

import itertools

import pytest

import postgres_server

_databases = itertools.count()


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


@pytest.fixture(scope="session")
def postgres_server_url():
    reason = postgres_server.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server.server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server_url):
    """A new, empty database on the session's server."""
    return postgres_server.fresh_database(postgres_server_url, f"test_{next(_databases)}")
