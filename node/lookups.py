"""Mode-2 lookups: asking the other agencies for a subject's records, and answering them.

Asking: the answering agency gossips a :class:`~protocol.wire.Lookup` carrying the lender's signed
request (pseudonym, purpose, categories -- no raw ID) and waits until every other agency replied
or the deadline passed. Each reply's records are checked one by one against the serving agency's
commitment on this node's ledger (same agency, same digest of (pseudonym, record), same subject, in
scope); a record that does not match is dropped and counted as a ``tampered-record`` suspicion.

Answering: an agency checks the request's signature and that it comes from the agency it names,
rate-limits each asking agency, checks the same consent on its own committed state, and replies
on a direct stream with its records sealed to the asker -- or with an empty, sealed set and the
refusal code, so the asker need not wait for its deadline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from node.ratelimit import KeyedBuckets
from node.records import records_of
from protocol.codec import CodecError, decode, encode
from protocol.contract import views
from protocol.crypto import CryptoError, seal
from protocol.record import StoredRecord, record_digest, record_ref
from protocol.transactions import QueryRequest
from protocol.wire import Lookup, LookupReply, RecordSet

if TYPE_CHECKING:
    from node.daemon import Node

log = logging.getLogger("creditnet.lookups")


class RateLimited(Exception):
    """A lender asked for more mode-2 lookups than its quota."""


@dataclass(frozen=True)
class ServedRecord:
    record: StoredRecord
    agency: int
    commitment_height: int


@dataclass
class _Pending:
    expected: set[int]
    replies: dict[int, LookupReply] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)


class Lookups:
    """One node's side of mode-2 lookups (see module doc)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        q = node.config.queries
        self.deadline_s = q.lookup_deadline_ms / 1000
        self._pending: dict[bytes, _Pending] = {}
        self._per_client = KeyedBuckets(q.lookups_per_client_per_s)
        self._per_agency = KeyedBuckets(q.lookups_per_agency_per_s)

    # --- asking -------------------------------------------------------------------------------

    async def ask(self, req: QueryRequest) -> list[ServedRecord]:
        """Records other agencies serve for ``req``, verified against their commitments."""
        node = self.node
        if not self._per_client.take(req.client):
            node.metrics.mempool_refused.labels("lookup_rate_limited").inc()
            raise RateLimited("this lender is over its quota of mode-2 lookups; retry later")
        others = {i for i in range(len(node.genesis.validators)) if i != node.index}
        pending = _Pending(expected=others)
        key = req.request_hash
        self._pending[key] = pending
        try:
            node.network.publish_lookup(encode(Lookup(req, node.index)))
            with trio.move_on_after(self.deadline_s):
                await pending.done.wait()
        finally:
            self._pending.pop(key, None)
        served: list[ServedRecord] = []
        for agency, reply in sorted(pending.replies.items()):
            served += self._verified(req, agency, reply)
        return served

    def _verified(self, req: QueryRequest, agency: int, reply: LookupReply) -> list[ServedRecord]:
        node = self.node
        if not reply.sealed:
            return []
        try:
            found = decode(node.identity.unseal(reply.sealed), RecordSet).records
        except (CryptoError, CodecError) as exc:
            self._suspect(agency, f"reply does not open or decode: {exc}")
            return []
        key = node.genesis.validator_keys[agency]
        out = []
        for rec in found:
            c = views.commitment(node.store_state, record_ref(rec.furnisher_id, rec.record_id))
            if (
                c is None
                or c.agency != key
                or c.digest != record_digest(rec)
                or rec.pseudonym != req.pseudonym
                or (req.categories and rec.category not in req.categories)
            ):
                self._suspect(agency, "a served record does not match its commitment")
                continue
            out.append(ServedRecord(rec, agency, c.height))
        return out

    def _suspect(self, agency: int, detail: str) -> None:
        self.node.metrics.suspicions.labels("tampered-record").inc()
        log.warning("validator %d: tampered-record: %s", agency, detail)

    def on_reply(self, sender: int, data: bytes) -> None:
        try:
            reply = decode(data, LookupReply)
        except CodecError as exc:
            self.node.network.bad(str(sender), "malformed", f"lookup reply: {exc}")
            return
        pending = self._pending.get(reply.request_hash)
        if pending is None or sender not in pending.expected or sender in pending.replies:
            return
        pending.replies[sender] = reply
        if set(pending.replies) >= pending.expected:
            pending.done.set()

    # --- answering ----------------------------------------------------------------------------

    def on_lookup(self, sender: int, data: bytes) -> None:
        node = self.node
        try:
            lookup = decode(data, Lookup)
        except CodecError as exc:
            node.network.bad(str(sender), "malformed", f"lookup: {exc}")
            return
        req = lookup.request
        keys = node.genesis.validator_keys
        if lookup.asker != sender or req.agency != keys[sender]:
            node.network.bad(str(sender), "malformed", "lookup names another asking agency")
            return
        if not req.verify(node.genesis.chain_id):
            node.network.bad(str(sender), "malformed", "lookup with a bad request signature")
            return
        if not self._per_agency.take(sender):
            node.metrics.mempool_refused.labels("lookup_rate_limited").inc()
            self._reply(sender, req, [], "rate_limited")
            return
        refusal = views.consent_in_force(
            node.store_state,
            req.pseudonym,
            req.client,
            req.purpose,
            req.categories,
            time.time_ns() // 1_000_000,
        )
        if refusal is not None:
            self._reply(sender, req, [], refusal)
            return
        records = [
            r
            for r in records_of(node, req.pseudonym)
            if not req.categories or r.category in req.categories
        ]
        self._reply(sender, req, records, "")

    def _reply(self, to: int, req: QueryRequest, records: list[StoredRecord], refusal: str) -> None:
        node = self.node
        sealed = b""
        if records:
            asker_key = node.genesis.validator_keys[to]
            sealed = seal(asker_key, encode(RecordSet(tuple(records[:1000]))))
        node.network.send_lookup_reply(to, encode(LookupReply(req.request_hash, sealed, refusal)))
