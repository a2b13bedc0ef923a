"""Every LevelDB key creditnet writes is built here (the habit of py-evm's ``eth/db/schema.py``).

Layout: ``VERSION || namespace || rest``. ``VERSION`` (``0x01``) is the key-layout version: a
future layout uses another first byte, so old and new keys can coexist while a store is migrated.
The namespace is one byte, different for each kind of key, so no key of one kind can equal or be
iterated as a key of another kind::

    01 'm' <name>                      meta: format version, chain id, latest height, app hash
    01 'f' <height u64be>              -> where the block and its certificate are in the block
                                       files (``node.storage.block_files``): file u32be ||
                                       offset u64be || length u32be
    01 'b' <height u64be>              block bytes (stores written before the block files; read
                                       as they are, never written now)
    01 'h' <block hash>                -> height u64be
    01 'c' <height u64be>              commit certificate bytes (likewise)
    01 't' <tx hash>                   -> height u64be || index u32be
    01 's' <application key>           application state (the ledger rules' own key space)
    01 'w' <name>                      consensus write-ahead records of format 1.0 (moved to the
                                       consensus log, consensus.wal, when a store is opened)
    01 'p' <len(ns) u8> <ns> <key>     node-private data (e.g. the agency's credit records)

Heights are big-endian so key order is height order. The private namespace is length-prefixed so
one namespace's keys never start with another namespace's prefix (``b"a"`` vs ``b"ab"``).

The fixed-width values (heights, tx locations) are encoded here as well, beside their keys.
Arguments out of range raise ``ValueError``: they are caller bugs, not storage failures.
"""

from __future__ import annotations

VERSION = b"\x01"

FORMAT_VERSION = 1
"""Version of the whole on-disk format, stored under ``META_FORMAT_VERSION``."""

META = VERSION + b"m"
BLOCK_AT = VERSION + b"f"
BLOCK = VERSION + b"b"
BLOCK_HASH = VERSION + b"h"
CERTIFICATE = VERSION + b"c"
TX = VERSION + b"t"
STATE = VERSION + b"s"
CONSENSUS = VERSION + b"w"
PRIVATE = VERSION + b"p"

NAMESPACES: dict[str, bytes] = {
    "meta": META,
    "block_at": BLOCK_AT,
    "block": BLOCK,
    "block_hash": BLOCK_HASH,
    "certificate": CERTIFICATE,
    "tx": TX,
    "state": STATE,
    "consensus": CONSENSUS,
    "private": PRIVATE,
}
"""Every namespace prefix, by name (tests check that none is a prefix of another)."""

# Meta keys. META_FORMAT_VERSION never moves, so any creditnet can tell which format it reads.
META_FORMAT_VERSION = META + b"format-version"
META_CHAIN_ID = META + b"chain-id"
META_LATEST_HEIGHT = META + b"latest-height"
META_APP_HASH = META + b"app-hash"

_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
MAX_NAMESPACE_LEN = 255


def block_location_key(height: int) -> bytes:
    """Key of where the block at ``height`` is in the block files."""
    return BLOCK_AT + encode_height(height)


def block_key(height: int) -> bytes:
    """Key of the block at ``height``."""
    return BLOCK + encode_height(height)


def block_hash_key(block_hash: bytes) -> bytes:
    """Key of the block-hash -> height index entry."""
    return BLOCK_HASH + block_hash


def certificate_key(height: int) -> bytes:
    """Key of the commit certificate of the block at ``height``."""
    return CERTIFICATE + encode_height(height)


def tx_key(tx_hash: bytes) -> bytes:
    """Key of the tx-hash -> (height, index) entry."""
    return TX + tx_hash


def state_key(user_key: bytes) -> bytes:
    """Key under which application key ``user_key`` is stored (also a prefix for iteration)."""
    return STATE + user_key


def consensus_key(name: bytes) -> bytes:
    """Key of a consensus write-ahead record (also a prefix for iteration)."""
    return CONSENSUS + name


def private_prefix(namespace: bytes) -> bytes:
    """Prefix of every key in one node-private namespace."""
    if not 1 <= len(namespace) <= MAX_NAMESPACE_LEN:
        raise ValueError(f"a private namespace is 1..{MAX_NAMESPACE_LEN} bytes")
    return PRIVATE + bytes([len(namespace)]) + namespace


def private_key(namespace: bytes, key: bytes) -> bytes:
    """Key of ``key`` in node-private ``namespace`` (also a prefix for iteration)."""
    return private_prefix(namespace) + key


def encode_height(height: int) -> bytes:
    """A height as 8 bytes big-endian (so byte order is numeric order)."""
    if not 0 <= height <= _U64_MAX:
        raise ValueError(f"height {height} is outside 0..2**64-1")
    return height.to_bytes(8, "big")


def decode_height(raw: bytes) -> int:
    """Inverse of :func:`encode_height`."""
    if len(raw) != 8:
        raise ValueError(f"a stored height is 8 bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def encode_tx_location(height: int, index: int) -> bytes:
    """Where a tx is: block height (u64be) and its index in the block (u32be)."""
    if not 0 <= index <= _U32_MAX:
        raise ValueError(f"tx index {index} is outside 0..2**32-1")
    return encode_height(height) + index.to_bytes(4, "big")


def decode_tx_location(raw: bytes) -> tuple[int, int]:
    """Inverse of :func:`encode_tx_location`."""
    if len(raw) != 12:
        raise ValueError(f"a stored tx location is 12 bytes, got {len(raw)}")
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


def encode_format_version(version: int) -> bytes:
    """The format version as 4 bytes big-endian."""
    return version.to_bytes(4, "big")


def decode_format_version(raw: bytes) -> int:
    """Inverse of :func:`encode_format_version`."""
    if len(raw) != 4:
        raise ValueError(f"a stored format version is 4 bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")
