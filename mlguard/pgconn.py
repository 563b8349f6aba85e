"""Connection settings every PostgreSQL connection of the guard adds to the user's URL: TCP liveness.

Why: a request under ``durability: sync`` waits for its COMMIT, and a fairness update for its statement. When the
database host dies or the network drops packets without a reset (a failed-over VM, a firewall dropping an idle
flow), nothing ever answers and the socket stays open: every such request waited for ever, with no 503, while
``lock_timeout`` covers only locks. libpq's TCP keepalives detect a silent peer on an idle socket (here in about
25 s: 10 s idle, then 3 probes 5 s apart), and ``tcp_user_timeout`` closes a connection whose sent data stays
unacknowledged for 30 s; either way the wait ends in a connection error, which the audit store reports as
AuditUnavailable (503 under fail_closed) and recovers from by reconnecting.

What it does not cover: a server that is alive on the network but never answers (a stuck synchronous standby
under ``synchronous_commit``): its kernel acknowledges and answers the probes. Settings the URL names itself are
left as given (``...?keepalives_idle=60``). libpq ignores them on a Unix-domain socket.
"""

from __future__ import annotations

from typing import Any

LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
"""libpq parameters (strings, as in a conninfo) added to every connection unless the URL sets them."""


def liveness(url: str) -> dict[str, Any]:
    """The LIVENESS parameters that ``url`` does not set itself, as keyword arguments for ``psycopg.connect``."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    return {k: v for k, v in LIVENESS.items() if k not in given}
