"""The audit record: what is sealed for one exchange, as canonical JSON bytes.

Why canonical bytes (sorted keys, no whitespace, UTF-8, no NaN): the same record always gives the same bytes,
so a record can be re-derived and compared, and hashes never depend on a serializer's whims.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlguard.exchange import Exchange
    from mlguard.keys import KeyProvider

KINDS = ("exchange", "tombstone", "gap", "admin_read", "oversight", "feedback", "explanation")
_CORE_SECTIONS = ("explanation", "fairness", "model", "pii")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8; non-finite floats become null."""
    try:  # fast path: plain JSON values (the common case) need no cleaning pass
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return json.dumps(_clean(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "model_dump"):
        return _clean(obj.model_dump(mode="json"))
    if hasattr(obj, "as_dict"):
        return _clean(obj.as_dict())
    if hasattr(obj, "__dataclass_fields__"):
        return _clean({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    return str(obj)


def iso(ts: float) -> str:
    """UTC ISO 8601 with microseconds and a Z: sorts as text, so the store can filter by range."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pseudonym(keys: KeyProvider, subject: str | None) -> str | None:
    """HMAC-SHA256 of the subject id under the keyring's "audit.subject" secret: stable, not reversible."""
    if subject is None:
        return None
    return hmac.new(keys.secret("audit.subject"), subject.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Pending:
    """A record waiting to be sequenced, sealed and appended.

    ``body`` is canonical JSON bytes; ``protected`` (may be None) goes under the protected key domain;
    ``clear`` records (tombstones, gaps) hold no personal data and are stored unencrypted so anyone can read
    them while verifying.
    """

    audit_id: str
    ts: str
    kind: str
    route: str | None
    subject: str | None
    body: bytes
    protected: bytes | None = None
    clear: bool = False


def policy_identity(policy: Any) -> dict[str, Any]:
    """Ids, versions and content hashes of the effective policy (read defensively: its module is evolving)."""
    sources = [_clean(s) for s in getattr(policy, "sources", ()) or ()]
    return {"ids": list(getattr(policy, "ids", []) or []), "content_hash": getattr(policy, "content_hash", None),
            "sources": sources, "failure_mode": getattr(policy, "failure_mode", None)}


def from_exchange(ex: Exchange, keys: KeyProvider) -> Pending:
    """Build the record of one exchange (refused, failed and disconnected ones too)."""
    subject = pseudonym(keys, ex.subject)
    ts = iso(ex.started_wall)
    decision = ex.decision
    rejection = ex.rejection
    record: dict[str, Any] = {
        "audit_id": ex.audit_id, "kind": "exchange", "ts": ts, "ts_end": iso(ex.started_wall + ex.latency_ms / 1e3),
        "route": ex.route.path, "method": ex.method, "status": ex.status, "latency_ms": round(ex.latency_ms, 3),
        "policies": policy_identity(ex.route.policy),
        "input": ex.document if ex.rejection is None else None,
        "findings": [f.as_dict() for f in ex.findings],
        "output": ex.response_doc, "inspected": ex.inspected,
        "decision": {"action": decision.action, "status": decision.status, "reason": decision.reason,
                     "gap": decision.gap},
        "failures": [{"stage": f.stage, "phase": f.phase, "error": f.error, "message": f.message}
                     for f in ex.failures],
        "rejection": None if rejection is None else {"status": rejection.status, "type": rejection.type_suffix,
                                                     "limit": rejection.limit},
        "app_called": ex.app_called, "app_error": ex.app_error, "disconnected": ex.disconnected,
        "outcome": None if ex.outcome is None else {"score": ex.outcome.score, "favorable": ex.outcome.favorable},
        "subject": subject,
    }
    for name in _CORE_SECTIONS:
        record[name] = ex.record.get(name)
    extras = {k: v for k, v in ex.record.items() if k not in _CORE_SECTIONS}
    if extras:
        record["sections"] = extras
    protected = canonical(ex.protected) if ex.protected else None
    return Pending(ex.audit_id, ts, "exchange", ex.route.path, subject, canonical(record), protected)


def event(audit_id: str, ts: float, kind: str, data: dict[str, Any], *, subject: str | None = None,
          route: str | None = None, clear: bool = False) -> Pending:
    """A non-exchange record (oversight, feedback, admin_read, tombstone, gap)."""
    body = {"audit_id": audit_id, "kind": kind, "ts": iso(ts), "route": route, "subject": subject, "data": data}
    return Pending(audit_id, iso(ts), kind, route, subject, canonical(body), None, clear)
