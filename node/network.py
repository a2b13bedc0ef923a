"""The peer-to-peer layer: a py-libp2p host that only talks to the genesis validators.

What it guarantees the driver, and why (see ``shared/notes/py-libp2p.md`` for the library's
measured behaviour):

- **Security**: Noise is the only security transport offered, Yamux the only muxer, so a plaintext
  or TLS-only peer cannot connect. libp2p has no PeerID gate, so membership is checked three
  times: a connection notifee closes connections from keys outside the validator set, every
  stream handler refuses them, and the gossip validator drops their messages.
- **Consensus messages** go on one long-lived stream per peer (our own framing, at most
  ``p2p.max_frame_bytes``), each numbered within this process's random session, acknowledged
  cumulatively and resent after a reconnect (:mod:`protocol.wire`). :meth:`PeerNetwork.send`
  never blocks: a peer that falls far behind loses its oldest unacknowledged frames (counted) and
  the replica's own retransmission and catch-up repair the rest.
- **Transactions** admitted here go to the current primary in batches
  (:class:`~protocol.wire.TxBatch`, gathered for ``TX_SPREAD_INTERVAL_S``, or sent with the next
  consensus broadcast once they have waited ``TX_PIGGYBACK_AFTER_S``) on the same acknowledged
  streams: PBFT's request path. The other replicas get them in the primary's pre-prepare and
  check the ones they lack in a worker thread before preparing it. Sending every batch to every
  validator, as CometBFT's mempool reactor does, made ~60 % of each node's messages at 300
  mode-1 queries/s carry transactions that the block brought again. A flush of many
  transactions (``SPREAD_TO_ALL_MIN_TXS``) still goes to everyone: then checking them ahead of
  the pre-prepare is worth the messages. Still best effort: a peer
  holding 8 MiB or a quarter of the frame limit unacknowledged gets no more batches (so they
  never push its consensus frames out), and what stays pending at the node that admitted it is
  sent again, to **every** validator (``gossip_txs(everyone=True)``, after 0.5 s, then every
  2 s): the primary may have died, lost or withheld it, and every replica holding a pending
  transaction runs its view timer, so such a primary is replaced -- PBFT's client broadcasting a
  request that timed out.
- **Gossipsub v1.1** carries the mode-2 lookups, tuned as the notes say: spam protection off (we
  rate-limit per peer ourselves), 1 s heartbeat, seqno counter from ``time_ns``.
- **Mode-2 lookups** are gossiped on their own topic; the replies go back on the consensus stream
  to the asker (direct, acknowledged, no stream set-up per reply) and are told from consensus
  messages by their codec tag.
- **Containment**: every handler, validator and notifee catches everything a peer can cause. A
  bad frame is counted in ``creditnet_consensus_p2p_bad_messages_total{reason}``, logged at most
  once per peer per interval, and its stream reset -- the host keeps running.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import create_identity_from_seed
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from node import quick_locks, tcp_buffer, yamux_credit
from node.framing import FrameBuffer, FrameTooLarge, frame
from node.metrics import NodeMetrics
from node.ratelimit import TokenBucket
from node.tasks import TaskStatus
from protocol.codec import TAG_TABLE, CodecError, decode, encode
from protocol.crypto import Identity, peer_id
from protocol.wire import (
    FRAME_OVERHEAD,
    MAX_BATCH_TXS,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES_IN_PARTS,
    TX_BATCH_MAX_BYTES,
    StreamAck,
    StreamFrame,
    TxBatch,
)

log = logging.getLogger("creditnet.p2p")

# py-libp2p's Yamux sends a WINDOW_UPDATE on about every other read: one more encrypted frame
# and syscall each way for a message received. Credit goes back as go-yamux returns it instead.
yamux_credit.install()
# Two socket reads per Noise message, each a trip through trio's scheduler: one per burst instead.
tcp_buffer.install()
# About ten lock acquisitions per message, each a trip through trio's scheduler though free.
quick_locks.install()

CONSENSUS_PROTOCOL = TProtocol("/creditnet/consensus/1.0.0")
MAX_UNACKED_FRAMES = 10_000
MAX_UNACKED_BYTES = 32 << 20
TX_BATCH_UNACKED_BYTES = 8 << 20
TX_BATCH_UNACKED_FRAMES = MAX_UNACKED_FRAMES // 4
"""A peer holding this much unacknowledged data or this many frames (down, or slow) gets no more
transaction batches until it catches up: they are best-effort (the mempool sends its pending
transactions again), and the rest of the buffer stays for consensus frames, which they must
never push out."""
WRITE_CHUNK_BYTES = 256 * 1024
BAD_LOG_INTERVAL_S = 10.0
READ_CHUNK = 1 << 16
ACK_DELAY_S = 0.25
TX_SPREAD_INTERVAL_S = 0.05
"""Transactions admitted here are gathered at most this long into one TxBatch for the primary
(less when a consensus broadcast takes them along, see below): a message costs far more than the
transactions in it (at 150 mode-1 queries/s, 50 ms instead of 20 ms took a tenth off each node's
CPU and the p99 from 370 to 250 ms)."""
SPREAD_TO_ALL_MIN_TXS = 32
"""A flush of this many transactions or more goes to every validator, not only the primary.
A batch to a replica costs it a message but spares it verifying those transactions when the
primary's pre-prepare brings them, which is on the block's critical path: for a few query
entries the message is the larger cost (and the check takes a millisecond), for hundreds of
transactions the check is (tens of milliseconds before the replica can prepare; the closed-loop
transaction load committed 5-12 % less when every batch went to the primary only)."""
TX_PIGGYBACK_AFTER_S = 0.01
"""Queued transactions older than this leave with the next consensus broadcast instead of waiting
for the spreading timer: frames queued together go out in one write -- one Yamux frame, one Noise
message, one system call -- and with py-libp2p it is those, not our frames, that cost."""


def _tx_batches(txs: Sequence[bytes]) -> list[bytes]:
    """Encoded TxBatch messages holding ``txs`` in order, each within the batch limits."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for tx in txs:
        if batch and (len(batch) >= MAX_BATCH_TXS or size + len(tx) > TX_BATCH_MAX_BYTES):
            out.append(encode(TxBatch(tuple(batch))))
            batch, size = [], 0
        batch.append(tx)
        size += len(tx)
    if batch:
        out.append(encode(TxBatch(tuple(batch))))
    return out


