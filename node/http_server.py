"""The node's HTTP/1.1 server: h11 on trio sockets, serving the API's ASGI application in the
node's own trio loop.

Why not a general-purpose ASGI server: a lender's query costs the answering node one HTTP request,
and on a loaded node the server's share of it was a third of the main thread. hypercorn 0.18.0
(patched by the node to write each answer at once and to keep one keep-alive timer per
connection) took ~1.35 million instructions per request of a query's size answered with a
report's; this server takes ~0.7 million (callgrind; both ends of the round trip, the load
generator's client included: 1.55 -> 0.98 million, ``python -m bench.instructions --only
http_round_trip``). The difference is structure, not parsing -- h11 parses and serializes for
both: here a connection is one task that parses a request, runs the application in that task
(no task, stream object or event queue per request), and writes the head and body of an answer
in one ``send_all``.

What it does, and what the node relies on:

- keep-alive: a connection waits ``keep_alive_s`` for its next request (and for the head of a
  request it has begun), then is closed; a request in progress is never cut by that timer --
  the application bounds its own time (``node.api``'s limits) -- nor is one held at the gate;
- input held while the event loop lags (``gate``, :class:`node.http_gate.LoopLag`): bytes a
  connection read are not parsed, and it reads no more, until the gate opens; requests already
  parsed are served;
- request heads above ``max_head_bytes`` are refused (431) and malformed requests answered 400,
  with a JSON ``{"error", "detail"}`` body like every error of the API, then the connection is
  closed;
- a request body reaches the application chunk by chunk as the client sends it (``more_body``),
  so the application's size limit applies however it is sent (Content-Length or chunked); an
  answer given before the body was read leaves the connection open if the rest of the body
  (at most ``DRAIN_MAX_BYTES``) came with the request's head, in the same read; closed otherwise;
- a client that leaves in the middle of its body, or breaks its framing, is an ``http.disconnect``
  to the application; one that takes no bytes of an answer for ``keep_alive_s`` is dropped;
- ``Expect: 100-continue`` is answered when the application first reads the body;
- HTTP/1.0 and ``Connection: close`` close the connection after the answer; pipelined requests
  are answered in order;
- an exception of the application is logged; a request none of whose answer was written gets a
  500, and the connection is closed. No exception of a connection reaches the listener (one bad
  connection cannot stop the server, nor the node whose loop it shares);
- a HEAD request is answered with the headers of the GET and no body;
- at most ``Connections.limit`` connections are served at once: one more is answered 503
  ``busy`` (``Connection: close``, ``Retry-After: 1``) once its request begins to arrive, without
  the request being parsed, and closed; with REFUSING_MAX such answers under way, it is closed at
  once. Each open connection holds a file descriptor, and the node's store and peers need
  theirs: unbounded, a flood of idle connections would leave LevelDB unable to open a table.

Cancelling :func:`serve` stops everything at once, as the node does when it stops.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import h11
import trio

from node.http_gate import LoopLag
from node.tasks import TaskStatus

log = logging.getLogger("creditnet.api.server")

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Any], Awaitable[None]]

MAX_RECV = 64 * 1024
DRAIN_MAX_BYTES = 64 * 1024
"""Most of an unread request body read off after its answer to keep the connection."""
ASGI_VERSIONS = {"version": "3.0", "spec_version": "2.3"}
REFUSING_MAX = 64
"""Connections over the limit being answered 503 at once; beyond, one is closed unanswered."""
REFUSE_LINGER_S = 1.0
"""The most a refused connection is kept: waiting for its request to begin, writing the 503,
then reading off its input (at most DRAIN_MAX_BYTES, so that closing it does not reset the
connection before the client reads the answer)."""


@dataclass
class Connections:
    """The server's connection limit and counts (the node exports them as metrics)."""

    limit: int = 0
    """Most connections served at once; 0: no limit."""
    open: int = 0
    refusing: int = 0
    """Connections over the limit being answered now."""
    on_refused: Callable[[], object] | None = None
    """Called for each connection refused for being over the limit (answered 503 or, with
    REFUSING_MAX answers under way, closed at once)."""


class _Closed(Exception):
    """The peer closed the connection, or it broke."""


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode("ascii")
        return cls.value


