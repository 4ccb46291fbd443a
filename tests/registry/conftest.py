"""A PostgreSQL server for the registry's PostgreSQL tests, started once per session."""

from __future__ import annotations

import itertools

import pytest

import postgres_server

_numbers = itertools.count()


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
    return postgres_server.fresh_database(postgres_server_url, f"test_{next(_numbers)}")
