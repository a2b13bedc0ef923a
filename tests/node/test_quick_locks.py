"""Quick locks (``node.quick_locks``): no scheduler turn when free, trio's behaviour otherwise."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.rw_lock import ReadWriteLock

from node import quick_locks
from node.quick_locks import QuickLock, QuickSemaphore

quick_locks.install()


async def test_a_free_lock_or_token_is_taken_without_a_checkpoint() -> None:
    lock, sem = QuickLock(), QuickSemaphore(1)
    with trio.testing.assert_no_checkpoints():
        await lock.acquire()
        await sem.acquire()
        lock.release()
        sem.release()
        async with lock, sem:
            pass
    with trio.testing.assert_checkpoints():  # trio's own lock: a turn even when free
        await trio.Lock().acquire()


async def test_a_held_lock_queues_waiters_in_order_and_a_newcomer_waits_behind_them() -> None:
    lock = QuickLock()
    order: list[str] = []

    async def take(name: str) -> None:
        async with lock:
            order.append(name)
            await trio.lowlevel.checkpoint()  # a turn for the others while holding it

    await lock.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "second")
        await trio.testing.wait_all_tasks_blocked()
        assert lock.statistics().tasks_waiting == 2
        lock.release()  # handed to "first" at once: free-looking, but not for a newcomer
        with pytest.raises(trio.WouldBlock):
            lock.acquire_nowait()
        nursery.start_soon(take, "third")
    assert order == ["first", "second", "third"]


async def test_releasing_a_lock_not_held_is_refused_as_trio_refuses_it() -> None:
    lock = QuickLock()
    with pytest.raises(RuntimeError):
        lock.release()
    await lock.acquire()
    assert lock.locked()

    async def release_elsewhere() -> None:
        with pytest.raises(RuntimeError):
            lock.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_elsewhere)
    lock.release()


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    lock = QuickLock()
    cancelled = []

    async def wait_for_it(scope: trio.CancelScope) -> None:
        with scope:
            await lock.acquire()
        cancelled.append(scope.cancelled_caught)

    await lock.acquire()
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_it, scope)
        await trio.testing.wait_all_tasks_blocked()
        assert lock.statistics().tasks_waiting == 1
        scope.cancel()
    assert cancelled == [True] and lock.statistics().tasks_waiting == 0
    lock.release()
    await lock.acquire()  # free again, and nobody else holds it
    lock.release()


async def test_the_semaphore_counts_and_waits_like_trios() -> None:
    sem = QuickSemaphore(1)
    await sem.acquire()
    assert sem.value == 0 and sem.max_value is None
    got = []

    async def take() -> None:
        async with sem:
            got.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        assert not got and sem.statistics().tasks_waiting == 1
        sem.release()
    assert got == [True] and sem.value == 1


async def test_libp2p_objects_are_built_with_quick_locks() -> None:
    rw = ReadWriteLock()
    assert isinstance(rw._readers_lock, QuickLock)
    assert isinstance(rw._writer_lock, QuickSemaphore)
    a, b = trio.socket.socketpair()
    stream = TrioTCPStream(trio.SocketStream(a))
    assert isinstance(stream.read_lock, QuickLock) and isinstance(stream.write_lock, QuickLock)
    await stream.close()
    b.close()


def test_install_is_idempotent_and_refuses_a_constructor_it_does_not_know() -> None:
    quick_locks.install()
    init = ReadWriteLock.__init__
    quick_locks.install()
    assert ReadWriteLock.__init__ is init

    class Other:
        def __init__(self) -> None:
            self.lock = object()

    with pytest.raises(RuntimeError, match="no longer does"):
        quick_locks._quicken(Other, ("lock",), ())
