"""The effective policy: what one or more composed policy files enforce, as plain typed values with origins.

Why apart from the file schema (``model.py``): a policy file is read by counsel, value beside citation; the
effective policy is read by the code on every request, so its sections hold plain values, and
:meth:`EffectivePolicy.origin` says which policy each value came from. ``mlguard.policy.compose`` builds it.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from typing import Any

from pydantic import Field

from mlguard.policy.model import (
    Baseline,
    CustomRecognizer,
    EntityRule,
    FailureMode,
    FairnessAction,
    IsoDuration,
    Operator,
    SignificanceCorrection,
    Status,
    _Strict,
    parse_duration,
)

__all__ = [
    "Conflict",
    "ConflictValue",
    "EffectiveAudit",
    "EffectiveExplanations",
    "EffectiveFairness",
    "EffectiveOversight",
    "EffectivePII",
    "EffectivePolicy",
    "EffectiveRetention",
    "PolicySource",
    "SourcedCite",
]


class PolicySource(_Strict):
    """One policy file that contributed to an effective policy (recorded in every audit record)."""

    id: str
    version: str
    title: str
    status: Status
    effective_from: date
    review_by: date
    path: str
    sha256: str = Field(description="SHA-256 of the file's bytes.")
    requested: bool = Field(description="Named by the deployment (True) or pulled in through extends (False).")


class SourcedCite(_Strict):
    """A citation behind a composed value, with the policy that made it."""

    policy: str
    cite: str
    verify: bool = False
    applies_from: date | None = None


class ConflictValue(_Strict):
    policy: str
    value: Any
    cite: str


class Conflict(_Strict):
    """Two policies ask for incompatible values; ``resolution`` says what the guard does and why."""

    field: str
    values: list[ConflictValue]
    resolution: str


class EffectivePII(_Strict):
    entities: dict[str, EntityRule] = Field(default_factory=dict)
    default_operator: Operator = "replace"
    scan_response: bool = False
    protected_to_model: bool = False
    special_categories_separate: bool = True
    restricted_zip3: list[str] = Field(default_factory=list)
    custom_recognizers: list[CustomRecognizer] = Field(default_factory=list)

    def rule_for(self, entity: str) -> EntityRule:
        """The rule for ``entity``; entities no policy names get ``default_operator`` (cite: default)."""
        rule = self.entities.get(entity)
        return rule if rule is not None else _default_rule(entity, self.default_operator)


@functools.lru_cache(maxsize=1024)
def _default_rule(entity: str, operator: Operator) -> EntityRule:
    """Built once per (entity, operator): ``rule_for`` may be called for every finding of every request."""
    return EntityRule(entity=entity, operator=operator, cite="pii.default_operator of the effective policy")


class EffectiveRetention(_Strict):
    min: str | None = None
    max: str | None = None
    max_required: bool = False
    erasure_within: str | None = None
    min_from: list[str] = Field(default_factory=list, description="Policies that set the floor.")
    max_from: list[str] = Field(default_factory=list, description="Policies that set the maximum.")

    def min_duration(self) -> IsoDuration | None:
        return parse_duration(self.min) if self.min else None

    def max_duration(self) -> IsoDuration | None:
        return parse_duration(self.max) if self.max else None


class EffectiveExplanations(_Strict):
    required: bool = False
    reasons_on_adverse: bool = False
    max_reasons: int | None = None
    budget_ms: float = 20.0
    baseline: Baseline = "all"
    prohibited_bases: list[str] = Field(default_factory=list)
    insufficient_reason_texts: list[str] = Field(default_factory=list)
    counterfactuals: bool = False
    notice_within: str | None = None

    def is_prohibited(self, feature: str) -> bool:
        """Whether a feature name is a prohibited basis (case, '-' and spaces ignored)."""
        norm = _norm_name(feature)
        return any(_norm_name(p) == norm for p in self.prohibited_bases)

    def insufficient_text(self, text: str) -> str | None:
        """The refused phrase ``text`` contains (case-insensitive), or None when the text is acceptable."""
        low = " ".join(text.lower().split())
        return next((p for p in self.insufficient_reason_texts if p.lower() in low), None)


def _norm_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


class EffectiveFairness(_Strict):
    min_impact_ratio: float | None = None
    max_demographic_parity_difference: float | None = None
    max_equalized_odds_difference: float | None = None
    min_group_size: int = 30
    exclude_below_share: float | None = None
    significance_alpha: float | None = None
    significance_correction: SignificanceCorrection | None = None
    action: FairnessAction = "annotate"
    report_unknown: bool = True
    intersectional: bool = False
    audit_max_age: str | None = None

    @property
    def has_thresholds(self) -> bool:
        return any(v is not None for v in (self.min_impact_ratio, self.max_demographic_parity_difference,
                                            self.max_equalized_odds_difference))


class EffectiveOversight(_Strict):
    stop_control: bool = False
    human_review: bool = False
    contest: bool = False
    log_solely_automated: bool = False


class EffectiveAudit(_Strict):
    required: bool = False
    encrypt: bool = True
    record_reads: bool = False
    tamper_evident: bool = True


class EffectivePolicy(_Strict):
    """The composed result of one or more policies: plain typed values, their origins, and conflicts.

    Build it with :func:`mlguard.policy.resolve_policies`; never mutate it (it is shared by every route that
    names the same policies).
    """

    ids: list[str] = Field(description="The requested policy ids, in the order given.")
    sources: list[PolicySource] = Field(description="Every file that contributed, extends included.")
    failure_mode: FailureMode = "fail_closed"
    pii: EffectivePII = Field(default_factory=EffectivePII)
    retention: EffectiveRetention = Field(default_factory=EffectiveRetention)
    explanations: EffectiveExplanations = Field(default_factory=EffectiveExplanations)
    fairness: EffectiveFairness = Field(default_factory=EffectiveFairness)
    oversight: EffectiveOversight = Field(default_factory=EffectiveOversight)
    audit: EffectiveAudit = Field(default_factory=EffectiveAudit)
    conflicts: list[Conflict] = Field(default_factory=list)
    origins: dict[str, list[str]] = Field(
        default_factory=dict, description="Dotted field (e.g. retention.min, pii.entities.US_SSN) -> policy ids."
    )
    citations: dict[str, list[SourcedCite]] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list,
                               description="Settings the policies require the deployment to provide.")
    content_hash: str = Field("", description="SHA-256 of the canonical JSON of the enforced values.")

    def origin(self, field: str) -> list[str]:
        """Policy ids the composed value of ``field`` came from (``[]`` when no policy set it)."""
        return list(self.origins.get(field, []))

    def cites(self, field: str) -> list[SourcedCite]:
        """Citations behind the composed value of ``field``."""
        return list(self.citations.get(field, []))

    def describe(self) -> dict[str, Any]:
        """Identity for the audit record: ids, each file's version and hash, and the content hash."""
        return {
            "ids": list(self.ids),
            "content_hash": self.content_hash,
            "sources": [{"id": s.id, "version": s.version, "sha256": s.sha256} for s in self.sources],
        }

    def retention_max_for(self, configured: str | None) -> str | None:
        """The retention maximum to enforce given the deployment's own setting.

        Why: GDPR Art 5(1)(e) fixes no number but obliges the controller to set one, so a policy may require
        the deployment to configure it. The shorter of the policy's and the deployment's maximum applies, but
        never below the legal floor (Art 17(3)(b)). Raises PolicyError when a maximum is required and missing.
        """
        from mlguard.errors import PolicyError

        if configured is not None:
            try:
                parse_duration(configured)
            except ValueError as exc:
                raise PolicyError(str(exc), field="retention.max") from None
        candidates = [d for d in (self.retention.max, configured) if d is not None]
        if not candidates:
            if self.retention.max_required:
                need = ", ".join(self.origin("retention.max_required"))
                raise PolicyError(f"a retention maximum must be configured (required by {need})",
                                  field="retention.max")
            return None
        chosen = min(candidates, key=lambda d: parse_duration(d).sort_key)
        floor = self.retention.min
        if floor is not None and parse_duration(chosen).sort_key < parse_duration(floor).sort_key:
            return floor
        return chosen

    def check_retention_max(self, configured: str | None) -> str | None:
        """:meth:`retention_max_for`, refusing a configured maximum below a policy's legal minimum.

        Why an error rather than the floor: two *policies* whose maximum and minimum cross are resolved to the
        floor at composition (GDPR Art 17(3)(b), reported as a conflict), but a deployment that writes a maximum
        shorter than a minimum it is bound by has misread its obligations, and keeping its records longer than
        it said without a word is not what it asked for. The start-up (and ``mlguard config check``) refuses,
        naming the policy, as ``mlguard audit purge`` does inside a legal minimum. Raises PolicyError
        (field ``retention.max``) for this and for everything :meth:`retention_max_for` refuses.
        """
        from mlguard.errors import PolicyError

        chosen = self.retention_max_for(configured)
        floor = self.retention.min
        if configured is not None and floor is not None \
                and parse_duration(configured).sort_key < parse_duration(floor).sort_key:
            holder = ", ".join(self.retention.min_from or self.origin("retention.min")) or "a policy"
            raise PolicyError(f"{configured} is shorter than the legal minimum retention: records must be kept "
                              f"under {holder} (retention.min {floor}); set retention.max to {floor} or longer",
                              field="retention.max")
        return chosen
