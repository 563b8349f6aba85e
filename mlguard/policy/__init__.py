"""Policies per regulation: the schema, loading with ``extends``, and composition into one effective policy.

Typical use, once at start-up::

    from mlguard.policy import resolve_policies
    policy = resolve_policies(["gdpr", "ecoa"])        # bundled names or paths
    policy.failure_mode                                # "fail_closed"
    policy.pii.rule_for("US_SSN").operator             # "hmac"
    policy.origin("explanations.max_reasons")          # ["ecoa"]

``mlguard.policy.decision`` (the pure ``decide`` function) lives beside this package's modules but is not
re-exported here, to keep this import light.
"""

from __future__ import annotations

from mlguard.policy.compose import ResolvedPolicy, compose, effective_view
from mlguard.policy.effective import (
    Conflict,
    EffectiveAudit,
    EffectiveExplanations,
    EffectiveFairness,
    EffectiveOversight,
    EffectivePII,
    EffectivePolicy,
    EffectiveRetention,
    PolicySource,
)
from mlguard.policy.load import (
    BASE_POLICY,
    bundled_policies,
    clear_cache,
    find_policy,
    load_policy_file,
    policy_notices,
    resolve_policies,
    resolve_policy,
)
from mlguard.policy.model import (
    KNOWN_ENTITIES,
    OPERATOR_STRENGTH,
    CustomRecognizer,
    EntityRule,
    IsoDuration,
    Operator,
    PolicyDoc,
    parse_duration,
)

__all__ = [
    "BASE_POLICY",
    "KNOWN_ENTITIES",
    "OPERATOR_STRENGTH",
    "Conflict",
    "CustomRecognizer",
    "EffectiveAudit",
    "EffectiveExplanations",
    "EffectiveFairness",
    "EffectiveOversight",
    "EffectivePII",
    "EffectivePolicy",
    "EffectiveRetention",
    "EntityRule",
    "IsoDuration",
    "Operator",
    "PolicyDoc",
    "PolicySource",
    "ResolvedPolicy",
    "bundled_policies",
    "clear_cache",
    "compose",
    "effective_view",
    "find_policy",
    "load_policy_file",
    "parse_duration",
    "policy_notices",
    "resolve_policies",
    "resolve_policy",
]
