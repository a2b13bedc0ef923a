"""Checkpoints: every K heights the validators compare the app hash after executing them.

2f+1 matching checkpoints that agree with our own execution make a height *stable*; a
checkpoint that disagrees with our app hash at the same height is a divergence; checkpoints from
f+1 replicas above our committed height mean we are behind (at least one honest replica got
there). One checkpoint -- the newest -- is kept per replica, so memory stays bounded whatever
peers send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocol.consensus.messages import Checkpoint


@dataclass(frozen=True)
class CheckpointOutcome:
    diverged: bool
    """The checkpoint's app hash differs from ours at its height."""
    behind_to: int
    """A height f+1 replicas have checkpointed above our committed height (0: not behind)."""
    source: int
    """A replica that has ``behind_to`` (meaningful when behind_to > 0)."""


class CheckpointLog:
    def __init__(self, quorum: int, f: int, interval: int) -> None:
        self.quorum, self.f, self.interval = quorum, f, interval
        self.stable = 0
        self._by_seq: dict[int, dict[int, Checkpoint]] = {}

    def wants(self, cp: Checkpoint) -> bool:
        """Worth checking the signature of: on the interval and above the stable height."""
        return cp.seq % self.interval == 0 and cp.seq > self.stable

    def add(
        self, cp: Checkpoint, app_hashes: Mapping[int, bytes], committed_height: int
    ) -> CheckpointOutcome:
        for seq, by in list(self._by_seq.items()):
            if cp.replica in by and seq < cp.seq:
                del by[cp.replica]
            if not by:
                del self._by_seq[seq]
        self._by_seq.setdefault(cp.seq, {})[cp.replica] = cp
        ours = app_hashes.get(cp.seq)
        same = sum(
            1
            for c in self._by_seq[cp.seq].values()
            if (c.block_hash, c.app_hash) == (cp.block_hash, cp.app_hash)
        )
        if same >= self.quorum and ours == cp.app_hash:
            self.stable = cp.seq
            for seq in [s for s in self._by_seq if s <= cp.seq]:
                del self._by_seq[seq]
        above = [c for by in self._by_seq.values() for c in by.values() if c.seq > committed_height]
        behind_to, source = 0, 0
        if len({c.replica for c in above}) > self.f:
            behind_to = sorted((c.seq for c in above), reverse=True)[self.f]
            source = next(c.replica for c in above if c.seq >= behind_to)
        return CheckpointOutcome(ours is not None and ours != cp.app_hash, behind_to, source)
