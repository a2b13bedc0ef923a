"""The load generator (bench.load): pre-signed batches, answer accounting, its HTTP/1.1 client
and the open-loop run, against small fake servers on 127.0.0.1 (no node needed)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from bench.load import (
    HttpPool,
    LoadError,
    Tally,
    Target,
    commit_batches,
    load_targets,
    main,
    parse_nodes,
    percentiles_ms,
    run_load,
)
from bench.query_load import QueryPlan, Subject, count_answer, holders, sign_queries
from node.testnet import create_testnet
from protocol.crypto import Identity, seal
from protocol.transactions import RecordCommitment, decode_tx

Handler = Callable[[bytes], Awaitable[tuple[bytes, bool]]]
"""Request body -> (raw response bytes after the request, close the connection after it)."""


def http(status: int, doc: object, *, extra: str = "") -> bytes:
    body = json.dumps(doc).encode()
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def committed_answer(body: bytes) -> bytes:
    txs = json.loads(body)["txs"]
    results = [
        {"hash": f"{i:064x}", "status": "committed", "height": 1, "index": i, "ok": True}
        for i in range(len(txs))
    ]
    return http(200, {"results": results})


async def serve(
    nursery: trio.Nursery,
    handler: Handler,
    accepted: list[int],
    closed: trio.MemorySendChannel[None] | None = None,
) -> int:
    """A keep-alive HTTP/1.1 server answering POSTs through ``handler``; returns its port.
    ``closed`` gets one item each time the server has closed a connection."""

    async def conn(stream: trio.SocketStream) -> None:
        accepted.append(1)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                body, buf = buf[:length], buf[length:]
                answer, close = await handler(body)
                await stream.send_all(answer)
                if close:
                    return
        except trio.BrokenResourceError:
            return
        finally:
            await stream.aclose()
            if closed is not None:
                closed.send_nowait(None)

    listeners = await nursery.start(trio.serve_tcp, conn, 0)
    port: int = listeners[0].socket.getsockname()[1]
    return port


def target(port: int, index: int = 0) -> Target:
    return Target(index, "127.0.0.1", port, Identity(bytes([index + 1]) * 32), "bench-test")


# --- arguments, testnet directory, pre-signed batches -------------------------------------------


def test_parse_nodes() -> None:
    assert parse_nodes("0,1,2,3") == [0, 1, 2, 3]
    assert parse_nodes(" 2 ") == [2]
    for bad in ("", "a", "1,,2", "-1", "1,1"):
        with pytest.raises(ValueError):
            parse_nodes(bad)


def test_percentiles() -> None:
    assert percentiles_ms([i / 1000 for i in range(100, 0, -1)]) == {
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
    }
    assert percentiles_ms([]) == {"p50": None, "p90": None, "p99": None, "max": None}


def test_targets_and_batches_from_a_testnet(tmp_path: Path) -> None:
    nodes = create_testnet(tmp_path / "net", 2, base_port=29500, chain_id="bench-chain")
    targets = load_targets(tmp_path / "net", None)
    assert [t.index for t in targets] == [0, 1]
    assert [t.url for t in targets] == ["http://127.0.0.1:29501", "http://127.0.0.1:29511"]
    assert [t.identity.public_key for t in targets] == [n.public_key for n in nodes]
    assert load_targets(tmp_path / "net", [1])[0].index == 1

    batches = commit_batches(targets, 5, 2, b"seed")
    assert [(b.target, b.count) for b in batches] == [(0, 2), (1, 2), (0, 1)]
    refs = set()
    for b in batches:
        hexes = json.loads(b.body)["txs"]
        assert len(hexes) == b.count
        for h in hexes:
            tx = decode_tx(bytes.fromhex(h))
            assert tx.verify("bench-chain")
            assert tx.signer == targets[b.target].identity.public_key
            assert isinstance(tx.body, RecordCommitment) and len(tx.body.entries) == 1
            refs.add(tx.body.entries[0].record_ref)
    assert len(refs) == 5
    other = commit_batches(targets, 5, 2, b"other seed")
    assert other[0].body != batches[0].body


def test_unusable_testnet_directory(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="not a directory"):
        load_targets(tmp_path / "missing", None)
    with pytest.raises(LoadError, match="no node"):
        load_targets(tmp_path, None)
    create_testnet(tmp_path / "net", 1, base_port=29600)
    with pytest.raises(LoadError, match=r"no node3/config\.toml"):
        load_targets(tmp_path / "net", [0, 3])


def test_query_workloads_limit_the_duration(tmp_path: Path) -> None:
    # Requests are signed before the timed phase; a node refuses them 5 minutes later.
    with pytest.raises(SystemExit) as exc:
        main(["--dir", str(tmp_path), "--workload", "query1", "--duration", "241"])
    assert exc.value.code == 2


def test_query_workload_bad_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--dir", str(tmp_path / "nope"), "--workload", "query2", "--duration", "1"]) == 1
    assert capsys.readouterr().out == ""


def test_bad_directory_exit_status(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--dir", str(tmp_path / "nope"), "--duration", "1"]) == 1
    assert capsys.readouterr().out == ""


# --- accounting of answers ----------------------------------------------------------------------


def test_tally_counts_every_outcome() -> None:
    t = Tally()
    t.sending(6, 1.0)
    results = [
        {"status": "committed", "ok": True},
        {"status": "committed", "ok": False, "error": "not_agency"},
        {"status": "refused", "error": "mempool_full"},
        {"status": "pending"},
        "garbage",
    ]
    t.answer(6, 200, {"results": results}, 0.25)
    assert (t.sent, t.committed, t.failed) == (6, 1, 5)
    assert t.latencies == [0.25]
    assert t.reasons == {
        "rule:not_agency": 1,
        "mempool_full": 1,
        "pending": 1,
        "bad_response": 2,  # the garbage item and the missing sixth result
    }
    t.answer(3, 503, {"error": "mempool_full", "detail": "x"}, 0.1)
    t.answer(2, 200, None, 0.1)
    assert t.reasons["http_503:mempool_full"] == 3 and t.reasons["http_200"] == 2
    t.last_answer = 3.0
    report = t.report("commit")
    assert report == {
        "workload": "commit",
        "sent": 6,
        "committed": 1,
        "failed": 10,
        "per_s": 0.5,
        "latency_ms": {"p50": 250.0, "p90": 250.0, "p99": 250.0, "max": 250.0},
    }


# --- the HTTP/1.1 client ------------------------------------------------------------------------


async def test_pool_reuses_connections_and_reads_chunked() -> None:
    accepted: list[int] = []
    answers = [
        http(200, {"n": 1}),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"n"\r\n3;ext=1\r\n: 2\r\n1\r\n}\r\n0\r\nX-Trailer: y\r\n\r\n',
        http(422, {"error": "e"}),
    ]

    async def handler(body: bytes) -> tuple[bytes, bool]:
        return answers.pop(0), False

    async with trio.open_nursery() as nursery:
        port = await serve(nursery, handler, accepted)
        pool = HttpPool()
        assert await pool.post("127.0.0.1", port, "/v1/txs", b"{}") == (200, b'{"n": 1}')
        assert await pool.post("127.0.0.1", port, "/v1/txs", b"{}") == (200, b'{"n": 2}')
        assert await pool.post("127.0.0.1", port, "/v1/txs", b"{}") == (422, b'{"error": "e"}')
        await pool.aclose()
        nursery.cancel_scope.cancel()
    assert len(accepted) == 1


async def test_pool_replaces_a_connection_the_server_closed() -> None:
    accepted: list[int] = []

    async def handler(body: bytes) -> tuple[bytes, bool]:
        return http(200, {"ok": True}), True  # answers, then closes without saying so

    send_closed, closed = trio.open_memory_channel[None](10)
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, handler, accepted, send_closed)
        pool = HttpPool()
        for _ in range(3):
            assert await pool.post("127.0.0.1", port, "/", b"{}") == (200, b'{"ok": true}')
            with trio.fail_after(5):
                await closed.receive()  # the server has closed this connection
        await pool.aclose()
        nursery.cancel_scope.cancel()
    assert len(accepted) == 3


# --- the open-loop run --------------------------------------------------------------------------


async def test_run_load_counts_commits_refusals_and_timeouts() -> None:
    accepted: list[int] = []

    async def commits(body: bytes) -> tuple[bytes, bool]:
        await trio.sleep(0.02)
        return committed_answer(body), False

    async def full(body: bytes) -> tuple[bytes, bool]:
        return http(503, {"error": "mempool_full", "detail": "full"}), False

    async def silent(body: bytes) -> tuple[bytes, bool]:
        await trio.sleep_forever()
        raise AssertionError

    async with trio.open_nursery() as nursery:
        ports = [await serve(nursery, h, accepted) for h in (commits, full, silent)]
        targets = [target(p, i) for i, p in enumerate(ports)]
        batches = commit_batches(targets, 90, 10, b"s")  # 9 batches, 3 per server
        start = trio.current_time()
        tally = await run_load(targets, batches, 300.0, timeout=0.5)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert (tally.sent, tally.committed, tally.failed) == (90, 30, 60)
    assert tally.reasons == {"http_503:mempool_full": 30, "timeout": 30}
    assert 0.25 < elapsed < 1.5  # 90 txs at 300/s: sends over 0.27 s, then the 0.5 s limit
    assert all(0.02 <= x < 0.4 for x in tally.latencies)
    assert tally.max_lag < 0.1
    report = tally.report("commit")
    assert report["committed"] == 30 and report["per_s"] > 0


async def test_run_load_survives_a_server_that_is_not_there() -> None:
    with trio.socket.socket() as s:  # a port nothing listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    targets = [target(port)]
    tally = await run_load(targets, commit_batches(targets, 20, 10, b"s"), 1000.0, timeout=2)
    assert (tally.sent, tally.committed, tally.failed) == (20, 0, 20)
    assert list(tally.reasons) == ["error:OSError"]


# --- query workloads (bench.query_load) ---------------------------------------------------------


def test_query2_records_sit_outside_the_asked_agency() -> None:
    assert holders("query1", 2, [0, 1, 2, 3]) == [2]
    assert holders("query2", 2, [0, 1, 2, 3]) == [3, 0]
    assert holders("query2", 0, [0, 1]) == [1]


def test_query_answers_are_counted_by_mode_and_report() -> None:
    agency, lender, subject = Identity.generate(), Identity.generate(), Identity.generate()
    target = Target(0, "127.0.0.1", 1, agency, "chain")
    plan = QueryPlan([target], [[lender]], [[Subject("x", b"\x01" * 32, subject)]], 1)
    (q,) = sign_queries(plan, "chain", 1)
    good = seal(
        lender.public_key,
        json.dumps({"request_hash": q.request_hash.hex(), "records": [1]}).encode(),
    )
    t = Tally()
    count_answer(t, plan, q, 200, {"mode": 1, "sealed_report": good.hex()}, 0.01, 0)
    count_answer(t, plan, q, 200, {"mode": 2, "sealed_report": good.hex()}, 0.01, 0)
    count_answer(t, plan, q, 200, {"mode": 1, "sealed_report": "00" * 64}, 0.01, 0)
    count_answer(t, plan, q, 404, {"error": "no_records"}, 0.01, 0)
    assert t.committed == 1 and t.latencies == [0.01]
    assert t.reasons == {"mode_2": 1, "report_not_opened:CryptoError": 1, "http_404:no_records": 1}
