"""Codec and signature throughput: ``python -m bench.codec [--seconds S] [--out FILE]``.

Measures encode and decode (untrusted-input path: limits, field checks, canonicality) of a
transaction, a 1,000-transaction block and a commit vote, plus Ed25519 sign/verify of
transactions. Prints one JSON object and writes it to bench/results/codec.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results_io import write_result
from protocol.block import Block, CommitVote, make_header
from protocol.codec import decode, encode
from protocol.crypto import Identity, h256
from protocol.transactions import CommitmentEntry, RecordCommitment, Transaction, decode_tx

CHAIN = "creditnet-bench"


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run(seconds: float) -> dict[str, Any]:
    agency = Identity(b"\x01" * 32)
    tx = Transaction.sign(
        agency, CHAIN, RecordCommitment((CommitmentEntry(h256(b"r"), h256(b"d")),)), 1
    )
    tx_bytes = encode(tx)
    txs = tuple(
        encode(
            Transaction.sign(
                agency, CHAIN, RecordCommitment((CommitmentEntry(h256(b"%d" % i), h256(b"d")),)), i
            )
        )
        for i in range(1000)
    )
    header = make_header(
        chain_id=CHAIN,
        height=1,
        time_ms=0,
        prev_hash=bytes(32),
        txs=txs,
        app_height=0,
        app_hash=bytes(32),
        view=0,
        proposer=agency.public_key,
    )
    block = Block(header, txs)
    block_bytes = encode(block)
    vote = CommitVote.sign(agency, CHAIN, 0, 1, block.hash)
    vote_bytes = encode(vote)
    short = seconds / 4
    figures = {
        "tx_bytes": len(tx_bytes),
        "block_1000_bytes": len(block_bytes),
        "tx_encode_per_s": rate(lambda: encode(tx), seconds),
        "tx_decode_per_s": rate(lambda: decode_tx(tx_bytes), seconds),
        "vote_encode_per_s": rate(lambda: encode(vote), seconds),
        "vote_decode_per_s": rate(lambda: decode(vote_bytes, CommitVote), seconds),
        "block_1000_encode_per_s": rate(lambda: encode(block), short),
        "block_1000_decode_per_s": rate(lambda: decode(block_bytes, Block), short),
        "tx_sign_per_s": rate(lambda: Transaction.sign(agency, CHAIN, tx.body, 2), seconds),
        "tx_verify_per_s": rate(lambda: tx.verify(CHAIN), seconds),
    }
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = run(args.seconds)
    path = write_result("codec", figures, args.out)
    print(json.dumps({"results": str(path), **figures}, indent=2))


if __name__ == "__main__":
    main()
