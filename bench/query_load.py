"""The ``query1`` and ``query2`` workloads of the load generator (``python -m bench.load``).

Setup (before the timed phase, not measured), through the operators' API with the tokens in the
testnet directory (``node<i>/operator.token``):

* ``S`` subjects (``--subjects``, fresh national IDs from a random seed each run, so a run never
  collides with an earlier one on the same testnet), each with its own key, registered with
  ``POST /v1/subjects``;
* sample records (:func:`node.samples.sample_records`, ``--records-per-agency`` a subject and
  agency) loaded with ``POST /v1/records``. ``query1``: every subject's records at every target
  node, so each query is answered from the asked agency's own records (mode 1). ``query2``: the
  subjects are split over the targets; a subject asked at target ``t`` has records at the (up to)
  two agencies that follow ``t`` in the testnet, never at ``t`` itself, so ``t`` must forward
  (mode 2) and pay the exchange fee to each serving agency;
* one lender per target node (``query2``: enough lenders per target that none sends more than
  :data:`LENDER_LOOKUPS_PER_S` queries/s -- the node limits mode-2 lookups per lender), registered
  there (``POST /v1/clients``) with a deposit covering every query it will send (``query_fee``
  + ``exchange_fee`` per possible serving agency);
* a consent grant (``loan_approval``, 30 days), signed by the subject, for every (subject,
  lender) pair the load uses, posted with ``POST /v1/txs?wait=commit``.

Between steps the generator waits until every node of the testnet has applied the same height,
so a node never checks a request against state it has not seen yet.

Timed phase: every :class:`~protocol.transactions.QueryRequest` is signed just before it (fresh
nonce each, ``time_ms`` = the signing time) -- the node refuses requests more than 5 minutes from
its clock, so ``--duration`` is limited to 240 s (``bench.load.MAX_QUERY_DURATION_S``) for these
workloads. Query ``k`` goes to target ``k mod len(targets)``, from that target's lender, about one
of its subjects (round robin), posted as ``POST /v1/queries`` open loop at ``--rate`` queries/s.
Latency = send to answer. An answer counts as committed when it is HTTP 200 with the workload's
mode (1 or 2) and a sealed report; every :data:`VERIFY_EVERY`-th one is also opened with the
lender's key and checked (request hash, records present) -- only a sample, to keep the generator's
CPU for sending. Everything else (a refusal, a wrong mode, a report that does not open, a timeout,
a connection error) counts as failed, by reason, in the details line on stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.load import (
    HttpPool,
    LoadError,
    Tally,
    Target,
    load_targets,
    timed_post,
)
from node import client
from node.config import ConfigError, load_config
from node.samples import national_ids, sample_records
from protocol.codec import encode
from protocol.crypto import CryptoError, Identity
from protocol.genesis import Genesis, loads_genesis
from protocol.pseudonym import pseudonym
from protocol.transactions import ConsentGrant, QueryRequest, Transaction
from protocol.vocabulary import Purpose

QUERIES_PATH = "/v1/queries"
MODES = {"query1": 1, "query2": 2}
DEFAULT_SUBJECTS = 50
DEFAULT_RECORDS = 2
VERIFY_EVERY = 10
"""Open and check every n-th sealed report (the others: mode and presence only)."""
CONSENT_DAYS = 30
DAY_MS = 86_400_000
SETUP_THREADS = 32
SETUP_TIMEOUT_S = 120.0
LENDER_LOOKUPS_PER_S = 10.0
"""query2: queries/s one lender sends at most -- half the node's default per-lender quota of
mode-2 lookups (``queries.lookups_per_client_per_s`` = 20), so the quota is not what limits the
run: a target gets ``ceil(rate / targets / 10)`` lenders, used in turn."""
SERVING_AGENCIES = 2
"""query2: agencies holding a subject's records (the ones after the asked node, in order)."""


class SetupError(LoadError):
    """The setup before the timed phase failed; the message says which step and why."""


def log(text: str) -> None:
    print(f"bench.load: {text}", file=sys.stderr, flush=True)


# --- setup over the operators' API -------------------------------------------------------------


