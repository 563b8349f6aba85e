"""Log lines that never carry an input value: a JSON formatter (one object per line) and a text one, same rules.

Why a formatter and not discipline alone: mlguard's own calls pass only value-free fields, but a log line is also
made of things nobody reviewed: a library's message arguments, an exception's text (``KeyError('ada@x.org')``),
an ``extra`` field someone adds later, the server's access line with its query string. The formatter is the last
place where all of that passes, so it enforces the rules:

* ``extra`` fields are emitted only when their name is in :data:`SAFE_FIELDS` (known to hold identifiers,
  counts, classes, statuses, never an input value); any other ``extra`` is dropped;
* an exception is emitted as its class and its frames (file, line, function); its text only when it is one of
  mlguard's own errors (:class:`mlguard.errors.MLGuardError`, whose messages are kept free of input values);
* the message is interpolated (``msg % args``) for mlguard's and uvicorn's lifecycle loggers, whose arguments are
  known; any other logger's line keeps its template and loses its arguments;
* uvicorn's access line becomes ``method``, ``path`` (query string removed) and ``status``: no client address,
  no query string; a path that matches a guarded route with parameters (``/applicants/{id}/score``) is logged
  as that template, since the parameter is an input value (:func:`mask_route_paths`, called by every Guard).
  Paths of routes the guard does not guard are logged as they are, except a segment that looks like an e-mail
  address or a long number (:func:`_mask_path`).

``configure_logging`` installs it on the root logger (CLI commands, tests, apps); ``uvicorn_log_config`` gives the
same formatter to uvicorn (``mlguard serve --log-format json|text``), in every worker process.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["json", "text"]

SAFE_FIELDS: frozenset[str] = frozenset({
    # identifiers the guard makes, and where in the pipeline
    "audit_id", "route", "stage", "phase", "method", "kind", "action",
    # classes, statuses and counts
    "error", "status", "count", "refused", "records", "jobs", "attempt", "attempts", "reset_window",
    # start-up identity (config and engines, no request data)
    "routes", "policies", "stages", "output", "predicted_ms", "deferred",
    "pii_model", "pii_model_version", "pii_model_sha256", "pii_components",
    # the fairness alert: route, statuses and aggregate metrics per group category, the same document the
    # webhook receives (no single decision, no input value)
    "fairness_alert",
})
"""``extra`` names a log line may carry. Adding one is a review: it must never hold an input value."""

_INTERPOLATED = ("mlguard", "uvicorn")
"""Loggers whose message arguments are known to be value-free: mlguard passes none that are input values;
uvicorn's carry addresses, pids and signal names, and request paths (websocket lines), whose query string the
formatter cuts off as it does in the access line."""

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _interpolate(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _INTERPOLATED)


def _message(record: logging.LogRecord) -> str:
    if not record.args or not _interpolate(record.name):
        return str(record.msg)
    args = record.args
    if record.name.startswith("uvicorn") and isinstance(args, tuple):
        args = tuple(_mask_path(a) if isinstance(a, str) else a for a in args)
    try:
        return str(record.msg) % args
    except Exception:  # a bad format string must not lose the line
        return str(record.msg)


_TEMPLATES: dict[str, re.Pattern[str]] = {}
_TEMPLATES_LOCK = threading.Lock()


def mask_route_paths(routes: Iterable[tuple[str, re.Pattern[str]]]) -> None:
    """Log a request path that matches one of these (template, compiled pattern) pairs as its template.

    Why process-wide: uvicorn builds its formatters from a dictConfig before the app (and its guard) exist,
    and each worker process builds its own guard; the guard registers its parameterised routes here when it is
    built, and every mlguard formatter in the process then masks them. Only templates with a ``{parameter}``
    are kept: a fixed path holds no input value."""
    with _TEMPLATES_LOCK:
        for template, pattern in routes:
            if "{" in template:
                # any prefix before it: the server logs the full path, root_path or a Mount's prefix included
                _TEMPLATES[template] = re.compile("^(?:/.*?)?" + pattern.pattern.removeprefix("^"))


_PARAMETER = re.compile(r"\{[^}]*\}")
_CUT = re.compile("[?#]|%3f|%23", re.IGNORECASE)
_PERSONAL = re.compile("@|%40|[0-9]{7}", re.IGNORECASE)
_REDACTED_SEGMENT = "{redacted}"


def _mask_path(path: str) -> str:
    """``path`` cut before its query string or fragment, then the guarded route template it matches, or else
    the path with each segment that holds an ``@`` (``%40``) or a run of 7 or more digits as ``{redacted}``.

    Why the encoded ``?`` and ``#`` (``%3F``, ``%23``, either case): uvicorn logs the percent-encoded decoded
    path, so a client's ``/v1/score%3Femail=...`` (or a raw ``#``) was logged with its would-be query string,
    value and all, after a cut at a literal ``?`` only. Why unguarded paths' segments: a security review put
    an e-mail address in a path segment (``/v1/zq@quackmail.eu/...``) of a route the guard does not guard (no
    template to log instead), and it was logged as is; an address or a long number (a phone, account or
    national id number) in a path is far more likely personal data than anything a reader of the log needs.
    Other segments stay, so the line still says which endpoint was asked. Guarded routes with parameters are
    logged as their template already (:func:`mask_route_paths`)."""
    cut = _CUT.search(path)
    if cut is not None:
        path = path[:cut.start()]
    best: tuple[int, str] | None = None
    for template, pattern in list(_TEMPLATES.items()):
        if pattern.match(path):
            # the most specific template wins (most literal characters): an admin prefix's catch-all
            # ("/mlguard/{unknown}") must not hide "/mlguard/audit/records/{audit_id}" registered after it
            literal = len(_PARAMETER.sub("", template))
            if best is None or literal > best[0]:
                best = (literal, template)
    if best is not None:
        return best[1]
    if _PERSONAL.search(path) is None:
        return path
    return "/".join(_REDACTED_SEGMENT if _PERSONAL.search(seg) else seg for seg in path.split("/"))


def _access(record: logging.LogRecord, doc: dict[str, Any]) -> bool:
    """uvicorn.access: ``'%s - "%s %s HTTP/%s" %d'`` with (client, method, path?query, version, status)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return False
    _client, method, full_path, version, status = args
    doc["message"] = "request"
    doc["method"] = str(method)
    doc["path"] = _mask_path(str(full_path))
    doc["http_version"] = str(version)
    doc["status"] = status
    return True


