"""Adverse-action reason codes (ECOA / Regulation B 1002.9(b)(2) and its official interpretation).

The rules, each a line below and a row of the tests:

* On an unfavourable decision, the principal reasons are the features whose contributions pushed the output
  furthest toward the unfavourable side (9(b)(2)-4: only factors actually scored).
* At most ``max_reasons`` (4 under ecoa, 9(b)(2)-1), but a principal reason is never dropped: when the last
  place is tied, every tied feature is kept and a warning is logged.
* A prohibited basis (1002.2(z), 1002.6(b)) or a protected attribute is never a reason, whatever its weight.
* Each reason carries a text from the catalog; texts that Reg B calls insufficient ("internal standards or
  policies", "failed to achieve a qualifying score") are refused at start-up (:func:`check_catalog`).
* The baseline (9(b)(2)-5) is all applicants (the background) or applicants at or slightly above the cut-off
  (:func:`cutoff_rows`).
* Reasons are never made up to fill a gap. When what is left after exclusion cannot be the specific principal
  reasons 1002.9(b)(2) asks for, that is a finding (:func:`incompleteness`): no reason at all, or prohibited
  bases weighing more against the applicant than the reasons given. A decision resting on a prohibited basis is
  itself the fact to surface (1002.6(b)), not something a minor factor promoted to reason #1 may hide.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlguard.errors import ConfigError

if TYPE_CHECKING:
    from mlguard.explain.binding import Binding, FloatArray

log = logging.getLogger("mlguard.explain.reasons")

DEFAULT_MAX_REASONS = 4
"""Reg B official interpretation 9(b)(2)-1: more than four reasons is not likely to be helpful."""
DEFAULT_INSUFFICIENT_TEXTS = ("internal standards", "internal policies", "qualifying score", "insufficient score")
"""Used when the policy names none: Reg B 1002.9(b)(2) says such statements are insufficient."""
MIN_CUTOFF_ROWS = 5
"""Fewest background rows for the cut-off baseline; the band is widened (with a warning) to reach it."""
_TIE_RTOL = 1e-9
_TIE_ATOL = 1e-12


INCOMPLETE_NO_LAWFUL_REASON = "no_lawful_reason"
INCOMPLETE_PROHIBITED_OUTWEIGH = "prohibited_bases_outweigh"
INCOMPLETE_NO_ADVERSE_FACTOR = "no_adverse_factor"
_INCOMPLETE_DETAIL = {
    INCOMPLETE_NO_LAWFUL_REASON:
        "only prohibited bases or protected attributes weighed against the applicant; no lawful principal reason "
        "remains once they are excluded (Reg B 1002.6(b), 1002.9(b)(2))",
    INCOMPLETE_PROHIBITED_OUTWEIGH:
        "prohibited bases or protected attributes, excluded from the reasons, weighed more against the applicant "
        "than the reasons given together (Reg B 1002.6(b), 1002.9(b)(2))",
    INCOMPLETE_NO_ADVERSE_FACTOR:
        "no scored factor weighed against the applicant relative to the reasons baseline, so no principal reason "
        "can be derived; the cut-off baseline (Reg B comment 9(b)(2)-5) may give them",
}


@dataclass(frozen=True, slots=True)
class ReasonSelection:
    reasons: list[dict[str, Any]]
    excluded: list[str]  # features left out because they are prohibited bases or protected attributes
    tie_extended: bool
    excluded_weight: float = 0.0  # how much the excluded features pushed toward refusal, together (>= 0)
    reasons_weight: float = 0.0  # the same for the reasons given (>= 0)


def normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def is_prohibited(feature: str, bases: Iterable[str]) -> bool:
    """Whether a feature names a prohibited basis: equal to it, or holding its words as whole tokens.

    ``applicant_age`` and ``age_years`` match ``age``; ``page_views`` does not.
    """
    return _prohibited(feature, tuple(bases))


@functools.lru_cache(maxsize=4096)
def _prohibited(feature: str, bases: tuple[str, ...]) -> bool:
    # Cached: a route's features and its policy's bases are fixed, and this runs on every adverse decision.
    tokens = normalise(feature).split("_")
    for basis in bases:
        want = normalise(basis).split("_")
        if not want or want == [""]:
            continue
        for i in range(len(tokens) - len(want) + 1):
            if tokens[i:i + len(want)] == want:
                return True
    return False


def select_reasons(contributions: Mapping[str, float], *, max_reasons: int | None, prohibited: Iterable[str],
                   catalog: Mapping[str, str], higher_is_favorable: bool = True) -> ReasonSelection:
    """The principal reasons for an unfavourable decision, most adverse first.

    ``contributions`` are in the explained space; with ``higher_is_favorable`` a negative contribution pushes
    toward the unfavourable side.
    """
    limit = DEFAULT_MAX_REASONS if max_reasons is None else max_reasons
    bases = list(prohibited)
    sign = 1.0 if higher_is_favorable else -1.0
    excluded = [f for f in contributions if is_prohibited(f, bases)]
    adverse = sorted(((sign * v, f) for f, v in contributions.items()
                      if f not in excluded and sign * v < 0 and math.isfinite(v)), key=lambda t: (t[0], t[1]))
    chosen = adverse[:limit]
    tie_extended = False
    if chosen and len(adverse) > limit:
        last = chosen[-1][0]
        for value, feature in adverse[limit:]:
            if math.isclose(value, last, rel_tol=_TIE_RTOL, abs_tol=_TIE_ATOL):
                chosen.append((value, feature))
                tie_extended = True
    if tie_extended:
        log.warning("reason tie at the last place: %d reasons given instead of %d", len(chosen), limit)
    reasons = [{"rank": i + 1, "feature": f, "text": catalog.get(f, _fallback_text(f)),
                "contribution": sign * v}
               for i, (v, f) in enumerate(chosen)]
    excluded_weight = math.fsum(-sign * contributions[f] for f in excluded
                                if sign * contributions[f] < 0 and math.isfinite(contributions[f]))
    reasons_weight = math.fsum(-v for v, _ in chosen)
    return ReasonSelection(reasons, excluded, tie_extended, excluded_weight, reasons_weight)


def incompleteness(selection: ReasonSelection) -> dict[str, Any] | None:
    """Why the reasons of an unfavourable decision cannot stand as its specific principal reasons, or None.

    ``{"code", "detail", "excluded_weight", "reasons_weight"}``; the codes:

    * ``no_lawful_reason``: nothing is left after excluding prohibited bases and protected attributes, which did
      weigh against the applicant: the decision rests on them.
    * ``prohibited_bases_outweigh``: reasons are given, but the excluded features together weighed more against
      the applicant than those reasons together, so the notice would present lesser factors as the principal ones.
    * ``no_adverse_factor``: nothing weighed against the applicant relative to the baseline (with the
      all-applicants baseline, a refused applicant may still be better than average).

    Weights are sums of the contributions toward refusal, in the explained space. Why sums, not "a prohibited
    basis outranks reason #1": a notice lists up to four reasons as a set, and one excluded basis slightly
    above reason #1 still leaves the stated reasons carrying most of the decision.
    """
    if selection.reasons:
        if selection.excluded_weight > selection.reasons_weight:
            code = INCOMPLETE_PROHIBITED_OUTWEIGH
        else:
            return None
    elif selection.excluded_weight > 0:
        code = INCOMPLETE_NO_LAWFUL_REASON
    else:
        code = INCOMPLETE_NO_ADVERSE_FACTOR
    return {"code": code, "detail": _INCOMPLETE_DETAIL[code], "excluded_weight": selection.excluded_weight,
            "reasons_weight": selection.reasons_weight}


def check_catalog(catalog: Mapping[str, str], insufficient: Iterable[str] | None) -> None:
    """Refuse catalog texts that Reg B deems insufficient; the error names the field and the phrase."""
    phrases = [p for p in (insufficient if insufficient is not None else DEFAULT_INSUFFICIENT_TEXTS) if p]
    for feature, text in catalog.items():
        low = " ".join(text.lower().split())
        hit = next((p for p in phrases if " ".join(p.lower().split()) in low), None)
        if hit is not None:
            raise ConfigError(f"reason text is insufficient under the policy (contains {hit!r})",
                              field=f"explain.reason_catalog.{feature}")
        if not low:
            raise ConfigError("reason text is empty", field=f"explain.reason_catalog.{feature}")


def cutoff_rows(binding: Binding, *, field: str) -> tuple[FloatArray, float]:
    """Background rows scoring at or slightly above the cut-off (favourable side), and the band width used.

    The band starts at ``cutoff_delta`` and doubles (with a warning) until it holds ``MIN_CUTOFF_ROWS`` rows.
    """
    import numpy as np

    rows = binding.background.all_rows
    if rows is None or binding.cutoff is None:
        raise ConfigError("the cut-off baseline needs a background and a cutoff", field=field)
    scores = binding.score(rows)
    cutoff, delta = binding.cutoff, binding.cutoff_delta
    upward = binding.is_classifier or binding.higher_is_favorable
    span = float(np.max(scores) - np.min(scores)) or 1.0
    while True:
        if upward:
            mask = (scores >= cutoff) & (scores <= cutoff + delta)
        else:
            mask = (scores <= cutoff) & (scores >= cutoff - delta)
        if int(mask.sum()) >= MIN_CUTOFF_ROWS or delta > 2 * span:
            break
        delta *= 2
    if not mask.any():
        raise ConfigError("no background row scores on the favourable side of the cut-off", field=field)
    if delta != binding.cutoff_delta:
        log.warning("cut-off baseline widened from %.4g to %.4g to hold %d rows",
                    binding.cutoff_delta, delta, int(mask.sum()))
    return np.asarray(rows[mask], dtype=np.float64), delta


def _fallback_text(feature: str) -> str:
    return feature.replace("_", " ")
