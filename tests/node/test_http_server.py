"""The node's HTTP/1.1 server (``node.http_server``) over real 127.0.0.1 connections: keep-alive
and its timer, answers in one write, request bodies streamed to the application, refusals of
malformed input, and a failing application that costs its connection only."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import h11
import pytest
import trio
import trio.testing

from node import http_server
from node.http_gate import LoopLag
from tests.node.http_serving import Client, served

KEEP_ALIVE_S = 5.0
DEADLINE_S = 30.0


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """Virtual time that also runs at the real rate, so a test that spins fails at its deadline."""
    return trio.testing.MockClock(rate=1.0, autojump_threshold=0.02)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``<method> <path>?<query> <body>``, the body read to its end."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    text = f"{scope['method']} {scope['path']}?{scope['query_string'].decode()} ".encode() + body
    headers = [(b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": text})


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(data)
        out = b""
        with trio.fail_after(DEADLINE_S):
            while chunk := await stream.receive_some(65536):
                out += chunk
    finally:
        await stream.aclose()
    return out


async def test_keep_alive_requests_are_answered_in_order_each_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[bytes] = []
    send = http_server._Connection.send

    async def counted(self: http_server._Connection, data: bytes) -> None:
        writes.append(data)
        await send(self, data)

    monkeypatch.setattr(http_server._Connection, "send", counted)
    async with served(echo) as port:
        client = await Client.connect(port)
        with trio.fail_after(DEADLINE_S):
            for i in range(3):
                await client.send_request(body=b"n%d" % i)
                assert await client.read_body() == b"POST /v1/queries? n%d" % i
        await client.stream.aclose()
    assert len(writes) == 3  # head and body of each answer together
    assert all(w.startswith(b"HTTP/1.1 200 ") and b"\r\ndate: " in w.lower() for w in writes)


async def test_pipelined_requests_are_answered_in_order() -> None:
    requests = b"".join(
        b"GET /a%d?x=%d HTTP/1.1\r\nhost: t\r\n\r\n" % (i, i) for i in range(3)
    ) + b"GET /last HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    async with served(echo) as port:
        out = await raw_exchange(port, requests)
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in out.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"GET /a0?x=0 ", b"GET /a1?x=1 ", b"GET /a2?x=2 ", b"GET /last? "]


async def test_an_idle_connection_closes_a_keep_alive_time_after_its_last_answer(
    mock_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with served(echo, keep_alive_s=KEEP_ALIVE_S) as port:
            client = await Client.connect(port)
            for _ in range(3):
                assert (await client.request())[0].status_code == 200
                await trio.sleep(KEEP_ALIVE_S / 2)  # each answer starts the time afresh
            answered = trio.current_time()
            assert await client.closed_by_server()
            # the timer started as the answer left, a moment before the client read it
            waited = trio.current_time() - answered
            assert KEEP_ALIVE_S / 2 - 0.1 <= waited <= KEEP_ALIVE_S / 2 + 0.5


async def test_a_request_answered_slowly_is_not_cut_by_the_keep_alive_time(
    mock_clock: trio.testing.MockClock,
) -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await trio.sleep(3 * KEEP_ALIVE_S)
        await echo(scope, receive, send)

    with trio.fail_after(DEADLINE_S):
        async with served(slow, keep_alive_s=KEEP_ALIVE_S) as port:
            client = await Client.connect(port)
            await client.send_request(body=b"x")
            assert await client.read_body() == b"POST /v1/queries? x"
            answered = trio.current_time()
            assert await client.closed_by_server()
            assert KEEP_ALIVE_S - 0.1 <= trio.current_time() - answered <= KEEP_ALIVE_S + 0.5


async def test_a_chunked_body_reaches_the_application_piece_by_piece() -> None:
    pieces: list[tuple[bytes, bool]] = []
    first_piece_seen = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            pieces.append((message["body"], message["more_body"]))
            first_piece_seen.set()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with served(app) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        head = b"POST /r HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        await stream.send_all(head + b"3\r\nabc\r\n")
        with trio.fail_after(DEADLINE_S):
            await first_piece_seen.wait()  # before the rest was sent
            await stream.send_all(b"2\r\nde\r\n0\r\n\r\n")
            answer = await stream.receive_some(65536)
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert b"".join(p for p, _ in pieces) == b"abcde"
    assert pieces[0] == (b"abc", True) and pieces[-1][1] is False


async def test_expect_100_continue_is_answered_when_the_body_is_read() -> None:
    async with served(echo) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            b"POST /big HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(DEADLINE_S):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"body")
            answer = await stream.receive_some(65536)
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"POST /big? body")


async def test_http_1_0_and_connection_close_end_the_connection_after_the_answer() -> None:
    async with served(echo) as port:
        old = await raw_exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
        closing = await raw_exchange(
            port, b"GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
    assert old.startswith(b"HTTP/1.1 200 ") and old.endswith(b"GET /old? ")
    assert closing.startswith(b"HTTP/1.1 200 ") and closing.endswith(b"GET /c? ")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_http"),
        (b"GET / HTTP/1.1\r\nhost: t\r\nbad header line\r\n\r\n", 400, "bad_http"),
        (b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: x\r\n\r\n", 400, "bad_http"),
        (b"GET / HTTP/1.1\r\nhost: t\r\nx: " + b"a" * 5000 + b"\r\n\r\n", 431, "header_too_large"),
        (b"GET / HTTP/1.1\r\nx: " + b"a" * 5000, 431, "header_too_large"),  # still incomplete
    ],
)
async def test_malformed_requests_are_refused_with_a_json_error_and_the_connection_closed(
    data: bytes, status: int, code: str
) -> None:
    async with served(echo, max_head_bytes=4096) as port:
        out = await raw_exchange(port, data)
        assert (await raw_exchange(port, b"GET /ok HTTP/1.0\r\n\r\n")).endswith(b"GET /ok? ")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    error = json.loads(body)
    assert error["error"] == code
    expected = "not a valid HTTP/1.1 request" if status == 400 else "head above 4096 bytes"
    assert expected in error["detail"]


async def test_a_failing_application_costs_its_request_a_500_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("bug in the application")
        if scope["path"] == "/silent":
            return  # no answer at all
        await echo(scope, receive, send)

    async with served(app) as port:
        boom = await raw_exchange(port, b"GET /boom HTTP/1.1\r\nhost: t\r\n\r\n")
        silent = await raw_exchange(port, b"GET /silent HTTP/1.1\r\nhost: t\r\n\r\n")
        fine = await raw_exchange(port, b"GET /fine HTTP/1.0\r\n\r\n")
    for out in (boom, silent):
        assert out.startswith(b"HTTP/1.1 500 ")
        assert json.loads(out.partition(b"\r\n\r\n")[2])["error"] == "internal"
    assert fine.endswith(b"GET /fine? ")
    assert "bug in the application" in caplog.text


async def test_an_answer_before_the_body_keeps_the_connection_only_if_the_body_is_in() -> None:
    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"busy"})

    async with served(refuse) as port:
        client = await Client.connect(port)
        with trio.fail_after(DEADLINE_S):
            for _ in range(2):  # the whole (small) request arrived: the connection is kept
                events = await client.request(body=b"x" * 100)
                assert events[0].status_code == 503
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\nab")
            out = b""
            while chunk := await stream.receive_some(65536):  # answered, then closed
                out += chunk
        assert out.startswith(b"HTTP/1.1 503 ")
        await client.stream.aclose()
        await stream.aclose()


async def test_a_client_leaving_in_the_middle_of_a_body_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served(echo) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nabc")
        await stream.aclose()
        with trio.fail_after(DEADLINE_S):
            out = await raw_exchange(port, b"GET /next HTTP/1.0\r\n\r\n")
    assert out.endswith(b"GET /next? ")
    assert "failed" not in caplog.text


def test_the_asgi_scope_names_the_request() -> None:
    request = h11.Request(
        method="GET", target="/v1/subjects/ab%2Fcd/queries?x=1", headers=[("Host", "t")]
    )
    scope = http_server._scope(request, ("127.0.0.1", 5), ("127.0.0.1", 80))
    assert scope["path"] == "/v1/subjects/ab/cd/queries"
    assert scope["raw_path"] == b"/v1/subjects/ab%2Fcd/queries"
    assert scope["query_string"] == b"x=1"
    assert scope["headers"] == [(b"host", b"t")]
    assert scope["http_version"] == "1.1" and scope["method"] == "GET"


async def test_a_client_that_breaks_off_after_garbage_cannot_stop_the_server() -> None:
    """The refusal of a malformed request meets a closed socket: the server goes on (that error
    once escaped to the listener, and with it the node's loop)."""
    async with served(echo) as port:
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\nGARBAGE\r\n\r\n")
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()  # a reset: the answers cannot be written
        with trio.fail_after(DEADLINE_S):
            out = await raw_exchange(port, b"GET /still-here HTTP/1.0\r\n\r\n")
    assert out.endswith(b"GET /still-here? ")


async def test_head_is_answered_with_the_headers_of_get_and_no_body() -> None:
    async with served(echo) as port:
        out = await raw_exchange(
            port,
            b"HEAD /h HTTP/1.1\r\nhost: t\r\n\r\nGET /after HTTP/1.1\r\nhost: t\r\n"
            b"connection: close\r\n\r\n",
        )
    head, after = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 9" in head.lower()
    assert after.startswith(b"HTTP/1.1 200 ") and after.endswith(b"GET /after? ")


async def test_a_client_leaving_mid_body_is_a_disconnect_to_the_application() -> None:
    messages: list[dict[str, Any]] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        done.set()
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"gone"})

    async with served(app) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nabc")
        await stream.aclose()
        with trio.fail_after(DEADLINE_S):
            await done.wait()
    assert messages[0] == {"type": "http.request", "body": b"abc", "more_body": True}
    assert messages[-1] == {"type": "http.disconnect"}


