"""Catch-up bookkeeping: when a replica knows it is behind, what it asks for, whom it serves."""

from __future__ import annotations

from protocol.consensus.catchup import CatchUp
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.messages import MAX_BLOCKS_PER_RESPONSE, BlockRequest

KEYS = tuple(bytes([i + 1]) * 32 for i in range(4))  # n = 4, f = 1
WINDOW = 10
RETRANSMIT = 500


def catchup() -> CatchUp:
    cfg = ReplicaConfig(
        "creditnet-test", KEYS, 0, b"\x00" * 32, 0, window=WINDOW, retransmit_ms=RETRANSMIT
    )
    return CatchUp(cfg)


def test_one_peer_voting_far_ahead_is_not_enough_f_plus_one_are() -> None:
    c = catchup()
    assert c.vote_ahead(1, 100 + WINDOW, committed_height=100) is None  # within the window
    assert c.vote_ahead(1, 500, committed_height=100) is None  # one peer may lie
    assert c.vote_ahead(1, 900, committed_height=100) is None  # still one peer
    assert not c.behind(100)
    # A second peer: the (f+1)-th highest vote minus one is certainly committed somewhere.
    assert c.vote_ahead(2, 300, committed_height=100) == 299
    assert c.behind(100) and c.fetch_until == 299
    # Decided: the tally starts afresh.
    assert c.vote_ahead(3, 400, committed_height=100) is None


def test_fetch_target_only_grows() -> None:
    c = catchup()
    c.fetch_to(50)
    c.fetch_to(20)
    assert c.fetch_until == 50
    assert not c.behind(50) and c.behind(49)


def test_requests_cover_what_is_missing_in_bounded_chunks() -> None:
    assert CatchUp.request(10, 10) is None
    assert CatchUp.request(10, 12) == BlockRequest(11, 12)
    far = CatchUp.request(10, 10_000)
    assert far == BlockRequest(11, 10 + MAX_BLOCKS_PER_RESPONSE)


def test_late_voters_are_not_served_lagging_ones_are_once_per_interval() -> None:
    c = catchup()
    c.committed(200, now_ms=1_000, floor=0)
    # A vote for 200 just after it committed: the voter is late, not behind.
    assert c.serve_lagging(1, 200, committed_height=200, now_ms=1_100) is None
    # Long after: it is behind; serve from where its window says it may stand.
    later = 1_000 + 2 * RETRANSMIT
    assert c.serve_lagging(1, 200, committed_height=200, now_ms=later) == (200 - WINDOW, 200)
    # Not again within a retransmit interval, but another peer may be served.
    assert c.serve_lagging(1, 200, committed_height=200, now_ms=later + 1) is None
    assert c.serve_lagging(2, 200, committed_height=200, now_ms=later + 1) is not None
    assert c.serve_lagging(1, 200, committed_height=200, now_ms=later + RETRANSMIT) is not None
    # Votes above our own height are not ours to serve.
    assert c.serve_lagging(3, 201, committed_height=200, now_ms=later) is None


def test_a_peer_that_said_where_it_stands_is_served_from_there_at_once() -> None:
    c = catchup()
    c.committed(200, now_ms=1_000, floor=0)
    span = c.serve_lagging(1, 151, committed_height=200, now_ms=1_001, certain=True)
    assert span == (151, 200)
    first = c.serve_lagging(2, 1, committed_height=10_000, now_ms=1_001, certain=True)
    assert first == (1, MAX_BLOCKS_PER_RESPONSE)


def test_requests_are_answered_with_what_we_have_in_bounded_chunks() -> None:
    assert CatchUp.serve_request(BlockRequest(11, 20), committed_height=10) is None
    assert CatchUp.serve_request(BlockRequest(5, 20), committed_height=10) == (5, 10)
    big = CatchUp.serve_request(BlockRequest(1, 10_000), committed_height=10_000)
    assert big == (1, MAX_BLOCKS_PER_RESPONSE)


def test_commit_times_are_kept_for_recent_heights_only() -> None:
    c = catchup()
    for h in range(1, 1_001):
        c.committed(h, now_ms=h, floor=h - 4 * WINDOW)
    assert len(c._commit_at) <= 4 * WINDOW + 1
