"""The PBFT replica driven event by event: refusals, write-ahead votes and restart."""

from __future__ import annotations

from protocol.block import Block, CommitCertificate, CommitVote, make_header
from protocol.codec import decode, encode
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.events import (
    Broadcast,
    Committed,
    Output,
    Persist,
    Receive,
    RestoredState,
    SetTimer,
    Start,
    Submit,
    Suspicion,
    TimerFired,
    TimerKind,
)
from protocol.consensus.messages import (
    BlockResponse,
    CommittedBlock,
    Prepare,
    PrePrepare,
    ViewChange,
)
from protocol.consensus.replica import Replica
from protocol.crypto import Identity, h256

CHAIN = "creditnet-test"
IDS = [Identity(bytes([i + 1]) * 32) for i in range(4)]
KEYS = tuple(i.public_key for i in IDS)
GENESIS = h256(b"genesis")


def config(index: int) -> ReplicaConfig:
    return ReplicaConfig(CHAIN, KEYS, index, GENESIS, 0, view_timeout_ms=1000, batch_wait_ms=5)


def replica(index: int, restored: RestoredState | None = None) -> Replica:
    r = Replica(config(index), IDS[index], restored)
    r.handle(Start(0))
    return r


def block(height: int, txs: tuple[bytes, ...], *, prev: bytes = GENESIS, view: int = 0) -> Block:
    header = make_header(
        chain_id=CHAIN,
        height=height,
        time_ms=1,
        prev_hash=prev,
        txs=txs,
        app_height=0,
        app_hash=GENESIS,
        view=view,
        proposer=KEYS[view % 4],
    )
    return Block(header, txs)


def sent(outputs: list[Output], kind: type) -> list:  # type: ignore[type-arg]
    out = []
    for o in outputs:
        if isinstance(o, Broadcast):
            msg = decode(o.data, max_bytes=1 << 26)
            if isinstance(msg, kind):
                out.append(msg)
    return out


def suspicions(outputs: list[Output]) -> list[Suspicion]:
    return [o for o in outputs if isinstance(o, Suspicion)]


def test_backup_prepares_once_and_flags_an_equivocating_primary() -> None:
    r = replica(1)
    a = PrePrepare.sign(IDS[0], CHAIN, 0, block(1, (b"a",)), 0)
    b = PrePrepare.sign(IDS[0], CHAIN, 0, block(1, (b"b",)), 0)
    out = r.handle(Receive(10, 0, encode(a)))
    assert [p.digest for p in sent(out, Prepare)] == [a.digest]
    # The vote is written ahead of the broadcast that carries it.
    kinds = [type(o).__name__ for o in out]
    assert kinds.index("Persist") < kinds.index("Broadcast")
    out = r.handle(Receive(11, 0, encode(b)))
    assert sent(out, Prepare) == []
    assert [s.kind for s in suspicions(out)] == ["equivocation"]


def test_restarted_replica_never_signs_a_second_digest_for_a_slot() -> None:
    r = replica(1)
    a = PrePrepare.sign(IDS[0], CHAIN, 0, block(1, (b"a",)), 0)
    persisted: dict[bytes, bytes] = {}
    for o in r.handle(Receive(10, 0, encode(a))):
        if isinstance(o, Persist) and o.value is not None:
            persisted[o.key] = o.value
    # Crash before the prepare left; restart from what was persisted.
    again = replica(1, RestoredState(persisted=persisted))
    b = PrePrepare.sign(IDS[0], CHAIN, 0, block(1, (b"b",)), 0)
    assert sent(again.handle(Receive(20, 0, encode(b))), Prepare) == []
    # The same digest may be signed again (it is the same vote).
    fresh = replica(1, RestoredState(persisted=persisted))
    assert [p.digest for p in sent(fresh.handle(Receive(20, 0, encode(a))), Prepare)] == [a.digest]