_TX_BATCH_TAG = bytes([next(t for t, n in TAG_TABLE.items() if n == "TxBatch")])
_LOOKUP_REPLY_TAG = bytes([next(t for t, n in TAG_TABLE.items() if n == "LookupReply")])
"""A LookupReply's codec tag: the second byte of its encoding (``[tag, ...]``), which is how
replies arriving on a consensus stream are told from consensus messages."""


def lookup_topic(chain_id: str) -> str:
    return f"/creditnet/{chain_id}/lookups/1"


def new_libp2p_host(seed: bytes, listen: multiaddr.Multiaddr) -> IHost:
    """A py-libp2p host with the Ed25519 identity of ``seed``, offering Noise as its only
    security transport and Yamux as its only muxer (so a plaintext or TLS-only peer cannot
    connect), to listen on ``listen`` once run."""
    key_pair = create_identity_from_seed(seed)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, create_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): cast(Any, Yamux)},
        listen_addrs=[listen],
    )


@dataclass(frozen=True)
class PeerAddress:
    """A validator to dial: its index, libp2p ID and dial address."""

    index: int
    peer: ID
    addr: multiaddr.Multiaddr


class _AckWriter:
    """Acknowledgements of one inbound consensus stream, sent at most every ACK_DELAY_S.

    Acks only let the sender drop frames it keeps for resending after a reconnect, so delaying
    them costs no latency; acking every read instead doubled the frames (each one encrypted and
    sent on its own). At 250 ms rather than 20 ms, each node's CPU at 150 mode-1 queries/s fell
    by a twelfth; the price is up to 250 ms more of frames resent (and dropped as duplicates)
    after a reconnect.
    """

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._latest: tuple[int, int] | None = None
        self._wake = trio.Event()

    def ack(self, upto: tuple[int, int]) -> None:
        self._latest = upto
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await trio.sleep(ACK_DELAY_S)
            self._wake = trio.Event()
            latest, self._latest = self._latest, None
            if latest is not None:
                await self._stream.write(frame(encode(StreamAck(*latest), check=False)))


