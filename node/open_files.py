"""The process's open-file limit, raised at start to what the node's configuration needs.

Every client connection, peer stream socket, LevelDB table and block file holds a descriptor.
Many systems start a daemon with a soft limit of 1,024; run out, and LevelDB cannot open a table
(a storage error stops the node) or a peer cannot reconnect. So the node raises its soft limit
(up to the hard one, which only the operator can raise) to fit ``api.max_connections`` plus what
the rest of the node may hold, and refuses to start, saying which setting to lower, if even the
hard limit is short.
"""

from __future__ import annotations

import resource

LEVELDB_OPEN_FILES = 1_000
"""LevelDB's own bound on the table files it keeps open (its ``max_open_files`` default)."""
NODE_RESERVE = 512
"""Everything else: peer connections (a few sockets per validator), the API's connections over
its limit being answered 503 (at most ``node.http_server.REFUSING_MAX``), the metrics server's
clients (at most ``node.metrics.METRICS_MAX_CONNECTIONS``), block and log files, the event
loop's own descriptors."""


class OpenFilesError(Exception):
    """The hard open-file limit is below what the configuration needs; the message says how
    far."""


def needed(max_connections: int) -> int:
    """Descriptors a node serving ``max_connections`` API clients may hold at once."""
    return max_connections + LEVELDB_OPEN_FILES + NODE_RESERVE


def ensure(max_connections: int) -> int:
    """Raise the soft limit to ``needed(max_connections)`` if it is lower; the soft limit now.

    Raises OpenFilesError when the hard limit is lower than that."""
    need = needed(max_connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        fits = hard - need + max_connections
        fix = (
            f"lower api.max_connections to at most {fits} or raise the limit"
            if fits >= 1
            else "raise the limit"
        )
        raise OpenFilesError(
            f"the open-file limit is {hard} (hard; soft {soft}) but api.max_connections = "
            f"{max_connections} needs {need} ({max_connections} connections, "
            f"{LEVELDB_OPEN_FILES} LevelDB tables, {NODE_RESERVE} for peers and files): "
            f"{fix} (ulimit -Hn, or LimitNOFILE= in a systemd unit)"
        )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError) as exc:
        raise OpenFilesError(
            f"cannot raise the open-file limit from {soft} to {need} for api.max_connections = "
            f"{max_connections}: {exc}; lower api.max_connections or raise the limit"
        ) from None
    return need
