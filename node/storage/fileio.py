"""Low-level writes shared by the node's append-only files (the consensus log, the block files)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def write_parts(fd: int, parts: Sequence[bytes]) -> None:
    """Write ``parts`` in order, whole, with as few system calls as the kernel allows (no copy
    of the parts into one buffer)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` whole (``os.write`` may write less than asked)."""
    write_parts(fd, (data,))


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