@dataclass(frozen=True)
class Agency:
    """One node of the testnet as the setup uses it: its target, operator token, API URL."""

    target: Target
    token: str


@dataclass(frozen=True)
class Subject:
    national_id: str
    pseudonym: bytes
    identity: Identity


@dataclass
class QueryPlan:
    """What the setup made: targets, their lenders, and the subjects each target is asked about."""

    targets: list[Target]
    lenders: list[list[Identity]]
    """Per target: its lenders (query2: several, to stay under the node's per-lender quota)."""
    subjects: list[list[Subject]]
    """Per target: the subjects its lender asks about."""
    mode: int


def call(url: str, body: Any = None, *, token: str | None = None) -> Any:
    """GET, or POST ``body`` as JSON (:func:`node.client.call`); SetupError for anything but
    2xx."""
    try:
        return client.call(url, body, token=token, timeout=SETUP_TIMEOUT_S)
    except client.ClientError as exc:
        raise SetupError(f"{url}: {exc}") from None


def load_agencies(directory: Path) -> tuple[list[Agency], Genesis]:
    """Every node of the testnet directory with its operator token, and the genesis."""
    targets = load_targets(directory, None)
    agencies = []
    for t in targets:
        home = directory / f"node{t.index}"
        try:
            cfg = load_config(home / "config.toml")
            token = cfg.resolve(cfg.operator_token).read_text(encoding="utf-8").strip()
            genesis = loads_genesis(cfg.resolve(cfg.genesis).read_text(encoding="utf-8"))
        except (ConfigError, OSError, ValueError) as exc:
            raise LoadError(f"node{t.index}: {exc}") from None
        agencies.append(Agency(t, token))
    return agencies, genesis


def fresh_subjects(count: int, salt: bytes) -> list[Subject]:
    """``count`` subjects never seen before (a random seed), adults with a credit file."""
    seed = int.from_bytes(os.urandom(6), "big")
    out: list[Subject] = []
    for nid in national_ids(seed, count * 2):
        try:
            sample_records(nid, count=0, seed=1, furnisher="bench")  # adult check only
        except ValueError:
            continue
        out.append(Subject(nid, pseudonym(nid, salt), Identity.generate()))
        if len(out) == count:
            return out
    raise SetupError(f"could not draw {count} adult subjects")  # pragma: no cover


