"""The built-in credit contract: ledger rules every node executes identically.

Modules: :mod:`.state` (key layout, stored value types, ``StateReader``), :mod:`.admission`
(``check_tx``, stateless), :mod:`.rules` (``execute_block``), :mod:`.views` (read helpers for the
node's API), :mod:`.codes` (result codes), :mod:`.scope` (the rules' overlay and shared checks).
"""

from protocol.contract.admission import TxRejected, check_tx
from protocol.contract.rules import BlockOutcome, TxOutcome, execute_block
from protocol.contract.state import StateReader

__all__ = ["BlockOutcome", "StateReader", "TxOutcome", "TxRejected", "check_tx", "execute_block"]
