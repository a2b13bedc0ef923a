"""Load generator: drives a running testnet over its HTTP API and reports throughput and latency.

    python -m bench.load --dir TESTNET_DIR [--nodes 0,1,2,3]
        [--workload commit|query1|query2|mixed] [--rate R | --concurrency C] [--duration S]
        [--batch B] [--timeout T] [--subjects S] [--mix commit=0.8,...] [--samples FILE]

``commit``: record-commitment transactions (one entry each, a fresh record ref per transaction),
signed by the agencies whose homes are in the testnet directory (``node<i>/node.key``, chain id
from ``node<i>/genesis.json``, API address from ``node<i>/config.toml``). Batch k goes to the k-th
listed node round robin and is signed by that node's agency (an agency submits its own
commitments to its own node), posted as ``POST /v1/txs?wait=commit``.

``query1`` / ``query2``: signed lender queries (``POST /v1/queries``) answered in mode 1 (from
the asked agency's own records) or mode 2 (forwarded to the agencies holding them); the setup
(subjects, records, lenders, consents through the operators' API) runs before the timed phase.
See :mod:`bench.query_load`. ``--duration`` is at most 240 s for them (requests are signed before
the timed phase; a node refuses one more than 5 minutes old); "committed" counts queries
answered in the workload's mode with a sealed report, latency is send to answer.

``mixed``: the three at once, sharing the offered load by ``--mix``; the report adds
``"by_kind"``, each kind's own report. ``--concurrency C`` runs a closed loop instead of the
open loop below (C requests in flight, each sent when one is answered; ``commit`` batches are
signed before the timed phase too, up to :data:`CLOSED_LOOP_PRESIGN_PER_S` transactions per
second of the run, and signed as they are sent beyond that). ``--samples FILE``
writes every committed item's answer time and latency (the runner's CDFs and timelines). See
:mod:`bench.workloads`.

Open loop: every transaction is signed and every request body encoded before the timed phase;
then batches are launched on a fixed schedule (``rate`` tx/s, batch k due once the transactions
before it are due) whatever the answers do, many in flight at once. The latency of a transaction
is the time from its batch's send to the answer saying it is committed. A transaction refused
(by admission, a full mempool or a ledger rule), not answered within ``--timeout`` seconds, or
lost to an HTTP or connection error counts as failed; no error stops the run. ``per_s`` is the
committed transactions divided by the wall time from the first send to the last answer.

Prints one JSON object on stdout::

    {"workload": W, "sent": n, "committed": n, "failed": n, "per_s": x,
     "latency_ms": {"p50": a, "p90": b, "p99": c, "max": d}}

(latencies null when nothing was committed). Progress goes to stderr: the marker lines
:data:`START_MARK` and :data:`END_MARK` around the timed phase (``bench.run`` measures the
nodes between them) and one ``bench.load: details {...}`` JSON line (failures by reason, the
largest lag behind the schedule). Exit status 0 when the run finished, 1 when the testnet
directory cannot be used, 2 for bad arguments.

The HTTP client is a small HTTP/1.1 one on trio sockets (:class:`HttpPool`): one connection per
request in flight (at most :data:`MAX_CONNECTIONS`), kept alive and reused once answered, so
the generator stays cheap and on schedule with hundreds of ``?wait=commit`` requests waiting at
once (httpx's AsyncClient, tried first, used ~25 ms of CPU per request in that state and fell
up to a second behind the schedule even on an idle machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.config import ConfigError, load_config, split_host_port
from node.keyfile import KeyFileError, load_key
from protocol.codec import encode
from protocol.crypto import Identity, h256
from protocol.genesis import loads_genesis
from protocol.transactions import CommitmentEntry, RecordCommitment, Transaction

WORKLOADS = ("commit", "query1", "query2", "mixed")
DEFAULT_RATE = 1000.0
DEFAULT_DURATION = 10.0
DEFAULT_BATCH = 100
MAX_QUERY_DURATION_S = 240.0
"""query1/query2: requests are signed before the timed phase; a node refuses them 5 min later."""
DEFAULT_TIMEOUT = 40.0
"""Seconds a batch may take: above the node's own ``api.wait_commit_timeout_ms`` (30 s), so the
node's 504 answer, not our timer, normally reports a batch that did not commit."""
CLOSED_LOOP_PRESIGN_PER_S = 4000
"""Closed loop, ``commit``: transactions signed before the timed phase, per second of it -- more
than 4 nodes commit on this project's machine, so signing (~35 us a transaction) does not take
the nodes' CPU during the run, as it would not if the agencies' clients ran elsewhere."""
MAX_BATCH = 5000
"""The API's limit of transactions per request (``node.api.MAX_TXS_PER_REQUEST``)."""
MAX_CONNECTIONS = 4096
"""HTTP connections open at most (fewer if the open-files limit is low); a request beyond waits
for a free one, and that wait counts in its latency."""
MAX_HEAD_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
START_MARK = "bench.load: timed phase start"
END_MARK = "bench.load: timed phase end"
DETAILS_PREFIX = "bench.load: details "
TXS_PATH = "/v1/txs?wait=commit"


