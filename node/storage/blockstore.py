"""The node's store: indexes, application state and the agency's private data in one LevelDB;
committed blocks with their certificates in append-only block files beside it
(:mod:`node.storage.block_files`: written once, read rarely, they were half of what LevelDB
compacted); the replica's write-ahead records (votes, proofs) in an append-only log
(:mod:`node.storage.consensus_log`: they live for a block's round and carry whole blocks, churn
LevelDB would flush and compact).

Why one atomic, synced batch per block: a node killed at any instant reopens with either all of
block ``h`` (where it is in the block files, hash and tx index, state changes, latest height, app
hash) or none of it, so the state always matches the latest block and the app hash chain is never
torn. The block's record is fsynced in its file before that batch is written, so an indexed block
is always readable; a record a crash left after the last indexed one is cut off at open.

The store does not decode blocks or hash anything but the app hash: callers hand it bytes and the
hashes they computed. It has a single writer (the node's driver task); the data directory lock
keeps a second process out.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from node.storage import schema
from node.storage.block_files import DIRNAME as BLOCK_FILES_DIRNAME
from node.storage.block_files import BlockFiles
from node.storage.consensus_log import FILENAME as CONSENSUS_LOG_FILENAME
from node.storage.consensus_log import ConsensusLog
from node.storage.kv import KVBackend, LevelDBBackend, MemoryBackend, StorageError
from node.storage.lock import DataDirLock
from protocol.apphash import GENESIS_APP_HASH, next_app_hash

log = logging.getLogger(__name__)

DB_DIRNAME = "leveldb"
"""LevelDB lives in this subdirectory of the data directory (beside the lock file)."""


class IncompatibleStore(StorageError):
    """The directory holds another chain, a newer format, or no creditnet data at all."""


class OutOfOrderBlock(StorageError):
    """A block committed at a height other than latest + 1."""


class BlockStore:
    """Blocks, indexes, state, consensus records and private data of one node (see module doc)."""

    def __init__(
        self,
        backend: KVBackend,
        chain_id: str,
        *,
        where: str,
        lock: DataDirLock | None = None,
        sync: bool = True,
        consensus_log: ConsensusLog | None = None,
        block_files: BlockFiles | None = None,
    ) -> None:
        """Use ``backend``, ``consensus_log`` and ``block_files`` (owned from now on; in memory
        when None), checking or writing the backend's meta for ``chain_id``.

        ``where`` names the store in messages; ``sync`` is the default durability of block
        commits and consensus records (False only for benchmarks and tests).
        """
        if not chain_id:
            raise ValueError("chain id is empty")
        self._backend = backend
        self._lock = lock
        self.chain_id = chain_id
        self.where = where
        self.sync = sync
        self._latest_height, self._app_hash = self._load_or_init_meta()
        self._consensus = consensus_log if consensus_log is not None else ConsensusLog(None)
        self._blocks = block_files if block_files is not None else BlockFiles(None)
        self._move_consensus_records()
        self._cut_unindexed_blocks()

    @classmethod
    def open(
        cls, path: Path, chain_id: str, *, sync: bool = True, compression: str = "none"
    ) -> BlockStore:
        """Lock data directory ``path`` and open (or create) the store of ``chain_id`` in it
        (``compression``: LevelDB's, for the tables it writes from now on).

        Raises ``DataDirLocked`` if another open holds ``path``, ``IncompatibleStore`` if it holds
        another chain or a newer format, ``StorageError`` if LevelDB cannot be opened.
        """
        lock = DataDirLock(path)
        backend: LevelDBBackend | None = None
        wal: ConsensusLog | None = None
        blocks: BlockFiles | None = None
        try:
            backend = LevelDBBackend(path / DB_DIRNAME, compression=compression)
            wal = ConsensusLog(path / CONSENSUS_LOG_FILENAME, sync=sync)
            blocks = BlockFiles(path / BLOCK_FILES_DIRNAME, sync=sync)
            return cls(
                backend,
                chain_id,
                where=f"data directory {path}",
                lock=lock,
                sync=sync,
                consensus_log=wal,
                block_files=blocks,
            )
        except BaseException:
            if blocks is not None:
                blocks.close()
            if wal is not None:
                wal.close()
            if backend is not None:
                backend.close()
            lock.release()
            raise

    @classmethod
    def memory(cls, chain_id: str) -> BlockStore:
        """A fresh store in memory (unit tests); unsynced writes are the same as synced ones."""
        return cls(MemoryBackend(), chain_id, where="in-memory store")

    # --- meta -----------------------------------------------------------------------------------

    def _load_or_init_meta(self) -> tuple[int, bytes]:
        raw_format = self._backend.get(schema.META_FORMAT_VERSION)
        if raw_format is None:
            if next(self._backend.iterate(b""), None) is not None:
                raise IncompatibleStore(f"{self.where} holds data that is not a creditnet store")
            self._backend.write(
                {
                    schema.META_FORMAT_VERSION: schema.encode_format_version(schema.FORMAT_VERSION),
                    schema.META_CHAIN_ID: self.chain_id.encode(),
                    schema.META_LATEST_HEIGHT: schema.encode_height(0),
                    schema.META_APP_HASH: GENESIS_APP_HASH,
                },
                sync=True,
            )
            return 0, GENESIS_APP_HASH
        try:
            version = schema.decode_format_version(raw_format)
        except ValueError as exc:
            raise IncompatibleStore(f"{self.where} has a corrupt format version: {exc}") from exc
        if version > schema.FORMAT_VERSION:
            raise IncompatibleStore(
                f"{self.where} format {version} is newer than this creditnet "
                f"({schema.FORMAT_VERSION}); upgrade creditnet"
            )
        if version < schema.FORMAT_VERSION:  # no older format has been released
            raise IncompatibleStore(f"{self.where} has unknown format {version}")
        stored_chain = self._require_meta(schema.META_CHAIN_ID, "chain id")
        if stored_chain != self.chain_id.encode():
            shown = stored_chain.decode(errors="replace")
            raise IncompatibleStore(f"{self.where} holds chain {shown!r}, not {self.chain_id!r}")
        raw_height = self._require_meta(schema.META_LATEST_HEIGHT, "latest height")
        app_hash = self._require_meta(schema.META_APP_HASH, "app hash")
        try:
            return schema.decode_height(raw_height), app_hash
        except ValueError as exc:
            raise StorageError(f"{self.where} has a corrupt latest height: {exc}") from exc

    def _move_consensus_records(self) -> None:
        """Move write-ahead records an older creditnet kept in LevelDB (namespace ``w``) into the
        consensus log: written there (synced) first, then deleted from LevelDB, so a crash in
        between leaves them in both and the next open finishes the move."""
        old = dict(_strip(self._backend.iterate(schema.CONSENSUS), len(schema.CONSENSUS)))
        if not old:
            return
        moved = {k: v for k, v in old.items() if self._consensus.get(k) is None}
        self._consensus.write(moved, sync=True)
        self._backend.write((), [schema.consensus_key(k) for k in old], sync=True)

    def _cut_unindexed_blocks(self) -> None:
        """Drop what a crash left in the block files after the latest indexed block."""
        latest = self._latest_height
        location = self._backend.get(schema.block_location_key(latest)) if latest else None
        dropped = self._blocks.cut_after(location)
        if dropped:
            log.warning(
                "%s: dropped %d bytes of block files after block %d (written before a crash "
                "stopped the block's commit; the block is committed again from its peers)",
                self.where,
                dropped,
                latest,
            )

    def _require_meta(self, key: bytes, what: str) -> bytes:
        value = self._backend.get(key)
        if value is None:
            raise StorageError(f"{self.where} is missing its {what} (corrupt store)")
        return value

    @property
    def latest_height(self) -> int:
        """Height of the last committed block; 0 before the first."""
        return self._latest_height

    @property
    def app_hash(self) -> bytes:
        """App hash after the last committed block; ``GENESIS_APP_HASH`` before the first."""
        return self._app_hash

    # --- blocks ---------------------------------------------------------------------------------

    def commit_block(
        self,
        height: int,
        block_hash: bytes,
        block_bytes: bytes,
        certificate_bytes: bytes,
        *,
        tx_hashes: Sequence[bytes],
        state_changes: Mapping[bytes, bytes | None],
        consensus_deletes: Iterable[bytes] = (),
        replays: Collection[int] = (),
        sync: bool | None = None,
        location: bytes | None = None,
    ) -> bytes:
        """Store block ``height`` = latest + 1 and apply its state changes in one atomic batch.

        ``tx_hashes[i]`` is indexed as ``(height, i)``, except the positions in ``replays``:
        copies of a transaction committed before (in an earlier block or earlier in this one),
        which the ledger refused as duplicates -- the index keeps pointing at the first, so a
        lookup finds the result that counted. ``state_changes`` maps application keys to new
        values, None deleting. ``consensus_deletes`` names consensus records made obsolete by this
        block, dropped from the consensus log once the batch is written (so a crash never loses
        a vote before its block is stored; one that loses the deletion leaves records at or
        below the stored height, which recovery ignores). ``sync`` (default: the store's) makes
        the batch durable before returning. ``location``: where :meth:`write_block` already put
        the block and its certificate (else they are written here first). Returns the new app
        hash.
        """
        self._require_next(height)
        app_hash = next_app_hash(self._app_hash, state_changes)
        encoded_height = schema.encode_height(height)
        durable = self.sync if sync is None else sync
        if location is None:
            location = self._blocks.append(height, block_bytes, certificate_bytes, sync=durable)
        puts: list[tuple[bytes, bytes]] = [
            (schema.block_location_key(height), location),
            (schema.block_hash_key(block_hash), encoded_height),
        ]
        puts += [
            (schema.tx_key(tx), schema.encode_tx_location(height, i))
            for i, tx in enumerate(tx_hashes)
            if i not in replays
        ]
        deletes: list[bytes] = []
        for key, value in state_changes.items():
            if value is None:
                deletes.append(schema.state_key(key))
            else:
                puts.append((schema.state_key(key), value))
        puts += [(schema.META_LATEST_HEIGHT, encoded_height), (schema.META_APP_HASH, app_hash)]
        self._backend.write(puts, deletes, sync=durable)
        self._latest_height, self._app_hash = height, app_hash
        self._consensus.delete(consensus_deletes)
        return app_hash

    def write_block(
        self, height: int, block_bytes: bytes, certificate_bytes: bytes, *, sync: bool | None = None
    ) -> bytes:
        """Append block ``height`` = latest + 1 and its certificate to the block files, durable
        before returning (``sync``, default: the store's), ahead of :meth:`commit_block` -- so the
        executor can overlap that write and its fsync with the block's execution. Returns the
        location to pass to :meth:`commit_block`. Until then nothing points at the record: a
        crash drops it at the next open, a failed execution leaves it unreferenced."""
        self._require_next(height)
        durable = self.sync if sync is None else sync
        return self._blocks.append(height, block_bytes, certificate_bytes, sync=durable)

    def _require_next(self, height: int) -> None:
        expected = self._latest_height + 1
        if height != expected:
            raise OutOfOrderBlock(
                f"block {height} does not follow the latest committed block "
                f"{self._latest_height} (expected {expected})"
            )

    def block(self, height: int) -> bytes | None:
        """The bytes of block ``height``, or None if it is not stored."""
        if height < 0:
            return None
        found = self._from_block_files(height)
        return found[0] if found is not None else self._backend.get(schema.block_key(height))

    def certificate(self, height: int) -> bytes | None:
        """The commit certificate of block ``height``, or None if it is not stored."""
        if height < 0:
            return None
        found = self._from_block_files(height)
        return found[1] if found is not None else self._backend.get(schema.certificate_key(height))

    def _from_block_files(self, height: int) -> tuple[bytes, bytes] | None:
        """(block, certificate) from the block files; None when they do not hold it -- a store
        written before them keeps its older blocks in LevelDB, under the keys the callers try
        next."""
        location = self._backend.get(schema.block_location_key(height))
        return None if location is None else self._blocks.read(location, height)

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of the block with hash ``block_hash``, or None."""
        raw = self._backend.get(schema.block_hash_key(block_hash))
        return None if raw is None else schema.decode_height(raw)

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """``(height, index)`` of the committed tx ``tx_hash``, or None."""
        raw = self._backend.get(schema.tx_key(tx_hash))
        return None if raw is None else schema.decode_tx_location(raw)

    # --- application state ----------------------------------------------------------------------

    def state_get(self, key: bytes) -> bytes | None:
        """The committed value of application key ``key``, or None."""
        return self._backend.get(schema.state_key(key))

    def state_items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Committed ``(application key, value)`` pairs under ``prefix``, in key order."""
        return _strip(self._backend.iterate(schema.state_key(prefix)), len(schema.STATE))

    # --- consensus write-ahead records ----------------------------------------------------------

    def put_consensus(self, name: bytes, value: bytes) -> None:
        """Durably record ``value`` under ``name`` before the vote it protects is sent."""
        self._consensus.write({name: value}, sync=True)

    def get_consensus(self, name: bytes) -> bytes | None:
        """The consensus record ``name``, or None."""
        return self._consensus.get(name)

    def consensus_items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Consensus records ``(name, value)`` under ``prefix``, in name order (for recovery)."""
        return self._consensus.items(prefix)

    def write_consensus(
        self, changes: Mapping[bytes, bytes | None], *, sync: bool | None = None
    ) -> None:
        """Apply many consensus record puts (None deletes) as one atomic record; synced unless
        the store was opened unsynced (tests) or ``sync`` says otherwise."""
        self._consensus.write(changes, sync=self.sync if sync is None else sync)

    def delete_consensus(self, names: Iterable[bytes]) -> None:
        """Drop consensus records that a stable checkpoint made obsolete (synced)."""
        self._consensus.write(dict.fromkeys(names), sync=True)

    @property
    def consensus_log(self) -> ConsensusLog:
        """The write-ahead records' log (its size and rewrites, for metrics and tests)."""
        return self._consensus

    @property
    def block_files(self) -> BlockFiles:
        """The committed blocks' files (their size, for metrics)."""
        return self._blocks

    # --- node-private data ----------------------------------------------------------------------

    def put_private(self, namespace: bytes, key: bytes, value: bytes, *, sync: bool = True) -> None:
        """Store one private value (never part of the ledger or the app hash)."""
        self.write_private(namespace, {key: value}, sync=sync)

    def write_private(
        self, namespace: bytes, changes: Mapping[bytes, bytes | None], *, sync: bool = True
    ) -> None:
        """Apply many private puts (None deletes) in ``namespace`` as one atomic batch."""
        puts = [(schema.private_key(namespace, k), v) for k, v in changes.items() if v is not None]
        deletes = [schema.private_key(namespace, k) for k, v in changes.items() if v is None]
        self._backend.write(puts, deletes, sync=sync)

    def get_private(self, namespace: bytes, key: bytes) -> bytes | None:
        """The private value at ``key`` in ``namespace``, or None."""
        return self._backend.get(schema.private_key(namespace, key))

    def private_items(self, namespace: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Private ``(key, value)`` pairs of ``namespace`` under ``prefix``, in key order."""
        strip = len(schema.private_prefix(namespace))
        return _strip(self._backend.iterate(schema.private_key(namespace, prefix)), strip)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the consensus log, the block files and LevelDB, then release the data
        directory; idempotent."""
        try:
            self._consensus.close()
            self._blocks.close()
            self._backend.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BlockStore({self.where}, chain {self.chain_id!r}, height {self._latest_height})"


def _strip(items: Iterator[tuple[bytes, bytes]], n: int) -> Iterator[tuple[bytes, bytes]]:
    return ((key[n:], value) for key, value in items)
