"""One route's explanation machinery, built once: binding, explainer(s), reason rules, measured cost.

Why separate from the stage: the ``mlguard explain`` command, the benchmark and the tests build exactly what the
request path uses without a Guard around it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlguard.explain.worker import Entry, top_contributions

if TYPE_CHECKING:
    from mlguard.config.explain import ExplainSettings
    from mlguard.explain.binding import Binding
    from mlguard.explain.explainers import Engine

log = logging.getLogger("mlguard.explain.route")


@dataclass(frozen=True, slots=True)
class ReasonPolicy:
    """The parts of the effective policy that shape what the person is told, read once per route.

    ``prohibited`` (the policy's prohibited bases plus the route's protected attributes) is the one list both
    reasons and counterfactuals leave out: a notice must not cite a prohibited basis (Reg B 1002.6(b)), and
    "had your sex been different, the decision would have been" cites it just as plainly.
    ``counterfactuals`` is the effective policy's ``explanations.counterfactuals``: whether the plain-language
    text says which single changes would have altered the result.
    """

    on_adverse: bool = False
    max_reasons: int | None = None
    baseline: str = "all"
    prohibited: tuple[str, ...] = ()
    budget_ms: float = 20.0
    required: bool = False
    insufficient_texts: tuple[str, ...] | None = None
    counterfactuals: bool = False

    @classmethod
    def of(cls, policy: Any, protected: Sequence[str] = ()) -> ReasonPolicy:
        ex = getattr(policy, "explanations", None)
        texts = getattr(ex, "insufficient_reason_texts", None)
        return cls(
            on_adverse=bool(getattr(ex, "reasons_on_adverse", False)),
            max_reasons=getattr(ex, "max_reasons", None),
            baseline=str(getattr(ex, "baseline", "all") or "all"),
            prohibited=tuple(getattr(ex, "prohibited_bases", None) or ()) + tuple(protected),
            budget_ms=float(getattr(ex, "budget_ms", None) or 20.0),
            required=bool(getattr(ex, "required", False)),
            insufficient_texts=tuple(texts) if texts else None,
            counterfactuals=bool(getattr(ex, "counterfactuals", False)),
        )


@dataclass(slots=True)
class RouteExplainer:
    """Everything needed to explain one route's predictions, built once."""

    binding: Binding
    engine: Engine
    rules: ReasonPolicy
    settings: ExplainSettings
    reason_engine: Engine | None = None
    reason_baseline: dict[str, Any] = field(default_factory=dict)
    predicted_ms: float = 0.0
    deferred: bool = False
    on_loop: bool = False  # sub-millisecond explainers that hold the GIL anyway: no thread hop
    identity: dict[str, Any] = field(default_factory=dict)

    def explain_many(self, rows: list[dict[str, float]], adverse: list[bool]) -> list[Entry]:
        """Explain several rows in one explainer call (plus one for the reasons baseline when needed)."""
        import numpy as np

        from mlguard.explain.reasons import incompleteness, select_reasons

        x = self.binding.matrix(rows)
        base, contrib = self.engine.explain(x)
        reason_contrib: dict[int, Any] = {}
        want = [i for i, a in enumerate(adverse) if a] if self.rules.on_adverse else []
        if want and self.reason_engine is not None:
            _, rc = self.reason_engine.explain(x[want])
            reason_contrib = {i: rc[k] for k, i in enumerate(want)}
        names = self.binding.feature_order
        entries = []
        for i, values in enumerate(rows):
            contributions = {n: float(v) for n, v in zip(names, contrib[i], strict=True)}
            doc: dict[str, Any] = {
                "status": "ready",
                "method": self.engine.method,
                "output": self.engine.output_space,
                "base_value": float(base[i]),
                "output_value": float(base[i] + np.sum(contrib[i])),
                "contributions": contributions,
                "top": top_contributions(contributions, self.settings.top_k),
                "identity": self.identity,
            }
            if i in want:
                source = reason_contrib.get(i)
                basis = contributions if source is None else {n: float(v) for n, v in zip(names, source,
                                                                                          strict=True)}
                sel = select_reasons(basis, max_reasons=self.rules.max_reasons, prohibited=self.rules.prohibited,
                                     catalog=self.settings.reason_catalog,
                                     higher_is_favorable=self.binding.higher_is_favorable
                                     or self.binding.is_classifier)
                doc["reasons"] = sel.reasons
                doc["reasons_baseline"] = self.reason_baseline
                if sel.excluded:
                    doc["reasons_excluded"] = sel.excluded
                # Always present on an adverse decision, so "complete" is stated, not inferred from an absence.
                finding = incompleteness(sel)
                doc["reasons_incomplete"] = finding is not None
                if finding is not None:
                    doc["reasons_finding"] = finding
            entries.append(Entry("ready", self.binding.route_index, doc, {**doc, "inputs": dict(values)}))
        return entries


