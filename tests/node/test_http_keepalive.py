"""One keep-alive timer per HTTP connection (``node.http_keepalive``), over hypercorn on 127.0.0.1.

hypercorn's rules are kept: an idle connection closes ``keep_alive_timeout`` after its last
answer, a request being answered is never cut by the timer, and a server shutting down closes
idle connections at once and busy ones once they are answered. The clock is trio's mock clock,
jumping ahead only when every task has waited 20 ms of real time (the sockets' loopback traffic
takes far less), so a 5 s timeout passes at once and deterministically; every test is bounded
by DEADLINE_S.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from node import http_keepalive

http_keepalive.install()

KEEP_ALIVE_S = 5.0
DEADLINE_S = 60.0
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """Virtual time that also runs at the real rate, so a test that spins fails at its deadline."""
    return trio.testing.MockClock(rate=1.0, autojump_threshold=0.02)


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def served(app: App, shutdown: trio.Event | None = None) -> AsyncIterator[int]:
    """hypercorn serving ``app`` on 127.0.0.1 until ``shutdown`` is set (or the block ends)."""

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
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.graceful_timeout = 60
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

    async def send_request(self) -> None:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        head = h11.Request(method="GET", target="/", headers=[("host", "127.0.0.1")])
        await self.stream.send_all(self.conn.send(head) + self.conn.send(h11.EndOfMessage()))

    async def read_answer(self) -> bytes:
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return body

    async def request(self) -> bytes:
        await self.send_request()
        return await self.read_answer()

    async def closed_by_server(self) -> bool:
        """Waits for the server to end the connection; False if it sent anything instead."""
        return await self.stream.receive_some(65536) == b""


async def connect(port: int) -> Client:
    return Client(await trio.open_tcp_stream("127.0.0.1", port))


async def test_an_idle_connection_closes_a_keep_alive_timeout_after_its_last_answer(
    mock_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with served(answer) as port:
            client = await connect(port)
            for _ in range(3):
                assert await client.request() == b"ok"
                await trio.sleep(KEEP_ALIVE_S / 2)  # each answer starts the timeout afresh
            answered = trio.current_time()
            assert await client.closed_by_server()
            assert KEEP_ALIVE_S / 2 <= trio.current_time() - answered <= KEEP_ALIVE_S / 2 + 0.5


async def test_a_request_answered_slowly_is_not_cut_by_the_timer(
    mock_clock: trio.testing.MockClock,
) -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await trio.sleep(3 * KEEP_ALIVE_S)
        await answer(scope, receive, send)

    with trio.fail_after(DEADLINE_S):
        async with served(slow) as port:
            client = await connect(port)
            assert await client.request() == b"ok"
            answered = trio.current_time()
            assert await client.closed_by_server()
            assert KEEP_ALIVE_S <= trio.current_time() - answered <= KEEP_ALIVE_S + 0.5


async def test_a_connection_has_one_timer_task_whatever_its_requests(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = []
    watch = http_keepalive.IdleTimer._watch

    async def counted(self: http_keepalive.IdleTimer) -> None:
        started.append(self)
        await watch(self)

    monkeypatch.setattr(http_keepalive.IdleTimer, "_watch", counted)
    with trio.fail_after(DEADLINE_S):
        async with served(answer) as port:
            client = await connect(port)
            for _ in range(5):
                assert await client.request() == b"ok"
            assert await client.closed_by_server()
    assert len(started) == 1  # the library started one task per answer


async def test_shutting_down_closes_idle_connections_at_once_and_busy_ones_once_answered(
    mock_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()
    shutdown = trio.Event()

    async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await answer(scope, receive, send)

    with trio.fail_after(DEADLINE_S):
        async with served(held, shutdown) as port:
            idle, busy = await connect(port), await connect(port)
            release.set()
            assert await idle.request() == b"ok"
            release = trio.Event()
            await busy.send_request()
            await trio.testing.wait_all_tasks_blocked(0.01)  # the busy one's request is in
            begun = trio.current_time()
            shutdown.set()
            assert await idle.closed_by_server()
            assert trio.current_time() - begun < 0.5  # not after its keep-alive timeout
            await trio.sleep(KEEP_ALIVE_S)  # still busy: the timer does not cut it
            release.set()
            assert await busy.read_answer() == b"ok"
            assert await busy.closed_by_server()


def test_install_is_idempotent_and_refuses_another_connection_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http_keepalive.install()
    init = TCPServer.__init__
    http_keepalive.install()
    assert TCPServer.__init__ is init

    async def other(self: Any) -> None:
        return None

    monkeypatch.setattr(TCPServer, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(TCPServer, "_idle_timeout", other)
    with pytest.raises(RuntimeError, match=r"hypercorn 0\.18\.0"):
        http_keepalive.install()
