"""The key-value backend under the block store: LevelDB (plyvel) in a node, a dict in unit tests.

Both backends implement :class:`KVBackend` with the same semantics, so every test of the block
store can run against both. plyvel's exceptions stop here: they are translated into
:class:`StorageError` (``raise ... from exc``) so callers handle one error type.
"""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import plyvel

Puts = Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]

COMPRESSIONS = ("none", "snappy")
"""How LevelDB may compress its tables (``storage.compression``)."""
BLOOM_FILTER_BITS = 10
"""Bloom filters per table: tx-hash and block-hash lookups are random point reads."""
WRITE_BUFFER_BYTES = 8 << 20
"""Memtable size. LevelDB's 4 MiB default holds ~16 blocks of 1000 txs and stalls writes on
compaction every few blocks (300 ms commits seen in ``bench.storage``). 16 MiB was used before,
but a flushed 16-24 MiB table pushed into level 1 (LevelDB keeps that level at 10 MiB) overflowed
it at once, and the 6-9 compactions into level 2 that followed came as one burst of ~2.5 s of a
core's work: in 240 s runs at 500 mode-1 queries/s, the seconds after such a burst (or a stall
around it) held the worst queries of the run -- p99 509, 240, 1,302 and 252 ms in four runs, the
slowest at 1.9-2.5 s. With 8-12 MiB the same runs interleaved on the same host gave p99 236, 248
and 240 ms, the slowest 403-474 ms; the transaction closed loop (12 in flight) committed 3,286
tx/s with p99 634 ms (3,186-3,414 tx/s, 582-632 ms, with 16 MiB) and ``bench.storage`` the same
synced commits (p99 14.7 ms either way)."""
WRITE_BUFFER_JITTER = 4 << 20
"""Each process adds up to this much, at random, to its memtable. The nodes of a consortium write
the same ledger data, so with equal memtables they flush and compact in the same second -- on a
4-node cluster at 500 queries/s, three nodes at once every ~30 s, and the slowest queries of a
run came in those seconds (three of four are a quorum: consensus waits for them). Staggered, one
backup's flush leaves a quorum committing. (Not the disk itself: four processes writing this
load's synced batches alone never waited more than 15 ms through their flushes and compactions,
135 ms with both cores kept busy by other work; the likelier cause in a node is the flush's and
compaction's ~1 s of CPU arriving on a machine the nodes already keep ~90 % busy.) Staggered,
queries whose span overlaps a node's flush have the same p99 as the others (two 90 s runs at
280 queries/s: 416 vs 488 ms, 332 vs 336 ms)."""


class StorageError(Exception):
    """The store cannot do what was asked (closed, corrupt, incompatible, I/O failed); says why."""


class KVBackend(Protocol):
    """An ordered byte-key store with atomic batch writes."""

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""
        ...

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order, as of the call."""
        ...

    def write(self, puts: Puts, deletes: Iterable[bytes] = (), *, sync: bool) -> None:
        """Apply ``deletes`` then ``puts`` atomically; with ``sync``, durable before returning."""
        ...

    def close(self) -> None:
        """Release the store; idempotent. Any later call raises :class:`StorageError`."""
        ...


def _pairs(puts: Puts) -> Iterable[tuple[bytes, bytes]]:
    return puts.items() if isinstance(puts, Mapping) else puts


class LevelDBBackend:
    """:class:`KVBackend` over a LevelDB directory (created if missing)."""

    def __init__(self, path: Path, *, compression: str = "none") -> None:
        """Open (or create) LevelDB at ``path``; ``compression`` (one of COMPRESSIONS) applies
        to the tables written from now on -- a store written with another reads as before.

        Uncompressed by default: a node's data is mostly hashes, keys and signatures, and
        Snappy took ~2/3 of the CPU LevelDB spends writing, flushing and compacting it (tables
        of a node's real data at 500 mode-1 queries/s, rewritten and compacted in one process:
        1.7 s of CPU with Snappy, 0.6 s without) for 35 % less disk (39 vs 61 MB). That CPU
        comes in bursts, each flush and compaction, on machines the nodes keep busy; the seconds
        it took were the slowest of a long query run."""
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r} is not one of {COMPRESSIONS}")
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
        try:
            self._db = plyvel.DB(
                str(path),
                create_if_missing=True,
                bloom_filter_bits=BLOOM_FILTER_BITS,
                write_buffer_size=WRITE_BUFFER_BYTES + secrets.randbelow(WRITE_BUFFER_JITTER),
                compression=None if compression == "none" else compression,
            )
        except plyvel.Error as exc:
            raise StorageError(f"cannot open LevelDB at {path}: {_reason(exc)}") from exc
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        try:
            value: bytes | None = self._db.get(key)
        except plyvel.Error as exc:
            raise StorageError(f"LevelDB read failed at {self.path}: {_reason(exc)}") from exc
        return value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()  # here, not in the generator, so a closed store fails at the call
        return self._iterate(prefix)

    def _iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            with self._db.iterator(prefix=prefix) as it:
                yield from it
        except (plyvel.Error, RuntimeError) as exc:  # RuntimeError: closed while iterating
            raise StorageError(f"LevelDB iteration failed at {self.path}: {_reason(exc)}") from exc

    def write(self, puts: Puts, deletes: Iterable[bytes] = (), *, sync: bool) -> None:
        self._check_open()
        try:
            with self._db.write_batch(sync=sync) as batch:
                for key in deletes:
                    batch.delete(key)
                for key, value in _pairs(puts):
                    batch.put(key, value)
        except plyvel.Error as exc:
            raise StorageError(f"LevelDB write failed at {self.path}: {_reason(exc)}") from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"LevelDB at {self.path} is closed")


def _reason(exc: BaseException) -> str:
    """plyvel puts LevelDB's status text in the args as bytes; show it as text."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode(errors="replace")
    return str(exc)


class MemoryBackend:
    """:class:`KVBackend` in memory (sorted keys beside a dict), for unit tests."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []  # sorted
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._data.get(key)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        start = bisect.bisect_left(self._keys, prefix)
        snapshot: list[tuple[bytes, bytes]] = []
        for key in self._keys[start:]:
            if not key.startswith(prefix):
                break
            snapshot.append((key, self._data[key]))
        return iter(snapshot)

    def write(self, puts: Puts, deletes: Iterable[bytes] = (), *, sync: bool) -> None:
        self._check_open()
        pending: dict[bytes, bytes | None] = dict.fromkeys(deletes)
        pending.update(_pairs(puts))  # puts win over deletes, as in LevelDB's ordered batch
        for key, value in pending.items():  # check everything first: the write is atomic
            if not isinstance(key, bytes) or not isinstance(value, bytes | None):
                raise TypeError("keys and values are bytes")
        for key, value in pending.items():
            if value is None:
                if self._data.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = value

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("in-memory store is closed")
