"""The node's storage: one LevelDB per node holding blocks, state, consensus records, private data.

``BlockStore`` is the entry point; every key it writes is built in :mod:`node.storage.schema`.
"""

from node.storage.blockstore import DB_DIRNAME, BlockStore, IncompatibleStore, OutOfOrderBlock
from node.storage.kv import KVBackend, LevelDBBackend, MemoryBackend, StorageError
from node.storage.lock import DataDirLock, DataDirLocked

__all__ = [
    "DB_DIRNAME",
    "BlockStore",
    "DataDirLock",
    "DataDirLocked",
    "IncompatibleStore",
    "KVBackend",
    "LevelDBBackend",
    "MemoryBackend",
    "OutOfOrderBlock",
    "StorageError",
]
