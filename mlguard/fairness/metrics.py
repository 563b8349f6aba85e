"""Fairness metrics from per-group counts, defined exactly as fairlearn defines them.

Why our own arithmetic and not fairlearn at run time: fairlearn's ``MetricFrame`` groups a DataFrame on every call
(milliseconds for a 10,000-row window); the live window already holds per-group counts, from which every metric is
a few divisions. The definitions follow fairlearn 0.10+ to the letter, so the numbers are identical (the tests
compare them within 1e-9 on random windows):

* selection rate = selected / n, over every group that has a decision;
* TPR = TP / (TP + FN) and FPR = FP / (FP + TN) per group, over the labelled decisions of groups that have any,
  and 0.0 when the denominator is 0 (scikit-learn's ``confusion_matrix(normalize="true")`` gives 0 there);
* differences use ``method="between_groups"``: max - min over groups; ratios min / max (NaN for 0/0);
* equalized odds difference = the larger of the TPR and FPR differences; ratio = the smaller of the TPR and FPR
  ratios, taken with Python's ``max``/``min`` in the order (TPR, FPR) as fairlearn does.

Then what fairlearn has no notion of: NYC LL144 impact ratios (selection-rate and scoring-rate variants, the 2%
exclusion with its justification, the unknown count), the EEOC four-fifths flag with a significance test, and a
minimum group size below which a group is "insufficient data", neither pass nor fail. Which groups are judged
(and which one the others are measured against) is decided in one place, :func:`eligibility` and
:func:`reference_group`, for the live status, the summary, the gauges and the report alike.

Where an evaluation differs from fairlearn on purpose: a difference or ratio over fewer than two groups compares
nothing, so :func:`evaluate` reports it as NaN (``null`` in JSON, no gauge sample) where fairlearn gives 0.0 and
1.0, which read as perfect parity (one eligible intersection and the rest under the minimum size, say); the
equalized odds figures likewise need two groups with labels. :func:`disparity` itself stays fairlearn-equal.

And a status judged against no threshold: "ok" then only means there was enough data. The report says which
thresholds it was judged against (``thresholds_checked``) and, when none, says so in ``status_detail``; the
status values themselves are unchanged (they are the ``MLGuard-Fairness`` header's).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast, get_args

from mlguard.fairness.window import OTHER, GroupSnapshot

Status = Literal["ok", "warn", "violation", "insufficient"]
Correction = Literal["none", "holm", "bonferroni"]
"""Multiple-comparison correction of the significance tests of one dimension (see :func:`adjust_p_values`).
The same values as ``mlguard.policy.model.SignificanceCorrection`` (a test keeps the two in step)."""
STATUS_ORDER: dict[str, int] = {"insufficient": -1, "ok": 0, "warn": 1, "violation": 2}
_BY_ORDER: dict[int, Status] = {-1: "insufficient", 0: "ok", 1: "warn", 2: "violation"}
FISHER_MIN_EXPECTED = 5.0
LL144_RULE = "6 RCNY 5-301"
CHECKED_THRESHOLDS = ("min_impact_ratio", "max_demographic_parity_difference", "max_equalized_odds_difference")
"""The thresholds a status is judged against; the other parameters only shape how (group sizes, significance)."""
NO_THRESHOLD_DETAIL = ("no fairness threshold is set (min_impact_ratio, max_demographic_parity_difference and "
                       "max_equalized_odds_difference are all null in the composed policies): nothing is checked, "
                       "so the status can only be ok (meaning only: enough data) or insufficient; add a policy "
                       "that sets one (eeoc_four_fifths, nyc_ll144, ecoa) or set one in a policy of your own "
                       "that extends yours")


# ---------------------------------------------------------------------------------------------- per group

def selection_rate(g: GroupSnapshot) -> float:
    return g.selected / g.n if g.n else math.nan


def tpr(g: GroupSnapshot) -> float:
    pos = g.tp + g.fn
    return g.tp / pos if pos else 0.0


def fpr(g: GroupSnapshot) -> float:
    neg = g.fp + g.tn
    return g.fp / neg if neg else 0.0


def fnr(g: GroupSnapshot) -> float:
    pos = g.tp + g.fn
    return g.fn / pos if pos else 0.0


def _diff(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) - min(vals) if vals else math.nan


def _ratio(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan
    hi, lo = max(vals), min(vals)
    if hi == 0:
        return math.nan if lo == 0 else math.inf
    return lo / hi


# ---------------------------------------------------------------------------------------------- one dimension

@dataclass(frozen=True, slots=True)
class DisparityMetrics:
    """fairlearn's disparity metrics over one set of groups (one dimension: "sex", "race" or "sex|race")."""

    groups: tuple[str, ...]
    selection_rate: dict[str, float]
    tpr: dict[str, float]
    fpr: dict[str, float]
    fnr: dict[str, float]
    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float
    equalized_odds_ratio: float
    tpr_difference: float
    fpr_difference: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": list(self.groups),
            "selection_rate": {k: _num(v) for k, v in self.selection_rate.items()},
            "tpr": {k: _num(v) for k, v in self.tpr.items()},
            "fpr": {k: _num(v) for k, v in self.fpr.items()},
            "fnr": {k: _num(v) for k, v in self.fnr.items()},
            "demographic_parity_difference": _num(self.demographic_parity_difference),
            "demographic_parity_ratio": _num(self.demographic_parity_ratio),
            "equalized_odds_difference": _num(self.equalized_odds_difference),
            "equalized_odds_ratio": _num(self.equalized_odds_ratio),
            "tpr_difference": _num(self.tpr_difference),
            "fpr_difference": _num(self.fpr_difference),
        }


