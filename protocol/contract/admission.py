"""Stateless admission of a transaction: what a node checks before gossiping or proposing it.

:func:`check_tx` looks only at the bytes and the chain id -- size, decoding (which runs every
body's self-check), the envelope signature and, for a query entry, the client's signature of the
request inside it. Rules that need ledger state (who may sign what, balances, consent, replays)
are checked when the block executes (:mod:`protocol.contract.rules`).
"""

from __future__ import annotations

from protocol.codec import CodecError, InvalidMessage
from protocol.contract import codes
from protocol.transactions import MAX_TX_BYTES, QueryEntry, Transaction, decode_tx


class TxRejected(Exception):
    """A transaction refused at admission: ``code`` (snake_case) and a ``detail`` sentence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def check_tx(chain_id: str, tx_bytes: bytes) -> Transaction:
    """The decoded transaction, or :class:`TxRejected` saying why it cannot enter a block.

    Codes: ``oversized`` (more than ``MAX_TX_BYTES``), ``malformed`` (not a canonical
    transaction), ``invalid`` (a body self-check failed), ``bad_signature`` (not the signer's
    signature in this chain -- a transaction signed for another chain lands here too) and
    ``bad_request_signature`` (a query entry whose request the client did not sign in this chain).
    """
    if len(tx_bytes) > MAX_TX_BYTES:
        raise TxRejected(
            codes.OVERSIZED,
            f"the transaction is {len(tx_bytes)} bytes; at most {MAX_TX_BYTES} are accepted",
        )
    try:
        tx = decode_tx(tx_bytes)
    except InvalidMessage as exc:
        raise TxRejected(codes.INVALID, f"the transaction body is not valid: {exc}") from exc
    except CodecError as exc:
        raise TxRejected(codes.MALFORMED, f"the transaction does not decode: {exc}") from exc
    if not tx.verify_encoded(chain_id, tx_bytes):
        raise TxRejected(
            codes.BAD_SIGNATURE,
            f"the signature is not {tx.signer.hex()[:16]}'s over this {tx.kind} in chain "
            f"{chain_id!r}",
        )
    body = tx.body
    if isinstance(body, QueryEntry) and not body.request.verify(chain_id):
        raise TxRejected(
            codes.BAD_REQUEST_SIGNATURE,
            f"the query request is not signed by client {body.request.client.hex()[:16]} "
            f"in chain {chain_id!r}",
        )
    return tx
