"""The HTTP/JSON API: FastAPI, served by :mod:`node.http_server` in the node's own trio loop.

Every error is ``{"error": "<code>", "detail": "<what is wrong>"}`` with a 4xx status for the
caller's mistakes (400 malformed input, 404 unknown, 413 body too large, 422 refused by a rule)
and 503 with ``Retry-After`` when the node is overloaded (mempool full). Request bodies are read
with a size limit before any parsing; binary values travel as lowercase hex.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

import trio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from node import http_gate, http_server
from node.mempool import Admission
from node.queries import QueryRefused, answer_query
from node.records import load_records
from node.tasks import TaskStatus
from protocol.block import Block, CommitCertificate
from protocol.codec import CodecError, decode
from protocol.contract import views
from protocol.crypto import Domain, h256, verify
from protocol.transactions import (
    MAX_TX_BYTES,
    QueryRequest,
    RegisterClient,
    RegisterSubject,
    decode_tx,
)

if TYPE_CHECKING:
    from node.daemon import Node

log = logging.getLogger("creditnet.api")

MAX_TXS_PER_REQUEST = 5000
KEEP_ALIVE_S = 30.0
"""An idle client connection is closed after this long."""
MAX_HEAD_BYTES = 64 * 1024
"""Largest request line and headers; a larger head is refused (431)."""
LONG_ROUTES = frozenset({"records", "queries", "clients", "subjects"})
"""POST routes that wait for a commit: their time limit is api.wait_commit_timeout_ms."""


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class TxSubmission(BaseModel):
    """One signed transaction (``tx``) or a batch (``txs``), as hex of its canonical bytes."""

    tx: str | None = Field(default=None, description="hex of one encoded signed transaction")
    txs: list[str] | None = Field(default=None, description="hex of many encoded transactions")


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _hex(value: str, what: str, max_bytes: int) -> bytes:
    if len(value) > 2 * max_bytes:
        raise ApiError(413, "too_large", f"{what}: more than {max_bytes} bytes")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ApiError(400, "bad_hex", f"{what}: not a hex string") from None


def _admission_json(a: Admission) -> dict[str, Any]:
    out: dict[str, Any] = {"hash": a.tx_hash.hex(), "status": a.status}
    if a.code:
        out["error"] = a.code
        out["detail"] = a.detail
    return out


def block_json(
    block: Block, cert: CommitCertificate | None, validators: tuple[bytes, ...]
) -> dict[str, Any]:
    h = block.header
    return {
        "height": h.height,
        "hash": block.hash.hex(),
        "header": {
            "chain_id": h.chain_id,
            "height": h.height,
            "time_ms": h.time_ms,
            "prev_hash": h.prev_hash.hex(),
            "tx_root": h.tx_root.hex(),
            "app_height": h.app_height,
            "app_hash": h.app_hash.hex(),
            "view": h.view,
            "proposer": h.proposer.hex(),
        },
        "num_txs": len(block.txs),
        "tx_hashes": [h256(t).hex() for t in block.txs],
        "certificate": None
        if cert is None
        else {
            "block_hash": cert.block_hash.hex(),
            "view": cert.votes[0].view if cert.votes else None,
            "signers": sorted(
                validators.index(v.validator) for v in cert.votes if v.validator in validators
            ),
        },
    }


def _waits_for_commit(query: bytes) -> bool:
    """Whether a query string asks ``wait=commit``, in any encoding the route itself accepts."""
    if b"wait" not in query and b"%" not in query:
        return False  # the common case, without parsing
    return ("wait", "commit") in parse_qsl(query.decode("latin-1"))


async def answer_query_body(node: Node, body: bytes) -> dict[str, Any]:
    """``POST /v1/queries``: the sealed report for a JSON ``{"request": hex}`` body, or
    :class:`ApiError`. One implementation for the FastAPI route and the ASGI fast path."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    raw = doc.get("request")
    if not isinstance(raw, str):
        raise ApiError(400, "invalid_request", "request: expected hex of a signed QueryRequest")
    try:
        req = decode(_hex(raw, "request", 4096), QueryRequest, max_bytes=4096)
    except CodecError as exc:
        raise ApiError(400, "malformed", f"request: {exc}") from None
    try:
        return await answer_query(node, req)
    except QueryRefused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None