class LoadError(Exception):
    """The testnet directory (or the node list) cannot be used; the message says why."""


@dataclass(frozen=True)
class Target:
    """One node to send to, and the agency that signs what is sent to it."""

    index: int
    host: str
    port: int
    identity: Identity
    chain_id: str

    @property
    def url(self) -> str:
        return (
            f"http://[{self.host}]:{self.port}"
            if ":" in self.host
            else f"http://{self.host}:{self.port}"
        )


@dataclass(frozen=True)
class Batch:
    """One request, ready to post: ``body`` is the JSON ``{"txs": [hex, ...]}``."""

    target: int
    """Position in the target list."""
    body: bytes
    count: int


def parse_nodes(text: str) -> list[int]:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]``; ValueError for anything else (empty, repeated, < 0)."""
    items = [part.strip() for part in text.split(",")]
    if not all(item.isascii() and item.isdigit() for item in items):
        raise ValueError(f"--nodes {text!r}: expected node indexes like 0,1,2,3")
    nodes = [int(item) for item in items]
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"--nodes {text!r}: a node is listed twice")
    return nodes


def node_indexes(directory: Path) -> list[int]:
    """The indexes ``i`` of the ``node<i>`` homes (with a config.toml) under ``directory``."""
    found = []
    for home in directory.glob("node*"):
        suffix = home.name[4:]
        if suffix.isascii() and suffix.isdigit() and (home / "config.toml").is_file():
            found.append(int(suffix))
    return sorted(found)


def load_target(directory: Path, index: int) -> Target:
    """The API URL, agency key and chain id of ``directory/node<index>``."""
    home = directory / f"node{index}"
    try:
        cfg = load_config(home / "config.toml")
        identity = load_key(cfg.resolve(cfg.node_key))
        genesis_path = cfg.resolve(cfg.genesis)
        chain_id = loads_genesis(genesis_path.read_text(encoding="utf-8")).chain_id
        host, port = split_host_port(cfg.api.listen)
    except (ConfigError, KeyFileError, OSError, ValueError) as exc:
        raise LoadError(f"node{index}: {exc}") from None
    if host in ("0.0.0.0", "::"):  # a wildcard listener answers on loopback
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return Target(index, host, port, identity, chain_id)


def load_targets(directory: Path, indexes: Sequence[int] | None) -> list[Target]:
    """The targets of the listed nodes (default: every node of the testnet directory)."""
    if not directory.is_dir():
        raise LoadError(f"{directory}: not a directory (make one with `creditnet testnet`)")
    available = node_indexes(directory)
    if indexes is None:
        indexes = available
        if not indexes:
            raise LoadError(f"{directory}: no node<i>/config.toml found; is it a testnet dir?")
    missing = [i for i in indexes if i not in available]
    if missing:
        raise LoadError(
            f"{directory}: no node{missing[0]}/config.toml (nodes present: "
            f"{', '.join(map(str, available)) or 'none'})"
        )
    targets = [load_target(directory, i) for i in indexes]
    chains = {t.chain_id for t in targets}
    if len(chains) != 1:
        raise LoadError(f"{directory}: the nodes disagree on the chain id ({sorted(chains)})")
    return targets


def commit_batch(
    targets: Sequence[Target], k: int, first: int, count: int, seed: bytes
) -> Batch:
    """Batch ``k``: transactions ``first``..``first+count-1`` for target k mod len(targets),
    signed by its agency. Record refs come from ``seed`` and the transaction's number, so a
    fresh seed gives transactions never seen before."""
    slot = k % len(targets)
    target = targets[slot]
    hexes = []
    for n in range(first, first + count):
        ref = h256(b"bench-load-ref" + target.identity.public_key + seed + n.to_bytes(8, "big"))
        body = RecordCommitment((CommitmentEntry(ref, h256(b"bench-load-digest" + ref)),))
        tx = Transaction.sign(target.identity, target.chain_id, body, nonce=n)
        hexes.append(encode(tx).hex())
    doc = b'{"txs":["' + '","'.join(hexes).encode() + b'"]}'
    return Batch(slot, doc, len(hexes))


def commit_batches(targets: Sequence[Target], total: int, batch: int, seed: bytes) -> list[Batch]:
    """``total`` record-commitment transactions in batches of ``batch`` (the last one maybe
    shorter), batch k for target k mod len(targets) (:func:`commit_batch`)."""
    return [
        commit_batch(targets, k, first, min(batch, total - first), seed)
        for k, first in enumerate(range(0, total, batch))
    ]


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds (nearest rank), all None for no samples."""
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        rank = max(1, math.ceil(q * len(ordered)))
        return round(ordered[rank - 1] * 1000, 1)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


