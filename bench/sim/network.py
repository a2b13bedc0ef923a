"""A deterministic discrete-event simulation of a creditnet validator network.

One process, no sockets, no wall clock: a fake clock in milliseconds and a priority queue of
``(time, seq, event)`` entries (``seq`` is a global counter, so equal times run in the order they
were scheduled). Every random choice -- delays, drops, duplicates, Byzantine moves -- comes from
one ``random.Random(seed)``, so a scenario and a seed give the same run every time.

Each node is a real :class:`~protocol.consensus.replica.Replica` plus what its driver would keep:
a persisted key/value map (``Persist`` outputs; ``None`` deletes), the committed chain (block,
bytes, certificate) and the simulated application (``app_hash(h) = h256(app_hash(h-1) +
block_hash)`` from ``app_hash(0) = h256(b"creditnet/sim-app")``). Outputs are carried out in list
order; messages are bytes through the real codec. Usage::

    sim = Simulation(scenarios.build("equivocate", nodes=4, seed=7))
    result = sim.run()
    assert result.safe and result.live, result.report()
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.sim.byzantine import ByzantineBehaviour, ByzantineContext, make_behaviour
from bench.sim.monitor import SafetyMonitor, describe_gaps, liveness_gaps
from bench.sim.scenarios import Scenario
from protocol.block import Block, CommitCertificate, max_faulty
from protocol.codec import encode
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.events import (
    Broadcast,
    CancelTimer,
    Committed,
    Event,
    Executed,
    Output,
    Persist,
    Receive,
    RestoredState,
    Send,
    ServeBlocks,
    SetTimer,
    Start,
    Submit,
    Suspicion,
    TimerFired,
    TimerKind,
    ViewEntered,
)
from protocol.consensus.messages import MAX_BLOCKS_PER_RESPONSE, BlockResponse, CommittedBlock
from protocol.consensus.replica import Replica
from protocol.crypto import Identity, h256

CHAIN_ID = "creditnet-sim"
GENESIS_HASH = h256(b"sim-genesis")
GENESIS_TIME_MS = 0
SIM_APP_GENESIS = h256(b"creditnet/sim-app")
REQUEST_BYTES = 48

ReplicaFactory = Callable[[ReplicaConfig, Identity, RestoredState | None], Replica]


class SimulationError(RuntimeError):
    """A replica raised while handling an event; the message names the run and the event."""


def node_identity(seed: int, index: int) -> Identity:
    """Node ``index``'s key in the run of ``seed`` (different seeds, different key orders)."""
    return Identity(h256(b"creditnet-sim/key/%d/%d" % (seed, index)))


def request_tx(seed: int, request: int) -> bytes:
    """The distinct transaction bytes of client request ``request``."""
    head = b"req-%d-" % request
    return head + h256(b"creditnet-sim/req/%d/%d" % (seed, request))[: REQUEST_BYTES - len(head)]


def next_app_hash(prev: bytes, block_hash: bytes) -> bytes:
    """The simulated application: a hash chain over the committed block hashes."""
    return h256(prev + block_hash)


def _default_factory(
    config: ReplicaConfig, identity: Identity, restored: RestoredState | None
) -> Replica:
    return Replica(config, identity, restored)


# --- queue entries ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Deliver:
    to: int
    sender: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Timer:
    node: int
    kind: TimerKind
    token: int


@dataclass(frozen=True, slots=True)
class _Feedback:
    """An Executed event for ``node``'s incarnation ``incarnation``."""

    node: int
    incarnation: int
    event: Executed


@dataclass(frozen=True, slots=True)
class _NodeAction:
    node: int
    action: str  # "crash" | "restart" | "tick" | "arm-crash-point"


@dataclass(frozen=True, slots=True)
class _Client:
    request: int  # -1: the periodic retry


_QueueEvent = _Deliver | _Timer | _Feedback | _NodeAction | _Client


