"""A small in-memory ledger for the contract tests, and tests of the rules' state overlay.

``Ledger`` executes blocks with :func:`execute_block` over a dict-backed state and applies the
changes the way the node's store does, chaining the app hash. The other ``test_contract_*``
modules import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from protocol.apphash import GENESIS_APP_HASH, next_app_hash
from protocol.block import Block, make_header
from protocol.codec import encode
from protocol.contract.rules import BlockOutcome, TxOutcome, execute_block
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
    Transaction,
    TxBody,
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


class DictState:
    """Committed application state in a dict: ``get`` and a sorted prefix scan."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))

    def apply(self, changes: dict[bytes, bytes | None]) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


class Ledger:
    """Blocks executed one after another over one DictState, as a node commits them."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        self.genesis = genesis
        self.state = DictState()
        self.height = 0
        self.app_hash = GENESIS_APP_HASH
        self._nonce = 0

    @property
    def next_time_ms(self) -> int:
        return T0 + 1000 * self.height

    def tx(self, signer: Identity, body: TxBody, nonce: int | None = None) -> bytes:
        """Encoded transaction, signed for the test chain, with a fresh nonce unless given."""
        if nonce is None:
            self._nonce += 1
            nonce = self._nonce
        return encode(Transaction.sign(signer, CHAIN, body, nonce))

    def block(self, txs: Sequence[bytes], time_ms: int | None = None) -> Block:
        header = make_header(
            chain_id=CHAIN,
            height=self.height + 1,
            time_ms=self.next_time_ms if time_ms is None else time_ms,
            prev_hash=b"\x00" * 32,
            txs=txs,
            app_height=self.height,
            app_hash=self.app_hash,
            view=0,
            proposer=AGENCIES[0].public_key,
        )
        return Block(header, tuple(txs))

    def run(self, *txs: bytes, time_ms: int | None = None) -> BlockOutcome:
        """Execute and commit one block holding ``txs``."""
        block = self.block(txs, time_ms)
        out = execute_block(self.genesis, self.state, block)
        self.state.apply(out.changes)
        self.height = block.height
        self.app_hash = next_app_hash(self.app_hash, out.changes)
        return out

    def one(self, signer: Identity, body: TxBody, *, time_ms: int | None = None) -> TxOutcome:
        """Execute one transaction in its own block; its outcome."""
        return self.run(self.tx(signer, body), time_ms=time_ms).outcomes[0]


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
    base = DictState()
    base.data[b"k"] = b"old"
    top = Overlay(base)
    assert top.get(b"k") == b"old"
    top.writes[b"k"] = b"new"
    assert top.get(b"k") == b"new"
    assert base.get(b"k") == b"old"


def test_overlay_delete_leaves_no_tombstone_for_a_key_the_base_lacks() -> None:
    base = DictState()
    base.data[b"present"] = b"v"
    block = Overlay(base)
    tx = Overlay(block)
    tx.writes[b"fresh"] = b"x"
    tx.delete(b"fresh")
    tx.delete(b"present")
    block.absorb(tx.writes)
    assert block.writes == {b"present": None}


def test_absorbing_a_delete_of_a_key_written_earlier_in_the_block_drops_it() -> None:
    block = Overlay(DictState())
    block.writes[b"k"] = b"v"  # an earlier transaction of the block wrote it
    tx = Overlay(block)
    tx.delete(b"k")
    assert tx.writes == {b"k": None}
    block.absorb(tx.writes)
    assert block.writes == {}
