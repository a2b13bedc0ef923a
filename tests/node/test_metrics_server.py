"""The node's /metrics responder (``node.metrics.serve_metrics``) over real 127.0.0.1
connections: the exposition, a 404 elsewhere, and its bound on connections held at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from node import metrics as node_metrics
from node.metrics import NodeMetrics, serve_metrics

DEADLINE_S = 30.0


@asynccontextmanager
async def metrics_served() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, NodeMetrics(), "127.0.0.1", 0)
        yield port
        nursery.cancel_scope.cancel()


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out = b""
    with trio.fail_after(DEADLINE_S):
        try:
            await stream.send_all(request)
            while chunk := await stream.receive_some(65536):
                out += chunk
        except trio.BrokenResourceError:
            pass  # reset: closed unanswered
    await stream.aclose()
    return out


async def test_metrics_are_exposed_and_other_paths_are_404() -> None:
    async with metrics_served() as port:
        page = await exchange(port, b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n")
        other = await exchange(port, b"GET /other HTTP/1.1\r\nhost: t\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\ncreditnet_api_connections " in page
    assert other.startswith(b"HTTP/1.1 404 Not Found\r\n")


async def test_past_its_connection_bound_a_scrape_is_closed_unanswered_until_one_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_metrics, "METRICS_MAX_CONNECTIONS", 1)
    async with metrics_served() as port:
        idle = await trio.open_tcp_stream("127.0.0.1", port)  # sends nothing: held open
        await trio.testing.wait_all_tasks_blocked()
        assert await exchange(port, b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n") == b""
        await idle.aclose()
        await trio.testing.wait_all_tasks_blocked()
        page = await exchange(port, b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200 OK\r\n")
