"""The replica's write-ahead records (votes, prepared proofs, view) in their own append-only file.

What the replica signed must be durable before the message carrying the signature leaves, and it
lives only until its block is stored -- a few hundred milliseconds. In LevelDB (where these
records were kept before; ``BlockStore`` moves an older store's records here when it opens) that
churn cost twice over: each
prepared proof carries the whole proposed block, so every block was written to the memtable two
times on a backup and three on the primary, and every such copy was then flushed to a level-0
table and merged by a compaction before its deletion dropped it. Measured on a 4-node cluster at
500 mode-1 queries/s: ~680 bytes of lasting data per query, plus 320-640 bytes of these records;
the slowest seconds of a long run were the ones in which a node flushed or compacted.
CometBFT keeps its consensus WAL apart from its block store for the same reason.

File ``consensus.wal`` in the data directory (beside ``leveldb/``, under the same lock)::

    magic  b"CNWAL\\x00\\x01\\n"                      8 bytes, once
    record u32be length | u32be crc32(payload) | payload
    payload u32be count, then per change: u16be key length | key | u8 op (1 put, 0 delete)
            [| u32be value length | value   (puts only)]

A record is one atomic batch: replay applies all of it or none. Every record a vote depends on
is fsynced before :meth:`ConsensusLog.write` returns, so a crash can only leave a torn tail --
bytes written after the last completed fsync, which nothing sent relied on. Replay stops at the
first record that is cut short or fails its checksum and cuts the file there (logged with the
number of bytes dropped).

The live records are few (the slots in flight), so the file is rewritten -- the live records as
one record in a new file, fsynced, renamed over the old one, the directory fsynced -- once it
grows past ``rewrite_after_bytes`` and holds mostly dead records. A reader never sees a
half-rewritten file: the rename is atomic.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from node.storage.fileio import fsync_dir, write_all
from node.storage.kv import StorageError

log = logging.getLogger(__name__)

FILENAME = "consensus.wal"
MAGIC = b"CNWAL\x00\x01\n"
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 64 << 20
"""As large as the largest consensus record the replica writes (a proof holding a full block)."""
MAX_RECORD_BYTES = 256 << 20
REWRITE_AFTER_BYTES = 32 << 20
"""The file is rewritten with only its live records once it is this large (and at open)..."""
REWRITE_MIN_DEAD_RATIO = 4
"""... and at least this many times the size of the live records."""

_HEADER = struct.Struct(">II")
_COUNT = struct.Struct(">I")
_KEY_LEN = struct.Struct(">H")
_VALUE_LEN = struct.Struct(">I")


class ConsensusLog:
    """Key -> value records, kept in memory and appended to a file (None: memory only)."""

    def __init__(
        self,
        path: Path | None,
        *,
        sync: bool = True,
        rewrite_after_bytes: int = REWRITE_AFTER_BYTES,
    ) -> None:
        """Open (or create) the log at ``path`` and replay it; ``sync`` fsyncs each record."""
        self.path = path
        self.sync = sync
        self.rewrite_after_bytes = rewrite_after_bytes
        self._records: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._live_bytes = 0
        self._closed = False
        self.rewrites = 0
        """Times the file was rewritten with only its live records."""
        if path is not None:
            self._open(path)

    # --- reading ------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._records.get(key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` under ``prefix`` in key order, as of the call."""
        with self._lock:
            self._check_open()
            found = sorted((k, v) for k, v in self._records.items() if k.startswith(prefix))
        return iter(found)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def size_bytes(self) -> int:
        """Bytes in the file now (0 in memory)."""
        return self._size

    # --- writing ------------------------------------------------------------------------------

    def write(self, changes: Mapping[bytes, bytes | None], *, sync: bool | None = None) -> None:
        """Apply ``changes`` (None deletes) as one atomic record; durable before returning when
        ``sync`` (default: the log's). Raises ValueError for an oversized key or value (a caller
        bug) and StorageError when the file cannot be written."""
        if not changes:
            return
        payload = encode_payload(changes)
        with self._lock:
            self._check_open()
            if self._fd is not None:
                try:
                    write_all(self._fd, _HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
                    if self.sync if sync is None else sync:
                        os.fdatasync(self._fd)
                except OSError as exc:
                    raise StorageError(f"cannot write {self.path}: {exc.strerror}") from exc
                self._size += _HEADER.size + len(payload)
            self._apply(changes)
            if (
                self._fd is not None
                and self._size >= self.rewrite_after_bytes
                and self._size >= REWRITE_MIN_DEAD_RATIO * self._live_bytes
            ):
                self._rewrite()

    def delete(self, keys: Iterable[bytes]) -> None:
        """Drop ``keys`` now, appended without an fsync: deletions of records whose block is
        stored, which a crash may lose harmlessly (recovery ignores records below the stored
        height) -- the next synced record makes them durable anyway."""
        with self._lock:
            gone = dict.fromkeys(k for k in keys if k in self._records)
        self.write(gone, sync=False)

    def close(self) -> None:
        """Close the file; idempotent. Later writes raise StorageError."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._closed = True

    # --- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"consensus log {self.path or '(memory)'} is closed")

    def _apply(self, changes: Mapping[bytes, bytes | None]) -> None:
        for key, value in changes.items():
            old = self._records.pop(key, None)
            if old is not None:
                self._live_bytes -= len(key) + len(old)
            if value is not None:
                self._records[key] = value
                self._live_bytes += len(key) + len(value)

    def _open(self, path: Path) -> None:
        try:
            data = path.read_bytes() if path.exists() else b""
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        if data and not data.startswith(MAGIC):
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                data = b""  # created, then cut off before its magic was synced
            else:
                raise StorageError(f"{path} is not a creditnet consensus log (bad magic)")
        offset = len(MAGIC) if data else 0
        while offset < len(data):
            parsed = _read_record(data, offset)
            if parsed is None:
                log.warning(
                    "%s: record at offset %d is cut short or corrupt: dropping the last %d "
                    "bytes (written after the last completed sync, so nothing relied on them)",
                    path,
                    offset,
                    len(data) - offset,
                )
                break
            changes, offset = parsed
            self._apply(changes)
        self._rewrite_file(path)  # starts from exactly the replayed records, torn tail gone

    def _rewrite(self) -> None:
        assert self.path is not None and self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._rewrite_file(self.path)
        self.rewrites += 1

    def _rewrite_file(self, path: Path) -> None:
        """Replace the file with one holding the live records; leave it open for appending."""
        tmp = path.with_name(path.name + ".tmp")
        body = MAGIC
        if self._records:
            payload = encode_payload(self._records)
            body += _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise StorageError(f"cannot rewrite {path}: {exc.strerror}") from exc
        self._size = len(body)


def encode_payload(changes: Mapping[bytes, bytes | None]) -> bytes:
    """One record's payload (see the module doc); ValueError for an oversized key or value."""
    parts = [_COUNT.pack(len(changes))]
    for key, value in changes.items():
        if not key or len(key) > MAX_KEY_BYTES:
            raise ValueError(f"consensus record key of {len(key)} bytes (1..{MAX_KEY_BYTES})")
        parts.append(_KEY_LEN.pack(len(key)))
        parts.append(key)
        if value is None:
            parts.append(b"\x00")
        else:
            if len(value) > MAX_VALUE_BYTES:
                raise ValueError(f"consensus record value of {len(value)} bytes")
            parts.append(b"\x01")
            parts.append(_VALUE_LEN.pack(len(value)))
            parts.append(value)
    payload = b"".join(parts)
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"consensus log record of {len(payload)} bytes")
    return payload


