"""Child process of the storage crash test: commits synthetic blocks until it is killed.

Usage: ``python crash_writer.py DIR SEED``. Opens the BlockStore in DIR, resumes at latest + 1,
and after each synced commit prints ``committed <height>`` (flushed), forever. Everything a block
holds is derived from (SEED, height) by :func:`synthetic_block`, so the parent regenerates it and
checks what survived the kill byte for byte.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

from node.storage import BlockStore
from protocol.crypto import h256

CHAIN_ID = "crash-test"
STATE_KEYS = 300
"""Blocks touch ~50 of this many state keys, so later blocks overwrite and delete earlier ones."""


@dataclass(frozen=True)
class SyntheticBlock:
    """One block's worth of bytes, indexes and state changes."""

    height: int
    block_hash: bytes
    block: bytes
    certificate: bytes
    tx_hashes: list[bytes]
    changes: dict[bytes, bytes | None]


def synthetic_block(seed: int, height: int) -> SyntheticBlock:
    """The block at ``height`` for ``seed``: 2-20 KB, 1-40 txs, ~50 state changes (~20% deletes)."""
    rng = random.Random(f"{seed}/{height}")
    block = rng.randbytes(rng.randint(2_000, 20_000))
    certificate = rng.randbytes(rng.randint(100, 400))
    tx_hashes = [h256(b"crash-tx/%d/%d/%d" % (seed, height, i)) for i in range(rng.randint(1, 40))]
    changes: dict[bytes, bytes | None] = {}
    for _ in range(50):
        key = b"acct/%03d" % rng.randrange(STATE_KEYS)
        changes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 64))
    return SyntheticBlock(height, h256(block), block, certificate, tx_hashes, changes)


def main(argv: list[str]) -> None:
    """Commit blocks to the store in ``argv[1]`` for seed ``argv[2]`` until killed."""
    store = BlockStore.open(Path(argv[1]), CHAIN_ID)
    seed = int(argv[2])
    height = store.latest_height + 1
    while True:
        b = synthetic_block(seed, height)
        store.commit_block(
            height,
            b.block_hash,
            b.block,
            b.certificate,
            tx_hashes=b.tx_hashes,
            state_changes=b.changes,
        )
        print(f"committed {height}", flush=True)
        height += 1


if __name__ == "__main__":
    main(sys.argv)