def _json_body(doc: Any) -> bytes:
    """JSON exactly as the framework's JSONResponse renders it."""
    return json.dumps(
        doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


async def _send_json(send: Any, status: int, doc: Any, headers: dict[str, str] | None) -> None:
    body = _json_body(doc)
    head = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class _Limits:
    """The outermost ASGI layer, around the FastAPI app: body-size refusal by Content-Length,
    the request time limit (the long one for ``?wait=commit`` and the routes that wait for a
    commit), the request count by route and status, and ``POST /v1/queries`` itself -- at most
    ``queries.max_in_flight`` at once; beyond that a query is refused before its body is read
    (503 ``busy``), the back-pressure transactions get from a full mempool.

    Outside the framework rather than one of its middlewares: inside, each request and each
    message it sends also went through Starlette's error, telemetry and body-limit layers
    (~13 us a query, measured in-process). An error raised here that no layer below answered
    is logged and answered with a JSON 500 here, as the framework's error layer does for its
    routes.
    (Starlette's ``BaseHTTPMiddleware`` would cost a task group and a memory channel per
    request: a fifth of the main thread under query load.)"""

    def __init__(self, app: Any, node: Node) -> None:
        self.app = app
        self.node = node
        self.cfg = node.config.api
        self.max_queries = node.config.queries.max_in_flight
        self.queries = 0
        """``POST /v1/queries`` being answered now."""
        node.metrics.queries_in_flight.set_function(lambda: self.queries)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cfg = self.cfg
        path: str = scope["path"]
        route = path.split("/")[2] if path.startswith("/v1/") else "other"
        status = 0

        async def send_counted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
                response = _error(
                    413, "too_large", f"request body above {cfg.max_body_bytes} bytes"
                )
                await response(scope, receive, send_counted)
                return
            wait = (scope["method"] == "POST" and route in LONG_ROUTES) or _waits_for_commit(
                scope.get("query_string", b"")
            )
            limit = (cfg.wait_commit_timeout_ms if wait else cfg.request_timeout_ms) / 1000
            with trio.move_on_after(limit + 1) as timer:
                if route == "queries" and path == "/v1/queries" and scope["method"] == "POST":
                    if self.queries >= self.max_queries:
                        await _send_json(
                            send_counted,
                            503,
                            {
                                "error": "busy",
                                "detail": f"this agency is answering {self.queries} queries, "
                                "its limit; retry later",
                            },
                            {"Retry-After": "1"},
                        )
                        return
                    self.queries += 1
                    try:
                        await self._query(receive, send_counted)
                    finally:
                        self.queries -= 1
                else:
                    await self.app(scope, receive, send_counted)
            if timer.cancelled_caught and status == 0:
                response = _error(504, "timeout", f"request took longer than {limit:.1f} s")
                await response(scope, receive, send_counted)
        except Exception:
            if status != 0:
                raise  # answered already (the framework's 500); the server logs the error
            log.exception("%s %s failed", scope.get("method"), path)
            await _error(500, "internal", "internal error")(scope, receive, send_counted)
        finally:
            self.node.metrics.api_requests.labels(route, str(status or 500)).inc()

    async def _query(self, receive: Any, send: Any) -> None:
        """``POST /v1/queries`` served here, without the framework's routing, dependency and
        response layers: the lenders' hot path, where they cost a fifth of the answering
        node's main thread. The FastAPI route documents it and runs the same handler."""
        try:
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ApiError(400, "disconnected", "the client closed the request")
                body += message.get("body", b"")
                if len(body) > self.cfg.max_body_bytes:
                    raise ApiError(
                        413, "too_large", f"request body above {self.cfg.max_body_bytes} bytes"
                    )
                if not message.get("more_body", False):
                    break
            doc = await answer_query_body(self.node, bytes(body))
        except ApiError as exc:
            error = {"error": exc.code, "detail": exc.detail}
            await _send_json(send, exc.status, error, exc.headers)
            return
        except Exception:
            log.exception("POST /v1/queries failed")
            await _send_json(send, 500, {"error": "internal", "detail": "internal error"}, None)
            return
        await _send_json(send, 200, doc, None)


def build_asgi(node: Node) -> Any:
    """What the node serves: the FastAPI application of ``node`` inside :class:`_Limits`."""
    return _Limits(build_app(node), node)


def build_app(node: Node) -> FastAPI:
    """The FastAPI application of ``node`` (its routes, documented in ``/openapi.json``); the
    node serves it through :func:`build_asgi`."""
    app = FastAPI(
        title="creditnet node API",
        version="1",
        description="One credit-reporting agency's node: ledger status, blocks, transactions.",
    )
    cfg = node.config.api

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return _error(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:
        # The framework's error layer answers with this, then re-raises for the server's log.
        return _error(500, "internal", "internal error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    async def read_body(request: Request) -> bytes:
        """The request body, refused past api.max_body_bytes (however it is chunked)."""
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > cfg.max_body_bytes:
                    raise ApiError(
                        413, "too_large", f"request body above {cfg.max_body_bytes} bytes"
                    )
        except ClientDisconnect:
            raise ApiError(400, "disconnected", "the client closed the request") from None
        return bytes(body)

    async def read_json(request: Request) -> Any:
        body = await read_body(request)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(400, "bad_json", f"request body is not JSON: {exc}") from None

    @app.get("/v1/status", summary="Chain, consensus and peer status of this node")
    async def status() -> dict[str, Any]:
        return node.status()

    @app.get("/v1/blocks/{ref}", summary="A committed block by height, or `latest`")
    async def get_block(ref: str) -> dict[str, Any]:
        store = node.store
        if ref == "latest":
            height = store.latest_height
        elif ref.isdigit() and len(ref) < 20:
            height = int(ref)
        else:
            raise ApiError(400, "bad_height", f"{ref!r}: expected a height or 'latest'")
        raw = store.block(height) if height > 0 else None
        if raw is None:
            raise ApiError(
                404, "no_block", f"no block at height {height} (latest is {store.latest_height})"
            )
        raw_cert = store.certificate(height)
        cert = decode(raw_cert, CommitCertificate) if raw_cert else None
        return block_json(decode(raw, Block), cert, node.genesis.validator_keys)

    @app.get("/v1/txs/{tx_hash}", summary="A transaction's status and ledger outcome")
    async def get_tx(tx_hash: str) -> dict[str, Any]:
        h = _hex(tx_hash, "tx hash", 32)
        if len(h) != 32:
            raise ApiError(400, "bad_hash", "a tx hash is 32 bytes (64 hex characters)")
        return tx_json(node, h)

    @app.post(
        "/v1/txs",
        summary="Submit one signed transaction or a batch; ?wait=commit waits for the commit",
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": TxSubmission.model_json_schema()}},
                "required": True,
            }
        },
    )
    async def post_txs(
        request: Request,
        wait: Annotated[str | None, Query(description="`commit`: answer once committed")] = None,
    ) -> Any:
        if wait not in (None, "commit"):
            raise ApiError(400, "bad_wait", f"wait={wait!r}: only wait=commit is supported")
        doc = await read_json(request)
        try:
            sub = TxSubmission.model_validate(doc)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc).splitlines()[0]) from None
        single = sub.tx is not None
        if single == (sub.txs is not None):
            raise ApiError(400, "invalid_request", "send exactly one of 'tx' or 'txs'")
        items = [sub.tx] if sub.tx is not None else list(sub.txs or [])
        if not items:
            raise ApiError(400, "invalid_request", "'txs' is empty")
        if len(items) > MAX_TXS_PER_REQUEST:
            raise ApiError(
                413,
                "too_many",
                f"{len(items)} transactions; at most {MAX_TXS_PER_REQUEST} a request",
            )
        txs = [_hex(x, f"txs[{i}]", MAX_TX_BYTES) for i, x in enumerate(items)]
        results = await node.submit(txs)
        if single and results[0].status == "refused":
            r = results[0]
            if r.code == "mempool_full":
                raise ApiError(503, r.code, r.detail, {"Retry-After": "1"})
            raise ApiError(422 if r.code != "malformed" else 400, r.code, r.detail)
        if all(r.code == "mempool_full" for r in results):
            raise ApiError(503, "mempool_full", results[0].detail, {"Retry-After": "1"})
        if wait == "commit":
            await wait_all(node, [r.tx_hash for r in results if r.ok])
            out = [tx_json(node, r.tx_hash) if r.ok else _admission_json(r) for r in results]
            code = 200
        else:
            out = [_admission_json(r) for r in results]
            code = 202
        return JSONResponse(out[0] if single else {"results": out}, status_code=code)

    def require_operator(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), node.files.token.encode()
        ):
            raise ApiError(
                401, "unauthorized", "this call needs the operator token: Authorization: Bearer ..."
            )

    @app.post(
        "/v1/records",
        summary="Load credit records (operator): JSON lines of standard-v1 records",
        openapi_extra={
            "requestBody": {
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                "required": True,
            }
        },
    )
    async def post_records(request: Request) -> Any:
        require_operator(request)
        body = await read_body(request)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "bad_encoding", f"records must be UTF-8: {exc}") from None
        report = await load_records(node, text.splitlines())
        return JSONResponse(report.to_json(), status_code=200)

    async def read_object(request: Request) -> dict[str, Any]:
        doc = await read_json(request)
        if not isinstance(doc, dict):
            raise ApiError(400, "invalid_request", "the body must be a JSON object")
        return doc

    def key_field(doc: dict[str, Any], name: str, size: int = 32) -> bytes:
        value = doc.get(name)
        if not isinstance(value, str):
            raise ApiError(400, "invalid_request", f"{name}: expected a hex string")
        raw = _hex(value, name, size)
        if len(raw) != size:
            raise ApiError(400, "invalid_request", f"{name}: expected {size} bytes")
        return raw

    async def agency_tx(body: Any) -> dict[str, Any]:
        (own,) = await node.commit_own([body])
        if own.refusal is not None:
            raise ApiError(*own.refusal)
        return tx_json(node, own.admission.tx_hash)

    @app.get("/v1/chain", summary="Chain parameters clients need: salt, fees, validators")
    async def chain() -> dict[str, Any]:
        g = node.genesis
        return {
            "chain_id": g.chain_id,
            "genesis_hash": g.hash.hex(),
            "pseudonym_salt": g.pseudonym_salt.hex(),
            "fees": {"query_fee": g.fees.query_fee, "exchange_fee": g.fees.exchange_fee},
            "validators": [
                {"index": i, "name": v.name, "public_key": v.public_key.hex()}
                for i, v in enumerate(g.validators)
            ],
        }

    @app.get("/v1/accounts/{key}", summary="An account's balance and client registration")
    async def account(key: str) -> dict[str, Any]:
        raw = _hex(key, "account key", 32)
        if len(raw) != 32:
            raise ApiError(400, "bad_key", "an account key is 32 bytes (64 hex characters)")
        reg = views.client(node.store_state, raw)
        return {
            "account": raw.hex(),
            "balance": views.balance(node.store_state, raw),
            "client": None
            if reg is None
            else {"name": reg.name, "agency": reg.agency.hex(), "height": reg.height},
            "height": node.store.latest_height,
        }

    @app.post("/v1/clients", summary="Register a query user (operator); waits for the commit")
    async def register_client(request: Request) -> Any:
        require_operator(request)
        doc = await read_object(request)
        deposit = doc.get("deposit", 0)
        name = doc.get("name", "client")
        if not isinstance(deposit, int) or isinstance(deposit, bool) or deposit < 0:
            raise ApiError(400, "invalid_request", "deposit: expected a non-negative integer")
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ApiError(400, "invalid_request", "name: expected 1..64 characters")
        body = RegisterClient(key_field(doc, "client"), name, deposit)
        return await agency_tx(body)

    @app.post("/v1/subjects", summary="Register a subject's key for its pseudonym (operator)")
    async def register_subject(request: Request) -> Any:
        require_operator(request)
        doc = await read_object(request)
        body = RegisterSubject(key_field(doc, "pseudonym"), key_field(doc, "subject"))
        return await agency_tx(body)

    @app.post("/v1/queries", summary="A lender's signed query; answers with the sealed report")
    async def post_query(request: Request) -> Any:
        # Served by _Limits' fast path in the running node; this route documents it (and
        # answers when the app runs without that middleware), with the very same handler.
        return JSONResponse(await answer_query_body(node, await read_body(request)))

    @app.get(
        "/v1/subjects/{pseudonym_hex}/queries",
        summary="A subject's query records: who asked, when, why, which agencies served, fee",
        description="Signed by the subject (time_ms and signature: Ed25519 in the subject-read "
        "domain over pseudonym || u64be(time_ms)) or called with the operator token.",
    )
    async def subject_queries(
        request: Request,
        pseudonym_hex: str,
        time_ms: Annotated[int | None, Query()] = None,
        signature: Annotated[str | None, Query()] = None,
    ) -> Any:
        pn = _hex(pseudonym_hex, "pseudonym", 32)
        if len(pn) != 32:
            raise ApiError(400, "bad_pseudonym", "a pseudonym is 32 bytes (64 hex characters)")
        state = node.store_state
        if signature is None:
            require_operator(request)
        else:
            subject_key = views.subject_key(state, pn)
            if subject_key is None:
                raise ApiError(404, "unknown_subject", "no subject is registered for it")
            sig = _hex(signature, "signature", 64)
            now = time.time_ns() // 1_000_000
            if time_ms is None or abs(time_ms - now) > 300_000:
                raise ApiError(401, "stale_signature", "time_ms must be within 5 minutes of now")
            payload = pn + time_ms.to_bytes(8, "big")
            if len(sig) != 64 or not verify(
                subject_key, Domain.SUBJECT_READ, node.genesis.chain_id, payload, sig
            ):
                raise ApiError(401, "bad_signature", "not signed by the subject's key")
        keys = list(node.genesis.validator_keys)
        out = []
        for e in views.audit_entries(node.store.state_items, pn):
            reg = views.client(state, e.client)
            out.append(
                {
                    "tx": e.tx_hash.hex(),
                    "client": e.client.hex(),
                    "client_name": None if reg is None else reg.name,
                    "purpose": e.purpose.label,
                    "categories": [c.label for c in e.categories],
                    "mode": int(e.mode),
                    "agency": keys.index(e.agency) if e.agency in keys else e.agency.hex(),
                    "serving": [keys.index(k) if k in keys else k.hex() for k in e.serving],
                    "fee": e.fee,
                    "time_ms": e.time_ms,
                    "height": e.height,
                }
            )
        return {"pseudonym": pn.hex(), "queries": out}

    return app


