"""PBFT consensus as a pure state machine: ``Replica.handle(event) -> list[output]``."""
