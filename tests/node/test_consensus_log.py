"""The consensus log: atomic records, replay, torn tails, rewrites, and the move out of LevelDB."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from node.storage import DB_DIRNAME, BlockStore, ConsensusLog, LevelDBBackend, StorageError, schema
from node.storage.consensus_log import FILENAME, MAGIC, decode_payload, encode_payload

CHAIN = "creditnet-test"
SEED = int(os.environ.get("CREDITNET_TEST_SEED", "20261127"))


def reopen(path: Path) -> ConsensusLog:
    return ConsensusLog(path)


def test_records_survive_a_reopen_and_deletes_stay_deleted(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    log = ConsensusLog(path)
    log.write({b"v/p1": b"digest-1", b"proof/1": b"x" * 5000, b"view": b"\x00" * 8})
    log.write({b"proof/1": None, b"v/c1": b"digest-1"})
    log.delete([b"v/p1", b"never-there"])
    log.close()
    again = reopen(path)
    assert dict(again.items()) == {b"v/c1": b"digest-1", b"view": b"\x00" * 8}
    assert list(again.items(b"v/")) == [(b"v/c1", b"digest-1")]
    assert again.get(b"proof/1") is None


def test_payload_round_trip_and_refusals() -> None:
    changes = {b"a": b"1", b"b": None, b"c" * 1024: b""}
    assert decode_payload(encode_payload(changes)) == changes
    with pytest.raises(ValueError, match="key"):
        encode_payload({b"k" * 1025: b"v"})
    with pytest.raises(ValueError, match="key"):
        encode_payload({b"": b"v"})
    good = encode_payload({b"a": b"1"})
    for bad in (good[:-1], good + b"\x00", good[:7] + b"\x07" + good[8:]):
        with pytest.raises(ValueError):
            decode_payload(bad)


def test_a_record_cut_at_any_byte_replays_all_or_nothing(tmp_path: Path) -> None:
    """A crash mid-write leaves a prefix of the last record: replay keeps exactly the records
    before it, and the file is cut back so later appends follow a good record."""
    path = tmp_path / FILENAME
    log = ConsensusLog(path)
    log.write({b"view": b"1", b"v/p7": b"d7"})
    before = path.stat().st_size
    log.write({b"view": b"2", b"v/p7": None, b"proof/7": b"p" * 300})
    log.close()
    whole = path.read_bytes()
    for cut in range(before, len(whole)):
        path.write_bytes(whole[:cut])
        cut_log = reopen(path)
        assert dict(cut_log.items()) == {b"view": b"1", b"v/p7": b"d7"}, cut
        cut_log.write({b"after": b"yes"})
        cut_log.close()
        assert dict(reopen(path).items()) == {b"view": b"1", b"v/p7": b"d7", b"after": b"yes"}
    path.write_bytes(whole)
    assert dict(reopen(path).items()) == {b"view": b"2", b"proof/7": b"p" * 300}


def test_garbage_after_the_last_record_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    path = tmp_path / FILENAME
    log = ConsensusLog(path)
    log.write({b"view": b"5"})
    log.close()
    for tail in (b"\x00" * 4096, rng.randbytes(777), b"\xff\xff\xff\xff\x00\x00\x00\x00"):
        with path.open("ab") as f:
            f.write(tail)
        with caplog.at_level(logging.WARNING, logger="node.storage.consensus_log"):
            again = reopen(path)
        assert dict(again.items()) == {b"view": b"5"}, f"seed {SEED}"
        assert "dropping the last" in caplog.text
        again.close()
        caplog.clear()


def test_a_file_that_is_not_a_consensus_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"this is not a log at all")
    with pytest.raises(StorageError, match="not a creditnet consensus log"):
        ConsensusLog(path)
    path.write_bytes(MAGIC[:3])  # created, cut before its magic was synced: an empty log
    assert len(ConsensusLog(path)) == 0


def test_the_file_is_rewritten_with_its_live_records_once_mostly_dead(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    log = ConsensusLog(path, rewrite_after_bytes=64 * 1024)
    block = b"b" * 10_000
    for seq in range(100):  # one proof in flight at a time, as at a steady commit rate
        log.write({b"proof/%d" % seq: block, b"view": b"v"})
        log.delete([b"proof/%d" % seq])
        assert log.size_bytes < 64 * 1024 + 2 * len(block)
    assert log.rewrites >= 10
    log.write({b"proof/last": block})
    log.close()
    assert dict(reopen(path).items()) == {b"view": b"v", b"proof/last": block}


def test_live_records_larger_than_the_threshold_do_not_rewrite_every_write(tmp_path: Path) -> None:
    log = ConsensusLog(tmp_path / FILENAME, rewrite_after_bytes=4096)
    for seq in range(20):
        log.write({b"proof/%d" % seq: b"x" * 1000})  # all live
    assert log.rewrites <= 3


def test_closed_log_refuses_reads_and_writes(tmp_path: Path) -> None:
    log = ConsensusLog(tmp_path / FILENAME)
    log.close()
    log.close()
    for call in (lambda: log.get(b"a"), log.items, lambda: log.write({b"a": b"1"})):
        with pytest.raises(StorageError, match="closed"):
            call()


def test_records_of_an_older_store_move_out_of_leveldb_once(tmp_path: Path) -> None:
    """A data directory from before the consensus log kept its records in LevelDB's ``w``
    namespace: opening it moves them to the log, and LevelDB no longer holds them."""
    BlockStore.open(tmp_path, CHAIN).close()
    legacy = LevelDBBackend(tmp_path / DB_DIRNAME)
    legacy.write(
        {schema.consensus_key(b"view"): b"7", schema.consensus_key(b"v/p9"): b"d9"}, sync=True
    )
    legacy.close()
    (tmp_path / FILENAME).unlink()
    with BlockStore.open(tmp_path, CHAIN) as store:
        assert dict(store.consensus_items()) == {b"view": b"7", b"v/p9": b"d9"}
    leveldb = LevelDBBackend(tmp_path / DB_DIRNAME)
    assert list(leveldb.iterate(schema.CONSENSUS)) == []
    leveldb.close()
    with BlockStore.open(tmp_path, CHAIN) as store:
        assert dict(store.consensus_items()) == {b"view": b"7", b"v/p9": b"d9"}


def test_a_move_interrupted_after_the_log_write_keeps_the_newer_log_value(tmp_path: Path) -> None:
    BlockStore.open(tmp_path, CHAIN).close()
    log = ConsensusLog(tmp_path / FILENAME)
    log.write({b"view": b"8"})  # the log already has a newer value of this record
    log.close()
    legacy = LevelDBBackend(tmp_path / DB_DIRNAME)
    legacy.write({schema.consensus_key(b"view"): b"7"}, sync=True)
    legacy.close()
    with BlockStore.open(tmp_path, CHAIN) as store:
        assert store.get_consensus(b"view") == b"8"


def test_block_commit_drops_the_records_of_its_slot(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path, CHAIN) as store:
        store.write_consensus({b"proof/1": b"p", b"v/c1": b"d", b"v/p2": b"e"})
        store.commit_block(
            1,
            b"\x11" * 32,
            b"block",
            b"cert",
            tx_hashes=[],
            state_changes={},
            consensus_deletes=[b"proof/1", b"v/c1"],
        )
        assert dict(store.consensus_items()) == {b"v/p2": b"e"}
    with BlockStore.open(tmp_path, CHAIN) as store:
        assert dict(store.consensus_items()) == {b"v/p2": b"e"}
        assert store.latest_height == 1


WRITER = """
import sys
from pathlib import Path
from node.storage import ConsensusLog
log = ConsensusLog(Path(sys.argv[1]))
i = 0
while True:
    log.write({b"seq": str(i).encode(), b"proof/%d" % i: b"p" * (i % 5000)})
    log.delete([b"proof/%d" % (i - 1)])
    print(i, flush=True)
    i += 1
"""


def test_sigkill_mid_write_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    """A writer SIGKILLed at a seeded moment: every record it reported written is replayed."""
    rng = random.Random(SEED)
    path = tmp_path / FILENAME
    repo = Path(__file__).resolve().parents[2]
    for _round in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        assert proc.stdout is not None
        last = -1
        try:
            for _ in range(rng.randrange(1, 200)):
                line = proc.stdout.readline()
                assert line, "the writer stopped"
                last = int(line)
        finally:
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
        log = ConsensusLog(path)
        seq = int(log.get(b"seq") or b"-1")
        assert seq >= last, f"seed {SEED}: acknowledged {last}, replayed {seq}"
        assert log.get(b"proof/%d" % seq) == b"p" * (seq % 5000)
        log.close()
        path.unlink()
