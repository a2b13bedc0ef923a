"""``POST /v1/queries`` is served by the API middleware's fast path in a running node; it must
answer exactly as the documented FastAPI route, which runs the same handler, does. Driven as
ASGI here (the real HTTP server and the success cases run in tests/integration/test_queries.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from node.api import _Limits, build_app
from node.config import APIConfig
from node.metrics import NodeMetrics

MAX_BODY = 2048


def stub_node() -> Any:
    """What the app touches before a query reaches the ledger checks."""
    return SimpleNamespace(
        config=SimpleNamespace(api=APIConfig(max_body_bytes=MAX_BODY)),
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


def without_limits(node: Any) -> Any:
    """The node's FastAPI app minus the ``_Limits`` middleware: its routes, exception handlers
    and the framework's own layers, so a query reaches the documented route."""
    app = build_app(node)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not _Limits]
    app.middleware_stack = None  # rebuilt on the first call, from the list above
    return app


async def test_the_route_is_reached_without_the_middleware() -> None:
    node = stub_node()
    app = without_limits(node)
    await call(app, BODIES["malformed"])
    counted = node.metrics.registry.get_sample_value(
        "creditnet_api_requests_total", {"route": "queries", "status": "400"}
    )
    assert counted is None  # only the middleware counts: this answer came from the route


@pytest.mark.parametrize("name", list(BODIES))
async def test_the_fast_path_answers_as_the_documented_route(name: str) -> None:
    node = stub_node()
    app = without_limits(node)
    fast = await call(_Limits(app, node), BODIES[name])  # the middleware's own path
    routed = await call(app, BODIES[name])  # the FastAPI route
    assert fast[0] == routed[0]
    assert 400 <= fast[0] < 500
    assert fast[2] == routed[2]
    assert fast[1][b"content-type"] == routed[1][b"content-type"] == b"application/json"
    assert int(fast[1][b"content-length"]) == len(fast[2])


async def test_a_refusal_is_counted_under_its_route_and_status() -> None:
    node = stub_node()
    limits = _Limits(build_app(node), node)
    status, _, body = await call(limits, BODIES["malformed"])
    assert status == 400 and b'"error":"malformed"' in body
    count = node.metrics.registry.get_sample_value(
        "creditnet_api_requests_total", {"route": "queries", "status": "400"}
    )
    assert count == 1