@dataclass
class Tally:
    """What the answers said, added up."""

    sent: int = 0
    committed: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    """Seconds, one entry per committed transaction."""
    done: list[float] = field(default_factory=list)
    """When each entry of ``latencies`` was answered (trio clock), for throughput over time."""
    reasons: Counter[str] = field(default_factory=Counter)
    first_send: float | None = None
    last_answer: float | None = None
    max_lag: float = 0.0
    """Largest delay of a send behind its schedule (the generator itself falling behind)."""
    start_unix: float | None = None
    """Wall-clock time (Unix seconds) of the timed phase's start, to line answers up with the
    nodes' own logs (LevelDB's flushes and compactions, view changes)."""

    def sending(self, count: int, now: float) -> None:
        self.sent += count
        if self.first_send is None:
            self.first_send = now

    def ok(self, latency: float) -> None:
        """Count one committed item answered ``latency`` seconds after its send."""
        self.committed += 1
        self.latencies.append(latency)
        self.done.append(self.last_answer if self.last_answer is not None else 0.0)

    def fail(self, count: int, reason: str) -> None:
        self.failed += count
        self.reasons[reason] += count

    def answer(self, count: int, status: int, doc: Any, latency: float) -> None:
        """Count the ``count`` transactions of a batch from the HTTP answer ``status``/``doc``."""
        results = doc.get("results") if isinstance(doc, dict) else None
        if status != 200 or not isinstance(results, list):
            code = doc.get("error") if isinstance(doc, dict) else None
            self.fail(count, f"http_{status}" + (f":{code}" if isinstance(code, str) else ""))
            return
        for r in results[:count]:
            if not isinstance(r, dict):
                self.fail(1, "bad_response")
            elif r.get("status") == "committed" and r.get("ok", True) is True:
                self.ok(latency)
            elif r.get("status") == "committed":
                self.fail(1, f"rule:{r.get('error', '?')}")
            else:
                self.fail(1, str(r.get("error") or r.get("status") or "bad_response"))
        if len(results) < count:
            self.fail(count - len(results), "bad_response")

    def report(self, workload: str) -> dict[str, Any]:
        """The JSON object the load generator prints."""
        wall = (
            self.last_answer - self.first_send
            if self.first_send is not None and self.last_answer is not None
            else 0.0
        )
        return {
            "workload": workload,
            "sent": self.sent,
            "committed": self.committed,
            "failed": self.failed,
            "per_s": round(self.committed / wall, 1) if wall > 0 else 0.0,
            "latency_ms": percentiles_ms(self.latencies),
        }

    def details(self) -> dict[str, Any]:
        """What the one-object report leaves out: failures by reason, schedule lag, wall time."""
        wall = (
            self.last_answer - self.first_send
            if self.first_send is not None and self.last_answer is not None
            else 0.0
        )
        return {
            "failures": dict(self.reasons.most_common()),
            "max_lag_ms": round(self.max_lag * 1000, 1),
            "wall_s": round(wall, 3),
        }


