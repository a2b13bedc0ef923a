"""Buffered reads of libp2p's TCP stream (``node.tcp_buffer``) over real 127.0.0.1 connections."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.io.utils import read_exactly

from node import tcp_buffer

tcp_buffer.install()


async def pair() -> tuple[TrioTCPStream, trio.SocketStream, list[int]]:
    """A libp2p reader over one end of a TCP connection on 127.0.0.1, the other end, and the
    sizes the reader asked of its socket."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    writer = await trio.testing.open_stream_to_socket_listener(listener)
    accepted = await listener.accept()
    await listener.aclose()
    reader = TrioTCPStream(accepted)
    asked: list[int] = []
    original = reader.stream.receive_some

    async def counted(max_bytes: int | None = None) -> Any:
        asked.append(max_bytes or 0)
        return await original(max_bytes)

    reader.stream.receive_some = counted  # type: ignore[method-assign]
    return reader, writer, asked


def noise_packets(bodies: list[bytes]) -> bytes:
    return b"".join(len(body).to_bytes(2, "big") + body for body in bodies)


async def test_a_burst_of_length_prefixed_messages_takes_one_socket_read() -> None:
    reader, writer, asked = await pair()
    bodies = [bytes([i]) * (10 + i) for i in range(50)]
    await writer.send_all(noise_packets(bodies))
    got = []
    with trio.fail_after(10):
        for _ in bodies:  # as py-libp2p's Noise reader does: length, then body
            length = int.from_bytes(await read_exactly(reader, 2), "big")
            got.append(await read_exactly(reader, length))
    assert got == bodies
    assert asked == [tcp_buffer.READ_CHUNK]  # the library's own read made 100 calls here


async def test_reads_return_at_most_n_bytes_in_order_across_socket_reads() -> None:
    reader, writer, _asked = await pair()
    data = bytes(range(256)) * 1024  # 256 KiB: several socket reads
    out = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send_all, data)
            sizes = [1, 2, 3, 7, 1000, 70_000, None]
            i = 0
            while len(out) < len(data):
                n = sizes[i % len(sizes)]
                i += 1
                chunk = await reader.read(n)
                assert chunk and (n is None or len(chunk) <= n)
                out.extend(chunk)
    assert bytes(out) == data
    assert await reader.read(0) == b""


def named_reads(reader: TrioTCPStream) -> tuple[list[tuple[str, bytes]], Any]:
    """A list of (reader's name, bytes it got) and the task that reads 3 bytes into it."""
    got: list[tuple[str, bytes]] = []

    async def read(name: str) -> None:
        got.append((name, await reader.read(3)))

    return got, read


async def test_waiting_readers_get_bytes_in_the_order_they_asked() -> None:
    reader, writer, _asked = await pair()
    got, read = named_reads(reader)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, "second")
            await trio.testing.wait_all_tasks_blocked()
            await writer.send_all(b"abcdefghi")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, "third")
    assert got == [("first", b"abc"), ("second", b"def"), ("third", b"ghi")]


async def test_buffered_bytes_do_not_jump_a_reader_waiting_for_the_stream() -> None:
    reader, writer, _asked = await pair()
    got, read = named_reads(reader)
    with trio.fail_after(10):
        await reader.read_lock.acquire()  # a reader busy on the socket holds it ...
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "waiting")
            await trio.testing.wait_all_tasks_blocked()
            ahead: Any = reader
            ahead._cn_buf, ahead._cn_pos = b"def", 0  # ... and reads ahead what follows
            nursery.start_soon(read, "later")
            await trio.testing.wait_all_tasks_blocked()
            reader.read_lock.release()
            await trio.testing.wait_all_tasks_blocked()
            await writer.send_all(b"ghi")
    assert got == [("waiting", b"def"), ("later", b"ghi")]


async def test_buffered_bytes_are_read_before_the_end_of_stream() -> None:
    reader, writer, _asked = await pair()
    await writer.send_all(b"hello world")
    await writer.aclose()
    with trio.fail_after(10):
        assert await reader.read(5) == b"hello"
        assert await reader.read(None) == b" world"
        assert await reader.read(5) == b""


async def test_a_reset_connection_raises_the_librarys_error() -> None:
    reader, writer, _asked = await pair()
    writer.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    await writer.aclose()  # linger 0: an RST, not a FIN
    with trio.fail_after(10), pytest.raises((ConnectionClosedError, OSError)):
        await reader.read(5)


def test_install_is_idempotent() -> None:
    tcp_buffer.install()
    tcp_buffer.install()
    assert TrioTCPStream.read is tcp_buffer._read  # type: ignore[comparison-overlap]
