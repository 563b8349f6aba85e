"""The fairness window shared by every replica through PostgreSQL.

Why: with several processes or hosts behind a load balancer, per-process windows each see a fraction of the
traffic, and a disparity can hide in every fraction. With ``fairness.shared_store`` set, the per-group counts live
in one table, upserted per decision, keyed by (route, time bucket, group); every replica reads the same sums.

Window semantics in shared mode: whole time buckets (``bucket_seconds``, wall clock, so hosts agree). The window
is the newest buckets inside ``window_seconds`` (when set), cut at the bucket that brings it to ``window_size``
decisions: "the last N decisions" rounded up to whole buckets. Older buckets are pruned.

Labels: decisions are also kept (audit id, bucket, decision, score, and the group keys sealed with AES-GCM under
a key from the keyring) so feedback posted to any replica joins a decision made by any other. Why sealed: a row
tying an audit id to a person's race and sex is special-category data and must not sit in clear in a table. The
counts table holds aggregates per category and bucket only (a bucket with very few decisions is still small:
choose ``bucket_seconds`` so buckets hold many).

Erasure: a decision row is keyed by its audit id only (no subject column: the subject's pseudonym lives in the
audit store, which names the audit ids of a subject's records). ``mlguard audit shred`` reads those ids there and
calls :func:`erase_decisions`, which takes each decision out as if it had never been counted (its sealed row
deleted, its contribution subtracted from the counts, a count row left empty removed), so the erased person's
protected groups stop feeding the window at once; :meth:`SharedWindow.forget` does the same for one decision.

Calls are blocking (psycopg); the stage runs them in a worker thread. One connection per window, serialised by a
lock. A connection that broke (the server restarted, a proxy dropped it) is replaced at the next call: the call
that met the failure raises FairnessError (the policy's failure_mode decides), the ones after it work again as
soon as the server answers, with no restart of the guard (the counts live in the database, nothing is lost
here). A row lock held elsewhere is waited for at most LOCK_TIMEOUT_S, then the call fails the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from mlguard.errors import FairnessError
from mlguard.fairness.window import FairnessWindow, GroupSnapshot

log = logging.getLogger("mlguard.fairness.shared")

COUNTS = "mlguard_fairness_counts"
LOCK_TIMEOUT_S = 30
"""Seconds a shared-window statement waits for a row lock another session holds (PostgreSQL lock_timeout)."""
DECISIONS = "mlguard_fairness_decisions"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mlguard_fairness_counts (
    route text NOT NULL, bucket bigint NOT NULL, grp text NOT NULL,
    n bigint NOT NULL DEFAULT 0, selected bigint NOT NULL DEFAULT 0, labelled bigint NOT NULL DEFAULT 0,
    tp bigint NOT NULL DEFAULT 0, fp bigint NOT NULL DEFAULT 0, tn bigint NOT NULL DEFAULT 0,
    fn bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (route, bucket, grp));
CREATE TABLE IF NOT EXISTS mlguard_fairness_decisions (
    audit_id text PRIMARY KEY, route text NOT NULL, bucket bigint NOT NULL, groups bytea NOT NULL,
    pred boolean NOT NULL, label boolean, score double precision);
CREATE INDEX IF NOT EXISTS mlguard_fairness_decisions_route_bucket ON mlguard_fairness_decisions (route, bucket);
"""

_ADD_COUNTS = """
INSERT INTO mlguard_fairness_counts AS c (route, bucket, grp, n, selected)
SELECT %(route)s, %(bucket)s, g, 1, %(sel)s FROM unnest(%(groups)s::text[]) AS g
ON CONFLICT (route, bucket, grp) DO UPDATE SET n = c.n + 1, selected = c.selected + EXCLUDED.selected
"""

_LABEL_COUNTS = """
UPDATE mlguard_fairness_counts SET labelled = labelled + %(dl)s, tp = tp + %(tp)s, fp = fp + %(fp)s, tn = tn + %(tn)s,
    fn = fn + %(fn)s
WHERE route = %(route)s AND bucket = %(bucket)s AND grp = ANY(%(groups)s::text[])
"""