def disparity(groups: Iterable[GroupSnapshot]) -> DisparityMetrics:
    """Selection rates, TPR/FPR/FNR and fairlearn's four disparity metrics over ``groups``.

    Examples
    --------
    >>> a = GroupSnapshot("sex=F", "sex", False, n=10, selected=4)
    >>> b = GroupSnapshot("sex=M", "sex", False, n=10, selected=8)
    >>> m = disparity([a, b])
    >>> round(m.demographic_parity_difference, 3), m.demographic_parity_ratio
    (0.4, 0.5)
    """
    gs = [g for g in groups if g.n > 0]
    sel = {g.key: selection_rate(g) for g in gs}
    lab = [g for g in gs if g.labelled > 0]
    t = {g.key: tpr(g) for g in lab}
    f = {g.key: fpr(g) for g in lab}
    fn = {g.key: fnr(g) for g in lab}
    tpr_d, fpr_d = _diff(list(t.values())), _diff(list(f.values()))
    tpr_r, fpr_r = _ratio(list(t.values())), _ratio(list(f.values()))
    return DisparityMetrics(
        groups=tuple(g.key for g in gs),
        selection_rate=sel, tpr=t, fpr=f, fnr=fn,
        demographic_parity_difference=_diff(list(sel.values())),
        demographic_parity_ratio=_ratio(list(sel.values())),
        # fairlearn: max(eo.difference()) / min(eo.ratio()) with Python's builtins over (tpr, fpr)
        equalized_odds_difference=max(tpr_d, fpr_d) if lab else math.nan,
        equalized_odds_ratio=min(tpr_r, fpr_r) if lab else math.nan,
        tpr_difference=tpr_d, fpr_difference=fpr_d,
    )


# ---------------------------------------------------------------------------------------------- significance

