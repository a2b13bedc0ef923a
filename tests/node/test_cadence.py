"""When a replica sends the primary its transactions: timed to the primary's proposals."""

from __future__ import annotations

import pytest

from node.cadence import CADENCE_MAX_S, ProposalCadence

FALLBACK = 0.05
PRIMARY = 3
LEAD = 0.02


def cadence(*arrivals: float) -> ProposalCadence:
    c = ProposalCadence(fallback_s=FALLBACK, lead_s=LEAD)
    for at in arrivals:
        c.proposed(PRIMARY, at)
    return c


def test_without_a_cadence_transactions_wait_the_plain_timer() -> None:
    assert cadence().send_at(5.0, 5.0) == pytest.approx(5.0 + FALLBACK)
    # One proposal is no cadence yet.
    assert cadence(1.0).send_at(1.01, 1.01) == pytest.approx(1.01 + FALLBACK)
    assert not cadence(1.0).known(1.01)


def test_transactions_leave_just_before_the_next_proposal_that_can_take_them() -> None:
    c = cadence(1.0, 1.1, 1.2)  # a steady 100 ms
    assert c.known(1.21)
    # Queued at 1.21: the proposal due at 1.3 takes them; they leave 20 ms before it.
    assert c.send_at(1.21, 1.21) == pytest.approx(1.28)
    # Queued after that moment (1.285): too late for 1.3, so they leave before 1.4.
    assert c.send_at(1.285, 1.285) == pytest.approx(1.38)
    # Never more than one interval after they were queued.
    for queued in (1.2, 1.23, 1.279, 1.281, 1.299):
        assert queued <= c.send_at(queued, queued) < queued + 0.1 + 1e-9


def test_the_interval_follows_the_primary_and_a_long_gap_forgets_it() -> None:
    c = cadence(1.0, 1.1, 1.2)
    c.proposed(PRIMARY, 1.4)  # slower now: the running mean moves towards 200 ms
    assert c.interval is not None and 0.1 < c.interval < 0.2
    c.proposed(PRIMARY, 1.4 + CADENCE_MAX_S + 0.1)  # idle for a while: no cadence
    assert c.interval is None
    assert c.send_at(3.0, 3.0) == pytest.approx(3.0 + FALLBACK)


def test_a_primary_that_missed_two_beats_has_no_cadence() -> None:
    c = cadence(1.0, 1.1, 1.2)
    assert c.known(1.4)
    assert not c.known(1.41)
    # Then queued transactions go on the plain timer, not on a beat that is not coming.
    assert c.send_at(1.41, 1.41) == pytest.approx(1.41 + FALLBACK)


def test_reset_forgets_the_cadence_of_a_previous_primary() -> None:
    c = cadence(1.0, 1.1, 1.2)
    c.reset()
    assert c.last is None and c.interval is None
    assert c.send_at(1.25, 1.25) == pytest.approx(1.25 + FALLBACK)