_TABLES_READY = """
SELECT to_regclass('mlguard_fairness_counts') IS NOT NULL AND to_regclass('mlguard_fairness_decisions') IS NOT NULL
   AND to_regclass('mlguard_fairness_decisions_route_bucket') IS NOT NULL
"""


def _create_tables(conn: Any) -> None:
    """Create the tables once, whatever the number of processes starting at the same moment.

    Why the advisory lock: ``CREATE TABLE IF NOT EXISTS`` is not safe against itself. Two sessions that both
    find the table missing both insert its catalog rows, and the second fails with a UniqueViolation (on
    pg_type): under ``--workers N`` on a fresh database a worker could fail to build its guard (4 windows opened
    at the same instant failed 10 times in 10 here). Why look first: when the tables exist (every start but the
    first), no DDL runs, so a worker (re)starting never waits for the table lock ``CREATE INDEX IF NOT EXISTS``
    takes, behind the other workers' open inserts and ahead of their next ones.
    """
    if conn.execute(_TABLES_READY).fetchone()[0]:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('mlguard.fairness.ddl'))")
        if not conn.execute(_TABLES_READY).fetchone()[0]:
            conn.execute(_SCHEMA)


def _label_delta(pred: bool, label: bool, sign: int) -> dict[str, int]:
    d = {"dl": sign, "tp": 0, "fp": 0, "tn": 0, "fn": 0}
    d["tp" if pred and label else "fp" if pred else "fn" if label else "tn"] = sign
    return d


_REMOVE_COUNTS = """
UPDATE mlguard_fairness_counts SET n = n - 1, selected = selected - %(sel)s, labelled = labelled - %(dl)s,
    tp = tp - %(tp)s, fp = fp - %(fp)s, tn = tn - %(tn)s, fn = fn - %(fn)s
WHERE route = %(route)s AND bucket = %(bucket)s AND grp = ANY(%(groups)s::text[])
"""


