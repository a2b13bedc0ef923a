"""The API's input gate: the loop-lag hysteresis, and a connection of the node's HTTP server that
reads no new request while the gate is closed but finishes the ones it has read
(``node.http_gate``, over real 127.0.0.1 connections)."""

from __future__ import annotations

from typing import Any

import h11
import pytest
import trio
import trio.testing

from node.http_gate import LoopLag
from tests.node.http_serving import Client, served


def test_the_gate_closes_above_its_hold_lag_and_opens_only_below_its_release_lag() -> None:
    holds: list[float] = []
    gate = LoopLag(hold_above_s=0.15, release_below_s=0.05, on_hold=lambda: holds.append(1))
    gate.observe(0.1)
    assert gate.open
    gate.observe(0.2)
    assert not gate.open and gate.holds == 1 and len(holds) == 1
    gate.observe(0.1)  # between the two: stays closed
    assert not gate.open
    gate.observe(0.04)
    assert gate.open and gate.lag_s == 0.04
    gate.observe(0.3)
    assert not gate.open and gate.holds == 2


def test_the_release_lag_must_be_positive_and_at_most_the_hold_lag() -> None:
    with pytest.raises(ValueError, match="release_below_s"):
        LoopLag(hold_above_s=0.1, release_below_s=0.2)
    with pytest.raises(ValueError, match="release_below_s"):
        LoopLag(hold_above_s=0.1, release_below_s=0)


def test_the_lag_task_measures_how_late_the_loop_wakes_it() -> None:
    clock = trio.testing.MockClock()  # time moves only when the test moves it
    held: list[float] = []
    gate = LoopLag(hold_above_s=0.05, release_below_s=0.01, period_s=0.01)
    gate._on_hold = lambda: held.append(gate.lag_s)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            for _ in range(3):  # on time: no lag
                clock.jump(0.01)
                await trio.testing.wait_all_tasks_blocked()
            assert gate.open and gate.lag_s == 0 and held == []
            clock.jump(0.21)  # the loop was stuck: the lag task wakes 0.2 s late
            await trio.testing.wait_all_tasks_blocked()
            assert not gate.open and held == [pytest.approx(0.2)]
            clock.jump(0.01)  # on time again: open
            await trio.testing.wait_all_tasks_blocked()
            assert gate.open and gate.holds == 1
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


async def test_a_closed_gate_holds_new_requests_unread_and_lets_read_ones_finish() -> None:
    gate = LoopLag(hold_above_s=0.15, release_below_s=0.05)
    seen: list[bytes] = []
    release = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive()).get("body", b"")
        seen.append(body)
        if body == b"slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok:" + body})

    async with served(app, gate=gate) as port:
        client = await Client.connect(port)
        await client.send_request(body=b"slow")  # read, then held by the app
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [b"slow"]
        gate.observe(1.0)  # the loop lags: close
        release.set()
        with trio.fail_after(5):
            events = [e async for e in client.events()]
        assert isinstance(events[0], h11.Response) and events[0].status_code == 200
        await client.send_request(body=b"next")  # arrives while the gate is closed
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [b"slow"]  # not read
        gate.observe(0.0)  # caught up: open
        with trio.fail_after(5):
            events = [e async for e in client.events()]
        assert seen == [b"slow", b"next"]
        assert any(isinstance(e, h11.Data) and e.data == b"ok:next" for e in events)
        await client.stream.aclose()


async def test_a_server_without_a_gate_is_never_held() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with served(app) as port:
        client = await Client.connect(port)
        with trio.fail_after(5):
            events = await client.request()
        assert isinstance(events[0], h11.Response) and events[0].status_code == 200
        await client.stream.aclose()
