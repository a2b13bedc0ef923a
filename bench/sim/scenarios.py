"""What one simulated run looks like: faults, Byzantine nodes, load and replica timing.

A :class:`Scenario` is a frozen value: the same scenario always gives the same run. Build one by
hand, with :func:`build` from a named kind (the test matrix and ``bench.simulate_many``), or with
:func:`from_counts` from counts of faults (``bench.simulate``'s command line); both pick which
nodes misbehave and when from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from protocol.block import max_faulty

BYZANTINE_KINDS = ("equivocate", "silent", "conflicting-votes", "garbage", "replay", "view-storm")
"""The Byzantine behaviours of :mod:`bench.sim.byzantine`, by name."""

SCENARIO_KINDS = (
    *BYZANTINE_KINDS,
    "crash-restart",
    "drop",
    "duplicate",
    "delay",
    "partition",
    "mix",
)
"""The named scenario kinds of :func:`build`: one per fault, plus ``mix``."""


@dataclass(frozen=True)
class Partition:
    """Links between different ``groups`` are cut from ``start_ms`` until ``heal_ms``.

    A node in no group is in a group of its own with every other unlisted node.
    """

    groups: tuple[frozenset[int], ...]
    start_ms: int
    heal_ms: int


@dataclass(frozen=True)
class CrashPlan:
    """Node ``node`` stops at ``at_ms`` (losing timers, in-flight input and unsent output) and,
    unless ``restart_ms`` is None, restarts from its persisted state at ``restart_ms``.

    With ``after_persist`` the crash waits, from ``at_ms`` on, for the first output list in which a
    :class:`~protocol.consensus.events.Persist` is followed by a send: the node stops right after
    that Persist is durable and before the send leaves (the rest of the list is lost).
    """

    node: int
    at_ms: int
    restart_ms: int | None
    after_persist: bool = False


@dataclass(frozen=True)
class ReplicaTiming:
    """The :class:`~protocol.consensus.replica.ReplicaConfig` knobs a scenario sets (short, so
    that many runs fit in a test session)."""

    view_timeout_ms: int = 500
    view_timeout_max_ms: int = 8_000
    batch_wait_ms: int = 5
    retransmit_ms: int = 200
    checkpoint_interval: int = 10
    window: int = 40
    max_batch_txs: int = 1000
    empty_block_interval_ms: int = 0
    light_load_tx_per_s: int = 0
    light_batch_wait_ms: int = 0
    full_load_tx_per_s: int = 0


LIGHT_LOAD = ReplicaTiming(
    batch_wait_ms=60, light_load_tx_per_s=8, light_batch_wait_ms=2, full_load_tx_per_s=16
)
"""The node's cadence in miniature: a long batch wait under load, a short one below 8
transactions a second, in proportion between (a scenario's 20-30 requests cross both lines as
they come and go)."""


@dataclass(frozen=True)
class Scenario:
    """One seeded run: ``nodes`` replicas, faults, ``requests`` client requests."""

    nodes: int
    seed: int
    name: str = "custom"
    requests: int = 30
    byzantine: tuple[tuple[int, str], ...] = ()
    """(node id, behaviour name) pairs."""
    crashes: tuple[CrashPlan, ...] = ()
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: tuple[int, int] = (1, 10)
    partitions: tuple[Partition, ...] = ()
    submit_spread_ms: int = 1_000
    """Requests are first submitted at seeded times in ``[0, submit_spread_ms]``."""
    client_retry_ms: int = 1_000
    """Every this often a client re-submits to each running replica what it has not committed."""
    max_sim_seconds: float = 60.0
    timing: ReplicaTiming = field(default_factory=ReplicaTiming)

    @property
    def f(self) -> int:
        return max_faulty(self.nodes)

    @property
    def byzantine_ids(self) -> tuple[int, ...]:
        return tuple(sorted(i for i, _ in self.byzantine))

    @property
    def crashed_ids(self) -> tuple[int, ...]:
        return tuple(sorted({c.node for c in self.crashes}))

    @property
    def permanently_down(self) -> tuple[int, ...]:
        return tuple(sorted({c.node for c in self.crashes if c.restart_ms is None}))

    @property
    def faults_end_ms(self) -> int:
        """When the last scheduled fault is over (heal, restart or permanent crash)."""
        ends = [p.heal_ms for p in self.partitions]
        for c in self.crashes:
            ends.append(c.restart_ms if c.restart_ms is not None else c.at_ms)
        return max(ends, default=0)

    def describe(self) -> str:
        """A one-line account of the scenario, for assertion messages and reports."""
        parts = [f"scenario={self.name}", f"nodes={self.nodes}", f"seed={self.seed}"]
        parts.append(f"requests={self.requests}")
        if self.byzantine:
            parts.append("byzantine=" + ",".join(f"{i}:{k}" for i, k in self.byzantine))
        for c in self.crashes:
            restart = "never" if c.restart_ms is None else f"{c.restart_ms}ms"
            point = ",after-persist" if c.after_persist else ""
            parts.append(f"crash={c.node}@{c.at_ms}ms->{restart}{point}")
        if self.drop:
            parts.append(f"drop={self.drop:.3f}")
        if self.duplicate:
            parts.append(f"duplicate={self.duplicate:.3f}")
        parts.append(f"delay={self.delay_ms[0]}-{self.delay_ms[1]}ms")
        for p in self.partitions:
            groups = "|".join(",".join(map(str, sorted(g))) for g in p.groups)
            parts.append(f"partition=[{groups}]@{p.start_ms}-{p.heal_ms}ms")
        return " ".join(parts)

    def validate(self) -> None:
        """Raise ValueError for a scenario the simulator cannot run."""
        if self.nodes < 1:
            raise ValueError("nodes: at least 1")
        ids = [i for i, _ in self.byzantine] + [c.node for c in self.crashes]
        if any(not 0 <= i < self.nodes for i in ids):
            raise ValueError("a faulty node id outside 0..nodes-1")
        unknown = sorted({k for _, k in self.byzantine} - set(BYZANTINE_KINDS))
        if unknown:
            raise ValueError(f"unknown Byzantine behaviour(s): {', '.join(unknown)}")
        if len({i for i, _ in self.byzantine}) != len(self.byzantine):
            raise ValueError("a node given two Byzantine behaviours")
        if not 0 <= self.drop < 1 or not 0 <= self.duplicate < 1:
            raise ValueError("drop and duplicate are probabilities below 1")
        lo, hi = self.delay_ms
        if not 0 <= lo <= hi:
            raise ValueError("delay_ms: need 0 <= min <= max")
        for p in self.partitions:
            if not 0 <= p.start_ms < p.heal_ms:
                raise ValueError("partition: need 0 <= start < heal")
        for c in self.crashes:
            if c.restart_ms is not None and c.restart_ms <= c.at_ms:
                raise ValueError("crash: restart must come after the crash")


def _rng(*parts: object) -> random.Random:
    # str seeds are hashed with SHA-512: the same on every run and every machine.
    return random.Random("/".join(str(p) for p in parts))


def random_split(nodes: int, rng: random.Random) -> tuple[frozenset[int], ...]:
    """Two groups: a seeded minority of 1..nodes//2 nodes and the rest."""
    ids = list(range(nodes))
    rng.shuffle(ids)
    k = rng.randint(1, max(1, nodes // 2))
    return (frozenset(ids[:k]), frozenset(ids[k:]))


def _crash_plans(
    victims: list[int], rng: random.Random, *, restart: bool = True, after_persist: bool = False
) -> tuple[CrashPlan, ...]:
    plans = []
    for node in victims:
        at = rng.randint(100, 1_500)
        back = at + rng.randint(300, 3_000) if restart else None
        plans.append(CrashPlan(node, at, back, after_persist))
    return tuple(plans)


def random_timing(seed: int) -> ReplicaTiming:
    """Seeded replica knobs at their edges (windows of 1-5, checkpoints every 1-3 heights,
    one-transaction batches, fast or slow retransmission and view timeouts, a short or long
    batch wait, with or without a light-load wait)."""
    rng = _rng("timing", seed)
    return ReplicaTiming(
        window=rng.choice((1, 2, 3, 5, 40)),
        checkpoint_interval=rng.choice((1, 2, 3, 5, 10)),
        max_batch_txs=rng.choice((1, 2, 3, 1000)),
        retransmit_ms=rng.choice((50, 200, 500)),
        view_timeout_ms=rng.choice((200, 500, 1000)),
        batch_wait_ms=rng.choice((5, 60)),
        light_load_tx_per_s=rng.choice((0, 15, 1_000_000)),
        light_batch_wait_ms=rng.choice((0, 2)),
        full_load_tx_per_s=rng.choice((0, 40)),
    )


def build(kind: str, nodes: int, seed: int, *, requests: int = 30, **overrides: object) -> Scenario:
    """The scenario of ``kind`` (one of :data:`SCENARIO_KINDS`) for ``nodes`` and ``seed``.

    Byzantine kinds make f seeded nodes misbehave (in about half the seeds one of them is the
    primary of view 0; for ``equivocate`` with f >= 2 some seeds make the view-1 primary Byzantine
    too, so that it equivocates on the NewView); ``crash-restart`` crashes f nodes and brings
    them back (half the seeds at the after-persist crash point); ``drop`` loses 10-20 % of
    messages, ``duplicate`` doubles 20-40 %, ``delay`` spreads delivery over 1-50 ms,
    ``partition`` cuts the network in two for a while; ``mix`` combines a Byzantine kind, a
    crash/restart, losses, duplicates, delays and sometimes a partition. ``overrides`` replace
    Scenario fields.
    """
    if kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; choose from {', '.join(SCENARIO_KINDS)}")
    rng = _rng("scenario", kind, nodes, seed)
    f = max_faulty(nodes)
    sc = Scenario(nodes=nodes, seed=seed, name=kind, requests=requests, delay_ms=(1, 20))
    if kind in BYZANTINE_KINDS:
        ids = rng.sample(range(nodes), f)
        if 0 not in ids and rng.random() < 0.5:
            ids[0] = 0  # half the seeds: the view-0 primary misbehaves from the start
        if kind == "equivocate" and f >= 2 and rng.random() < 0.4:
            ids[:2] = [0, 1]  # the view-1 primary too: it equivocates on the NewView
        ids.sort()
        sc = replace(sc, byzantine=tuple((i, kind) for i in ids))
    elif kind == "crash-restart":
        victims = sorted(rng.sample(range(nodes), f))
        sc = replace(sc, crashes=_crash_plans(victims, rng, after_persist=rng.random() < 0.5))
    elif kind == "drop":
        sc = replace(sc, drop=round(rng.uniform(0.10, 0.20), 3))
    elif kind == "duplicate":
        sc = replace(sc, duplicate=round(rng.uniform(0.20, 0.40), 3))
    elif kind == "delay":
        sc = replace(sc, delay_ms=(1, 50))
    elif kind == "partition":
        start = rng.randint(200, 1_500)
        part = Partition(random_split(nodes, rng), start, start + rng.randint(500, 3_000))
        sc = replace(sc, partitions=(part,))
    else:  # mix
        ids = rng.sample(range(nodes), f + 1)
        behaviour = rng.choice(BYZANTINE_KINDS)
        crashes = _crash_plans([ids[-1]], rng, after_persist=rng.random() < 0.5)
        partitions: tuple[Partition, ...] = ()
        if rng.random() < 0.5:
            start = rng.randint(200, 1_500)
            heal = start + rng.randint(500, 2_000)
            partitions = (Partition(random_split(nodes, rng), start, heal),)
        sc = replace(
            sc,
            byzantine=tuple((i, behaviour) for i in sorted(ids[:-1])),
            crashes=crashes,
            drop=round(rng.uniform(0.05, 0.10), 3),
            duplicate=0.05,
            delay_ms=(1, 50),
            partitions=partitions,
        )
    return replace(sc, **overrides)  # type: ignore[arg-type]


def from_counts(
    nodes: int,
    seed: int,
    *,
    byzantine: dict[str, int] | None = None,
    crash: int = 0,
    crash_restart: bool = True,
    drop: float = 0.0,
    duplicate: float = 0.0,
    delay_ms: tuple[int, int] = (1, 10),
    partition_at_ms: int | None = None,
    heal_at_ms: int | None = None,
    requests: int = 30,
    max_sim_seconds: float = 60.0,
    timing: ReplicaTiming | None = None,
) -> Scenario:
    """A scenario from counts of faults; the faulty nodes and crash times come from the seed.

    Byzantine nodes are picked first (in the order of ``byzantine``), then the crashed ones,
    all distinct; exactly as many as asked, never more.
    """
    counts = dict(byzantine or {})
    need = sum(counts.values()) + crash
    if need > nodes:
        raise ValueError(f"{need} faulty nodes asked for, only {nodes} nodes")
    rng = _rng("counts", nodes, seed)
    chosen = rng.sample(range(nodes), need)
    byz: list[tuple[int, str]] = []
    pos = 0
    for kind, count in counts.items():
        byz.extend((i, kind) for i in chosen[pos : pos + count])
        pos += count
    crashes = _crash_plans(sorted(chosen[pos:]), rng, restart=crash_restart)
    partitions: tuple[Partition, ...] = ()
    if partition_at_ms is not None:
        if heal_at_ms is None:
            raise ValueError("a partition needs a heal time")
        partitions = (Partition(random_split(nodes, rng), partition_at_ms, heal_at_ms),)
    sc = Scenario(
        nodes=nodes,
        seed=seed,
        name="cli",
        requests=requests,
        byzantine=tuple(sorted(byz)),
        crashes=crashes,
        drop=drop,
        duplicate=duplicate,
        delay_ms=delay_ms,
        partitions=partitions,
        max_sim_seconds=max_sim_seconds,
        timing=timing or ReplicaTiming(),
    )
    sc.validate()
    return sc
