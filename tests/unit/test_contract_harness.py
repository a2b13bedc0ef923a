"""The contract tests' chain, its parties and scenarios, and tests of the rules' state overlay.

``Ledger`` is :class:`~protocol.contract.memory.MemoryLedger` on the test chain: blocks executed
over a dict-backed state, the changes applied and the app hash chained the way the node's store
does. The other ``test_contract_*`` modules import it.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.contract.memory import MemoryLedger, MemoryState
from protocol.contract.scope import Overlay
from protocol.crypto import Identity, h256
from protocol.genesis import FeeSchedule, Genesis, Validator
from protocol.transactions import (
    CommitmentEntry,
    ConsentGrant,
    ConsentRevoke,
    Deposit,
    QueryEntry,
    QueryRequest,
    RecordCommitment,
    RegisterClient,
    RegisterSubject,
    ValidatorSetChange,
)
from protocol.vocabulary import Category, Purpose, QueryMode

CHAIN = "creditnet-test"
T0 = 1_700_000_000_000
"""Block time of the first block (ms); each block adds one second."""
DAY_MS = 86_400_000

AGENCIES = [Identity(bytes([0x01 + i]) * 32) for i in range(4)]
CLIENTS = [Identity(bytes([0x40 + i]) * 32) for i in range(3)]
SUBJECTS = [Identity(bytes([0x60 + i]) * 32) for i in range(3)]
OUTSIDER = Identity(b"\x7f" * 32)
PSEUDONYMS = [h256(b"subject-%d" % i) for i in range(3)]
QUERY_FEE, EXCHANGE_FEE = 100, 50

GENESIS = Genesis(
    chain_id=CHAIN,
    genesis_time_ms=T0 - 1000,
    validators=tuple(
        Validator(f"agency{i}", a.public_key, f"/ip4/127.0.0.1/tcp/{26610 + 10 * i}")
        for i, a in enumerate(AGENCIES)
    ),
    pseudonym_salt=b"\x00" * 32,
    fees=FeeSchedule(query_fee=QUERY_FEE, exchange_fee=EXCHANGE_FEE),
)


class Ledger(MemoryLedger):
    """The test chain's ledger: GENESIS, blocks proposed by agency 0, one second apart."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        super().__init__(genesis, AGENCIES[0].public_key)


def request(
    client: Identity = CLIENTS[0],
    agency: Identity = AGENCIES[0],
    *,
    pseudonym: bytes = PSEUDONYMS[0],
    purpose: Purpose = Purpose.LOAN_APPROVAL,
    categories: tuple[Category, ...] = (),
    nonce: int = 1,
    time_ms: int = T0,
) -> QueryRequest:
    return QueryRequest.sign(
        client,
        CHAIN,
        agency=agency.public_key,
        pseudonym=pseudonym,
        purpose=purpose,
        categories=categories,
        nonce=nonce,
        time_ms=time_ms,
    )


def query_entry(
    req: QueryRequest, serving: Sequence[Identity] = (), fee: int | None = None
) -> QueryEntry:
    keys = tuple(a.public_key for a in serving)
    mode = QueryMode.FORWARDED if keys else QueryMode.DIRECT
    if fee is None:
        fee = QUERY_FEE + EXCHANGE_FEE * len(keys)
    return QueryEntry(req, mode, keys, fee)


def populated(deposit: int = 10_000, categories: tuple[Category, ...] = ()) -> Ledger:
    """A ledger with clients 0 and 1 registered (by agency 0), subject 0 registered, and subject
    0's consent for client 0 (loan approval, ``categories``) valid for a day."""
    ledger = Ledger()
    a = AGENCIES[0]
    outs = ledger.run(
        ledger.tx(a, RegisterClient(CLIENTS[0].public_key, "lender-one", deposit)),
        ledger.tx(a, RegisterClient(CLIENTS[1].public_key, "lender-two", deposit)),
        ledger.tx(a, RegisterSubject(PSEUDONYMS[0], SUBJECTS[0].public_key)),
    ).outcomes
    grant = ConsentGrant(
        PSEUDONYMS[0], CLIENTS[0].public_key, Purpose.LOAN_APPROVAL, categories, T0 + DAY_MS
    )
    outs += (ledger.one(SUBJECTS[0], grant),)
    assert all(o.ok for o in outs), outs
    return ledger


def scenario_app_hash() -> str:
    """The app hash after a fixed scenario touching every transaction kind (hex).

    Run in subprocesses with different hash seeds by the determinism tests.
    """
    ledger = populated()
    a, b, c = AGENCIES[:3]
    req = request(categories=(Category.LOAN,))
    ledger.run(
        ledger.tx(a, RecordCommitment((CommitmentEntry(h256(b"r1"), h256(b"d1")),))),
        ledger.tx(b, RecordCommitment((CommitmentEntry(h256(b"r2"), h256(b"d2")),))),
        ledger.tx(a, query_entry(req, [b, c])),
        ledger.tx(a, Deposit(CLIENTS[1].public_key, 77)),
        b"\xc1garbage",
    )
    votes = [
        ledger.tx(
            v, ValidatorSetChange(OUTSIDER.public_key, "agency9", "/ip4/10.0.0.9/tcp/1", True)
        )
        for v in AGENCIES[:3]
    ]
    ledger.run(*votes)
    ledger.run(
        ledger.tx(
            SUBJECTS[0], ConsentRevoke(PSEUDONYMS[0], CLIENTS[0].public_key, Purpose.LOAN_APPROVAL)
        )
    )
    return ledger.app_hash.hex()


# --- the overlay the rules run on --------------------------------------------------------------


def test_overlay_reads_its_own_writes_before_the_base() -> None:
    base = MemoryState()
    base.data[b"k"] = b"old"
    top = Overlay(base)
    assert top.get(b"k") == b"old"
    top.writes[b"k"] = b"new"
    assert top.get(b"k") == b"new"
    assert base.get(b"k") == b"old"


def test_overlay_delete_leaves_no_tombstone_for_a_key_the_base_lacks() -> None:
    base = MemoryState()
    base.data[b"present"] = b"v"
    block = Overlay(base)
    tx = Overlay(block)
    tx.writes[b"fresh"] = b"x"
    tx.delete(b"fresh")
    tx.delete(b"present")
    block.absorb(tx.writes)
    assert block.writes == {b"present": None}


def test_absorbing_a_delete_of_a_key_written_earlier_in_the_block_drops_it() -> None:
    block = Overlay(MemoryState())
    block.writes[b"k"] = b"v"  # an earlier transaction of the block wrote it
    tx = Overlay(block)
    tx.delete(b"k")
    assert tx.writes == {b"k": None}
    block.absorb(tx.writes)
    assert block.writes == {}
