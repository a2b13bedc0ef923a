"""Mempool admission: checks, dedupe, replay refusal, bounds, commit bookkeeping."""

from __future__ import annotations

from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.ratelimit import KeyedBuckets
from protocol.codec import encode
from protocol.crypto import Identity, h256
from protocol.transactions import CommitmentEntry, RecordCommitment, Transaction

CHAIN = "creditnet-test"
AGENCY = Identity(b"\x07" * 32)


def tx(n: int, chain: str = CHAIN) -> bytes:
    ref = h256(n.to_bytes(8, "big"))
    body = RecordCommitment((CommitmentEntry(ref, h256(ref)),))
    return encode(Transaction.sign(AGENCY, chain, body, n))


def pool(max_txs: int = 100, committed: set[bytes] | None = None) -> Mempool:
    done = committed or set()
    return Mempool(
        CHAIN,
        max_txs=max_txs,
        max_bytes=1 << 20,
        metrics=NodeMetrics(process=False),
        is_committed=done.__contains__,
    )


async def test_valid_txs_are_accepted_once_and_then_pending() -> None:
    m = pool()
    txs = [tx(i) for i in range(5)]
    first = await m.admit(txs, local=True)
    assert [a.status for a in first] == ["accepted"] * 5
    again = await m.admit(txs[:2], local=False)
    assert [a.status for a in again] == ["pending"] * 2
    assert len(m) == 5 and m.size_bytes == sum(map(len, txs))


async def test_bad_signature_wrong_chain_and_garbage_are_refused_with_a_code() -> None:
    m = pool()
    good = tx(1)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    out = await m.admit([forged, tx(2, chain="other-chain"), b"\x00\xff"], local=True)
    assert [a.status for a in out] == ["refused"] * 3
    assert out[0].code == "bad_signature" and out[1].code == "bad_signature"
    assert out[2].code == "malformed" and out[2].detail
    assert len(m) == 0


async def test_an_already_committed_tx_is_not_admitted_again() -> None:
    t = tx(1)
    m = pool(committed={h256(t)})
    (a,) = await m.admit([t], local=True)
    assert a.status == "committed" and len(m) == 0


async def test_a_full_mempool_refuses_with_mempool_full() -> None:
    m = pool(max_txs=3)
    out = await m.admit([tx(i) for i in range(5)], local=True)
    assert [a.status for a in out] == ["accepted"] * 3 + ["refused"] * 2
    assert out[3].code == "mempool_full" and "retry" in out[3].detail


async def test_commit_forgets_txs_and_records_latency() -> None:
    m = pool()
    txs = [tx(i) for i in range(4)]
    await m.admit(txs, local=True)
    m.committed([h256(t) for t in txs[:3]])
    assert len(m) == 1 and h256(txs[3]) in m
    assert m.metrics.commit_latency._sum.get() >= 0  # observed without error
    # Known-good transactions pass the replica's check without a new verification.
    assert m.tx_check(txs[0], h256(txs[0]))
    assert not m.tx_check(b"garbage", h256(b"garbage"))


async def test_stale_local_txs_are_offered_again_first_soon_then_once_per_interval() -> None:
    m = pool()
    await m.admit([tx(1)], local=True)
    await m.admit([tx(2)], local=False)  # a peer's: that peer sends it again, not us
    assert m.stale_local(60.0, 60.0, 10) == []  # not pending long enough
    assert m.stale_local(0.0, 60.0, 10) == [tx(1)]  # first time: after the short wait
    assert m.stale_local(0.0, 60.0, 10) == []  # after that, only every again_after_s
    assert m.stale_local(60.0, 0.0, 10) == [tx(1)]
    await m.admit([tx(3), tx(4)], local=True)
    assert len(m.stale_local(0.0, 0.0, 2)) == 2  # at most the limit


def test_lookup_quota_buckets_refuse_beyond_the_rate() -> None:
    b = KeyedBuckets(3)
    assert [b.take("lender") for _ in range(4)] == [True, True, True, False]
    assert b.take("another lender")