@dataclass
class SimNode:
    """One validator: its replica (None while crashed) and its durable state."""

    index: int
    identity: Identity
    config: ReplicaConfig
    behaviour: ByzantineBehaviour | None
    replica: Replica | None = None
    persisted: dict[bytes, bytes] = field(default_factory=dict)
    chain: list[tuple[Block, bytes, CommitCertificate]] = field(default_factory=list)
    app_hash: bytes = SIM_APP_GENESIS
    incarnation: int = 0
    timers: dict[TimerKind, int] = field(default_factory=dict)
    requests: set[int] = field(default_factory=set)
    crash_point_armed: bool = False
    crashes: int = 0
    crash_point_hits: int = 0

    @property
    def honest(self) -> bool:
        return self.behaviour is None

    @property
    def running(self) -> bool:
        return self.replica is not None

    def restored_state(self) -> RestoredState | None:
        """What a restart hands the replica: the persisted map and the committed tip."""
        if not self.chain:
            return RestoredState(persisted=dict(self.persisted)) if self.persisted else None
        block, _, cert = self.chain[-1]
        return RestoredState(
            persisted=dict(self.persisted),
            committed_height=block.height,
            committed_hash=block.hash,
            committed_time_ms=block.header.time_ms,
            committed_certificate=cert,
            executed_height=block.height,
            executed_app_hash=self.app_hash,
        )


@dataclass(repr=False)
class SimResult:
    """The outcome of one run; ``summary()`` is the JSON shape of ``bench.simulate``."""

    scenario: Scenario
    sim_ms: int
    messages: int
    view_changes: int
    safety: str
    liveness: str
    liveness_required: bool
    nodes: list[SimNode]
    suspicions: Counter[str]
    crash_point_hits: int
    finished: bool

    @property
    def safe(self) -> bool:
        return self.safety == "ok"

    @property
    def live(self) -> bool:
        """Every request committed by every honest running replica, or not required (more
        than f nodes are faulty at the end)."""
        return self.liveness == "ok" or not self.liveness_required

    def __repr__(self) -> str:
        return f"SimResult({self.report()})"

    def report(self) -> str:
        """A line for an assertion message: the scenario (with its seed) and what went wrong."""
        return (
            f"[{self.scenario.describe()}] safety: {self.safety}; liveness: {self.liveness}; "
            f"sim {self.sim_ms / 1000:.1f}s, {self.messages} messages, "
            f"{self.view_changes} view changes"
        )

    def summary(self) -> dict[str, Any]:
        sc = self.scenario
        replicas = {
            str(n.index): {
                "honest": n.honest,
                "committed": [[b.height, b.hash.hex()] for b, _, _ in n.chain],
                "requests_committed": len(n.requests),
            }
            for n in self.nodes
        }
        return {
            "seed": sc.seed,
            "nodes": sc.nodes,
            "byzantine": list(sc.byzantine_ids),
            "crashed": list(sc.crashed_ids),
            "requests": sc.requests,
            "sim_seconds": round(self.sim_ms / 1000, 3),
            "view_changes": self.view_changes,
            "messages": self.messages,
            "replicas": replicas,
            "safety": self.safety,
            "liveness": self.liveness,
        }


