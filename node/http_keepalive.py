"""One keep-alive timer per HTTP connection, not a task started and cancelled for every request.

hypercorn 0.18.0 closes a connection left idle for ``keep_alive_timeout``, or idle when the
server shuts down, with an "idle task": each time a connection turns idle (an answer sent) it
starts a task that waits out the timeout, and each request cancels it. So every request of a
kept-alive connection cost a task started (with its start-up handshake), a task cancelled, and
two lock acquisitions -- about a quarter of the instructions of a request and its answer on
both ends (callgrind, ``python -m bench.instructions --only http_round_trip``).

:class:`IdleTimer` keeps hypercorn's rules with one task per connection: a request sets its
deadline to infinity, an answer sets it ``keep_alive_timeout`` ahead, and no task is woken for
either. The task closes the connection when the deadline passes while it is idle, or when the
server shuts down while it is idle (at once, or as soon as the request in progress is answered).
:func:`install` gives every connection served from now on such a timer in place of the library's
task; it refuses a hypercorn whose connection code no longer reads as the code it replaces.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from typing import Any

import trio
from hypercorn.trio.tcp_server import TCPServer

_IDLE_TIMEOUT_SOURCE_SHA256 = "210ce1014d98e1cba3c0e2218c53a1c1a1c361cd86457168cbb9391ebb139d1d"
"""SHA-256 of the source of hypercorn 0.18.0's ``TCPServer._idle_timeout``, whose rules the timer
keeps."""
_USES = (
    (TCPServer.__init__, "self.idle_task = TrioSingleTask()"),
    (TCPServer.run, "await self.idle_task.restart(self._task_group, self._idle_timeout)"),
    (TCPServer.protocol_send, "await self.idle_task.restart(self._task_group, self._idle_timeout)"),
    (TCPServer.protocol_send, "await self.idle_task.stop()"),
)
"""How the library's connection uses its idle task: exactly the calls the timer answers."""


class IdleTimer:
    """A connection's keep-alive timer, answering what hypercorn's ``TCPServer`` asks of its idle
    task: ``restart`` when the connection turns idle, ``stop`` when a request comes in."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._scope: trio.CancelScope | None = None
        self._idle = False
        self._close_when_idle = False

    async def restart(self, task_group: Any, action: Any) -> None:
        """The connection is idle: close it ``keep_alive_timeout`` from now (``action`` is the
        library's own timeout, whose rules the timer keeps)."""
        self._idle = True
        deadline = trio.current_time() + self._server.config.keep_alive_timeout
        if self._scope is None:  # the connection's first: its one task
            self._scope = trio.CancelScope(deadline=deadline)
            task_group._nursery.start_soon(self._watch)
        elif self._close_when_idle:
            self._scope.cancel()
        else:
            self._scope.deadline = deadline

    async def stop(self) -> None:
        """A request came in: no timeout while it is answered."""
        self._idle = False
        if self._scope is not None and not self._close_when_idle:
            self._scope.deadline = math.inf

    async def _watch(self) -> None:
        terminated = self._server.context.terminated
        while True:
            assert self._scope is not None
            with self._scope:
                await terminated.wait()
            if self._idle:
                break  # idle past the deadline, or the server shuts down
            if terminated.is_set():  # shutting down mid-request: close once it is answered
                self._close_when_idle = True
                self._scope = trio.CancelScope()
                with self._scope:
                    await trio.sleep_forever()
                break
            # The deadline passed as a request came in: keep watching, without one until idle.
            self._scope = trio.CancelScope()
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()


def install() -> None:
    """Give every HTTP connection served from now on an :class:`IdleTimer` (idempotent)."""
    original = TCPServer.__init__
    if getattr(original, "_creditnet_idle_timer", False):
        return
    digest = hashlib.sha256(inspect.getsource(TCPServer._idle_timeout).encode()).hexdigest()
    missing = [line for fn, line in _USES if line not in inspect.getsource(fn)]
    if digest != _IDLE_TIMEOUT_SOURCE_SHA256 or missing:
        raise RuntimeError(
            "hypercorn's TCPServer no longer handles its idle task as node.http_keepalive "
            f"expects (timeout source sha256 {digest[:16]}…, missing {missing}): it was written "
            "for hypercorn 0.18.0"
        )

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.idle_task = IdleTimer(self)

    init._creditnet_idle_timer = True  # type: ignore[attr-defined]
    TCPServer.__init__ = init  # type: ignore[method-assign]