async def test_a_request_held_at_the_gate_past_the_keep_alive_time_is_still_answered(
    mock_clock: trio.testing.MockClock,
) -> None:
    gate = LoopLag(hold_above_s=0.15, release_below_s=0.05)
    with trio.fail_after(DEADLINE_S):
        async with served(echo, keep_alive_s=KEEP_ALIVE_S, gate=gate) as port:
            client = await Client.connect(port)
            gate.observe(1.0)  # the loop lags: hold input
            await client.send_request(body=b"held")
            await trio.sleep(3 * KEEP_ALIVE_S)
            gate.observe(0.0)
            assert await client.read_body() == b"POST /v1/queries? held"


async def test_an_answer_the_client_does_not_take_is_dropped_after_the_keep_alive_time(
    mock_clock: trio.testing.MockClock,
) -> None:
    big = b"x" * (8 << 20)  # more than the socket buffers hold
    finished = trio.Event()

    async def flood(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": big})
        finally:
            finished.set()

    with trio.fail_after(DEADLINE_S):
        async with served(flood, keep_alive_s=KEEP_ALIVE_S) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")  # and never read
            begun = trio.current_time()
            await finished.wait()
            assert KEEP_ALIVE_S - 0.1 <= trio.current_time() - begun <= KEEP_ALIVE_S + 1
            await stream.aclose()


async def test_a_connection_over_the_limit_is_answered_503_busy_and_closed() -> None:
    refused: list[int] = []
    counts = http_server.Connections(limit=2, on_refused=lambda: refused.append(1))
    async with served(echo, connections=counts) as port:
        first, second = await Client.connect(port), await Client.connect(port)
        for client in (first, second):
            assert (await client.request("GET"))[0].status_code == 200
        assert counts.open == 2
        with trio.fail_after(DEADLINE_S):
            out = await raw_exchange(port, b"GET /third HTTP/1.1\r\nhost: t\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nconnection: close\r\n" in head and b"\r\nretry-after: 1\r\n" in head
        error = json.loads(body)
        assert error["error"] == "busy"
        assert "2 API connections at once" in error["detail"]
        assert "api.max_connections" in error["detail"]
        assert refused == [1] and counts.open == 2
        # The two kept connections are still served; once one closes, a new one is too.
        assert (await second.request("GET"))[0].status_code == 200
        await first.stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert counts.open == 1
        third = await Client.connect(port)
        assert (await third.request("GET"))[0].status_code == 200
        assert refused == [1] and counts.refusing == 0
        await second.stream.aclose()
        await third.stream.aclose()


async def test_over_the_limit_head_gets_the_503_head_and_a_silent_client_is_closed_unanswered(
    mock_clock: trio.testing.MockClock,
) -> None:
    counts = http_server.Connections(limit=1)
    async with served(echo, connections=counts) as port:
        kept = await Client.connect(port)
        assert (await kept.request("GET"))[0].status_code == 200
        head = await raw_exchange(port, b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and head.endswith(b"\r\n\r\n")
        assert b"content-length: " in head  # the GET's, with no body after it
        # Nothing is written before the request begins; a client that never sends one is
        # closed after REFUSE_LINGER_S.
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        started = trio.current_time()
        with trio.fail_after(DEADLINE_S):
            assert await silent.receive_some(65536) == b""
        assert trio.current_time() - started >= http_server.REFUSE_LINGER_S
        await silent.aclose()
        assert counts.refusing == 0 and counts.open == 1
        await kept.stream.aclose()


async def test_past_the_refusals_answered_at_once_a_connection_is_closed_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_server, "REFUSING_MAX", 0)
    counts = http_server.Connections(limit=1)
    async with served(echo, connections=counts) as port:
        kept = await Client.connect(port)
        assert (await kept.request("GET"))[0].status_code == 200
        try:
            out = await raw_exchange(port, b"GET /over HTTP/1.1\r\nhost: t\r\n\r\n")
        except trio.BrokenResourceError:
            out = b""  # reset: closed with the request unread
        assert out == b""
        assert (await kept.request("GET"))[0].status_code == 200
        await kept.stream.aclose()
