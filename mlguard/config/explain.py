"""The route's model binding (``routes[].model``) and explanation settings. Owned by the explain area."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlguard.errors import ConfigError
from mlguard.jsonpath import JSONPath, compile_path

ONE_DECISION = ("mlguard reads one decision per request (one feature object, one score, one decision); a "
                "batch endpoint cannot be bound: address a single value, such as $.features or $.score")
"""Why a per-decision path may not hold a wildcard: the explanation, the fairness count and the sealed record are
one per request, so a path matching the items of a batch would silently describe only its first item."""


def compile_decision_path(text: str, *, field: str) -> JSONPath:
    """Compile a per-decision path of the model binding (``features``, ``output``, ``favorable``); refuse one
    that can address more than one value (``[*]``, ``.*``), naming ``field``.

    One helper for the route's compilation (:func:`mlguard.routes.compile_route`, run by ``mlguard config
    check``, ``serve`` and every Guard) and the binding (:func:`mlguard.explain.binding.build_binding`)."""
    path = compile_path(text, field=field)
    if None in path.steps:
        raise ConfigError(f"{text!r} can match more than one value (a wildcard); {ONE_DECISION}", field=field)
    return path


class ModelBinding(BaseModel):
    """Which model a route serves, how its input is built and which output is the decision.

    ``output`` and ``favorable`` alone (no ``object``) are enough for fairness: the decision is read from the
    app's response, and explanations are off.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    object: str | Any | None = Field(
        default=None, description="`module:attr` naming the model, or a factory returning it; or the object itself."
    )
    features: str | None = Field(
        default=None, description="JSONPath to the object of named features in the request (one object: no wildcard)."
    )
    feature_order: list[str] | None = Field(
        default=None, description="Feature names in the model's column order (default: the model's feature_names_in_)."
    )
    feature_types: dict[str, Literal["number", "boolean"]] | None = Field(
        default=None,
        description="Declared type per feature (default: number); mistyped features skip the explanation with a "
        "reason. Booleans are given to the model as 0/1. No strings: encode categories as numbers.",
    )
    output: str | None = Field(default=None, description="JSONPath to the score in the app's response (no wildcard).")
    favorable: str | None = Field(
        default=None, description="JSONPath to the boolean decision in the app's response (no wildcard)."
    )
    background: Path | None = Field(
        default=None,
        description="CSV of background rows (header = feature names; numbers, booleans as 0/1), relative to "
        "base_dir; sha256 recorded.",
    )
    background_rows: list[dict[str, float | int | bool]] | None = Field(
        default=None,
        description="Background rows given inline instead of a CSV (sha256 of their canonical JSON recorded)."
    )
    background_size: int = Field(
        default=100, gt=0, description="Most background rows used; a larger background is sampled (fixed seed)."
    )
    explain: Literal["auto", "probability", "log_odds", "raw"] = Field(
        default="auto",
        description="Output explained: probability of the favourable class, its log-odds, or the raw/regression "
        "value. auto: probability for classifiers (log_odds for a bare binary LogisticRegression, explained by "
        "shap's LinearExplainer), raw for regressors.",
    )
    favorable_class: int | str | bool | None = Field(
        default=None, description="Class label that is the favourable decision (default: the model's last class)."
    )
    higher_is_favorable: bool = Field(
        default=True, description="Regressors only: whether a higher predicted value is the favourable side."
    )
    cutoff: float | None = Field(
        default=None,
        description="Decision threshold on the score (probability of the favourable class, or the regression "
        "value); default 0.5 for classifiers. Used by the cut-off baseline and the counterfactual search.",
    )
    cutoff_delta: float = Field(
        default=0.05, gt=0, description="Reasons baseline `cutoff`: background rows scoring in [cutoff, cutoff+delta]."
    )


class ExplainSettings(BaseModel):
    """How explanations are attached (``explain:`` in mlguard.yaml)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Attach explanations on routes with a model object.")
    field: str = Field(default="explanation", min_length=1, description="Member added to JSON-object responses.")
    mode: Literal["body", "header"] = Field(
        default="body", description="body: add the member; header: only an MLGuard-Explanation header (body unchanged)."
    )
    top_k: int = Field(default=5, gt=0, description="Features listed in `top`.")
    reason_catalog: dict[str, str] = Field(
        default_factory=dict, description="Feature name -> adverse-action reason text."
    )
    execution: Literal["auto", "inline", "deferred"] = Field(
        default="auto",
        description="auto: inline unless the explainer measured at start-up exceeds the policy's budget_ms, "
        "then deferred; inline/deferred force one.",
    )
    on_loop_below_ms: float = Field(
        default=1.0,
        ge=0,
        description="Inline explainers measured below this run on the event loop instead of a worker thread: "
        "shap's TreeSHAP holds the GIL, so a thread frees nothing and the hop costs ~0.1 ms. 0: always a thread.",
    )
    generic_method: Literal["kernel", "permutation"] = Field(
        default="kernel", description="Explainer for models that are neither tree ensembles nor linear."
    )
    kmeans_k: int = Field(
        default=10, gt=0, description="Size of the k-means background summary of the generic explainer."
    )
    deferred_queue_size: int = Field(
        default=1000,
        gt=0, description="Most explanations waiting for the deferred worker; full -> skipped with a reason."
    )
    deferred_batch_max: int = Field(
        default=64, gt=0, description="Most queued requests explained together in one explainer call."
    )
    deferred_linger_ms: float = Field(
        default=5.0, ge=0, le=1000,
        description="Deferred worker's wait after the first queued job before explaining the batch (lets that "
        "request's response leave first and concurrent ones join).",
    )
    keep_results: int = Field(
        default=10_000, gt=0, description="Explanations kept in memory for GET {admin prefix}/explanations/{audit_id}."
    )
    counterfactual_features: int = Field(
        default=3, ge=0, description="Main factors tried by the plain-language 'what would have changed it' search."
    )
