"""One keep-alive timer per HTTP connection (``node.http_keepalive``), over hypercorn on 127.0.0.1.

hypercorn's rules are kept: an idle connection closes ``keep_alive_timeout`` after its last
answer, a request being answered is never cut by the timer, and a server shutting down closes
idle connections at once and busy ones once they are answered. The clock is trio's mock clock,
jumping ahead only when every task has waited 20 ms of real time (the sockets' loopback traffic
takes far less), so a 5 s timeout passes at once and deterministically; every test is bounded
by DEADLINE_S.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.trio.tcp_server import TCPServer

from node import http_keepalive
from tests.node.hypercorn_serving import Client, served

http_keepalive.install()

KEEP_ALIVE_S = 5.0
DEADLINE_S = 60.0


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """Virtual time that also runs at the real rate, so a test that spins fails at its deadline."""
    return trio.testing.MockClock(rate=1.0, autojump_threshold=0.02)


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def ask(client: Client) -> bytes:
    """One request on the connection; the answer's body."""
    await client.send_request()
    return await client.read_body()


async def test_an_idle_connection_closes_a_keep_alive_timeout_after_its_last_answer(
    mock_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with served(answer, keep_alive_s=KEEP_ALIVE_S) as port:
            client = await Client.connect(port)
            for _ in range(3):
                assert await ask(client) == b"ok"
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
        async with served(slow, keep_alive_s=KEEP_ALIVE_S) as port:
            client = await Client.connect(port)
            assert await ask(client) == b"ok"
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
        async with served(answer, keep_alive_s=KEEP_ALIVE_S) as port:
            client = await Client.connect(port)
            for _ in range(5):
                assert await ask(client) == b"ok"
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
        async with served(held, keep_alive_s=KEEP_ALIVE_S, shutdown=shutdown) as port:
            idle, busy = await Client.connect(port), await Client.connect(port)
            release.set()
            assert await ask(idle) == b"ok"
            release = trio.Event()
            await busy.send_request()
            await trio.testing.wait_all_tasks_blocked(0.01)  # the busy one's request is in
            begun = trio.current_time()
            shutdown.set()
            assert await idle.closed_by_server()
            assert trio.current_time() - begun < 0.5  # not after its keep-alive timeout
            await trio.sleep(KEEP_ALIVE_S)  # still busy: the timer does not cut it
            release.set()
            assert await busy.read_body() == b"ok"
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
