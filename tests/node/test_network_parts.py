"""The consensus streams' sending side and reassembly: messages longer than a frame reassemble
only in order, never mixed; transaction batches go where they should and never push consensus
frames out."""

from __future__ import annotations

from libp2p.peer.id import ID

from node.metrics import NodeMetrics
from node.network import PeerNetwork
from protocol.crypto import Identity, peer_id
from protocol.wire import StreamFrame

KEYS = [Identity(bytes([i + 1]) * 32) for i in range(4)]
REMOTE = ID.from_base58(peer_id(KEYS[1].public_key))


def network() -> PeerNetwork:
    return PeerNetwork(
        identity=KEYS[0],
        chain_id="creditnet-test",
        validators=[k.public_key for k in KEYS],
        me=0,
        listen="/ip4/127.0.0.1/tcp/0",
        peers=[],
        metrics=NodeMetrics(process=False),
        on_message=lambda sender, data: None,
        on_txs=lambda sender, txs: None,
    )


def frames(session: int, first_seq: int, payload: bytes, size: int) -> list[StreamFrame]:
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [
        StreamFrame(session, first_seq + n, n, n == len(parts) - 1, part)
        for n, part in enumerate(parts)
    ]


def feed(net: PeerNetwork, items: list[StreamFrame]) -> list[bytes]:
    out = []
    for fr in items:
        got = net._reassemble(1, REMOTE, fr)
        if got is not None:
            out.append(got)
    return out


def test_a_message_in_parts_is_delivered_whole_once_its_final_part_arrives() -> None:
    msg = bytes(range(256)) * 40
    assert feed(network(), frames(7, 1, msg, 1000)) == [msg]


def test_parts_of_two_messages_never_combine_when_parts_were_dropped() -> None:
    m1, m2 = b"a" * 5000, b"b" * 5000
    f1, f2 = frames(7, 1, m1, 1000), frames(7, 6, m2, 1000)
    # The sender dropped m1's parts 2..4 and m2's parts 0..1 (overflow): m2's part 2 follows
    # m1's part 1 with the expected part number, but not the expected sequence number.
    assert feed(network(), f1[:2] + f2[2:]) == []


def test_a_new_message_after_an_unfinished_one_is_delivered() -> None:
    m1, m2 = b"a" * 5000, b"b" * 3000
    assert feed(network(), frames(7, 1, m1, 1000)[:3] + frames(7, 4, m2, 1000)) == [m2]


def test_a_single_frame_message_passes_straight_through() -> None:
    assert feed(network(), [StreamFrame(9, 1, 0, True, b"vote")]) == [b"vote"]


