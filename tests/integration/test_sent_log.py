"""The double-signing check used by the restart test finds a conflict when there is one."""

from __future__ import annotations

from pathlib import Path

from protocol.codec import encode
from protocol.consensus.messages import Prepare
from protocol.crypto import Identity, h256
from tests.integration.cluster import signed_slots

KEY = Identity(b"\x05" * 32)


def _log(path: Path, messages: list[bytes]) -> None:
    path.write_bytes(b"".join(len(m).to_bytes(4, "big") + m for m in messages))


def test_two_digests_for_one_slot_are_reported(tmp_path: Path) -> None:
    a = Prepare.sign(KEY, "c", 0, 7, h256(b"a"), 1)
    b = Prepare.sign(KEY, "c", 0, 7, h256(b"b"), 1)
    _log(tmp_path / "sent.log", [encode(a), encode(a), encode(b)])
    slots, conflicts = signed_slots(tmp_path / "sent.log")
    assert slots == 1 and len(conflicts) == 1 and "prepare" in conflicts[0]


def test_resending_the_same_vote_and_a_torn_last_record_are_fine(tmp_path: Path) -> None:
    a = encode(Prepare.sign(KEY, "c", 0, 7, h256(b"a"), 1))
    c = encode(Prepare.sign(KEY, "c", 1, 7, h256(b"c"), 1))  # another view: another slot
    path = tmp_path / "sent.log"
    _log(path, [a, a, c])
    path.write_bytes(path.read_bytes() + len(a).to_bytes(4, "big") + a[:10])
    assert signed_slots(path) == (2, [])
