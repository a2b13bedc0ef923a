"""``POST /v1/queries`` is served by the node's outermost ASGI layer (``_Limits``, around the
FastAPI app); it must answer exactly as the documented FastAPI route, which runs the same
handler, does. Driven as ASGI here (the real HTTP server and the success cases run in
tests/integration/test_queries.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

import node.api
from node.api import _Limits, build_app, build_asgi
from node.config import APIConfig, QueriesConfig
from node.metrics import NodeMetrics
from protocol.codec import encode
from protocol.crypto import Identity, h256
from protocol.transactions import QueryRequest
from protocol.vocabulary import Category, Purpose

MAX_BODY = 2048


def stub_node(max_in_flight: int = 200) -> Any:
    """What the app touches before a query reaches the ledger checks."""
    return SimpleNamespace(
        config=SimpleNamespace(
            api=APIConfig(max_body_bytes=MAX_BODY),
            queries=QueriesConfig(max_in_flight=max_in_flight),
        ),
        metrics=NodeMetrics(process=False),
    )


async def call(app: Any, body: bytes, chunk: int = 700) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST ``body`` to /v1/queries in chunks (no Content-Length: the size limit must hold
    however the body arrives); status, headers and body of the answer."""
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    incoming = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/queries",
        "raw_path": b"/v1/queries",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"node"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = dict(start["headers"])
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, data


BODIES = {
    "not json": b"{not json",
    "not utf-8": b'{"request": "\xff"}',
    "not an object": b'["request"]',
    "no request": b'{"x": 1}',
    "request not a string": b'{"request": 5}',
    "not hex": b'{"request": "zz"}',
    "over 4096 bytes": b'{"request": "' + b"00" * 4097 + b'"}',
    "malformed": b'{"request": "00"}',
    "another message": b'{"request": "920102"}',
    "body too large": b'{"request": "' + b"0" * (MAX_BODY + 10) + b'"}',
    "nested too deep for the parser": b"[" * 1500,
}


async def test_the_route_is_reached_without_the_outer_layer() -> None:
    node = stub_node()
    app = build_app(node)  # routes, exception handlers and the framework's own layers
    await call(app, BODIES["malformed"])
    counted = node.metrics.registry.get_sample_value(
        "creditnet_api_requests_total", {"route": "queries", "status": "400"}
    )
    assert counted is None  # only the middleware counts: this answer came from the route


@pytest.mark.parametrize("name", list(BODIES))
async def test_the_fast_path_answers_as_the_documented_route(name: str) -> None:
    node = stub_node()
    app = build_app(node)
    fast = await call(_Limits(app, node), BODIES[name])  # the outer layer's own path
    routed = await call(app, BODIES[name])  # the FastAPI route
    assert fast[0] == routed[0]
    assert 400 <= fast[0] < 500
    assert fast[2] == routed[2]
    assert fast[1][b"content-type"] == routed[1][b"content-type"] == b"application/json"
    assert int(fast[1][b"content-length"]) == len(fast[2])


async def test_a_refusal_is_counted_under_its_route_and_status() -> None:
    node = stub_node()
    status, _, body = await call(build_asgi(node), BODIES["malformed"])
    assert status == 400 and b'"error":"malformed"' in body
    count = node.metrics.registry.get_sample_value(
        "creditnet_api_requests_total", {"route": "queries", "status": "400"}
    )
    assert count == 1


async def test_an_internal_error_is_a_json_500_and_counted() -> None:
    """A request the node fails on (here: a stub without a ledger) gets the API's JSON error
    shape, from the fast path and from a framework route alike, and is counted as a 500."""
    node = stub_node()
    app = build_asgi(node)
    request = b'{"request": "' + encode(_valid_request()).hex().encode() + b'"}'
    status, headers, body = await call(app, request)
    assert (status, body) == (500, b'{"error":"internal","detail":"internal error"}')
    assert headers[b"content-type"] == b"application/json"
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/status",
        "raw_path": b"/v1/status",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    with pytest.raises(AttributeError):  # re-raised after the answer, for the server's log
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert b"".join(m.get("body", b"") for m in sent[1:]) == body
    for route in ("queries", "status"):
        count = node.metrics.registry.get_sample_value(
            "creditnet_api_requests_total", {"route": route, "status": "500"}
        )
        assert count == 1


def _valid_request() -> QueryRequest:
    return QueryRequest.sign(
        Identity(b"\x07" * 32),
        "creditnet-test",
        agency=Identity(b"\x08" * 32).public_key,
        pseudonym=h256(b"subject"),
        purpose=Purpose.LOAN_APPROVAL,
        categories=(Category.LOAN,),
        nonce=1,
        time_ms=1_700_000_000_000,
    )


async def test_queries_beyond_the_in_flight_limit_are_refused_until_one_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A surge gets 503 ``busy`` at once for what the agency cannot take, and the slots come
    back as queries are answered (``queries.max_in_flight``)."""
    release = trio.Event()
    answered: list[bytes] = []

    async def held(_node: Any, body: bytes) -> dict[str, Any]:
        await release.wait()
        answered.append(body)
        return {"ok": True}

    monkeypatch.setattr(node.api, "answer_query_body", held)
    stub = stub_node(max_in_flight=3)
    app = build_asgi(stub)
    results: list[int] = []

    async def one() -> None:
        results.append((await call(app, b'{"request": "00"}'))[0])

    def gauge() -> float | None:
        return stub.metrics.registry.get_sample_value("creditnet_api_queries_in_flight")

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert gauge() == 3
        with trio.fail_after(5):  # refused at once, not queued behind the three
            status, headers, body = await call(app, b'{"request": "00"}')
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert body.startswith(b'{"error":"busy","detail":"this agency is answering 3 queries')
        release.set()
    assert results == [200, 200, 200] and len(answered) == 3
    assert gauge() == 0
    assert (await call(app, b'{"request": "00"}'))[0] == 200
    refused = stub.metrics.registry.get_sample_value(
        "creditnet_api_requests_total", {"route": "queries", "status": "503"}
    )
    assert refused == 1
