"""The jobs and files routes keep the registry's blocking I/O off the event loop: while one
request waits on a slow registry, another request is answered.

The slow call is held until the other request has its answer. Were it run on the event loop,
the other request could not start: the held call would give up waiting (`released` False)
and answer first.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app
from tunelab.types import LOCAL_PROVIDER

HOLD_S = 60  # only reached when the loop is blocked; a passing run never waits it out


def held(method, entered: threading.Event, release: threading.Event, released: list[bool]):
    """`method`, its first call made to wait for `release`."""

    def slow(self, *args, **kwargs):
        if not entered.is_set():
            entered.set()
            released.append(release.wait(timeout=HOLD_S))
        return method(self, *args, **kwargs)

    return slow


async def answer_while_held(app, slow_path: str, other_path: str, entered, release, finished):
    """Start the slow request; once it is inside the registry, make the other one."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

        async def get(path: str) -> httpx.Response:
            response = await client.get(path)
            finished.append(path)
            return response

        slow = asyncio.create_task(get(slow_path))
        assert await asyncio.to_thread(entered.wait, HOLD_S)
        other = await get(other_path)
        release.set()
        return await slow, other


@pytest.mark.parametrize(
    ("slow_method", "slow_path", "other_path"),
    [
        ("list_jobs", "/v1/fine_tuning/jobs", "/v1/files"),
        ("list_files", "/v1/files", "/v1/fine_tuning/jobs/{job}"),
    ],
)
def test_a_slow_registry_call_does_not_stall_another_request(
    monkeypatch, slow_method, slow_path, other_path
):
    with Store() as store:
        job = store.create_job(provider=LOCAL_PROVIDER, model="base", status="queued")
    entered, release, released, finished = threading.Event(), threading.Event(), [], []
    method = getattr(Store, slow_method)
    monkeypatch.setattr(Store, slow_method, held(method, entered, release, released))
    app = create_app(ServerConfig(start_worker=False))
    other_path = other_path.format(job=job.id)

    slow, other = asyncio.run(
        answer_while_held(app, slow_path, other_path, entered, release, finished)
    )

    assert finished == [other_path, slow_path]
    assert released == [True]
    assert (slow.status_code, other.status_code) == (200, 200)
    answers = {slow_path: slow.json(), other_path: other.json()}
    jobs = answers.get("/v1/fine_tuning/jobs")
    assert jobs is None or [j["id"] for j in jobs["data"]] == [job.id]
