"""One reading of a pydantic ValidationError for configs and policy files: every error with its field (up to
:data:`MAX_LISTED`), and for an unknown key the nearest known one.

Why: every config model forbids unknown keys (a misspelt key must not be silently ignored), and pydantic's own
message for that, "Extra inputs are not permitted", says neither that the key is unknown nor what was meant. A
new user who wrote ``witnes:`` under ``audit:`` got that message with the field path and nothing else, while an
unknown PII entity already came with a suggestion. Every error is listed, not the first with "(and N more)": a
user fixed one, ran the check again and only then met the next.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mlguard.errors import ErrorLines

MAX_LISTED = 20
"""Errors listed one per line; past these, "and N more": a file that is wrong everywhere (a policy given as the
config) should not print pages."""


def first_error(exc: ValidationError, model: type[BaseModel]) -> tuple[str, str | None]:
    """(message, dotted field path or None of the first error): the message lists every error.

    With one error the message is its text; with several it is an :class:`~mlguard.errors.ErrorLines`, which a
    ConfigError writes as one ``file:field: message`` line per error (the first :data:`MAX_LISTED`, then "and N
    more"). The field is the first error's, for code that reads ``ConfigError.field``.

    Unknown keys are reported before any other error: a misspelt key usually also leaves a required one missing
    ("citation:" for "cite:"), and the typo is the one to fix."""
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")  # stable: pydantic's order
    entries = [_entry(err, model) for err in errors]
    field = entries[0][0]
    if len(entries) == 1:
        return entries[0][1], field
    listed = entries[:MAX_LISTED]
    return ErrorLines(listed, omitted=len(entries) - len(listed)), field


def _entry(err: ErrorDetails, model: type[BaseModel]) -> tuple[str | None, str]:
    """(dotted field or None, message) of one pydantic error; a message of several lines (a nested model's own
    list, raised by a validator) has its further lines indented under the first."""
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc) or None
    msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
    if err.get("type") == "extra_forbidden" and loc:
        msg = _unknown_key(model, loc)
    return field, msg.replace("\n", "\n  ")


def _unknown_key(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    known = _fields_at(model, loc[:-1])
    if not known:
        return "unknown key"
    near = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
    if near:
        return f"unknown key (did you mean {near[0]!r}?)"
    return "unknown key; the keys allowed here: " + ", ".join(sorted(known))


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names (and aliases) of the model found at ``path`` below ``model``; [] when it is not a model
    (a free-form mapping, a union that cannot be told apart)."""
    current: Any = model
    for step in path:
        current = _model_in(current)
        if current is None:
            return []
        if isinstance(step, int):
            continue  # a list index: the element type was unwrapped by _model_in
        info = current.model_fields.get(step) or next(
            (f for f in current.model_fields.values() if f.alias == step), None)
        if info is None:
            return []
        current = info.annotation
    found = _model_in(current)
    if found is None:
        return []
    names = list(found.model_fields)
    names += [f.alias for f in found.model_fields.values() if f.alias]
    return names


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The one pydantic model an annotation holds: itself, or inside Optional, list[...], dict[str, ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [m for m in (_model_in(a) for a in args if a is not type(None)) if m is not None]
        return models[0] if len(models) == 1 else None
    if origin in (list, tuple, set, frozenset) and args:
        return _model_in(args[0])
    if origin is dict and len(args) == 2:
        return _model_in(args[1])
    if origin is typing.Annotated and args:
        return _model_in(args[0])
    return None


def compiled_regex(v: str) -> str:
    """``v`` when it compiles as a Python regular expression; else a ValueError saying what and where (policy
    files' recognizers and the config's own share it)."""
    try:
        re.compile(v)
    except re.error as exc:
        raise ValueError(f"regex does not compile: {exc.msg} at position {exc.pos}") from None
    return v
