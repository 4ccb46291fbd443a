"""Fixtures for hosted-provider tests: every HTTP request goes to a respx router.

openai-python 3.x sends through httpx2, which respx does not patch; the `api` fixture routes
httpx2's transport through the same router, so the providers' own clients (built from the
environment) are what the tests exercise, and no request can reach the network.
"""

from __future__ import annotations

import httpx
import pytest
import respx

try:
    import httpx2
except ImportError:  # openai 2.x sends through httpx, which respx patches by itself
    httpx2 = None


@pytest.fixture
def api(monkeypatch):
    """A respx router that every HTTP request of the test goes to."""
    with respx.mock(assert_all_called=False) as router:
        if httpx2 is not None:
            transport = httpx2.MockTransport(_through(router))
            monkeypatch.setattr(httpx2.Client, "_transport_for_url", lambda self, url: transport)
        yield router


def _through(router):
    def handle(request):
        sent = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.multi_items(),
            content=request.read(),
        )
        try:
            got = router.handler(sent)
        except httpx.TransportError as err:
            raise httpx2.ConnectError(str(err), request=request) from err
        return httpx2.Response(
            got.status_code, headers=got.headers.multi_items(), content=got.read()
        )

    return handle
