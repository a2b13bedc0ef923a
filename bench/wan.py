"""WAN emulation for loopback benchmarks: a delaying TCP proxy (kernel netem is not available).

    python -m bench.wan --link LISTEN_PORT=HOST:PORT [--link ...] [--latency-ms 20]
        [--jitter-ms 5] [--loss 0.01] [--seed 1]

Each link listens on ``127.0.0.1:LISTEN_PORT``; every connection accepted there gets its own
connection to ``HOST:PORT`` and both directions are pumped through a delay line: a chunk read at
time ``t`` is written at ``max(previous write time of that direction, t + delay)``, with
``delay = latency ± jitter`` (uniform) plus, when the loss draw hits, one retransmission timeout
(:func:`rto_ms`). So bytes are never reordered, dropped or altered -- libp2p's Noise + Yamux runs
through it unchanged -- and each direction is FIFO. Reading goes on while chunks wait (at most
:data:`QUEUE_BYTES` queued per direction, then the reader stops and TCP pushes back on the
sender), so throughput is not capped at one chunk per latency. EOF on one side becomes
``send_eof`` on the other once the queued bytes are written; an error on either side (reset,
broken pipe) closes both; a target that cannot be reached closes the accepted connection. One
connection's failure never stops the proxy or the other connections.

What it emulates: a one-way propagation delay (RTT grows by twice ``--latency-ms``), jitter
without reordering, and loss *as TCP makes it look to the application*: the lost chunk -- and,
FIFO, everything behind it -- arrives one RTO late (head-of-line blocking). What it does not:
no bandwidth cap or queueing delay from a bottleneck link; loss is drawn per chunk read (up to
:data:`CHUNK` bytes, about one message for small consensus traffic), not per packet, and never
shrinks a congestion window; the TCP handshake itself is not delayed (the client's ``connect``
completes locally, its first bytes then take the latency); and underneath it is the kernel's own
loopback TCP, whose windows, buffers and ACK clocking have nothing of a WAN (the proxy's queue
acts as the in-flight window: at most :data:`QUEUE_BYTES` per latency, one way). Delivery times
are rounded up to a 1 ms grid (:data:`TICK_S`): never early, at most a tick late.

Cost: every chunk goes through Python and trio, on the order of 100 us of proxy CPU per chunk
(about twice a plain trio forwarder), so one proxy process carries roughly ten thousand chunks
a second; a large cluster's links can be split over several ``bench.wan`` processes.

Determinism: each direction of each connection draws from its own ``random.Random`` seeded by
:func:`direction_seed` (seed, link index, connection number on that link, direction), so the
sequence of per-chunk delays is reproducible; where the kernel splits the byte stream into
chunks is not.

The CLI prints ``bench.wan: ready <n> links`` (flushed) once every link listens, runs until
SIGINT or SIGTERM, then prints one JSON line of :meth:`WanStats.as_dict`. Exit status 0 after a
signal, 1 when a listen port cannot be bound, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import math
import random
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal

import trio

from node.tasks import TaskStatus

CHUNK = 65536
"""Bytes read from a socket at once: one chunk of the delay line."""

QUEUE_BYTES = 4 * 1024 * 1024
"""Bytes a direction may hold waiting for delivery before it stops reading (backpressure)."""

MIN_RTO_MS = 200.0
"""Linux's minimum TCP retransmission timeout."""

TICK_S = 0.001
"""Delivery times are rounded up to this grid (see :class:`_Clock`): at most this late."""

CONNECT_TIMEOUT_S = 10.0
"""How long to try to reach a link's target before closing the accepted connection."""

Direction = Literal["to_target", "to_client"]


def rto_ms(latency_ms: float) -> float:
    """The retransmission timeout a lost chunk costs: ``max(200 ms, RTT)``, RTT = 2 * latency."""
    return max(MIN_RTO_MS, 2.0 * latency_ms)


