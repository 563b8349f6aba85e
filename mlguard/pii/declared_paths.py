"""Declared PII paths that do not fit the requests: said once, at the first request that shows it.

Why: a route's ``pii`` rules address fields by JSONPath, and a path that matches nothing redacts nothing, in
silence. A developer declared ``$.a.contacts[*].email`` for a body whose ``contacts`` was one object, not a list
of them, and ``$.a.phones`` where the client sent ``Phones``: with ``scan_undeclared: false`` both values reached
the app in clear, and nothing said why. Field types of a schema are fixed, so one request that has the path's
parent but in another shape shows the mistake; the WARNING names the route, the declared path and what the
request holds there as a JSON type (``an object, not an array``), never a value, and a member name only when it
is the declared one in other letter case (which says nothing the config does not).

Cost: a route's rules are checked only until each has matched once (a field that is present), has been warned
about, or has been absent from :data:`ABSENT_CHECKS` requests (an optional field): the usual route pays one set
test per request after its first.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from mlguard.jsonpath import JSONPath, Step

log = logging.getLogger("mlguard.pii.declared")

ABSENT_CHECKS = 1000
"""Requests a declared path may be absent from (no node of the wrong shape either) before it is no longer checked."""


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return "an array"
    if isinstance(node, str):
        return "a string"
    if isinstance(node, bool):
        return "a boolean"
    if node is None:
        return "null"
    return "a number"


def _prefix(path: JSONPath, upto: int) -> str:
    out = "$"
    for step in path.steps[:upto]:
        if step is None:
            out += "[*]"
        elif isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if step.isidentifier() else f"['{step}']"
    return out


def misfit(path: JSONPath, doc: Any) -> str | None:
    """Why ``path`` finds nothing in ``doc`` when the reason is a shape (or the letter case of a member name),
    as text free of values; None when the path's fields are simply absent (or it matches)."""
    return _misfit(path, doc, 0)


def _misfit(path: JSONPath, node: Any, i: int) -> str | None:
    steps: tuple[Step, ...] = path.steps
    if i == len(steps):
        return None
    step = steps[i]
    where = _prefix(path, i)
    if step is None:
        if isinstance(node, list):
            for item in node:
                if (why := _misfit(path, item, i + 1)) is not None:
                    return why
            return None
        if isinstance(node, dict):
            # [*] of an object takes its values: the usual mistake is an object where an array of them was meant
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            if isinstance(nxt, str) and nxt in node:
                return (f"{where} is an object, not an array (its member {nxt!r} is one level above where "
                        f"{path.text} looks)")
            for value in node.values():
                if (why := _misfit(path, value, i + 1)) is not None:
                    return why
            return None
        return f"{where} is {_kind(node)}, not an array or object"
    if isinstance(step, int):
        if isinstance(node, list):
            return _misfit(path, node[step], i + 1) if -len(node) <= step < len(node) else None
        return f"{where} is {_kind(node)}, not an array" if node is not None else None
    if isinstance(node, dict):
        if step in node:
            return _misfit(path, node[step], i + 1)
        folded = step.casefold()
        if any(isinstance(k, str) and k != step and k.casefold() == folded for k in node):
            return f"{where} has the member {step!r} in other letter case (member names are case-sensitive)"
        return None
    if isinstance(node, list) and node:
        return f"{where} is an array, not an object (a path into its items takes [*])"
    return f"{where} is {_kind(node)}, not an object" if node is not None and not isinstance(node, list) else None


class DeclaredPathCheck:
    """Per route: which declared paths are still to be checked, and the check of one request against them."""

    def __init__(self, routes: dict[int, list[tuple[JSONPath, str]]]) -> None:
        self._pending: dict[int, dict[int, int]] = {i: dict.fromkeys(range(len(rules)), 0)
                                                    for i, rules in routes.items() if rules}
        self._rules = routes
        self._lock = threading.Lock()

    def check(self, index: int, template: str, doc: Any) -> None:
        """Look at ``doc`` (the request as the client sent it) for the route's paths still pending."""
        pending = self._pending.get(index)
        if not pending:
            return
        rules = self._rules[index]
        with self._lock:
            for n in list(pending):
                path = rules[n][0]
                if next(path.find(doc), None) is not None:
                    del pending[n]
                    continue
                why = misfit(path, doc)
                if why is not None:
                    del pending[n]
                    log.warning("route %s: the declared PII path %s matched nothing in a request: %s; what it "
                                "should redact there is not redacted by that rule (fix the path in the route's "
                                "pii rules)", template, path.text, why, extra={"route": template})
                    continue
                pending[n] += 1
                if pending[n] >= ABSENT_CHECKS:
                    del pending[n]
