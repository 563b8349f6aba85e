"""Route matching, compiled once: which requests are guarded, and by which route config and policy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlguard.config import RouteConfig
from mlguard.jsonpath import JSONPath, compile_path

if TYPE_CHECKING:
    from mlguard.policy import EffectivePolicy

_PARAM = re.compile(r"\{([A-Za-z_]\w*)\}")


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


def compile_route(index: int, route: RouteConfig, policy: EffectivePolicy) -> CompiledRoute:
    """Compile one route; JSONPath errors name the route's field."""
    where = f"routes.{index}"
    regex = "^" + _PARAM.sub(r"(?P<\1>[^/]+)", re.escape(route.path).replace(r"\{", "{").replace(r"\}", "}"))
    model = route.model
    return CompiledRoute(
        index=index,
        config=route,
        pattern=re.compile(regex + "$"),
        methods=frozenset(route.methods),
        policy=policy,
        subject=compile_path(route.subject, field=f"{where}.subject") if route.subject else None,
        protected={k: compile_path(v, field=f"{where}.protected.{k}") for k, v in route.protected.items()},
        pii_rules=[(compile_path(k, field=f"{where}.pii"), v) for k, v in route.pii.items()],
        output=compile_path(model.output, field=f"{where}.model.output") if model and model.output else None,
        favorable=(compile_path(model.favorable, field=f"{where}.model.favorable")
                   if model and model.favorable else None),
        features=(compile_path(model.features, field=f"{where}.model.features")
                  if model and model.features else None),
    )


class RouteTable:
    """Finds the guarded route for (method, path). Exact paths are a dict lookup; patterns are tried after."""

    def __init__(self, routes: list[CompiledRoute]) -> None:
        self.routes = routes
        self._exact = {r.config.path: r for r in routes if "{" not in r.config.path}
        self._patterns = [r for r in routes if "{" in r.config.path]

    def match(self, method: str, path: str) -> CompiledRoute | None:
        route = self._exact.get(path)
        if route is None:
            for candidate in self._patterns:
                if candidate.pattern.match(path):
                    route = candidate
                    break
        if route is None or method not in route.methods:
            return None
        return route
