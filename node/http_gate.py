"""Hold the API's input while the node's event loop lags, so that a surge of HTTP requests waits
in the kernel's socket buffers instead of crowding consensus out of the loop it shares.

The replica, the peer network and the HTTP server run as tasks of one trio loop, which runs every
ready task once per turn. Each step of a consensus round (a frame read, the driver, a write) waits
for a turn; so does each step of every HTTP request, and a request cost the node ~1-2 ms of CPU
in its HTTP server (hypercorn then) whether it was answered or refused. Offered more requests
than it can serve, the loop's turns grew long, a block took seconds, and views changed one after
another (a 4-node cluster offered 700 queries/s answered 120-220 of them a second). Refusing the
excess (503) does not help: refusing costs about as much as parsing.

:class:`LoopLag` measures the loop's lag -- how late a task that sleeps for a short period wakes
-- and closes the gate when it exceeds ``hold_above_s``; it opens again once the lag is below
``release_below_s``. While the gate is closed, the bytes a connection reads are not parsed, and it
reads no more: requests already parsed are served, new ones wait (the rest in the socket, where
TCP flow control pushes back on the client) and are handled, in turn, once the loop has caught
up. The node's HTTP server (:mod:`node.http_server`) waits for the gate before parsing.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from node.tasks import TaskStatus


class LoopLag:
    """The event loop's lag, and the gate it opens and closes (see module doc)."""

    def __init__(
        self,
        *,
        hold_above_s: float,
        release_below_s: float,
        period_s: float = 0.02,
        on_hold: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < release_below_s <= hold_above_s:
            raise ValueError("release_below_s must be positive and at most hold_above_s")
        self._on_hold = on_hold
        self.hold_above_s = hold_above_s
        self.release_below_s = release_below_s
        self.period_s = period_s
        self.lag_s = 0.0
        self.holds = 0
        """Times the gate closed."""
        self._opened = trio.Event()
        self._opened.set()

    @property
    def open(self) -> bool:
        return self._opened.is_set()

    def observe(self, lag_s: float) -> None:
        """Take one measurement of the lag: close the gate above ``hold_above_s``, open it below
        ``release_below_s``, leave it as it is in between."""
        self.lag_s = lag_s
        if self.open and lag_s > self.hold_above_s:
            self._opened = trio.Event()
            self.holds += 1
            if self._on_hold is not None:
                self._on_hold()
        elif not self.open and lag_s < self.release_below_s:
            self._opened.set()

    async def wait_open(self) -> None:
        """Return at once while the gate is open; otherwise once it opens."""
        if not self._opened.is_set():
            await self._opened.wait()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure the lag every ``period_s`` until cancelled."""
        task_status.started()
        while True:
            asked = trio.current_time() + self.period_s
            await trio.sleep_until(asked)
            self.observe(max(0.0, trio.current_time() - asked))
