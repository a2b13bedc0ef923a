"""Result codes of the credit contract: short snake_case names, stable across releases.

A transaction's result (``res/<tx hash>``) and the node's API errors carry one of these; the
detail beside it is a sentence for people. Codes are part of the protocol (they are hashed into
the app hash as part of every result): never rename one, only add.
"""

from __future__ import annotations

OK = "ok"

# admission (check_tx): refused before a transaction reaches a block
OVERSIZED = "oversized"  # more than MAX_TX_BYTES
MALFORMED = "malformed"  # does not decode (also a failed outcome when found in a block)
INVALID = "invalid"  # decodes, but a body self-check fails (sizes, ordering, mode/serving)
BAD_SIGNATURE = "bad_signature"  # the envelope signature is not the signer's in this chain
BAD_REQUEST_SIGNATURE = "bad_request_signature"  # a QueryEntry's request is not the client's

# execution (execute_block): a failed outcome; only the result record is written
DUPLICATE = "duplicate"  # a transaction with this hash already has a result
NOT_AGENCY = "not_agency"  # the signer (or a serving agency) is not a genesis validator
CLIENT_EXISTS = "client_exists"
SUBJECT_EXISTS = "subject_exists"
UNKNOWN_ACCOUNT = "unknown_account"  # a deposit to a key that is neither client nor agency
UNKNOWN_CLIENT = "unknown_client"
INSUFFICIENT_BALANCE = "insufficient_balance"
BALANCE_OVERFLOW = "balance_overflow"  # a credit would take a balance past MAX_BALANCE
SELF_TRANSFER = "self_transfer"
NOT_SUBJECT = "not_subject"  # the signer is not the subject key registered for the pseudonym
BAD_EXPIRY = "bad_expiry"  # a consent grant that expires at or before block time
RECORD_REF_TAKEN = "record_ref_taken"  # another agency already committed this record_ref
WRONG_AGENCY = "wrong_agency"  # a QueryEntry signed by an agency other than request.agency
BAD_SERVING = "bad_serving"  # a serving agency that is not an agency or is the answering one
STALE_REQUEST = "stale_request"  # request time more than REQUEST_WINDOW_MS from block time
REPLAYED_REQUEST = "replayed_request"  # this request hash was already recorded
NO_CONSENT = "no_consent"
CONSENT_EXPIRED = "consent_expired"
CONSENT_REVOKED = "consent_revoked"
CONSENT_SCOPE = "consent_scope"  # the grant does not cover the requested categories
WRONG_FEE = "wrong_fee"  # fee != query_fee + exchange_fee * len(serving)

CONSENT_REFUSALS = (NO_CONSENT, CONSENT_REVOKED, CONSENT_EXPIRED, CONSENT_SCOPE)