@functools.lru_cache(maxsize=8192)
def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value that two proportions differ: pooled z-test, or Fisher's exact test for small counts.

    Cached: a pure function of four counts, and between two evaluations of a window (every
    ``fairness.evaluate_every`` decisions) most small groups' counts have not moved.

    Why both: the z approximation is fine for large windows; with an expected cell under 5 it is unreliable, and
    the Uniform Guidelines ask for a proper test for small samples, so Fisher's exact is used.
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    total = n1 + n2
    pooled = (x1 + x2) / total
    expected = (n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled))
    if min(expected) < FISHER_MIN_EXPECTED:
        return fisher_exact_p(x1, n1, x2, n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(x1 / n1 - x2 / n2) / se
    return math.erfc(z / math.sqrt(2.0))


_FISHER_REL = math.log1p(1e-7)


def fisher_exact_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided Fisher exact p-value of the 2x2 table [[x1, n1 - x1], [x2, n2 - x2]].

    The usual definition (R's ``fisher.test``, scipy's ``fisher_exact(alternative="two-sided")``): the sum of
    the hypergeometric probabilities of every table with the same margins that is no more likely than the
    observed one. "No more likely" allows a relative 1e-7, as R does, so a table exactly as likely as the
    observed one (a mirror image) always counts; scipy allows 1e-14, below the rounding of its own
    probabilities, so there it may or may not. Elsewhere the two agree.

    Why not scipy at run time: ``fisher_exact`` cost about 0.5 ms a call here, several calls per window
    evaluation with small groups, which put a 2-3 ms spike on every ``evaluate_every``-th request. The sum runs
    over the support of the first cell, at most min(n1, n2, column totals) + 1 terms, and Fisher is only used
    when an expected cell is under 5, so it is short. tests/fairness/test_window.py compares it with scipy on
    thousands of tables and with exact rational arithmetic.
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    k = x1 + x2
    lo, hi = max(0, k - n2), min(n1, k)

    def logp(a: int) -> float:  # log of C(n1, a) * C(n2, k - a), the common denominator C(n, k) left out
        return (math.lgamma(n1 + 1) - math.lgamma(a + 1) - math.lgamma(n1 - a + 1)
                + math.lgamma(n2 + 1) - math.lgamma(k - a + 1) - math.lgamma(n2 - k + a + 1))

    logs = [logp(a) for a in range(lo, hi + 1)]
    top = max(logs)
    cut = logs[x1 - lo] + _FISHER_REL
    p = math.fsum(math.exp(v - top) for v in logs if v <= cut) / math.fsum(math.exp(v - top) for v in logs)
    return min(1.0, p)


def adjust_p_values(p_values: Sequence[float], method: Correction) -> list[float]:
    """The p-values adjusted for testing them together, in the order given (``"none"`` returns them as they are).

    Why: each test is judged at ``significance_alpha``, so with m tests in one dimension (an intersectional one
    has ten groups or more) the chance that at least one flags a difference that is not there grows towards
    1 - (1 - alpha)^m. Comparing adjusted p-values with alpha keeps that family-wise error at alpha:

    * ``"bonferroni"``: min(1, m * p);
    * ``"holm"`` (Holm 1979, Scand. J. Statist. 6:65-70): sort the p-values, p_(1) <= ... <= p_(m); the adjusted
      p_(i) is the largest over j <= i of min(1, (m - j + 1) * p_(j)), so adjusted values keep the order of the
      raw ones. Never larger than Bonferroni's, and it controls the same error, so it flags at least as much.

    Tied p-values get the same adjusted value. Written out here (a few lines) rather than taken from
    statsmodels' ``multipletests``, which gives the same numbers, to add no dependency.

    Examples
    --------
    >>> adjust_p_values([0.01, 0.04, 0.03], "holm")
    [0.03, 0.06, 0.06]
    >>> adjust_p_values([0.01, 0.04, 0.03], "bonferroni")
    [0.03, 0.12, 0.09]
    """
    m = len(p_values)
    if method == "none":
        return list(p_values)
    if method == "bonferroni":
        return [min(1.0, m * p) for p in p_values]
    if method != "holm":
        raise ValueError(f"unknown significance correction {method!r} (expected one of {get_args(Correction)})")
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p_values[k])):  # rank = j - 1
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def _correction(value: Any) -> Correction:
    """``value`` as a :data:`Correction`; a ValueError for anything else (a typo must not mean "none")."""
    if value not in get_args(Correction):
        raise ValueError(f"significance_correction must be one of {', '.join(get_args(Correction))}, "
                         f"not {value!r}")
    return cast(Correction, value)