@dataclass(frozen=True)
class WanParams:
    """The emulated path, the same in both directions."""

    latency_ms: float = 0.0
    """One-way delay added in each direction (the RTT grows by twice this)."""
    jitter_ms: float = 0.0
    """Uniform +- jitter on each chunk's delay (never reorders bytes); at most ``latency_ms``."""
    loss: float = 0.0
    """Probability a chunk is "lost": delivered one RTO late (never dropped), in ``[0, 1)``."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"latency_ms must be >= 0, not {self.latency_ms!r}")
        if not (math.isfinite(self.jitter_ms) and 0 <= self.jitter_ms <= self.latency_ms):
            raise ValueError(f"jitter_ms must be in [0, latency_ms], not {self.jitter_ms!r}")
        if not 0 <= self.loss < 1:
            raise ValueError(f"loss must be in [0, 1), not {self.loss!r}")

    @property
    def emulated(self) -> bool:
        """Whether anything is delayed (else the links need no proxy)."""
        return self.latency_ms > 0 or self.jitter_ms > 0 or self.loss > 0

    def describe(self) -> dict[str, Any]:
        """The network as a benchmark's results name it."""
        return {
            "kind": "delaying TCP proxy (bench.wan)" if self.emulated else "loopback",
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "loss": self.loss,
            "seed": self.seed if self.emulated else None,
        }


@dataclass(frozen=True)
class Link:
    """Connections to ``127.0.0.1:listen_port`` are forwarded to ``target_host:target_port``.

    ``listen_port`` 0 lets the system pick a free port; :attr:`LinkStats.port` says which."""

    listen_port: int
    target_host: str
    target_port: int


@dataclass
class LinkStats:
    """What went through one link so far (read it any time from the proxy's trio thread)."""

    link: Link
    port: int = 0
    """The port actually listened on."""
    connections: int = 0
    """Connections accepted."""
    active: int = 0
    """Connections open now."""
    connect_failures: int = 0
    """Accepted connections closed because the target could not be reached."""
    resets: int = 0
    """Connections ended by an error (reset, broken pipe) rather than by EOF both ways."""
    bytes_to_target: int = 0
    bytes_to_client: int = 0
    chunks_to_target: int = 0
    chunks_to_client: int = 0
    lost_to_target: int = 0
    """Chunks delivered one RTO late by a loss draw, client to target."""
    lost_to_client: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures, the link as ``listen``/``target`` strings."""
        out: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "target": f"{self.link.target_host}:{self.link.target_port}",
        }
        out.update({k: v for k, v in asdict(self).items() if k not in ("link", "port")})
        return out


@dataclass
class WanStats:
    """Counters of a running :func:`serve_links` (the value its ``started()`` gives), one
    :class:`LinkStats` per link in the order the links were given."""

    params: WanParams
    links: list[LinkStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Parameters, each link's figures and their totals, JSON-ready."""
        per_link = [s.as_dict() for s in self.links]
        totals: dict[str, int] = {}
        for figures in per_link:
            for key, value in figures.items():
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
        return {"params": asdict(self.params), "links": per_link, "totals": totals}


def direction_seed(seed: int, link_index: int, connection: int, direction: Direction) -> str:
    """The seed of one direction of one connection: stable across runs and Python processes."""
    return f"bench.wan/{seed}/{link_index}/{connection}/{direction}"


def chunk_delay(rng: random.Random, params: WanParams) -> tuple[float, bool]:
    """The delay of one chunk in seconds, and whether the loss draw hit (adding the RTO).

    Always two draws (jitter, then loss), so changing one parameter leaves the other's draws
    unchanged."""
    jitter_ms = rng.uniform(-1.0, 1.0) * params.jitter_ms
    lost = rng.random() < params.loss
    ms = params.latency_ms + jitter_ms + (rto_ms(params.latency_ms) if lost else 0.0)
    return max(0.0, ms) / 1000.0, lost


class _Clock:
    """The one timer of a :func:`serve_links`: wakes each delay line's writer when its first
    chunk is due.

    Trio's timers are cancel scopes (each expiry raises and catches ``Cancelled``): a timer per
    chunk was about a third of the proxy's CPU. Here one timer serves every connection and due
    times are rounded up to :data:`TICK_S`, so chunks falling due together cost one expiry.
    Rounding up only ever delivers late, by less than a tick, never early."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _DelayLine]] = []
        self._order = itertools.count()
        self._timer: trio.CancelScope | None = None

    def wake_at(self, at: float, line: _DelayLine) -> None:
        """Unpark ``line``'s writer once ``at`` has passed."""
        at = max(at, math.ceil(at / TICK_S) * TICK_S)
        heapq.heappush(self._due, (at, next(self._order), line))
        if self._timer is not None and at < self._timer.deadline:
            self._timer.deadline = at

    async def run(self) -> None:
        """Wake writers as their chunks fall due, until cancelled."""
        due = self._due
        while True:
            with trio.CancelScope(deadline=due[0][0] if due else math.inf) as timer:
                self._timer = timer
                try:
                    await trio.sleep_forever()
                finally:
                    self._timer = None
            now = trio.current_time()
            while due and due[0][0] <= now:
                heapq.heappop(due)[2].writer.unpark_all()