def decode_payload(payload: bytes) -> dict[bytes, bytes | None]:
    """The changes of one record's payload; ValueError if it is not well formed."""
    view = memoryview(payload)
    if len(view) < _COUNT.size:
        raise ValueError("payload shorter than its count")
    (count,) = _COUNT.unpack_from(view, 0)
    pos = _COUNT.size
    out: dict[bytes, bytes | None] = {}
    for _ in range(count):
        if pos + _KEY_LEN.size > len(view):
            raise ValueError("key length past the end")
        (klen,) = _KEY_LEN.unpack_from(view, pos)
        pos += _KEY_LEN.size
        if not 0 < klen <= MAX_KEY_BYTES or pos + klen + 1 > len(view):
            raise ValueError("bad key length")
        key = bytes(view[pos : pos + klen])
        op = view[pos + klen]
        pos += klen + 1
        if op == 0:
            out[key] = None
        elif op == 1:
            if pos + _VALUE_LEN.size > len(view):
                raise ValueError("value length past the end")
            (vlen,) = _VALUE_LEN.unpack_from(view, pos)
            pos += _VALUE_LEN.size
            if vlen > MAX_VALUE_BYTES or pos + vlen > len(view):
                raise ValueError("bad value length")
            out[key] = bytes(view[pos : pos + vlen])
            pos += vlen
        else:
            raise ValueError(f"unknown op {op}")
    if pos != len(view):
        raise ValueError("bytes after the last change")
    return out


def _read_record(data: bytes, offset: int) -> tuple[dict[bytes, bytes | None], int] | None:
    """(changes, next offset) of the record at ``offset``, or None if it is torn or corrupt."""
    if offset + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    end = start + length
    if length < _COUNT.size or length > MAX_RECORD_BYTES or end > len(data):
        return None
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return decode_payload(payload), end
    except ValueError:
        return None
