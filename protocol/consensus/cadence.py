"""How long a busy primary waits to fill a batch: by the load it sees.

A block costs every node the same fixed work whatever it holds (its consensus messages, their
signatures, a synced write; ~4 ms of CPU a node here), so under load the primary gathers
transactions for ``batch_wait_ms`` while a block of its own is in flight: fewer, fuller blocks.
At light load that wait is most of a lender's latency, and the extra blocks a shorter one makes
are few (at most one per transaction). So below ``light_load_tx_per_s`` transactions arriving a
second, the wait is ``light_batch_wait_ms`` instead, rising in proportion to the rate to the full
``batch_wait_ms`` at ``full_load_tx_per_s``. (A primary with no block in flight proposes
at once either way.) Only transactions are counted: a node busy answering queries it has not yet
submitted still takes the light wait -- its entries arrive a moment later and count then.

Pure: the rate is counted on the replica's clock, from the transactions its ``Submit`` events
queue.
"""

from __future__ import annotations

from collections import deque

WINDOW_MS = 1000
"""The arrival rate is the count of the last second."""


class ArrivalRate:
    """Transactions queued in the last WINDOW_MS."""

    __slots__ = ("_marks", "count")

    def __init__(self) -> None:
        self._marks: deque[list[int]] = deque()
        """[time_ms, transactions] per millisecond that queued any, oldest first."""
        self.count = 0

    def add(self, now_ms: int, n: int) -> None:
        """Count ``n`` transactions queued at ``now_ms`` (and forget those a second old: a
        replica that never asks the rate -- a backup -- keeps at most a second of marks)."""
        if n <= 0:
            return
        if self._marks and self._marks[-1][0] == now_ms:
            self._marks[-1][1] += n
        else:
            self._marks.append([now_ms, n])
        self.count += n
        self._forget(now_ms)

    def per_second(self, now_ms: int) -> int:
        """Transactions queued in the WINDOW_MS up to ``now_ms``."""
        self._forget(now_ms)
        return self.count

    def __len__(self) -> int:
        """Marks kept (at most one per millisecond of the last second)."""
        return len(self._marks)

    def _forget(self, now_ms: int) -> None:
        marks = self._marks
        while marks and marks[0][0] <= now_ms - WINDOW_MS:
            self.count -= marks.popleft()[1]


def batch_wait_ms(
    rate: ArrivalRate,
    now_ms: int,
    *,
    batch_wait: int,
    light_batch_wait: int,
    light_load_tx_per_s: int,
    full_load_tx_per_s: int = 0,
) -> int:
    """The busy primary's wait: ``light_batch_wait`` below ``light_load_tx_per_s`` transactions
    a second (0: never), ``batch_wait`` from ``full_load_tx_per_s`` on (0, or not above the
    light load: from ``light_load_tx_per_s``), and in between in proportion to the rate -- no
    step at which the latency doubles for one more transaction a second."""
    light = min(light_batch_wait, batch_wait)
    if not light_load_tx_per_s:
        return batch_wait
    per_s = rate.per_second(now_ms)
    if per_s < light_load_tx_per_s:
        return light
    span = full_load_tx_per_s - light_load_tx_per_s
    if span <= 0 or per_s >= full_load_tx_per_s:
        return batch_wait
    return light + (batch_wait - light) * (per_s - light_load_tx_per_s) // span
