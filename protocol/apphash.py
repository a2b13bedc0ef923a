"""The application-state hash: a chain of hashes over each block's state changes.

After block ``h`` the app hash is ``next_app_hash(app_hash(h - 1), changes(h))``, starting from
``GENESIS_APP_HASH``. Chaining the previous hash with a digest of only the keys a block touched
costs O(changes) per block (no tree over the whole state), yet two nodes agree on the app hash only
if they applied the same changes in the same order from the same genesis.

The changes are serialized canonically, sorted by key, so the order a caller builds its mapping in
never matters::

    for key in sorted(changes):
        u32be(len(key)) || key || (0x00                          if deleted
                                   0x01 || u32be(len(value)) || value  otherwise)
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.crypto import h256

APP_HASH_TAG = b"creditnet/app/v1"
GENESIS_APP_HASH = h256(b"creditnet/app/genesis")

_MAX_LEN = (1 << 32) - 1


def next_app_hash(prev: bytes, changes: Mapping[bytes, bytes | None]) -> bytes:
    """The app hash after applying ``changes`` (key -> new value, None = delete) to ``prev``."""
    return h256(APP_HASH_TAG + prev + h256(serialize_changes(changes)))


def serialize_changes(changes: Mapping[bytes, bytes | None]) -> bytes:
    """The canonical bytes of a block's state changes (see the module docstring)."""
    out = bytearray()
    for key in sorted(changes):
        value = changes[key]
        out += _length(key) + key
        if value is None:
            out += b"\x00"
        else:
            out += b"\x01" + _length(value) + value
    return bytes(out)


def _length(item: bytes) -> bytes:
    if len(item) > _MAX_LEN:
        raise ValueError(f"state key or value of {len(item)} bytes exceeds 4 GiB")
    return len(item).to_bytes(4, "big")