def _connect(url: str) -> Any:
    """A new autocommit connection to the shared store, waiting at most LOCK_TIMEOUT_S for a row lock.

    A failure raises FairnessError with what libpq said (refused, no such database or role, authentication),
    password removed: an error raised while connecting names hosts, users and databases, never a row
    (``pgconn.connect_error_text``). Errors of statements go through :func:`_failed` instead."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from mlguard.pgconn import connect_error_text, liveness

    try:
        # the URL's own options (a search_path, say) are kept: a keyword argument would replace them
        given = conninfo_to_dict(url).get("options")
        options = " ".join(o for o in (str(given or ""), f"-c lock_timeout={LOCK_TIMEOUT_S * 1000}") if o)
        return psycopg.connect(url, autocommit=True, connect_timeout=5, options=options, **liveness(url))
    except psycopg.Error as exc:
        raise FairnessError("shared fairness store unavailable (cannot connect): "
                            f"{connect_error_text(exc, url)}") from None


def _failed(exc: BaseException) -> FairnessError:
    """A statement's error: class and SQLSTATE only, its message and DETAIL may quote a row (an audit id, a
    sealed group) (``pgconn.statement_error_text``)."""
    from mlguard.pgconn import statement_error_text

    return FairnessError(f"shared fairness store failed ({statement_error_text(exc)})")


def _ad(route: str, audit_id: str) -> bytes:
    """Associated data of a sealed decision row: the row opens only under its own route and audit id."""
    return f"mlguard.fairness.shared\x00{route}\x00{audit_id}".encode()


def _open_groups(aead: Any, route: str, audit_id: str, sealed: bytes) -> list[str]:
    from cryptography.exceptions import InvalidTag

    blob = bytes(sealed)
    try:
        keys = json.loads(aead.decrypt(blob[:12], blob[12:], _ad(route, audit_id)))
    except (InvalidTag, ValueError):
        raise FairnessError("a shared fairness decision row does not open with this keyring") from None
    return [str(k) for k in keys]


def _erase(conn: Any, aead: Any, audit_ids: Sequence[str], route: str | None = None) -> int:
    """Take the decisions ``audit_ids`` (of ``route``, or of any route) out of the shared window, in one
    transaction; the number taken out. Every row is opened before anything changes, so a keyring that does not
    open them (FairnessError) leaves the store as it was."""
    ids = list(dict.fromkeys(audit_ids))
    if not ids:
        return 0
    with conn.transaction():
        # route NULL: any route (a shred does not know which route made a decision)
        rows = conn.execute("SELECT audit_id, route, bucket, groups, pred, label FROM mlguard_fairness_decisions "
                            "WHERE audit_id = ANY(%s::text[]) AND (%s::text IS NULL OR route = %s) FOR UPDATE",
                            (ids, route, route)).fetchall()
        opened = [(aid, rt, bucket, _open_groups(aead, rt, aid, sealed), pred, label)
                  for aid, rt, bucket, sealed, pred, label in rows]
        touched: set[tuple[str, int]] = set()
        for _aid, rt, bucket, groups, pred, label in opened:
            delta = _label_delta(pred, label, 1) if label is not None else dict.fromkeys(
                ("dl", "tp", "fp", "tn", "fn"), 0)
            conn.execute(_REMOVE_COUNTS, {"route": rt, "bucket": bucket, "groups": groups, "sel": int(pred),
                                          **delta})
            touched.add((rt, bucket))
        for rt, bucket in sorted(touched):
            conn.execute("DELETE FROM mlguard_fairness_counts WHERE route = %s AND bucket = %s AND n <= 0",
                         (rt, bucket))
        conn.execute("DELETE FROM mlguard_fairness_decisions WHERE audit_id = ANY(%s::text[])",
                     ([r[0] for r in opened],))
    return len(opened)


class SharedDecisions:
    """The shared store as ``mlguard audit shred`` sees it: a connection that erases decisions by audit id.

    Opened (connected) before anything is destroyed, so an unreachable store is reported before a shred starts;
    tables that were never created (no guard ran with this store) hold nothing to erase."""

    def __init__(self, url: str, secret: bytes) -> None:
        try:
            import psycopg  # noqa: F401  (the extra is installed: say so before anything else)
        except ImportError as exc:  # pragma: no cover - depends on the install
            from mlguard.errors import DependencyMissing

            raise DependencyMissing("psycopg", "postgres") from exc
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(secret[:32])
        self._conn = _connect(url)  # FairnessError saying why, before anything is destroyed

    def erase(self, audit_ids: Sequence[str]) -> int:
        """Take these decisions out of every route's shared window; the number of decisions taken out."""
        import psycopg

        try:
            if not self._conn.execute(_TABLES_READY).fetchone()[0]:
                return 0
            return _erase(self._conn, self._aead, audit_ids)
        except psycopg.Error as exc:
            raise _failed(exc) from None

    def close(self) -> None:
        self._conn.close()


def erase_decisions(url: str, secret: bytes, audit_ids: Sequence[str]) -> int:
    """Open the shared store at ``url``, erase the decisions ``audit_ids``, close it; the number erased."""
    store = SharedDecisions(url, secret)
    try:
        return store.erase(audit_ids)
    finally:
        store.close()