class _DelayLine:
    """One direction's chunks waiting for their delivery time, FIFO, bounded in bytes.

    While its writer is parked, the line has one wake-up registered with the clock for its first
    chunk (none when empty: :meth:`push` registers it)."""

    def __init__(self, clock: _Clock, capacity: int) -> None:
        self.clock = clock
        self.capacity = capacity
        self.chunks: deque[tuple[float, bytes, bool]] = deque()
        """(delivery time, data, delayed by a loss draw)"""
        self.queued = 0
        self.eof = False
        self.writer = trio.lowlevel.ParkingLot()
        self.writer_parked = False
        self._room: trio.Event | None = None

    def push(self, at: float, data: bytes, lost: bool, now: float) -> None:
        """Queue a chunk (never blocks: the reader waits for room before it reads)."""
        self.chunks.append((at, data, lost))
        self.queued += len(data)
        if self.writer_parked and len(self.chunks) == 1:
            if at <= now:  # no delay: no tick either
                self.writer.unpark_all()
            else:
                self.clock.wake_at(at, self)

    def close(self) -> None:
        """No more chunks: the writer passes the EOF on once the line is empty."""
        self.eof = True
        if self.writer_parked and not self.chunks:
            self.writer.unpark_all()

    async def wait_for_room(self) -> None:
        """Backpressure: wait while the line holds ``capacity`` bytes or more."""
        while self.queued >= self.capacity:
            self._room = trio.Event()
            await self._room.wait()

    def delivered(self, n: int) -> None:
        """``n`` bytes written: make room, wake the reader if it waits for it."""
        self.queued -= n
        if self._room is not None:
            self._room.set()
            self._room = None


async def _read_side(
    src: trio.SocketStream, line: _DelayLine, params: WanParams, rng: random.Random
) -> None:
    """Read chunks as they come and queue each with its delivery time, then the EOF."""
    last = -math.inf
    while True:
        await line.wait_for_room()
        data = await src.receive_some(CHUNK)
        if not data:
            break
        delay, lost = chunk_delay(rng, params)
        now = trio.current_time()
        last = max(last, now + delay)
        line.push(last, data, lost, now)
    line.close()


async def _write_side(
    dst: trio.SocketStream, line: _DelayLine, stats: LinkStats, direction: Direction
) -> None:
    """Write each chunk once due (chunks due together in one send), then pass the EOF on."""
    chunks = line.chunks
    while True:
        now = trio.current_time()
        if chunks and chunks[0][0] <= now:
            _, data, first_lost = chunks.popleft()
            batch, size, lost = [data], len(data), int(first_lost)
            while chunks and chunks[0][0] <= now and size < CHUNK:
                _, data, also_lost = chunks.popleft()
                batch.append(data)
                size += len(data)
                lost += also_lost
            await dst.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
            line.delivered(size)
            if direction == "to_target":
                stats.bytes_to_target += size
                stats.chunks_to_target += len(batch)
                stats.lost_to_target += lost
            else:
                stats.bytes_to_client += size
                stats.chunks_to_client += len(batch)
                stats.lost_to_client += lost
            continue
        if not chunks and line.eof:
            break
        if chunks:
            line.clock.wake_at(chunks[0][0], line)
        line.writer_parked = True
        try:
            await line.writer.park()
        finally:
            line.writer_parked = False
    await dst.send_eof()


async def _pump(
    src: trio.SocketStream,
    dst: trio.SocketStream,
    params: WanParams,
    rng: random.Random,
    stats: LinkStats,
    direction: Direction,
    line: _DelayLine,
) -> None:
    """One direction of a connection through its delay line, until EOF is delivered."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_write_side, dst, line, stats, direction)
        await _read_side(src, line, params, rng)


def _nodelay(stream: trio.SocketStream) -> None:
    """Small writes (consensus votes) go out at once, not after Nagle's wait for an ACK."""
    stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)


@dataclass
class _LinkState:
    """What every connection of one link shares."""

    index: int
    stats: LinkStats
    params: WanParams
    queue_bytes: int
    clock: _Clock
    next_connection: int = 0


