"""One process per data directory: an exclusive ``flock`` on a lock file that names its holder.

Two nodes writing one LevelDB would corrupt each other's view of the ledger (and LevelDB's own
LOCK only says "already held"). This lock is taken before LevelDB is opened and says which
process holds the directory. ``flock`` locks belong to an open file, so the kernel drops the lock
when its holder dies, even by SIGKILL: a stale lock file never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from node.storage.kv import StorageError

LOCK_FILENAME = "creditnet.lock"


class DataDirLocked(StorageError):
    """Another process (or another open in this process) holds the data directory."""


class DataDirLock:
    """Holds the data directory ``path`` (created if missing) from construction until release."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lock_file = path / LOCK_FILENAME
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create lock file {lock_file}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(f"data directory {path} is in use by process {holder}") from exc
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {lock_file}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Give the directory up; idempotent. The lock file stays (removing it would race)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    """The PID the holder wrote, or "unknown" if it has not written it yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
