"""When to send the primary the transactions admitted here: just before its next proposal.

A busy primary proposes at a steady cadence (at most one block per ``batch_wait_ms``, counted
from its previous proposal: see :class:`protocol.consensus.replica.Replica`). A transaction that
reaches it just after a proposal waits for the whole next interval, however early it left the
replica that admitted it. So a replica gathers the transactions no consensus message took along
(``node.network``'s piggyback) until shortly before the next proposal is due and sends them then,
in one batch: they wait here instead of at the primary, for the same block.

The cadence is learnt from the pre-prepares as they arrive (no clock is shared, and replicas may
be configured differently). When it is unknown or stale -- the primary is idle and proposes as
soon as a transaction reaches it, or a view is changing -- the plain timer applies.
"""

from __future__ import annotations

from dataclasses import dataclass

SPREAD_LEAD_S = 0.02
"""How long before the primary's next proposal a replica sends its batch: the transit and the
primary's admission (a signature check in a worker thread) must fit in it."""
CADENCE_MAX_S = 1.0
"""A gap between two proposals longer than this is not a cadence (the primary was idle)."""
CADENCE_WEIGHT = 0.25
"""Weight of the newest gap in the running mean of the interval between proposals."""


@dataclass
class ProposalCadence:
    """The primary's proposal cadence as this replica observes it (times in seconds, monotonic).

    ``fallback_s``: how long transactions wait to be batched when the cadence is not known.
    """

    fallback_s: float
    lead_s: float = SPREAD_LEAD_S
    primary: int | None = None
    """The validator whose proposals these are (a new one's cadence is learnt afresh)."""
    last: float | None = None
    """When the latest pre-prepare of the primary arrived."""
    interval: float | None = None
    """Running mean of the gaps between its pre-prepares (None: no cadence)."""

    def proposed(self, primary: int, at: float) -> None:
        """A pre-prepare of ``primary``, the current primary, arrived at ``at``."""
        if primary != self.primary:
            self.reset()
            self.primary = primary
        if self.last is not None:
            gap = at - self.last
            if gap > CADENCE_MAX_S:
                self.interval = None
            elif gap > 0:
                self.interval = (
                    gap
                    if self.interval is None
                    else self.interval + CADENCE_WEIGHT * (gap - self.interval)
                )
        self.last = at if self.last is None else max(self.last, at)

    def reset(self) -> None:
        """Forget the cadence (a new primary)."""
        self.last = self.interval = None

    def known(self, now: float) -> bool:
        """Whether the primary keeps a cadence (two missed beats: no longer)."""
        last, interval = self.last, self.interval
        return last is not None and interval is not None and now - last <= 2 * interval

    def send_at(self, queued_since: float, now: float) -> float:
        """When to send transactions waiting since ``queued_since`` (at or before ``now``:
        at once).

        With a cadence: ``lead_s`` before the first proposal due after they were queued (one
        due earlier than that could not take them), so within one interval. Without:
        ``fallback_s`` after they were queued. A primary that missed two of its own beats has
        no cadence any more.
        """
        last, interval = self.last, self.interval
        if last is None or interval is None or not self.known(now):
            return queued_since + self.fallback_s
        due = last + interval - self.lead_s
        if due < queued_since:
            due += interval * (1 + int((queued_since - due) // interval))
        return due


__all__ = ["CADENCE_MAX_S", "SPREAD_LEAD_S", "ProposalCadence"]