def _exception(exc_info: Any) -> dict[str, Any]:
    from mlguard.errors import MLGuardError

    exc_type, exc, tb = exc_info
    out: dict[str, Any] = {"exc_type": exc_type.__name__ if exc_type is not None else None}
    if isinstance(exc, MLGuardError):
        out["exc_message"] = str(exc)
    if tb is not None:
        out["exc_frames"] = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(tb)]
    return out


def safe_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of one line, in order: ts, level, logger, message, then the allowed extras and the error."""
    doc: dict[str, Any] = {"ts": _utc(record.created), "level": record.levelname, "logger": record.name}
    if not _access(record, doc):
        doc["message"] = _message(record).rstrip()
    for key, value in record.__dict__.items():
        if key in SAFE_FIELDS and key not in _RESERVED and key not in doc:
            doc[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        doc.update(_exception(record.exc_info))
    return doc


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ms), ``level``, ``logger``, ``message``, then allowed fields."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(safe_fields(record), default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: message key=value ...``: the JSON line's fields, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        doc = safe_fields(record)
        head = f"{doc.pop('ts')} {doc.pop('level')} {doc.pop('logger')}: {doc.pop('message')}"
        frames = doc.pop("exc_frames", None)
        rest = " ".join(f"{k}={orjson.dumps(v, default=str).decode() if not isinstance(v, str) else v}"
                        for k, v in doc.items())
        text = f"{head} {rest}" if rest else head
        if frames:
            text += "".join(f"\n    {f}" for f in frames)
        return text


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be json or text, got {fmt!r}")


_HANDLER_MARK = "_mlguard_handler"


def configure_logging(fmt: LogFormat = "json", level: int | str = "INFO", *, stream: IO[str] | None = None,
                      logger: str = "") -> logging.Handler:
    """Send ``logger``'s records (the root logger by default: everything) to ``stream`` (stderr) through the
    formatter of ``fmt``. Calling it again replaces the handler it installed before, not anyone else's."""
    target = logging.getLogger(logger or None)
    for h in list(target.handlers):
        if getattr(h, _HANDLER_MARK, False):
            target.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    setattr(handler, _HANDLER_MARK, True)
    target.addHandler(handler)
    target.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


_WORKER_DIED = re.compile(r"Child process \[\d+\] died")


class WorkerDeathFilter(logging.Filter):
    """On ``uvicorn.error``: a worker process that died is a WARNING, and the configured level still holds.

    Why: uvicorn's supervisor logs "Child process [pid] died" at INFO (it restarts the worker), so an alert on
    WARNING and above never sees a worker killed by the OOM killer or a segfault, and ``--log-level warning``
    drops the line altogether. The logger is therefore opened down to INFO and this filter, attached to it,
    promotes that one message and drops every other record below ``level``, as the logger's level did.
    """

    def __init__(self, level: str | int = "INFO") -> None:
        super().__init__()
        self.level = logging.getLevelName(level.upper()) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and _WORKER_DIED.fullmatch(str(record.msg)):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return record.levelno >= self.level


def uvicorn_log_config(fmt: LogFormat = "json", level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``uvicorn.run(log_config=...)``: uvicorn's loggers, mlguard's and the
    root logger all write through the formatter of ``fmt`` to stderr. uvicorn applies it in every worker.

    ``disable_existing_loggers`` is off: mlguard's module loggers exist before uvicorn configures logging.
    mlguard's level is left to ``log_level`` in mlguard.yaml (the Guard sets it when it is built).
    """
    cls = "mlguard.logs.JsonFormatter" if fmt == "json" else "mlguard.logs.TextFormatter"
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, got {fmt!r}")
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mlguard_safe": {"()": cls}},
        "filters": {"mlguard_worker_death": {"()": "mlguard.logs.WorkerDeathFilter", "level": lvl}},
        "handlers": {"mlguard_stderr": {"class": "logging.StreamHandler", "formatter": "mlguard_safe",
                                        "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["mlguard_stderr"], "level": lvl, "propagate": False},
            # down to INFO at most, so a worker's death (INFO in uvicorn) reaches the filter, which promotes it
            "uvicorn.error": {"level": min(logging.getLevelName(lvl), logging.INFO),
                              "filters": ["mlguard_worker_death"]},
            "uvicorn.access": {"handlers": ["mlguard_stderr"], "level": lvl, "propagate": False},
            "mlguard": {"handlers": ["mlguard_stderr"], "propagate": False},
        },
        "root": {"handlers": ["mlguard_stderr"], "level": "WARNING"},
    }


__all__ = ["SAFE_FIELDS", "JsonFormatter", "LogFormat", "TextFormatter", "WorkerDeathFilter", "configure_logging",
           "formatter",
           "mask_route_paths", "safe_fields", "uvicorn_log_config"]
