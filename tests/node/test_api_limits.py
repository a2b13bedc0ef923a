"""The API middleware picks the long time limit for ``wait=commit`` however the client encodes
it (the route decodes the query string, so the middleware must read it the same way)."""

from __future__ import annotations

import pytest

from node.api import _waits_for_commit


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"wait=commit", True),
        (b"x=1&wait=commit", True),
        (b"wait=%63ommit", True),
        (b"%77ait=commit", True),
        (b"wait=commit&wait=none", True),
        (b"", False),
        (b"wait=", False),
        (b"wait=commitment", False),
        (b"nowait=commit", False),
        (b"&".join([b"a=1"] * 60) + b"&wait=commit", True),
    ],
)
def test_the_long_limit_follows_the_decoded_wait_parameter(query: bytes, expected: bool) -> None:
    assert _waits_for_commit(query) is expected
