"""Operators: what replaces a detected value, chosen per entity by the policy (``policy.pii.entities``).

replace ``<ENTITY>`` · mask (keep_first/keep_last, PCI: BIN and last four) · drop · hmac (keyed SHA-256 pseudonym,
consistent across requests) · token (random, reversible through the encrypted vault: HIPAA 164.514(c) forbids
codes derived from the identifier) · encrypt (AES-256-GCM) · generalize (ZIP3 / 000, date to year, age over 89
to 90) · keep.

Why an Operator object per entity built once: parameters are validated at start-up (a bad policy fails there, not
on a request), and keys are derived once from the keyring. ``apply`` never logs or raises with the value.

The ``token`` operator links each token to the subject of the request being redacted (so ``mlguard audit shred``
can erase it from the vault). The operator is built once and shared by every request, and the redactor's walk
does not carry per-request values down to it, so the subject travels in a context variable that the PII stage
sets around one request's redaction (:func:`redacting_for`). A context variable is per task, so concurrent
requests each see their own; ``anyio.to_thread.run_sync`` (detection's thread hop) runs the thread in a copy of
the caller's context, so an operator applied there sees the same subject (tests/pii/test_vault_erasure.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlguard.errors import ConfigError, PIIError

OPERATORS = ("replace", "mask", "drop", "hmac", "token", "encrypt", "generalize", "keep")
DROP = object()
"""Sentinel: the whole field is removed (inside a text, the span becomes empty)."""

ENCRYPTED_PREFIX = "enc:v1:"
_DATE_YEAR = re.compile(r"(?<!\d)(1[89]\d{2}|2[01]\d{2})(?!\d)")
_DIGITS = re.compile(r"\d")


class Keyring(Protocol):
    """What operators need from the keyring (mlguard.keys.Keyring): a stable 32-byte key per purpose."""

    def secret(self, purpose: str) -> bytes: ...


class TokenVault(Protocol):
    def token_for(self, entity: str, value: str, subject: str | None = None) -> str: ...


_SUBJECT: ContextVar[str | None] = ContextVar("mlguard_pii_subject", default=None)


@contextmanager
def redacting_for(subject: str | None) -> Iterator[None]:
    """Within this block (one request's redaction), tokens issued or looked up are linked to ``subject``."""
    reset = _SUBJECT.set(subject)
    try:
        yield
    finally:
        _SUBJECT.reset(reset)


@dataclass(slots=True)
class Operator:
    """One entity's operator with its validated parameters and derived keys."""

    entity: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    key: bytes | None = None
    vault: TokenVault | None = None

    def apply(self, value: Any) -> Any:
        """The replacement of a whole value (str, or a number for generalize); DROP to remove it."""
        kind = self.kind
        if kind == "keep":
            return value
        if kind == "drop":
            return DROP
        if kind == "generalize":
            return generalize(self.entity, value, self.params)
        text = value if isinstance(value, str) else _scalar_text(value)
        if kind == "replace":
            return str(self.params.get("text", f"<{self.entity}>"))
        if kind == "mask":
            return mask(text, int(self.params.get("keep_first", 0)), int(self.params.get("keep_last", 0)),
                        str(self.params.get("char", "*")))
        if kind == "hmac":
            length = int(self.params.get("length", 16))
            data = self.entity.encode() + b"\0" + _normalize(text).encode("utf-8", "surrogatepass")
            mac = hmac.new(self._key(), data, hashlib.sha256)
            return f"{self.params.get('prefix', self.entity)}_{mac.hexdigest()[:length]}"
        if kind == "token":
            if self.vault is None:
                raise PIIError("token operator has no vault")
            return self.vault.token_for(self.entity, text, subject=_SUBJECT.get())
        if kind == "encrypt":
            return encrypt_value(self._key(), self.entity, text)
        raise PIIError(f"unknown operator {kind!r}")  # pragma: no cover - validated at build

    def _key(self) -> bytes:
        if self.key is None:
            raise PIIError(f"operator {self.kind!r} has no key")
        return self.key

    def apply_span(self, text: str) -> str:
        """The replacement of a span inside a longer text (DROP becomes the empty string)."""
        out = self.apply(text)
        if out is DROP:
            return ""
        return out if isinstance(out, str) else str(out)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _normalize(text: str) -> str:
    """Same person, same pseudonym: case and surrounding/inner whitespace do not change the HMAC."""
    return " ".join(text.split()).casefold()


def mask(text: str, keep_first: int, keep_last: int, char: str = "*") -> str:
    """Mask letters and digits except the first/last N of them; separators stay (``4111 11** **** 1111``)."""
    positions = [i for i, c in enumerate(text) if c.isalnum()]
    n = len(positions)
    if keep_first + keep_last >= n:
        # Too short to keep anything safely: mask it all.
        keep_first = keep_last = 0
    hide = set(positions[keep_first:n - keep_last])
    return "".join(char if i in hide else c for i, c in enumerate(text))


def encrypt_value(key: bytes, entity: str, text: str) -> str:
    """AES-256-GCM; the entity name is bound as associated data. ``enc:v1:`` + base64url(nonce || ct)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, text.encode("utf-8", "surrogatepass"), entity.encode())
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(nonce + ct).decode().rstrip("=")


def decrypt_value(key: bytes, entity: str, blob: str) -> str:
    """Inverse of :func:`encrypt_value` for the key holder; raises PIIError on a wrong key or altered value."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(ENCRYPTED_PREFIX):
        raise PIIError("not an mlguard encrypted value")
    raw = blob[len(ENCRYPTED_PREFIX):]
    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    try:
        return AESGCM(key).decrypt(data[:12], data[12:], entity.encode()).decode("utf-8", "surrogatepass")
    except InvalidTag:
        raise PIIError("decryption failed (wrong key, entity or altered value)") from None


def generalize(entity: str, value: Any, params: Mapping[str, Any]) -> Any:
    """HIPAA Safe Harbor style generalisation; anything it cannot generalise is replaced by ``<ENTITY>``.

    ``params`` as in policy files: ``zip: zip3`` (with ``restricted_zip3``: those areas become ``000``),
    ``date: year`` or ``age_cap: N`` (ages >= N become N). Without params the entity picks its default.
    """
    how = _how(entity, params)
    if how == "zip3":
        digits = "".join(_DIGITS.findall(str(value)))
        if len(digits) < 3:
            return f"<{entity}>"
        zip3 = digits[:3]
        restricted = {str(z).zfill(3) for z in params.get("restricted_zip3", [])}
        return "000" if zip3 in restricted else zip3
    if how == "year":
        m = _DATE_YEAR.search(str(value))
        return m.group(1) if m else f"<{entity}>"
    if how == "age":
        cap = int(params.get("age_cap", 90))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cap if value >= cap else value
        m = re.search(r"\d{1,3}", str(value))
        if m is None:
            return f"<{entity}>"
        return str(cap) if int(m.group()) >= cap else str(value)
    return f"<{entity}>"


def _how(entity: str, params: Mapping[str, Any]) -> str:
    if params.get("zip") == "zip3":
        return "zip3"
    if params.get("date") == "year":
        return "year"
    if "age_cap" in params:
        return "age"
    return _DEFAULT_GENERAL.get(entity, "")


_DEFAULT_GENERAL = {"ZIP_CODE": "zip3", "DATE_OF_BIRTH": "year", "DATE_TIME": "year", "AGE": "age"}


def build_operator(entity: str, kind: str, params: Mapping[str, Any] | None, *,
                   keyring: Keyring | None, vault: TokenVault | None) -> Operator:
    """Validate one policy rule and derive its key; ConfigError names the entity when it cannot work."""
    params = dict(params or {})
    where = f"pii.entities.{entity}"
    if kind not in OPERATORS:
        raise ConfigError(f"unknown operator {kind!r} (known: {', '.join(OPERATORS)})", field=where)
    op = Operator(entity=entity, kind=kind, params=params)
    if kind == "mask":
        for k in ("keep_first", "keep_last"):
            if int(params.get(k, 0)) < 0:
                raise ConfigError(f"{k} must be >= 0", field=where)
    if kind in ("hmac", "encrypt"):
        if keyring is None:
            raise ConfigError(f"operator {kind!r} needs the keyring (audit.keyring or MLGUARD_KEYRING)",
                              field=where)
        op.key = keyring.secret("pii.hmac" if kind == "hmac" else "pii.encrypt")
    if kind == "token":
        if vault is None:
            raise ConfigError("operator 'token' needs the keyring and a vault (pii_engine.vault_path)",
                              field=where)
        op.vault = vault
    if kind == "generalize" and _how(entity, params) not in ("zip3", "year", "age"):
        raise ConfigError("generalize needs one of zip: zip3, date: year, age_cap: N", field=where)
    return op
