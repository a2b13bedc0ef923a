"""One socket write per HTTP response, not two or three.

hypercorn 0.18.0 writes each HTTP/1.1 event as soon as h11 has serialized it: the response head,
then the body, then the end of the message (nothing, when the body has a Content-Length, but a
locked, shielded empty write all the same). Every answer of the API -- a lender's report, a batch
of transactions accepted -- so cost two ``send`` system calls on the node, and two wake-ups and
``recv`` calls on the client that waits for it.

:func:`install` keeps the head of a final response (status >= 200) until the first body bytes
or the end of the message, and sends them in one write; it skips empty writes. Interim responses
(``100 Continue``, ``101 Switching Protocols``) and streamed bodies leave at once, as before: the
head waits only for bytes the application was about to send anyway. It replaces one method of a
pinned library version (``hypercorn==0.18.0``) and refuses to install over a method that no longer
reads as the one it replaces.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import h11
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol

_REPLACED_SOURCE_SHA256 = "5e40283daa303ec7f910e95145a9edd2b835fb54675ba1b1a560fbd58f136e19"
"""SHA-256 of the source of hypercorn 0.18.0's ``H11Protocol._send_h11_event``."""


async def _send_h11_event(self: Any, event: Any) -> None:
    """``H11Protocol._send_h11_event`` that holds a final response head for the next write."""
    try:
        data: bytes = self.connection.send(event)
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return
    held: bytes = self._cn_head
    if type(event) is h11.Response:
        self._cn_head = held + data
        return
    if held:
        self._cn_head = b""
        data = held + data
    if data:
        await self.send(RawData(data=data))


def install() -> None:
    """Make every HTTP/1.1 connection served from now on write each response at once
    (idempotent)."""
    original = H11Protocol._send_h11_event
    if original is _send_h11_event:
        return
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    if digest != _REPLACED_SOURCE_SHA256:
        raise RuntimeError(
            "hypercorn's H11Protocol._send_h11_event is not the one node.http_writes replaces "
            f"(source sha256 {digest[:16]}…): it was written for hypercorn 0.18.0"
        )
    H11Protocol._cn_head = b""  # type: ignore[attr-defined]  # per connection once it holds one
    H11Protocol._send_h11_event = _send_h11_event  # type: ignore[method-assign]
