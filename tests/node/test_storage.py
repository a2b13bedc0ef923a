"""BlockStore, its backends, the data directory lock, the key schema and the app hash chain."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.storage import (
    DB_DIRNAME,
    BlockStore,
    DataDirLocked,
    IncompatibleStore,
    KVBackend,
    LevelDBBackend,
    MemoryBackend,
    OutOfOrderBlock,
    StorageError,
    kv,
    schema,
)
from node.storage.block_files import BlockFiles
from protocol.apphash import GENESIS_APP_HASH, next_app_hash, serialize_changes
from protocol.crypto import h256

CHAIN = "test-chain"
REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """Environment for a child Python that must import this checkout's packages."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT) + (os.pathsep + path if path else "")}


class PersistentMemory(MemoryBackend):
    """A MemoryBackend that outlives the store using it, as files outlive a process."""

    def close(self) -> None:
        pass


class PersistentBlockFiles(BlockFiles):
    """In-memory block files that outlive the store using them."""

    def close(self) -> None:
        pass


class Opener:
    """Opens stores of one kind ("memory" or "leveldb") over the same data, and tampers with it."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.memory = PersistentMemory()
        self.block_files = PersistentBlockFiles(None)

    def open(self, chain_id: str = CHAIN) -> BlockStore:
        if self.kind == "memory":
            return BlockStore(
                self.memory, chain_id, where="in-memory store", block_files=self.block_files
            )
        return BlockStore.open(self.path, chain_id)

    def raw_put(self, key: bytes, value: bytes) -> None:
        """Write under the store's feet (the store must be closed)."""
        backend: KVBackend = self.memory
        if self.kind == "leveldb":
            backend = LevelDBBackend(self.path / DB_DIRNAME)
        try:
            backend.write({key: value}, sync=True)
        finally:
            backend.close()


