"""Route matching, compiled once: which requests are guarded, and by which route config and policy."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlguard.config import RouteConfig
from mlguard.config.explain import compile_decision_path
from mlguard.errors import ConfigError
from mlguard.jsonpath import JSONPath, compile_path
from mlguard.policy.model import KNOWN_ENTITIES

if TYPE_CHECKING:
    from mlguard.policy import EffectivePolicy

_PARAM = re.compile(r"\{([A-Za-z_]\w*)(?::(\w+))?\}")
_CONVERTERS = {  # Starlette's path convertors, as FastAPI routes are written: {item_id:int}, {file:path}
    None: "[^/]+", "str": "[^/]+", "path": ".*", "int": "[0-9]+", "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}


def route_regex(path: str, *, field: str) -> str:
    """The pattern of a route path template: ``{name}`` or ``{name:convertor}`` (str, path, int, float, uuid, as
    Starlette and FastAPI write them) per parameter, and an optional trailing slash.

    Why the convertors: ``/items/{item_id:int}``, copied from a FastAPI app, was accepted but matched nothing
    (``{name}`` only was understood), so the route went unguarded and its body reached the app in clear. Why the
    slash: an app route ``/predict/`` guarded as ``/predict`` answered the client's ``/predict`` with a redirect
    and then took the followed request to ``/predict/`` unguarded."""
    out: list[str] = []
    pos = 0
    for m in _PARAM.finditer(path):
        convertor = m.group(2)
        if convertor not in _CONVERTERS:
            raise ConfigError(f"unknown path convertor {convertor!r} in {path!r}; use one of "
                              f"{', '.join(c for c in _CONVERTERS if c)}", field=field)
        out += [re.escape(path[pos:m.start()]), f"(?P<{m.group(1)}>{_CONVERTERS[convertor]})"]
        pos = m.end()
    rest = path[pos:]
    if "{" in rest or "}" in rest:
        raise ConfigError(f"malformed path parameter in {path!r}: write {{name}} or {{name:int}}", field=field)
    out.append(re.escape(rest.rstrip("/")))
    return "^" + "".join(out) + "/?$"


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app the guard wraps: ``path`` without the ``root_path`` it is mounted at.

    Why: under ``uvicorn --root-path /api``, a Starlette ``Mount("/v1", ...)`` or FastAPI's ``root_path``, the
    scope's ``path`` is the full one (ASGI: the app strips ``root_path`` to route, as Starlette does), so
    guarded routes compared against it never matched and their bodies reached the app in clear."""
    path = str(scope["path"])
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path


def _normal(path: str) -> str:
    return path.rstrip("/") or "/"

PII_KEYWORDS = ("scan", "keep")
"""The route ``pii`` values that are not entities (``mlguard.pii.redactor.SCAN`` and ``KEEP``)."""

