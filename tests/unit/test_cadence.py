"""The busy primary's batch wait by load (``protocol.consensus.cadence``), alone and in the
replica: the light wait below ``light_load_tx_per_s`` transactions a second, the full one above,
and a second-old burst no longer counting."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

from protocol.codec import decode
from protocol.consensus.cadence import ArrivalRate, batch_wait_ms
from protocol.consensus.events import Broadcast, Output, SetTimer, Start, Submit, TimerFired
from protocol.consensus.events import TimerKind as T
from protocol.consensus.messages import PrePrepare
from protocol.consensus.replica import Replica
from tests.unit.test_replica import IDS, config


def wait(rate: ArrivalRate, now: int) -> int:
    return batch_wait_ms(rate, now, batch_wait=100, light_batch_wait=20, light_load_tx_per_s=10)


def test_the_rate_counts_the_last_second_only() -> None:
    rate = ArrivalRate()
    rate.add(0, 4)
    rate.add(0, 3)
    rate.add(500, 2)
    rate.add(700, 0)
    assert rate.per_second(999) == 9
    assert rate.per_second(1000) == 2  # the two at 0 ms are a second old
    assert rate.per_second(1500) == 0
    rate.add(1600, 1)
    assert rate.per_second(1600) == 1


def test_marks_older_than_a_second_are_dropped_as_new_ones_come() -> None:
    rate = ArrivalRate()  # a backup's: it adds, and never asks the rate
    for t in range(0, 100_000, 7):
        rate.add(t, 3)
    assert len(rate) <= 1000 // 7 + 1
    assert rate.count == 3 * len(rate)


def test_below_the_light_load_the_wait_is_the_light_one() -> None:
    rate = ArrivalRate()
    rate.add(0, 9)
    assert wait(rate, 10) == 20
    rate.add(10, 1)
    assert wait(rate, 10) == 100
    assert wait(rate, 999) == 100
    assert wait(rate, 1000) == 20  # the nine at 0 ms are a second old
    # 0 turns the light wait off; a light wait above the full one is the full one.
    assert batch_wait_ms(rate, 0, batch_wait=100, light_batch_wait=20, light_load_tx_per_s=0) == 100
    assert batch_wait_ms(rate, 2000, batch_wait=5, light_batch_wait=20, light_load_tx_per_s=10) == 5


def test_between_the_light_and_the_full_load_the_wait_rises_in_proportion() -> None:
    def at(per_s: int) -> int:
        rate = ArrivalRate()
        rate.add(0, per_s)
        return batch_wait_ms(
            rate, 0, batch_wait=100, light_batch_wait=20,
            light_load_tx_per_s=150, full_load_tx_per_s=400,
        )  # fmt: skip

    assert [at(n) for n in (0, 149, 150, 275, 399, 400, 5000)] == [20, 20, 20, 60, 99, 100, 100]
    waits = [at(n) for n in range(140, 420)]
    assert waits == sorted(waits)  # never shorter for more load
    assert max(b - a for a, b in pairwise(waits)) <= 1  # no step


def batch_timers(outputs: list[Output]) -> list[int]:
    return [o.at_ms for o in outputs if isinstance(o, SetTimer) and o.timer is T.BATCH]


def proposals(outputs: list[Output]) -> list[PrePrepare]:
    msgs = [decode(o.data, max_bytes=1 << 26) for o in outputs if isinstance(o, Broadcast)]
    return [m for m in msgs if isinstance(m, PrePrepare)]


def primary() -> Replica:
    cfg = replace(config(0), batch_wait_ms=100, light_load_tx_per_s=10, light_batch_wait_ms=20)
    r = Replica(cfg, IDS[0])
    r.handle(Start(0))
    return r


def test_a_primary_with_a_block_in_flight_waits_by_the_load() -> None:
    light = primary()
    assert batch_timers(light.handle(Submit(0, (b"a",)))) == [0]  # idle: at once
    assert len(proposals(light.handle(TimerFired(0, T.BATCH)))) == 1  # block 1 in flight
    assert batch_timers(light.handle(Submit(5, (b"b",)))) == [25]  # 2 a second: light

    heavy = primary()
    heavy.handle(Submit(0, tuple(b"tx%d" % i for i in range(20))))
    assert len(proposals(heavy.handle(TimerFired(0, T.BATCH)))) == 1
    assert batch_timers(heavy.handle(Submit(5, (b"x",)))) == [105]  # 21 a second: full wait
    assert len(proposals(heavy.handle(TimerFired(105, T.BATCH)))) == 1  # blocks 1, 2 in flight
    # A second later the burst no longer counts.
    assert batch_timers(heavy.handle(Submit(1200, (b"y",)))) == [1220]
