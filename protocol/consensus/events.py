"""What goes into a :class:`~protocol.consensus.replica.Replica` and what comes out.

Inputs are events, each stamped with the driver's clock (``now_ms``): the replica never reads a
clock. Outputs are instructions for the driver, to be carried out *in list order*: in particular
a :class:`Persist` must be durable before any later :class:`Send`/:class:`Broadcast` of the same
list leaves the process (that is how a restarted replica never signs two values for one slot).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.block import Block, CommitCertificate
from protocol.codec import Message

# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """First event after construction (or restart): arms timers, may announce the view."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Receive:
    """Raw bytes from validator ``sender`` (the transport has authenticated the peer)."""

    now_ms: int
    sender: int
    data: bytes
    decoded: Message | None = None
    """The message ``data`` decodes to, when the caller already decoded it (the node's driver
    does for the proposals whose transactions it pre-checks): spares a second decode."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Transactions (exact encoded bytes, already admitted by the mempool) to be ordered."""

    now_ms: int
    txs: tuple[bytes, ...]
    hashes: tuple[bytes, ...] = ()
    """Their hashes, when the caller already has them (the mempool does); else computed."""


class TimerKind(enum.Enum):
    VIEW = "view"
    """No progress on known work: start a view change (also the new-view wait)."""
    BATCH = "batch"
    """The primary's batch wait ran out: propose what is pending."""
    EMPTY_BLOCK = "empty_block"
    """The primary's idle interval ran out: propose an empty block."""
    RETRANSMIT = "retransmit"
    """Re-send the messages of unfinished slots / view changes (lossy networks)."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    now_ms: int
    timer: TimerKind


@dataclass(frozen=True, slots=True)
class Executed:
    """The driver executed committed block ``height``; ``app_hash`` is the state after it."""

    now_ms: int
    height: int
    app_hash: bytes


Event = Start | Receive | Submit | TimerFired | Executed

# --- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    to: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send to every other validator."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SetTimer:
    """(Re)arm ``timer`` to fire at ``at_ms``; replaces an earlier setting of the same timer."""

    timer: TimerKind
    at_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerKind


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably store ``value`` under ``key`` (``None`` deletes) before any later send."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Committed:
    """Block ``block`` is final at its height; the driver stores and executes it in order,
    then reports :class:`Executed`."""

    block: Block
    block_bytes: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class ServeBlocks:
    """Peer ``to`` asked for committed blocks: answer from storage with a BlockResponse."""

    to: int
    from_height: int
    to_height: int


@dataclass(frozen=True, slots=True)
class Suspicion:
    """A peer sent something wrong; counted and logged by the driver, never raised."""

    peer: int
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class ViewEntered:
    """The replica now works in ``view`` with ``primary`` (for logs and metrics)."""

    view: int
    primary: int


Output = (
    Send
    | Broadcast
    | SetTimer
    | CancelTimer
    | Persist
    | Committed
    | ServeBlocks
    | Suspicion
    | ViewEntered
)


@dataclass(frozen=True)
class RestoredState:
    """What a restarted replica is given: its persisted records and the committed chain's tip."""

    persisted: Mapping[bytes, bytes] = field(default_factory=dict)
    committed_height: int = 0
    committed_hash: bytes = b""
    committed_time_ms: int = 0
    committed_certificate: CommitCertificate | None = None
    executed_height: int = 0
    executed_app_hash: bytes = b""
