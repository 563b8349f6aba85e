"""The audit record: what is sealed for one exchange, as canonical JSON bytes.

Why canonical bytes (sorted keys, no whitespace, UTF-8, no NaN): the same record always gives the same bytes,
so a record can be re-derived and compared, and hashes never depend on a serializer's whims.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring as _json_str
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlguard.exchange import Exchange
    from mlguard.keys import KeyProvider

try:
    import orjson as _orjson
except ImportError:  # optional speed-up: the standard library gives the same bytes
    _orjson = None  # type: ignore[assignment]

_ORJSON_OPTS = (0 if _orjson is None else _orjson.OPT_SORT_KEYS | _orjson.OPT_PASSTHROUGH_DATACLASS
                | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_SUBCLASS)

KINDS = ("exchange", "tombstone", "gap", "admin_read", "admin_denied", "oversight", "feedback", "explanation")
_CORE_SECTIONS = ("explanation", "fairness", "model", "pii")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8; non-finite floats become null.

    The definition is the standard library's ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` over plain values. orjson, when installed, gives the same bytes about ten times
    faster for what it accepts with the options below; the one difference measured (floats below 1e-4 in
    absolute value: orjson writes ``0.00001`` and ``1e-7`` where Python writes ``1e-05`` and ``1e-07``) is
    rewritten in orjson's output (``_python_tiny_floats``), and every type orjson refuses (big integers,
    subclasses, dataclasses, datetimes, non-string keys, lone surrogates) takes the standard path. So the bytes
    never depend on whether orjson is installed (tests/audit/test_canonical.py compares both paths).
    """
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(obj, option=_ORJSON_OPTS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
        else:
            first = (out.find(b"0.0000"), out.find(b"e-"))  # (C-speed scans)
            if first == (-1, -1):
                return out  # most records hold neither
            return _python_tiny_floats(out, first)  # explanation contributions often hold such floats
    return _canonical_std(obj)


_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?")


def _python_tiny_floats(out: bytes, first: tuple[int, int]) -> bytes:
    """orjson's output with every float below 1e-4 in absolute value written as Python writes it.

    Why not one regex pass over every token: that called a Python function per string and number, 240 us on
    a 5 KB record holding explanation contributions, against 4 us for orjson itself. Here only the places
    where ``0.0000`` or ``e-`` occurs are looked at (C-speed ``find``); each is a float to rewrite only when
    it is a whole number token in value position (after ``:``, ``,`` or ``[``, or the whole document) and
    outside every string: an even number of quotes before it, which holds exactly when no string has an
    escaped character. Output with a backslash anywhere takes the token-by-token pass. ``first``: where each
    of the two needles first occurs (-1: nowhere), as the caller found them."""
    if b"\\" in out:
        return _TOKEN.sub(_python_number, out)
    found: dict[int, bytes] = {}
    for needle, i in zip((b"0.0000", b"e-"), first, strict=True):
        while i != -1:
            # (an exponent of two digits or more is spelt alike by both: nothing to do)
            if needle == b"0.0000" or not out[i + 3:i + 4].isdigit():
                # the token would start after the last ":", "," or "[" before it (C-speed scans)
                start = max(out.rfind(b":", 0, i), out.rfind(b",", 0, i), out.rfind(b"[", 0, i)) + 1
                m = _NUMBER.match(out, start) if start not in found else None
                if m is not None and m.end() > i and out.count(b'"', 0, start) % 2 == 0:
                    value = float(m.group())
                    if 0.0 < abs(value) < 1e-4:
                        found[start] = m.group()
            i = out.find(needle, i + 2)
    if not found:
        return out
    parts: list[bytes] = []
    pos = 0
    for start in sorted(found):
        parts += (out[pos:start], repr(float(found[start])).encode("ascii"))
        pos = start + len(found[start])
    parts.append(out[pos:])
    return b"".join(parts)


# Every JSON string (skipped whole, so nothing inside one is ever touched) or a whole number token.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(?<![0-9.eE+\-])-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?')


def _python_number(m: re.Match[bytes]) -> bytes:
    """A number token of orjson's output as Python's ``repr`` writes it when it is a float below 1e-4 in
    absolute value (the one spelling the two differ on); every other token unchanged."""
    tok = m.group()
    if tok[:1] == b'"' or (b"." not in tok and b"e" not in tok):
        return tok  # a string, or an integer (written alike)
    value = float(tok)
    return repr(value).encode("ascii") if 0.0 < abs(value) < 1e-4 else tok


def _canonical_std(obj: Any) -> bytes:
    try:  # plain JSON values (the common case) need no cleaning pass
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
    if isinstance(obj, enum.Enum):  # as orjson writes it: the member's value
        return _clean(obj.value)
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
    """UTC ISO 8601 with microseconds and a Z: sorts as text, so the store can filter by range.

    Equal to ``datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` (same half-even rounding to
    the microsecond); the text up to the second is cached, since every record of one second shares it."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    sec = int(whole)
    if us >= 1_000_000:
        sec += 1
        us -= 1_000_000
    elif us < 0:
        sec -= 1
        us += 1_000_000
    cached = _iso_second
    if cached[0] != sec:
        cached = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
        globals()["_iso_second"] = cached
    return f"{cached[1]}{us:06d}Z"


_iso_second: tuple[int, str] = (-1 << 62, "")


def pseudonym(keys: KeyProvider, subject: str | None) -> str | None:
    """HMAC-SHA256 of the subject id under the keyring's "audit.subject" secret: stable, not reversible."""
    if subject is None:
        return None
    h = _keyed_hmac(keys.secret("audit.subject")).copy()
    h.update(subject.encode("utf-8"))
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=8)
def _keyed_hmac(key: bytes) -> hmac.HMAC:
    """The keyed HMAC state, copied per use: keying (two extra compression rounds) is paid once per key."""
    return hmac.new(key, digestmod=hashlib.sha256)


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
    # The sealed header's text around the parts only the writer knows (key ids, previous hash, seq), escaped
    # here, on the caller's thread: the writer thread decides the audit trail's throughput, so it only fills
    # in the blanks (seal._header; tests/audit/test_seal.py checks the result against canonical JSON).
    header_parts: tuple[str, str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header_parts", (
            f'{{"id":{_json_text(self.audit_id)},"kid":', f',"kind":{_json_text(self.kind)},"pkid":',
            f'","route":{_json_text(self.route)},"seq":',
            f',"subj":{_json_text(self.subject)},"ts":{_json_text(self.ts)},"v":'))