class Simulation:
    """Runs one :class:`Scenario`; see the module docstring."""

    def __init__(self, scenario: Scenario, replica_factory: ReplicaFactory | None = None) -> None:
        scenario.validate()
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.now_ms = 0
        self._queue: list[tuple[int, int, _QueueEvent]] = []
        self._seq = 0
        self._factory = replica_factory or _default_factory
        self.messages = 0
        self.views_entered: set[int] = set()
        self.suspicions: Counter[str] = Counter()
        identities = [node_identity(scenario.seed, i) for i in range(scenario.nodes)]
        self.validators = tuple(ident.public_key for ident in identities)
        byzantine = dict(scenario.byzantine)
        self.nodes = [
            SimNode(i, ident, self._config(i), self._behaviour(byzantine.get(i), i, ident))
            for i, ident in enumerate(identities)
        ]
        self.monitor = SafetyMonitor(
            CHAIN_ID, self.validators, {n.index for n in self.nodes if n.honest}, GENESIS_HASH
        )
        self.txs = [request_tx(scenario.seed, r) for r in range(scenario.requests)]
        self._request_of = {tx: r for r, tx in enumerate(self.txs)}
        self._submitted: list[int] = []
        self._started = False

    # --- setup --------------------------------------------------------------------------------

    def _config(self, index: int) -> ReplicaConfig:
        t = self.scenario.timing
        return ReplicaConfig(
            chain_id=CHAIN_ID,
            validators=self.validators,
            index=index,
            genesis_hash=GENESIS_HASH,
            genesis_time_ms=GENESIS_TIME_MS,
            window=t.window,
            checkpoint_interval=t.checkpoint_interval,
            view_timeout_ms=t.view_timeout_ms,
            view_timeout_max_ms=t.view_timeout_max_ms,
            max_batch_txs=t.max_batch_txs,
            batch_wait_ms=t.batch_wait_ms,
            empty_block_interval_ms=t.empty_block_interval_ms,
            light_load_tx_per_s=t.light_load_tx_per_s,
            light_batch_wait_ms=t.light_batch_wait_ms,
            full_load_tx_per_s=t.full_load_tx_per_s,
            retransmit_ms=t.retransmit_ms,
        )

    def _behaviour(
        self, kind: str | None, index: int, identity: Identity
    ) -> ByzantineBehaviour | None:
        if kind is None:
            return None
        ctx = ByzantineContext(index, identity, CHAIN_ID, self.validators, self.rng, GENESIS_HASH)
        return make_behaviour(kind, ctx)

    def _schedule(self, at_ms: int, event: _QueueEvent) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(at_ms, self.now_ms), self._seq, event))

    def start(self) -> None:
        """Start every node and schedule the clients and the faults (``run`` calls this)."""
        if self._started:
            return
        self._started = True
        sc = self.scenario
        for node in self.nodes:
            self._boot(node, None)
            if node.behaviour is not None and node.behaviour.tick_range_ms is not None:
                self._schedule(self._tick_delay(node), _NodeAction(node.index, "tick"))
        times = sorted(self.rng.randint(0, sc.submit_spread_ms) for _ in range(sc.requests))
        for r, t in enumerate(times):
            self._schedule(t, _Client(r))
        self._schedule(sc.client_retry_ms, _Client(-1))
        for plan in sc.crashes:
            action = "arm-crash-point" if plan.after_persist else "crash"
            self._schedule(plan.at_ms, _NodeAction(plan.node, action))
            if plan.restart_ms is not None:
                self._schedule(plan.restart_ms, _NodeAction(plan.node, "restart"))

    def _tick_delay(self, node: SimNode) -> int:
        assert node.behaviour is not None and node.behaviour.tick_range_ms is not None
        lo, hi = node.behaviour.tick_range_ms
        return self.now_ms + self.rng.randint(lo, hi)

    # --- running ------------------------------------------------------------------------------

    def run(self, until_ms: int | None = None) -> SimResult:
        """Run until every request is committed everywhere it must be (after the last fault),
        or ``until_ms``/``max_sim_seconds`` pass, or a safety violation; return the result."""
        self.start()
        limit = int(self.scenario.max_sim_seconds * 1000)
        if until_ms is not None:
            limit = min(limit, until_ms)
        finished = False
        while self._queue and self._queue[0][0] <= limit:
            at, _, event = heapq.heappop(self._queue)
            self.now_ms = at
            self._dispatch(event)
            if not self.monitor.ok:
                break
            if self._all_done():
                finished = True
                break
        if until_ms is None and not finished and self.monitor.ok:
            self.now_ms = max(self.now_ms, limit)
        return self.result(finished)

    def _dispatch(self, event: _QueueEvent) -> None:
        if isinstance(event, _Deliver):
            node = self.nodes[event.to]
            if node.running:
                if node.behaviour is not None:
                    node.behaviour.observe(event.sender, event.data)
                self._handle(node, Receive(self.now_ms, event.sender, event.data))
        elif isinstance(event, _Timer):
            node = self.nodes[event.node]
            if node.running and node.timers.get(event.kind) == event.token:
                del node.timers[event.kind]
                self._handle(node, TimerFired(self.now_ms, event.kind))
        elif isinstance(event, _Feedback):
            node = self.nodes[event.node]
            if node.running and node.incarnation == event.incarnation:
                self._handle(node, event.event)
        elif isinstance(event, _Client):
            self._client(event.request)
        else:
            self._node_action(event)

    def _node_action(self, event: _NodeAction) -> None:
        node = self.nodes[event.node]
        if event.action == "crash":
            self._crash(node)
        elif event.action == "arm-crash-point":
            node.crash_point_armed = True
        elif event.action == "restart":
            node.crash_point_armed = False
            if not node.running:
                self._boot(node, node.restored_state())
        elif event.action == "tick" and node.behaviour is not None:
            if node.running:
                self._apply(node, node.behaviour.tick(self.now_ms))
            self._schedule(self._tick_delay(node), event)

    def _client(self, request: int) -> None:
        if request >= 0:
            self._submitted.append(request)
            tx = self.txs[request]
            for node in self.nodes:
                if node.running:
                    self._handle(node, Submit(self.now_ms, (tx,)))
            return
        for node in self.nodes:
            missing = tuple(self.txs[r] for r in self._submitted if r not in node.requests)
            if node.running and missing:
                self._handle(node, Submit(self.now_ms, missing))
        self._schedule(self.now_ms + self.scenario.client_retry_ms, _Client(-1))

    def _boot(self, node: SimNode, restored: RestoredState | None) -> None:
        node.incarnation += 1
        node.timers.clear()
        node.replica = self._factory(node.config, node.identity, restored)
        self._handle(node, Start(self.now_ms))

    def _crash(self, node: SimNode) -> None:
        if node.running:
            node.replica = None
            node.timers.clear()
            node.crashes += 1

    def _handle(self, node: SimNode, event: Event) -> None:
        assert node.replica is not None
        try:
            outputs = node.replica.handle(event)
        except Exception as exc:
            raise SimulationError(
                f"[{self.scenario.describe()}] node {node.index} raised at {self.now_ms}ms "
                f"on {type(event).__name__}: {exc!r}"
            ) from exc
        if node.behaviour is not None:
            outputs = node.behaviour.transform(outputs, self.now_ms)
        self._apply(node, outputs)

    def _apply(self, node: SimNode, outputs: list[Output]) -> None:
        """Carry out ``outputs`` in order, as the node's driver would."""
        incarnation = node.incarnation
        for pos, out in enumerate(outputs):
            if node.incarnation != incarnation or not node.running:
                return
            if isinstance(out, Send | Broadcast):
                self._send(node, out)
            elif isinstance(out, Persist):
                if out.value is None:
                    node.persisted.pop(out.key, None)
                else:
                    node.persisted[out.key] = out.value
                if node.crash_point_armed and any(
                    isinstance(o, Send | Broadcast) for o in outputs[pos + 1 :]
                ):
                    node.crash_point_armed = False
                    node.crash_point_hits += 1
                    self._crash(node)
                    return
            elif isinstance(out, SetTimer):
                self._seq += 1
                node.timers[out.timer] = self._seq
                self._schedule(out.at_ms, _Timer(node.index, out.timer, self._seq))
            elif isinstance(out, CancelTimer):
                node.timers.pop(out.timer, None)
            elif isinstance(out, Committed):
                self._commit(node, out)
            elif isinstance(out, ServeBlocks):
                self._serve(node, out)
            elif isinstance(out, Suspicion):
                self.suspicions[out.kind] += 1
            elif isinstance(out, ViewEntered) and node.honest and out.view > 0:
                self.views_entered.add(out.view)

    def _send(self, node: SimNode, out: Send | Broadcast) -> None:
        if node.honest:
            self.monitor.observe_sent(node.index, out.data, self.now_ms)
        targets = (
            [out.to]
            if isinstance(out, Send)
            else [i for i in range(self.scenario.nodes) if i != node.index]
        )
        sc = self.scenario
        lo, hi = sc.delay_ms
        for to in targets:
            if to == node.index or not 0 <= to < sc.nodes:
                continue
            self.messages += 1
            if not self._linked(node.index, to):
                continue
            if sc.drop and self.rng.random() < sc.drop:
                continue
            copies = 2 if sc.duplicate and self.rng.random() < sc.duplicate else 1
            for _ in range(copies):
                self._schedule(
                    self.now_ms + self.rng.randint(lo, hi), _Deliver(to, node.index, out.data)
                )

    def _linked(self, a: int, b: int) -> bool:
        for p in self.scenario.partitions:
            if p.start_ms <= self.now_ms < p.heal_ms:
                ga = next((k for k, g in enumerate(p.groups) if a in g), -1)
                gb = next((k for k, g in enumerate(p.groups) if b in g), -1)
                if ga != gb:
                    return False
        return True

    def _commit(self, node: SimNode, out: Committed) -> None:
        block = out.block
        prev = node.chain[-1][0].hash if node.chain else GENESIS_HASH
        self.monitor.observe_committed(
            node.index,
            block,
            out.block_bytes,
            out.certificate,
            prev_hash=prev,
            expected_height=len(node.chain) + 1,
            now_ms=self.now_ms,
        )
        if block.height != len(node.chain) + 1:
            return  # reported by the monitor; the store refuses it
        node.chain.append((block, out.block_bytes, out.certificate))
        node.app_hash = next_app_hash(node.app_hash, block.hash)
        for tx in block.txs:
            r = self._request_of.get(tx)
            if r is not None:
                node.requests.add(r)
        executed = Executed(self.now_ms, block.height, node.app_hash)
        self._schedule(self.now_ms, _Feedback(node.index, node.incarnation, executed))

    def _serve(self, node: SimNode, out: ServeBlocks) -> None:
        lo = max(1, out.from_height)
        hi = min(out.to_height, len(node.chain), lo + MAX_BLOCKS_PER_RESPONSE - 1)
        if lo > hi:
            return
        blocks = tuple(CommittedBlock(b, c) for b, _, c in node.chain[lo - 1 : hi])
        self._send(node, Send(out.to, encode(BlockResponse(blocks))))

    # --- results ------------------------------------------------------------------------------

    def _all_done(self) -> bool:
        if self.now_ms < self.scenario.faults_end_ms:
            return False
        want = self.scenario.requests
        return all(len(n.requests) == want for n in self.nodes if n.honest and n.running)

    def faulty(self) -> list[int]:
        """Byzantine nodes plus the ones down now."""
        return sorted({n.index for n in self.nodes if not n.honest or not n.running})

    def result(self, finished: bool = False) -> SimResult:
        """The result so far: safety now, liveness of the honest running replicas now."""
        sc = self.scenario
        chains = {n.index: [b.hash for b, _, _ in n.chain] for n in self.nodes if n.honest}
        safety = self.monitor.summary()
        if safety == "ok":
            div = self.monitor.check_prefixes(chains)
            safety = "ok" if div is None else str(div)
        faulty = self.faulty()
        f = max_faulty(sc.nodes)
        gaps = liveness_gaps(
            {n.index: n.requests for n in self.nodes if n.honest and n.running}, sc.requests
        )
        if not gaps:
            liveness = "ok"
        else:
            liveness = f"after {self.now_ms / 1000:.1f}s: {describe_gaps(gaps)}"
            if len(faulty) > f:
                liveness = f"not required ({len(faulty)} faulty > f={f}); {liveness}"
        return SimResult(
            scenario=sc,
            sim_ms=self.now_ms,
            messages=self.messages,
            view_changes=len(self.views_entered),
            safety=safety,
            liveness=liveness,
            liveness_required=len(faulty) <= f,
            nodes=self.nodes,
            suspicions=self.suspicions,
            crash_point_hits=sum(n.crash_point_hits for n in self.nodes),
            finished=finished,
        )


def simulate(scenario: Scenario, replica_factory: ReplicaFactory | None = None) -> SimResult:
    """Run ``scenario`` to its end and return the result."""
    return Simulation(scenario, replica_factory).run()