_ENTITY_ALIASES = {
    "NAME": "PERSON", "FULL_NAME": "PERSON", "FIRST_NAME": "PERSON", "LAST_NAME": "PERSON", "SSN": "US_SSN",
    "EMAIL": "EMAIL_ADDRESS", "PHONE": "PHONE_NUMBER", "ADDRESS": "STREET_ADDRESS", "DOB": "DATE_OF_BIRTH",
    "BIRTH_DATE": "DATE_OF_BIRTH", "BIRTHDATE": "DATE_OF_BIRTH", "ZIP": "ZIP_CODE", "POSTCODE": "ZIP_CODE",
    "POSTAL_CODE": "ZIP_CODE", "IP": "IP_ADDRESS", "IBAN": "IBAN_CODE", "CARD": "CREDIT_CARD",
    "CARD_NUMBER": "CREDIT_CARD", "MRN": "MEDICAL_RECORD_NUMBER", "VIN": "VEHICLE_ID", "PASSPORT": "US_PASSPORT",
    "DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
"""Names people write for a known entity, only to suggest the right one in the error."""


@dataclass(slots=True)
class CompiledRoute:
    """A route config with its path pattern and JSONPaths compiled, and its effective policy resolved."""

    index: int
    config: RouteConfig
    pattern: re.Pattern[str]
    methods: frozenset[str]
    policy: EffectivePolicy
    subject: JSONPath | None
    protected: dict[str, JSONPath]
    pii_rules: list[tuple[JSONPath, str]]
    output: JSONPath | None
    favorable: JSONPath | None
    features: JSONPath | None
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.config.path


def compile_route(index: int, route: RouteConfig, policy: EffectivePolicy, *,
                  custom_entities: Iterable[str] = ()) -> CompiledRoute:
    """Compile one route; JSONPath errors, model paths that could match several values (one decision per
    request: :func:`mlguard.config.explain.compile_decision_path`) and unknown PII entities name the route's field.

    ``custom_entities``: the entities of the deployment's own recognizers (``pii_engine.custom_recognizers``);
    the policy's entities and custom recognizers are known from ``policy``.
    """
    where = f"routes.{index}"
    check_pii_entities(index, route, known_entities(policy, custom_entities))
    regex = route_regex(route.path, field=f"{where}.path")
    model = route.model
    return CompiledRoute(
        index=index,
        config=route,
        pattern=re.compile(regex),
        methods=frozenset(route.methods),
        policy=policy,
        # a batch's subjects ($[*].applicant.id) would leave every member but the first unerasable
        subject=compile_decision_path(route.subject, field=f"{where}.subject") if route.subject else None,
        protected={k: compile_path(v, field=f"{where}.protected.{k}") for k, v in route.protected.items()},
        pii_rules=[(compile_path(k, field=f"{where}.pii"), v) for k, v in route.pii.items()],
        # One decision per request (ONE_DECISION): a path that could match a batch's items is refused here.
        output=(compile_decision_path(model.output, field=f"{where}.model.output")
                if model and model.output else None),
        favorable=(compile_decision_path(model.favorable, field=f"{where}.model.favorable")
                   if model and model.favorable else None),
        features=(compile_decision_path(model.features, field=f"{where}.model.features")
                  if model and model.features else None),
    )


def known_entities(policy: EffectivePolicy, custom_entities: Iterable[str] = ()) -> frozenset[str]:
    """The entity names a route's ``pii`` map may give a field: those the PII stage knows (``KNOWN_ENTITIES``:
    presidio's and mlguard's recognizers), those the policy has a rule for, and those of custom recognizers
    (the policy's and the deployment's). Read from data only: no PII engine is built."""
    return frozenset({*KNOWN_ENTITIES, *policy.pii.entities, *(r.entity for r in policy.pii.custom_recognizers),
                      *custom_entities})


def check_pii_entities(index: int, route: RouteConfig, known: frozenset[str]) -> None:
    """Refuse a route ``pii`` value that is neither ``scan``, ``keep`` nor a known entity.

    Why: a declared field is replaced by its entity's operator with no detection, so a misspelt entity (``NAME``)
    would silently get the policy's default operator instead of the one the policy sets for ``PERSON``.
    """
    for path, value in route.pii.items():
        if value in PII_KEYWORDS or value in known:
            continue
        hint = _suggest(value, known)
        raise ConfigError(
            f"unknown PII entity {value!r}{f' (did you mean {hint}?)' if hint else ''}; give `scan`, `keep` or one "
            f"of {', '.join(sorted(known))}; an entity of your own needs a recognizer under "
            "pii_engine.custom_recognizers",
            field=f"routes.{index}.pii.{path}")


def _suggest(value: str, known: frozenset[str]) -> str | None:
    upper = re.sub(r"[\s\-]+", "_", value.strip()).upper()
    if value.lower() in PII_KEYWORDS:
        return value.lower()
    if upper in known:
        return upper
    alias = _ENTITY_ALIASES.get(upper)
    if alias is not None and alias in known:
        return alias
    close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


class RouteTable:
    """Finds the guarded route for a request. Exact paths are a dict lookup; patterns are tried after.

    The decision is deliberately wider than the app's own router, because the guard cannot know how loose the
    wrapped app is: a security review over real HTTP (uvicorn, h11) got bodies past the guard in clear with
    ``post`` (h11 passes the method as sent), ``X-HTTP-Method-Override: POST``, a body on a GET, and paths such
    as ``//v1/score``, ``/v1/./score``, ``/v1/score;x`` or ``/V1/SCORE``, all of which a loose raw-ASGI app (or
    a router that merges slashes or ignores case) served as the guarded route. Guarding such a request costs a
    strict app nothing (its router answers 404/405 anyway) and closes the gap for a loose one. Only the
    decision is widened: the app still receives the request as it came.
    """

    def __init__(self, routes: list[CompiledRoute]) -> None:
        self.routes = routes
        self._exact = {_normal(r.config.path): r for r in routes if "{" not in r.config.path}
        self._patterns = [r for r in routes if "{" in r.config.path]
        # the decision on a normalised path (decision_path): the same routes, compared ignoring case
        self._folded_exact = {k.casefold(): r for k, r in self._exact.items()}
        self._folded_patterns = [(r, re.compile(r.pattern.pattern, re.IGNORECASE)) for r in self._patterns]

    def match(self, method: str, path: str,
              headers: Iterable[tuple[bytes, bytes]] = ()) -> CompiledRoute | None:
        """The route guarding this request: ``path`` is the route path (:func:`route_path`), with or without a
        trailing slash; ``headers`` the scope's (method override, body framing).

        Fast path: a path with none of ``//``, ``/.``, ``;``, ``%``, an upper-case or a non-ASCII letter is
        looked up as it is, and a method listed on the route as sent is guarded, without reading a header. Only
        a request whose path names a guarded route (as sent or normalised, :func:`decision_path`) and whose
        method is not listed as sent pays for :meth:`_guards`."""
        route = self._exact.get(path if len(path) < 2 or path[-1] != "/" else _normal(path))
        if route is None:
            for candidate in self._patterns:
                if candidate.pattern.match(path):
                    route = candidate
                    break
        if route is not None and (method in route.methods or self._guards(route, method, headers)):
            return route
        if ("//" in path or "/." in path or ";" in path or "%" in path or not path.isascii()
                or path != path.lower()):
            normal = self._by_decision_path(decision_path(path))
            if normal is not None and normal is not route and (
                    method in normal.methods or self._guards(normal, method, headers)):
                return normal
        return None

    def _by_decision_path(self, path: str) -> CompiledRoute | None:
        route = self._folded_exact.get(path.casefold())
        if route is None:
            for candidate, folded in self._folded_patterns:
                if folded.match(path):
                    return candidate
        return route

    @staticmethod
    def _guards(route: CompiledRoute, method: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether a request to ``route``'s path whose method, as sent, is not one of the route's is guarded.

        * the method in any case (``post``): h11 passes it as sent, and a loose app may compare it ignoring case;
        * an override header (``X-HTTP-Method-Override``, ``X-HTTP-Method``, ``X-Method-Override``) naming a
          guarded method: some frameworks route the request by it;
        * a body (``Content-Length`` > 0 or any ``Transfer-Encoding``) on a method that carries none (anything but
          POST, PUT, PATCH, DELETE: GET, HEAD, OPTIONS ...): unusual, and a loose app may read it. Such a request
          is guarded as the route's exchange (redacted) rather than passed in clear. A PUT, PATCH or DELETE the
          route does not list stays unguarded, as configured."""
        upper = method.upper()
        if upper in route.methods:
            return True
        bodiless = upper not in _BODY_METHODS
        for key, value in headers:  # ASGI header names are lower-case
            if key in _OVERRIDE_HEADERS:
                if any(m.strip().upper() in route.methods
                       for m in value.decode("latin-1").split(",")):
                    return True
            elif bodiless and (key == b"transfer-encoding"
                               or (key == b"content-length" and value.strip().strip(b"0") != b"")):
                return True
        return False


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The methods a route may list (:class:`mlguard.config.RouteConfig`): those whose request carries a body."""

_OVERRIDE_HEADERS = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})
_ENCODED_DOT = re.compile("%2e", re.IGNORECASE)


def decision_path(path: str) -> str:
    """``path`` as a loose router might resolve it, for the guarded-or-not decision only (the app still gets
    the request unchanged): an encoded dot (``%2e``, left so by a server, or double-encoded) decoded, each
    segment's ``;parameters`` dropped, empty and ``.`` segments removed (repeated slashes collapse), ``..``
    resolved (never above the root), no trailing slash. Case is left as is: the routes are compared with it
    ignored (:class:`RouteTable`).

    Why: ``//v1/score``, ``/v1//score``, ``/v1/./score``, ``/v1/x/../score``, ``/v1/%2e/score`` and
    ``/v1/score;x`` were all served as ``/v1/score`` by a loose app (or a router that merges slashes, or
    Tomcat-style ``;`` handling) while the guard, comparing the path as sent, let their bodies through in
    clear. ``;`` is dropped before ``..`` is resolved, so ``/v1/x/..;/score`` resolves too."""
    if "%" in path:
        path = _ENCODED_DOT.sub(".", path)
    if "/." not in path and "//" not in path and ";" not in path:  # only its case differs: no segment to resolve
        return path.rstrip("/") or "/"
    out: list[str] = []
    for segment in path.split("/"):
        segment = segment.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)
