"""Load generator: drives a running testnet over its HTTP API and reports throughput and latency.

    python -m bench.load --dir TESTNET_DIR [--nodes 0,1,2,3] [--workload commit|query1|query2]
        [--rate R] [--duration S] [--batch B] [--timeout T] [--subjects S]

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
:data:`START_MARK` and :data:`END_MARK` around the timed phase (``bench.cluster`` measures the
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
import os
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

WORKLOADS = ("commit", "query1", "query2")
DEFAULT_RATE = 1000.0
DEFAULT_DURATION = 10.0
DEFAULT_BATCH = 100
MAX_QUERY_DURATION_S = 240.0
"""query1/query2: requests are signed before the timed phase; a node refuses them 5 min later."""
DEFAULT_TIMEOUT = 40.0
"""Seconds a batch may take: above the node's own ``api.wait_commit_timeout_ms`` (30 s), so the
node's 504 answer, not our timer, normally reports a batch that did not commit."""
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


def commit_batches(targets: Sequence[Target], total: int, batch: int, seed: bytes) -> list[Batch]:
    """``total`` record-commitment transactions in batches of ``batch`` (the last one maybe
    shorter), batch k for target k mod len(targets) and signed by its agency. Record refs come
    from ``seed`` and a counter, so a fresh seed gives transactions never seen before."""
    out = []
    for k, start in enumerate(range(0, total, batch)):
        slot = k % len(targets)
        target = targets[slot]
        hexes = []
        for n in range(start, min(total, start + batch)):
            ref = h256(b"bench-load-ref" + target.identity.public_key + seed + n.to_bytes(8, "big"))
            body = RecordCommitment((CommitmentEntry(ref, h256(b"bench-load-digest" + ref)),))
            tx = Transaction.sign(target.identity, target.chain_id, body, nonce=n)
            hexes.append(encode(tx).hex())
        doc = b'{"txs":["' + '","'.join(hexes).encode() + b'"]}'
        out.append(Batch(slot, doc, len(hexes)))
    return out


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
    reasons: Counter[str] = field(default_factory=Counter)
    first_send: float | None = None
    last_answer: float | None = None
    max_lag: float = 0.0
    """Largest delay of a send behind its schedule (the generator itself falling behind)."""

    def sending(self, count: int, now: float) -> None:
        self.sent += count
        if self.first_send is None:
            self.first_send = now

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
                self.committed += 1
                self.latencies.append(latency)
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
    tally = Tally()
    pool = HttpPool()
    try:
        if announce:
            print(START_MARK, file=sys.stderr, flush=True)
        start = trio.current_time()
        due_txs = 0
        async with trio.open_nursery() as nursery:
            for batch in batches:
                due = start + due_txs / rate
                await trio.sleep_until(due)
                tally.max_lag = max(tally.max_lag, trio.current_time() - due)
                nursery.start_soon(post_batch, pool, targets[batch.target], batch, tally, timeout)
                due_txs += batch.count
        if announce:
            print(END_MARK, file=sys.stderr, flush=True)
    finally:
        await pool.aclose()
    return tally


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, pre-sign the load, run it and print the JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, required=True, help="testnet directory")
    parser.add_argument("--nodes", default=None, help="node indexes to send to (default: all)")
    parser.add_argument("--workload", choices=WORKLOADS, default="commit")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="transactions per s")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="transactions a request")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a batch may take"
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=50,
        help="query1/query2: subjects set up before the timed phase",
    )
    args = parser.parse_args(argv)
    if not (args.rate > 0 and math.isfinite(args.rate)):
        parser.error("--rate must be a positive number of transactions per second")
    if not (args.duration > 0 and math.isfinite(args.duration)):
        parser.error("--duration must be a positive number of seconds")
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be 1..{MAX_BATCH} (the API's limit per request)")
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        parser.error("--timeout must be a positive number of seconds")
    if args.workload != "commit" and args.duration > MAX_QUERY_DURATION_S:
        parser.error(
            f"--duration: at most {MAX_QUERY_DURATION_S:g} s for {args.workload} (queries are "
            "signed before the timed phase and a node refuses them 5 minutes after)"
        )
    if args.subjects < 1:
        parser.error("--subjects must be at least 1")
    try:
        indexes = None if args.nodes is None else parse_nodes(args.nodes)
    except ValueError as exc:
        parser.error(str(exc))
    total = max(1, round(args.rate * args.duration))
    try:
        targets = load_targets(args.dir, indexes)
    except LoadError as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 1

    if args.workload != "commit":
        return _run_queries(args, targets)
    started = time.perf_counter()
    batches = commit_batches(targets, total, args.batch, os.urandom(16))
    print(
        f"bench.load: signed {total} transactions in {len(batches)} batches "
        f"({time.perf_counter() - started:.1f} s); sending at {args.rate:g} tx/s to "
        f"{', '.join(f'node{t.index}' for t in targets)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        tally = trio.run(
            partial(run_load, targets, batches, args.rate, timeout=args.timeout, announce=True)
        )
    except KeyboardInterrupt:
        print("bench.load: interrupted", file=sys.stderr)
        return 130
    print(DETAILS_PREFIX + json.dumps(tally.details()), file=sys.stderr, flush=True)
    print(json.dumps(tally.report(args.workload)), flush=True)
    return 0


def _run_queries(args: argparse.Namespace, targets: list[Target]) -> int:
    """``query1``/``query2`` (:mod:`bench.query_load`): setup, timed phase, report."""
    # bench.query_load imports this module (its HTTP client and tally): a cycle at the top
    from bench.query_load import run_workload  # noqa: PLC0415

    try:
        tally = run_workload(
            args.dir,
            targets,
            args.workload,
            rate=args.rate,
            duration=args.duration,
            timeout=args.timeout,
            subjects=args.subjects,
        )
    except LoadError as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.load: interrupted", file=sys.stderr)
        return 130
    print(DETAILS_PREFIX + json.dumps(tally.details()), file=sys.stderr, flush=True)
    print(json.dumps(tally.report(args.workload)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