async def test_a_proposal_and_a_batch_carrying_the_same_txs_at_once_verify_each_once() -> None:
    """The driver's pre-check of a proposal and a peer's batch may hold the same transactions
    at the same moment: each is verified once, the other task waits for that result."""
    import trio  # noqa: PLC0415

    m = pool()
    txs = [tx(i) for i in range(40)]
    forged = txs[0][:-1] + bytes([txs[0][-1] ^ 1])
    hashes = [h256(t) for t in txs]
    admitted = []

    async def admit_them() -> None:
        admitted.extend(await m.admit([*txs, forged], local=False))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.precheck, [*txs, forged], [*hashes, h256(forged)])
        nursery.start_soon(admit_them)
    assert [a.status for a in admitted] == ["accepted"] * 40 + ["refused"]
    assert admitted[-1].code == "bad_signature"
    # each of the 41 once: the waiting task takes the other's verdict, a refusal included
    assert m.metrics.verified._value.get() == 41
    assert all(m.tx_check(t, h) for t, h in zip(txs, hashes, strict=True))


async def test_many_copies_of_one_bad_tx_are_checked_once_and_all_refused() -> None:
    """A peer's batch (or a proposal) may repeat one transaction up to its item limit: each
    copy is answered from one verification, never by waiting on itself or recursing."""
    import trio  # noqa: PLC0415

    m = pool(max_txs=5000)
    good = tx(1)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    with trio.fail_after(10):
        out = await m.admit([forged] * 2000, local=False)
        await m.precheck([forged] * 2000, [h256(forged)] * 2000)
    assert {(a.status, a.code) for a in out} == {("refused", "bad_signature")}
    # once by the admission; the proposal's pre-check stops at the refusal it remembers
    assert m.metrics.verified._value.get() == 1


async def test_a_proposal_of_forged_transactions_costs_one_chunk_of_verifications() -> None:
    """A faulty primary's proposal: the replica refuses it at its first bad transaction, so
    the pre-check stops there too instead of verifying the whole block in a worker thread."""
    from node.mempool import VERIFY_CHUNK  # noqa: PLC0415

    m = pool(max_txs=5000)
    good = [tx(i) for i in range(3 * VERIFY_CHUNK)]
    forged = good[0][:-1] + bytes([good[0][-1] ^ 1])
    block = [forged, *good[1:]]
    await m.precheck(block, [h256(t) for t in block])
    assert not m.tx_check(forged, h256(forged))  # the replica's check: refused, remembered
    assert m.metrics.verified._value.get() == VERIFY_CHUNK


async def test_a_known_forged_transaction_refuses_the_block_before_any_other_is_verified() -> None:
    """A faulty primary may put many fresh transactions before one already refused here: the
    replica's block check refuses the block at once instead of verifying the fresh ones on the
    node's main thread."""
    m = pool(max_txs=5000)
    good = [tx(i) for i in range(50)]
    forged = good[0][:-1] + bytes([good[0][-1] ^ 1])
    await m.admit([forged], local=False)  # refused, remembered
    before = m.metrics.verified._value.get()
    block = [*good[1:], forged]
    hashes = [h256(t) for t in block]
    await m.precheck(block, hashes)
    assert not m.block_check(block, hashes)
    assert m.metrics.verified._value.get() == before
    # An honest block of the fresh ones passes.
    assert m.block_check(good[1:], [h256(t) for t in good[1:]])


def test_a_refusal_on_the_replicas_own_check_is_remembered() -> None:
    """A proposal checked without the pre-check (a NewView's re-proposals) costs one
    verification of a bad transaction, not one each time it comes round."""
    m = pool()
    good = tx(1)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    h = h256(forged)
    assert not m.block_check([forged], [h])
    assert not m.block_check([good, forged], [h256(good), h])
    assert m.metrics.verified._value.get() == 1