class SharedWindow:
    """A FairnessWindow-compatible window whose counts live in PostgreSQL (see the module docstring)."""

    def __init__(self, url: str, *, route: str, attributes: Sequence[str], size: int, secret: bytes,
                 seconds: float | None = None, bucket_seconds: int = 60, intersectional: bool = True,
                 max_categories: int = 50, categories: Mapping[str, Collection[str]] | None = None,
                 label_key: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            from mlguard.errors import DependencyMissing

            raise DependencyMissing("psycopg", "postgres") from exc
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.route = route
        self._aead = AESGCM(secret[:32])
        self.size = size
        self.seconds = seconds
        self.bucket_seconds = bucket_seconds
        self.clock = clock
        # Category mapping only (unknown/other, the max_categories bound); its counts are not used.
        self._keys = FairnessWindow(attributes, size=1, intersectional=intersectional,
                                    max_categories=max_categories, categories=categories, label_key=label_key)
        self.dimensions = self._keys.dimensions
        self._lock = threading.Lock()
        self._oldest_needed: int | None = None
        self._last_prune_bucket: int | None = None
        self._url = url
        self._conn: Any = None
        with self._lock:
            conn = self._connection()  # FairnessError with libpq's words when it cannot connect
            try:
                _create_tables(conn)
            except psycopg.Error as exc:
                raise _failed(exc) from None

    def _connection(self) -> Any:
        """The open connection, or a new one when there is none or it broke (called under ``_lock``)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            conn = _connect(self._url)
            self._conn = conn
        return conn

    def _bucket(self, now: float | None = None) -> int:
        return int((self.clock() if now is None else now) // self.bucket_seconds)

    def _seal(self, audit_id: str, keys: Sequence[str]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(list(keys)).encode(), self._ad(audit_id))

    def _open(self, audit_id: str, sealed: bytes) -> list[str]:
        return _open_groups(self._aead, self.route, audit_id, sealed)

    def _ad(self, audit_id: str) -> bytes:
        return _ad(self.route, audit_id)

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        import psycopg

        with self._lock:
            conn = self._connection()  # FairnessError with libpq's words when it cannot (re)connect
            try:
                return fn(conn)
            except psycopg.Error as exc:
                raise _failed(exc) from None

    # ------------------------------------------------------------------ updates

    def add(self, protected: Mapping[str, Any], pred: bool, score: float | None = None,
            audit_id: str | None = None, now: float | None = None) -> tuple[str, ...]:
        keys = self._keys.group_keys(protected)
        bucket = self._bucket(now)
        params = {"route": self.route, "bucket": bucket, "sel": int(pred), "groups": list(keys)}

        def tx(conn: Any) -> None:
            with conn.transaction():
                conn.execute(_ADD_COUNTS, params)
                if audit_id is not None:
                    conn.execute("INSERT INTO mlguard_fairness_decisions "
                                 "(audit_id, route, bucket, groups, pred, score) "
                                 "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (audit_id) DO NOTHING",
                                 (audit_id, self.route, bucket, self._seal(audit_id, keys), pred, score))

        self._run(tx)
        if bucket != self._last_prune_bucket:
            self._last_prune_bucket = bucket
            self._prune(bucket)
        return keys

    def set_label(self, audit_id: str, label: bool) -> bool:
        horizon = self._horizon()

        def tx(conn: Any) -> bool:
            with conn.transaction():
                row = conn.execute("SELECT bucket, groups, pred, label FROM mlguard_fairness_decisions "
                                   "WHERE audit_id = %s AND route = %s FOR UPDATE",
                                   (audit_id, self.route)).fetchone()
                if row is None or (horizon is not None and row[0] < horizon):
                    return False
                bucket, sealed, pred, old = row
                groups = self._open(audit_id, sealed)
                base = {"route": self.route, "bucket": bucket, "groups": groups}
                if old is not None:
                    conn.execute(_LABEL_COUNTS, {**base, **_label_delta(pred, old, -1)})
                conn.execute(_LABEL_COUNTS, {**base, **_label_delta(pred, label, +1)})
                conn.execute("UPDATE mlguard_fairness_decisions SET label = %s WHERE audit_id = %s", (label, audit_id))
                return True

        ok: bool = self._run(tx)
        return ok

    def knows(self, audit_id: str) -> bool:
        row = self._run(lambda c: c.execute(
            "SELECT bucket FROM mlguard_fairness_decisions WHERE audit_id = %s AND route = %s",
            (audit_id, self.route)).fetchone())
        horizon = self._horizon()
        return row is not None and (horizon is None or row[0] >= horizon)

    def forget(self, audit_id: str) -> bool:
        """Take one decision of this route out of the shared window (see the module docstring: Erasure)."""
        n: int = self._run(lambda conn: _erase(conn, self._aead, [audit_id], route=self.route))
        return n > 0

    def clear(self) -> None:
        def tx(conn: Any) -> None:
            with conn.transaction():
                conn.execute("DELETE FROM mlguard_fairness_counts WHERE route = %s", (self.route,))
                conn.execute("DELETE FROM mlguard_fairness_decisions WHERE route = %s", (self.route,))

        self._run(tx)

    def _prune(self, bucket: int) -> None:
        keep_from = self._time_horizon(bucket)
        if self._oldest_needed is not None:
            keep_from = self._oldest_needed if keep_from is None else min(keep_from, self._oldest_needed)
        if keep_from is None:
            return

        def tx(conn: Any) -> None:
            args = (self.route, keep_from)
            conn.execute("DELETE FROM mlguard_fairness_counts WHERE route = %s AND bucket < %s", args)
            conn.execute("DELETE FROM mlguard_fairness_decisions WHERE route = %s AND bucket < %s", args)

        self._run(tx)

    # ------------------------------------------------------------------ reading

    def _time_horizon(self, bucket: int | None = None) -> int | None:
        if self.seconds is None:
            return None
        current = self._bucket() if bucket is None else bucket
        return current - max(1, math.ceil(self.seconds / self.bucket_seconds)) + 1

    def _rows(self) -> tuple[list[tuple[Any, ...]], int | None]:
        """Count rows of the window's buckets, and the oldest bucket it uses."""
        th = self._time_horizon()
        rows: list[tuple[Any, ...]] = self._run(lambda c: c.execute(
            "SELECT bucket, grp, n, selected, labelled, tp, fp, tn, fn FROM mlguard_fairness_counts "
            "WHERE route = %s AND bucket >= %s ORDER BY bucket DESC",
            (self.route, th if th is not None else -(2 ** 62))).fetchall())
        first_dim = self.dimensions[0] + "="
        kept: list[tuple[Any, ...]] = []
        total, oldest, cut = 0, None, None
        for row in rows:
            if cut is not None and row[0] < cut:
                break
            kept.append(row)
            oldest = row[0]
            if row[1].startswith(first_dim) and "|" not in row[1]:
                total += row[2]
                if total >= self.size and cut is None:
                    cut = row[0]
        self._oldest_needed = oldest
        return kept, oldest

    def _horizon(self) -> int | None:
        _, oldest = self._rows()
        return oldest

    def snapshot(self, *, scores: bool = False, now: float | None = None) -> list[GroupSnapshot]:
        rows, oldest = self._rows()
        sums: dict[str, list[int]] = {}
        for row in rows:
            acc = sums.setdefault(row[1], [0] * 7)
            for i in range(7):
                acc[i] += int(row[2 + i])
        above: dict[str, int] = {}
        scored: dict[str, int] = {}
        if scores and oldest is not None:
            dec = self._run(lambda c: c.execute(
                "SELECT audit_id, groups, score FROM mlguard_fairness_decisions "
                "WHERE route = %s AND bucket >= %s AND score IS NOT NULL",
                (self.route, oldest)).fetchall())
            values = sorted(float(s) for _, _, s in dec)
            if values:
                m = len(values) // 2
                median = values[m] if len(values) % 2 else (values[m - 1] + values[m]) / 2.0
                for aid, sealed, s in dec:
                    for g in self._open(aid, sealed):
                        scored[g] = scored.get(g, 0) + 1
                        if s > median:
                            above[g] = above.get(g, 0) + 1
        out = []
        for key, acc in sums.items():
            if acc[0] <= 0:
                continue
            dim = "|".join(p.split("=", 1)[0] for p in key.split("|"))
            n, sel, lab, tp, fp, tn, fn = acc
            out.append(GroupSnapshot(key, dim, any(p.endswith("=unknown") for p in key.split("|")), n=n,
                                     selected=sel, labelled=lab, tp=tp, fp=fp, tn=tn, fn=fn,
                                     above_median=above.get(key, 0) if scores else None,
                                     scored=scored.get(key, 0)))
        return out

    def __len__(self) -> int:
        first = self.dimensions[0]
        return sum(g.n for g in self.snapshot() if g.dimension == first)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


__all__ = ["COUNTS", "DECISIONS", "SharedDecisions", "SharedWindow", "erase_decisions"]
