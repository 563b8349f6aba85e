"""A plain-language explanation of one decision, for the person it concerns.

What the law asks (GDPR Arts 13-15 and 22 as read in CJEU C-203/22; EU AI Act Art 86; Reg B 1002.9): which of
their data were used, the main factors, and how a change would have altered the result. The first two come from
the sealed explanation; the third from a small search on the model (:func:`counterfactuals`): for each main
factor pushing toward the decision taken, the value nearest to the applicant's own, among values seen in the
background, at which the decision flips with everything else unchanged. Two limits, both from the policy:
the search is made only when the effective policy's ``explanations.counterfactuals`` asks for it (the callers
decide, and pass ``changes=None`` otherwise, so the text says nothing about changes rather than an empty
promise), and it never names a prohibited basis or protected attribute (the same list reasons leave out).

When an unfavourable decision's reasons are flagged incomplete (``reasons_incomplete``, see
:func:`mlguard.explain.reasons.incompleteness`), the text says so in place of or after the reasons: no reason
is invented to fill the gap.

The text holds the person's own feature values; it is served only behind the admin token and never logged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlguard.explain.binding import Binding

MAX_CANDIDATES = 64
"""Distinct background values of a feature tried as-is; beyond that, its percentiles are tried and refined."""
REFINE_STEPS = 20
"""Bisection steps between the nearest flipping percentile and its non-flipping neighbour."""

_SPACES = {
    "probability": "the probability of a favourable result",
    "log_odds": "the log-odds of a favourable result",
    "raw": "the model's score",
}


def counterfactuals(binding: Binding, inputs: Mapping[str, float], explanation: Mapping[str, Any], *,
                    max_features: int = 3, prohibited: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Single-feature changes that flip the decision, for the main factors behind the decision taken.

    Returns ``[{"feature", "current", "changed_to", "score"}]``; a factor with no flipping value in the
    background is left out. Empty when the binding has no cut-off or no background. Features matching
    ``prohibited`` (:func:`mlguard.explain.reasons.is_prohibited`; pass ``ReasonPolicy.prohibited``) are never
    tried, and the next main factors take their places.
    """
    import numpy as np

    from mlguard.explain.reasons import is_prohibited

    rows = binding.background.all_rows
    if rows is None or binding.cutoff is None or max_features <= 0:
        return []
    if any(n not in inputs for n in binding.feature_order):
        return []
    x = binding.matrix([dict(inputs)])
    current = binding.favorable_score(float(binding.score(x)[0]))
    contributions = explanation.get("contributions") or {}
    sign = 1.0 if (binding.is_classifier or binding.higher_is_favorable) else -1.0
    # Factors pushing toward the decision taken: negative ones behind a refusal, positive ones behind an approval.
    bases = tuple(prohibited)
    toward = [(f, sign * float(v)) for f, v in contributions.items()
              if f in binding.feature_order and not is_prohibited(f, bases)]
    toward = [(f, v) for f, v in toward if (v > 0 if current else v < 0)]
    toward.sort(key=lambda fv: (-abs(fv[1]), fv[0]))
    out: list[dict[str, Any]] = []
    for feature, _ in toward[:max_features]:
        j = binding.feature_order.index(feature)
        column = rows[:, j]
        here = float(x[0, j])
        candidates = np.unique(column)
        continuous = candidates.size > MAX_CANDIDATES
        if continuous:
            candidates = np.unique(np.percentile(column, np.linspace(0, 100, MAX_CANDIDATES)))
        candidates = candidates[candidates != here]
        if candidates.size == 0:
            continue
        scores = _scores_with(binding, x, j, candidates)
        flips = [k for k, s in enumerate(scores) if binding.favorable_score(float(s)) is not current]
        if not flips:
            continue
        best = min(flips, key=lambda k: (abs(float(candidates[k]) - here), float(candidates[k])))
        value, score = float(candidates[best]), float(scores[best])
        if continuous:
            value, score = _refine(binding, x, j, here, value, score, current, candidates)
        out.append({"feature": feature, "current": here, "changed_to": value, "score": score})
    return out


def _scores_with(binding: Binding, x: Any, j: int, values: Any) -> Any:
    import numpy as np

    trial = np.repeat(x, len(values), axis=0)
    trial[:, j] = values
    return binding.score(trial)