def build_route_explainer(index: int, model_cfg: Any, policy: Any, settings: ExplainSettings, *,
                          base_dir: Any, protected: Sequence[str] = ()) -> RouteExplainer:
    """Binding + explainer(s) + measured cost for one route; ConfigError names the field on any problem.

    A route whose explanations run deferred while its policy requires principal reasons on adverse decisions
    under ``failure_mode: fail_closed`` gets a WARNING, not a ConfigError. Inline, an unfavourable decision whose
    reasons are incomplete is refused (503 ``reasons-incomplete``, :func:`mlguard.policy.decision.decide`);
    deferred, the answer has left before the reasons exist, so that refusal cannot happen and the finding reaches
    only the deferred explanation, its audit event and a WARNING. Why not refuse to start: with ``execution:
    auto`` whether a route is deferred depends on the explainer's cost measured on this machine, so a ConfigError
    would make start-up depend on timing; an explicit ``deferred`` is a deliberate latency choice; and Reg B
    allows the notice to follow the decision (1002.9(a)(1): 30 days), so a lender can hold the notice until it
    has read the deferred explanation. The warning says exactly that, once per route, at start-up.
    """
    from mlguard.explain.binding import build_binding, sample_rows
    from mlguard.explain.explainers import build_engine
    from mlguard.explain.reasons import check_catalog, cutoff_rows, is_prohibited

    where = f"routes.{index}.model"
    rules = ReasonPolicy.of(policy, protected)
    binding = build_binding(index, model_cfg, base_dir=base_dir)
    if rules.on_adverse:
        check_catalog(settings.reason_catalog, rules.insufficient_texts)
        missing = [f for f in binding.feature_order
                   if f not in settings.reason_catalog and not is_prohibited(f, rules.prohibited)]
        if missing:
            log.warning("no reason text in explain.reason_catalog for %s; the feature name is used", missing)
        scored = [f for f in binding.feature_order if is_prohibited(f, rules.prohibited)]
        if scored:
            log.warning("model scores prohibited bases %s; they are never given as reasons or counterfactuals, so "
                        "a refusal that rests on them gets no lawful principal reason: its explanation and audit "
                        "record say reasons_incomplete: true (MLGuard-Reasons: incomplete). Remove them from the "
                        "model's inputs (Reg B 1002.6(b))", scored)
    engine = build_engine(binding, binding.background.data, generic_method=settings.generic_method,
                          kmeans_k=settings.kmeans_k, field=where)
    rx = RouteExplainer(binding, engine, rules, settings)
    rx.reason_baseline = {"kind": "all", **binding.background.identity()}
    if rules.on_adverse and rules.baseline == "cutoff":
        rows, delta = cutoff_rows(binding, field=f"{where}.background")
        rows = sample_rows(rows, model_cfg.background_size)
        rx.reason_engine = build_engine(binding, rows, generic_method=settings.generic_method,
                                        kmeans_k=settings.kmeans_k, field=where)
        rx.reason_baseline = {"kind": "cutoff", "cutoff": binding.cutoff, "delta": delta,
                              "rows": int(rows.shape[0]), "sha256": binding.background.sha256}
    rx.identity = {"model": binding.identity(), "explainer": engine.identity(),
                   "background": binding.background.identity()}
    probe = _probe_row(binding)
    if probe is not None:
        rx.predicted_ms = engine.timed(probe)
        if rx.reason_engine is not None:
            rx.predicted_ms += rx.reason_engine.timed(probe)
    if settings.execution == "deferred":
        rx.deferred = True
    elif settings.execution == "auto":
        rx.deferred = rx.predicted_ms > rules.budget_ms
    if rx.deferred and rules.on_adverse and getattr(policy, "failure_mode", None) == "fail_closed":
        log.warning("explanations of %s run deferred, so an unfavourable decision without complete lawful "
                    "reasons is served before that is known: failure_mode fail_closed cannot refuse it (inline it "
                    "would be refused, 503 reasons-incomplete). Its deferred explanation and audit event say "
                    "reasons_incomplete: true; read them before sending the adverse action notice, or set "
                    "explain.execution: inline", where)
    # Measured: shap's C TreeSHAP keeps the GIL for the whole call, so running it in a worker thread does not
    # free the event loop; it only adds the hop (~0.1 ms, a fifth of a 100-tree explanation).
    rx.on_loop = not rx.deferred and probe is not None and rx.predicted_ms < settings.on_loop_below_ms
    log.info("explainer ready", extra={"route": index, "method": engine.method, "output": engine.output_space,
                                       "predicted_ms": round(rx.predicted_ms, 3), "deferred": rx.deferred})
    return rx


def _probe_row(binding: Binding) -> Any:
    data = binding.background.data
    return None if data is None else data[:1]
