"""Reason-code rules, as a table: ranking, max_reasons, ties, prohibited bases, catalog texts, baselines."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from mlguard.config.explain import ModelBinding
from mlguard.errors import ConfigError
from mlguard.explain.binding import build_binding
from mlguard.explain.reasons import check_catalog, cutoff_rows, is_prohibited, select_reasons

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