@pytest.fixture(params=["memory", "leveldb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return Opener(request.param, tmp_path / "data")


@pytest.fixture
def store(opener: Opener) -> Iterator[BlockStore]:
    s = opener.open()
    yield s
    s.close()


def make_block(height: int) -> tuple[bytes, bytes, bytes, list[bytes], dict[bytes, bytes | None]]:
    """(hash, block bytes, certificate, tx hashes, state changes) for a test block."""
    rng = random.Random(height)
    body = rng.randbytes(rng.randint(10, 300))
    txs = [h256(b"tx%d/%d" % (height, i)) for i in range(rng.randint(0, 5))]
    changes: dict[bytes, bytes | None] = {
        b"k%d" % rng.randrange(8): rng.randbytes(rng.randint(0, 20)) for _ in range(4)
    }
    changes[b"k%d" % rng.randrange(8)] = None
    return h256(body), body, b"cert" + body[:8], txs, changes


def commit(store: BlockStore, height: int) -> bytes:
    block_hash, body, cert, txs, changes = make_block(height)
    return store.commit_block(height, block_hash, body, cert, tx_hashes=txs, state_changes=changes)


# --- the block store, on both backends -----------------------------------------------------------


def test_fresh_store_is_at_genesis(store: BlockStore) -> None:
    assert store.latest_height == 0
    assert store.app_hash == GENESIS_APP_HASH
    assert store.block(0) is None
    assert store.block(1) is None
    assert list(store.state_items()) == []


def test_committed_blocks_read_back_with_indexes(store: BlockStore) -> None:
    for height in range(1, 6):
        commit(store, height)
    assert store.latest_height == 5
    for height in range(1, 6):
        block_hash, body, cert, txs, _ = make_block(height)
        assert store.block(height) == body
        assert store.certificate(height) == cert
        assert store.height_of(block_hash) == height
        for i, tx in enumerate(txs):
            assert store.tx_location(tx) == (height, i)
    assert store.block(6) is None
    assert store.certificate(6) is None
    assert store.height_of(h256(b"unknown")) is None
    assert store.tx_location(h256(b"unknown")) is None


def test_state_changes_put_and_delete_application_keys(store: BlockStore) -> None:
    store.commit_block(
        1, h256(b"1"), b"1", b"c", tx_hashes=[], state_changes={b"a/1": b"x", b"a/2": b"y"}
    )
    store.commit_block(
        2, h256(b"2"), b"2", b"c", tx_hashes=[], state_changes={b"a/1": None, b"b": b"z"}
    )
    assert store.state_get(b"a/1") is None
    assert store.state_get(b"a/2") == b"y"
    assert list(store.state_items()) == [(b"a/2", b"y"), (b"b", b"z")]
    assert list(store.state_items(b"a/")) == [(b"a/2", b"y")]


@pytest.mark.parametrize("height", [0, 2, -1])
def test_block_out_of_order_is_refused_and_nothing_written(store: BlockStore, height: int) -> None:
    with pytest.raises(OutOfOrderBlock, match="expected 1"):
        store.commit_block(
            height, h256(b"x"), b"x", b"c", tx_hashes=[h256(b"t")], state_changes={b"k": b"v"}
        )
    assert store.latest_height == 0
    assert store.block(2) is None
    assert store.tx_location(h256(b"t")) is None
    assert store.state_get(b"k") is None


def test_same_height_twice_is_refused(store: BlockStore) -> None:
    commit(store, 1)
    with pytest.raises(OutOfOrderBlock, match="block 1 does not follow the latest committed"):
        commit(store, 1)


def test_app_hash_chain_equals_recomputation(store: BlockStore) -> None:
    expected = GENESIS_APP_HASH
    for height in range(1, 8):
        expected = next_app_hash(expected, make_block(height)[4])
        assert commit(store, height) == expected
    assert store.app_hash == expected


def test_reopen_keeps_height_app_hash_and_data(opener: Opener) -> None:
    with opener.open() as first:
        for height in range(1, 4):
            commit(first, height)
        app_hash = first.app_hash
    with opener.open() as second:
        assert second.latest_height == 3
        assert second.app_hash == app_hash
        assert second.block(3) == make_block(3)[1]
        commit(second, 4)


def test_consensus_records_are_written_ahead_and_listed(store: BlockStore) -> None:
    store.put_consensus(b"vote/7/commit", b"v1")
    store.put_consensus(b"vote/8/prepare", b"v2")
    store.put_consensus(b"view", b"3")
    assert store.get_consensus(b"view") == b"3"
    assert list(store.consensus_items(b"vote/")) == [
        (b"vote/7/commit", b"v1"),
        (b"vote/8/prepare", b"v2"),
    ]
    store.delete_consensus([b"vote/7/commit"])
    assert store.get_consensus(b"vote/7/commit") is None
    assert store.state_get(b"view") is None  # consensus records are not application state


def test_private_namespaces_are_isolated_and_batched(store: BlockStore) -> None:
    store.put_private(b"a", b"bx", b"1")
    store.write_private(b"ab", {b"x": b"2", b"y": b"3"}, sync=False)
    store.write_private(b"ab", {b"y": None})
    assert store.get_private(b"a", b"bx") == b"1"
    assert store.get_private(b"ab", b"x") == b"2"
    assert store.get_private(b"ab", b"y") is None
    assert list(store.private_items(b"a")) == [(b"bx", b"1")]
    assert list(store.private_items(b"ab")) == [(b"x", b"2")]
    assert list(store.state_items()) == []
    assert store.app_hash == GENESIS_APP_HASH  # private data is never part of the ledger


def test_chain_id_mismatch_is_refused_with_message(opener: Opener) -> None:
    opener.open("chain-a").close()
    with pytest.raises(IncompatibleStore, match="holds chain 'chain-a', not 'chain-b'"):
        opener.open("chain-b")
    opener.open("chain-a").close()  # the refusal left the directory usable


def test_newer_format_is_refused_with_message(opener: Opener) -> None:
    opener.open().close()
    opener.raw_put(schema.META_FORMAT_VERSION, schema.encode_format_version(2))
    with pytest.raises(
        IncompatibleStore, match=r"format 2 is newer than this creditnet \(1\); upgrade creditnet"
    ):
        opener.open()


def test_data_that_is_not_a_creditnet_store_is_refused(opener: Opener) -> None:
    opener.raw_put(b"something else", b"x")
    with pytest.raises(IncompatibleStore, match="not a creditnet store"):
        opener.open()


def test_closed_store_raises_storage_error(opener: Opener) -> None:
    store = BlockStore.memory(CHAIN) if opener.kind == "memory" else opener.open()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.block(1)
    with pytest.raises(StorageError, match="closed"):
        store.state_items()
    with pytest.raises(StorageError, match="closed"):
        commit(store, 1)


# --- the data directory lock --------------------------------------------------------------------


def test_second_open_in_same_process_is_refused(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path, CHAIN):
        with pytest.raises(DataDirLocked) as info:
            BlockStore.open(tmp_path, CHAIN)
        assert str(info.value) == f"data directory {tmp_path} is in use by process {os.getpid()}"
    BlockStore.open(tmp_path, CHAIN).close()  # released on close


def test_open_from_child_process_is_refused_while_held(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom node.storage import BlockStore, DataDirLocked\n"
        "try:\n    BlockStore.open(Path(sys.argv[1]), sys.argv[2])\n"
        "except DataDirLocked as exc:\n    print(exc)\n    sys.exit(3)\n"
    )
    with BlockStore.open(tmp_path, CHAIN):
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), CHAIN],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            check=False,
        )
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == f"data directory {tmp_path} is in use by process {os.getpid()}"


