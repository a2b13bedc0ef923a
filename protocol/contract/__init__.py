"""The built-in credit contract: ledger rules every node executes identically."""
