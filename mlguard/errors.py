"""One exception tree for everything mlguard raises on purpose.

Why one tree: callers (the middleware, the CLI, users embedding the library) need to tell a refusal of bad
input from a broken deployment from a broken audit log, and act on each differently, without string matching.
Every error carries the data a caller needs to act on it, and never an input value: messages are built only
from names, paths, limits and counts, because the request body may hold personal data.

::

    MLGuardError
    ├── ConfigError                 bad mlguard.yaml or Python config (file, field)
    │   └── PolicyError             bad policy file or composition (file, field)
    ├── DependencyMissing           an optional extra is not installed (names the extra)
    ├── RequestRejected             a request refused before the app sees it (-> problem+json)
    │   ├── BodyTooLarge            413
    │   ├── UnsupportedMediaType    415
    │   ├── MalformedBody           400 (bad JSON, bad UTF-8)
    │   ├── BodyLimitExceeded       422 (depth, string length, integer digits, array length)
    │   └── ScanBudgetExceeded      413 (more text to scan for PII than one request may send to NER)
    ├── ClientDisconnected          the client went away mid-body
    ├── StageError                  a pipeline stage failed (its failure_mode decides what follows)
    │   ├── PIIError
    │   ├── AuditError
    │   │   └── AuditUnavailable    store down or queue full
    │   ├── ExplainError
    │   └── FairnessError
    ├── KeyringError                keyring missing, unreadable, too open, or a key is unknown
    ├── RetentionRefused            a shred or purge would destroy records a policy must keep
    └── IntegrityError              a verified log is not intact (seq, expected, calculated)
"""

from __future__ import annotations

from collections.abc import Sequence


class MLGuardError(Exception):
    """Base of every error mlguard raises on purpose."""


def _where(file: str | None, field: str | None) -> str:
    return ":".join(p for p in (file, field) if p)


class ErrorLines(str):
    """Several errors of one file as one message: the first error's text, then one ``field: message`` line per
    further error, then ``and N more`` when some were left out.

    Why a ``str``: the code that turns a pydantic error into a ConfigError (config and policy loading) passes a
    message and a field; this message keeps the errors apart, so :class:`ConfigError` can write each one as
    ``file:field: message`` on its own line once it knows the file, and every other reader still gets text.
    """

    entries: tuple[tuple[str | None, str], ...]
    omitted: int

    def __new__(cls, entries: Sequence[tuple[str | None, str]], omitted: int = 0) -> ErrorLines:
        if not entries:
            raise ValueError("ErrorLines needs at least one error")
        rest = [f"{field}: {msg}" if field else msg for field, msg in entries[1:]]
        tail = [f"and {omitted} more"] if omitted else []
        out = super().__new__(cls, "\n".join([entries[0][1], *rest, *tail]))
        out.entries = tuple(entries)
        out.omitted = omitted
        return out

    def __reduce__(self) -> tuple[type[ErrorLines], tuple[tuple[tuple[str | None, str], ...], int]]:
        return type(self), (self.entries, self.omitted)  # str's own would call __new__ with the text

    def located(self, file: str | None, field: str | None) -> str:
        """Every error as ``file:field: message`` on its own line (``field`` is the first error's)."""
        lines = [(field, self.entries[0][1]), *self.entries[1:]]
        out = [f"{_where(file, f)}: {m}" if _where(file, f) else m for f, m in lines]
        return "\n".join(out + ([f"and {self.omitted} more"] if self.omitted else []))


class ConfigError(MLGuardError):
    """A configuration is invalid. ``file`` and ``field`` say where, so a user can fix it without guessing.

    With an :class:`ErrorLines` message (several errors in one file) ``field`` is the first error's and the text
    names file and field on every line."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        self.message = message  # without the "file:field: " prefix, to say again with a file
        if isinstance(message, ErrorLines):
            super().__init__(message.located(file, field))
            return
        where = _where(file, field)
        super().__init__(f"{where}: {message}" if where else message)


class PolicyError(ConfigError):
    """A policy file or the composition of several policies is invalid."""


class DependencyMissing(MLGuardError):
    """An optional dependency is missing; ``extra`` names the pip extra that brings it."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{package} is not installed: pip install 'mlguard[{extra}]'")


class RequestRejected(MLGuardError):
    """A request refused before the wrapped app sees it; rendered as RFC 9457 problem+json.

    ``detail`` names the limit that was hit and never echoes the body.
    """

    status: int = 400
    title: str = "Bad request"
    type_suffix: str = "bad-request"

    def __init__(self, detail: str, *, limit: str | None = None) -> None:
        self.detail = detail
        self.limit = limit
        super().__init__(detail)


class BodyTooLarge(RequestRejected):
    status = 413
    title = "Request body too large"
    type_suffix = "body-too-large"


class UnsupportedMediaType(RequestRejected):
    status = 415
    title = "Unsupported media type"
    type_suffix = "unsupported-media-type"


class MalformedBody(RequestRejected):
    status = 400
    title = "Malformed request body"
    type_suffix = "malformed-body"


class BodyLimitExceeded(RequestRejected):
    status = 422
    title = "Request body exceeds a limit"
    type_suffix = "limit-exceeded"


class ScanBudgetExceeded(RequestRejected):
    """More free text to scan for personal data than one request may send to the NER engine
    (``pii_engine.max_scan_chars`` / ``max_scan_texts``); raised by the PII stage before any detection runs.

    Why 413 and not 422: like ``max_body_bytes`` it refuses the amount of work a request asks for, not a shape
    the body may not have (the 422 limits); the client can send the same content in smaller requests. ``detail``
    holds the counts and the limit, never the text.
    """

    status = 413
    title = "Too much text to scan for personal data"
    type_suffix = "scan-budget-exceeded"


class ClientDisconnected(MLGuardError):
    """The client disconnected before the whole body arrived; nothing is sent back."""


class StageError(MLGuardError):
    """A pipeline stage failed. ``stage`` names it; the policy's failure_mode decides the outcome."""

    def __init__(self, message: str, *, stage: str) -> None:
        self.stage = stage
        super().__init__(message)


class PIIError(StageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, stage="pii")


class AuditError(StageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, stage="audit")


class AuditUnavailable(AuditError):
    """The audit store cannot take the record now (down, or the async queue is full)."""


class ExplainError(StageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, stage="explain")


class FairnessError(StageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, stage="fairness")


class KeyringError(MLGuardError):
    """The keyring is missing, unreadable, readable by others, or lacks a requested key."""


class RetentionRefused(MLGuardError):
    """A shred or purge would destroy records a policy obliges us to keep; the message names the policy."""


class IntegrityError(MLGuardError):
    """A log failed verification at ``seq``; ``expected`` and ``calculated`` are the hashes that differ."""

    def __init__(self, message: str, *, seq: int | None = None, expected: str | None = None,
                 calculated: str | None = None) -> None:
        self.seq = seq
        self.expected = expected
        self.calculated = calculated
        super().__init__(message)