class _Connection:
    """One client connection: its h11 state machine and socket, and the exchange in progress."""

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        max_head_bytes: int,
        gate: LoopLag | None,
        write_timeout_s: float,
    ) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.gate = gate
        self.write_timeout_s = write_timeout_s
        self.pending: Any = None
        """An event read ahead of the application (the end of a body, seen with its data)."""

    async def next_event(self, read_deadline: float = math.inf) -> Any:
        """The next h11 event, reading (and waiting for the gate) as needed; None if nothing
        more arrives by ``read_deadline`` (the gate's wait does not count against it)."""
        if self.pending is not None:
            event, self.pending = self.pending, None
            return event
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = None
            try:
                with trio.move_on_at(read_deadline):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _Closed from exc
            if data is None:
                return None
            if data and self.gate is not None:
                # Held here, read but not parsed; the next read waits for this one, so the rest
                # stays in the socket, where TCP flow control pushes back on the client.
                await self.gate.wait_open()
            conn.receive_data(data)  # b"": the peer closed

    async def send(self, data: bytes) -> None:
        """Write ``data``; a client that takes none of it for ``write_timeout_s`` is gone."""
        try:
            with trio.move_on_after(self.write_timeout_s) as timer:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Closed from exc
        if timer.cancelled_caught:
            raise _Closed

    async def refuse(self, status: int, code: str, detail: str) -> None:
        """A JSON error answer that closes the connection, if h11 still allows an answer."""
        body = json.dumps({"error": code, "detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"date", _Date.now()),
        ]
        try:
            data = self.conn.send(h11.Response(status_code=status, headers=headers))
            data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
            await self.send(data)
        except (h11.LocalProtocolError, _Closed):
            pass  # the connection is closed next either way


class _Exchange:
    """One request's ASGI ``receive`` and ``send``."""

    __slots__ = ("bodiless", "body_done", "c", "done", "finished", "head", "started")

    def __init__(self, connection: _Connection, method: bytes) -> None:
        self.c = connection
        self.bodiless = method == b"HEAD"
        """An answer to HEAD has the headers of one to GET and no body (h11 frames it so)."""
        self.head: dict[str, Any] | None = None
        """``http.response.start``, held until the body so that both leave in one write."""
        self.started = False
        self.finished = False
        self.body_done = False
        self.done: trio.Event | None = None

    async def receive(self) -> dict[str, Any]:
        if self.body_done:
            # After the request's body: ``http.disconnect`` once the answer is complete.
            if not self.finished:
                if self.done is None:
                    self.done = trio.Event()
                await self.done.wait()
            return {"type": "http.disconnect"}
        c = self.c
        try:
            if c.conn.client_is_waiting_for_100_continue and not self.started:
                await c.send(c.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            event = await c.next_event()
        except (_Closed, h11.RemoteProtocolError):
            event = None  # the client left, or broke its body: as the ASGI spec says, a disconnect
        kind = type(event)
        if kind is h11.Data:
            # The end of the body often arrives with it: say so now rather than in a message
            # of its own.
            after = c.conn.next_event()
            if type(after) is h11.EndOfMessage:
                self.body_done = True
                return {"type": "http.request", "body": bytes(event.data), "more_body": False}
            if after is not h11.NEED_DATA:
                c.pending = after
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if kind is h11.EndOfMessage:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.body_done = True  # closed in the middle of the body: nothing more will come
        self.finished = True  # and no answer can reach the client
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.head, self.started = message, True
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            return
        conn = self.c.conn
        data = b""
        if self.head is not None:
            head, self.head = self.head, None
            headers = [*head.get("headers", ()), (b"date", _Date.now())]
            data = conn.send(h11.Response(status_code=head["status"], headers=headers))
        body = message.get("body", b"")
        if body and not self.bodiless:
            data += conn.send(h11.Data(data=body))
        if not message.get("more_body", False):
            data += conn.send(h11.EndOfMessage())
            self.finished = True
        if data:
            await self.c.send(data)
        if self.finished and self.done is not None:
            self.done.set()


def _scope(request: h11.Request, client: Any, server: Any) -> dict[str, Any]:
    raw_path, _, query = request.target.partition(b"?")
    return {
        "type": "http",
        "asgi": ASGI_VERSIONS,
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": list(request.headers),  # names lower-cased by h11
        "client": client,
        "server": server,
    }


def _head_size(request: h11.Request) -> int:
    """The size of a request's line and headers, as sent (give or take whitespace)."""
    size = len(request.method) + len(request.target) + 12
    for name, value in request.headers:
        size += len(name) + len(value) + 4
    return size


async def _drain(c: _Connection) -> bool:
    """Read off the rest of a request body the application did not read; False unless all of
    it, within DRAIN_MAX_BYTES, came in the read that brought the head (trio checks for
    cancellation before reading the socket, so nothing more is read here); the connection is
    then closed."""
    read = 0
    with trio.move_on_after(0):  # only what has already arrived
        while read <= DRAIN_MAX_BYTES:
            event = await c.next_event()
            if type(event) is h11.EndOfMessage:
                return True
            if type(event) is not h11.Data:
                return False
            read += len(event.data)
    return False


async def serve_connection(
    app: App,
    stream: trio.SocketStream,
    *,
    keep_alive_s: float,
    max_head_bytes: int,
    gate: LoopLag | None = None,
) -> None:
    """Serve one connection until the client closes it, it idles ``keep_alive_s``, it cannot be
    kept (HTTP/1.0, ``Connection: close``, an error), or the task is cancelled."""
    c = _Connection(stream, max_head_bytes=max_head_bytes, gate=gate, write_timeout_s=keep_alive_s)
    try:
        sock = stream.socket
        client, server = tuple(sock.getpeername()[:2]), tuple(sock.getsockname()[:2])
        while True:
            event = await c.next_event(read_deadline=trio.current_time() + keep_alive_s)
            if type(event) is not h11.Request:
                return  # idle past the keep-alive time (None), or closed by the client
            if _head_size(event) > max_head_bytes:
                # h11 bounds only a head still incomplete; one read can bring a whole larger one.
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            ex = _Exchange(c, event.method)
            try:
                await app(_scope(event, client, server), ex.receive, ex.send)
            except (_Closed, h11.RemoteProtocolError):
                raise
            except Exception:
                log.exception("%s %s failed", event.method.decode(), event.target.decode())
                if c.conn.our_state is h11.SEND_RESPONSE:  # nothing written yet
                    await c.refuse(500, "internal", "internal error")
                return
            if not ex.finished:
                if c.conn.our_state is h11.SEND_RESPONSE:
                    log.error("%s %s: no answer", event.method.decode(), event.target.decode())
                    await c.refuse(500, "internal", "internal error")
                return
            if c.conn.their_state is h11.SEND_BODY and not await _drain(c):
                return
            if c.conn.our_state is not h11.DONE or c.conn.their_state is not h11.DONE:
                return  # HTTP/1.0 or Connection: close
            c.conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if c.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            if exc.error_status_hint == 431:
                detail = f"request head above {max_head_bytes} bytes"
                await c.refuse(431, "header_too_large", detail)
            else:
                detail = f"not a valid HTTP/1.1 request: {exc}"
                await c.refuse(exc.error_status_hint, "bad_http", detail)
    except _Closed:
        pass
    except Exception:  # a bug here must not reach the listener, which would stop the server
        log.exception("HTTP connection failed")
    finally:
        await trio.aclose_forcefully(stream)


async def serve(
    app: App,
    host: str,
    port: int,
    *,
    keep_alive_s: float = 30.0,
    max_head_bytes: int = 64 * 1024,
    gate: LoopLag | None = None,
    connections: Connections | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; reports the bound port (``port`` 0: one
    the system chose). ``connections``: the limit, and where the counts are kept."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    counts = connections if connections is not None else Connections()

    async def handler(stream: trio.SocketStream) -> None:
        if counts.limit and counts.open >= counts.limit:
            if counts.on_refused is not None:
                try:
                    counts.on_refused()
                except Exception:  # a metrics bug must not reach the listener
                    log.exception("counting a refused connection failed")
            await _refuse_connection(stream, counts)
            return
        counts.open += 1
        try:
            await serve_connection(
                app, stream, keep_alive_s=keep_alive_s, max_head_bytes=max_head_bytes, gate=gate
            )
        finally:
            counts.open -= 1

    await trio.serve_listeners(handler, listeners)  # type: ignore[arg-type]


async def _refuse_connection(stream: trio.SocketStream, counts: Connections) -> None:
    """Answer a connection over the limit 503 ``busy`` once its request begins to arrive (some
    clients take bytes that come before their request for a broken connection, not an answer),
    without parsing it, then close it; at most REFUSING_MAX at once (beyond, it is closed
    unanswered), each for at most REFUSE_LINGER_S."""
    if counts.refusing >= REFUSING_MAX:
        await trio.aclose_forcefully(stream)
        return
    counts.refusing += 1
    body = json.dumps(
        {
            "error": "busy",
            "detail": f"this agency serves {counts.limit} API connections at once, its limit "
            "(api.max_connections); retry later",
        }
    ).encode()
    try:
        with trio.move_on_after(REFUSE_LINGER_S):
            first = await stream.receive_some(MAX_RECV)
            if not first:
                return  # the client left without asking
            head = (
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\ndate: %s\r\n"
                b"\r\n" % (len(body), _Date.now())
            )
            await stream.send_all(head if first.startswith(b"HEAD ") else head + body)
            await stream.send_eof()
            read = len(first)
            while read < DRAIN_MAX_BYTES:
                data = await stream.receive_some(MAX_RECV)
                if not data:
                    break
                read += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client left: nothing more to tell it
    finally:
        counts.refusing -= 1
        await trio.aclose_forcefully(stream)
