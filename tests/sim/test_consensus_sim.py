"""Seeded simulations of the PBFT replica: safety and liveness under every fault kind.

Each scenario runs real replicas on the simulated network of :mod:`bench.sim.network` on a fake
clock. A failure prints the scenario (kind, nodes, seed, faults) and the first violation; the
run is reproduced by ``bench.sim.scenarios.build(kind, nodes, seed, requests=REQUESTS)`` and,
once understood, kept in ``test_regressions.py``.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from bench.sim.byzantine import ByzantineContext, ConflictingVotes, Equivocate
from bench.sim.monitor import SafetyMonitor
from bench.sim.network import (
    CHAIN_ID,
    GENESIS_HASH,
    SimResult,
    Simulation,
    node_identity,
    simulate,
)
from bench.sim.scenarios import LIGHT_LOAD, SCENARIO_KINDS, CrashPlan, Scenario, build
from protocol.block import Block, CommitCertificate, CommitVote, make_header
from protocol.codec import decode, encode
from protocol.consensus.events import Broadcast, Send
from protocol.consensus.messages import NewView, Prepare, PreparedProof, PrePrepare, ViewChange
from protocol.crypto import Identity, h256

REQUESTS = 20
SEEDS = {4: range(25), 7: range(15)}
MATRIX = [
    pytest.param(kind, nodes, seed, id=f"{kind}-n{nodes}-s{seed}")
    for nodes, seeds in SEEDS.items()
    for kind in SCENARIO_KINDS
    for seed in seeds
]


@pytest.mark.parametrize(("kind", "nodes", "seed"), MATRIX)
def test_scenario_is_safe_and_live(kind: str, nodes: int, seed: int) -> None:
    result = simulate(build(kind, nodes, seed, requests=REQUESTS))
    assert result.safe, result.report()
    assert result.live, result.report()


@pytest.mark.parametrize(
    ("kind", "nodes", "seed"),
    [pytest.param(k, 4, seed, id=f"{k}-s{seed}") for k in SCENARIO_KINDS for seed in (0, 1)],
)
def test_scenario_with_the_light_load_cadence_is_safe_and_live(
    kind: str, nodes: int, seed: int
) -> None:
    scenario = replace(build(kind, nodes, seed, requests=REQUESTS), timing=LIGHT_LOAD)
    result = simulate(scenario)
    assert result.safe, result.report()
    assert result.live, result.report()


def test_same_seed_gives_the_same_run() -> None:
    scenario = build("mix", 4, 3, requests=10)
    first, second = simulate(scenario).summary(), simulate(scenario).summary()
    assert first == second


def test_fault_free_network_commits_every_request_everywhere() -> None:
    result = simulate(Scenario(nodes=4, seed=11, name="fault-free", requests=REQUESTS))
    assert result.safe and result.live, result.report()
    assert result.view_changes == 0, result.report()
    assert all(len(n.requests) == REQUESTS for n in result.nodes), result.report()


def _crash_point_run(seed: int) -> tuple[Simulation, SimResult]:
    """Node ``seed % 4`` (the view-0 primary for seed 0, 4, ...) stops right after a Persist and
    before the send that follows it, then restarts from what it persisted."""
    rng = random.Random(f"crash-point/{seed}")
    at = rng.randint(50, 800)
    plan = CrashPlan(seed % 4, at, at + rng.randint(200, 1_500), after_persist=True)
    scenario = Scenario(
        nodes=4, seed=seed, name="crash-point", requests=REQUESTS, crashes=(plan,), delay_ms=(1, 20)
    )
    sim = Simulation(scenario)
    return sim, sim.run()


@pytest.mark.parametrize("seed", range(8))
def test_replica_crashed_between_persist_and_send_never_double_signs(seed: int) -> None:
    sim, result = _crash_point_run(seed)
    assert result.crash_point_hits == 1, f"crash point never reached: {result.report()}"
    assert sim.monitor.double_signs == 0, result.report()
    assert result.safe, result.report()


@pytest.mark.parametrize("seed", range(8))
def test_replica_restarted_after_the_crash_point_catches_up(seed: int) -> None:
    _, result = _crash_point_run(seed)
    assert result.live, result.report()


# --- the harness itself: the monitor and the Byzantine rewrites catch what they should ----------

KEYS = [node_identity(0, i) for i in range(4)]
VALIDATORS = tuple(k.public_key for k in KEYS)


def _block(height: int, prev: bytes, txs: tuple[bytes, ...]) -> Block:
    header = make_header(
        chain_id=CHAIN_ID,
        height=height,
        time_ms=height,
        prev_hash=prev,
        txs=txs,
        app_height=height - 1,
        app_hash=h256(b"app"),
        view=0,
        proposer=VALIDATORS[0],
    )
    return Block(header, txs)


def _cert(block: Block, signers: list[Identity]) -> CommitCertificate:
    votes = [CommitVote.sign(k, CHAIN_ID, 0, block.height, block.hash) for k in signers]
    return CommitCertificate.from_votes(votes)


def test_monitor_reports_first_divergence_with_heights_and_nodes() -> None:
    mon = SafetyMonitor(CHAIN_ID, VALIDATORS, {0, 1, 2, 3})
    a, b = _block(1, GENESIS_HASH, (b"a",)), _block(1, GENESIS_HASH, (b"b",))
    for node, blk in ((0, a), (1, b)):
        mon.observe_committed(
            node,
            blk,
            encode(blk),
            _cert(blk, KEYS[:3]),
            prev_hash=GENESIS_HASH,
            expected_height=1,
            now_ms=5,
        )
    assert mon.first_divergence is not None
    assert (mon.first_divergence.height, mon.first_divergence.node_a) == (1, 0)
    assert mon.first_divergence.node_b == 1
    assert "divergence at height 1" in mon.summary()


def test_monitor_refuses_a_certificate_short_of_quorum() -> None:
    mon = SafetyMonitor(CHAIN_ID, VALIDATORS, {0, 1, 2, 3})
    blk = _block(1, GENESIS_HASH, (b"a",))
    mon.observe_committed(
        0,
        blk,
        encode(blk),
        _cert(blk, KEYS[:2]),
        prev_hash=GENESIS_HASH,
        expected_height=1,
        now_ms=5,
    )
    assert "certificate does not verify" in mon.summary()


def test_monitor_catches_an_honest_double_sign_and_ignores_forgeries() -> None:
    mon = SafetyMonitor(CHAIN_ID, VALIDATORS, {0, 1, 2, 3})
    first = Prepare.sign(KEYS[1], CHAIN_ID, 0, 1, h256(b"x"), 1)
    forged = Prepare.sign(KEYS[2], CHAIN_ID, 0, 1, h256(b"y"), 1)  # names 1, signed by 2
    mon.observe_sent(1, encode(first), 1)
    mon.observe_sent(3, encode(forged), 2)
    assert mon.ok
    mon.observe_sent(1, encode(Prepare.sign(KEYS[1], CHAIN_ID, 0, 1, h256(b"z"), 1)), 3)
    assert mon.double_signs == 1 and "double-sign: honest node 1" in mon.summary()


def test_monitor_counts_new_view_reproposals_as_preprepares() -> None:
    mon = SafetyMonitor(CHAIN_ID, VALIDATORS, {0, 1, 2, 3}, GENESIS_HASH)
    blk, other = _block(1, GENESIS_HASH, (b"a",)), _block(1, GENESIS_HASH, (b"b",))
    pp0 = PrePrepare.sign(KEYS[0], CHAIN_ID, 0, blk, 0)
    prepares = tuple(Prepare.sign(KEYS[i], CHAIN_ID, 0, 1, blk.hash, i) for i in (2, 3))
    proof = PreparedProof(pp0, prepares)
    vcs = tuple(ViewChange.sign(KEYS[i], CHAIN_ID, 1, None, (proof,), i) for i in (1, 2, 3))
    sig = PrePrepare.sign(KEYS[1], CHAIN_ID, 1, blk, 1).signature
    mon.observe_sent(1, encode(NewView.sign(KEYS[1], CHAIN_ID, 1, vcs, (sig,), 1)), 1)
    assert mon.ok
    mon.observe_sent(1, encode(PrePrepare.sign(KEYS[1], CHAIN_ID, 1, other, 1)), 2)
    assert mon.double_signs == 1, mon.summary()


def test_equivocating_primary_sends_two_valid_blocks_for_one_slot() -> None:
    ctx = ByzantineContext(0, KEYS[0], CHAIN_ID, VALIDATORS, random.Random(1))
    blk = _block(1, GENESIS_HASH, (b"a", b"b"))
    pp = PrePrepare.sign(KEYS[0], CHAIN_ID, 0, blk, 0)
    sends = Equivocate(ctx).transform([Broadcast(encode(pp))], 0)
    got = [decode(s.data, PrePrepare) for s in sends if isinstance(s, Send)]
    assert sorted(s.to for s in sends if isinstance(s, Send)) == [1, 2, 3]
    assert len({p.digest for p in got}) == 2
    assert all(p.verify(CHAIN_ID, VALIDATORS[0]) and p.seq == 1 for p in got)


def test_conflicting_voter_signs_random_digests_for_some_recipients() -> None:
    ctx = ByzantineContext(2, KEYS[2], CHAIN_ID, VALIDATORS, random.Random(3))
    vote = CommitVote.sign(KEYS[2], CHAIN_ID, 0, 1, h256(b"x"))
    behaviour = ConflictingVotes(ctx)
    digests = set()
    for _ in range(5):
        for s in behaviour.transform([Broadcast(encode(vote))], 0):
            assert isinstance(s, Send)
            v = decode(s.data, CommitVote)
            assert v.verify(CHAIN_ID)
            digests.add(v.block_hash)
    assert h256(b"x") in digests and len(digests) > 2
