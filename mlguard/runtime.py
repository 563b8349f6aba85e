"""Guard: everything built once per process from a GuardConfig (policies, routes, stages, admin).

Why separate from the middleware: the CLI (``mlguard redact``, ``mlguard demo``) and tests need the same built
pipeline without an ASGI app around it; the middleware only adds the ASGI plumbing.
"""

from __future__ import annotations

import gc
import importlib
import logging
from pathlib import Path
from typing import Any

from mlguard.config import GuardConfig, load_config
from mlguard.errors import ConfigError
from mlguard.logs import mask_route_paths
from mlguard.oversight import Oversight
from mlguard.policy import EffectivePolicy, resolve_policies
from mlguard.routes import CompiledRoute, RouteTable, compile_route
from mlguard.stage import STAGE_ORDER, BuildContext, Stage

log = logging.getLogger("mlguard.runtime")


class Guard:
    """The built guard: config, composed policies, compiled routes and the ordered stages."""

    def __init__(self, config: str | Path | GuardConfig | dict[str, Any], *,
                 stages: list[str] | None = None, shared: dict[str, Any] | None = None) -> None:
        self.config = load_config(config)
        logging.getLogger("mlguard").setLevel(self.config.log_level)
        base_dir = self.config.base_dir
        self.policy: EffectivePolicy = resolve_policies(self.config.policies, base_dir=base_dir)
        self.retention_max = self.policy.retention_max_for(self.config.retention.max)
        routes: list[CompiledRoute] = []
        for i, route in enumerate(self.config.routes):
            policy = (resolve_policies(route.policies, base_dir=base_dir)
                      if route.policies is not None else self.policy)
            routes.append(compile_route(i, route, policy))
        self.table = RouteTable(routes)
        mask_route_paths((r.path, r.pattern) for r in routes)  # a path parameter is an input: never logged
        self.oversight = Oversight(routes)
        self._closed = False
        ctx = BuildContext(config=self.config, policy=self.policy, routes=routes, shared=shared or {})
        ctx.shared.setdefault("guard", self)
        self.context = ctx
        self.stages: list[Stage] = []
        self.unavailable: dict[str, str] = {}
        for name in stages if stages is not None else STAGE_ORDER:
            stage = _build_stage(name, ctx, self.unavailable)
            if stage is not None:
                self.stages.append(stage)
        store = ctx.shared.get("audit_store")
        if store is not None:  # every worker on this audit store shares stop/resume (see oversight.py)
            self.oversight.attach(store)
        if self.config.freeze_gc:
            # The engines built above (spaCy, shap, sklearn, presidio) are hundreds of thousands of long-lived
            # objects; without this, every full collection walks them all, a cost paid by every request,
            # guarded or not. Freezing moves them out of the collector's reach (they are never garbage).
            gc.collect()
            gc.freeze()
        log.info("guard ready", extra={"routes": len(routes), "policies": self.policy.ids,
                                       "stages": [s.name for s in self.stages]})

    # Human oversight (EU AI Act Art 14 "stop"): stages and the admin API halt and resume routes; the state is
    # shared by every worker on the same audit store (mlguard/oversight.py).
    def is_halted(self, route: CompiledRoute) -> bool:
        return self.oversight.is_halted(route.index)

    def halt(self, route_index: int) -> None:
        self.oversight.halt(route_index)

    def resume(self, route_index: int, *, override: bool = False) -> None:
        self.oversight.resume(route_index, override=override)

    def describe(self) -> dict[str, Any]:
        """Identities of the policies and stages, for the audit record and the demo."""
        return {
            "policies": [s.__dict__ if not hasattr(s, "model_dump") else s.model_dump(mode="json")
                         for s in self.policy.sources],
            "stages": {s.name: s.describe() for s in self.stages},
        }

    async def aclose(self) -> None:
        """Close every stage once (later calls do nothing), in pipeline order.

        Why not last built first: the audit stage comes last and is where the others still write as they close
        (a deferred explanation finished at shutdown appends its event), so it must be the last to stop."""
        if self._closed:
            return
        self._closed = True
        self.oversight.close()
        for stage in self.stages:
            await stage.aclose()


def _build_stage(name: str, ctx: BuildContext, unavailable: dict[str, str]) -> Stage | None:
    """Import ``mlguard.<name>.stage`` and call its ``create``; a stage whose module is not part of this
    build is reported as unavailable (the demo says so plainly), a broken config is an error."""
    module_name = f"mlguard.{name}.stage"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, f"mlguard.{name}"):
            unavailable[name] = "not part of this build"
            return None
        raise
    create = getattr(module, "create", None)
    if create is None:
        raise ConfigError(f"{module_name} has no create(ctx)")
    stage: Stage | None = create(ctx)
    return stage
