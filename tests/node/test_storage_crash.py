"""The block store survives SIGKILL at any point of a write: no torn block, state or app hash.

A child (``crash_writer.py``) commits synthetic blocks forever; the parent reads a seeded random
number of its ``committed <h>`` lines, SIGKILLs it right then (the child is already writing the
next block), reopens the store and checks it against the blocks regenerated from the seed. Twenty
rounds run on the same directory. Set ``CREDITNET_CRASH_SEED`` to replay a failing seed.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_writer import CHAIN_ID, SyntheticBlock, synthetic_block

from node.storage import DB_DIRNAME, BlockStore, LevelDBBackend, schema
from node.storage.block_files import DIRNAME as BLOCK_FILES_DIRNAME
from node.storage.block_files import decode_location
from protocol.apphash import GENESIS_APP_HASH, next_app_hash

WRITER = Path(__file__).with_name("crash_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20
MAX_LINES_PER_ROUND = 12
LINE_TIMEOUT_S = 60.0
TEST_TIMEOUT_S = 300.0


class ChildLines:
    """Lines of a child's stdout, each awaited with a deadline (selectors; no sleeping)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._buffer = b""

    def readline(self, deadline: float) -> str | None:
        """The next line without its newline; None at end of output."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the crash writer printed nothing before the deadline")
            if not self._selector.select(remaining):
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self._selector.close()


def committed_height(line: str, context: str) -> int:
    word, _, number = line.partition(" ")
    assert word == "committed" and number.isdigit(), f"{context}: unexpected line {line!r}"
    return int(number)


def run_and_kill(data: Path, seed: int, lines: int, deadline: float, stderr_file: Path) -> int:
    """Run the writer until it printed ``lines`` commits, SIGKILL it; return the last printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with stderr_file.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(data), str(seed)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
            env=env,
        )
    reader = ChildLines(proc)
    context = f"seed {seed}"
    last = 0
    try:
        for _ in range(lines):
            line = reader.readline(min(deadline, time.monotonic() + LINE_TIMEOUT_S))
            assert line is not None, f"{context}: writer exited early: {stderr_file.read_text()}"
            last = committed_height(line, context)
        proc.kill()  # SIGKILL, while the writer is inside its next commit
        assert proc.wait(timeout=LINE_TIMEOUT_S) == -signal.SIGKILL, stderr_file.read_text()
        while (line := reader.readline(deadline)) is not None:  # lines printed before death
            last = committed_height(line, context)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.close()
        assert proc.stdout is not None
        proc.stdout.close()
    return last


class ExpectedChain:
    """The blocks the writer commits for one seed, regenerated once each."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._blocks: dict[int, SyntheticBlock] = {}

    def __getitem__(self, height: int) -> SyntheticBlock:
        if height not in self._blocks:
            self._blocks[height] = synthetic_block(self.seed, height)
        return self._blocks[height]


def check_store(data: Path, chain: ExpectedChain, last_printed: int, context: str) -> int:
    """Check everything the reopened store holds against the regenerated chain; return latest."""
    with BlockStore.open(data, CHAIN_ID) as store:
        latest = store.latest_height
        assert latest >= last_printed, f"{context}: latest {latest} < printed {last_printed}"
        state: dict[bytes, bytes] = {}
        app_hash = GENESIS_APP_HASH
        for height in range(1, latest + 1):
            b = chain[height]
            where = f"{context}, block {height} of {latest}"
            assert store.block(height) == b.block, f"{where}: block bytes differ"
            assert store.certificate(height) == b.certificate, f"{where}: certificate differs"
            assert store.height_of(b.block_hash) == height, f"{where}: hash index wrong"
            for i, tx in enumerate(b.tx_hashes):
                assert store.tx_location(tx) == (height, i), f"{where}: tx {i} index wrong"
            for key, value in b.changes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            app_hash = next_app_hash(app_hash, b.changes)
        assert store.app_hash == app_hash, f"{context}: app hash differs from recomputation"
        assert list(store.state_items()) == sorted(state.items()), f"{context}: state differs"
        following = chain[latest + 1]
        assert store.height_of(following.block_hash) is None, f"{context}: torn block indexed"
        for tx in following.tx_hashes:
            assert store.tx_location(tx) is None, f"{context}: tx of a torn block indexed"
    backend = LevelDBBackend(data / DB_DIRNAME)  # raw look: nothing stored above latest
    try:
        prefix = schema.BLOCK_AT
        stored = [schema.decode_height(k[len(prefix) :]) for k, _ in backend.iterate(prefix)]
        assert stored == list(range(1, latest + 1)), f"{context}: heights indexed {stored}"
        for prefix in (schema.BLOCK, schema.CERTIFICATE):  # blocks live in the block files now
            assert next(backend.iterate(prefix), None) is None, f"{context}: block in LevelDB"
        if latest:  # the reopen cut whatever the kill left after the latest indexed block
            raw = backend.get(schema.block_location_key(latest))
            assert raw is not None
            file_no, offset, length = decode_location(raw)
            files = sorted((data / BLOCK_FILES_DIRNAME).iterdir())
            assert files[-1].name == f"{file_no:06d}.blk", f"{context}: files after the last"
            assert files[-1].stat().st_size == offset + length, f"{context}: bytes after the last"
    finally:
        backend.close()
    return latest


@pytest.mark.slow
def test_store_survives_sigkill_during_commits(tmp_path: Path) -> None:
    seed = int(os.environ.get("CREDITNET_CRASH_SEED") or random.randrange(1 << 32))
    print(f"crash test seed {seed} (replay with CREDITNET_CRASH_SEED={seed})")
    rng = random.Random(seed)
    deadline = time.monotonic() + TEST_TIMEOUT_S
    data = tmp_path / "data"
    chain = ExpectedChain(seed)
    latest = 0
    for round_no in range(1, ROUNDS + 1):
        context = f"seed {seed}, round {round_no}"
        lines = rng.randint(1, MAX_LINES_PER_ROUND)
        printed = run_and_kill(data, seed, lines, deadline, tmp_path / f"stderr-{round_no}.txt")
        assert printed > latest, f"{context}: writer did not resume after {latest}"
        latest = check_store(data, chain, printed, context)