@dataclass
class _Outbound:
    """Frames for one peer not yet acknowledged, in sequence order."""

    frames: deque[tuple[int, bytes]] = field(default_factory=deque)
    bytes: int = 0
    next_seq: int = 1
    sent_upto: int = 0
    wake: trio.Event = field(default_factory=trio.Event)
    connected: bool = False


class _Gate(INotifee):
    """Closes connections from peers outside the validator set as soon as they are up."""

    def __init__(self, net: PeerNetwork) -> None:
        self._net = net

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            remote = conn.muxed_conn.peer_id
            if self._net.index_of(remote) is None:
                self._net.bad(
                    str(remote),
                    "unknown_peer",
                    "connection from a key outside the validator set closed",
                )
                self._net.spawn(_close_quietly, conn)
            else:
                self._net.refresh_peers()
        except Exception as exc:  # a notifee must never raise into the swarm
            log.warning("connection gate failed: %r", exc)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        try:
            self._net.refresh_peers()
        except Exception as exc:
            log.warning("disconnect bookkeeping failed: %r", exc)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


async def _close_quietly(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception as exc:
        log.debug("closing a refused connection: %r", exc)


async def _reset_quietly(stream: INetStream) -> None:
    try:
        await stream.reset()
    except Exception as exc:
        log.debug("resetting a stream: %r", exc)


class PeerNetwork:
    """The node's libp2p host, consensus links and transaction gossip (see module doc)."""

    def __init__(
        self,
        *,
        identity: Identity,
        chain_id: str,
        validators: Sequence[bytes],
        me: int,
        listen: str,
        peers: Sequence[PeerAddress],
        metrics: NodeMetrics,
        on_message: Callable[[int, bytes], None],
        on_txs: Callable[[int, tuple[bytes, ...]], None],
        on_lookup: Callable[[int, bytes], None] | None = None,
        on_lookup_reply: Callable[[int, bytes], None] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        backoff_ms: tuple[int, int] = (500, 30_000),
        max_msgs_per_peer_per_s: int = 2000,
        gossip_heartbeat_s: float = 1.0,
    ) -> None:
        self.identity = identity
        self.chain_id = chain_id
        self.me = me
        self.metrics = metrics
        self._on_message = on_message
        self._on_txs = on_txs
        self._on_lookup = on_lookup
        self._on_lookup_reply = on_lookup_reply
        self.max_frame_bytes = max_frame_bytes
        self._backoff = backoff_ms
        self._rate = max_msgs_per_peer_per_s
        self._index: dict[str, int] = {peer_id(k): i for i, k in enumerate(validators)}
        self._index.pop(peer_id(validators[me]), None)
        self._listen = multiaddr.Multiaddr(listen)
        self._peers = {p.index: p for p in peers if p.index != me}
        self._out: dict[int, _Outbound] = {i: _Outbound() for i in self._index.values()}
        self._session = secrets.randbits(63) | 1
        self._inbound: dict[int, tuple[int, int]] = {}
        """peer -> (session, last delivered seq) of the frames it sends us."""
        self._partial: dict[int, tuple[int, int, int, bytearray]] = {}
        """peer -> (session, next seq, next part, bytes so far) of a message arriving in parts."""
        self._part_bytes = max(1024, max_frame_bytes - FRAME_OVERHEAD)
        self._buckets: dict[int, TokenBucket] = {}
        self._bad_logged: dict[tuple[str, str], float] = {}
        self._gossip_out: deque[bytes] = deque()
        self._gossip_bytes = 0
        self._gossip_wake = trio.Event()
        self._gossip_since = 0.0
        self._nursery: trio.Nursery | None = None
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._heartbeat = gossip_heartbeat_s
        self.connected_peers: set[int] = set()
        self._sent_log: BinaryIO | None = None
        path = os.environ.get("CREDITNET_SENT_LOG")
        if path:
            # Audit aid: every payload this node hands to the network (consensus messages, gossip,
            # lookups, lookup replies), length-prefixed, appended. Tests read it to prove that no
            # replica signed two values for one slot and that no record travels in the clear.
            self._sent_log = open(path, "ab")  # noqa: SIM115 - lives as long as the node
        self.listen_addrs: list[str] = []
        self.primary: Callable[[], int] | None = None
        """The validator new transactions go to: the replica's current primary (None: all)."""

    # --- lookups ------------------------------------------------------------------------------

    def index_of(self, remote: ID) -> int | None:
        """The validator index of ``remote``, or None for a stranger (and for ourselves)."""
        return self._index.get(remote.to_base58())

    def refresh_peers(self) -> None:
        host = self._host
        if host is None:
            return
        up = set()
        for pid, conns in host.get_network().get_connections_map().items():
            i = self.index_of(pid)
            if i is not None and conns:
                up.add(i)
        self.connected_peers = up
        self.metrics.peers.set(len(up))

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def bad(self, peer: str, reason: str, detail: str) -> None:
        """Count a peer's bad input; log it at most once per peer and reason per interval."""
        self.metrics.p2p_bad_messages.labels(reason).inc()
        now = time.monotonic()
        key = (peer, reason)
        if len(self._bad_logged) > 10_000:  # strangers may come with ever new keys: stay bounded
            self._bad_logged = {
                k: t for k, t in self._bad_logged.items() if now - t < BAD_LOG_INTERVAL_S
            }
        if now - self._bad_logged.get(key, -1e9) >= BAD_LOG_INTERVAL_S:
            self._bad_logged[key] = now
            log.warning("bad input from peer %s: %s (%s)", peer, reason, detail)

    # --- sending ------------------------------------------------------------------------------

    def log_sent(self, payload: bytes) -> None:
        if self._sent_log is not None:
            self._sent_log.write(len(payload).to_bytes(4, "big") + payload)
            self._sent_log.flush()

    def send(
        self, to: int, payload: bytes, kind: str = "consensus", *, logged: bool = False
    ) -> None:
        """Queue ``payload`` for validator ``to``; never blocks or raises (see module doc)."""
        out = self._out.get(to)
        if out is None:
            return
        if kind == "tx_batch" and (
            out.bytes > TX_BATCH_UNACKED_BYTES or len(out.frames) > TX_BATCH_UNACKED_FRAMES
        ):
            self.metrics.p2p_tx_batches_skipped.inc()
            return
        if not logged:
            self.log_sent(payload)
        if len(payload) > MAX_MESSAGE_BYTES_IN_PARTS:
            log.error("a %s message of %d bytes is too long to send; dropped", kind, len(payload))
            self.metrics.p2p_dropped.inc()
            return
        step = self._part_bytes
        parts = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        for n, part in enumerate(parts):
            seq = out.next_seq
            out.next_seq += 1
            fr = StreamFrame(self._session, seq, n, n == len(parts) - 1, part)
            data = frame(encode(fr, check=False))
            out.frames.append((seq, data))
            out.bytes += len(data)
        while len(out.frames) > MAX_UNACKED_FRAMES or out.bytes > MAX_UNACKED_BYTES:
            _, old = out.frames.popleft()
            out.bytes -= len(old)
            self.metrics.p2p_dropped.inc()
        self.metrics.p2p_messages.labels("out", kind).inc()
        out.wake.set()

    def broadcast(
        self, payload: bytes, kind: str = "consensus", to: Sequence[int] | None = None
    ) -> None:
        """Send ``payload`` to every validator (or to those in ``to``)."""
        if (
            kind == "consensus"
            and self._gossip_out
            and self._gossip_bytes + len(payload) <= WRITE_CHUNK_BYTES
            and time.monotonic() - self._gossip_since >= TX_PIGGYBACK_AFTER_S
        ):
            # The batches ride in the same write as this message; a larger queue (a burst, a
            # re-send of stale transactions) waits for the timer rather than delay the message.
            self._flush_txs()
        self.log_sent(payload)
        for i in self._out if to is None else to:
            self.send(i, payload, kind, logged=True)

    def gossip_txs(self, txs: Sequence[bytes], *, everyone: bool = False) -> None:
        """Queue admitted transactions for the next batch to the primary; with ``everyone``,
        send them to every validator now (transactions that stayed pending: see module doc)."""
        if everyone:
            self._send_batches(txs, list(self._out))
            return
        if not self._gossip_out:
            self._gossip_since = time.monotonic()
        for tx in txs:
            self._gossip_out.append(tx)
            self._gossip_bytes += len(tx)
        self._gossip_wake.set()

    # --- service ------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the host until cancelled; ``task_status.started()`` once it listens.

        Errors a peer can cause are contained here; a failure to listen (port taken) raises.
        """
        host = new_libp2p_host(self.identity.seed, self._listen)
        self._host = host
        router = GossipSub(
            protocols=[PROTOCOL_ID_V11],
            degree=min(6, max(1, len(self._index))),
            degree_low=min(4, max(1, len(self._index))),
            degree_high=min(12, max(1, len(self._index))),
            heartbeat_initial_delay=0.1,
            heartbeat_interval=self._heartbeat,  # type: ignore[arg-type]
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
        )
        pubsub = Pubsub(host, router, max_inbound_rpc_size=4 << 20)
        pubsub.counter = time.time_ns()
        self._pubsub = pubsub
        host.get_network().register_notifee(_Gate(self))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            async with (
                background_trio_service(pubsub),
                background_trio_service(router),
                host.run([self._listen]),
            ):
                self.listen_addrs = [str(a) for a in host.get_addrs()]
                host.set_stream_handler(CONSENSUS_PROTOCOL, self._guarded_inbound)
                topic = lookup_topic(self.chain_id)
                pubsub.set_topic_validator(topic, self._validate_gossip, False)
                nursery.start_soon(self._drain_lookups, await pubsub.subscribe(topic))
                nursery.start_soon(self._spread_txs)
                for index in self._out:
                    nursery.start_soon(self._outbound_loop, index)
                task_status.started()
                await trio.sleep_forever()

    # --- outbound links -----------------------------------------------------------------------

    async def _outbound_loop(self, index: int) -> None:
        """Keep one consensus stream to peer ``index`` open and feed it; redial with back-off."""
        addr = self._peers.get(index)
        out = self._out[index]
        delay = self._backoff[0] / 1000
        while True:
            stream: INetStream | None = None
            try:
                if addr is not None:
                    await self._dial(addr)
                    stream = await self._host_or_fail().new_stream(addr.peer, [CONSENSUS_PROTOCOL])
                else:  # no address: wait until the peer dials us, then open our stream back
                    pid = self._peer_id(index)
                    if not self._host_or_fail().get_network().get_connections(pid):
                        await trio.sleep(delay)
                        continue
                    stream = await self._host_or_fail().new_stream(pid, [CONSENSUS_PROTOCOL])
                delay = self._backoff[0] / 1000
                out.connected = True
                out.sent_upto = out.frames[0][0] - 1 if out.frames else out.next_seq - 1
                async with trio.open_nursery() as inner:
                    inner.start_soon(self._read_acks, index, stream, inner.cancel_scope)
                    await self._write_frames(out, stream)
            except Exception as exc:
                log.debug("link to validator %d: %r", index, exc)
            finally:
                out.connected = False
                if stream is not None:
                    await _reset_quietly(stream)
            await trio.sleep(delay)
            delay = min(delay * 2, self._backoff[1] / 1000)

    def _peer_id(self, index: int) -> ID:
        for text, i in self._index.items():
            if i == index:
                return ID.from_base58(text)
        raise KeyError(index)

    def _host_or_fail(self) -> IHost:
        if self._host is None:
            raise RuntimeError("network not started")
        return self._host

    async def _dial(self, addr: PeerAddress) -> None:
        host = self._host_or_fail()
        if host.get_network().get_connections(addr.peer):
            return
        # A failed dial blocks the peer for 60 s: lift that before every redial.
        cast(Any, host.get_network()).unblock_peer(addr.peer)
        with trio.fail_after(10):
            await host.connect(PeerInfo(addr.peer, [addr.addr]))
        self.refresh_peers()

    async def _write_frames(self, out: _Outbound, stream: INetStream) -> None:
        while True:
            if out.frames and out.frames[-1][0] > out.sent_upto:
                chunk: list[bytes] = []
                size = 0
                # Sequence numbers in the queue are consecutive: skip the sent ones by position
                # (islice steps over the frames kept for resending in C, not in a Python loop).
                first = max(0, len(out.frames) - (out.frames[-1][0] - out.sent_upto))
                for seq, data in itertools.islice(out.frames, first, None):
                    chunk.append(data)
                    size += len(data)
                    out.sent_upto = seq
                    if size >= WRITE_CHUNK_BYTES:
                        break
                await stream.write(b"".join(chunk))
            else:
                out.wake = trio.Event()
                await out.wake.wait()

    async def _read_acks(self, index: int, stream: INetStream, scope: trio.CancelScope) -> None:
        out = self._out[index]
        buf = FrameBuffer(1024)
        try:
            while True:
                data = await stream.read(READ_CHUNK)
                if not data:
                    break
                for body in buf.feed(data):
                    ack = decode(body, StreamAck, max_bytes=1024)
                    if ack.session != self._session:
                        continue
                    while out.frames and out.frames[0][0] <= ack.seq:
                        _, old = out.frames.popleft()
                        out.bytes -= len(old)
        except (CodecError, FrameTooLarge) as exc:
            self.bad(str(index), "bad_ack", str(exc))
        except Exception as exc:
            log.debug("ack stream from validator %d ended: %r", index, exc)
        scope.cancel()

    # --- inbound ------------------------------------------------------------------------------

    async def _guarded_inbound(self, stream: INetStream) -> None:
        """Stream handler: a peer's consensus stream. Never raises (a raise kills the host)."""
        try:
            await self._inbound_stream(stream)
        except Exception as exc:
            log.debug("inbound consensus stream ended: %r", exc)
            await _reset_quietly(stream)

    async def _inbound_stream(self, stream: INetStream) -> None:
        remote = stream.muxed_conn.peer_id
        index = self.index_of(remote)
        if index is None:
            self.bad(str(remote), "unknown_peer", "consensus stream from outside the validator set")
            await _reset_quietly(stream)
            return
        bucket = self._buckets.setdefault(index, TokenBucket(self._rate))
        acks = _AckWriter(stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(acks.run)
            try:
                await self._read_frames(stream, index, remote, bucket, acks)
            finally:
                nursery.cancel_scope.cancel()

    async def _read_frames(
        self, stream: INetStream, index: int, remote: ID, bucket: TokenBucket, acks: _AckWriter
    ) -> None:
        buf = FrameBuffer(self.max_frame_bytes)
        while True:
            data = await stream.read(READ_CHUNK)
            if not data:
                return
            try:
                bodies = buf.feed(data)
            except FrameTooLarge as exc:
                self.bad(remote.to_base58(), "oversized", str(exc))
                await _reset_quietly(stream)
                return
            last: tuple[int, int] | None = None
            for body in bodies:
                try:
                    fr = decode(body, StreamFrame, max_bytes=self.max_frame_bytes)
                except CodecError as exc:
                    self.bad(remote.to_base58(), "malformed", str(exc))
                    await _reset_quietly(stream)
                    return
                session, seen = self._inbound.get(index, (0, 0))
                if fr.session != session:
                    session, seen = fr.session, 0
                if fr.seq <= seen:
                    self.metrics.p2p_messages.labels("in", "duplicate").inc()
                    last = (session, seen)
                    continue
                self._inbound[index] = (session, fr.seq)
                last = (session, fr.seq)
                payload = self._reassemble(index, remote, fr)
                if payload is None:
                    continue
                if not bucket.take():
                    self.bad(remote.to_base58(), "rate_limited", "over max_msgs_per_peer_per_s")
                    continue
                if payload[1:2] == _TX_BATCH_TAG:
                    try:
                        batch = decode(payload, TxBatch, max_bytes=TX_BATCH_MAX_BYTES + 64 * 1024)
                    except CodecError as exc:
                        self.bad(remote.to_base58(), "malformed", f"tx batch: {exc}")
                        continue
                    self.metrics.p2p_messages.labels("in", "tx_batch").inc()
                    self._on_txs(index, batch.txs)
                    continue
                if payload[1:2] == _LOOKUP_REPLY_TAG and self._on_lookup_reply is not None:
                    self.metrics.p2p_messages.labels("in", "lookup_reply").inc()
                    self._on_lookup_reply(index, payload)
                    continue
                self.metrics.p2p_messages.labels("in", "consensus").inc()
                self._on_message(index, payload)
            if last is not None:
                acks.ack(last)

    def _reassemble(self, index: int, remote: ID, fr: StreamFrame) -> bytes | None:
        """The whole message once its final part is in; None meanwhile.

        The parts of one message carry consecutive sequence numbers, so a part is accepted only
        right after the previous part of the same message (same session, next seq, next part
        number). Anything else -- an earlier part dropped by an overloaded sender -- discards the
        unfinished message: the replica's retransmission and catch-up recover what it carried.
        """
        if fr.part == 0 and fr.final:
            self._partial.pop(index, None)
            return fr.payload
        partial = self._partial.pop(index, None)
        if fr.part == 0:
            buf = bytearray(fr.payload)
        elif (
            partial is not None
            and partial[0] == fr.session
            and partial[1] == fr.seq
            and partial[2] == fr.part
        ):
            buf = partial[3]
            buf += fr.payload
        else:
            return None
        if len(buf) > MAX_MESSAGE_BYTES_IN_PARTS:
            self.bad(remote.to_base58(), "oversized", f"a message in parts above {len(buf)} bytes")
            return None
        if fr.final:
            return bytes(buf)
        self._partial[index] = (fr.session, fr.seq + 1, fr.part + 1, buf)
        return None

    # --- gossip -------------------------------------------------------------------------------

    def _validate_gossip(self, forwarder: ID, msg: Any) -> bool:
        """Topic validator: validators' messages of sane size only. Never raises."""
        try:
            origin = ID(bytes(msg.from_id))
            ok = self.index_of(forwarder) is not None or forwarder == self._host_or_fail().get_id()
            if not ok or (
                self.index_of(origin) is None and origin != self._host_or_fail().get_id()
            ):
                self.bad(str(forwarder), "unknown_peer", "gossip from outside the validator set")
                return False
            if len(msg.data) > self.max_frame_bytes:
                self.bad(str(forwarder), "oversized", f"gossip message of {len(msg.data)} bytes")
                return False
            return True
        except Exception as exc:
            self.bad("?", "malformed", f"gossip validator: {exc!r}")
            return False

    # --- mode-2 lookups ----------------------------------------------------------------------

    def publish_lookup(self, data: bytes) -> None:
        """Gossip a lookup to every agency (best effort; the asker has a deadline)."""
        self.log_sent(data)
        self.spawn(self._publish_lookup, data)

    async def _publish_lookup(self, data: bytes) -> None:
        try:
            assert self._pubsub is not None
            await self._pubsub.publish(lookup_topic(self.chain_id), data)
            self.metrics.p2p_messages.labels("out", "lookup").inc()
        except Exception as exc:
            log.warning("lookup publish failed: %r", exc)

    async def _drain_lookups(self, sub: Any) -> None:
        me = self._host_or_fail().get_id()
        while True:
            msg = await sub.get()
            try:
                origin = ID(bytes(msg.from_id))
                index = self.index_of(origin)
                if origin == me or index is None or self._on_lookup is None:
                    continue
                self.metrics.p2p_messages.labels("in", "lookup").inc()
                self._on_lookup(index, bytes(msg.data))
            except Exception as exc:
                log.warning("lookup handling failed: %r", exc)

    def send_lookup_reply(self, to: int, data: bytes) -> None:
        """Answer a lookup on the direct, long-lived stream to the asking agency (the same
        acknowledged stream as consensus messages: no stream set-up per reply, no loss)."""
        self.log_sent(data)
        self.send(to, data, "lookup_reply", logged=True)

    async def _spread_txs(self) -> None:
        """Send queued transactions to the primary as TxBatch messages on the acknowledged
        streams, gathering them for at most TX_SPREAD_INTERVAL_S."""
        while True:
            if not self._gossip_out:
                self._gossip_wake = trio.Event()
                await self._gossip_wake.wait()
            await trio.sleep(TX_SPREAD_INTERVAL_S)
            self._flush_txs()

    def _flush_txs(self) -> None:
        """Send the queued transactions now, as TxBatch messages: to the primary, or to every
        validator when they are many (SPREAD_TO_ALL_MIN_TXS) or no ``primary`` is known."""
        txs = self._gossip_out
        self._gossip_out = deque()
        self._gossip_bytes = 0
        if self.primary is None or len(txs) >= SPREAD_TO_ALL_MIN_TXS:
            self._send_batches(txs, list(self._out))
            return
        primary = self.primary()
        if primary != self.me:  # (the primary proposes its own from its mempool)
            self._send_batches(txs, [primary])

    def _send_batches(self, txs: Sequence[bytes], targets: list[int]) -> None:
        """Send ``txs`` to ``targets`` now, as TxBatch messages."""
        try:
            for data in _tx_batches(txs):
                self.broadcast(data, "tx_batch", to=targets)
        except Exception as exc:  # a transaction that cannot be batched must not stop us
            log.warning("transaction batch not sent: %r", exc)
