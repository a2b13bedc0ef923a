"""Structured logging for the daemon: one JSON object a line (collectors) or plain text (people).

py-libp2p detaches its ``libp2p`` logger from the root (``propagate=False``) and logs routine
events at INFO; :func:`setup_logging` re-attaches it so its records go through our handler and
format, at WARNING unless the node logs at debug.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

QUIET_LIBP2P = ("libp2p.transport.tcp.tcp", "libp2p.network.swarm", "libp2p.network.auto_connector")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str, *, moniker: str = "") -> None:
    """Configure the root logger for the daemon (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{moniker} " if moniker else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    lib = logging.getLogger("libp2p")
    lib.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("libp2p")]:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        if name != "libp2p":
            logger.setLevel(logging.NOTSET)
    # Dial failures to a peer that is down are ours to report (with back-off), not per attempt.
    for name in QUIET_LIBP2P:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for noisy in ("multiaddr", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
