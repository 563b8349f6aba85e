"""Multiple-comparison correction of a dimension's significance tests (``fairness.significance_correction``).

Expected numbers are worked out by hand (and the raw p-values cross-checked once with scipy's normal
distribution): the pooled z-test of 44/100 against 60/100 has z = 0.16 / sqrt(0.52 * 0.48 * 0.02) = 2.2646,
p = 0.0235401.
"""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace
from typing import Any, get_args

import pytest

from mlguard.fairness.metrics import Correction, FairnessReport, Thresholds, adjust_p_values, evaluate
from mlguard.fairness.window import GroupSnapshot
from mlguard.policy.model import SignificanceCorrection

# --------------------------------------------------------------------------------------- the adjustment


@pytest.mark.parametrize(("raw", "holm", "bonferroni"), [
    # m = 4: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept at 0.06
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02], [0.04, 0.16, 0.12, 0.02]),
    # ties: 0.02 x3 = 0.06, 0.02 x2 = 0.04 -> 0.06 (a tie gets the same value), 0.5 x1
    ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5], [0.06, 0.06, 1.0]),
    # the cap at 1: 0.01 x3 = 0.03, 0.6 x2 = 1.2 -> 1, 0.7 x1 = 0.7 -> 1 (monotone)
    ([0.6, 0.7, 0.01], [1.0, 1.0, 0.03], [1.0, 1.0, 0.03]),
    ([0.5, 0.6], [1.0, 1.0], [1.0, 1.0]),
    ([1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]),
    # 0.3 x3 = 0.9, 0.4 x2 = 0.8 -> 0.9, 0.9 x1 = 0.9
    ([0.3, 0.4, 0.9], [0.9, 0.9, 0.9], [0.9, 1.0, 1.0]),
    ([0.03], [0.03], [0.03]),
    ([], [], []),
])
def test_holm_and_bonferroni_on_hand_checked_vectors(raw: list[float], holm: list[float],
                                                     bonferroni: list[float]) -> None:
    assert adjust_p_values(raw, "holm") == pytest.approx(holm, abs=1e-12)
    assert adjust_p_values(raw, "bonferroni") == pytest.approx(bonferroni, abs=1e-12)
    assert adjust_p_values(raw, "none") == raw


def test_holm_is_monotone_capped_and_between_raw_and_bonferroni() -> None:
    rng = random.Random(1979)
    for _ in range(300):
        m = rng.randint(1, 15)
        raw = [rng.choice([rng.random(), rng.random() ** 4, 0.05, 1.0]) for _ in range(m)]
        holm = adjust_p_values(raw, "holm")
        bonf = adjust_p_values(raw, "bonferroni")
        order = sorted(range(m), key=lambda i: raw[i])
        assert all(holm[a] <= holm[b] for a, b in itertools.pairwise(order))  # keeps the raw order
        for p, h, b in zip(raw, holm, bonf, strict=True):
            assert p <= h <= b <= 1.0
        for i in range(m):
            for j in range(m):
                if raw[i] == raw[j]:
                    assert holm[i] == holm[j]  # ties adjust alike


def test_holm_decisions_match_the_step_down_procedure() -> None:
    """Adjusted p-values against Holm's procedure as first stated, at many levels: walk the sorted p-values,
    reject while p_(i) <= alpha / (m - i + 1), stop at the first that is not; an adjusted p-value is <= alpha
    exactly for the rejected hypotheses. (Bonferroni: reject when p <= alpha / m.)"""
    rng = random.Random(65)
    for _ in range(300):
        raw = [rng.random() ** 3 for _ in range(rng.randint(1, 12))]
        m = len(raw)
        holm = adjust_p_values(raw, "holm")
        bonf = adjust_p_values(raw, "bonferroni")
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.2, 0.5):
            rejected: set[int] = set()
            for i, k in enumerate(sorted(range(m), key=lambda j: raw[j])):
                if raw[k] > alpha / (m - i):
                    break
                rejected.add(k)
            assert {k for k in range(m) if holm[k] <= alpha} == rejected
            assert {k for k in range(m) if bonf[k] <= alpha} == {k for k in range(m) if raw[k] <= alpha / m}


