"""A replica's parameters: the validator set and the chain-wide timing and size limits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from protocol.block import max_faulty, quorum
from protocol.genesis import Genesis


@dataclass(frozen=True)
class ReplicaConfig:
    chain_id: str
    validators: tuple[bytes, ...]
    """Ed25519 public keys; a replica's id is its index here (genesis order)."""
    index: int
    genesis_hash: bytes
    """Block 1's prev_hash, and the app hash claimed for app_height 0."""
    genesis_time_ms: int
    window: int = 40
    """Heights in flight above the committed height."""
    checkpoint_interval: int = 10
    view_timeout_ms: int = 2000
    view_timeout_max_ms: int = 60000
    max_batch_txs: int = 1000
    """Most transactions a block may hold (chain-wide: backups refuse more)."""
    max_block_bytes: int = 1 << 20
    propose_batch_txs: int = 0
    """Most transactions this replica puts in its own proposals (node-local); 0: max_batch_txs."""
    batch_wait_ms: int = 20
    light_load_tx_per_s: int = 0
    """Below this many transactions queued a second, a busy primary waits light_batch_wait_ms
    instead of batch_wait_ms (node-local; 0: always batch_wait_ms)."""
    light_batch_wait_ms: int = 0
    full_load_tx_per_s: int = 0
    """From this many on, batch_wait_ms; in between, a wait in proportion (0: a step at
    light_load_tx_per_s)."""
    empty_block_interval_ms: int = 0
    """0: the primary proposes only when there are transactions."""
    retransmit_ms: int = 500
    max_clock_skew_ms: int = 10_000
    verify_signatures: bool = True
    """False only in benchmarks that measure the state machine without Ed25519."""
    max_pending_txs: int = 200_000

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.validators):
            raise ValueError(f"index {self.index} outside the validator set")
        if len(set(self.validators)) != len(self.validators):
            raise ValueError("validator keys must be distinct")
        if self.window < 1 or self.checkpoint_interval < 1:
            raise ValueError("window and checkpoint_interval must be positive")

    @property
    def batch_limit(self) -> int:
        """Transactions per own proposal."""
        if self.propose_batch_txs:
            return min(self.propose_batch_txs, self.max_batch_txs)
        return self.max_batch_txs

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return max_faulty(self.n)

    @property
    def quorum(self) -> int:
        return quorum(self.n)

    def primary(self, view: int) -> int:
        return view % self.n

    @classmethod
    def from_genesis(cls, genesis: Genesis, index: int, **overrides: Any) -> ReplicaConfig:
        c = genesis.consensus
        base = cls(
            chain_id=genesis.chain_id,
            validators=genesis.validator_keys,
            index=index,
            genesis_hash=genesis.hash,
            genesis_time_ms=genesis.genesis_time_ms,
            window=c.window,
            checkpoint_interval=c.checkpoint_interval,
            view_timeout_ms=c.view_change_timeout_ms,
            view_timeout_max_ms=c.view_change_timeout_max_ms,
            max_batch_txs=c.max_block_txs,
            max_block_bytes=c.max_block_bytes,
        )
        return replace(base, **overrides)