def test_open_is_refused_while_child_process_holds_the_directory(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom node.storage import BlockStore\n"
        "store = BlockStore.open(Path(sys.argv[1]), sys.argv[2])\n"
        "print('ready', flush=True)\nsys.stdin.readline()\nstore.close()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), CHAIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirLocked) as info:
            BlockStore.open(tmp_path, CHAIN)
        assert str(info.value) == f"data directory {tmp_path} is in use by process {child.pid}"
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()
    BlockStore.open(tmp_path, CHAIN).close()


# --- the backends behave the same --------------------------------------------------------------


def test_backends_agree_on_random_operations(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    memory, leveldb = MemoryBackend(), LevelDBBackend(tmp_path / "db")
    try:
        for _ in range(200):
            keys = [rng.randbytes(rng.randint(0, 3)) for _ in range(rng.randint(0, 6))]
            puts = {k: rng.randbytes(rng.randint(0, 4)) for k in keys[: len(keys) // 2]}
            deletes = keys[len(keys) // 2 :] + keys[:1]  # a key both deleted and put: put wins
            for backend in (memory, leveldb):
                backend.write(puts, deletes, sync=False)
            probe = rng.randbytes(rng.randint(0, 2))
            assert memory.get(probe) == leveldb.get(probe), f"seed {seed}"
            assert list(memory.iterate(probe)) == list(leveldb.iterate(probe)), f"seed {seed}"
    finally:
        leveldb.close()


# --- the key schema -----------------------------------------------------------------------------

heights = st.integers(0, (1 << 64) - 1)
blobs = st.binary(max_size=40)
private_namespaces = st.binary(min_size=1, max_size=8)
meta_keys = [
    schema.META_FORMAT_VERSION,
    schema.META_CHAIN_ID,
    schema.META_LATEST_HEIGHT,
    schema.META_APP_HASH,
]

# (namespace prefix the key must live under, key)
any_key = st.one_of(
    st.sampled_from(meta_keys).map(lambda k: (schema.META, k)),
    heights.map(lambda h: (schema.BLOCK_AT, schema.block_location_key(h))),
    heights.map(lambda h: (schema.BLOCK, schema.block_key(h))),
    blobs.map(lambda b: (schema.BLOCK_HASH, schema.block_hash_key(b))),
    heights.map(lambda h: (schema.CERTIFICATE, schema.certificate_key(h))),
    blobs.map(lambda b: (schema.TX, schema.tx_key(b))),
    blobs.map(lambda b: (schema.STATE, schema.state_key(b))),
    blobs.map(lambda b: (schema.CONSENSUS, schema.consensus_key(b))),
    st.tuples(private_namespaces, blobs).map(
        lambda t: (schema.private_prefix(t[0]), schema.private_key(t[0], t[1]))
    ),
)


@given(any_key)
def test_every_key_has_the_version_prefix_and_its_namespace(item: tuple[bytes, bytes]) -> None:
    namespace, key = item
    assert key.startswith(schema.VERSION)
    assert key.startswith(namespace)


@given(any_key, any_key)
def test_keys_of_different_namespaces_never_collide(
    a: tuple[bytes, bytes], b: tuple[bytes, bytes]
) -> None:
    (ns_a, key_a), (ns_b, key_b) = a, b
    if ns_a != ns_b:
        assert key_a != key_b
        assert not key_a.startswith(ns_b)  # iterating one namespace never yields the other's keys
        assert not key_b.startswith(ns_a)


@given(private_namespaces, blobs, private_namespaces, blobs)
def test_private_keys_are_injective(ns_a: bytes, k_a: bytes, ns_b: bytes, k_b: bytes) -> None:
    same = schema.private_key(ns_a, k_a) == schema.private_key(ns_b, k_b)
    assert same == ((ns_a, k_a) == (ns_b, k_b))


def test_namespace_prefixes_are_distinct_and_none_prefixes_another() -> None:
    prefixes = list(schema.NAMESPACES.values())
    assert len(set(prefixes)) == len(prefixes)
    for a in prefixes:
        assert a.startswith(schema.VERSION)
        for b in prefixes:
            assert a == b or not b.startswith(a)


@given(heights, st.integers(0, (1 << 32) - 1))
def test_fixed_width_values_round_trip(height: int, index: int) -> None:
    assert schema.decode_height(schema.encode_height(height)) == height
    assert schema.decode_tx_location(schema.encode_tx_location(height, index)) == (height, index)
    if height > 0:  # key order is height order
        assert schema.block_key(height - 1) < schema.block_key(height)


def test_out_of_range_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="height"):
        schema.block_key(-1)
    with pytest.raises(ValueError, match="namespace"):
        schema.private_key(b"", b"k")


# --- the app hash -------------------------------------------------------------------------------


def test_app_hash_serialization_is_pinned() -> None:
    changes: dict[bytes, bytes | None] = {b"b": None, b"a": b"xy"}
    assert serialize_changes(changes) == (
        b"\x00\x00\x00\x01a\x01\x00\x00\x00\x02xy" + b"\x00\x00\x00\x01b\x00"
    )
    prev = GENESIS_APP_HASH
    assert next_app_hash(prev, changes) == h256(
        b"creditnet/app/v1" + prev + h256(serialize_changes(changes))
    )
    assert h256(b"creditnet/app/genesis") == GENESIS_APP_HASH


@given(st.dictionaries(blobs, st.none() | blobs, max_size=10), st.randoms())
def test_app_hash_ignores_mapping_order(
    changes: dict[bytes, bytes | None], rnd: random.Random
) -> None:
    items = list(changes.items())
    rnd.shuffle(items)
    assert next_app_hash(GENESIS_APP_HASH, changes) == next_app_hash(GENESIS_APP_HASH, dict(items))


def test_app_hash_distinguishes_delete_from_empty_value() -> None:
    assert next_app_hash(GENESIS_APP_HASH, {b"k": None}) != next_app_hash(
        GENESIS_APP_HASH, {b"k": b""}
    )


def test_a_replayed_copy_leaves_the_index_at_the_first_commit(store: BlockStore) -> None:
    """The ledger refuses a replay as a duplicate; the tx index must keep pointing at the
    commit that counted, as the node's in-memory outcomes do."""
    first, again, fresh = h256(b"first"), h256(b"again"), h256(b"fresh")
    store.commit_block(1, h256(b"b1"), b"b1", b"c1", tx_hashes=[again, first], state_changes={})
    store.commit_block(
        2,
        h256(b"b2"),
        b"b2",
        b"c2",
        tx_hashes=[first, fresh, fresh],
        state_changes={},
        replays={0, 2},
    )
    assert store.tx_location(first) == (1, 1)
    assert store.tx_location(fresh) == (2, 1)
    assert store.tx_location(again) == (1, 0)


def test_each_store_gets_its_own_memtable_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes write the same ledger data: equal memtables would flush and compact in the same
    second on every node (a cluster-wide stall), so each store draws its own size."""
    sizes: list[int] = []
    real = kv.plyvel.DB

    def recording(*args: object, **kwargs: object) -> object:
        sizes.append(int(kwargs["write_buffer_size"]))  # type: ignore[call-overload]
        return real(*args, **kwargs)

    monkeypatch.setattr(kv.plyvel, "DB", recording)
    for i in range(12):
        kv.LevelDBBackend(tmp_path / f"db{i}").close()
    low, high = kv.WRITE_BUFFER_BYTES, kv.WRITE_BUFFER_BYTES + kv.WRITE_BUFFER_JITTER
    assert all(low <= s < high for s in sizes)
    assert len(set(sizes)) > 1


def test_compression_is_a_choice_and_either_reads_the_other(tmp_path: Path) -> None:
    """Tables written with Snappy read back after the store reopens uncompressed (and the
    reverse): LevelDB marks each block with its own compression."""
    data = tmp_path / "data"
    with BlockStore.open(data, CHAIN, compression="snappy") as store:
        for height in range(1, 4):
            commit(store, height)
        app_hash = store.app_hash
    with BlockStore.open(data, CHAIN, compression="none") as store:
        assert store.app_hash == app_hash and store.block(2) == make_block(2)[1]
        commit(store, 4)
    with BlockStore.open(data, CHAIN, compression="snappy") as store:
        assert store.latest_height == 4 and store.block(4) == make_block(4)[1]
    with pytest.raises(ValueError, match="compression 'lz4'"):
        kv.LevelDBBackend(tmp_path / "other", compression="lz4")
