"""Length-prefixed framing: any split of the byte stream gives back the same frames."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.framing import FrameBuffer, FrameTooLarge, frame


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=7000), max_size=30),
)
def test_frames_survive_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(b) for b in bodies)
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    buf = FrameBuffer(1024)
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got += buf.feed(stream[a:b])
    assert got == bodies
    assert buf.buffered == 0


def test_an_announced_length_above_the_limit_is_refused_before_the_body() -> None:
    buf = FrameBuffer(1024)
    with pytest.raises(FrameTooLarge, match="1025 bytes exceeds 1024"):
        buf.feed((1025).to_bytes(4, "big"))
