"""Decrypting reader of the audit trail (export, reports, admin reads, other areas' tools).

Every record comes back as a dict with the same keys whatever its kind; a record whose subject was shredded
(or whose month was purged) comes back with ``shredded: True`` and only its clear header fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlguard.audit.record import pseudonym
from mlguard.audit.seal import Sealer, decode
from mlguard.audit.store.base import AuditStore, RecordRow, open_store
from mlguard.errors import KeyringError
from mlguard.keys import ENV_VAR, KeyProvider, Keyring

DEFERRED_SCAN = 100_000
"""Explanation events looked at after an exchange when its deferred explanation is looked up."""

FIELDS = ("audit_id", "seq", "ts", "route", "method", "status", "latency_ms", "policies", "model", "input",
          "findings", "output", "attached", "explanation", "fairness", "decision", "failures", "subject",
          "protected", "kind", "shredded")


def load_keyring(path: str | Path | None) -> Keyring:
    """The keyring at ``path``, else from env MLGUARD_KEYRING."""
    if path is not None:
        return Keyring.load(path)
    env = os.environ.get(ENV_VAR)
    if not env:
        raise KeyringError(f"no keyring given (--keyring FILE or env {ENV_VAR})")
    return Keyring.from_env(env)


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
                     subject: str | None = None) -> Iterator[dict[str, Any]]:
        """Records in seq order; ``subject`` is the raw subject id (turned into its pseudonym here)."""
        subj = pseudonym(self.keys, subject) if subject is not None else None
        for row in self.store.iter_rows(since=since, until=until, route=route, subject=subj):
            yield self.decode(row)

    def deferred_explanation(self, record: dict[str, Any], *, scan: int = DEFERRED_SCAN) -> dict[str, Any] | None:
        """The explanation event a deferred explanation became, for the exchange ``record`` (decoded): the
        first ``explanation`` event after it that names its audit id, looking at up to ``scan`` of them (the
        worker appends it seconds after the exchange). None when there is none (yet)."""
        seq = record.get("seq")
        if not isinstance(seq, int):
            return None
        for n, row in enumerate(self.store.iter_rows(since_seq=seq, kind="explanation")):
            if n >= scan:
                break
            event = self.decode(row)
            data = event.get("data")
            if isinstance(data, dict) and data.get("audit_id") == record.get("audit_id"):
                explanation = data.get("explanation")
                return explanation if isinstance(explanation, dict) else None
        return None

    def decode(self, row: RecordRow) -> dict[str, Any]:
        sealed = decode(row.sealed)
        h = sealed.header
        body, protected, shredded = self.sealer.open(sealed, self.store.get_data_key, cached=self.cache_keys)
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
                   subject: str | None = None) -> Iterator[str]:
        """Records as JSON lines. Exchange records (which carry every field) are spliced from their decrypted
        canonical bytes instead of parsed and re-encoded: the export's hot path."""
        subj = pseudonym(self.keys, subject) if subject is not None else None
        for row in self.store.iter_rows(since=since, until=until, route=route, subject=subj):
            sealed = decode(row.sealed)
            if sealed.header.get("kind") == "exchange":
                body, protected, _ = self.sealer.open_raw(sealed, self.store.get_data_key,
                                                          cached=self.cache_keys)
                if body is not None and body[-1:] == b"}":
                    prot = "null" if protected is None else protected.decode("utf-8")
                    yield f'{body[:-1].decode("utf-8")},"seq":{row.seq},"protected":{prot},"shredded":false}}'
                    continue
            yield json.dumps(self.decode(row), ensure_ascii=False, default=str)

    def close(self) -> None:
        if self._own_store:
            self.store.close()