async def _serve_connection(state: _LinkState, client: trio.SocketStream) -> None:
    """Connect to the target and pump both ways; never raises for a network error."""
    stats, link = state.stats, state.stats.link
    connection = state.next_connection
    state.next_connection += 1
    stats.connections += 1
    stats.active += 1
    try:
        async with client:
            target: trio.SocketStream | None = None
            with trio.move_on_after(CONNECT_TIMEOUT_S):
                with contextlib.suppress(OSError):
                    target = await trio.open_tcp_stream(link.target_host, link.target_port)
            if target is None:
                stats.connect_failures += 1
                return
            async with target:
                try:
                    _nodelay(client)
                    _nodelay(target)
                    seed, index = state.params.seed, state.index
                    up = random.Random(direction_seed(seed, index, connection, "to_target"))
                    down = random.Random(direction_seed(seed, index, connection, "to_client"))
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            _pump, client, target, state.params, up, stats, "to_target",
                            _DelayLine(state.clock, state.queue_bytes),
                        )
                        nursery.start_soon(
                            _pump, target, client, state.params, down, stats, "to_client",
                            _DelayLine(state.clock, state.queue_bytes),
                        )
                except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    stats.resets += 1
    finally:
        stats.active -= 1


async def serve_links(
    links: Sequence[Link],
    params: WanParams,
    *,
    queue_bytes: int = QUEUE_BYTES,
    task_status: TaskStatus[WanStats] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every link until cancelled; ``started(stats)`` once every listener is bound.

    ``stats.links[i]`` counts ``links[i]``; ``queue_bytes`` bounds each direction's delay line.
    Raises ``OSError`` (before ``started``) when a listen port cannot be bound."""
    if queue_bytes < 1:
        raise ValueError(f"queue_bytes must be >= 1, not {queue_bytes}")
    stats = WanStats(params)
    listeners: list[trio.SocketListener] = []
    try:
        for link in links:
            bound = await trio.open_tcp_listeners(link.listen_port, host="127.0.0.1")
            listeners.extend(bound)
            port = bound[0].socket.getsockname()[1]
            stats.links.append(LinkStats(link, port=port))
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    clock = _Clock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        for index, (listener, link_stats) in enumerate(zip(listeners, stats.links, strict=True)):
            state = _LinkState(index, link_stats, params, queue_bytes, clock)
            nursery.start_soon(
                partial(trio.serve_listeners, partial(_serve_connection, state), [listener])
            )
        task_status.started(stats)


def _link_arg(spec: str) -> Link:
    """``LISTEN_PORT=HOST:PORT`` -> :class:`Link` (an argparse type)."""
    listen, sep, target = spec.partition("=")
    host, colon, port = target.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not (sep and colon and host):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected LISTEN_PORT=HOST:PORT")
    try:
        ports = int(listen), int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: ports must be integers") from None
    if not all(1 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"{spec!r}: ports must be 1..65535")
    return Link(ports[0], host, ports[1])


def _parse(argv: Sequence[str] | None) -> tuple[list[Link], WanParams]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--link", type=_link_arg, action="append", required=True, metavar="LISTEN_PORT=HOST:PORT",
        help="listen on 127.0.0.1:LISTEN_PORT, forward to HOST:PORT (repeatable)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +- jitter")
    parser.add_argument("--loss", type=float, default=0.0, help="chunk loss probability")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    links: list[Link] = args.link
    ports = [link.listen_port for link in links]
    if len(set(ports)) != len(ports):
        parser.error("--link: each LISTEN_PORT may be given once")
    if not (math.isfinite(args.latency_ms) and args.latency_ms >= 0):
        parser.error("--latency-ms must be a number >= 0")
    if not (math.isfinite(args.jitter_ms) and 0 <= args.jitter_ms <= args.latency_ms):
        parser.error("--jitter-ms must be a number >= 0 and <= --latency-ms")
    if not 0 <= args.loss < 1:
        parser.error("--loss must be a probability >= 0 and < 1")
    return links, WanParams(args.latency_ms, args.jitter_ms, args.loss, args.seed)


async def _run(links: list[Link], params: WanParams) -> WanStats | None:
    """Serve until SIGINT or SIGTERM; the final stats (None when a port cannot be bound)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                stats: WanStats = await nursery.start(serve_links, links, params)
            except OSError as exc:
                print(f"bench.wan: cannot listen: {exc}", file=sys.stderr)
                return None
            print(f"bench.wan: ready {len(links)} links", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until a signal, print the stats as one JSON line."""
    links, params = _parse(argv)
    stats = trio.run(_run, links, params)
    if stats is None:
        return 1
    print(json.dumps(stats.as_dict(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