def test_garbage_and_impersonation_are_suspicions_not_exceptions() -> None:
    r = replica(1)
    out = r.handle(Receive(1, 2, b"\xff\x00garbage"))
    assert [s.kind for s in suspicions(out)] == ["malformed"]
    forged = Prepare.sign(IDS[3], CHAIN, 0, 1, h256(b"x"), 3)
    out = r.handle(Receive(2, 2, encode(forged)))  # replica 2 relays a prepare naming 3
    assert [s.kind for s in suspicions(out)] == ["impersonation"]
    bad_sig = Prepare(0, 1, h256(b"x"), 2, bytes(64))
    out = r.handle(Receive(3, 2, encode(bad_sig)))
    assert [s.kind for s in suspicions(out)] == ["bad-signature"]
    not_primary = PrePrepare.sign(IDS[2], CHAIN, 0, block(1, (b"a",), view=0), 2)
    out = r.handle(Receive(4, 2, encode(not_primary)))
    assert [s.kind for s in suspicions(out)] == ["not-primary"]


def test_one_replica_cannot_drag_others_into_a_far_view() -> None:
    r = replica(1)
    storm = ViewChange.sign(IDS[3], CHAIN, 10**12, None, (), 3)
    r.handle(Receive(5, 3, encode(storm)))
    assert (r.view, r.in_view_change) == (0, False)
    # f+1 = 2 replicas past view 0: join the smallest view both have passed.
    other = ViewChange.sign(IDS[2], CHAIN, 1, None, (), 2)
    out = r.handle(Receive(6, 2, encode(other)))
    assert r.in_view_change and r.vc_target == 1
    assert [vc.new_view for vc in sent(out, ViewChange)] == [1]


def _view_timer(outputs: list[Output]) -> int:
    return [o.at_ms for o in outputs if isinstance(o, SetTimer) and o.timer is TimerKind.VIEW][-1]


def test_view_timeout_backs_off_and_a_lone_replica_does_not_run_ahead() -> None:
    r = replica(2)
    assert _view_timer(r.handle(Submit(0, (b"tx",)))) == 1000
    assert _view_timer(r.handle(TimerFired(1000, TimerKind.VIEW))) == 1000 + 2000
    for sender in (0, 3):  # 2f+1 replicas are changing views: the next timeout may escalate
        r.handle(
            Receive(1500, sender, encode(ViewChange.sign(IDS[sender], CHAIN, 1, None, (), sender)))
        )
    out = r.handle(TimerFired(3000, TimerKind.VIEW))
    assert r.vc_target == 2 and _view_timer(out) == 3000 + 4000
    # Nobody else moved to view 2: re-send the view change and wait instead of running ahead.
    out = r.handle(TimerFired(7000, TimerKind.VIEW))
    assert r.vc_target == 2
    assert [vc.new_view for vc in sent(out, ViewChange)] == [2]


def test_fetched_blocks_need_a_valid_certificate() -> None:
    r = replica(1)
    b1 = block(1, (b"a",))
    votes = [CommitVote.sign(i, CHAIN, 0, 1, b1.hash) for i in IDS[:3]]
    weak = CommitCertificate.from_votes(votes[:2])
    out = r.handle(Receive(5, 2, encode(BlockResponse((CommittedBlock(b1, weak),)))))
    assert [s.kind for s in suspicions(out)] == ["bad-certificate"]
    assert r.committed_height == 0
    good = CommitCertificate.from_votes(votes)
    out = r.handle(Receive(6, 2, encode(BlockResponse((CommittedBlock(b1, good),)))))
    assert [o.block.height for o in out if isinstance(o, Committed)] == [1]
    assert r.committed_height == 1


def test_a_message_handed_over_decoded_is_handled_as_its_bytes_are() -> None:
    """The node's driver passes pre-checked proposals decoded (Receive.decoded); the replica's
    outputs must be the same as for the bytes alone, equivocation checks included."""
    a = PrePrepare.sign(IDS[0], CHAIN, 0, block(1, (b"a",)), 0)
    b = PrePrepare.sign(IDS[0], CHAIN, 0, block(1, (b"b",)), 0)
    plain, handed = replica(1), replica(1)
    for t, pp in ((10, a), (11, b)):
        from_bytes = plain.handle(Receive(t, 0, encode(pp)))
        from_decoded = handed.handle(Receive(t, 0, encode(pp), decode(encode(pp))))
        assert from_bytes == from_decoded
    assert [s.kind for s in suspicions(from_decoded)] == ["equivocation"]
