"""Block files: append and read back, rolling to new files, the cut of what a crash left after
the last indexed block, refusal of corrupt bytes; and the block store on top of them (blocks out
of LevelDB, older stores' blocks still read from it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.storage import (
    DB_DIRNAME,
    BlockStore,
    LevelDBBackend,
    OutOfOrderBlock,
    StorageError,
    schema,
)
from node.storage.block_files import (
    DIRNAME,
    MAGIC,
    BlockFiles,
    decode_location,
    encode_location,
)
from protocol.apphash import GENESIS_APP_HASH, next_app_hash
from protocol.crypto import h256

CHAIN = "test-chain"


def block_of(height: int) -> tuple[bytes, bytes]:
    """Distinct block and certificate bytes for ``height`` (sizes vary with it)."""
    return bytes([height % 251]) * (100 + height * 7), b"cert-%d" % height


@pytest.fixture(params=["file", "memory"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> BlockFiles:
    return BlockFiles(tmp_path / DIRNAME if request.param == "file" else None)


def test_blocks_read_back_from_their_locations(files: BlockFiles) -> None:
    where = {h: files.append(h, *block_of(h)) for h in range(1, 20)}
    for h, location in where.items():
        assert files.read(location, h) == block_of(h)
    file_no, offset, length = decode_location(where[1])
    assert (file_no, offset) == (0, len(MAGIC))
    assert encode_location(file_no, offset, length) == where[1]


def test_a_location_read_as_another_height_is_refused(files: BlockFiles) -> None:
    location = files.append(1, *block_of(1))
    with pytest.raises(StorageError, match="holds block 1, not 2"):
        files.read(location, 2)


def test_a_changed_byte_fails_the_checksum(tmp_path: Path) -> None:
    files = BlockFiles(tmp_path / DIRNAME)
    location = files.append(1, *block_of(1))
    files.close()
    path = tmp_path / DIRNAME / "000000.blk"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="checksum mismatch"):
        BlockFiles(tmp_path / DIRNAME).read(location, 1)


def test_files_roll_at_their_size_and_reopen_appends_to_the_last(tmp_path: Path) -> None:
    files = BlockFiles(tmp_path / DIRNAME, max_file_bytes=400)
    where = {h: files.append(h, *block_of(h)) for h in range(1, 12)}
    files.close()
    names = sorted(os.listdir(tmp_path / DIRNAME))
    assert len(names) > 2 and names[0] == "000000.blk"
    assert all((tmp_path / DIRNAME / n).read_bytes().startswith(MAGIC) for n in names)
    again = BlockFiles(tmp_path / DIRNAME, max_file_bytes=400)
    where[12] = again.append(12, *block_of(12))
    on_disk = sum(p.stat().st_size for p in (tmp_path / DIRNAME).iterdir())
    assert again.size_bytes == on_disk
    assert decode_location(where[12])[0] in (len(names) - 1, len(names))  # last file, or next
    for h, location in where.items():
        assert again.read(location, h) == block_of(h)


def test_cut_drops_a_torn_tail_and_records_after_the_indexed_one(tmp_path: Path) -> None:
    files = BlockFiles(tmp_path / DIRNAME, max_file_bytes=400)
    where = {h: files.append(h, *block_of(h)) for h in range(1, 10)}
    files.close()
    last = tmp_path / DIRNAME / sorted(os.listdir(tmp_path / DIRNAME))[-1]
    with last.open("ab") as f:
        f.write(b"\x00\x00\x01\x00torn")  # a record cut short by a crash
    files = BlockFiles(tmp_path / DIRNAME, max_file_bytes=400)
    dropped = files.cut_after(where[5])  # the index knows blocks up to 5
    assert dropped > 0
    file_no, offset, length = decode_location(where[5])
    assert sorted(os.listdir(tmp_path / DIRNAME))[-1] == f"{file_no:06d}.blk"
    assert (tmp_path / DIRNAME / f"{file_no:06d}.blk").stat().st_size == offset + length
    assert files.cut_after(where[5]) == 0  # nothing more to drop
    assert files.size_bytes == sum(p.stat().st_size for p in (tmp_path / DIRNAME).iterdir())
    for h in range(1, 6):
        assert files.read(where[h], h) == block_of(h)
    six = files.append(6, *block_of(6))
    assert decode_location(six)[1] == offset + length  # appended right after block 5
    assert files.read(six, 6) == block_of(6)


def test_cut_with_no_indexed_block_leaves_only_the_magic(files: BlockFiles) -> None:
    files.append(1, *block_of(1))
    assert files.cut_after(None) > 0
    location = files.append(1, *block_of(1))
    assert decode_location(location)[:2] == (0, len(MAGIC))


def test_an_index_past_the_end_of_the_files_is_refused(tmp_path: Path) -> None:
    files = BlockFiles(tmp_path / DIRNAME)
    files.append(1, *block_of(1))
    with pytest.raises(StorageError, match="lost data"):
        files.cut_after(encode_location(0, len(MAGIC), 10_000))


def test_a_file_with_another_magic_is_refused(tmp_path: Path) -> None:
    (tmp_path / DIRNAME).mkdir()
    (tmp_path / DIRNAME / "000000.blk").write_bytes(b"not a block file")
    with pytest.raises(StorageError, match="bad magic"):
        BlockFiles(tmp_path / DIRNAME)


def test_a_file_cut_inside_its_magic_is_restarted(tmp_path: Path) -> None:
    (tmp_path / DIRNAME).mkdir()
    (tmp_path / DIRNAME / "000000.blk").write_bytes(MAGIC[:3])
    files = BlockFiles(tmp_path / DIRNAME)
    location = files.append(1, *block_of(1))
    assert files.read(location, 1) == block_of(1)


def test_closed_files_raise(files: BlockFiles) -> None:
    location = files.append(1, *block_of(1))
    files.close()
    files.close()
    with pytest.raises(StorageError, match="closed"):
        files.read(location, 1)
    with pytest.raises(StorageError, match="closed"):
        files.append(2, *block_of(2))


# --- the block store over them ------------------------------------------------------------------


def commit(store: BlockStore, height: int) -> None:
    body, cert = block_of(height)
    store.commit_block(
        height, h256(body), body, cert, tx_hashes=[h256(b"t%d" % height)], state_changes={}
    )


def test_leveldb_holds_where_the_blocks_are_not_their_bytes(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        for h in range(1, 4):
            commit(store, h)
    db = LevelDBBackend(tmp_path / "data" / DB_DIRNAME)
    try:
        keys = [k for k, _ in db.iterate(b"")]
    finally:
        db.close()
    assert [k for k in keys if k.startswith(schema.BLOCK_AT)] == [
        schema.block_location_key(h) for h in range(1, 4)
    ]
    assert not [k for k in keys if k.startswith((schema.BLOCK, schema.CERTIFICATE))]
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        assert [store.block(h) for h in range(1, 4)] == [block_of(h)[0] for h in range(1, 4)]
        assert store.certificate(2) == block_of(2)[1]
        assert store.block(4) is None and store.certificate(4) is None


def test_a_block_a_crash_left_unindexed_is_cut_at_open(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        commit(store, 1)
        store._blocks.append(2, *block_of(2))  # fsynced, then killed before the index batch
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        assert store.latest_height == 1
        assert store.block(2) is None
        commit(store, 2)
        assert store.block(2) == block_of(2)[0]
        assert store.block(1) == block_of(1)[0]
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        assert store.block(2) == block_of(2)[0]


def test_an_older_stores_blocks_in_leveldb_are_still_read(tmp_path: Path) -> None:
    """A store written before the block files kept blocks and certificates in LevelDB: they are
    read from there, and new blocks go to the files."""
    with BlockStore.open(tmp_path / "data", CHAIN):
        pass
    db = LevelDBBackend(tmp_path / "data" / DB_DIRNAME)
    body, cert = block_of(1)
    try:
        db.write(
            {
                schema.block_key(1): body,
                schema.certificate_key(1): cert,
                schema.block_hash_key(h256(body)): schema.encode_height(1),
                schema.META_LATEST_HEIGHT: schema.encode_height(1),
                schema.META_APP_HASH: next_app_hash(GENESIS_APP_HASH, {}),
            },
            sync=True,
        )
    finally:
        db.close()
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        assert store.latest_height == 1
        assert store.block(1) == body and store.certificate(1) == cert
        commit(store, 2)
        assert store.block(2) == block_of(2)[0] and store.certificate(2) == block_of(2)[1]
        assert store.block(1) == body


def test_a_block_written_ahead_is_committed_at_its_location(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        commit(store, 1)
        body, cert = block_of(2)
        location = store.write_block(2, body, cert)
        assert store.block(2) is None  # not indexed until its commit
        store.commit_block(
            2, h256(body), body, cert, tx_hashes=[], state_changes={}, location=location
        )
        assert store.block(2) == body and store.certificate(2) == cert
        with pytest.raises(OutOfOrderBlock):
            store.write_block(4, *block_of(4))
        store.write_block(3, *block_of(3))  # then the execution fails: nothing points at it
    with BlockStore.open(tmp_path / "data", CHAIN) as store:
        assert store.latest_height == 2 and store.block(3) is None
        commit(store, 3)
        assert [store.block(h) for h in (1, 2, 3)] == [block_of(h)[0] for h in (1, 2, 3)]