async def wait_all(node: Node, hashes: list[bytes]) -> None:
    await node.executor.wait_committed(hashes)


def tx_json(node: Node, h: bytes) -> dict[str, Any]:
    """Status of tx ``h``: committed (with height, index, ok, code, detail) or pending."""
    recent = node.executor.outcome(h)  # in memory for recent blocks: no store reads
    if recent is not None:
        height, index, outcome = recent
        out: dict[str, Any] = {
            "hash": h.hex(),
            "status": "committed",
            "height": height,
            "index": index,
        }
        out["ok"] = outcome.ok
        if not outcome.ok:
            out["error"] = outcome.code
            out["detail"] = outcome.detail
        return out
    loc = node.store.tx_location(h)
    if loc is not None:
        height, index = loc
        out = {
            "hash": h.hex(),
            "status": "committed",
            "height": height,
            "index": index,
        }
        result = views.tx_result(node.store_state, h)
        if result is not None:
            out["ok"] = result.ok
            if not result.ok:
                out["error"] = result.code
                out["detail"] = result.detail
        return out
    if h in node.mempool:
        return {"hash": h.hex(), "status": "pending"}
    raise ApiError(404, "unknown_tx", f"transaction {h.hex()} is neither committed nor pending")


def _kind(tx: bytes) -> str:
    try:
        return decode_tx(tx).kind
    except CodecError:
        return "?"


async def serve_api(
    node: Node, host: str, port: int, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the API on ``host:port`` until cancelled; reports the bound port. While the event
    loop lags, the server holds its input (``api.hold_input_lag_ms``, see node.http_gate)."""
    app = build_asgi(node)
    hold_ms = node.config.api.hold_input_lag_ms
    gate = None
    if hold_ms:
        gate = http_gate.LoopLag(
            hold_above_s=hold_ms / 1000,
            release_below_s=hold_ms / 3000,
            on_hold=node.metrics.api_input_holds.inc,
        )
        node.metrics.event_loop_lag.set_function(lambda: gate.lag_s)
    connections = http_server.Connections(
        limit=node.config.api.max_connections,
        on_refused=node.metrics.api_connections_refused.inc,
    )
    node.metrics.api_connections.set_function(lambda: connections.open)
    async with trio.open_nursery() as nursery:
        if gate is not None:
            await nursery.start(gate.run)
        bound = await nursery.start(
            functools.partial(
                http_server.serve,
                app,
                host,
                port,
                keep_alive_s=KEEP_ALIVE_S,
                max_head_bytes=MAX_HEAD_BYTES,
                gate=gate,
                connections=connections,
            )
        )
        task_status.started(bound)