class HttpError(Exception):
    """The server's answer is not HTTP/1.1 we can read, or the connection closed early."""

    def __init__(self, detail: str, *, received: bool = True) -> None:
        super().__init__(detail)
        self.received = received
        """False when the connection closed before any byte of the answer."""


class _Conn:
    """One keep-alive connection and the bytes read past the last answer."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _more(self, received: bool) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise HttpError("connection closed by the server", received=received)
        self.buf += data

    async def read_response(self) -> tuple[int, bytes, bool]:
        """(status, body, keep-alive) of the next answer (Content-Length, chunked or to EOF)."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise HttpError("response head too long")
            await self._more(received=bool(self.buf))
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        version, _, rest = head[0].partition(" ")
        code = rest.partition(" ")[0]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise HttpError(f"bad status line {head[0][:80]!r}")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        keep = version == "HTTP/1.1" and headers.get("connection") != "close"
        if "chunked" in headers.get("transfer-encoding", ""):
            body = await self._read_chunked()
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_RESPONSE_BYTES:
                raise HttpError(f"response of {length} bytes")
            while len(self.buf) < length:
                await self._more(received=True)
            body = bytes(self.buf[:length])
            del self.buf[:length]
        else:  # the body runs to the end of the connection
            with contextlib.suppress(HttpError):
                while len(self.buf) <= MAX_RESPONSE_BYTES:
                    await self._more(received=True)
            body, keep = bytes(self.buf), False
            self.buf.clear()
        return int(code), body, keep

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                await self._more(received=True)
            size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
            del self.buf[: eol + 2]
            if size == 0:  # trailers end with an empty line
                while (eol := self.buf.find(b"\r\n")) != 0:
                    if eol > 0:
                        del self.buf[: eol + 2]
                    else:
                        await self._more(received=True)
                del self.buf[:2]
                return bytes(body)
            while len(self.buf) < size + 2:
                await self._more(received=True)
            body += self.buf[:size]
            del self.buf[: size + 2]
            if len(body) > MAX_RESPONSE_BYTES:
                raise HttpError("chunked response too large")


class HttpPool:
    """POSTs over keep-alive HTTP/1.1 connections, one per request in flight, per server."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            max_connections = max(1, min(max_connections, soft - 64))
        self._limiter = trio.CapacityLimiter(max_connections)
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def post(self, host: str, port: int, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) and return (status, response body); raises HttpError or OSError
        (trio's stream errors included). A kept-alive connection the server closed meanwhile is
        replaced once, transparently."""
        shown = f"[{host}]" if ":" in host else host
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {shown}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        async with self._limiter:
            idle = self._idle.setdefault((host, port), [])
            while True:
                reused = bool(idle)
                conn = idle.pop() if reused else _Conn(await trio.open_tcp_stream(host, port))
                try:
                    await conn.stream.send_all(head + body)
                    status, data, keep = await conn.read_response()
                except (HttpError, trio.BrokenResourceError, OSError) as exc:
                    await trio.aclose_forcefully(conn.stream)
                    fresh_fail = isinstance(exc, HttpError) and exc.received
                    if reused and not fresh_fail:
                        continue  # the server dropped an idle connection: use a new one
                    raise
                except BaseException:
                    await trio.aclose_forcefully(conn.stream)
                    raise
                if keep:
                    idle.append(conn)
                else:
                    await trio.aclose_forcefully(conn.stream)
                return status, data

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)
        self._idle.clear()


