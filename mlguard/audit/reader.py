"""Decrypting reader of the audit trail (export, reports, admin reads, other areas' tools).

Every record comes back as a dict with the same keys whatever its kind; a record whose subject was shredded
(or whose month was purged) comes back with ``shredded: True`` and only its clear header fields.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlguard.audit.record import pseudonym
from mlguard.audit.seal import Fetch, Sealed, Sealer, decode
from mlguard.audit.store.base import AuditStore, RecordRow, open_store
from mlguard.errors import IntegrityError, KeyringError
from mlguard.keys import ENV_VAR, KeyProvider, Keyring

PREFETCH = 256
"""Records read ahead so their data keys come from the store in one query."""
DEFERRED_SCAN = 100_000
"""Explanation events looked at after an exchange when its deferred explanation is looked up."""

FIELDS = ("audit_id", "seq", "ts", "route", "method", "status", "latency_ms", "policies", "model", "input",
          "findings", "output", "attached", "explanation", "fairness", "decision", "failures", "subject",
          "protected", "kind", "shredded")


def _check_columns(row: RecordRow, sealed: Sealed) -> None:
    """The clear columns a store filters on (audit id, time, kind, route, subject) must say what the record's
    sealed header says: the header is covered by the chain, the columns are not, so an edited column (a record
    moved to another route or day) is caught here when the record is read, instead of exporting it under the
    wrong filter. (A record moved out of a filter is not read at all: an export without filters reads every one.)"""
    h = sealed.header
    if (row.audit_id, row.ts, row.kind, row.route, row.subject) != (
            h.get("id"), h.get("ts"), h.get("kind"), h.get("route"), h.get("subj")):
        raise IntegrityError(f"record {row.seq}: the store's columns (id, ts, kind, route, subject) differ from "
                             "its sealed header: edited outside the guard", seq=row.seq)


def load_keyring(path: str | Path | None) -> Keyring:
    """The keyring at ``path``, else from env MLGUARD_KEYRING."""
    if path is not None:
        return Keyring.load(path)
    env = os.environ.get(ENV_VAR)
    if not env:
        raise KeyringError(f"no keyring given (--keyring FILE or env {ENV_VAR})")
    return Keyring.from_env(env)


_PLAIN_ID = re.compile(r"[0-9A-Za-z_.:-]+")


def _json_string(value: Any) -> bytes | None:
    """``value`` as any JSON encoder writes it as a string (quotes included, nothing escaped), when it is such an
    id (a UUID's text is); None otherwise (no byte pre-filter is sound then: every event is parsed)."""
    if isinstance(value, str) and _PLAIN_ID.fullmatch(value):
        return f'"{value}"'.encode("ascii")
    return None


class AuditReader:
    """``AuditReader(store_url, keyring_path)``: ``.get(audit_id)`` and ``.iter_records(...)``."""

    def __init__(self, store_url: str | AuditStore, keyring_path: str | Path | KeyProvider | None = None, *,
                 cache_keys: bool = True) -> None:
        self.store = open_store(store_url, create=False) if isinstance(store_url, str) else store_url
        self._own_store = isinstance(store_url, str)
        self.keys: KeyProvider = (keyring_path if isinstance(keyring_path, KeyProvider)
                                  else load_keyring(keyring_path))
        self.sealer = Sealer(self.keys)
        self.cache_keys = cache_keys  # False for long-lived readers: a shred elsewhere takes effect at once

    def get(self, audit_id: str) -> dict[str, Any] | None:
        row = self.store.get_row(audit_id)
        return None if row is None else self.decode(row)

    def iter_records(self, since: str | None = None, until: str | None = None, route: str | None = None,
                     subject: str | None = None, *, since_seq: int = 0, to_seq: int | None = None
                     ) -> Iterator[dict[str, Any]]:
        """Records in seq order; ``subject`` is the raw subject id (turned into its pseudonym here); seqs in
        (``since_seq``, ``to_seq``] only (one window of a parallel export)."""
        for row, sealed, fetch in self._read_ahead(since, until, route, subject, since_seq, to_seq):
            yield self._decode(row, sealed, fetch)

    def _read_ahead(self, since: str | None, until: str | None, route: str | None, subject: str | None,
                    since_seq: int, to_seq: int | None, *, kind: str | None = None, limit: int | None = None,
                    page_keys: bool = False) -> Iterator[tuple[RecordRow, Sealed, Fetch]]:
        """Rows with their parsed envelopes, read PREFETCH at a time so each page's data keys come from the
        store in one query; with the fetch to open them with. ``kind``: the clear kind column; ``limit``: at
        most that many rows; ``page_keys``: see ``_prefetch``."""
        subj = pseudonym(self.keys, subject) if subject is not None else None
        rows: Iterator[RecordRow] = self.store.iter_rows(since=since, until=until, route=route, subject=subj,
                                                         kind=kind, since_seq=since_seq, to_seq=to_seq)
        if limit is not None:
            rows = itertools.islice(rows, max(limit, 0))
        while chunk := list(itertools.islice(rows, PREFETCH)):
            sealeds = [decode(row.sealed) for row in chunk]
            fetch = self._prefetch(sealeds, page_keys=page_keys)
            for row, sealed in zip(chunk, sealeds, strict=True):
                _check_columns(row, sealed)
                yield row, sealed, fetch

    def deferred_explanation(self, record: dict[str, Any], *, scan: int = DEFERRED_SCAN) -> dict[str, Any] | None:
        """The explanation event a deferred explanation became, for the exchange ``record`` (decoded): the
        first ``explanation`` event after it that names its audit id, looking at up to ``scan`` of them (the
        worker appends it seconds after the exchange). None when there is none (yet).

        Events are read ahead a page at a time (their data keys in one query per page, fresh from the store
        for a non-caching reader too) and opened to their canonical bytes; only those whose bytes hold the
        audit id as a JSON string are parsed, and the match is confirmed on the parsed data. A shredded event
        names nothing readable and is passed over, as its decoded record (no ``data``) was."""
        seq = record.get("seq")
        if not isinstance(seq, int):
            return None
        audit_id = record.get("audit_id")
        needle = _json_string(audit_id)
        for _row, sealed, fetch in self._read_ahead(None, None, None, None, seq, None, kind="explanation",
                                                     limit=scan, page_keys=True):
            body, _, _ = self.sealer.open_raw(sealed, fetch, cached=self.cache_keys)
            if body is None or (needle is not None and needle not in body):
                continue  # shredded, or its canonical bytes cannot name the audit id
            doc = json.loads(body.decode("utf-8"))
            data = doc.get("data")
            if isinstance(data, dict) and data.get("audit_id") == audit_id:
                explanation = data.get("explanation")
                return explanation if isinstance(explanation, dict) else None
        return None

    def decode(self, row: RecordRow) -> dict[str, Any]:
        return self._decode(row, decode(row.sealed), self.store.get_data_key)

    def _decode(self, row: RecordRow, sealed: Sealed, fetch: Fetch) -> dict[str, Any]:
        h = sealed.header
        body, protected, shredded = self.sealer.open(sealed, fetch, cached=self.cache_keys)
        out: dict[str, Any] = dict.fromkeys(FIELDS)
        out.update({"audit_id": h.get("id"), "ts": h.get("ts"), "route": h.get("route"), "kind": h.get("kind"),
                    "subject": h.get("subj")})
        if body is not None:
            data = body.get("data")
            out.update({k: v for k, v in body.items() if k != "data"})
            if data is not None:
                out["data"] = data
        out["seq"] = row.seq
        out["protected"] = protected
        out["shredded"] = shredded
        return out

    def iter_jsonl(self, since: str | None = None, until: str | None = None, route: str | None = None,
                   subject: str | None = None, *, since_seq: int = 0, to_seq: int | None = None) -> Iterator[str]:
        """Records as JSON lines (filters as ``iter_records``). Exchange records (which carry every field) are
        spliced from their decrypted canonical bytes instead of parsed and re-encoded: the export's hot path."""
        for row, sealed, fetch in self._read_ahead(since, until, route, subject, since_seq, to_seq):
            if sealed.header.get("kind") == "exchange":
                body, protected, _ = self.sealer.open_raw(sealed, fetch, cached=self.cache_keys)
                if body is not None and body[-1:] == b"}":
                    prot = "null" if protected is None else protected.decode("utf-8")
                    yield f'{body[:-1].decode("utf-8")},"seq":{row.seq},"protected":{prot},"shredded":false}}'
                    continue
            yield json.dumps(self._decode(row, sealed, fetch), ensure_ascii=False, default=str)

    def _prefetch(self, sealeds: list[Sealed], *, page_keys: bool = False) -> Fetch:
        """Unwrap the data keys a page of records needs with one store query instead of one per new key (the
        export's largest cost after decrypting when subjects are many); returns the fetch to open them with.

        A non-caching reader asks the store for every record's key as it opens it, unless ``page_keys``: then
        the page's key rows are read in one query here and answer for its records (a shred is seen from the
        next page on; a caller that opens the page at once, as ``deferred_explanation`` does, reads the store
        as the per-record queries would have, a few milliseconds earlier)."""
        if not self.cache_keys and not page_keys:
            return self.store.get_data_key
        wanted: dict[str, str] = {}
        for sealed in sealeds:
            h = sealed.header
            if h.get("kid") is not None:
                wanted[str(h["kid"])] = "data"
                if h.get("pkid") is not None:
                    wanted[str(h["pkid"])] = "protected"
        get = self.store.get_data_key
        if not self.cache_keys:
            rows = self.store.get_data_keys(list(wanted)) if wanted else {}
            return lambda key_id: rows.get(key_id) if key_id in wanted else get(key_id)
        gone = self.sealer.prefetch(wanted, self.store.get_data_keys)
        return lambda key_id: None if key_id in gone else get(key_id)

    def close(self) -> None:
        if self._own_store:
            self.store.close()
