"""The type of ``task_status`` in services started with ``nursery.start``.

py-libp2p pulls in the old ``trio-typing`` stubs, which shadow trio's own annotations and lack
``trio.TaskStatus``; this alias names the same protocol under both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trio_typing import TaskStatus
else:
    from trio import TaskStatus

__all__ = ["TaskStatus"]