def parallel(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the jobs on a thread pool; their results in order (the first error is raised)."""
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def wait_same_height(agencies: Sequence[Agency], at_least: int, timeout: float = 60.0) -> int:
    """Wait until every node has applied height ``at_least``; returns the lowest height seen."""
    deadline = time.monotonic() + timeout
    while True:
        heights = [int(call(a.target.url + "/v1/status")["height"]) for a in agencies]
        if min(heights) >= at_least:
            return min(heights)
        if time.monotonic() > deadline:
            raise SetupError(f"nodes did not reach height {at_least} (heights {heights})")
        time.sleep(0.1)


def max_height(agencies: Sequence[Agency]) -> int:
    return max(int(call(a.target.url + "/v1/status")["height"]) for a in agencies)


def holders(workload: str, asked: int, indexes: Sequence[int]) -> list[int]:
    """Node indexes that hold the records of a subject asked at node ``asked``."""
    if workload == "query1":
        return [asked]
    pos = indexes.index(asked)
    n = len(indexes)
    return [indexes[(pos + k) % n] for k in range(1, min(SERVING_AGENCIES, n - 1) + 1)]


def setup(
    directory: Path,
    targets: Sequence[Target],
    workload: str,
    subjects_count: int,
    records_per_agency: int,
    queries: int,
    lenders_per_target: int = 1,
) -> QueryPlan:
    """Subjects, records, lenders and consents for the workload (see module doc)."""
    agencies, genesis = load_agencies(directory)
    by_index = {a.target.index: a for a in agencies}
    indexes = sorted(by_index)
    if workload == "query2" and len(indexes) < 2:
        raise SetupError("query2 needs at least two nodes (a subject's records elsewhere)")
    started = time.perf_counter()
    subjects = fresh_subjects(subjects_count, genesis.pseudonym_salt)
    # Which subjects each target is asked about: all of them (query1), a share (query2).
    if workload == "query1":
        per_target = [list(subjects) for _ in targets]
    else:
        per_target = [subjects[k :: len(targets)] for k in range(len(targets))]
        if any(not group for group in per_target):
            raise SetupError(f"--subjects must be at least the number of targets ({len(targets)})")
    # Records: per holding agency, the JSON lines of the subjects it holds.
    lines: dict[int, list[str]] = {i: [] for i in indexes}
    placed: dict[tuple[int, str], None] = {}  # (holder, national ID), in order, no repeats
    for t, group in zip(targets, per_target, strict=True):
        for s in group:
            for i in holders(workload, t.index, indexes):
                placed[(i, s.national_id)] = None
    for i, nid in placed:
        for r in sample_records(nid, count=records_per_agency, seed=i, furnisher=f"agency-{i}"):
            lines[i].append(json.dumps(r))

    def load_records(i: int) -> dict[str, Any]:
        a = by_index[i]
        body = ("\n".join(lines[i]) + "\n").encode()
        try:
            doc = client.post_records(a.target.url, a.token, body, timeout=SETUP_TIMEOUT_S)
        except client.ClientError as exc:
            raise SetupError(f"node{i}: records: {exc}") from None
        if not isinstance(doc, dict) or doc.get("refused"):
            raise SetupError(f"node{i} refused records: {str(doc.get('errors'))[:300]}")
        return doc

    loads = parallel([partial(load_records, i) for i in indexes if lines[i]])
    stored = sum(int(d.get("stored", 0)) for d in loads)
    # Lenders, one per target, registered at it with a deposit for every query it sends.
    lenders = [[Identity.generate() for _ in range(lenders_per_target)] for _ in targets]
    flat = [(k, who) for k, group in enumerate(lenders) for who in group]
    per_query = genesis.fees.query_fee + genesis.fees.exchange_fee * (len(indexes) - 1)
    deposit = (queries // len(flat) + 100) * per_query

    def register_lender(n: int) -> Any:
        k, who = flat[n]
        a = by_index[targets[k].index]
        body = {"client": who.public_key.hex(), "deposit": deposit, "name": f"bench-{n}"}
        return call(a.target.url + "/v1/clients", body, token=a.token)

    def register_subject(n: int) -> Any:
        a = agencies[n % len(agencies)]
        s = subjects[n]
        body = {"pseudonym": s.pseudonym.hex(), "subject": s.identity.public_key.hex()}
        return call(a.target.url + "/v1/subjects", body, token=a.token)

    parallel(
        [partial(register_lender, n) for n in range(len(flat))]
        + [partial(register_subject, n) for n in range(len(subjects))]
    )
    wait_same_height(agencies, max_height(agencies))
    # Consents: every subject to the lender(s) that ask about it, signed by the subject.
    expires = time.time_ns() // 1_000_000 + CONSENT_DAYS * DAY_MS
    grants: list[str] = []
    nonce = time.time_ns()
    for k, lender in flat:
        for s in per_target[k]:
            body = ConsentGrant(s.pseudonym, lender.public_key, Purpose.LOAN_APPROVAL, (), expires)
            tx = Transaction.sign(s.identity, genesis.chain_id, body, nonce)
            nonce += 1
            grants.append(encode(tx).hex())
    chunks = [grants[k :: len(agencies)] for k in range(len(agencies))]

    def post_grants(k: int) -> Any:
        a = agencies[k]
        doc = call(a.target.url + "/v1/txs?wait=commit", {"txs": chunks[k]})
        results = doc.get("results") if isinstance(doc, dict) else None
        bad = [r for r in results or [] if r.get("status") != "committed" or not r.get("ok")]
        if not isinstance(results, list) or bad:
            raise SetupError(f"node{a.target.index}: consent grants not committed: {bad[:2]}")
        return max(int(r["height"]) for r in results)

    top = max(parallel([partial(post_grants, k) for k in range(len(agencies)) if chunks[k]]))
    wait_same_height(agencies, top)
    log(
        f"setup: {len(subjects)} subjects, {stored} records at "
        f"{', '.join(f'node{i}' for i in indexes if lines[i])}, {len(flat)} lenders "
        f"(deposit {deposit} each), {len(grants)} consents ({time.perf_counter() - started:.1f} s)"
    )
    return QueryPlan(list(targets), lenders, per_target, MODES[workload])


# --- the timed phase ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedQuery:
    target: int
    """Position in the target list (and of its lenders)."""
    lender: int
    """Which of the target's lenders signed it."""
    body: bytes
    request_hash: bytes


def sign_query(plan: QueryPlan, chain_id: str, k: int, nonce_base: int, now_ms: int) -> SignedQuery:
    """Query ``k``: to target k mod T, about its subjects round robin, from its lenders in turn."""
    n = len(plan.targets)
    slot = k % n
    group = plan.subjects[slot]
    turn = k // n
    subject = group[turn % len(group)]
    who = turn % len(plan.lenders[slot])
    req = QueryRequest.sign(
        plan.lenders[slot][who],
        chain_id,
        agency=plan.targets[slot].identity.public_key,
        pseudonym=subject.pseudonym,
        purpose=Purpose.LOAN_APPROVAL,
        categories=(),
        nonce=nonce_base + k,
        time_ms=now_ms,
    )
    body = b'{"request":"' + encode(req).hex().encode() + b'"}'
    return SignedQuery(slot, who, body, req.request_hash)


def nonce_base() -> int:
    """A random start for a run's query nonces (a node refuses a replayed request)."""
    return int.from_bytes(os.urandom(7), "big") << 8


def sign_queries(plan: QueryPlan, chain_id: str, total: int) -> list[SignedQuery]:
    """``total`` requests signed now (:func:`sign_query`)."""
    now_ms = time.time_ns() // 1_000_000
    base = nonce_base()
    return [sign_query(plan, chain_id, k, base, now_ms) for k in range(total)]


def count_answer(
    tally: Tally, plan: QueryPlan, q: SignedQuery, status: int, doc: Any, latency: float, k: int
) -> None:
    """Count one query's answer (see module doc for what counts as committed)."""
    if status != 200 or not isinstance(doc, dict):
        code = doc.get("error") if isinstance(doc, dict) else None
        tally.fail(1, f"http_{status}" + (f":{code}" if isinstance(code, str) else ""))
        return
    mode = doc.get("mode")
    sealed = doc.get("sealed_report")
    if mode != plan.mode:
        tally.fail(1, f"mode_{mode}")
        return
    if not isinstance(sealed, str) or not sealed:
        tally.fail(1, "no_report")
        return
    if k % VERIFY_EVERY == 0:
        try:
            report = json.loads(plan.lenders[q.target][q.lender].unseal(bytes.fromhex(sealed)))
        except (CryptoError, ValueError) as exc:
            tally.fail(1, f"report_not_opened:{type(exc).__name__}")
            return
        if report.get("request_hash") != q.request_hash.hex() or not report.get("records"):
            tally.fail(1, "report_mismatch")
            return
    tally.ok(latency)


async def post_query(
    pool: HttpPool, plan: QueryPlan, q: SignedQuery, k: int, tally: Tally, timeout: float
) -> None:
    """Post one query and count its answer; never raises for HTTP trouble."""
    target = plan.targets[q.target]
    got = await timed_post(pool, target, QUERIES_PATH, q.body, 1, tally, timeout)
    if got is not None:
        status, doc, elapsed = got
        count_answer(tally, plan, q, status, doc, elapsed, k)


def lenders_needed(workload: str, targets: int, rate: float | None, concurrency: int | None) -> int:
    """Lenders per target: query2 keeps each lender under :data:`LENDER_LOOKUPS_PER_S` (the
    node limits mode-2 lookups per lender) -- by the rate (open loop) or by one request in
    flight per lender (closed loop)."""
    if workload != "query2":
        return 1
    if concurrency is not None:
        return max(1, math.ceil(concurrency / targets))
    return max(1, math.ceil((rate or 0.0) / targets / LENDER_LOOKUPS_PER_S))
