"""A plain-language explanation of one decision, for the person it concerns.

What the law asks (GDPR Arts 13-15 and 22 as read in CJEU C-203/22; EU AI Act Art 86; Reg B 1002.9): which of
their data were used, the main factors, and how a change would have altered the result. The first two come from
the sealed explanation; the third from a small search on the model (:func:`counterfactuals`): for each main
factor pushing toward the decision taken, the value nearest to the applicant's own, among values seen in the
background, at which the decision flips with everything else unchanged; the number printed is one the model
was evaluated at and gave the other decision (:func:`_verified`), else none is printed. Two limits, both from
the policy: the search is made only when the effective policy's ``explanations.counterfactuals`` asks for it
(the callers decide, and pass ``changes=None`` otherwise, so the text says nothing about changes rather than an
empty promise), and it never names a prohibited basis or protected attribute (the same list reasons leave out).

When an unfavourable decision's reasons are flagged incomplete (``reasons_incomplete``, see
:func:`mlguard.explain.reasons.incompleteness`), the text says so in place of or after the reasons: no reason
is invented to fill the gap.

The text holds the person's own feature values; it is served only behind the admin token and never logged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlguard.explain.binding import Binding

MAX_CANDIDATES = 64
"""Distinct background values of a feature tried as-is; beyond that, its percentiles are tried and refined."""
REFINE_STEPS = 20
"""Bisection steps between the nearest flipping percentile and its non-flipping neighbour."""
BOUNDARY_MARGIN = 1e-5
"""How far past the boundary a refined value is moved before rounding, as a share of the distance from the
applicant's value (0.1 on a change of 10,000): clear of the model's floating-point noise, not a different offer."""
VERIFY_TRIES = 12
"""Values tried, each twice as far past the boundary, before a factor is reported with no flipping value."""
SCORE_MARGIN = 1e-9
"""A score this close to the cut-off is not taken as a flip: it could land on either side of a re-evaluation."""

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
        told = _verified(binding, x, j, here, value, current, past=continuous)
        if told is not None:
            out.append({"feature": feature, "current": here, "changed_to": told[0], "score": told[1]})
    return out


def _verified(binding: Binding, x: Any, j: int, here: float, value: float, current: bool | None, *,
              past: bool) -> tuple[float, float] | None:
    """The value to tell the person, and the model's score there; None when none could be verified.

    Why: the search ends a hair past the model's boundary (a refined value) and the text rounds it
    (:func:`_num`), so "2,452.63" was printed for a flip found at 2452.6258 while the model at 2452.63 was back
    on the other side. Here the value is moved past the boundary by ``BOUNDARY_MARGIN`` of the distance
    travelled (``past``: a refined value; a background value is tried as it is first), rounded to the digits the
    text shows, away from the applicant's own value, and kept only when the model, evaluated at exactly that
    value, gives the other decision clear of the cut-off (``SCORE_MARGIN``). When it does not (a model that
    is not monotone there), a few values further out are tried; then none is reported.
    """
    import numpy as np

    direction = 1.0 if value > here else -1.0
    step = BOUNDARY_MARGIN * abs(value - here)
    offsets = ([step] if past else [0.0]) + [step * 2.0 ** k for k in range(1, VERIFY_TRIES)]
    tried: list[float] = []
    for offset in offsets:
        told = _shown(value + direction * offset, direction)
        if told != here and told not in tried:
            tried.append(told)
    if not tried:
        return None
    scores = _scores_with(binding, x, j, np.asarray(tried, dtype=np.float64))
    cutoff = float(binding.cutoff) if binding.cutoff is not None else 0.0
    for told, score in zip(tried, (float(s) for s in scores), strict=True):
        if binding.favorable_score(score) is not current and abs(score - cutoff) > SCORE_MARGIN:
            return told, score
    return None


def _shown(value: float, direction: float) -> float:
    """``value`` rounded to the digits :func:`_num` writes (two decimals from 1,000 up, four significant digits
    below), up when ``direction`` > 0 and down otherwise: the number in the text is the number verified."""
    if not math.isfinite(value) or value == 0 or float(value).is_integer():
        return value
    places = 2 if abs(value) >= 1000 else 3 - math.floor(math.log10(abs(value)))
    rounding = ROUND_CEILING if direction > 0 else ROUND_FLOOR
    return float(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=rounding))


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

    space = _SPACES.get(str(explanation.get("output")), "the model's output")
    outcome = explanation.get("outcome") or {}
    favorable = outcome.get("favorable")
    if favorable is not None:
        verdict = "favourable" if favorable else "unfavourable"
        score = outcome.get("score")
        # The service's own score (model.output: a risk, a probability of either class...) is on its own scale;
        # the factors below are in the explained output. Both are named, so neither is read as the other.
        tail = (f" (the service's own score: {_num(score)}, on the service's scale)"
                if isinstance(score, int | float) and not isinstance(score, bool) else "")
        lines += [f"Decision: {verdict}{tail}.", ""]

    inputs = explanation.get("inputs") or {}
    if inputs:
        lines.append(f"Data used: the model used these {len(inputs)} items of information about you:")
        lines += [f"  - {_label(name)}: {_num(value)}" for name, value in inputs.items()]
        lines.append("")

    base = explanation.get("base_value")
    explained = explanation.get("output_value")
    if isinstance(explained, int | float) and not isinstance(explained, bool):
        lines.append(f"Explained output: {space}, {_num(explained)} for this decision"
                     + (f" (typical value {_num(base)})." if isinstance(base, int | float) else "."))
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
