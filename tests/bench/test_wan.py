"""The WAN-emulating proxy (bench.wan): real sockets on 127.0.0.1 through the delay line, its
pure delay draws, and the CLI."""

from __future__ import annotations

import json
import random
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import pytest
import trio

from bench.wan import (
    QUEUE_BYTES,
    Direction,
    Link,
    WanParams,
    WanStats,
    chunk_delay,
    direction_seed,
    main,
    rto_ms,
    serve_links,
)

Handler = Callable[[trio.SocketStream], Awaitable[None]]
ROOT = Path(__file__).resolve().parents[2]


async def echo(stream: trio.SocketStream) -> None:
    """Send back every byte; pass the EOF on."""
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


async def serve(nursery: trio.Nursery, handler: Handler) -> int:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; returns its port."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


@asynccontextmanager
async def proxy(
    links: list[Link], params: WanParams, queue_bytes: int = QUEUE_BYTES
) -> AsyncIterator[WanStats]:
    """Run ``serve_links`` for the body's duration (bounded in time); yields its stats."""
    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            run = partial(serve_links, links, params, queue_bytes=queue_bytes)
            stats: WanStats = await nursery.start(run)
            yield stats
            nursery.cancel_scope.cancel()


async def receive_all(stream: trio.SocketStream) -> bytes:
    """Everything until EOF."""
    chunks = []
    while data := await stream.receive_some(65536):
        chunks.append(data)
    return b"".join(chunks)


async def test_large_payload_arrives_intact_and_in_order_both_ways() -> None:
    # 5 MB of seeded random bytes through an echo target, jitter as large as the latency (so
    # draws would reorder chunks if the delay line did not keep FIFO) and a small queue (so the
    # reader meets backpressure).
    payload = random.Random(5).randbytes(5_000_000)
    params = WanParams(latency_ms=5, jitter_ms=5, loss=0.01, seed=3)
    async with trio.open_nursery() as servers:
        target = await serve(servers, echo)
        async with proxy([Link(0, "127.0.0.1", target)], params, queue_bytes=256 * 1024) as stats:
            client = await trio.open_tcp_stream("127.0.0.1", stats.links[0].port)
            async with client, trio.open_nursery() as nursery:

                async def send() -> None:
                    await client.send_all(payload)
                    await client.send_eof()

                nursery.start_soon(send)
                echoed = await receive_all(client)
        servers.cancel_scope.cancel()
    assert echoed == payload
    link = stats.links[0]
    assert link.bytes_to_target == link.bytes_to_client == len(payload)
    assert link.connections == 1
    assert link.resets == link.connect_failures == 0