def _refine(binding: Binding, x: Any, j: int, here: float, flip: float, flip_score: float,
            current: bool | None, candidates: Any) -> tuple[float, float]:
    """Bisect between the nearest non-flipping percentile (or the applicant's value) and the flipping one,
    so a continuous feature's change is reported near the model's own threshold, not a coarse percentile."""
    between = [float(c) for c in candidates if (here < c < flip) or (flip < c < here)]
    lo = max(between, key=lambda c: -abs(flip - c)) if between else here
    for _ in range(REFINE_STEPS):
        mid = (lo + flip) / 2.0
        s = float(_scores_with(binding, x, j, [mid])[0])
        if binding.favorable_score(s) is not current:
            flip, flip_score = mid, s
        else:
            lo = mid
    return flip, flip_score


def render_plain(explanation: Mapping[str, Any], *, changes: list[dict[str, Any]] | None = None,
                 catalog: Mapping[str, str] | None = None, audit_id: str | None = None) -> str:
    """Render an explanation record (as sealed in the audit record) as plain text."""
    catalog = catalog or {}
    lines = [f"Explanation of decision {audit_id}" if audit_id else "Explanation of this decision", ""]
    status = explanation.get("status", "ready")
    if status in ("skipped", "failed"):
        lines.append(f"No explanation was computed for this decision: {explanation.get('reason', 'unknown')}.")
        return "\n".join(lines) + "\n"
    if status == "pending":
        lines.append("The explanation of this decision is still being computed; please ask again shortly.")
        return "\n".join(lines) + "\n"

    outcome = explanation.get("outcome") or {}
    favorable = outcome.get("favorable")
    if favorable is not None:
        verdict = "favourable" if favorable else "unfavourable"
        score = outcome.get("score")
        tail = f" (score {_num(score)})" if isinstance(score, int | float) else ""
        lines += [f"Decision: {verdict}{tail}.", ""]

    inputs = explanation.get("inputs") or {}
    if inputs:
        lines.append(f"Data used: the model used these {len(inputs)} items of information about you:")
        lines += [f"  - {_label(name)}: {_num(value)}" for name, value in inputs.items()]
        lines.append("")

    space = _SPACES.get(str(explanation.get("output")), "the model's output")
    base = explanation.get("base_value")
    lines.append("Main factors, largest first (each moved " + space + " up or down from the typical value"
                 + (f" of {_num(base)}" if isinstance(base, int | float) else "") + "):")
    for item in explanation.get("top") or []:
        value = float(item["contribution"])
        direction = "toward a favourable result" if value > 0 else "toward an unfavourable result"
        if value == 0:
            direction = "no effect"
        lines.append(f"  - {_label(item['feature'])}: {direction} ({value:+.4g})")
    lines.append("")

    reasons = explanation.get("reasons")
    if reasons:
        lines.append("Principal reasons for the decision:")
        lines += [f"  {r['rank']}. {r.get('text') or catalog.get(r['feature']) or _label(r['feature'])}"
                  for r in reasons]
        lines.append("")
    if explanation.get("reasons_incomplete"):
        finding = explanation.get("reasons_finding") or {}
        detail = finding.get("detail") if isinstance(finding, dict) else None
        lines.append("These principal reasons are incomplete:" if reasons
                     else "No principal reason can be given for this decision:")
        lines.append(f"  {detail or 'see the sealed explanation record'}.")
        lines.append("")

    if changes is not None:
        lines.append("What would have changed the result:")
        if changes:
            for c in changes:
                lines.append(f"  - If {_label(c['feature'])} had been {_num(c['changed_to'])} instead of "
                             f"{_num(c['current'])}, with everything else the same, the decision would have "
                             f"been different.")
        elif explanation.get("reasons_excluded"):
            # Prohibited bases were left out of the search: "no single change" would be false for them.
            lines.append("  - No single change to one of the main factors that may lawfully be considered would "
                         "have altered the result.")
        else:
            lines.append("  - No single change to one of the main factors would have altered the result.")
        lines.append("")
    method = explanation.get("method", "unknown")
    lines.append(f"How this was computed: {method}, contributions in {space}.")
    return "\n".join(lines) + "\n"


def _label(name: str) -> str:
    return str(name).replace("_", " ")


def _num(value: Any) -> str:
    """A number as a person reads it: integers whole, four significant digits below 1,000, and larger
    fractions with two decimals at most (61010.5 is "61,010.5", never "6.101e+04")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if math.isfinite(value) and abs(value) >= 1000:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"
