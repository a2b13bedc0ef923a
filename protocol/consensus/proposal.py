"""What a backup checks in a proposed block before it prepares it.

The verdict is ``"ok"``, ``"wait"`` (the previous block or the claimed app height is not known
here yet: keep the pre-prepare and look again later), or a sentence saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from protocol.consensus.config import ReplicaConfig
from protocol.consensus.messages import PrePrepare

OK = "ok"
WAIT = "wait"


def judge_block(
    cfg: ReplicaConfig,
    pp: PrePrepare,
    *,
    prev: tuple[bytes, int] | None,
    executed_height: int,
    app_hashes: Mapping[int, bytes],
    now_ms: int,
    txs_check: Callable[[Sequence[bytes], Sequence[bytes]], bool] | None,
) -> str:
    """``prev`` is (hash, time) of the block below; ``app_hashes`` the executed states;
    ``txs_check(txs, hashes)`` says whether every transaction of the block is acceptable (the
    node decides in what order to look: a known-bad one first)."""
    b, hd = pp.block, pp.block.header
    if prev is None:
        return WAIT
    if hd.chain_id != cfg.chain_id:
        return "block of another chain"
    if hd.view != pp.view or hd.proposer != cfg.validators[pp.replica]:
        return "block header names another view or proposer"
    if hd.prev_hash != prev[0]:
        return f"block {pp.seq} does not extend the chain"
    if hd.time_ms < prev[1] or hd.time_ms > now_ms + cfg.max_clock_skew_ms:
        return f"block time {hd.time_ms} outside [{prev[1]}, now + skew]"
    if hd.app_height > executed_height:
        return WAIT
    claimed = app_hashes.get(hd.app_height)
    if claimed is None:
        return f"app_height {hd.app_height} is too old"
    if claimed != hd.app_hash:
        return f"app hash at {hd.app_height} differs from ours"
    if len(b.txs) > cfg.max_batch_txs:
        return f"{len(b.txs)} transactions exceed {cfg.max_batch_txs}"
    if sum(len(t) for t in b.txs) > cfg.max_block_bytes:
        return "block exceeds max_block_bytes"
    hashes = b.tx_hashes
    if len(set(hashes)) != len(hashes):
        return "a transaction appears twice in the block"
    if txs_check is not None and not txs_check(b.txs, hashes):
        return "block holds an invalid transaction"
    return OK
