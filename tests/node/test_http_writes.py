"""One socket write per HTTP response (``node.http_writes``), over hypercorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from node import http_writes

http_writes.install()

BODY = b'{"sealed_report": "' + b"ab" * 740 + b'"}'
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def json_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with BODY, a JSON document the size of a node's report."""
    while (await receive()).get("more_body"):
        pass
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": BODY})


@asynccontextmanager
async def served(app: App, writes: list[bytes]) -> AsyncIterator[int]:
    """hypercorn serving ``app`` on 127.0.0.1 (its port), each socket write put in ``writes``."""
    original = TCPServer.protocol_send

    async def recorded(self: TCPServer, event: Any) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)
        await original(self, event)

    async def with_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await app(scope, receive, send)

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TCPServer, "protocol_send", recorded)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, with_lifespan, config)  # type: ignore[arg-type]
            yield int(binds[0].rsplit(":", 1)[1])
            nursery.cancel_scope.cancel()


class Client:
    """An HTTP/1.1 keep-alive client over one connection, reading with h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: str = "POST", body: bytes = b"{}") -> list[Any]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        headers = [("host", "127.0.0.1"), ("content-length", str(len(body)))]
        data = self.conn.send(h11.Request(method=method, target="/v1/queries", headers=headers))
        data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return [event async for event in self.events()]

    async def events(self) -> AsyncIterator[Any]:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            yield event
            if isinstance(event, h11.EndOfMessage):
                return


async def test_a_response_with_a_body_leaves_in_one_write() -> None:
    writes: list[bytes] = []
    async with served(json_app, writes) as port:
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        with trio.fail_after(10):
            events = await client.request()
    response, data = events[0], b"".join(e.data for e in events if isinstance(e, h11.Data))
    assert response.status_code == 200 and data == BODY
    assert len(writes) == 1  # hypercorn's own method made three (head, body, empty end)
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(data)


async def test_keep_alive_requests_each_answer_whole_and_in_order() -> None:
    writes: list[bytes] = []
    async with served(json_app, writes) as port:
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        with trio.fail_after(10):
            for _ in range(3):
                events = await client.request()
                assert events[0].status_code == 200
                assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == BODY
    assert len(writes) == 3


async def test_a_response_without_a_body_leaves_at_its_end() -> None:
    async def no_content(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    writes: list[bytes] = []
    async with served(no_content, writes) as port:
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        with trio.fail_after(10):
            events = await client.request()
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

    writes: list[bytes] = []
    async with served(streaming, writes) as port:
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        head = h11.Request(method="GET", target="/", headers=[("host", "127.0.0.1")])
        await client.stream.send_all(client.conn.send(head) + client.conn.send(h11.EndOfMessage()))
        got = b""
        with trio.fail_after(10):
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
