"""The contract over a state held in memory: blocks executed one after another, as a node
commits them, without a node.

:class:`MemoryLedger` signs transactions, wraps them in blocks, runs :func:`execute_block` over a
:class:`MemoryState` and applies the changes and chains the app hash the way the node's store
does. The contract tests build their scenarios on it, and ``bench.instructions`` counts the
instructions of the contract's operations on it: one harness, so a benchmark measures what the
tests check.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from protocol.apphash import GENESIS_APP_HASH, next_app_hash
from protocol.block import Block, make_header
from protocol.codec import encode
from protocol.contract.rules import BlockOutcome, TxOutcome, execute_block
from protocol.crypto import Identity
from protocol.genesis import Genesis
from protocol.transactions import Transaction, TxBody

BLOCK_INTERVAL_MS = 1000
"""Each block's time is one interval after the previous one's, from the genesis time on."""


class MemoryState:
    """Committed application state in a dict: ``get`` and a sorted prefix scan, as the contract
    reads state."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))

    def apply(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Apply a block's changes (None deletes the key)."""
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


class MemoryLedger:
    """Blocks of ``genesis``'s chain executed one after another over one :class:`MemoryState`,
    each proposed by ``proposer`` and timed :data:`BLOCK_INTERVAL_MS` after the previous one."""

    def __init__(self, genesis: Genesis, proposer: bytes) -> None:
        self.genesis = genesis
        self.proposer = proposer
        self.state = MemoryState()
        self.height = 0
        self.app_hash = GENESIS_APP_HASH
        self._nonce = 0

    @property
    def next_time_ms(self) -> int:
        """The time of the next block unless one is given."""
        return self.genesis.genesis_time_ms + BLOCK_INTERVAL_MS * (self.height + 1)

    def tx(self, signer: Identity, body: TxBody, nonce: int | None = None) -> bytes:
        """Encoded transaction, signed for this chain, with a fresh nonce unless given."""
        if nonce is None:
            self._nonce += 1
            nonce = self._nonce
        return encode(Transaction.sign(signer, self.genesis.chain_id, body, nonce))

    def block(self, txs: Sequence[bytes], time_ms: int | None = None) -> Block:
        """The next block holding ``txs`` (not executed)."""
        header = make_header(
            chain_id=self.genesis.chain_id,
            height=self.height + 1,
            time_ms=self.next_time_ms if time_ms is None else time_ms,
            prev_hash=bytes(32),
            txs=txs,
            app_height=self.height,
            app_hash=self.app_hash,
            view=0,
            proposer=self.proposer,
        )
        return Block(header, tuple(txs))

    def run(self, *txs: bytes, time_ms: int | None = None) -> BlockOutcome:
        """Execute and commit one block holding ``txs``; its outcome."""
        block = self.block(txs, time_ms)
        out = execute_block(self.genesis, self.state, block)
        self.state.apply(out.changes)
        self.height = block.height
        self.app_hash = next_app_hash(self.app_hash, out.changes)
        return out

    def one(self, signer: Identity, body: TxBody, *, time_ms: int | None = None) -> TxOutcome:
        """Execute one transaction in its own block; its outcome."""
        return self.run(self.tx(signer, body), time_ms=time_ms).outcomes[0]
