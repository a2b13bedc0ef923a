"""The agency's own credit records: validated, stored under the subject's pseudonym, committed.

Loading (``POST /v1/records``, ``creditnet records load``) takes standard-v1 records as JSON
lines. Every line is checked on its own: a bad line is reported with its line number and the field
and rule it breaks, the good lines go on. For the good ones the agency commits
``hash(pseudonym, record)`` on the ledger (:class:`~protocol.transactions.RecordCommitment`, as
many a transaction as fit in its size limit, :data:`COMMITMENTS_PER_TX`) and, once the
commitment is committed, stores the record in its private LevelDB namespace under
``pseudonym || record_ref`` -- all of them in one atomic batch, so a load is never half-written.
A record whose commitment the ledger refuses is reported, not stored.

What is stored is :class:`~protocol.record.StoredRecord`: the pseudonym replaces the national ID,
so the raw ID is kept nowhere, sent nowhere and never logged (the parsed input hides it from
``repr``; errors name the field, never its value).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.codec import decode, encode
from protocol.contract import views
from protocol.record import (
    MAX_LINE_BYTES,
    RecordError,
    StoredRecord,
    parse_record_line,
    record_digest,
    record_ref,
    to_stored,
)
from protocol.transactions import (
    MAX_COMMITMENTS_PER_TX,
    MAX_TX_BYTES,
    CommitmentEntry,
    RecordCommitment,
)

if TYPE_CHECKING:
    from node.daemon import Node

log = logging.getLogger("creditnet.records")

RECORDS_NS = b"records"
"""Private namespace of the agency's records: key ``pseudonym (32) || record_ref (32)``."""
MAX_LINES_PER_LOAD = 100_000

_ENTRY_BYTES = len(encode(CommitmentEntry(bytes(32), bytes(32))))
_ENVELOPE_BYTES = 1024
"""Generous room for the transaction around the entries: signer, nonce, chain id, signature."""
COMMITMENTS_PER_TX = min(MAX_COMMITMENTS_PER_TX, (MAX_TX_BYTES - _ENVELOPE_BYTES) // _ENTRY_BYTES)
"""Commitments per transaction: the contract allows 1,000, but 1,000 entries of 69 bytes exceed
the 64 KiB transaction limit, so a load chunks by what fits."""


@dataclass
class Prepared:
    line: int
    stored: StoredRecord
    ref: bytes
    digest: bytes


@dataclass
class LoadReport:
    """What a load did: records kept (with their commitment) and lines refused."""

    stored: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    commitments: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stored": len(self.stored),
            "refused": len(self.errors),
            "records": self.stored,
            "errors": self.errors,
            "commitments": self.commitments,
        }


def record_key(pseudonym: bytes, ref: bytes) -> bytes:
    return pseudonym + ref


def prepare_lines(lines: Iterable[str], salt: bytes, report: LoadReport) -> list[Prepared]:
    """Validate each line; good ones become stored records, bad ones errors in ``report``."""
    good: list[Prepared] = []
    seen: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number > MAX_LINES_PER_LOAD:
            report.errors.append(
                {
                    "line": number,
                    "error": "too_many_lines",
                    "detail": f"at most {MAX_LINES_PER_LOAD} records a load",
                }
            )
            break
        try:
            stored = to_stored(parse_record_line(line, MAX_LINE_BYTES), salt)
        except RecordError as exc:
            report.errors.append({"line": number, "error": "invalid_record", "detail": str(exc)})
            continue
        ref = record_ref(stored.furnisher_id, stored.record_id)
        if ref in seen:
            report.errors.append(
                {
                    "line": number,
                    "error": "duplicate_record",
                    "detail": f"furnisher_id and record_id repeat line {seen[ref]}",
                }
            )
            continue
        seen[ref] = number
        good.append(Prepared(number, stored, ref, record_digest(stored)))
    return good


def _chunks(items: list[Prepared], n: int) -> Iterator[list[Prepared]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


async def load_records(node: Node, lines: Iterable[str]) -> LoadReport:
    """Validate, commit and store records (see module doc)."""
    report = LoadReport()
    good = prepare_lines(lines, node.genesis.pseudonym_salt, report)
    me = node.identity.public_key
    keep: list[Prepared] = []
    for p in good:
        owner = views.commitment(node.store_state, p.ref)
        if owner is not None and owner.agency != me:
            report.errors.append(
                {
                    "line": p.line,
                    "error": "record_ref_taken",
                    "detail": "another agency committed a record with this furnisher_id and "
                    "record_id",
                }
            )
        else:
            keep.append(p)
    chunks = list(_chunks(keep, COMMITMENTS_PER_TX))
    if not chunks:
        return report
    bodies = [RecordCommitment(tuple(CommitmentEntry(p.ref, p.digest) for p in c)) for c in chunks]
    batch: dict[bytes, bytes | None] = {}
    for chunk, own in zip(chunks, await node.commit_own(bodies), strict=True):
        adm, result = own.admission, own.result
        entry: dict[str, Any] = {"tx": adm.tx_hash.hex(), "records": len(chunk)}
        if result is not None and result.ok:
            entry |= {"height": result.height, "ok": True}
            for p in chunk:
                batch[record_key(p.stored.pseudonym, p.ref)] = encode(p.stored)
                report.stored.append({"line": p.line, "record_ref": p.ref.hex()})
        else:
            code = result.code if result is not None else adm.code
            detail = result.detail if result is not None else adm.detail
            entry |= {"ok": False, "error": code, "detail": detail}
            report.errors += [
                {"line": p.line, "error": code, "detail": f"commitment refused: {detail}"}
                for p in chunk
            ]
        report.commitments.append(entry)
    if batch:
        node.store.write_private(RECORDS_NS, batch)
    log.info("records loaded: %d stored, %d refused", len(report.stored), len(report.errors))
    return report


def records_of(node: Node, pseudonym: bytes) -> list[StoredRecord]:
    """This agency's records about one subject."""
    return [rec for _, rec in refs_and_records_of(node, pseudonym)]


def refs_and_records_of(node: Node, pseudonym: bytes) -> list[tuple[bytes, StoredRecord]]:
    """This agency's records about one subject, each with its ``record_ref`` (the key's tail).

    Each record is decoded with every field and rule checked again (the store is a file on disk),
    but not re-encoded to prove canonical form: these are bytes this node encoded itself."""
    return [
        (key[len(pseudonym) :], decode(value, StoredRecord, canonical=False))
        for key, value in node.store.private_items(RECORDS_NS, pseudonym)
    ]
