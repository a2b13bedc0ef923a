"""hypercorn serving a test's ASGI application on 127.0.0.1, and an HTTP/1.1 client for it: what
the tests of the node's corrections of hypercorn (``node.http_writes``, ``node.http_keepalive``,
``node.http_gate``) share."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@asynccontextmanager
async def served(
    app: App,
    *,
    keep_alive_s: float = 5.0,
    shutdown: trio.Event | None = None,
    config_extra: dict[str, Any] | None = None,
) -> AsyncIterator[int]:
    """hypercorn serving ``app`` on 127.0.0.1 (the port) until ``shutdown`` is set or the block
    ends; the application's lifespan is answered here. ``config_extra``: attributes set on the
    server's ``Config``."""

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
    config.keep_alive_timeout = keep_alive_s
    config.graceful_timeout = 60
    for name, value in (config_extra or {}).items():
        setattr(config, name, value)
    trigger = (trio.Event() if shutdown is None else shutdown).wait
    async with trio.open_nursery() as nursery:
        run = functools.partial(serve, with_lifespan, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
        binds = await nursery.start(run)
        yield int(binds[0].rsplit(":", 1)[1])
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
