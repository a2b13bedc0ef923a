"""One socket write per HTTP response (``node.http_writes``), over hypercorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h11
import pytest
import trio
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer

from node import http_writes
from tests.node.hypercorn_serving import Client, served

http_writes.install()

BODY = b'{"sealed_report": "' + b"ab" * 740 + b'"}'


async def json_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with BODY, a JSON document the size of a node's report."""
    while (await receive()).get("more_body"):
        pass
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": BODY})


@contextmanager
def recorded_writes() -> Iterator[list[bytes]]:
    """Every socket write hypercorn makes while the block runs."""
    writes: list[bytes] = []
    original = TCPServer.protocol_send

    async def recorded(self: TCPServer, event: Any) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)
        await original(self, event)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TCPServer, "protocol_send", recorded)
        yield writes


async def test_a_response_with_a_body_leaves_in_one_write() -> None:
    with recorded_writes() as writes, trio.fail_after(10):
        async with served(json_app) as port:
            events = await (await Client.connect(port)).request()
    response, data = events[0], b"".join(e.data for e in events if isinstance(e, h11.Data))
    assert response.status_code == 200 and data == BODY
    assert len(writes) == 1  # hypercorn's own method made three (head, body, empty end)
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(data)


async def test_keep_alive_requests_each_answer_whole_and_in_order() -> None:
    with recorded_writes() as writes, trio.fail_after(10):
        async with served(json_app) as port:
            client = await Client.connect(port)
            for _ in range(3):
                await client.send_request()
                assert await client.read_body() == BODY
    assert len(writes) == 3


async def test_a_response_without_a_body_leaves_at_its_end() -> None:
    async def no_content(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with recorded_writes() as writes, trio.fail_after(10):
        async with served(no_content) as port:
            events = await (await Client.connect(port)).request()
    assert events[0].status_code == 204
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 204 ")


async def test_a_streamed_body_is_not_held_back() -> None:
    """The head waits only for the first body bytes: a chunk the application streams reaches
    the client before the application sends the next one."""
    first_seen = trio.Event()

    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await first_seen.wait()  # the client must already have it
        await send({"type": "http.response.body", "body": b"second"})

    got = b""
    with recorded_writes() as writes, trio.fail_after(10):
        async with served(streaming) as port:
            client = await Client.connect(port)
            await client.send_request()
            async for event in client.events():
                if isinstance(event, h11.Data):
                    got += event.data
                    first_seen.set()
    assert got == b"firstsecond"
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b"first\r\n")


def test_install_is_idempotent_and_refuses_another_method(monkeypatch: pytest.MonkeyPatch) -> None:
    http_writes.install()
    assert H11Protocol._send_h11_event is http_writes._send_h11_event

    async def other(self: Any, event: Any) -> None:
        return None

    monkeypatch.setattr(H11Protocol, "_send_h11_event", other)
    with pytest.raises(RuntimeError, match=r"hypercorn 0\.18\.0"):
        http_writes.install()
