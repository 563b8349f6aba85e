"""The window: O(1) running counts, eviction by size and time, labels, categories that never crash."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlguard.fairness.metrics import Thresholds, evaluate, two_proportion_p
from mlguard.fairness.window import FairnessWindow


def test_size_eviction_keeps_counts_exact() -> None:
    w = FairnessWindow(["sex"], size=3)
    for i, (sex, pred) in enumerate([("F", True), ("M", False), ("F", False), ("M", True)]):
        w.add({"sex": sex}, pred, audit_id=str(i))
    snap = {g.key: (g.n, g.selected) for g in w.snapshot()}
    assert snap == {"sex=F": (1, 0), "sex=M": (2, 1)}
    assert not w.set_label("0", True)  # evicted: no longer joinable
    assert w.set_label("3", True)


def test_time_eviction() -> None:
    now = [0.0]
    w = FairnessWindow(["sex"], size=100, seconds=10, clock=lambda: now[0])
    w.add({"sex": "F"}, True, audit_id="a")
    now[0] = 5
    w.add({"sex": "F"}, False)
    now[0] = 10.5
    w.add({"sex": "M"}, True)
    assert len(w) == 2
    assert not w.knows("a")
    assert {g.key: g.n for g in w.snapshot()} == {"sex=F": 1, "sex=M": 1}


def test_relabel_moves_counts() -> None:
    w = FairnessWindow(["sex"], size=10)
    w.add({"sex": "F"}, True, audit_id="a")
    w.set_label("a", True)
    w.set_label("a", False)
    g = w.snapshot()[0]
    assert (g.labelled, g.tp, g.fp) == (1, 0, 1)


@pytest.mark.parametrize("value", [None, 3.2, True, {"a": 1}, [1], "", "   ", "x" * 500, "a|b", "k=v", "Unknown"])
def test_unexpected_values_count_as_unknown(value: Any) -> None:
    w = FairnessWindow(["race", "sex"], size=10)
    keys = w.add({"race": value, "sex": "F"}, True)
    assert keys == ("race=unknown", "sex=F", "race=unknown|sex=F")
    assert [g.unknown for g in w.snapshot() if g.key.startswith("race")] == [True, True]


def test_int_categories_and_bound_on_distinct_values() -> None:
    w = FairnessWindow(["code"], size=100, max_categories=3)
    keys = [w.add({"code": v}, False)[0] for v in (1, 2, "c", "d", 1)]
    assert keys == ["code=1", "code=2", "code=c", "code=other", "code=1"]


def test_allowed_categories_send_anything_else_to_other() -> None:
    """A closed list of values: free text in a protected field (here an SSN) never becomes a group name, and a
    flood of distinct hostile values neither grows the category map nor pushes allowed values into "other"."""
    w = FairnessWindow(["sex", "race"], size=1000, categories={"sex": ["Female", "Male"]})
    assert w.add({"sex": "912-45-6789", "race": "A"}, True) == ("sex=other", "race=A", "sex=other|race=A")
    for i in range(500):
        w.add({"sex": f"free text {i}", "race": "A"}, False)
    assert w.add({"sex": "Female", "race": "B"}, True)[0] == "sex=Female"
    assert w.add({"sex": "unknown", "race": "B"}, True)[0] == "sex=unknown"
    assert "912-45-6789" not in repr([g.key for g in w.snapshot()])
    assert len(w._values["sex"]) <= 2  # only allowed values are remembered


def test_scoring_rate_counts_above_the_median() -> None:
    w = FairnessWindow(["g"], size=10)
    for g, s in [("a", 0.1), ("a", 0.9), ("b", 0.2), ("b", 0.3), ("b", 0.8)]:
        w.add({"g": g}, False, score=s)
    snap = {g.key: g for g in w.snapshot(scores=True)}
    assert (snap["g=a"].above_median, snap["g=a"].scored) == (1, 2)  # median 0.3
    assert snap["g=b"].above_median == 1


def test_status_insufficient_ok_warn_violation() -> None:
    th = Thresholds(min_impact_ratio=0.8, min_group_size=10, significance_alpha=0.05)
    w = FairnessWindow(["g"], size=1000)
    for _ in range(9):
        w.add({"g": "a"}, True)
        w.add({"g": "b"}, False)
    assert evaluate(w.snapshot(), w.dimensions, th).status == "insufficient"
    w = FairnessWindow(["g"], size=1000)
    for i in range(20):
        w.add({"g": "a"}, i % 2 == 0)
        w.add({"g": "b"}, i % 2 == 0)
    assert evaluate(w.snapshot(), w.dimensions, th).status == "ok"
    w = FairnessWindow(["g"], size=1000)  # ratio 0.7 on 10 each: below 4/5 but not significant
    for i in range(10):
        w.add({"g": "a"}, True)
        w.add({"g": "b"}, i < 7)
    rep = evaluate(w.snapshot(), w.dimensions, th)
    assert rep.status == "warn"
    row = next(r for r in rep.dimensions["g"].impact if r.group == "g=b")
    assert row.below_four_fifths and not row.significant and row.p_value > 0.05
    for i in range(200):
        w.add({"g": "a"}, True)
        w.add({"g": "b"}, i % 2 == 0)
    assert evaluate(w.snapshot(), w.dimensions, th).status == "violation"


def test_exclusion_and_unknown_are_reported_not_rated() -> None:
    th = Thresholds(min_group_size=1, exclude_below_share=0.02)
    w = FairnessWindow(["g"], size=1000)
    for _i in range(100):
        w.add({"g": "a"}, True)
        w.add({"g": "b"}, True)
    w.add({"g": "tiny"}, False)
    w.add({"g": None}, False)
    d = evaluate(w.snapshot(), w.dimensions, th).dimensions["g"]
    assert d.unknown == 1 and d.total == 202
    tiny = next(r for r in d.impact if r.group == "g=tiny")
    assert tiny.excluded and tiny.selection_impact_ratio is None and "2%" in (tiny.justification or "")
    assert tiny.n == 1 and tiny.selection_rate == 0.0
    assert d.status == "ok"


def test_significance_tests() -> None:
    from scipy.stats import fisher_exact

    # small counts: Fisher exact
    assert two_proportion_p(1, 10, 8, 10) == pytest.approx(fisher_exact([[1, 9], [8, 2]])[1])
    # large counts: pooled two-proportion z
    p = two_proportion_p(300, 1000, 360, 1000)
    pooled = 660 / 2000
    z = 0.06 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert two_proportion_p(0, 0, 1, 2) == 1.0


def _fisher_exact_rational(x1: int, n1: int, x2: int, n2: int) -> float:
    """The two-sided Fisher p-value in exact rational arithmetic, ties (equal probabilities) included."""
    from fractions import Fraction

    k = x1 + x2
    probs = {a: Fraction(math.comb(n1, a) * math.comb(n2, k - a), math.comb(n1 + n2, k))
             for a in range(max(0, k - n2), min(n1, k) + 1)}
    return float(sum(p for p in probs.values() if p <= probs[x1]))


def test_fisher_exact_matches_exact_arithmetic_and_scipy() -> None:
    import random

    from scipy.stats import fisher_exact

    from mlguard.fairness.metrics import fisher_exact_p

    rng = random.Random(7)
    tables = [(rng.randint(0, n1), n1, rng.randint(0, n2), n2)
              for n1, n2 in ((rng.randint(1, 40), rng.randint(1, 400)) for _ in range(1500))]
    tables += [(0, 5, 0, 7), (5, 5, 7, 7), (1, 10, 8, 10), (2, 4, 2, 4), (0, 1, 1, 1), (3, 3, 0, 900)]
    checked_scipy = 0
    for x1, n1, x2, n2 in tables:
        ours = fisher_exact_p(x1, n1, x2, n2)
        assert ours == pytest.approx(_fisher_exact_rational(x1, n1, x2, n2), rel=1e-9, abs=1e-300)
        assert 0.0 <= ours <= 1.0
        # scipy counts a table exactly as likely as the observed one only when its rounding allows: compare
        # where no other table is within 1e-6 of the observed probability
        k = x1 + x2
        obs = math.comb(n1, x1) * math.comb(n2, x2)
        near = any(a != x1 and abs(math.comb(n1, a) * math.comb(n2, k - a) - obs) <= obs * 1e-6
                   for a in range(max(0, k - n2), min(n1, k) + 1))
        if not near:
            assert ours == pytest.approx(fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])[1], rel=1e-9)
            checked_scipy += 1
    assert checked_scipy > 1000
    # a mirror-image table counts its twin: p = 1 for a perfectly balanced table
    assert fisher_exact_p(2, 4, 2, 4) == pytest.approx(1.0)
    assert fisher_exact_p(0, 0, 1, 2) == 1.0