async def timed_post(
    pool: HttpPool,
    target: Target,
    path: str,
    body: bytes,
    count: int,
    tally: Tally,
    timeout: float,
) -> tuple[int, Any, float] | None:
    """Post one request counted as ``count`` sent items; return (status, decoded JSON or None,
    seconds taken), or None after counting the failure (HTTP trouble, timeout). Never raises
    for HTTP trouble."""
    sent_at = trio.current_time()
    tally.sending(count, sent_at)
    status, doc, reason = 0, None, ""
    with trio.move_on_after(timeout) as scope:
        try:
            status, data = await pool.post(target.host, target.port, path, body)
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
        except HttpError as exc:
            reason = f"http_error:{exc}"
        except (trio.BrokenResourceError, OSError) as exc:
            reason = f"error:{type(exc).__name__}"
    done_at = trio.current_time()
    tally.last_answer = done_at if tally.last_answer is None else max(tally.last_answer, done_at)
    if scope.cancelled_caught:
        reason = "timeout"
    if reason:
        tally.fail(count, reason)
        return None
    return status, doc, done_at - sent_at


async def post_batch(
    pool: HttpPool, target: Target, batch: Batch, tally: Tally, timeout: float
) -> None:
    """Post one batch with ``?wait=commit`` and count the answer; never raises for HTTP trouble."""
    got = await timed_post(pool, target, TXS_PATH, batch.body, batch.count, tally, timeout)
    if got is not None:
        tally.answer(batch.count, *got)


