"""Reason-code rules, as a table: ranking, max_reasons, ties, prohibited bases, catalog texts, baselines."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from mlguard.config.explain import ModelBinding
from mlguard.errors import ConfigError
from mlguard.explain.binding import build_binding
from mlguard.explain.reasons import check_catalog, cutoff_rows, incompleteness, is_prohibited, select_reasons

CATALOG = {"debt": "Debt too high relative to income", "late": "Delinquent past payments",
           "years": "Length of employment", "income": "Income insufficient for amount of credit requested"}

# contributions, max_reasons, prohibited, expected features (in order), tie_extended, excluded
TABLE: list[tuple[dict[str, float], int | None, list[str], list[str], bool, list[str]]] = [
    # the most adverse first; favourable contributions are never reasons
    ({"debt": -0.3, "late": -0.1, "years": 0.2, "income": -0.2}, 4, [], ["debt", "income", "late"], False, []),
    # at most max_reasons
    ({"a": -0.5, "b": -0.4, "c": -0.3, "d": -0.2, "e": -0.1}, 4, [], ["a", "b", "c", "d"], False, []),
    ({"a": -0.5, "b": -0.4, "c": -0.3}, 2, [], ["a", "b"], False, []),
    # default max is 4 (Reg B comment 9(b)(2)-1)
    ({"a": -0.5, "b": -0.4, "c": -0.3, "d": -0.2, "e": -0.1}, None, [], ["a", "b", "c", "d"], False, []),
    # a tie at the last place keeps every tied principal reason (a fifth one)
    ({"a": -0.5, "b": -0.4, "c": -0.3, "d": -0.2, "e": -0.2, "f": -0.1}, 4, [], ["a", "b", "c", "d", "e"],
     True, []),
    ({"a": -0.5, "b": -0.2, "c": -0.2, "d": -0.2}, 2, [], ["a", "b", "c", "d"], True, []),
    # a tie above the last place changes nothing
    ({"a": -0.5, "b": -0.5, "c": -0.3}, 2, [], ["a", "b"], False, []),
    # prohibited bases are never reasons, however adverse; the next one moves up
    ({"age": -0.9, "debt": -0.3, "income": -0.2}, 2, ["age", "sex"], ["debt", "income"], False, ["age"]),
    ({"applicant_age": -0.9, "page_views": -0.3}, 4, ["age"], ["page_views"], False, ["applicant_age"]),
    ({"Marital-Status": -0.9, "debt": -0.1}, 4, ["marital_status"], ["debt"], False, ["Marital-Status"]),
    ({"sex": -0.9}, 4, ["sex"], [], False, ["sex"]),
    # nothing adverse: no reasons
    ({"a": 0.1, "b": 0.0}, 4, [], [], False, []),
]


@pytest.mark.parametrize(("contrib", "max_reasons", "prohibited", "expected", "tie", "excluded"), TABLE)
def test_reason_table(contrib: dict[str, float], max_reasons: int | None, prohibited: list[str],
                      expected: list[str], tie: bool, excluded: list[str]) -> None:
    sel = select_reasons(contrib, max_reasons=max_reasons, prohibited=prohibited, catalog=CATALOG)
    assert [r["feature"] for r in sel.reasons] == expected
    assert [r["rank"] for r in sel.reasons] == list(range(1, len(expected) + 1))
    assert sel.tie_extended is tie
    assert sel.excluded == excluded
    for r in sel.reasons:
        assert r["contribution"] == contrib[r["feature"]]
        assert r["text"] == CATALOG.get(r["feature"], r["feature"].replace("_", " "))


# contributions, prohibited, finding code (None: the reasons stand), excluded weight, reasons weight
INCOMPLETE: list[tuple[dict[str, float], list[str], str | None, float, float]] = [
    # only prohibited bases weighed against the applicant: nothing lawful is left, and nothing is made up
    ({"sex": -0.5, "age": -0.2, "income": 0.1}, ["sex", "age"], "no_lawful_reason", 0.7, 0.0),
    # the excluded bases together outweigh the reasons given: a minor factor would pose as reason #1
    ({"sex": -0.5, "debt": -0.1, "income": -0.05}, ["sex"], "prohibited_bases_outweigh", 0.5, 0.15),
    # excluded, but lighter than the reasons given (or favourable): the reasons stand
    ({"sex": -0.1, "debt": -0.3}, ["sex"], None, 0.1, 0.3),
    ({"sex": 0.4, "debt": -0.1}, ["sex"], None, 0.0, 0.1),
    # an exact tie does not outweigh
    ({"sex": -0.25, "debt": -0.25}, ["sex"], None, 0.25, 0.25),
    # nothing weighed against the applicant (a refusal better than the average applicant): no reason derivable
    ({"debt": 0.1, "income": 0.2}, [], "no_adverse_factor", 0.0, 0.0),
    # an ordinary refusal
    ({"debt": -0.3, "income": -0.1}, ["sex"], None, 0.0, 0.4),
]


@pytest.mark.parametrize(("contrib", "prohibited", "code", "excluded_weight", "reasons_weight"), INCOMPLETE)
def test_incomplete_reasons_are_a_finding(contrib: dict[str, float], prohibited: list[str], code: str | None,
                                          excluded_weight: float, reasons_weight: float) -> None:
    sel = select_reasons(contrib, max_reasons=4, prohibited=prohibited, catalog=CATALOG)
    assert sel.excluded_weight == pytest.approx(excluded_weight)
    assert sel.reasons_weight == pytest.approx(reasons_weight)
    finding = incompleteness(sel)
    if code is None:
        assert finding is None
        return
    assert finding is not None and finding["code"] == code and finding["detail"]
    assert finding["excluded_weight"] == pytest.approx(excluded_weight)
    assert not any(is_prohibited(r["feature"], prohibited) for r in sel.reasons)  # never a reason, still


def test_incompleteness_follows_the_unfavourable_side() -> None:
    """Lower is favourable (a regressor such as a default-risk score): a positive contribution is the adverse one."""
    sel = select_reasons({"sex": 0.5, "debt": 0.1}, max_reasons=4, prohibited=["sex"], catalog={},
                         higher_is_favorable=False)
    finding = incompleteness(sel)
    assert finding is not None and finding["code"] == "prohibited_bases_outweigh"


def test_tie_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlguard.explain.reasons"):
        select_reasons({"a": -0.2, "b": -0.2}, max_reasons=1, prohibited=[], catalog={})
    assert any("tie" in r.getMessage() for r in caplog.records)


def test_lower_is_favourable_flips_the_side() -> None:
    sel = select_reasons({"a": 0.5, "b": -0.5}, max_reasons=4, prohibited=[], catalog={},
                         higher_is_favorable=False)
    assert [r["feature"] for r in sel.reasons] == ["a"]


@pytest.mark.parametrize(("feature", "bases", "hit"), [
    ("age", ["age"], True), ("AGE", ["age"], True), ("age_years", ["age"], True),
    ("page_views", ["age"], False), ("national_origin_code", ["national origin"], True),
    ("origin", ["national_origin"], False), ("sexual_orientation", ["sex"], False), ("debt", [], False),
])
def test_is_prohibited(feature: str, bases: list[str], hit: bool) -> None:
    assert is_prohibited(feature, bases) is hit


@pytest.mark.parametrize("text", ["Does not meet our Internal Standards", "insufficient   score",
                                  "Failed to achieve a qualifying score"])
def test_insufficient_texts_are_refused(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_catalog({"debt": "Debt too high", "score": text}, None)
    assert err.value.field == "explain.reason_catalog.score"


def test_policy_texts_are_used() -> None:
    check_catalog({"a": "Internal standards"}, ["something else"])  # only the policy's phrases count
    with pytest.raises(ConfigError, match="credit scoring system"):
        check_catalog({"a": "Rejected by our credit scoring system"}, ["credit scoring system"])
    check_catalog(CATALOG, None)


def test_cutoff_rows_are_at_or_slightly_above_the_cutoff(models: dict[str, Any], data: Any) -> None:
    cfg = ModelBinding(object=models["gbc"], features="$.f", feature_order=data.features,
                       background_rows=data.rows(0, 300), cutoff=0.5, cutoff_delta=0.1)
    binding = build_binding(0, cfg, base_dir=None)
    rows, delta = cutoff_rows(binding, field="x")
    scores = binding.score(rows)
    assert rows.shape[0] >= 5
    assert np.all(scores >= 0.5) and np.all(scores <= 0.5 + delta)
    assert binding.background.all_rows is not None
    all_scores = binding.score(binding.background.all_rows)
    assert rows.shape[0] == int(np.sum((all_scores >= 0.5) & (all_scores <= 0.5 + delta)))


def test_cutoff_band_widens_when_too_thin(models: dict[str, Any], data: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    cfg = ModelBinding(object=models["gbc"], features="$.f", feature_order=data.features,
                       background_rows=data.rows(0, 60), cutoff=0.5, cutoff_delta=1e-6)
    binding = build_binding(0, cfg, base_dir=None)
    with caplog.at_level(logging.WARNING, logger="mlguard.explain.reasons"):
        rows, delta = cutoff_rows(binding, field="x")
    assert delta > 1e-6 and rows.shape[0] >= 5
    assert any("widened" in r.getMessage() for r in caplog.records)
