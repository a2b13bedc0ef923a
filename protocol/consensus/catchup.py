"""Catching up: how far a replica that fell behind fetches, and which lagging peers it serves.

A replica learns it is behind from f+1 checkpoints above its committed height
(:mod:`protocol.consensus.checkpoints`), from a verified commit certificate above it, or from
votes above its window sent by f+1 replicas (one Byzantine replica cannot make it fetch). It then
asks for the blocks it lacks, at most ``MAX_BLOCKS_PER_RESPONSE`` a request, until it reaches
``fetch_until``; the replica verifies each certificate before applying a fetched block.

A peer still voting on heights this replica committed is lagging and is sent the blocks -- but not
for votes arriving just after the commit (the last voters are late, not behind), and at most once
per retransmit interval per peer.

Pure bookkeeping with bounded memory (one entry per peer, heights of the last few windows); the
replica turns the answers into :class:`~protocol.consensus.events.Output` values.
"""

from __future__ import annotations

from protocol.consensus.config import ReplicaConfig
from protocol.consensus.messages import MAX_BLOCKS_PER_RESPONSE, BlockRequest


class CatchUp:
    """One replica's catch-up state (see the module docstring)."""

    def __init__(self, cfg: ReplicaConfig) -> None:
        self._f = cfg.f
        self._window = cfg.window
        self._retransmit_ms = cfg.retransmit_ms
        self.fetch_until = 0
        """The height this replica knows it must reach by fetching blocks."""
        self._ahead: dict[int, int] = {}
        """Peer -> highest vote seen above our window, since the last decision."""
        self._served: dict[int, int] = {}
        """Peer -> when it was last sent blocks."""
        self._commit_at: dict[int, int] = {}
        """Height -> local time it was committed here (recent heights only)."""

    def behind(self, committed_height: int) -> bool:
        return self.fetch_until > committed_height

    def fetch_to(self, height: int) -> None:
        self.fetch_until = max(self.fetch_until, height)

    def vote_ahead(self, sender: int, seq: int, committed_height: int) -> int | None:
        """A vote of ``sender`` for ``seq``: the height to fetch up to once f+1 replicas vote
        above our window, else None."""
        if seq <= committed_height + self._window:
            return None
        self._ahead[sender] = max(self._ahead.get(sender, 0), seq)
        if len(self._ahead) <= self._f:
            return None
        target = sorted(self._ahead.values(), reverse=True)[self._f] - 1
        self._ahead.clear()
        if target <= committed_height:
            return None
        self.fetch_to(target)
        return target

    @staticmethod
    def request(committed_height: int, until: int) -> BlockRequest | None:
        """The next request for blocks above ``committed_height`` up to ``until``."""
        start = committed_height + 1
        if until < start:
            return None
        return BlockRequest(start, min(until, start + MAX_BLOCKS_PER_RESPONSE - 1))

    def committed(self, height: int, now_ms: int, floor: int) -> None:
        """Height ``height`` committed here at ``now_ms``; heights below ``floor`` are forgotten."""
        self._commit_at[height] = now_ms
        for old in [h for h in self._commit_at if h < floor]:
            del self._commit_at[old]

    def serve_lagging(
        self, sender: int, seq: int, committed_height: int, now_ms: int, *, certain: bool = False
    ) -> tuple[int, int] | None:
        """``sender`` still votes on ``seq``: the heights to send it (from, to), or None.

        Its votes lie within its window, so its own committed height is at least
        ``seq - window``; serving from there covers whatever it lacks. ``certain``: the peer said
        where it stands (a view change's committed height), so serve from exactly ``seq``.
        """
        if seq > committed_height:
            return None
        committed_at = self._commit_at.get(seq)
        if (
            not certain
            and committed_at is not None
            and now_ms - committed_at < 2 * self._retransmit_ms
        ):
            return None  # the last voters' votes arrive after the quorum's: late, not lagging
        last = self._served.get(sender)
        if last is not None and now_ms - last < self._retransmit_ms:
            return None
        self._served[sender] = now_ms
        start = seq if certain else max(1, seq - self._window)
        return start, min(committed_height, start + MAX_BLOCKS_PER_RESPONSE - 1)

    @staticmethod
    def serve_request(req: BlockRequest, committed_height: int) -> tuple[int, int] | None:
        """The heights (from, to) to answer a peer's request with, or None if we lack them."""
        if req.from_height > committed_height:
            return None
        to = min(req.to_height, committed_height, req.from_height + MAX_BLOCKS_PER_RESPONSE - 1)
        return req.from_height, to
