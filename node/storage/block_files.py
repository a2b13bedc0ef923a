"""Committed blocks and their certificates in append-only files, outside LevelDB.

A block is written once and read rarely (a peer catching up, ``GET /v1/blocks``), yet in LevelDB
it was copied again by every compaction that passed over it: the bytes of the blocks were about
half of all LevelDB wrote (a block of 72 mode-1 query entries is 21 KB; the state changes and
indexes they make, 24 KB), and the seconds in which a node flushed or compacted were the slowest
of a long run. Hyperledger Fabric keeps its blocks in append-only block files with an index in
LevelDB, and CometBFT its block store apart from the state, for the same reason.

Directory ``blocks/`` in the data directory, files ``000000.blk``, ``000001.blk``, ...::

    magic   b"CNBLK\\x00\\x01\\n"                          8 bytes, at the start of each file
    record  u32be length | u32be crc32(payload) | payload
    payload u64be height | u32be block length | block bytes | certificate bytes

A file takes records until it holds ``max_file_bytes``; the next record starts a new file. Where a
record is -- (file, offset, length), :func:`encode_location` -- is kept in LevelDB in the same
atomic batch as the block's state changes, after the record itself is fsynced: a location in
LevelDB always points at durable bytes. A crash between the two leaves a record (or a torn part
of one) after the last indexed record, which nothing points at: :meth:`BlockFiles.cut_after`
removes it when the store opens.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import zlib
from pathlib import Path

from node.storage.fileio import fsync_dir, write_all, write_parts
from node.storage.kv import StorageError

DIRNAME = "blocks"
MAGIC = b"CNBLK\x00\x01\n"
MAX_FILE_BYTES = 256 << 20
"""A block file is closed for appends at this size (one record may take it past)."""
_HEADER = struct.Struct(">II")
_PAYLOAD_HEAD = struct.Struct(">QI")
_LOCATION = struct.Struct(">IQI")
_NAME = re.compile(r"^(\d{6})\.blk$")


def encode_location(file_no: int, offset: int, length: int) -> bytes:
    """Where a record is: file number, offset of its header, length with its header."""
    return _LOCATION.pack(file_no, offset, length)


def decode_location(raw: bytes) -> tuple[int, int, int]:
    if len(raw) != _LOCATION.size:
        raise ValueError(f"a block location is {_LOCATION.size} bytes, not {len(raw)}")
    file_no, offset, length = _LOCATION.unpack(raw)
    return file_no, offset, length


class BlockFiles:
    """Append-only block files in ``path`` (None: in memory, for unit tests)."""

    def __init__(
        self, path: Path | None, *, sync: bool = True, max_file_bytes: int = MAX_FILE_BYTES
    ) -> None:
        """Open (or create) the directory; appends go to its highest-numbered file."""
        self.path = path
        self.sync = sync
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        """Held by appends (through their fsync) and by the cut at open."""
        self._read_lock = threading.Lock()
        """Held briefly by reads, for the file descriptors they share."""
        self._memory: dict[int, bytearray] = {}
        self._readers: dict[int, int] = {}
        self._fd: int | None = None
        self._closed = False
        self._file_no = 0
        self._size = 0
        self._earlier_bytes = 0
        """Bytes in the files before the one appended to."""
        if path is None:
            self._memory[0] = bytearray(MAGIC)
            self._size = len(MAGIC)
            return
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            numbers = sorted(int(m[1]) for n in os.listdir(path) if (m := _NAME.match(n)))
        except OSError as exc:
            raise StorageError(f"cannot open block files in {path}: {exc.strerror}") from exc
        self._file_no = numbers[-1] if numbers else 0
        self._open_for_append(self._file_no)
        self._earlier_bytes = sum(self._file_size(n) for n in numbers[:-1])

    @property
    def size_bytes(self) -> int:
        """Bytes in all the block files (in memory too)."""
        return self._earlier_bytes + self._size

    # --- writing ------------------------------------------------------------------------------

    def append(
        self, height: int, block: bytes, certificate: bytes, *, sync: bool | None = None
    ) -> bytes:
        """Append block ``height`` and its certificate, durable before returning when ``sync``
        (default: the files'); its location (:func:`encode_location`) for the index."""
        head = _PAYLOAD_HEAD.pack(height, len(block))
        crc = zlib.crc32(certificate, zlib.crc32(block, zlib.crc32(head)))
        parts = [_HEADER.pack(len(head) + len(block) + len(certificate), crc), head, block]
        parts.append(certificate)  # written as they are: a block is not copied to be framed
        length = sum(len(p) for p in parts)
        with self._lock:
            self._check_open()
            if self._size > len(MAGIC) and self._size + length > self.max_file_bytes:
                self._roll()
            offset = self._size
            if self._fd is None:
                self._memory[self._file_no] += b"".join(parts)
            else:
                try:
                    write_parts(self._fd, parts)
                    if self.sync if sync is None else sync:
                        os.fdatasync(self._fd)
                except OSError as exc:
                    raise StorageError(
                        f"cannot write {self._file_path(self._file_no)}: {exc.strerror}"
                    ) from exc
            self._size += length
            return encode_location(self._file_no, offset, length)

    def cut_after(self, location: bytes | None) -> int:
        """Drop every byte after the record at ``location`` (None: after the first file's magic,
        the store holding no block here) -- what a crash left behind the last indexed block.
        Returns the bytes dropped."""
        if location is None:
            file_no, end = 0, len(MAGIC)
        else:
            file_no, offset, length = decode_location(location)
            end = offset + length
        with self._lock:
            self._check_open()
            dropped = 0
            for later in [n for n in self._known_files() if n > file_no]:
                dropped += self._file_size(later)
                self._remove(later)
            size = self._file_size(file_no)
            if size < end:
                raise StorageError(
                    f"{self._file_path(file_no)} is {size} bytes, shorter than its indexed "
                    f"blocks ({end}): block files lost data"
                )
            dropped += size - end
            if dropped:
                self._truncate(file_no, end)
            self._file_no, self._size = file_no, end
            self._earlier_bytes = sum(self._file_size(n) for n in self._known_files()[:-1])
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._open_for_append(file_no)
            return dropped

    # --- reading ------------------------------------------------------------------------------

    def read(self, location: bytes, height: int) -> tuple[bytes, bytes]:
        """(block, certificate) of block ``height`` at ``location``; StorageError if the bytes
        there are not that block's record (a corrupt file or index). Safe beside an append in
        another thread: it reads only indexed records, whose bytes no append touches."""
        file_no, offset, length = decode_location(location)
        if self.path is None:
            with self._lock:
                self._check_open()
                data = bytes(self._memory.get(file_no, b"")[offset : offset + length])
        else:
            with self._read_lock:
                self._check_open()
                fd = self._reader(file_no)
            try:
                data = os.pread(fd, length, offset)
            except OSError as exc:
                raise StorageError(
                    f"cannot read {self._file_path(file_no)}: {exc.strerror}"
                ) from exc
        where = f"block {height} in {self._file_path(file_no)} at offset {offset}"
        if len(data) != length or length < _HEADER.size + _PAYLOAD_HEAD.size:
            raise StorageError(f"{where}: record cut short")
        size, crc = _HEADER.unpack_from(data, 0)
        payload = memoryview(data)[_HEADER.size :]
        if size != len(payload) or zlib.crc32(payload) != crc:
            raise StorageError(f"{where}: checksum mismatch")
        stored_height, block_len = _PAYLOAD_HEAD.unpack_from(payload, 0)
        if stored_height != height or _PAYLOAD_HEAD.size + block_len > len(payload):
            raise StorageError(f"{where}: holds block {stored_height}, not {height}")
        start = _PAYLOAD_HEAD.size
        return bytes(payload[start : start + block_len]), bytes(payload[start + block_len :])

    def close(self) -> None:
        """Close every file; idempotent. Later calls raise StorageError."""
        with self._lock, self._read_lock:
            for fd in [self._fd, *self._readers.values()]:
                if fd is not None:
                    os.close(fd)
            self._fd = None
            self._readers.clear()
            self._closed = True

    # --- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"block files {self.path or '(memory)'} are closed")

    def _file_path(self, file_no: int) -> str:
        return "(memory)" if self.path is None else str(self.path / f"{file_no:06d}.blk")

    def _known_files(self) -> list[int]:
        if self.path is None:
            return sorted(self._memory)
        return sorted(int(m[1]) for n in os.listdir(self.path) if (m := _NAME.match(n)))

    def _file_size(self, file_no: int) -> int:
        if self.path is None:
            return len(self._memory.get(file_no, b""))
        try:
            return os.path.getsize(self._file_path(file_no))
        except FileNotFoundError:
            return 0

    def _remove(self, file_no: int) -> None:
        if self.path is None:
            self._memory.pop(file_no, None)
            return
        with self._read_lock:
            reader = self._readers.pop(file_no, None)
        if reader is not None:
            os.close(reader)
        try:
            os.remove(self._file_path(file_no))
        except OSError as exc:
            raise StorageError(f"cannot remove {self._file_path(file_no)}: {exc.strerror}") from exc

    def _truncate(self, file_no: int, size: int) -> None:
        if self.path is None:
            del self._memory[file_no][size:]
            return
        try:
            os.truncate(self._file_path(file_no), size)
        except OSError as exc:
            raise StorageError(f"cannot cut {self._file_path(file_no)}: {exc.strerror}") from exc

    def _roll(self) -> None:
        """Start the next file (its magic synced before any record is appended to it)."""
        self._earlier_bytes += self._size
        self._file_no += 1
        if self._fd is None:
            self._memory[self._file_no] = bytearray(MAGIC)
            self._size = len(MAGIC)
            return
        os.close(self._fd)
        self._fd = None
        self._open_for_append(self._file_no)

    def _open_for_append(self, file_no: int) -> None:
        assert self.path is not None
        name = self._file_path(file_no)
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            size = os.fstat(fd).st_size
            if size < len(MAGIC):
                head = os.pread(fd, size, 0)
                if not MAGIC.startswith(head):
                    os.close(fd)
                    raise StorageError(f"{name} is not a creditnet block file (bad magic)")
                os.ftruncate(fd, 0)  # created, then cut off before its magic was synced
                write_all(fd, MAGIC)
                os.fsync(fd)
                fsync_dir(self.path)
                size = len(MAGIC)
            elif os.pread(fd, len(MAGIC), 0) != MAGIC:
                os.close(fd)
                raise StorageError(f"{name} is not a creditnet block file (bad magic)")
        except OSError as exc:
            raise StorageError(f"cannot open {name}: {exc.strerror}") from exc
        self._fd, self._size = fd, size

    def _reader(self, file_no: int) -> int:
        """A read-only descriptor of file ``file_no``, opened once (call with the read lock)."""
        fd = self._readers.get(file_no)
        if fd is None:
            try:
                fd = os.open(self._file_path(file_no), os.O_RDONLY)
            except OSError as exc:
                raise StorageError(
                    f"cannot open {self._file_path(file_no)}: {exc.strerror}"
                ) from exc
            self._readers[file_no] = fd
        return fd