def test_unknown_correction_is_refused() -> None:
    with pytest.raises(ValueError, match="holm"):
        adjust_p_values([0.1], "holmes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="significance_correction"):
        Thresholds(significance_correction="Holm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="significance_correction"):
        Thresholds.from_policy(SimpleNamespace(significance_correction="sidak"))


def test_the_fairness_and_policy_literals_agree() -> None:
    assert get_args(Correction) == get_args(SignificanceCorrection) == ("none", "holm", "bonferroni")


def test_default_is_none() -> None:
    assert Thresholds().significance_correction == "none"
    assert Thresholds.from_policy(None).significance_correction == "none"
    assert Thresholds.from_policy(SimpleNamespace(significance_correction=None)).significance_correction == "none"
    assert Thresholds.from_policy(SimpleNamespace(significance_correction="holm")).significance_correction == "holm"
    assert Thresholds().as_dict()["significance_correction"] == "none"


# --------------------------------------------------------------------------------------- evaluations

P44, P45, P47, P38 = 0.0235401, 0.0336721, 0.0653292, 0.0018589  # x/100 against 60/100, pooled z


def _groups(dim: str, selected: dict[str, int]) -> list[GroupSnapshot]:
    return [GroupSnapshot(f"{dim}={k}", dim, False, n=100, selected=v) for k, v in selected.items()]


SIX = {"A": 60, "B": 44, "C": 45, "D": 47, "E": 47, "F": 47}  # every rate below 0.8 * 0.6 = 0.48 but A's


def _breaches(rep: FairnessReport, dim: str) -> dict[str, dict[str, Any]]:
    """The breaches of ``dim`` by group (impact ratios) or by metric (parity and odds differences)."""
    return {b.get("group", b["metric"]): b for b in rep.dimensions[dim].breaches}


def test_six_groups_two_raw_significant_holm_none() -> None:
    snap = _groups("race", SIX)
    plain = evaluate(snap, ["race"], Thresholds(min_impact_ratio=0.8))
    holm = evaluate(snap, ["race"], Thresholds(min_impact_ratio=0.8, significance_correction="holm"))
    bonf = evaluate(snap, ["race"], Thresholds(min_impact_ratio=0.8, significance_correction="bonferroni"))

    raw = _breaches(plain, "race")
    assert sorted(raw) == ["race=B", "race=C", "race=D", "race=E", "race=F"]  # the family: m = 5
    assert raw["race=B"]["p_value"] == pytest.approx(P44, abs=1e-7)
    assert raw["race=C"]["p_value"] == pytest.approx(P45, abs=1e-7)
    assert raw["race=D"]["p_value"] == pytest.approx(P47, abs=1e-7)
    # "none": unchanged behaviour, p_adjusted is the raw p-value; two significant -> violation
    assert all(b["p_adjusted"] == b["p_value"] for b in raw.values())
    assert [g for g, b in sorted(raw.items()) if b["significant"]] == ["race=B", "race=C"]
    assert plain.status == "violation" and plain.dimensions["race"].status == "violation"

    # Holm: 0.0235401 x5 = 0.1177003; 0.0336721 x4 = 0.1346883; 0.0653292 x3 = 0.1959877 (x2, x1 kept)
    hb = _breaches(holm, "race")
    assert hb["race=B"]["p_adjusted"] == pytest.approx(0.1177003, abs=1e-6)
    assert hb["race=C"]["p_adjusted"] == pytest.approx(0.1346883, abs=1e-6)
    for g in ("race=D", "race=E", "race=F"):
        assert hb[g]["p_adjusted"] == pytest.approx(0.1959877, abs=1e-6)
    assert all(hb[g]["p_value"] == raw[g]["p_value"] for g in raw)  # p_value stays raw
    assert not any(b["significant"] for b in hb.values())
    assert holm.status == "warn" and holm.dimensions["race"].status == "warn"

    bb = _breaches(bonf, "race")
    assert bb["race=C"]["p_adjusted"] == pytest.approx(0.1683603, abs=1e-6)
    assert bb["race=D"]["p_adjusted"] == pytest.approx(0.3266461, abs=1e-6)
    assert bonf.status == "warn"

    # the impact rows carry the same numbers; p_value keeps its meaning (raw)
    rows = {r.group: r for r in holm.dimensions["race"].impact}
    assert rows["race=B"].p_value == pytest.approx(P44, abs=1e-7)
    assert rows["race=B"].p_adjusted == pytest.approx(0.1177003, abs=1e-6) and not rows["race=B"].significant
    assert rows["race=A"].p_value is None and rows["race=A"].p_adjusted is None
    plain_rows = {r.group: r for r in plain.dimensions["race"].impact}
    assert plain_rows["race=B"].significant and plain_rows["race=B"].p_adjusted == plain_rows["race=B"].p_value
    assert holm.dimensions["race"].as_dict()["impact"][1]["p_adjusted"] == pytest.approx(0.1177003, abs=1e-6)


def test_six_groups_holm_keeps_one_of_two() -> None:
    snap = _groups("race", {**SIX, "B": 38})
    plain = evaluate(snap, ["race"], Thresholds())
    holm = evaluate(snap, ["race"], Thresholds(significance_correction="holm"))
    assert [g for g, b in sorted(_breaches(plain, "race").items()) if b["significant"]] == ["race=B", "race=C"]
    hb = _breaches(holm, "race")
    assert hb["race=B"]["p_value"] == pytest.approx(P38, abs=1e-7)
    assert hb["race=B"]["p_adjusted"] == pytest.approx(0.0092946, abs=1e-6) and hb["race=B"]["significant"]
    assert hb["race=C"]["p_adjusted"] == pytest.approx(0.1346883, abs=1e-6) and not hb["race=C"]["significant"]
    assert plain.status == holm.status == "violation"


def test_family_is_one_dimension_with_its_parity_and_odds_tests() -> None:
    def labelled(key: str, selected: int, tp: int, fp: int, fn: int, tn: int) -> GroupSnapshot:
        return GroupSnapshot(key, "sex", False, n=100, selected=selected, labelled=100, tp=tp, fp=fp, fn=fn, tn=tn)

    sex = [labelled("sex=F", 44, 25, 19, 25, 31), labelled("sex=M", 60, 40, 20, 10, 30)]
    race = _groups("race", SIX)
    th = Thresholds(max_demographic_parity_difference=0.1, max_equalized_odds_difference=0.1,
                    significance_correction="holm")
    rep = evaluate([*sex, *race], ["sex", "race"], th)
    breaches = rep.dimensions["sex"].breaches
    assert [b["metric"] for b in breaches] == ["impact_ratio", "demographic_parity_difference",
                                               "equalized_odds_difference"]
    p_ir, p_dp, p_eo = (b["p_value"] for b in breaches)
    assert p_ir == p_dp == pytest.approx(P44, abs=1e-7)  # both compare F's 44% with M's 60%
    # TPR 40/50 against 25/50: z = 0.3 / sqrt(0.65 * 0.35 * 0.04) = 3.1449, p = 0.0016617
    assert p_eo == pytest.approx(0.0016617, abs=1e-7)
    # m = 3 within "sex" only: 0.0016617 x3 = 0.0049851; 0.0235401 x2 = 0.0470802; x1 kept at 0.0470802
    assert [b["p_adjusted"] for b in breaches] == pytest.approx([0.0470802, 0.0470802, 0.0049851], abs=1e-6)
    assert all(b["significant"] for b in breaches) and rep.dimensions["sex"].status == "violation"
    # race is a family of its own: five impact-ratio tests plus its parity test (no labels, no odds test);
    # B's impact test and the parity test (A against B) tie at 0.0235401: x6 = 0.1412406, both
    race_holm = _breaches(rep, "race")
    assert sorted(race_holm) == ["demographic_parity_difference", "race=B", "race=C", "race=D", "race=E",
                                 "race=F"]
    assert race_holm["race=B"]["p_adjusted"] == pytest.approx(0.1412406, abs=1e-6)
    assert race_holm["demographic_parity_difference"]["p_adjusted"] == race_holm["race=B"]["p_adjusted"]
    assert rep.dimensions["race"].breaches == evaluate(race, ["race"], th).dimensions["race"].breaches
    assert rep.dimensions["sex"].breaches == evaluate(sex, ["sex"], th).dimensions["sex"].breaches


def test_the_parameter_travels_from_a_policy(tmp_path: object) -> None:
    from pathlib import Path

    from mlguard.policy import clear_cache, resolve_policies

    path = Path(str(tmp_path)) / "stats.yaml"
    path.write_text(
        "id: stats\ntitle: t\ninstrument: t\njurisdiction: t\nstatus: in_force\neffective_from: 2026-01-01\n"
        "review_by: 2099-01-01\nversion: '1'\nextends: [eeoc_four_fifths]\n"
        "fairness:\n  significance_correction: {value: holm, cite: '(D) test'}\n", encoding="utf-8")
    clear_cache()
    try:
        th = Thresholds.from_policy(resolve_policies([path]).fairness)
        assert th.significance_correction == "holm" and th.significance_alpha == 0.05
        assert Thresholds.from_policy(resolve_policies(["eeoc_four_fifths"]).fairness).significance_correction \
            == "none"
        assert evaluate(_groups("race", SIX), ["race"], th).status == "warn"
    finally:
        clear_cache()
