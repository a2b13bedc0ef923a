"""The node's HTTP server (``node.http_server``) serving a test's ASGI application on 127.0.0.1,
and an HTTP/1.1 client for it: what the tests of the server and of its input gate share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import trio

from node import http_server
from node.http_gate import LoopLag

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@asynccontextmanager
async def served(
    app: App,
    *,
    keep_alive_s: float = 5.0,
    max_head_bytes: int = 64 * 1024,
    gate: LoopLag | None = None,
    connections: http_server.Connections | None = None,
) -> AsyncIterator[int]:
    """The server serving ``app`` on 127.0.0.1 (the port) until the block ends."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(
                http_server.serve,
                app,
                "127.0.0.1",
                0,
                keep_alive_s=keep_alive_s,
                max_head_bytes=max_head_bytes,
                gate=gate,
                connections=connections,
            )
        )
        yield port
        nursery.cancel_scope.cancel()


class Client:
    """An HTTP/1.1 keep-alive client over one connection, reading with h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send_request(self, method: str = "POST", body: bytes = b"{}") -> None:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        headers = [("host", "127.0.0.1"), ("content-length", str(len(body)))]
        data = self.conn.send(h11.Request(method=method, target="/v1/queries", headers=headers))
        data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def events(self) -> AsyncIterator[Any]:
        """The answer's h11 events, up to its end."""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            yield event
            if isinstance(event, h11.EndOfMessage):
                return

    async def request(self, method: str = "POST", body: bytes = b"{}") -> list[Any]:
        """Send a request and read its answer's events."""
        await self.send_request(method, body)
        return [event async for event in self.events()]

    async def read_body(self) -> bytes:
        return b"".join([e.data async for e in self.events() if isinstance(e, h11.Data)])

    async def closed_by_server(self) -> bool:
        """Waits for the server to end the connection; False if it sent anything instead."""
        return await self.stream.receive_some(65536) == b""
