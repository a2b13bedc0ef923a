"""Instructions per operation, counted by callgrind: ``python -m bench.instructions [--reps N]``.

This machine's speed drifts: one Ed25519 verification took 51 to 105 us on different days, and
54 to 92 us within one minute on a slow day. A wall-clock figure of one version of the code
cannot be compared with another version's measured at another time; an instruction count can.
Valgrind's callgrind counts the instructions the CPU executes, which do not depend on what else
the host runs: the same code gives the same count within about 1 %.

For each operation a child Python (``--child OP REPS``) builds its inputs, runs the operation
once to warm caches, then ``REPS`` more times; it runs under ``valgrind --tool=callgrind`` twice,
with 0 and with ``--reps`` repetitions, and the difference divided by repetitions x items is the
count per item. The operations are the ones every node runs for every transaction:

- ``tx_decode``: decode one record-commitment transaction (untrusted path, canonicality checked);
- ``query_entry_decode``: decode one query-entry transaction;
- ``query_entry_check``: its stateless admission (decode, the agency's and the lender's
  Ed25519 signatures -- about 85 % of the count);
- ``query_entry_execute``: execute one query entry in a block (consent, balance, fees, audit
  entry), from already-decoded transactions as the node does;
- ``record_commitment_execute``: execute one record commitment likewise;
- ``block_decode``: decode a block, per transaction in it (Merkle root checked);
- ``report_record``: one record of a mode-1 report, per record: decoded from the bytes the
  agency stored (every field and rule checked again) and written into the report's JSON
  (``node.queries.report_body``), as the answering node does for each record it releases;
- ``p2p_round_trip``: a 256-byte message sent over an open libp2p stream (TCP on 127.0.0.1,
  Noise, Yamux, as the nodes use them, with the node's patches of the library) and the same
  bytes echoed back: both ends' work for two consensus-sized messages -- trio's scheduling, the
  locks and buffers of Yamux and Noise, encryption and the system calls. It is what every
  consensus message costs on top of the replica's own work;
- ``http_round_trip``: a lender's request of a signed query's size POSTed over a kept-alive
  HTTP/1.1 connection to the node's HTTP server (``node.http_server``) and an answer
  the size of a mode-1 report, sent as the API sends it: both ends' work -- the load
  generator's client and the server's HTTP layer, without the application's.

Results: ``bench/results/instructions.json`` (instructions per item, and the valgrind version).
Needs ``valgrind`` on the PATH (Debian's package); says so and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.utils import read_exactly
from libp2p.peer.peerinfo import PeerInfo

from bench.load import HttpPool
from bench.results_io import RESULTS_DIR, write_result
from node import (
    http_server,
    network,  # builds hosts as nodes do, with its patches of libp2p installed
)
from node.lookups import ServedRecord
from node.queries import report_body
from node.samples import national_ids, sample_records
from protocol.block import Block
from protocol.codec import decode, encode
from protocol.contract.admission import check_tx
from protocol.contract.memory import MemoryLedger
from protocol.contract.rules import execute_block
from protocol.crypto import Identity, h256
from protocol.genesis import FeeSchedule, Genesis, Validator
from protocol.record import StoredRecord, parse_record, to_stored
from protocol.transactions import (
    CommitmentEntry,
    ConsentGrant,
    QueryEntry,
    QueryRequest,
    RecordCommitment,
    RegisterClient,
    RegisterSubject,
    decode_tx,
)
from protocol.vocabulary import Purpose, QueryMode

CHAIN = "creditnet-instructions"
T0 = 1_700_000_000_000
ITEMS = 100
AGENCY = Identity(b"\x01" * 32)
CLIENT = Identity(b"\x40" * 32)
SUBJECT = Identity(b"\x60" * 32)
PSEUDONYM = h256(b"subject")
GENESIS = Genesis(
    chain_id=CHAIN,
    genesis_time_ms=T0 - 1000,
    validators=tuple(
        Validator(f"agency{i}", Identity(bytes([1 + i]) * 32).public_key, f"/ip4/127.0.0.1/tcp/{i}")
        for i in range(4)
    ),
    pseudonym_salt=b"\x00" * 32,
    fees=FeeSchedule(query_fee=100, exchange_fee=50),
)


def _ledger() -> MemoryLedger:
    """A lender with a deposit, a subject and its consent for loan approval."""
    ledger = MemoryLedger(GENESIS, AGENCY.public_key)
    grant = ConsentGrant(PSEUDONYM, CLIENT.public_key, Purpose.LOAN_APPROVAL, (), T0 + 10**9)
    outcomes = ledger.run(
        ledger.tx(AGENCY, RegisterClient(CLIENT.public_key, "lender", 10**12)),
        ledger.tx(AGENCY, RegisterSubject(PSEUDONYM, SUBJECT.public_key)),
    ).outcomes + ledger.run(ledger.tx(SUBJECT, grant)).outcomes
    if not all(o.ok for o in outcomes):
        raise RuntimeError(f"set-up refused: {[o.detail for o in outcomes if not o.ok]}")
    return ledger


def _query_entries(ledger: MemoryLedger) -> list[bytes]:
    time_ms = ledger.next_time_ms
    return [
        ledger.tx(
            AGENCY,
            QueryEntry(
                QueryRequest.sign(
                    CLIENT,
                    CHAIN,
                    agency=AGENCY.public_key,
                    pseudonym=PSEUDONYM,
                    purpose=Purpose.LOAN_APPROVAL,
                    categories=(),
                    nonce=i,
                    time_ms=time_ms,
                ),
                QueryMode.DIRECT,
                (),
                100,
            ),
        )
        for i in range(ITEMS)
    ]


def _commitments(ledger: MemoryLedger) -> list[bytes]:
    return [
        ledger.tx(AGENCY, RecordCommitment((CommitmentEntry(h256(b"r%d" % i), h256(b"d")),)))
        for i in range(ITEMS)
    ]


def _executing(ledger: MemoryLedger, txs: list[bytes]) -> Callable[[], None]:
    block = ledger.block(txs)
    known = {h256(tx): decode_tx(tx) for tx in txs}

    def run() -> None:
        out = execute_block(GENESIS, ledger.state, block, decoded=known.get)
        assert all(o.ok for o in out.outcomes)

    return run


def _reporting() -> Callable[[], None]:
    """A report of ITEMS stored records (sample records of a few subjects)."""
    stored = [
        encode(to_stored(parse_record(r), GENESIS.pseudonym_salt))
        for i, nid in enumerate(national_ids(7, ITEMS // 10))
        for r in sample_records(nid, count=10, seed=i, furnisher="bank01")
    ][:ITEMS]
    request_hash = h256(b"request")

    def run() -> None:
        served = [
            ServedRecord(decode(data, StoredRecord, canonical=False), 0, 1) for data in stored
        ]
        report_body(request_hash, 0, served)

    return run


def _each(fn: Callable[[bytes], object], items: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        for item in items:
            fn(item)

    return run


P2P_MESSAGE_BYTES = 256
_ECHO = TProtocol("/creditnet/instructions-echo/1")


class _InLoop:
    """A trio loop on a thread of its own that keeps what the subclass's ``_opened`` opens until
    :meth:`close`; each call runs the subclass's ``_round_trips`` (ITEMS of them) in it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(60) or self._failed is not None:
            raise RuntimeError(f"{type(self).__name__} did not start: {self._failed!r}")

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the waiting constructor
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with self._opened():
            self._ready.set()
            await self._stop.wait()

    def _opened(self) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def _round_trips(self) -> None:
        raise NotImplementedError

    def __call__(self) -> None:
        trio.from_thread.run(self._round_trips, trio_token=self._token)

    def close(self) -> None:
        if self._stop is not None and self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


