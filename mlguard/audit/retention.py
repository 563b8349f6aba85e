"""Retention: which days of data keys ``mlguard audit purge`` may destroy, and when it must refuse.

Why in one pure function: "shred past the maximum, never inside a legal minimum" is the rule a reviewer must
be able to read; the CLI only applies its answer. The maximum is the policies' (or the deployment's, if
shorter); the floor is the longest legal minimum, and a refusal names the policies that set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlguard.errors import PolicyError, RetentionRefused


@dataclass(frozen=True, slots=True)
class PurgePlan:
    before_day: str | None  # destroy data keys of days strictly before this (YYYY-MM-DD); None: nothing
    reason: str


def _floor_cutoff(policy: Any, now: datetime) -> tuple[datetime | None, str]:
    ret = policy.retention
    if not ret.min:
        return None, ""
    names = ", ".join(ret.min_from or policy.origin("retention.min")) or "a policy"
    return ret.min_duration().subtract_from(now), f"{names} (retention.min {ret.min})"


def purge_plan(policy: Any, now: datetime, *, before: datetime | None = None,
               configured_max: str | None = None) -> PurgePlan:
    """Plan a purge at ``now``; ``before`` asks for an explicit cut-off (refused inside the legal minimum)."""
    floor, holder = _floor_cutoff(policy, now)
    if before is not None:
        if floor is not None and before > floor:
            raise RetentionRefused(f"refused: records after {floor:%Y-%m-%d} must be kept under {holder}")
        return PurgePlan(before.strftime("%Y-%m-%d"), "explicit cut-off")
    try:  # a maximum shorter than a legal minimum is refused, as at start-up (not quietly raised to it)
        chosen = policy.check_retention_max(configured_max)
    except PolicyError as exc:
        raise RetentionRefused(f"refused: {exc}") from None
    if chosen is None:
        return PurgePlan(None, "no retention maximum is set by the policies or the deployment")
    from mlguard.policy import parse_duration

    cutoff = parse_duration(chosen).subtract_from(now)
    return PurgePlan(cutoff.strftime("%Y-%m-%d"), f"retention maximum {chosen}")


def check_shred(policy: Any, now: datetime, days: list[str]) -> None:
    """Refuse to shred a subject with records inside a legal minimum retention (names the policy)."""
    floor, holder = _floor_cutoff(policy, now)
    if floor is not None and days and max(days) >= floor.strftime("%Y-%m-%d"):
        raise RetentionRefused(f"refused: this subject has records from {max(days)} that must be kept "
                               f"under {holder}; use --override-retention only under a legal obligation")