def test_transaction_batches_never_push_consensus_frames_out_of_a_slow_peers_buffer() -> None:
    """A peer that is down gathers unacknowledged frames; transaction batches stop being queued
    for it at their own budget, so the consensus frames it will need are kept."""
    from node.network import MAX_UNACKED_BYTES, TX_BATCH_UNACKED_BYTES  # noqa: PLC0415

    net = network()
    consensus = bytes(200_000)
    for _ in range(TX_BATCH_UNACKED_BYTES // len(consensus)):
        net.send(1, consensus)
    held = net._out[1].bytes
    assert TX_BATCH_UNACKED_BYTES - len(consensus) < held < MAX_UNACKED_BYTES
    batch = bytes(100_000)
    for _ in range(3 * MAX_UNACKED_BYTES // len(batch)):
        net.broadcast(batch, "tx_batch")
    # every peer's queue stops growing at the batches' budget (plus the one that crossed it)
    for peer in (1, 2, 3):
        assert net._out[peer].bytes <= TX_BATCH_UNACKED_BYTES + 2 * len(batch)
    assert net.metrics.p2p_tx_batches_skipped._value.get() > 0
    assert net.metrics.p2p_dropped._value.get() == 0
    # no consensus frame was dropped: the first one is still queued
    assert net._out[1].frames[0][0] == 1


def test_many_small_transaction_batches_stop_at_their_share_of_the_frame_limit() -> None:
    """At low load batches are small: the frame count, not the bytes, must stop them."""
    from node.network import MAX_UNACKED_FRAMES, TX_BATCH_UNACKED_FRAMES  # noqa: PLC0415

    net = network()
    net.send(1, b"consensus")
    for _ in range(MAX_UNACKED_FRAMES):
        net.broadcast(b"small batch", "tx_batch")
    assert len(net._out[1].frames) <= TX_BATCH_UNACKED_FRAMES + 1
    assert net.metrics.p2p_tx_batches_skipped._value.get() > 0
    assert net.metrics.p2p_dropped._value.get() == 0
    assert net._out[1].frames[0][0] == 1  # the consensus frame is still queued


def test_waiting_transactions_leave_with_the_next_consensus_broadcast() -> None:
    """Transactions queued a while go out just before a consensus message -- in the same write
    -- rather than on their own at the spreading timer; fresh ones wait for the timer."""
    from node.network import TX_PIGGYBACK_AFTER_S  # noqa: PLC0415
    from protocol.codec import decode  # noqa: PLC0415
    from protocol.wire import TxBatch  # noqa: PLC0415

    net = network()
    net.gossip_txs([b"fresh tx"])
    net.broadcast(b"vote 1")
    assert [len(net._out[i].frames) for i in (1, 2, 3)] == [1, 1, 1]  # the vote alone
    net._gossip_since -= 2 * TX_PIGGYBACK_AFTER_S  # now it has waited
    net.broadcast(b"vote 2")
    for i in (1, 2, 3):
        frames = [decode(data[4:], StreamFrame).payload for _, data in net._out[i].frames]
        assert frames[0] == b"vote 1" and frames[2] == b"vote 2"
        assert decode(frames[1], TxBatch).txs == (b"fresh tx",)
    assert not net._gossip_out
    net.broadcast(b"vote 3", "lookup")  # only consensus broadcasts carry them
    assert len(net._out[1].frames) == 4


async def test_the_writer_sends_exactly_the_unsent_frames_in_order() -> None:
    """Frames kept for resending are skipped by position; after a reconnect (or frames dropped
    at the front) everything still queued goes out again, in order."""
    import trio  # noqa: PLC0415

    class Stream:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.written = trio.Event()

        async def write(self, data: bytes) -> None:
            self.writes.append(data)
            self.written.set()

    net = network()
    out = net._out[1]
    for i in range(10):
        net.send(1, b"m%d" % i)
    datas = [data for _, data in out.frames]

    async def one_write(sent_upto: int) -> bytes:
        out.sent_upto = sent_upto
        stream = Stream()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(net._write_frames, out, stream)
                await stream.written.wait()
                nursery.cancel_scope.cancel()
        assert len(stream.writes) == 1
        return stream.writes[0]

    assert await one_write(6) == b"".join(datas[6:])  # sent up to seq 6: seqs 7..10
    assert out.sent_upto == 10
    assert await one_write(0) == b"".join(datas)  # a reconnect: all of them
    out.frames.popleft()
    out.frames.popleft()  # the two oldest dropped, unsent
    assert await one_write(0) == b"".join(datas[2:])


def test_a_large_transaction_queue_does_not_hold_a_consensus_message_back() -> None:
    """Only a queue that fits in the same write rides with a consensus broadcast; a larger one
    (a burst) waits for the spreading timer."""
    from node.network import TX_PIGGYBACK_AFTER_S, WRITE_CHUNK_BYTES  # noqa: PLC0415

    net = network()
    net.gossip_txs([bytes(60_000)] * (WRITE_CHUNK_BYTES // 60_000 + 1))
    net._gossip_since -= 2 * TX_PIGGYBACK_AFTER_S
    net.broadcast(b"vote")
    assert len(net._out[1].frames) == 1 and net._gossip_out  # the vote alone, the queue kept


def batches(net: PeerNetwork, peer: int) -> list[tuple[bytes, ...]]:
    """The transactions of each TxBatch queued for ``peer``, in order."""
    from protocol.codec import decode  # noqa: PLC0415
    from protocol.wire import TxBatch  # noqa: PLC0415

    out = []
    for _, data in net._out[peer].frames:
        payload = decode(data[4:], StreamFrame).payload
        if payload.startswith(b"vote"):
            continue
        out.append(decode(payload, TxBatch).txs)
    return out


def test_new_transactions_go_to_the_primary_only() -> None:
    """PBFT's request path: the other replicas get them in the primary's pre-prepare."""
    net = network()
    net.primary = lambda: 2
    net.gossip_txs([b"tx 1", b"tx 2"])
    net._flush_txs()
    assert [batches(net, i) for i in (1, 2, 3)] == [[], [(b"tx 1", b"tx 2")], []]


def test_many_new_transactions_go_to_every_validator() -> None:
    """Checked ahead of the pre-prepare by every replica: off the block's critical path."""
    from node.network import SPREAD_TO_ALL_MIN_TXS  # noqa: PLC0415

    net = network()
    net.primary = lambda: 2
    txs = [b"tx %d" % i for i in range(SPREAD_TO_ALL_MIN_TXS)]
    net.gossip_txs(txs)
    net._flush_txs()
    assert [batches(net, i) for i in (1, 2, 3)] == [[tuple(txs)]] * 3


def test_the_primary_keeps_its_own_new_transactions() -> None:
    net = network()
    net.primary = lambda: 0  # this node (me=0): it proposes them from its mempool
    net.gossip_txs([b"tx"])
    net._flush_txs()
    assert [len(net._out[i].frames) for i in (1, 2, 3)] == [0, 0, 0]
    assert not net._gossip_out


def test_pending_transactions_sent_again_go_to_every_validator_at_once() -> None:
    """A primary may lose or leave out a transaction: every replica then holds it pending and
    times the primary out."""
    net = network()
    net.primary = lambda: 2
    net.gossip_txs([b"stale tx"], everyone=True)
    assert [batches(net, i) for i in (1, 2, 3)] == [[(b"stale tx",)]] * 3
    assert not net._gossip_out  # not queued for the primary a second time


def test_waiting_transactions_ride_with_a_consensus_broadcast_to_the_primary_only() -> None:
    from node.network import TX_PIGGYBACK_AFTER_S  # noqa: PLC0415

    net = network()
    net.primary = lambda: 3
    net.gossip_txs([b"tx"])
    net._gossip_since -= 2 * TX_PIGGYBACK_AFTER_S
    net.broadcast(b"vote")
    assert [batches(net, i) for i in (1, 2, 3)] == [[], [], [(b"tx",)]]
    assert [len(net._out[i].frames) for i in (1, 2, 3)] == [1, 1, 2]  # the vote to everyone
