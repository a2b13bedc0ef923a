"""Locks on py-libp2p's per-message path that do not yield to the scheduler when they are free.

A trio ``Lock`` or ``Semaphore`` is a checkpoint: even when nobody holds it, ``acquire`` gives
every other runnable task a turn before it returns. py-libp2p 0.8.1 takes about ten of them for
each message it carries -- the stream's state lock, Yamux's write lock, window lock and stream
table lock, the TCP stream's read and write locks -- so a consensus message made some ten trips
through trio's scheduler on top of its real work. Counted by callgrind
(``python -m bench.instructions --only p2p_round_trip``), these trips were about a third of the
instructions of a message sent and answered over a Noise/Yamux stream.

:class:`QuickLock` and :class:`QuickSemaphore` take a free lock at once, without a turn, and
otherwise wait exactly as trio's do (same queue, same fairness: a free lock with tasks queued for
it is not taken past them; same errors for releasing a lock one does not hold). Cancellation is
still seen: every path that takes these locks goes on to a socket call or an event wait, which
are checkpoints.

:func:`install` has the libp2p classes that own these locks build quick ones instead, for every
connection and stream made after it. It replaces constructors of a pinned library version
(``libp2p==0.8.1``): it refuses a class whose constructor does not create the lock it expects, and
replaces only a plain trio lock that nothing holds yet.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import trio
from libp2p.io import trio as _libp2p_trio
from libp2p.network.stream import net_stream as _net_stream
from libp2p.stream_muxer import rw_lock as _rw_lock
from libp2p.stream_muxer.yamux import yamux as _yamux


class _Quick:
    """What the quick lock and semaphore share: take at once when free, else trio's wait."""

    __slots__ = ("_inner",)
    _inner: trio.Lock | trio.Semaphore

    async def acquire(self) -> None:
        try:
            self._inner.acquire_nowait()  # refuses a free one that others queue for
        except trio.WouldBlock:
            await self._inner.acquire()

    def acquire_nowait(self) -> None:
        self._inner.acquire_nowait()

    def release(self) -> None:
        self._inner.release()

    def statistics(self) -> Any:
        return self._inner.statistics()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class QuickLock(_Quick):
    """A trio lock whose ``acquire`` returns at once, without a checkpoint, when it is free."""

    __slots__ = ()
    _inner: trio.Lock

    def __init__(self) -> None:
        self._inner = trio.Lock()

    def locked(self) -> bool:
        return self._inner.locked()


class QuickSemaphore(_Quick):
    """A trio semaphore whose ``acquire`` returns at once, without a checkpoint, when a token
    is free."""

    __slots__ = ()
    _inner: trio.Semaphore

    def __init__(self, initial_value: int, *, max_value: int | None = None) -> None:
        self._inner = trio.Semaphore(initial_value, max_value=max_value)

    @property
    def value(self) -> int:
        return self._inner.value

    @property
    def max_value(self) -> int | None:
        return self._inner.max_value


_LOCKS: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (_net_stream.NetStream, ("_state_lock",)),
    (_yamux.YamuxStream, ("window_lock",)),
    (_yamux.Yamux, ("streams_lock", "_write_lock")),
    (_libp2p_trio.TrioTCPStream, ("read_lock", "write_lock")),
    (_rw_lock.ReadWriteLock, ("_readers_lock",)),
)
_SEMAPHORES: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (_rw_lock.ReadWriteLock, ("_writer_lock",)),
)
"""The Yamux stream's write lock is a ReadWriteLock: a lock for its readers' count and a
semaphore of one for its writer."""


def _quicken(cls: Any, locks: tuple[str, ...], semaphores: tuple[str, ...]) -> None:
    original = cls.__init__
    if getattr(original, "_creditnet_quick", False):
        return
    source = inspect.getsource(original)
    expected = [f"self.{name} = trio.Lock()" for name in locks]
    expected += [f"self.{name} = trio.Semaphore(1)" for name in semaphores]
    missing = [line for line in expected if line not in source]
    if missing:
        raise RuntimeError(
            f"libp2p's {cls.__name__} no longer does {missing}: node.quick_locks was written "
            "for libp2p 0.8.1"
        )

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name in locks:
            lock = getattr(self, name, None)
            if type(lock) is trio.Lock and not lock.locked():
                setattr(self, name, QuickLock())
        for name in semaphores:
            sem = getattr(self, name, None)
            if type(sem) is trio.Semaphore and sem.value == 1 and sem.max_value is None:
                setattr(self, name, QuickSemaphore(1))

    init._creditnet_quick = True  # type: ignore[attr-defined]
    cls.__init__ = init


def install() -> None:
    """Give every libp2p connection and stream made from now on quick locks (idempotent)."""
    semaphores = dict(_SEMAPHORES)
    for cls, names in _LOCKS:
        _quicken(cls, names, semaphores.get(cls, ()))
