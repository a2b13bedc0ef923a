"""creditnet's pure protocol: messages, codec, crypto, ledger types, record standard, consensus.

Nothing here performs I/O, reads a clock or draws randomness on its own (key generation aside):
the node daemon (``node``) feeds it bytes and events and acts on what it returns.
"""

__version__ = "0.1.0"
