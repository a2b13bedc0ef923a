"""Buffered reads of a libp2p TCP connection: one system call per burst, not two per message.

py-libp2p 0.8.1 reads a Noise message as two exact reads on the raw connection -- its 2-byte
length, then its body -- and ``TrioTCPStream.read(n)`` asks the socket for at most ``n`` bytes.
So every message costs two ``recv`` calls, each with a trio lock and checkpoints (a trip through
the scheduler), even when a whole burst of messages is already in the kernel's buffer. On a
4-node cluster that was ~21 ``recv`` and ~42 ``epoll_wait`` per block per node.

:func:`install` makes the read ask the socket for up to ``READ_CHUNK`` bytes and serve later
reads from what is left, without touching the socket or the scheduler. Order is kept: a read
that must wait for the socket holds the stream's read lock and looks at the buffer again once it
has it; bytes are never read ahead of a reader that is already waiting. The semantics are the
library's (at most ``n`` bytes, ``b""`` at end of stream, the same errors). It replaces one
method of a pinned library version (``libp2p==0.8.1``): :func:`install` refuses a class that
lacks what it relies on, and tests check byte order and end of stream over real sockets.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.io import trio as _libp2p_trio
from libp2p.io.exceptions import ConnectionClosedError

READ_CHUNK = 1 << 16
"""Most bytes asked of the socket at once (trio's default receive size)."""


def _take(self: Any, n: int | None) -> bytes:
    """Up to ``n`` buffered bytes (all of them for None); the caller checked there are some."""
    buf: bytes = self._cn_buf
    pos: int = self._cn_pos
    end = len(buf) if n is None else min(len(buf), pos + n)
    out = buf[pos:end]  # (the whole of a bytes object slices to itself: no copy)
    if end == len(buf):
        self._cn_buf, self._cn_pos = b"", 0
    else:
        self._cn_pos = end
    return out


async def _read(self: Any, n: int | None = None) -> bytes:
    """``TrioTCPStream.read`` served from a per-connection buffer filled READ_CHUNK at a time."""
    if n == 0:
        return b""
    if self._cn_buf and not self.read_lock.locked():
        return _take(self, n)
    async with self.read_lock:
        if self._cn_buf:  # filled while we waited for the lock
            return _take(self, n)
        try:
            data: bytes = await self.stream.receive_some(READ_CHUNK)
        except trio.BrokenResourceError as error:
            raise ConnectionClosedError(
                f"TCP connection reset by remote peer: {error}", transport="tcp"
            ) from error
        except trio.ClosedResourceError:
            return b""  # closed here: end of stream, as the library reports it
        if n is None or len(data) <= n:
            return data
        self._cn_buf, self._cn_pos = data, n
        return data[:n]


def install() -> None:
    """Make every libp2p TCP connection of this process read through the buffer (idempotent)."""
    cls: Any = _libp2p_trio.TrioTCPStream
    if cls.read is _read:
        return
    if not all(hasattr(cls, name) for name in ("read", "write", "close")):
        raise RuntimeError(
            "libp2p's TrioTCPStream lacks read/write/close: node.tcp_buffer was written for "
            "libp2p 0.8.1"
        )
    cls._cn_buf, cls._cn_pos = b"", 0  # per connection once it has read ahead
    cls.read = _read