@pytest.mark.parametrize(("latency_ms", "jitter_ms"), [(60.0, 0.0), (50.0, 20.0)])
async def test_one_way_delay_is_at_least_the_latency(latency_ms: float, jitter_ms: float) -> None:
    arrived: list[float] = []

    async def stamp(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        arrived.append(trio.current_time())
        await stream.send_all(b"pong")

    floor = (latency_ms - jitter_ms) / 1000
    async with trio.open_nursery() as servers:
        target = await serve(servers, stamp)
        params = WanParams(latency_ms=latency_ms, jitter_ms=jitter_ms, seed=1)
        async with (
            proxy([Link(0, "127.0.0.1", target)], params) as stats,
            await trio.open_tcp_stream("127.0.0.1", stats.links[0].port) as client,
        ):
            sent = trio.current_time()
            await client.send_all(b"ping")
            assert await client.receive_some(100) == b"pong"
            back = trio.current_time()
        servers.cancel_scope.cancel()
    assert arrived[0] - sent >= floor
    assert back - sent >= 2 * floor


async def test_a_lost_chunk_arrives_one_rto_late() -> None:
    arrived: list[float] = []

    async def stamp_then_close(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        arrived.append(trio.current_time())
        assert await receive_all(stream) == b""  # the EOF comes after the proxy counted the chunk

    params = WanParams(latency_ms=5, loss=1 - 1e-9, seed=1)
    async with trio.open_nursery() as servers:
        target = await serve(servers, stamp_then_close)
        async with (
            proxy([Link(0, "127.0.0.1", target)], params) as stats,
            await trio.open_tcp_stream("127.0.0.1", stats.links[0].port) as client,
        ):
            sent = trio.current_time()
            await client.send_all(b"ping")
            await client.send_eof()
            assert await receive_all(client) == b""
        servers.cancel_scope.cancel()
    assert arrived[0] - sent >= (5 + rto_ms(5)) / 1000
    link = stats.links[0]
    assert (link.chunks_to_target, link.lost_to_target, link.bytes_to_target) == (1, 1, 4)


async def test_eof_propagates_both_ways() -> None:
    received: list[bytes] = []

    async def sink_then_answer(stream: trio.SocketStream) -> None:
        received.append(await receive_all(stream))  # ends only on the client's EOF
        await stream.send_all(b"bye")
        await stream.send_eof()

    async with trio.open_nursery() as servers:
        target = await serve(servers, sink_then_answer)
        async with (
            proxy([Link(0, "127.0.0.1", target)], WanParams(latency_ms=10)) as stats,
            await trio.open_tcp_stream("127.0.0.1", stats.links[0].port) as client,
        ):
            await client.send_all(b"hello")
            await client.send_eof()
            assert await receive_all(client) == b"bye"
        servers.cancel_scope.cancel()
    assert received == [b"hello"]


async def test_refused_target_closes_the_client_and_other_links_keep_serving() -> None:
    # A bound socket that does not listen: connecting to it is refused at once.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        dead = refusing.getsockname()[1]
        async with trio.open_nursery() as servers:
            target = await serve(servers, echo)
            links = [Link(0, "127.0.0.1", dead), Link(0, "127.0.0.1", target)]
            async with proxy(links, WanParams(latency_ms=1)) as stats:
                async with await trio.open_tcp_stream("127.0.0.1", stats.links[0].port) as client:
                    with suppress(trio.BrokenResourceError):  # a reset is just as closed
                        assert await client.receive_some(100) == b""
                async with await trio.open_tcp_stream("127.0.0.1", stats.links[1].port) as client:
                    await client.send_all(b"still here")
                    assert await client.receive_some(100) == b"still here"
            servers.cancel_scope.cancel()
    assert stats.links[0].connect_failures == 1
    assert stats.links[1].connect_failures == 0


async def test_a_reset_connection_does_not_stop_the_proxy() -> None:
    ended = trio.Event()

    async def echo_until_gone(stream: trio.SocketStream) -> None:
        try:
            await echo(stream)
        except trio.BrokenResourceError:
            pass
        finally:
            ended.set()

    async with trio.open_nursery() as servers:
        target = await serve(servers, echo_until_gone)
        async with proxy([Link(0, "127.0.0.1", target)], WanParams()) as stats:
            port = stats.links[0].port
            rude = await trio.open_tcp_stream("127.0.0.1", port)
            await rude.send_all(b"x" * 100_000)
            # SO_LINGER 0: close sends a reset instead of a FIN.
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await rude.aclose()
            await ended.wait()  # the proxy has torn that connection down
            async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                await client.send_all(b"next")
                assert await client.receive_some(100) == b"next"
        servers.cancel_scope.cancel()
    assert stats.links[0].resets == 1
    assert stats.links[0].connections == 2


async def test_many_concurrent_connections() -> None:
    async with trio.open_nursery() as servers:
        target = await serve(servers, echo)
        params = WanParams(latency_ms=10, jitter_ms=5, seed=9)
        async with proxy([Link(0, "127.0.0.1", target)], params) as stats:
            results: dict[int, bytes] = {}

            async def one(i: int) -> None:
                message = f"connection {i} ".encode() * 50
                async with await trio.open_tcp_stream("127.0.0.1", stats.links[0].port) as c:
                    await c.send_all(message)
                    await c.send_eof()
                    results[i] = await receive_all(c)

            async with trio.open_nursery() as clients:
                for i in range(60):
                    clients.start_soon(one, i)
        servers.cancel_scope.cancel()
    assert results == {i: f"connection {i} ".encode() * 50 for i in range(60)}
    assert stats.links[0].connections == 60


def test_same_seed_gives_the_same_delay_sequence() -> None:
    params = WanParams(latency_ms=20, jitter_ms=5, loss=0.1, seed=4)

    def draws(
        seed: int, link: int, connection: int, direction: Direction
    ) -> list[tuple[float, bool]]:
        rng = random.Random(direction_seed(seed, link, connection, direction))
        return [chunk_delay(rng, params) for _ in range(500)]

    first = draws(4, 0, 0, "to_target")
    assert first == draws(4, 0, 0, "to_target")
    assert first != draws(4, 0, 0, "to_client")
    assert first != draws(4, 0, 1, "to_target")
    assert first != draws(4, 1, 0, "to_target")
    assert first != draws(5, 0, 0, "to_target")
    on_time = [d for d, lost in first if not lost]
    assert all(0.015 <= d <= 0.025 for d in on_time)
    assert 0 < sum(lost for _, lost in first) < 500


def test_loss_adds_the_retransmission_timeout() -> None:
    assert rto_ms(20) == 200
    assert rto_ms(150) == 300
    rng = random.Random(0)
    almost_always = WanParams(latency_ms=20, loss=1 - 1e-9)
    assert {chunk_delay(rng, almost_always) for _ in range(100)} == {(0.22, True)}
    long = WanParams(latency_ms=150, jitter_ms=10, loss=1 - 1e-9)
    for delay, lost in (chunk_delay(rng, long) for _ in range(100)):
        assert lost and 0.44 <= delay <= 0.46
    never = WanParams(latency_ms=20)
    assert {chunk_delay(rng, never) for _ in range(100)} == {(0.02, False)}


@pytest.mark.parametrize(
    ("latency_ms", "jitter_ms", "loss"),
    [(-1, 0, 0), (5, 6, 0), (5, -1, 0), (0, 0, 1.0), (0, 0, -0.1), (float("nan"), 0, 0)],
)
def test_bad_params_are_refused(latency_ms: float, jitter_ms: float, loss: float) -> None:
    with pytest.raises(ValueError):
        WanParams(latency_ms, jitter_ms, loss)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([], "--link"),
        (["--link", "0=127.0.0.1:80"], "--link"),
        (["--link", "70000=127.0.0.1:80"], "--link"),
        (["--link", "8000=127.0.0.1:0"], "--link"),
        (["--link", "8000=127.0.0.1"], "--link"),
        (["--link", "x=127.0.0.1:80"], "--link"),
        (["--link", "8000=h:1", "--link", "8000=h:2"], "--link"),
        (["--link", "8000=h:1", "--latency-ms", "-1"], "--latency-ms"),
        (["--link", "8000=h:1", "--latency-ms", "nan"], "--latency-ms"),
        (["--link", "8000=h:1", "--latency-ms", "2", "--jitter-ms", "3"], "--jitter-ms"),
        (["--link", "8000=h:1", "--jitter-ms", "-1"], "--jitter-ms"),
        (["--link", "8000=h:1", "--loss", "1"], "--loss"),
        (["--link", "8000=h:1", "--loss", "-0.5"], "--loss"),
        (["--link", "8000=h:1", "--seed", "x"], "--seed"),
    ],
)
def test_cli_refuses_bad_arguments(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_cli_port_in_use_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--link", f"{port}=127.0.0.1:1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot listen" in captured.err


async def test_cli_serves_until_sigterm_and_prints_stats() -> None:
    with socket.socket() as probe:  # a free port for the proxy to listen on
        probe.bind(("127.0.0.1", 0))
        listen = probe.getsockname()[1]
    async with trio.open_nursery() as servers:
        target = await serve(servers, echo)
        argv = [sys.executable, "-m", "bench.wan", "--link", f"{listen}=127.0.0.1:{target}",
                "--latency-ms", "5", "--seed", "2"]
        with trio.fail_after(8):
            process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=ROOT)
            assert process.stdout is not None
            try:
                out = b""
                while b"\n" not in out:
                    out += await process.stdout.receive_some(1000)
                assert out == b"bench.wan: ready 1 links\n"
                async with await trio.open_tcp_stream("127.0.0.1", listen) as client:
                    await client.send_all(b"abc")
                    await client.send_eof()
                    assert await receive_all(client) == b"abc"
                process.send_signal(signal.SIGTERM)
                while data := await process.stdout.receive_some(65536):
                    out += data
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert process.returncode == 0
        servers.cancel_scope.cancel()
    stats = json.loads(out.splitlines()[1])
    assert stats["params"] == {"latency_ms": 5.0, "jitter_ms": 0.0, "loss": 0.0, "seed": 2}
    assert stats["totals"]["connections"] == 1
    assert stats["totals"]["bytes_to_target"] == stats["totals"]["bytes_to_client"] == 3
