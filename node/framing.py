"""Length-prefixed frames on a byte stream: ``u32be(length) || body``.

:class:`FrameBuffer` is pure (feed bytes, take frames) so it is tested without sockets; a length
above the limit is an error the caller turns into a reset stream, before any of the body is read.
"""

from __future__ import annotations

LENGTH_BYTES = 4


class FrameTooLarge(ValueError):
    """A peer announced a frame above the limit."""


def frame(body: bytes) -> bytes:
    """``body`` with its length prefix."""
    return len(body).to_bytes(LENGTH_BYTES, "big") + body


class FrameBuffer:
    """Accumulates stream bytes and yields complete frame bodies in order."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the bodies completed by it. Raises FrameTooLarge."""
        self._buf += data
        out: list[bytes] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= LENGTH_BYTES:
            n = int.from_bytes(buf[pos : pos + LENGTH_BYTES], "big")
            if n > self.max_frame_bytes:
                raise FrameTooLarge(f"frame of {n} bytes exceeds {self.max_frame_bytes}")
            if len(buf) - pos - LENGTH_BYTES < n:
                break
            start = pos + LENGTH_BYTES
            out.append(bytes(buf[start : start + n]))
            pos = start + n
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
