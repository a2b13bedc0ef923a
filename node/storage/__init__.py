"""The node's storage: one LevelDB per node holding indexes, state and private data, append-only
block files for the committed blocks, and an append-only log of the replica's write-ahead records.

``BlockStore`` is the entry point; every key it writes is built in :mod:`node.storage.schema`.
"""

from node.storage.blockstore import DB_DIRNAME, BlockStore, IncompatibleStore, OutOfOrderBlock
from node.storage.consensus_log import ConsensusLog
from node.storage.kv import KVBackend, LevelDBBackend, MemoryBackend, StorageError
from node.storage.lock import DataDirLock, DataDirLocked

__all__ = [
    "DB_DIRNAME",
    "BlockStore",
    "ConsensusLog",
    "DataDirLock",
    "DataDirLocked",
    "IncompatibleStore",
    "KVBackend",
    "LevelDBBackend",
    "MemoryBackend",
    "OutOfOrderBlock",
    "StorageError",
]
