"""A misbehaving peer, run as its own process against a real node (integration tests).

``python -m tests.integration.bad_peer MODE TARGET_MULTIADDR [--key FILE] [--chain-id ID]``

- ``outsider``: a Noise peer with a key outside the validator set dials and opens a consensus
  stream;
- ``plaintext``: a peer that offers only plaintext security dials;
- ``validator``: a validator's key (``--key``) sends a garbage frame, an oversized frame and a
  badly signed consensus message, each on a fresh stream.

Prints one JSON object saying what the peer managed to do; the test checks the node's side.
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import Any, cast

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import create_identity_from_seed
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from node.framing import frame
from node.keyfile import load_key
from node.network import CONSENSUS_PROTOCOL
from protocol.codec import encode
from protocol.consensus.messages import Prepare
from protocol.crypto import h256
from protocol.wire import StreamFrame


async def _probe(stream: Any, data: bytes) -> str:
    """Write ``data``; report how the node answered (ack, reset, closed, nothing)."""
    try:
        await stream.write(data)
        with trio.move_on_after(3):
            got = await stream.read(1024)
            return "answered" if got else "closed"
        return "silent"
    except Exception as exc:
        return f"reset ({type(exc).__name__})"


async def run(mode: str, target: str, key_file: str | None, chain_id: str) -> dict[str, Any]:
    seed = load_key(Path(key_file)).seed if key_file else secrets.token_bytes(32)
    kp = create_identity_from_seed(seed)
    if mode == "plaintext":
        sec: dict[Any, Any] = {PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)}
    else:
        sec = {NOISE_PROTOCOL_ID: NoiseTransport(kp, create_x25519_key_pair().private_key)}
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    host = new_host(
        key_pair=kp,
        sec_opt=sec,
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): cast(Any, Yamux)},
        listen_addrs=[listen],
    )
    info = info_from_p2p_addr(multiaddr.Multiaddr(target))
    result: dict[str, Any] = {"mode": mode, "connected": False, "streams": []}
    async with host.run([listen]):
        try:
            with trio.fail_after(10):
                await host.connect(info)
            result["connected"] = True
        except Exception as exc:  # report any refusal
            result["connect_error"] = type(exc).__name__
            return result
        if mode == "plaintext":
            return result
        payloads: list[tuple[str, bytes]]
        if mode == "outsider":
            payloads = [("frame", frame(encode(StreamFrame(1, 1, 0, True, b"hello"))))]
        else:
            bad_sig = Prepare(0, 1, h256(b"no such block"), 3, bytes(64))
            payloads = [
                ("garbage", frame(secrets.token_bytes(200))),
                ("oversized", (4 << 20).to_bytes(4, "big") + b"\0" * 1024),
                (
                    "bad_signature",
                    frame(
                        encode(StreamFrame(secrets.randbits(40) + 1, 1, 0, True, encode(bad_sig)))
                    ),
                ),
            ]
        for name, data in payloads:
            try:
                with trio.fail_after(10):
                    stream = await host.new_stream(info.peer_id, [CONSENSUS_PROTOCOL])
            except Exception as exc:
                result["streams"].append({name: f"refused ({type(exc).__name__})"})
                continue
            result["streams"].append({name: await _probe(stream, data)})
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["outsider", "plaintext", "validator"])
    p.add_argument("target")
    p.add_argument("--key")
    p.add_argument("--chain-id", default="creditnet-local")
    a = p.parse_args()
    print(json.dumps(trio.run(run, a.mode, a.target, a.key, a.chain_id)), flush=True)


if __name__ == "__main__":
    main()
