"""The driver: inputs before timeouts in a round; its output handling (write ahead before
sending, defer committed-slot clean-up)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import trio
import trio.testing

from node.chain import CommittedWork
from node.driver import Driver, now_ms
from node.metrics import NodeMetrics
from node.storage import BlockStore
from protocol.block import Block, CommitCertificate, CommitVote, make_header
from protocol.codec import encode
from protocol.consensus.events import (
    Broadcast,
    CancelTimer,
    Committed,
    Event,
    Output,
    Persist,
    Receive,
    Send,
    SetTimer,
    Start,
    TimerFired,
    TimerKind,
)
from protocol.consensus.journal import proof_key, vote_key
from protocol.crypto import Identity, h256

CHAIN = "creditnet-test"
KEYS = [Identity(bytes([i + 1]) * 32) for i in range(4)]


@dataclass
class FakeReplica:
    committed_height: int = 0
    view: int = 0
    is_primary: bool = False
    catching_up: bool = False


@dataclass
class FakeNetwork:
    store: BlockStore
    watched: bytes
    sent: list[tuple[int | None, bytes, bool]] = field(default_factory=list)

    def send(self, to: int, data: bytes, kind: str = "consensus") -> None:
        self.sent.append((to, data, self.store.get_consensus(self.watched) is not None))

    def broadcast(self, data: bytes, kind: str = "consensus") -> None:
        self.sent.append((None, data, self.store.get_consensus(self.watched) is not None))


@dataclass
class FakeExecutor:
    pushed: list[CommittedWork] = field(default_factory=list)

    def push(self, work: CommittedWork) -> None:
        self.pushed.append(work)


def make_driver(replica: FakeReplica, watched: bytes) -> tuple[Driver, BlockStore, Any, Any]:
    store = BlockStore.memory(CHAIN)
    net = FakeNetwork(store, watched)
    ex = FakeExecutor()
    d = Driver(
        cast(Any, replica),
        store,
        cast(Any, net),
        cast(Any, ex),
        NodeMetrics(process=False),
        sync_chunk_bytes=64 * 1024,
    )
    return d, store, net, ex


def committed_block(height: int) -> Committed:
    header = make_header(
        chain_id=CHAIN,
        height=height,
        time_ms=1,
        prev_hash=h256(b"prev"),
        txs=[],
        app_height=0,
        app_hash=h256(b"app"),
        view=0,
        proposer=KEYS[0].public_key,
    )
    block = Block(header, ())
    votes = [CommitVote.sign(k, CHAIN, 0, height, block.hash) for k in KEYS[:3]]
    return Committed(block, encode(block), CommitCertificate.from_votes(votes))


async def test_a_vote_is_on_disk_before_any_message_of_its_round_leaves() -> None:
    key = vote_key(b"p", 0, 5)
    d, store, net, _ = make_driver(FakeReplica(), key)
    await d._carry_out([Send(1, b"earlier"), Persist(key, b"digest"), Broadcast(b"vote")])
    assert [s[2] for s in net.sent] == [True, True]
    assert store.get_consensus(key) == b"digest"


async def test_clean_up_of_a_committed_slot_waits_for_its_block_to_be_stored() -> None:
    vote, proof = vote_key(b"c", 0, 3), proof_key(3)
    d, store, _, ex = make_driver(FakeReplica(committed_height=3), vote)
    store.write_consensus({vote: b"d", proof: b"p"})
    await d._carry_out([committed_block(3), Persist(vote, None), Persist(proof, None)])
    assert store.get_consensus(vote) == b"d" and store.get_consensus(proof) == b"p"
    (work,) = ex.pushed
    assert set(work.consensus_deletes) == {vote, proof}


async def test_an_obsolete_proof_above_the_committed_height_is_deleted_at_once() -> None:
    proof = proof_key(9)
    d, store, _, ex = make_driver(FakeReplica(committed_height=3), proof)
    store.write_consensus({proof: b"p"})
    await d._carry_out([Persist(proof, None)])
    assert store.get_consensus(proof) is None
    await d._carry_out([committed_block(4)])
    assert ex.pushed[0].consensus_deletes == ()


@dataclass
class ScriptedReplica(FakeReplica):
    """Answers each kind of event with scripted outputs and records what it was handed."""

    script: dict[type, list[Output]] = field(default_factory=dict)
    seen: list[Event] = field(default_factory=list)
    primary: int = 0

    def handle(self, event: Event) -> list[Output]:
        self.seen.append(event)
        return list(self.script.get(type(event), []))


async def run_one_round(replica: ScriptedReplica, inbox: list[Event]) -> None:
    """Start a driver with ``inbox`` already queued; stop it once it waits for more."""
    d, *_ = make_driver(cast(Any, replica), b"none")
    for ev in inbox:
        d.post(ev)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def test_an_input_waiting_in_the_inbox_cancels_an_expired_timer_before_it_fires() -> None:
    # The node was busy past the view deadline while a commit (progress) waited in its inbox:
    # the commit is handled first and restarts the timer, so no view change starts.
    past = now_ms() - 1
    replica = ScriptedReplica(
        script={
            Start: [SetTimer(TimerKind.VIEW, past)],
            Receive: [CancelTimer(TimerKind.VIEW), SetTimer(TimerKind.VIEW, past + 60_000)],
        }
    )
    await run_one_round(replica, [Receive(0, 1, b"commit")])
    assert [type(e) for e in replica.seen] == [Start, Receive]


async def test_an_expired_timer_fires_after_the_inputs_of_its_round() -> None:
    past = now_ms() - 1
    replica = ScriptedReplica(script={Start: [SetTimer(TimerKind.VIEW, past)]})
    await run_one_round(replica, [Receive(0, 1, b"unrelated")])
    assert [type(e) for e in replica.seen] == [Start, Receive, TimerFired]
    fired = replica.seen[-1]
    assert isinstance(fired, TimerFired) and fired.timer is TimerKind.VIEW
