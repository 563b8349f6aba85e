"""Route coverage: does every guarded route (template, methods) match a route the wrapped app serves?

Why: the guard only inspects the routes named in its config, so a guarded route that matches nothing the app
serves guards nothing, and nothing says so. A developer declared ``/score`` while ``APIRouter(prefix="/v1")``
served ``/v1/score``, and declared ``/applicants/{aid}`` without ``methods`` (default ``[POST]``) for a
``@router.put`` route: both handlers got ``{"name": ...}`` in clear and start-up said only "guard ready".

What is compared: the app's route table when it exposes one. Starlette and FastAPI: the ``starlette.routing.Router``
found by walking down ``.router`` / ``.middleware_stack`` / ``.app`` (an app wrapped whole, or the inner layer
``app.add_middleware(GuardMiddleware, ...)`` gives), with ``Mount`` and ``Host`` followed and FastAPI's
``include_router`` prefixes added (older FastAPI copies the prefixed routes; newer keeps an included-router entry
with ``original_router`` and ``include_context.prefix``). A mounted app with no route table (a raw ASGI callable)
is taken to serve anything under its prefix, with any method, so it never causes a warning. Other frameworks
(Litestar) are not read: a DEBUG line says so.

Paths compare as templates, segment by segment, with Starlette's convertors (``{id:int}``; the table of
:mod:`mlguard.routes`): ``/applicants/{id}`` and ``/applicants/{aid:int}`` overlap, ``/items/{id:int}`` and
``/items/{id:uuid}`` do not. Trailing slashes are ignored, as the guard ignores them.

What it does with a miss: one WARNING per guarded route, naming the declared methods and template and the
nearest route the app serves. Never an error: apps can route dynamically (a catch-all endpoint that dispatches
itself, routes added later), and a false alarm must not stop a service. Only templates and methods are logged:
this runs on configuration and the app's route table, never on a request.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mlguard.routes import _CONVERTERS, _PARAM, CompiledRoute  # the convertor table the guard matches with

log = logging.getLogger("mlguard.coverage")

_WITNESS = {"uuid": "00000000-0000-0000-0000-000000000000"}
"""A value each convertor accepts, to test one template's segment against another's. "1" is accepted by str,
path, int and float (and by an unknown convertor, read as str); uuid needs its own."""

_WALK_ATTRS = ("router", "middleware_stack", "app")
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class AppRoute:
    """A route the app serves: its full template (relative to the app the guard wraps) and its methods (None:
    any method, as a Starlette class endpoint or a mounted ASGI app)."""

    template: str
    methods: frozenset[str] | None

    def describe(self) -> str:
        return f"{_methods_text(self.methods)} {self.template}"


def check_route_coverage(app: object, routes: Iterable[CompiledRoute]) -> list[str]:
    """Log a WARNING per guarded route that matches no route of ``app`` (path or method) and return the
    messages; nothing when ``app`` exposes no route table we can read (a DEBUG line says why)."""
    served = app_routes(app)
    if served is None:
        return []
    messages = [m for m in (uncovered_message(r.path, r.methods, served) for r in routes) if m is not None]
    for message in messages:
        log.warning(message)
    if not messages:
        log.debug("route coverage: every guarded route matches an app route")
    return messages


def app_routes(app: object) -> list[AppRoute] | None:
    """The routes ``app`` serves, or None when it exposes no route table mlguard can read."""
    router = find_router(app)
    if router is None:
        if hasattr(app, "route_handler_method_map"):
            log.debug("route coverage not checked: Litestar's route table is not read")
        else:
            log.debug("route coverage not checked: the app exposes no Starlette route table",
                      extra={"kind": type(app).__name__})
        return None
    return list(_walk(getattr(router, "routes", []), "", 0))


def find_router(app: object) -> object | None:
    """The ``starlette.routing.Router`` under ``app``: the app itself, or reached through ``.router`` (Starlette,
    FastAPI), ``.middleware_stack`` or ``.app`` (middleware layers, this guard included)."""
    try:
        from starlette.routing import Router
    except ImportError:  # pragma: no cover - starlette is a dependency
        return None
    seen: set[int] = set()
    node: object | None = app
    for _ in range(_MAX_DEPTH):
        if node is None or id(node) in seen:
            return None
        if isinstance(node, Router):
            return node
        seen.add(id(node))
        node = next((n for n in (getattr(node, a, None) for a in _WALK_ATTRS) if n is not None), None)
    return None


def _walk(routes: Iterable[object], prefix: str, depth: int) -> Iterator[AppRoute]:
    from starlette.routing import Host, Mount, WebSocketRoute

    if depth > _MAX_DEPTH:
        return
    for route in routes:
        if isinstance(route, WebSocketRoute):
            continue
        if isinstance(route, Mount | Host):
            inner_prefix = prefix + route.path if isinstance(route, Mount) else prefix
            router = find_router(route.app)
            if router is None:  # an app we cannot look into: anything under the prefix, any method
                yield AppRoute(inner_prefix or "/", None)
                yield AppRoute(inner_prefix + "/{path:path}", None)
            else:
                yield from _walk(getattr(router, "routes", []), inner_prefix, depth + 1)
            continue
        included = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        if included is not None and context is not None:  # FastAPI's include_router entry
            yield from _walk(getattr(included, "routes", []), prefix + str(getattr(context, "prefix", "")),
                             depth + 1)
            continue
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            log.debug("route coverage: a route of an unknown kind is skipped", extra={"kind": type(route).__name__})
            continue
        methods = getattr(route, "methods", None)
        yield AppRoute(prefix + path, frozenset(str(m).upper() for m in methods) if methods else None)


def uncovered_message(template: str, methods: Iterable[str], served: list[AppRoute]) -> str | None:
    """The warning for one guarded route, or None when the app serves every declared method on its path."""
    declared = sorted(methods)
    same_path = [r for r in served if templates_overlap(template, r.template)]
    missing = [m for m in declared if not any(r.methods is None or m in r.methods for r in same_path)]
    if not missing:
        return None
    if same_path:
        offered = " and ".join(sorted({r.describe() for r in same_path}))
        return (f"guarded route matches no app route for {','.join(missing)}: declared {','.join(declared)} "
                f"{template}; the app serves {offered} (set the route's methods; they default to [POST])")
    head = f"guarded route matches no app route: declared {','.join(declared)} {template}"
    nearest = _nearest(template, declared, served)
    if nearest is None:
        return f"{head}; the app serves no HTTP route"
    hint = (" (a router prefix or Mount path belongs in the guarded path)"
            if _ends_with(nearest.template, template) else "")
    return f"{head}; the app serves {nearest.describe()}{hint}"


def templates_overlap(a: str, b: str) -> bool:
    """Whether some request path matches both templates (``{name}``/``{name:convertor}`` parameters).

    Segment by segment when neither has a ``path`` parameter (which spans segments); otherwise, by testing a
    path built from each template (every parameter given a value its convertor accepts) against the other."""
    sa, sb = _segments(a), _segments(b)
    if any("path" in _convertors(s) for s in (*sa, *sb)):
        return bool(re.fullmatch(_regex(b), _witness(a)) or re.fullmatch(_regex(a), _witness(b)))
    if len(sa) != len(sb):
        return False
    return all(_segments_overlap(x, y) for x, y in zip(sa, sb, strict=True))


def _segments(template: str) -> list[str]:
    return (template.rstrip("/") or "/").split("/")


def _convertors(segment: str) -> list[str]:
    return [m.group(2) or "str" for m in _PARAM.finditer(segment)]


def _regex(template: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _PARAM.finditer(template):
        out += [re.escape(template[pos:m.start()]), f"(?:{_CONVERTERS.get(m.group(2), '[^/]+')})"]
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


def _witness(template: str) -> str:
    return _PARAM.sub(lambda m: _WITNESS.get(m.group(2) or "str", "1"), template)


def _segments_overlap(x: str, y: str) -> bool:
    if "{" not in x or "{" not in y:  # a literal: is it a value the other segment accepts?
        return bool(re.fullmatch(_regex(y), x)) if "{" not in x else bool(re.fullmatch(_regex(x), y))
    return bool(re.fullmatch(_regex(y), _witness(x)) or re.fullmatch(_regex(x), _witness(y)))


def _shape(template: str) -> str:
    """The template with parameter names dropped (``/a/{}/b``), for comparing spellings."""
    return _PARAM.sub("{}", template.rstrip("/") or "/")


def _ends_with(longer: str, shorter: str) -> bool:
    a, b = _shape(longer), _shape(shorter)
    return len(a) > len(b) and a.endswith(b) and b.startswith("/")


def _nearest(template: str, declared: list[str], served: list[AppRoute]) -> AppRoute | None:
    """The app route a reader most likely meant: one the declared template is a suffix of (a prefix forgotten)
    first, then the closest spelling; one serving a declared method before one that does not."""

    def score(r: AppRoute) -> float:
        similar = difflib.SequenceMatcher(None, _shape(template), _shape(r.template)).ratio()
        method = 0.5 if r.methods is None or any(m in r.methods for m in declared) else 0.0
        return (2.0 if _ends_with(r.template, template) else 0.0) + similar + method

    return max(served, key=score, default=None)


def _methods_text(methods: frozenset[str] | None) -> str:
    if methods is None:
        return "any method on"
    shown = methods - {"HEAD"} if "GET" in methods else methods  # Starlette adds HEAD to every GET route
    return ",".join(sorted(shown))
