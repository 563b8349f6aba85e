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

Also here, for the same callers (the audit store, the shared fairness window): the text of a PostgreSQL error fit
for a message (``connect_error_text`` while connecting: what libpq said, password removed; ``statement_error_text``
for a statement: class and SQLSTATE only). Why two functions and not one: see the comment above them.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

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


# ---------------------------------------------------------------------------------------------------- error text
#
# Two kinds of PostgreSQL error, two rules (every caller picks one explicitly, by where the error was raised):
#
# - raised while CONNECTING (``psycopg.connect``, or parsing the URL before it): libpq's message names the host and
#   port, the user, the database, the SSL mode: never a record, since no statement has run. An operator needs it
#   (connection refused to 127.0.0.1:1 / database "x" does not exist / role "y" does not exist / password
#   authentication failed are four different fixes), so it is kept, with any password taken out: a malformed URL
#   makes libpq quote the offending piece, which can be the password itself.
# - raised by a STATEMENT (and by a connection that breaks under one): the server's message and DETAIL may quote
#   the values of a row (a unique violation prints the key; a check constraint the failing row), i.e. sealed
#   bytes, pseudonyms, audit ids. Those are reduced to the exception class and the SQLSTATE, which say what went
#   wrong without saying with which data.

_MAX_TEXT = 400
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@")
_KV_PASSWORD = re.compile(r"(?P<key>password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s&]+)", re.IGNORECASE)


def _passwords(url: str) -> list[str]:
    """Every spelling of a password that ``url`` (a URL or a key=value conninfo) or the environment carries, the
    longest first: as written, percent-decoded, and the pieces libpq may take for a host when it is malformed."""
    found: set[str] = set()
    with contextlib.suppress(ValueError):
        raw = urlsplit(url).password
        if raw:
            found.update((raw, unquote(raw)))
            # libpq ends the user info at the first "@": the rest of a password holding one becomes part of the
            # host name it reports ("p@ss" -> host "ss@db.example"), so that rest (with its "@") is one too
            pieces = raw.split("@")
            found.update("@".join(pieces[i:]) + "@" for i in range(1, len(pieces)))
    for m in _KV_PASSWORD.finditer(url):
        value = m.group(0)[len(m.group("key")):].strip("'")
        if value:
            found.update((value, unquote(value)))
    with contextlib.suppress(Exception):  # a URL libpq cannot parse has no parsed password to add
        from psycopg.conninfo import conninfo_to_dict

        value = str(conninfo_to_dict(url).get("password") or "")
        if value:
            found.add(value)
    env = os.environ.get("PGPASSWORD")
    if env:
        found.add(env)
    return sorted(found, key=len, reverse=True)


def redact_password(text: str, url: str) -> str:
    """``text`` with every password of ``url`` (and of any URL or ``password=`` setting it quotes) replaced by
    ``***``."""
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('key')}***", text)


def connect_error_text(exc: BaseException, url: str) -> str:
    """What libpq said when a connection to ``url`` could not be made: class name and message, on one line, the
    password removed.

    Only for an error raised while connecting (see the rule above): the caller guarantees that no statement ran.
    """
    message = " ".join(str(exc).split())  # libpq's hint comes on a second, tab-indented line
    text = f"{type(exc).__name__}: {redact_password(message, url)}" if message else type(exc).__name__
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 3] + "..."


def statement_error_text(exc: BaseException) -> str:
    """A statement's error as its class name and SQLSTATE only: its message and DETAIL may quote a row's values."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} (SQLSTATE {sqlstate})" if sqlstate else type(exc).__name__
