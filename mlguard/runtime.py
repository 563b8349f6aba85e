"""Guard: everything built once per process from a GuardConfig (policies, routes, stages, admin).

Why separate from the middleware: the CLI (``mlguard redact``, ``mlguard demo``) and tests need the same built
pipeline without an ASGI app around it; the middleware only adds the ASGI plumbing.
"""

from __future__ import annotations

import gc
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlguard.config import GuardConfig, load_config
from mlguard.errors import ConfigError
from mlguard.logs import mask_route_paths
from mlguard.oversight import Oversight
from mlguard.policy import EffectivePolicy, policy_notices, resolve_policies
from mlguard.routes import CompiledRoute, RouteTable, compile_route
from mlguard.stage import STAGE_ORDER, BuildContext, Stage

log = logging.getLogger("mlguard.runtime")
policy_log = logging.getLogger("mlguard.policy")


@dataclass(frozen=True, slots=True)
class CheckedConfig:
    """A configuration that passed :func:`check_config`: its composed policies and compiled routes."""

    config: GuardConfig
    policy: EffectivePolicy
    retention_max: str | None
    routes: list[CompiledRoute]
    notices: list[tuple[int, str]]
    """What to tell the deployment about its policies (``policy_notices`` of the global and every route's
    composition, each once): logged by ``Guard`` when it starts, printed by ``mlguard config check``."""


def check_config(config: GuardConfig, *, file: str | Path | None = None, files: bool = False) -> CheckedConfig:
    """Every check of a configuration that needs no engine: the one validation of ``Guard`` and of
    ``mlguard config check`` (and ``mlguard serve`` before any worker starts), so that what the check accepts
    starts, and what does not start the check refuses.

    Composes the policies (the global list and each route's own), checks the deployment's ``retention.max``
    against every one of them (required by gdpr; never below a legal minimum) and compiles the routes (paths,
    JSONPaths, PII entities). With ``files``, also what the start-up would read from disk later: each model
    binding's ``module:attr`` (found, not imported: :func:`mlguard.explain.binding.check_binding`) and background
    CSV. Builds no engine, opens no store, creates no file. A ConfigError names ``file`` when it names no other.
    """
    try:
        base_dir = config.base_dir
        policy = _compose(config.policies, base_dir, field="policies")
        retention_max = policy.check_retention_max(config.retention.max)
        custom = [str(spec.get("entity", "")) for spec in config.pii_engine.custom_recognizers
                  if isinstance(spec, Mapping)]
        routes: list[CompiledRoute] = []
        notices = dict.fromkeys(policy_notices(policy))
        for i, route in enumerate(config.routes):
            route_policy = policy
            if route.policies is not None:
                route_policy = _compose(route.policies, base_dir, field=f"routes.{i}.policies")
                route_policy.check_retention_max(config.retention.max)  # its records share the one trail
                notices.update(dict.fromkeys(policy_notices(route_policy)))
            routes.append(compile_route(i, route, route_policy, custom_entities=custom))
            if files and route.model is not None:
                from mlguard.explain.binding import check_binding

                where = f"{file}:" if file is not None else ""  # warnings read FILE:FIELD: message too
                notices.update(dict.fromkeys((logging.WARNING, f"{where}{warning}")
                                             for warning in check_binding(i, route.model, base_dir=base_dir)))
        if not config.audit.enabled:
            _check_audit_not_required([policy, *(r.policy for r in routes)])
    except ConfigError as exc:
        raise located(exc, file) from None
    return CheckedConfig(config, policy, retention_max, routes, list(notices))


def _check_audit_not_required(policies: list[EffectivePolicy]) -> None:
    """Refuse ``audit.enabled: false`` where a policy in force requires an audit trail (eu_ai_act Art 12,
    hipaa 164.312(b), pci_dss 10.2.1): a guard that keeps no record under them is out of compliance the moment
    it serves, and the setting is easy to carry from a test config into production unnoticed. As
    ``retention.max`` below a legal minimum, it is a configuration error naming the policy and its provision."""
    for p in policies:
        if p.audit.required:
            cites = "; ".join(f"{c.policy}: {c.cite}" for c in p.cites("audit.required")) or ", ".join(
                p.origin("audit.required"))
            raise ConfigError(f"the audit trail is off, but the policies in force require one ({cites}); "
                              "remove audit.enabled: false, or serve under policies that do not require it",
                              field="audit.enabled")


def _compose(names: list[str], base_dir: Path | None, *, field: str) -> EffectivePolicy:
    try:
        return resolve_policies(names, base_dir=base_dir)
    except ConfigError as exc:
        if exc.file is None and exc.field is None:  # an unknown name: say which list holds it
            raise type(exc)(str(exc), field=field) from None
        raise


def located(exc: ConfigError, file: str | Path | None) -> ConfigError:
    """``exc`` naming ``file`` (the deployment config) when it names no file of its own (a policy file's
    error keeps that file), so every configuration error reads ``FILE:FIELD: message``."""
    if file is None or exc.file is not None:
        return exc
    text = str(exc)
    prefix = f"{exc.field}: " if exc.field else ""
    message = text[len(prefix):] if prefix and text.startswith(prefix) else text
    try:
        out = type(exc)(message, file=str(file), field=exc.field)
    except TypeError:  # a subclass with another signature
        out = ConfigError(message, file=str(file), field=exc.field)
    return out.with_traceback(exc.__traceback__)


class Guard:
    """The built guard: config, composed policies, compiled routes and the ordered stages."""

    def __init__(self, config: str | Path | GuardConfig | dict[str, Any], *,
                 stages: list[str] | None = None, shared: dict[str, Any] | None = None) -> None:
        file = config if isinstance(config, str | Path) else None
        self._stage_names = stages
        self._shared_given = dict(shared or {})
        self.config = load_config(config)
        logging.getLogger("mlguard").setLevel(self.config.log_level)
        checked = check_config(self.config, file=file)
        for level, notice in checked.notices:
            policy_log.log(level, notice)
        self.policy: EffectivePolicy = checked.policy
        self.retention_max = checked.retention_max
        routes = checked.routes
        self.table = RouteTable(routes)
        mask_route_paths((r.path, r.pattern) for r in routes)  # a path parameter is an input: never logged
        self.oversight = Oversight(routes)
        self._closed = False
        self.warned: set[tuple[int, str]] = set()  # (route index, reason) already logged (exchange._not_inspected)
        ctx = BuildContext(config=self.config, policy=self.policy, routes=routes, shared=shared or {})
        ctx.shared.setdefault("guard", self)
        self.context = ctx
        self.stages: list[Stage] = []
        self.unavailable: dict[str, str] = {}
        for name in stages if stages is not None else STAGE_ORDER:
            try:
                stage = _build_stage(name, ctx, self.unavailable)
            except ConfigError as exc:  # e.g. routes.0.model.feature_order, found only with the model loaded
                raise located(exc, file) from None
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

    @property
    def closed(self) -> bool:
        return self._closed

    def reopen(self) -> Guard:
        """A new guard built as this one was (same configuration, stages and shared objects given), for an app
        whose lifespan starts again after this guard was closed by its shutdown (a test suite entering
        ``with TestClient(app)`` once per test): without it the second run's requests waited for ever on the
        closed audit writer."""
        return Guard(self.config, stages=self._stage_names, shared=dict(self._shared_given))

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
