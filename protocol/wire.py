"""What nodes put on the wire around consensus messages and transactions.

Consensus messages travel on one long-lived stream per (sender, receiver) pair. Each payload
(or each part of a long one) is wrapped in a :class:`StreamFrame` numbered within the sender's
*session* (a random number drawn at process start): the receiver drops a frame it has already
delivered in that session and answers with a cumulative :class:`StreamAck`, and the sender
resends what is unacknowledged after a reconnect. A new session (the sender restarted) resets the
numbering. On the stream every frame is ``u32be(length) || encoded message``, at most
``MAX_FRAME_BYTES`` long.

Transactions are spread by gossip in :class:`TxBatch` messages, never one message per transaction.
"""

from __future__ import annotations

from typing import Annotated

from protocol.block import MAX_VALIDATORS
from protocol.codec import (
    MAX_MESSAGE_BYTES,
    Hash32,
    InvalidMessage,
    MaxItems,
    MaxLen,
    Message,
    Range,
    message,
)
from protocol.record import StoredRecord
from protocol.transactions import QueryRequest

MAX_FRAME_BYTES = MAX_MESSAGE_BYTES
"""Largest frame (length prefix excluded) on a consensus stream."""
FRAME_OVERHEAD = 64
"""Upper bound of what a StreamFrame adds around its payload."""
MAX_PAYLOAD_BYTES = MAX_FRAME_BYTES - FRAME_OVERHEAD
MAX_MESSAGE_BYTES_IN_PARTS = 64 << 20
"""Largest consensus message a peer may send in parts (the replica's own decode limit)."""
MAX_PARTS = MAX_MESSAGE_BYTES_IN_PARTS // (MAX_PAYLOAD_BYTES // 2) + 1
MAX_BATCH_TXS = 2000
TX_BATCH_MAX_BYTES = 512 * 1024
"""A gossip TxBatch stays below this (gossip messages are best kept small)."""


@message("StreamFrame")
class StreamFrame(Message):
    """Part ``part`` of one consensus message, numbered ``seq`` (from 1) within the sender's
    ``session``; ``final`` marks the message's last part. A message longer than a frame (a view
    change carrying prepared blocks) travels in consecutive parts, so no frame exceeds the limit.
    """

    session: int
    seq: int
    part: Annotated[int, Range(0, MAX_PARTS - 1)]
    final: bool
    payload: Annotated[bytes, MaxLen(MAX_PAYLOAD_BYTES)]

    def check(self) -> None:
        if self.seq == 0:
            raise InvalidMessage("StreamFrame.seq: numbering starts at 1")


@message("StreamAck")
class StreamAck(Message):
    """Every frame of ``session`` up to ``seq`` was received."""

    session: int
    seq: int


@message("TxBatch")
class TxBatch(Message):
    """Transactions (exact encoded bytes) a node admitted, spread to its peers by gossip."""

    txs: Annotated[tuple[Annotated[bytes, MaxLen(64 * 1024)], ...], MaxItems(MAX_BATCH_TXS)]

    def check(self) -> None:
        if not self.txs:
            raise InvalidMessage("TxBatch.txs: must not be empty")


MAX_LOOKUP_RECORDS = 1000


@message("Lookup")
class Lookup(Message):
    """A mode-2 lookup, gossiped by the asking agency: the lender's signed request (pseudonym,
    purpose, categories -- never a raw ID), so every holder checks the same consent itself."""

    request: QueryRequest
    asker: Annotated[int, Range(0, MAX_VALIDATORS - 1)]


@message("RecordSet")
class RecordSet(Message):
    """Records one agency serves for a lookup (sealed to the asker inside a LookupReply)."""

    records: Annotated[tuple[StoredRecord, ...], MaxItems(MAX_LOOKUP_RECORDS)]


@message("LookupReply")
class LookupReply(Message):
    """A holder's answer on a direct stream: a RecordSet sealed to the asking agency (empty
    when it holds nothing in scope or the consent check failed there, so the asker need not wait
    for its deadline)."""

    request_hash: Hash32
    sealed: Annotated[bytes, MaxLen(MAX_PAYLOAD_BYTES)]
    refusal: Annotated[str, MaxLen(64)]
