"""One agency's node: storage, replica, network, mempool, executor, API and metrics, wired.

:meth:`Node.open` reads the home directory (config, genesis, key, token) and the store, and
restores the replica from what the store holds (committed chain, write-ahead votes);
:meth:`Node.serve` runs every part in one trio nursery until cancelled. A failure of a part
(storage error, port in use) stops the whole node -- a half-running validator is worse than a
stopped one -- and the store is closed on the way out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID

from node.api import serve_api
from node.chain import Executor, StoredState
from node.config import Config, ConfigError, load_config, parse_multiaddr, split_host_port
from node.driver import Driver
from node.keyfile import load_key, load_token
from node.lookups import Lookups
from node.mempool import Admission, Mempool
from node.metrics import NodeMetrics, serve_metrics
from node.network import PeerAddress, PeerNetwork
from node.storage import BlockStore
from node.tasks import TaskStatus
from protocol.block import Block, CommitCertificate
from protocol.codec import decode, encode
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.events import RestoredState
from protocol.consensus.replica import Replica
from protocol.contract.state import TxResult
from protocol.crypto import Identity, peer_id
from protocol.genesis import Genesis, loads_genesis
from protocol.transactions import Transaction, TxBody
from protocol.wire import MAX_PAYLOAD_BYTES

log = logging.getLogger("creditnet.node")

BLOCK_BYTES_CAP = MAX_PAYLOAD_BYTES - 64 * 1024
"""A proposal must fit one consensus frame with its pre-prepare around it (chain-wide: derived
from genesis and this constant only, so every validator applies the same limit)."""
RESEND_FIRST_AFTER_S = 0.5
"""A transaction of ours still pending this long after it went to the primary is sent to every
validator: each then holds it pending and runs its view timer, so if the primary is down (or
leaves it out) the view changes about a view timeout later, as when every batch went to
everyone. Healthy queries commit well within it (p99 ~0.25 s at 300 mode-1 queries/s)."""
RESEND_AGAIN_AFTER_S = 2.0
RESEND_MAX_PER_S = 500
RESEND_CHECK_S = 0.25
PEER_ADMIT_MAX = 4096
"""Transactions from peers admitted in one go at most."""


@dataclass(frozen=True)
class OwnTx:
    """A transaction this agency signed: its admission, and its ledger result once committed."""

    admission: Admission
    result: TxResult | None

    @property
    def refusal(self) -> tuple[int, str, str] | None:
        """(HTTP status, code, detail) if the mempool refused it or it failed a ledger rule."""
        a, r = self.admission, self.result
        if not a.ok:
            return (503 if a.code == "mempool_full" else 422), a.code, a.detail
        if r is not None and not r.ok:
            return 422, r.code, r.detail
        return None


class NodeError(Exception):
    """The node cannot start as configured; the message says why."""


@dataclass(frozen=True)
class NodeFiles:
    config: Config
    genesis: Genesis
    identity: Identity
    token: str
    index: int


def read_home(home: Path) -> NodeFiles:
    """Load and cross-check config.toml, genesis, node key and operator token of ``home``."""
    cfg = load_config(home / "config.toml")
    try:
        genesis = loads_genesis(cfg.resolve(cfg.genesis).read_text(encoding="utf-8"))
    except OSError as exc:
        raise NodeError(f"genesis {cfg.resolve(cfg.genesis)}: {exc.strerror}") from exc
    except ValueError as exc:
        raise NodeError(f"genesis {cfg.resolve(cfg.genesis)}: {exc}") from exc
    try:
        identity = load_key(cfg.resolve(cfg.node_key))
        token = load_token(cfg.resolve(cfg.operator_token))
    except (OSError, ValueError) as exc:
        raise NodeError(str(exc)) from exc
    keys = genesis.validator_keys
    if identity.public_key not in keys:
        raise NodeError(
            f"node key {cfg.resolve(cfg.node_key)} (peer {peer_id(identity.public_key)}) is not "
            "a validator in the genesis; check node_key and genesis"
        )
    return NodeFiles(cfg, genesis, identity, token, keys.index(identity.public_key))


def peer_addresses(cfg: Config, genesis: Genesis, me: int) -> list[PeerAddress]:
    """Where to dial each other validator: config ``p2p.peers`` first, else its genesis address."""
    by_peer = {peer_id(k): i for i, k in enumerate(genesis.validator_keys)}
    found: dict[int, PeerAddress] = {}
    for text in cfg.p2p.peers:
        _, _, pid = parse_multiaddr(text, peer=True)
        assert pid is not None
        if pid not in by_peer:
            raise ConfigError(f"p2p.peers: {pid} is not a validator in the genesis")
        i = by_peer[pid]
        addr = text.rsplit("/p2p/", 1)[0]
        found[i] = PeerAddress(i, ID.from_base58(pid), multiaddr.Multiaddr(addr))
    for i, v in enumerate(genesis.validators):
        if i != me and i not in found and v.address:
            pid = peer_id(v.public_key)
            found[i] = PeerAddress(i, ID.from_base58(pid), multiaddr.Multiaddr(v.address))
    return [found[i] for i in sorted(found)]


def restored_state(store: BlockStore) -> RestoredState:
    """What the replica resumes from: the stored chain tip and its write-ahead records."""
    persisted = dict(store.consensus_items())
    h = store.latest_height
    if h == 0:
        return RestoredState(persisted=persisted)
    raw_block, raw_cert = store.block(h), store.certificate(h)
    if raw_block is None or raw_cert is None:
        raise NodeError(f"{store.where}: block {h} or its certificate is missing (corrupt store)")
    block = decode(raw_block, Block)
    return RestoredState(
        persisted=persisted,
        committed_height=h,
        committed_hash=block.hash,
        committed_time_ms=block.header.time_ms,
        committed_certificate=decode(raw_cert, CommitCertificate),
        executed_height=h,
        executed_app_hash=store.app_hash,
    )


class Node:
    """A running agency node (see module doc)."""

    def __init__(self, files: NodeFiles, store: BlockStore, metrics: NodeMetrics) -> None:
        self.files = files
        self.config = cfg = files.config
        self.genesis = genesis = files.genesis
        self.identity = files.identity
        self.index = files.index
        self.store = store
        self.store_state = StoredState(store)
        self.metrics = metrics
        self.started_at = time.time()
        metrics.validators.set(len(genesis.validators))
        metrics.consensus_log_bytes.set_function(lambda: store.consensus_log.size_bytes)
        metrics.block_files_bytes.set_function(lambda: store.block_files.size_bytes)
        self.mempool = Mempool(
            genesis.chain_id,
            max_txs=cfg.consensus.mempool_max_txs,
            max_bytes=cfg.consensus.mempool_max_bytes,
            metrics=metrics,
            is_committed=lambda h: store.tx_location(h) is not None,
        )
        rcfg = ReplicaConfig.from_genesis(
            genesis,
            files.index,
            propose_batch_txs=cfg.consensus.max_batch_txs,
            batch_wait_ms=cfg.consensus.batch_wait_ms,
            light_load_tx_per_s=cfg.consensus.light_load_tx_per_s,
            light_batch_wait_ms=cfg.consensus.light_batch_wait_ms,
            full_load_tx_per_s=cfg.consensus.full_load_tx_per_s,
            max_block_bytes=min(genesis.consensus.max_block_bytes, BLOCK_BYTES_CAP),
            retransmit_ms=cfg.p2p.retransmit_ms,
            max_pending_txs=max(cfg.consensus.mempool_max_txs * 2, 10_000),
        )
        self.replica = Replica(
            rcfg, files.identity, restored_state(store), self.mempool.block_check
        )
        self.lookups = Lookups(self)
        self.network = PeerNetwork(
            identity=files.identity,
            chain_id=genesis.chain_id,
            validators=genesis.validator_keys,
            me=files.index,
            listen=cfg.p2p.listen,
            peers=peer_addresses(cfg, genesis, files.index),
            metrics=metrics,
            on_message=self._on_peer_message,
            on_txs=self._on_peer_txs,
            on_lookup=self.lookups.on_lookup,
            on_lookup_reply=self.lookups.on_reply,
            max_frame_bytes=cfg.p2p.max_frame_bytes,
            backoff_ms=(cfg.p2p.dial_backoff_min_ms, cfg.p2p.dial_backoff_max_ms),
            max_msgs_per_peer_per_s=cfg.p2p.max_msgs_per_peer_per_s,
            gossip_heartbeat_s=cfg.p2p.gossip_heartbeat_ms / 1000,
        )
        self.executor = Executor(store, genesis, self.mempool, metrics, self._on_executed)
        self.driver = Driver(
            self.replica,
            store,
            self.network,
            self.executor,
            metrics,
            sync_chunk_bytes=min(cfg.consensus.sync_chunk_bytes, cfg.p2p.max_frame_bytes // 2),
            precheck=self.mempool.precheck,
        )
        self.network.primary = lambda: self.replica.primary
        self._peer_txs: list[tuple[bytes, ...]] = []
        self._peer_txs_wake = trio.Event()
        self.api_port: int | None = None
        self.metrics_port: int | None = None
        self.ready = trio.Event()

    @classmethod
    def open(cls, home: Path, *, metrics: NodeMetrics | None = None) -> Node:
        files = read_home(home)
        cfg = files.config
        store = BlockStore.open(
            cfg.data_path,
            files.genesis.chain_id,
            sync=cfg.storage.sync_writes,
            compression=cfg.storage.compression,
        )
        try:
            return cls(files, store, metrics or NodeMetrics())
        except BaseException:
            store.close()
            raise

    # --- wiring ---------------------------------------------------------------------------

    def _on_peer_message(self, sender: int, data: bytes) -> None:
        self.driver.on_peer_message(sender, data)

    def _on_peer_txs(self, sender: int, txs: tuple[bytes, ...]) -> None:
        if len(self._peer_txs) > 10_000:
            self.metrics.mempool_refused.labels("intake_full").inc()
            return
        self._peer_txs.append(txs)
        self._peer_txs_wake.set()

    def _on_executed(self, height: int, app_hash: bytes) -> None:
        self.driver.on_executed(height, app_hash)

    async def submit(
        self, txs: Sequence[bytes], built: Sequence[Transaction] | None = None
    ) -> list[Admission]:
        """Admit a client's transactions (or, with ``built``, our own): check, keep, order, and
        send them to peers."""
        results = await self.mempool.admit(txs, local=True, built=built)
        accepted = [(tx, r.tx_hash) for tx, r in zip(txs, results, strict=True) if r.ok_new]
        if accepted:
            fresh = tuple(tx for tx, _ in accepted)
            self.driver.submit(fresh, tuple(h for _, h in accepted))
            self.network.gossip_txs(fresh)
        return results

    async def commit_own(self, bodies: Sequence[TxBody]) -> list[OwnTx]:
        """Sign ``bodies`` as this agency, submit them and wait until the admitted ones are
        committed; for each, its admission and (if committed) its ledger result.

        The mempool does not verify these again: a caller passing a body that carries someone
        else's signature (a query entry's request) has verified it (``check_request``)."""
        nonce = time.time_ns()
        built = [
            Transaction.sign(self.identity, self.genesis.chain_id, body, nonce + i)
            for i, body in enumerate(bodies)
        ]
        admissions = await self.submit([encode(tx) for tx in built], built)
        await self.executor.wait_committed([a.tx_hash for a in admissions if a.ok])
        return [OwnTx(a, self.executor.result(a.tx_hash) if a.ok else None) for a in admissions]

    async def _admit_peer_txs(self) -> None:
        """Admit the transactions peers send, batch after batch (see _on_peer_txs)."""
        while True:
            while not self._peer_txs:
                self._peer_txs_wake = trio.Event()
                await self._peer_txs_wake.wait()
            # Every batch waiting is admitted at once (up to PEER_ADMIT_MAX): one worker-thread
            # hop for several peers' batches instead of one each.
            txs = self._peer_txs.pop(0)
            while self._peer_txs and len(txs) + len(self._peer_txs[0]) <= PEER_ADMIT_MAX:
                txs += self._peer_txs.pop(0)
            try:
                results = await self.mempool.admit(txs, local=False)
            except Exception:  # a bug here must not let a peer's batch stop the node
                log.exception("admission of %d transactions from peers failed", len(txs))
                continue
            accepted = [(tx, r.tx_hash) for tx, r in zip(txs, results, strict=True) if r.ok_new]
            self.driver.submit(tuple(t for t, _ in accepted), tuple(h for _, h in accepted))

    async def _regossip(self) -> None:
        """Send again, to every validator, this node's own transactions still pending
        RESEND_FIRST_AFTER_S after they went out (then every RESEND_AGAIN_AFTER_S): batches are
        best effort, a primary may fail or leave them out, and each replica holding a pending
        transaction runs its view timer, so a primary that does is replaced (the network
        module's doc)."""
        limit = max(1, int(RESEND_MAX_PER_S * RESEND_CHECK_S))
        while True:
            await trio.sleep(RESEND_CHECK_S)
            stale = self.mempool.stale_local(RESEND_FIRST_AFTER_S, RESEND_AGAIN_AFTER_S, limit)
            if stale:
                self.network.gossip_txs(stale, everyone=True)

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        r = self.replica
        return {
            "chain_id": self.genesis.chain_id,
            "node_id": peer_id(self.identity.public_key),
            "moniker": self.config.moniker,
            "validator_index": self.index,
            "public_key": self.identity.public_key.hex(),
            "height": self.store.latest_height,
            "app_hash": self.store.app_hash.hex(),
            "consensus_height": r.committed_height,
            "view": r.view,
            "primary": r.primary,
            "in_view_change": r.in_view_change,
            "peers": len(self.network.connected_peers),
            "peer_indexes": sorted(self.network.connected_peers),
            "validators": [
                {
                    "index": i,
                    "name": v.name,
                    "public_key": v.public_key.hex(),
                    "node_id": peer_id(v.public_key),
                }
                for i, v in enumerate(self.genesis.validators)
            ],
            "mempool": {
                "size": len(self.mempool),
                "bytes": self.mempool.size_bytes,
                "max_txs": self.mempool.max_txs,
            },
            "syncing": r.catching_up,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    # --- lifecycle ------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``started()`` once peers, API and metrics listen."""
        cfg = self.config
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.network.serve)
                nursery.start_soon(self.executor.run)
                await nursery.start(self.driver.run)
                nursery.start_soon(self._admit_peer_txs)
                nursery.start_soon(self._regossip)
                host, port = split_host_port(cfg.api.listen)
                self.api_port = await nursery.start(serve_api, self, host, port)
                if cfg.metrics.enabled:
                    mhost, mport = split_host_port(cfg.metrics.listen)
                    self.metrics_port = await nursery.start(
                        serve_metrics, self.metrics, mhost, mport
                    )
                log.info(
                    "node %s (validator %d of %d) serving: p2p %s, api %s:%s, metrics %s, "
                    "height %d",
                    cfg.moniker,
                    self.index,
                    len(self.genesis.validators),
                    ",".join(self.network.listen_addrs),
                    host,
                    self.api_port,
                    f"{cfg.metrics.listen.rsplit(':', 1)[0]}:{self.metrics_port}"
                    if cfg.metrics.enabled
                    else "off",
                    self.store.latest_height,
                )
                self.ready.set()
                task_status.started()
        finally:
            self.executor.close()
            self.store.close()