def _json_text(value: str | None) -> str:
    """A JSON string (or null) exactly as canonical() writes it: ensure_ascii off, so only quotes,
    backslashes and control characters are escaped."""
    return "null" if value is None else _json_str(value)


def policy_identity(policy: Any) -> dict[str, Any]:
    """Ids, versions and content hashes of the effective policy (read defensively: its module is evolving).

    Each source file is named by id, version and the SHA-256 of its bytes: that identifies it exactly, and its
    title, dates and path follow from the file (``mlguard policy show``). Repeating them, with the deployment's
    absolute paths, in every record made each record about 800 bytes longer, for nothing an auditor needs.
    Computed once per policy object (dumping the pydantic sources took about 20 us, on every request) and
    shared read-only by the records that embed it; a route whose policy object is replaced gets a new entry."""
    key = id(policy)
    hit = _POLICY_IDENTITY.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    sources = [_source_identity(s) for s in getattr(policy, "sources", ()) or ()]
    ident = {"ids": list(getattr(policy, "ids", []) or []), "content_hash": getattr(policy, "content_hash", None),
             "sources": sources, "failure_mode": getattr(policy, "failure_mode", None)}
    if len(_POLICY_IDENTITY) >= 256:
        _POLICY_IDENTITY.clear()
    _POLICY_IDENTITY[key] = (policy, ident)
    return ident


_POLICY_IDENTITY: dict[int, tuple[Any, dict[str, Any]]] = {}
_SOURCE_IDENTITY = ("id", "version", "sha256")


def _source_identity(source: Any) -> Any:
    doc = _clean(source)
    return {k: v for k, v in doc.items() if k in _SOURCE_IDENTITY} if isinstance(doc, dict) else doc


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
        "output": _app_output(ex), "inspected": ex.inspected,
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
    if ex.attached:
        record["attached"] = dict(ex.attached)
    for name in _CORE_SECTIONS:
        record[name] = ex.record.get(name)
    extras = {k: v for k, v in ex.record.items() if k not in _CORE_SECTIONS}
    if extras:
        record["sections"] = extras
    protected = canonical(ex.protected) if ex.protected else None
    return Pending(ex.audit_id, ts, "exchange", ex.route.path, subject, canonical(record), protected)


def _app_output(ex: Exchange) -> Any:
    """The response document without the members the guard attached (each is its own section of the record,
    named in ``attached``): one copy of an explanation per record, not two."""
    doc = ex.response_doc
    if ex.attached and isinstance(doc, dict):
        return {k: v for k, v in doc.items() if k not in ex.attached}
    return doc


def event(audit_id: str, ts: float, kind: str, data: dict[str, Any], *, subject: str | None = None,
          route: str | None = None, clear: bool = False) -> Pending:
    """A non-exchange record (oversight, feedback, admin_read, tombstone, gap)."""
    body = {"audit_id": audit_id, "kind": kind, "ts": iso(ts), "route": route, "subject": subject, "data": data}
    return Pending(audit_id, iso(ts), kind, route, subject, canonical(body), None, clear)
