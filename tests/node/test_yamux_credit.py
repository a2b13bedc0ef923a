"""Yamux credit on a real connection: two py-libp2p hosts (Noise, Yamux, TCP) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux import yamux

from node import network  # (importing it installs the credit policy, as the daemon does)

PROTO = TProtocol("/creditnet/test-credit/1")


@asynccontextmanager
async def host(seed: int) -> AsyncIterator[IHost]:
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    h = network.new_libp2p_host(bytes([seed]) * 32, listen)
    async with h.run([listen]):
        yield h


async def exchange(messages: list[bytes]) -> tuple[bytes, int]:
    """Send ``messages`` one write each over a fresh stream; what arrived, and how many
    WINDOW_UPDATE frames the receiving side sent back."""
    updates = 0
    original = yamux.YamuxStream.send_window_update

    async def counted(self: Any, increment: int, skip_lock: bool = False) -> None:
        nonlocal updates
        updates += 1
        await original(self, increment, skip_lock)

    total = sum(len(m) for m in messages)
    received = bytearray()
    done = trio.Event()

    async def handler(stream: INetStream) -> None:
        while len(received) < total:
            data = await stream.read(64 * 1024)
            if not data:
                break
            received.extend(data)
        done.set()

    with pytest.MonkeyPatch.context() as mp, trio.fail_after(60):
        mp.setattr(yamux.YamuxStream, "send_window_update", counted)
        async with host(1) as server, host(2) as client:
            server.set_stream_handler(PROTO, handler)
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            stream = await client.new_stream(server.get_id(), [PROTO])
            for m in messages:
                await stream.write(m)
                await trio.lowlevel.checkpoint()  # the reader takes each message as it comes
            await done.wait()
            await stream.reset()
    return bytes(received), updates


async def test_small_messages_are_read_without_a_window_update_each() -> None:
    messages = [bytes([i % 251]) * 300 for i in range(400)]  # 120 kB: below half the window
    received, updates = await exchange(messages)
    assert received == b"".join(messages)
    # py-libp2p's own policy sent 430 here (one or more for each read).
    assert updates == 0


async def test_a_write_larger_than_the_window_gets_its_credit_and_arrives_whole() -> None:
    big = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: six times the initial 256 KiB window
    received, updates = await exchange([big, big])
    assert received == big + big
    assert 1 <= updates <= 48  # credit came back in half-window steps, not once per read