# ---------------------------------------------------------------------------------------------- thresholds

@dataclass(frozen=True, slots=True)
class Thresholds:
    """The policy's fairness parameters (the strictest of the composed policies). None: not checked.

    ``significance_correction`` defaults to ``"none"``: no regulation asks for a correction, and a compliance
    tool must not flag less than it did unless a policy says so (see :func:`evaluate` for the family of tests).
    """

    min_impact_ratio: float | None = 0.8
    max_demographic_parity_difference: float | None = None
    max_equalized_odds_difference: float | None = None
    min_group_size: int = 30
    exclude_below_share: float = 0.02
    significance_alpha: float = 0.05
    report_unknown: bool = True
    significance_correction: Correction = "none"

    def __post_init__(self) -> None:
        _correction(self.significance_correction)

    @classmethod
    def from_policy(cls, fairness: Any) -> Thresholds:
        """Read ``policy.fairness`` (any object with the promised attribute names; missing ones default)."""
        d = cls()

        def get(name: str, default: Any) -> Any:
            value = getattr(fairness, name, None) if fairness is not None else None
            return default if value is None else value

        return cls(
            min_impact_ratio=getattr(fairness, "min_impact_ratio", d.min_impact_ratio),
            max_demographic_parity_difference=getattr(fairness, "max_demographic_parity_difference", None),
            max_equalized_odds_difference=getattr(fairness, "max_equalized_odds_difference", None),
            min_group_size=int(get("min_group_size", d.min_group_size)),
            # no exclusion unless a policy (LL144) allows it
            exclude_below_share=float(get("exclude_below_share", 0.0)) if fairness is not None
            else d.exclude_below_share,
            significance_alpha=float(get("significance_alpha", d.significance_alpha)),
            report_unknown=bool(get("report_unknown", d.report_unknown)),
            significance_correction=_correction(get("significance_correction", d.significance_correction)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @property
    def checked(self) -> tuple[str, ...]:
        """Names of the thresholds that are set (:data:`CHECKED_THRESHOLDS`); empty: no status can be worse
        than "ok"."""
        return tuple(k for k in CHECKED_THRESHOLDS if getattr(self, k) is not None)


@dataclass(frozen=True, slots=True)
class ImpactRow:
    """One LL144 category of one dimension."""

    group: str
    n: int
    share: float
    selected: int
    selection_rate: float
    selection_impact_ratio: float | None
    scoring_rate: float | None
    scoring_impact_ratio: float | None
    excluded: bool
    justification: str | None
    insufficient: bool
    below_four_fifths: bool
    p_value: float | None
    """Raw two-sided p-value of the test against the best group; None when the row is not tested."""
    significant: bool
    """``p_adjusted`` < ``significance_alpha``."""
    p_adjusted: float | None = None
    """``p_value`` adjusted over the dimension's family of tests (equal to it under correction "none")."""
    eligible: bool = False
    """The group can be judged (:func:`eligibility`): only such rows can breach, or count in a lowest ratio."""
    reference: bool = False
    """The group the selection impact ratios of its dimension are measured against (:func:`reference_group`)."""

    def as_dict(self) -> dict[str, Any]:
        return {k: _num(getattr(self, k)) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class DimensionReport:
    """Everything about one dimension: fairlearn metrics over all groups and over the eligible ones, LL144 rows,
    the breaches found and their significance."""

    dimension: str
    all_groups: DisparityMetrics
    eligible: DisparityMetrics
    impact: list[ImpactRow]
    unknown: int
    total: int
    breaches: list[dict[str, Any]]
    status: Status
    reference: str | None = None
    """The group the selection impact ratios are measured against; None when no group is eligible."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension, "status": self.status, "total": self.total, "unknown": self.unknown,
            "reference": self.reference,
            "all_groups": self.all_groups.as_dict(), "eligible": self.eligible.as_dict(),
            "impact": [r.as_dict() for r in self.impact], "breaches": self.breaches,
        }


@dataclass(slots=True)
class FairnessReport:
    """All dimensions of one window, and the worst status among them."""

    status: Status
    dimensions: dict[str, DimensionReport] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    decisions: int = 0
    labelled: int = 0
    _summary: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """The compact figures for an audit record and a header: worst value of each metric over dimensions.

        Computed once per report (a report is re-used for ``evaluate_every`` decisions, each record carrying
        its summary); callers treat the dict as read-only."""
        if self._summary is None:
            self._summary = self._make_summary()
        return self._summary

    def _make_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decisions": self.decisions, "labelled": self.labelled}
        for name in ("demographic_parity_difference", "equalized_odds_difference"):
            vals = [getattr(d.eligible, name) for d in self.dimensions.values()]
            out[name] = _num(_worst(vals, max))
        ratios = [v for d in self.dimensions.values() if (v := lowest_impact_ratio(d.impact)) is not None]
        out["min_impact_ratio"] = _num(min(ratios)) if ratios else None
        out["breaches"] = [b["metric"] + ":" + d.dimension for d in self.dimensions.values() for b in d.breaches]
        return out

    @property
    def status_detail(self) -> str | None:
        """What the status cannot say by itself: that nothing was checked (no threshold set); else None."""
        return None if self.thresholds.checked else NO_THRESHOLD_DETAIL

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "status_detail": self.status_detail,
                "thresholds_checked": list(self.thresholds.checked),
                "decisions": self.decisions, "labelled": self.labelled,
                "thresholds": self.thresholds.as_dict(),
                "dimensions": {k: v.as_dict() for k, v in self.dimensions.items()}}


def _worst(vals: list[float], fn: Any) -> float | None:
    clean = [v for v in vals if not math.isnan(v)]
    return fn(clean) if clean else None


def evaluate(snapshot: Sequence[GroupSnapshot], dimensions: Sequence[str], thresholds: Thresholds
             ) -> FairnessReport:
    """Compute every metric per dimension and the status against ``thresholds``.

    Status: "insufficient" when no dimension has two eligible groups (:func:`eligibility`: a known category, not
    the ``other`` catch-all, at least ``min_group_size`` decisions, not excluded under the 2% rule); else
    "violation" when a threshold is breached and the breach is statistically significant at
    ``significance_alpha``; "warn" when breached but not significant; "ok" otherwise.

    Significance is judged on p-values adjusted by ``significance_correction`` over one *family*: every
    significance test made in one evaluation of one dimension, i.e. the tests behind that dimension's breaches.
    These are one test per impact-ratio row below ``min_impact_ratio`` that is eligible (that group against
    the reference group, the most selected eligible one: :func:`reference_group`), plus the demographic parity
    test and the equalized odds test when those thresholds are set and exceeded. Dimensions (``sex``, ``race``,
    ``sex|race``) are separate families, each judged as its own report would be; a dimension with m tests adjusts
    over m. Each breach carries the raw ``p_value`` and ``p_adjusted``; under "none" the two are equal and nothing
    changes.
    """
    by_dim: dict[str, list[GroupSnapshot]] = {d: [] for d in dimensions}
    for g in snapshot:
        by_dim.setdefault(g.dimension, []).append(g)
    report = FairnessReport(status="insufficient", thresholds=thresholds)
    first = by_dim.get(dimensions[0], []) if dimensions else []
    report.decisions = sum(g.n for g in first)
    report.labelled = sum(g.labelled for g in first)
    worst = -1
    for dim in dimensions:
        dr = _dimension(dim, by_dim.get(dim, []), thresholds)
        report.dimensions[dim] = dr
        worst = max(worst, STATUS_ORDER[dr.status])
    report.status = _BY_ORDER[worst]
    return report


def _dimension(dim: str, groups: list[GroupSnapshot], th: Thresholds) -> DimensionReport:
    el = eligibility(groups, th)
    known = [g for g in groups if not g.unknown]
    eligible = list(el.eligible)
    elig = _between_two_or_more(disparity(eligible))
    reference = reference_group(eligible)
    impact = _impact_rows(known, el, reference, th)
    differences = _difference_tests(eligible, elig, th) if len(eligible) >= 2 else []
    # the family (see evaluate): the rows with a p-value are exactly the eligible ones below four-fifths
    tested = [i for i, r in enumerate(impact) if r.p_value is not None]
    raw = [cast(float, impact[i].p_value) for i in tested] + [d["p_value"] for d in differences]
    adjusted = adjust_p_values(raw, th.significance_correction)
    for i, p_adj in zip(tested, adjusted[:len(tested)], strict=True):
        impact[i] = replace(impact[i], p_adjusted=p_adj, significant=p_adj < th.significance_alpha)
    breaches: list[dict[str, Any]] = []
    if len(eligible) >= 2:
        breaches.extend(_impact_breaches(impact, reference, th))
        for d, p_adj in zip(differences, adjusted[len(tested):], strict=True):
            breaches.append({**d, "p_value": _num(d["p_value"]), "p_adjusted": _num(p_adj),
                             "significant": p_adj < th.significance_alpha})
        if not breaches:
            status: Status = "ok"
        elif any(b["significant"] for b in breaches):
            status = "violation"
        else:
            status = "warn"
    else:
        status = "insufficient"
    unknown = sum(g.n for g in groups if g.unknown)
    return DimensionReport(dim, _between_two_or_more(disparity(groups)), elig, impact, unknown, el.total, breaches,
                           status, reference=reference.key if reference is not None else None)


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Which groups of one dimension can be judged, and why each other one cannot (see :func:`eligibility`)."""

    total: int
    """Decisions of the dimension, unknown category included (the denominator of a group's share)."""
    excluded: dict[str, str]
    """Known groups under ``exclude_below_share``, each with its justification."""
    insufficient: frozenset[str]
    """Known groups under ``min_group_size``."""
    catch_all: frozenset[str]
    """Groups that are no category: ``other`` (a value not declared, or beyond ``max_categories``), alone or in an
    intersection. Unknown groups are left out of every set here and of ``eligible``."""
    eligible: tuple[GroupSnapshot, ...]


def is_catch_all(key: str) -> bool:
    """Whether group ``key`` holds ``other`` (alone or as part of an intersection): a bucket of values that are
    no declared category, so no category the rules can judge or compare with."""
    return any(part.partition("=")[2] == OTHER for part in key.split("|"))


def eligibility(groups: Sequence[GroupSnapshot], th: Thresholds) -> Eligibility:
    """Split one dimension's groups into those that can be judged and the rest.

    Eligible: a known category (not ``unknown``, not the ``other`` catch-all), at least ``min_group_size``
    decisions, and at least ``exclude_below_share`` of the dimension's decisions. Only eligible groups are
    compared between (the ``eligible`` fairlearn figures), tested, breached, or chosen as the reference group.

    Why one function: the live status, the record's summary, the admin endpoint, the gauges, the report and its
    periods all judge the same groups; copies of this rule had drifted apart (the reference group was chosen
    among groups this rule would not judge, see :func:`reference_group`).
    """
    total = sum(g.n for g in groups)
    excluded: dict[str, str] = {}
    insufficient: set[str] = set()
    catch_all: set[str] = set()
    eligible: list[GroupSnapshot] = []
    for g in groups:
        if g.unknown:
            continue
        share = g.n / total if total else 0.0
        if share < th.exclude_below_share:
            excluded[g.key] = (
                f"{g.key} is {share:.2%} of the {total} decisions, under the {th.exclude_below_share:.0%} "
                f"share below which {LL144_RULE} allows excluding a category from impact ratios; its count and "
                "rate are still reported"
            )
        if g.n < th.min_group_size:
            insufficient.add(g.key)
        if is_catch_all(g.key):
            catch_all.add(g.key)
        if g.key not in excluded and g.key not in insufficient and g.key not in catch_all:
            eligible.append(g)
    return Eligibility(total, excluded, frozenset(insufficient), frozenset(catch_all), tuple(eligible))


def reference_group(eligible: Iterable[GroupSnapshot],
                    rate: Callable[[GroupSnapshot], float] = selection_rate) -> GroupSnapshot | None:
    """The group impact ratios are measured against: the highest ``rate`` among ``eligible`` groups (as
    :func:`eligibility` gives them); None when there is none, and then there is no ratio.

    Why only eligible groups: LL144 (6 RCNY 5-300, "impact ratio") and the four-fifths rule (29 CFR 1607.4(D))
    compare each category with the highest selection (or scoring) rate among the categories that are reported
    and judged. The ``other`` catch-all is no category, and a group under the minimum size is "insufficient
    data", whose rate is noise: with either as the reference (n=7 selected at 100%, say) every real group's
    ratio fell, and a route was halted on a ratio measured against a group too small to judge. The same holds
    for a group excluded under the 2% share. Ties go to the first group by key, so the choice (and the p-value
    of each test against it) does not depend on the order of the snapshot.
    """
    best: GroupSnapshot | None = None
    best_rate = -math.inf
    for g in sorted(eligible, key=lambda x: x.key):
        r = rate(g)
        if not math.isnan(r) and r > best_rate:
            best, best_rate = g, r
    return best


def scoring_rate(g: GroupSnapshot) -> float:
    """LL144's scoring rate: the share of the group's scored decisions above the window's median score; NaN when
    scores were not asked for or the group has none."""
    return g.above_median / g.scored if g.above_median is not None and g.scored else math.nan


def lowest_impact_ratio(impact: Iterable[ImpactRow]) -> float | None:
    """The lowest selection impact ratio among the eligible rows of one dimension; None when fewer than two rows
    are eligible (the reference's own 1.0 compares nothing, as in :func:`_between_two_or_more`)."""
    ratios = [r.selection_impact_ratio for r in impact if r.eligible and r.selection_impact_ratio is not None]
    return min(ratios) if len(ratios) >= 2 else None


def _between_two_or_more(m: DisparityMetrics) -> DisparityMetrics:
    """``m`` with the between-groups figures NaN where fewer than two groups take part (see the module docstring):
    demographic parity needs two groups with decisions, equalized odds two groups with labels."""
    nan = math.nan
    if len(m.groups) < 2:
        m = replace(m, demographic_parity_difference=nan, demographic_parity_ratio=nan)
    if len(m.tpr) < 2:
        m = replace(m, equalized_odds_difference=nan, equalized_odds_ratio=nan, tpr_difference=nan,
                    fpr_difference=nan)
    return m


def _impact_rows(known: list[GroupSnapshot], el: Eligibility, reference: GroupSnapshot | None, th: Thresholds
                 ) -> list[ImpactRow]:
    """The LL144 rows with raw p-values; ``p_adjusted`` and ``significant`` are set once the family is known.

    Every known group not excluded by share gets its ratios (against :func:`reference_group`'s choice), so a
    small group's or ``other``'s figure is still shown; only eligible rows are judged against four-fifths."""
    eligible = {g.key for g in el.eligible}
    best_sel = selection_rate(reference) if reference is not None else math.nan
    score_ref = reference_group(el.eligible, scoring_rate)
    best_score = scoring_rate(score_ref) if score_ref is not None else math.nan
    rows: list[ImpactRow] = []
    for g in sorted(known, key=lambda x: x.key):
        rate = selection_rate(g)
        is_in = g.key not in el.excluded
        ir = rate / best_sel if is_in and best_sel > 0 else None
        sr = scoring_rate(g)
        sir = sr / best_score if is_in and not math.isnan(sr) and best_score > 0 else None
        below = (ir is not None and th.min_impact_ratio is not None and ir < th.min_impact_ratio
                 and g.key in eligible)
        p = None
        if below and reference is not None:
            p = two_proportion_p(g.selected, g.n, reference.selected, reference.n)
        rows.append(ImpactRow(
            group=g.key, n=g.n, share=g.n / el.total if el.total else 0.0, selected=g.selected,
            selection_rate=rate, selection_impact_ratio=ir, scoring_rate=None if math.isnan(sr) else sr,
            scoring_impact_ratio=sir, excluded=not is_in, justification=el.excluded.get(g.key),
            insufficient=g.key in el.insufficient, below_four_fifths=below, p_value=p, significant=False,
            p_adjusted=None, eligible=g.key in eligible, reference=reference is not None and g.key == reference.key,
        ))
    return rows


def _impact_breaches(impact: list[ImpactRow], reference: GroupSnapshot | None, th: Thresholds
                     ) -> list[dict[str, Any]]:
    return [{"metric": "impact_ratio", "group": row.group, "value": _num(row.selection_impact_ratio),
             "threshold": th.min_impact_ratio, "reference": reference.key if reference is not None else None,
             "p_value": _num(row.p_value), "p_adjusted": _num(row.p_adjusted), "significant": row.significant}
            for row in impact if row.below_four_fifths and row.eligible]


def _difference_tests(eligible: list[GroupSnapshot], m: DisparityMetrics, th: Thresholds
                      ) -> list[dict[str, Any]]:
    """The demographic parity and equalized odds breaches, each with its raw p-value (a float, not yet
    JSON-cleaned); their significance is decided with the rest of the family in :func:`_dimension`."""
    out: list[dict[str, Any]] = []
    if th.max_demographic_parity_difference is not None and \
            m.demographic_parity_difference > th.max_demographic_parity_difference:
        hi = max(eligible, key=selection_rate)
        lo = min(eligible, key=selection_rate)
        p = two_proportion_p(hi.selected, hi.n, lo.selected, lo.n)
        out.append({"metric": "demographic_parity_difference", "value": _num(m.demographic_parity_difference),
                    "threshold": th.max_demographic_parity_difference, "p_value": p})
    if th.max_equalized_odds_difference is not None and \
            not math.isnan(m.equalized_odds_difference) and \
            m.equalized_odds_difference > th.max_equalized_odds_difference:
        lab = [g for g in eligible if g.labelled > 0]
        use_tpr = m.tpr_difference >= m.fpr_difference
        rate = tpr if use_tpr else fpr
        hi, lo = max(lab, key=rate), min(lab, key=rate)
        if use_tpr:
            p = two_proportion_p(hi.tp, hi.tp + hi.fn, lo.tp, lo.tp + lo.fn)
        else:
            p = two_proportion_p(hi.fp, hi.fp + hi.tn, lo.fp, lo.fp + lo.tn)
        out.append({"metric": "equalized_odds_difference", "value": _num(m.equalized_odds_difference),
                    "threshold": th.max_equalized_odds_difference, "p_value": p})
    return out


def _num(v: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


__all__ = [
    "CHECKED_THRESHOLDS", "NO_THRESHOLD_DETAIL", "Correction", "DimensionReport", "DisparityMetrics",
    "Eligibility", "FairnessReport", "ImpactRow", "Status", "Thresholds",
    "adjust_p_values", "disparity", "eligibility", "evaluate", "fisher_exact_p", "fnr", "fpr", "is_catch_all",
    "lowest_impact_ratio", "reference_group", "scoring_rate", "selection_rate", "tpr", "two_proportion_p",
]