class _P2PPair(_InLoop):
    """Two libp2p hosts with an open stream; each call makes ITEMS round trips of one message
    over it."""

    _stream: INetStream | None = None

    @staticmethod
    def _host(seed: int) -> tuple[IHost, multiaddr.Multiaddr]:
        listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
        return network.new_libp2p_host(bytes([seed]) * 32, listen), listen

    @asynccontextmanager
    async def _opened(self) -> AsyncIterator[None]:
        (server, s_addr), (client, c_addr) = self._host(1), self._host(2)

        async def echo(stream: INetStream) -> None:
            while True:
                data = await read_exactly(stream, P2P_MESSAGE_BYTES)
                await stream.write(data)

        async with server.run([s_addr]), client.run([c_addr]):
            server.set_stream_handler(_ECHO, echo)
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            self._stream = await client.new_stream(server.get_id(), [_ECHO])
            yield
            await self._stream.reset()

    async def _round_trips(self) -> None:
        assert self._stream is not None
        message = bytes(range(256)) * (P2P_MESSAGE_BYTES // 256)
        for _ in range(ITEMS):
            await self._stream.write(message)
            if await read_exactly(self._stream, P2P_MESSAGE_BYTES) != message:
                raise RuntimeError("the echo differs from the message sent")


HTTP_ANSWER = json.dumps({"mode": 1, "sealed_report": "ab" * 700, "audit_tx": "cd" * 32}).encode()
"""An answer the size of a mode-1 report (a few records sealed, hex)."""


async def _answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI application answering every request with HTTP_ANSWER, as the node's API sends
    its JSON answers (head, then body)."""
    while (await receive()).get("more_body"):
        pass
    head = [(b"content-length", str(len(HTTP_ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": HTTP_ANSWER})


class _HttpPair(_InLoop):
    """The node's HTTP server serving :func:`_answer` on 127.0.0.1, and the load generator's
    keep-alive client; each call makes ITEMS requests."""

    _port = 0
    _pool: HttpPool | None = None

    @asynccontextmanager
    async def _opened(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            self._port = await nursery.start(http_server.serve, _answer, "127.0.0.1", 0)
            self._pool = HttpPool()
            yield
            await self._pool.aclose()
            nursery.cancel_scope.cancel()

    async def _round_trips(self) -> None:
        assert self._pool is not None
        request = b'{"request": "' + b"ef" * 180 + b'"}'  # a signed query request's size
        for _ in range(ITEMS):
            status, body = await self._pool.post("127.0.0.1", self._port, "/v1/queries", request)
            if status != 200 or body != HTTP_ANSWER:
                raise RuntimeError(f"the server answered {status} with {len(body)} bytes")


def operation(name: str) -> Callable[[], None]:
    """The operation ``name`` over ITEMS items, its inputs built."""
    if name == "p2p_round_trip":
        return _P2PPair()
    if name == "http_round_trip":
        return _HttpPair()
    ledger = _ledger()
    if name == "tx_decode":
        return _each(decode_tx, _commitments(ledger))
    if name == "query_entry_decode":
        return _each(decode_tx, _query_entries(ledger))
    if name == "query_entry_check":
        return _each(lambda tx: check_tx(CHAIN, tx), _query_entries(ledger))
    if name == "query_entry_execute":
        return _executing(ledger, _query_entries(ledger))
    if name == "record_commitment_execute":
        return _executing(ledger, _commitments(ledger))
    if name == "report_record":
        return _reporting()
    if name == "block_decode":
        return _each(lambda data: decode(data, Block), [encode(ledger.block(_commitments(ledger)))])
    raise ValueError(f"unknown operation {name!r}")


OPERATIONS = (
    "tx_decode",
    "query_entry_decode",
    "query_entry_check",
    "query_entry_execute",
    "record_commitment_execute",
    "block_decode",
    "report_record",
    "p2p_round_trip",
    "http_round_trip",
)


def child(name: str, reps: int) -> None:
    run = operation(name)
    run()  # warm: first-use costs (compiled decoders, caches) stay out of the difference
    gc.collect()
    gc.disable()  # collections come when allocation counts say, not per item: kept out
    for _ in range(reps):
        run()
    close = getattr(run, "close", None)
    if close is not None:
        close()  # (the same in both counts: cancels out)


_REFS = re.compile(r"refs:\s*([\d,]+)")


def count(name: str, reps: int) -> int:
    """Instructions callgrind counts for the child with ``reps`` repetitions of ``name``."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        name,
        str(reps),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same string hashes, dict probes, sets
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{name}: valgrind failed ({done.returncode}): {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def _earlier_counts(path: Path) -> dict[str, int]:
    """The counts already in ``path`` (none if it is missing or unreadable): ``--only`` updates
    the operations it names and keeps the others."""
    try:
        counts = json.loads(path.read_text())["figures"]["instructions_per_item"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(counts, dict):
        return {}
    return {k: v for k, v in counts.items() if k in OPERATIONS and isinstance(v, int)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions counted (default 3)")
    ap.add_argument(
        "--only",
        action="append",
        choices=OPERATIONS,
        help="count these operations (the results file keeps its other counts)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "instructions.json")
    ap.add_argument("--child", nargs=2, metavar=("OP", "REPS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if shutil.which("valgrind") is None:
        print("bench.instructions: valgrind is not installed (Debian: apt install valgrind)")
        return 1
    figures: dict[str, Any] = {"items_per_repetition": ITEMS, "repetitions": args.reps}
    per_item: dict[str, int] = _earlier_counts(args.out) if args.only else {}
    for name in args.only or OPERATIONS:
        base, full = count(name, 0), count(name, args.reps)
        per_item[name] = round((full - base) / (args.reps * ITEMS))
        print(f"{name}: {per_item[name]:,} instructions per item", flush=True)
    figures["instructions_per_item"] = per_item
    version = subprocess.run(
        ["valgrind", "--version"], capture_output=True, text=True, check=False
    ).stdout
    figures["valgrind"] = version.strip()
    path = write_result("instructions", figures, args.out)
    print(f"bench.instructions: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