async def run_load(
    targets: Sequence[Target],
    batches: Sequence[Batch],
    rate: float,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    announce: bool = False,
) -> Tally:
    """Send ``batches`` open loop at ``rate`` tx/s and wait for every answer (or timeout)."""
    from bench.workloads import CommitStream, open_loop  # noqa: PLC0415 - it imports us

    stream = CommitStream(targets, DEFAULT_BATCH, presigned=list(batches))
    await open_loop([(stream, rate)], timeout=timeout, announce=announce)
    return stream.tally


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, prepare the load (setup, signing), run it and print the JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, required=True, help="testnet directory")
    parser.add_argument("--nodes", default=None, help="node indexes to send to (default: all)")
    parser.add_argument("--workload", choices=WORKLOADS, default="commit")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"open loop: items offered per second (tx/s or queries/s; default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="closed loop instead of --rate: requests in flight, each sent when one is answered",
    )
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="transactions a request")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a request may take"
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=50,
        help="query workloads: subjects set up before the timed phase",
    )
    parser.add_argument(
        "--mix",
        default=None,
        help="mixed: shares of the load, e.g. commit=0.8,query1=0.15,query2=0.05 (the default)",
    )
    parser.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="write each committed item's answer time and latency to this JSON file",
    )
    args = parser.parse_args(argv)
    # (imported here: bench.workloads and bench.query_load import this module)
    from bench.workloads import DEFAULT_MIX, parse_mix  # noqa: PLC0415

    if args.rate is not None and args.concurrency is not None:
        parser.error("--rate (open loop) and --concurrency (closed loop): give one")
    if args.rate is not None and not (args.rate > 0 and math.isfinite(args.rate)):
        parser.error("--rate must be a positive number of items per second")
    if args.concurrency is not None and not 1 <= args.concurrency <= MAX_CONNECTIONS:
        parser.error(f"--concurrency must be 1..{MAX_CONNECTIONS}")
    if not (args.duration > 0 and math.isfinite(args.duration)):
        parser.error("--duration must be a positive number of seconds")
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be 1..{MAX_BATCH} (the API's limit per request)")
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        parser.error("--timeout must be a positive number of seconds")
    if args.workload != "commit" and args.concurrency is None and (
        args.duration > MAX_QUERY_DURATION_S
    ):
        parser.error(
            f"--duration: at most {MAX_QUERY_DURATION_S:g} s for {args.workload} at a --rate "
            "(queries are signed before the timed phase and a node refuses them 5 minutes after)"
        )
    if args.subjects < 1:
        parser.error("--subjects must be at least 1")
    try:
        mix = DEFAULT_MIX if args.mix is None else parse_mix(args.mix)
    except ValueError as exc:
        parser.error(str(exc))
    if args.mix is not None and args.workload != "mixed":
        parser.error("--mix applies to --workload mixed only")
    try:
        indexes = None if args.nodes is None else parse_nodes(args.nodes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rate is None and args.concurrency is None:
        args.rate = DEFAULT_RATE
    try:
        targets = load_targets(args.dir, indexes)
        return _run(args, targets, mix if args.workload == "mixed" else {args.workload: 1.0})
    except LoadError as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.load: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, targets: list[Target], shares: dict[str, float]) -> int:
    """Set up and sign each stream of the workload, drive them, print the report."""
    from bench import workloads as wl  # noqa: PLC0415 - see main
    from bench.query_load import lenders_needed, setup  # noqa: PLC0415

    open_loop = args.rate is not None
    streams: list[tuple[wl.Stream, float]] = []
    totals = []
    for kind, share in shares.items():  # every setup first ...
        rate = args.rate * share if open_loop else None
        # items a stream may send: exact (open loop) or a generous bound for the deposits
        total = (
            max(1, round(rate * args.duration))
            if rate
            else args.concurrency * 200 * round(args.duration + 1)
        )
        stream: wl.Stream
        if kind == "commit":
            stream = wl.CommitStream(targets, args.batch)
        else:
            lenders = lenders_needed(kind, len(targets), rate, args.concurrency)
            plan = setup(args.dir, targets, kind, args.subjects, 2, total, lenders)
            stream = wl.QueryStream(kind, plan, targets[0].chain_id)
        streams.append((stream, rate if rate else share))
        totals.append(total)
    # ... then the signing, right before the timed phase (queries age): every item of an open
    # loop; a closed loop's commit batches up to CLOSED_LOOP_PRESIGN_PER_S (then as they are sent)
    for (stream, rate), total in zip(streams, totals, strict=True):
        started = time.perf_counter()
        if open_loop:
            count, then = total, f"sending at {rate:g}/s"
            stream.presign(count)  # type: ignore[attr-defined]
        elif isinstance(stream, wl.CommitStream):
            count = round(CLOSED_LOOP_PRESIGN_PER_S * args.duration)
            then = "more are signed as they are sent"
            stream.presign(count, complete=False)
        else:
            continue
        print(
            f"bench.load: {stream.kind}: signed {count} items "
            f"({time.perf_counter() - started:.1f} s); {then}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"bench.load: {args.workload} to {', '.join(f'node{t.index}' for t in targets)}, "
        + (
            f"open loop at {args.rate:g}/s"
            if open_loop
            else f"closed loop, {args.concurrency} in flight"
        )
        + f", {args.duration:g} s",
        file=sys.stderr,
        flush=True,
    )
    if open_loop:
        run = partial(wl.open_loop, streams, timeout=args.timeout, announce=True)
    else:
        run = partial(
            wl.closed_loop,
            streams,
            args.concurrency,
            args.duration,
            timeout=args.timeout,
            announce=True,
        )
    start = trio.run(run)
    only = [s for s, _ in streams]
    print(DETAILS_PREFIX + json.dumps(wl.combined_details(only)), file=sys.stderr, flush=True)
    if args.samples is not None:
        args.samples.write_text(json.dumps(wl.samples_doc(only, start)), encoding="utf-8")
    print(json.dumps(wl.combined_report(args.workload, only)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
