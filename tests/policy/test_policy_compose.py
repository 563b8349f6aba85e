"""Composition rules of regulations.md, table-tested on small policy files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlguard.errors import PolicyError
from mlguard.policy import effective_view, resolve_policies

PolicyFactory = Callable[..., Path]


def rule(value: object, cite: str = "test cite") -> dict[str, object]:
    return {"value": value, "cite": cite}


def entity(name: str, operator: str, **params: Any) -> dict[str, Any]:
    return {"entity": name, "operator": operator, "params": params, "cite": f"{operator} cite"}


def section(field: str, value: object) -> dict[str, Any]:
    """``{"fairness": {"min_impact_ratio": rule(v)}}`` from ``"fairness.min_impact_ratio"``."""
    if field == "failure_mode":
        return {"failure_mode": rule(value)}
    sec, name = field.split(".")
    return {sec: {name: rule(value)}}


def get(policy: Any, field: str) -> Any:
    obj = policy
    for part in field.split("."):
        obj = getattr(obj, part)
    return obj


def compose_two(make_policy: PolicyFactory, a: dict[str, Any], b: dict[str, Any]) -> Any:
    pa, pb = make_policy("a", **a), make_policy("b", **b)
    return resolve_policies([pa, pb])


@pytest.mark.parametrize(("field", "a", "b", "expected", "origin"), [
    ("failure_mode", "fail_open", "fail_closed", "fail_closed", ["b"]),
    ("failure_mode", "fail_closed", "fail_open", "fail_closed", ["a"]),
    ("failure_mode", "fail_closed", "fail_closed", "fail_closed", ["a", "b"]),
    ("explanations.max_reasons", 4, 6, 4, ["a"]),
    ("explanations.max_reasons", 8, 3, 3, ["b"]),
    ("explanations.budget_ms", 5.0, 50.0, 5.0, ["a"]),
    ("fairness.min_impact_ratio", 0.8, 0.9, 0.9, ["b"]),
    ("fairness.max_demographic_parity_difference", 0.1, 0.05, 0.05, ["b"]),
    ("fairness.max_equalized_odds_difference", 0.02, 0.2, 0.02, ["a"]),
    ("fairness.exclude_below_share", 0.02, 0.05, 0.02, ["a"]),
    ("fairness.min_group_size", 50, 20, 20, ["b"]),
    ("fairness.action", "block", "alert", "block", ["a"]),
    ("pii.protected_to_model", True, False, False, ["b"]),
    ("pii.scan_response", False, True, True, ["b"]),
    ("pii.special_categories_separate", True, False, True, ["a"]),
    ("oversight.stop_control", True, False, True, ["a"]),
    ("oversight.human_review", False, True, True, ["b"]),
    ("audit.record_reads", False, True, True, ["b"]),
    ("retention.min", "P6M", "P25M", "P25M", ["b"]),
    ("retention.min", "P2Y", "P25M", "P25M", ["b"]),
    ("retention.min", "P12M", "P1Y", "P12M", ["a", "b"]),
    ("retention.max", "P3Y", "P18M", "P18M", ["b"]),
    ("retention.erasure_within", "P1M", "P45D", "P1M", ["a"]),
    ("explanations.notice_within", "P30D", "P10D", "P10D", ["b"]),
])
def test_strictest_value_wins(make_policy: PolicyFactory, field: str, a: object, b: object, expected: object,
                              origin: list[str]) -> None:
    p = compose_two(make_policy, section(field, a), section(field, b))
    assert get(p, field) == expected
    assert p.origin(field) == origin
    assert not p.conflicts


@pytest.mark.parametrize(("a", "b", "winner"), [
    ("drop", "token", "drop"), ("token", "hmac", "token"), ("hmac", "mask", "hmac"), ("mask", "drop", "drop"),
    ("replace", "token", "replace"), ("drop", "replace", "drop"), ("encrypt", "hmac", "encrypt"),
    ("token", "encrypt", "token"), ("generalize", "mask", "generalize"), ("hmac", "generalize", "hmac"),
    ("keep", "mask", "mask"),
])
def test_stronger_operator_wins_per_entity(make_policy: PolicyFactory, a: str, b: str, winner: str) -> None:
    params = {"mask": {"keep_last": 4}, "generalize": {"zip": "zip3"}}
    p = compose_two(make_policy,
                    {"pii": {"entities": [entity("ZIP_CODE", a, **params.get(a, {}))]}},
                    {"pii": {"entities": [entity("ZIP_CODE", b, **params.get(b, {}))]}})
    rule_ = p.pii.entities["ZIP_CODE"]
    assert rule_.operator == winner
    assert rule_.params == params.get(winner, {})
    assert p.origin("pii.entities.ZIP_CODE") == (["a"] if winner == a else ["b"])


def test_entities_are_the_union(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy,
                    {"pii": {"entities": [entity("VEHICLE_ID", "hmac")]}},
                    {"pii": {"entities": [entity("DEVICE_ID", "token")]}})
    assert p.pii.entities["VEHICLE_ID"].operator == "hmac"
    assert p.pii.entities["DEVICE_ID"].operator == "token"
    assert p.origin("pii.entities.VEHICLE_ID") == ["a"] and p.origin("pii.entities.DEVICE_ID") == ["b"]
    assert "PERSON" in p.pii.entities and p.origin("pii.entities.PERSON") == ["base"]


def test_two_masks_keep_the_fewest_characters(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy,
                    {"pii": {"entities": [entity("CREDIT_CARD", "mask", keep_first=6, keep_last=4)]}},
                    {"pii": {"entities": [entity("CREDIT_CARD", "mask", keep_first=8, keep_last=2)]}})
    assert p.pii.entities["CREDIT_CARD"].params == {"keep_first": 6, "keep_last": 2}
    assert p.origin("pii.entities.CREDIT_CARD") == ["a", "b"]


def test_same_operator_with_different_generalisation_is_a_conflict(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy,
                    {"pii": {"entities": [entity("AGE", "generalize", age_cap=90)]}},
                    {"pii": {"entities": [entity("AGE", "generalize", age_cap=80)]}})
    assert p.pii.entities["AGE"].params == {"age_cap": 90}
    (conflict,) = p.conflicts
    assert conflict.field == "pii.entities.AGE" and {v.policy for v in conflict.values} == {"a", "b"}


def test_lists_are_unions(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy,
                    {"explanations": {"prohibited_bases": rule(["race", "sex"])},
                     "pii": {"restricted_zip3": rule(["036"])}},
                    {"explanations": {"prohibited_bases": rule(["sex", "age"])},
                     "pii": {"restricted_zip3": rule(["036", "893"])}})
    assert p.explanations.prohibited_bases == ["race", "sex", "age"]
    assert p.pii.restricted_zip3 == ["036", "893"]
    assert p.origin("explanations.prohibited_bases") == ["a", "b"]


def test_retention_maximum_below_the_floor_is_a_conflict_with_both_sources(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy, {"retention": {"max": rule("P6M", "GDPR Art 5(1)(e)")}},
                    {"retention": {"min": rule("P25M", "1002.12(b)")}})
    assert p.retention.min == "P25M" and p.retention.max == "P25M"
    assert p.retention.min_from == ["b"]
    (conflict,) = p.conflicts
    assert conflict.field == "retention.max"
    assert [(v.policy, v.value, v.cite) for v in conflict.values] == [
        ("a", "P6M", "GDPR Art 5(1)(e)"), ("b", "P25M", "1002.12(b)")]
    assert "17(3)(b)" in conflict.resolution and "P6M" in conflict.resolution and "P25M" in conflict.resolution
    view = effective_view(p)
    assert view["conflicts"][0]["field"] == "retention.max"


def test_retention_maximum_above_the_floor_is_fine(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy, {"retention": {"max": rule("P3Y")}}, {"retention": {"min": rule("P25M")}})
    assert (p.retention.min, p.retention.max, p.conflicts) == ("P25M", "P3Y", [])
    assert p.retention.max_from == ["a"]


def test_unordered_values_conflict_and_the_first_is_kept(make_policy: PolicyFactory) -> None:
    p = compose_two(make_policy, {"explanations": {"baseline": rule("cutoff")}},
                    {"explanations": {"baseline": rule("all")}})
    assert p.explanations.baseline == "cutoff"
    (conflict,) = p.conflicts
    assert conflict.field == "explanations.baseline" and "listed first" in conflict.resolution


def test_a_descendant_overrides_its_parent_even_when_both_are_named(make_policy: PolicyFactory) -> None:
    parent = make_policy("parent", failure_mode=rule("fail_closed"),
                         pii={"entities": [entity("PERSON", "drop")]})
    child = make_policy("child", extends=["parent.yaml"], failure_mode=rule("fail_open"),
                        pii={"entities": [entity("PERSON", "hmac")]})
    p = resolve_policies([parent, child])
    assert p.failure_mode == "fail_open" and p.origin("failure_mode") == ["child"]
    assert p.pii.entities["PERSON"].operator == "hmac"


def test_base_defaults_yield_to_any_regulation() -> None:
    p = resolve_policies(["gdpr", "ecoa"])
    # ecoa inherits base's PERSON: replace, gdpr says hmac explicitly: the regulation's value applies
    assert p.pii.entities["PERSON"].operator == "hmac" and p.origin("pii.entities.PERSON") == ["gdpr"]
    # gdpr's fail_open (D) meets ecoa's explicit fail_closed
    assert p.failure_mode == "fail_closed" and p.origin("failure_mode") == ["ecoa"]
    assert p.explanations.max_reasons == 4 and p.origin("explanations.max_reasons") == ["ecoa"]
    assert p.explanations.required and p.origin("explanations.required") == ["gdpr", "ecoa"]
    assert p.retention.min == "P25M" and p.retention.max_required and p.missing == ["retention.max"]
    assert [s.id for s in p.sources] == ["base", "gdpr", "ecoa"]
    assert [s.requested for s in p.sources] == [False, True, True]


def test_a_policy_without_extends_gets_base_as_fallback(make_policy: PolicyFactory) -> None:
    alone = make_policy("alone", extends=[], failure_mode=rule("fail_open"))
    p = resolve_policies([alone])
    assert p.failure_mode == "fail_open"
    assert p.pii.default_operator == "replace" and p.origin("pii.default_operator") == ["base"]
    assert [s.id for s in p.sources] == ["alone", "base"]


def test_eu_credit_model_composition() -> None:
    p = resolve_policies(["gdpr", "eu_ai_act", "ecoa"])
    assert p.failure_mode == "fail_closed"
    assert p.origin("failure_mode") == ["eu_ai_act", "ecoa"]
    assert p.retention.min == "P25M" and p.origin("retention.min") == ["ecoa"]
    assert p.oversight.stop_control and p.oversight.log_solely_automated
    assert p.pii.protected_to_model is False


def test_hipaa_and_pci_card_takes_the_stronger_token() -> None:
    p = resolve_policies(["hipaa", "pci_dss"])
    assert p.pii.entities["CREDIT_CARD"].operator == "token"
    assert p.pii.scan_response and p.retention.min == "P6Y"


def test_content_hash_follows_values_not_names(make_policy: PolicyFactory) -> None:
    a = resolve_policies([make_policy("a", failure_mode=rule("fail_open"))])
    b = resolve_policies([make_policy("b", failure_mode=rule("fail_open", "another citation"))])
    c = resolve_policies([make_policy("c", failure_mode=rule("fail_closed"))])
    assert a.content_hash == b.content_hash != c.content_hash
    assert len(a.content_hash) == 64
    assert a.describe()["content_hash"] == a.content_hash


@pytest.mark.parametrize(("policy_max", "floor", "configured", "expected"), [
    (None, None, "P2Y", "P2Y"),
    ("P1Y", None, "P2Y", "P1Y"),
    (None, "P25M", "P1Y", "P25M"),
    (None, None, None, None),
])
def test_retention_max_for_deployment(make_policy: PolicyFactory, policy_max: str | None, floor: str | None,
                                      configured: str | None, expected: str | None) -> None:
    retention: dict[str, Any] = {}
    if policy_max:
        retention["max"] = rule(policy_max)
    if floor:
        retention["min"] = rule(floor)
    p = resolve_policies([make_policy("r", retention=retention)])
    assert p.retention_max_for(configured) == expected


def test_required_retention_max_missing_is_an_error() -> None:
    p = resolve_policies(["gdpr"])
    with pytest.raises(PolicyError, match="required by gdpr") as info:
        p.retention_max_for(None)
    assert info.value.field == "retention.max"
    assert p.retention_max_for("P2Y") == "P2Y"
    with pytest.raises(PolicyError, match="ISO 8601"):
        p.retention_max_for("two years")


def test_rule_for_falls_back_to_the_default_operator() -> None:
    p = resolve_policies(["hipaa"])
    assert p.pii.rule_for("SOMETHING_ELSE").operator == "token"
    assert p.pii.rule_for("ZIP_CODE").params == {"zip": "zip3"}


def test_effective_view_shows_every_value_with_its_source() -> None:
    view = effective_view(resolve_policies(["gdpr", "ecoa"]))
    assert view["policies"] == ["gdpr", "ecoa"]
    assert view["failure_mode"]["from"] == ["ecoa"]
    assert view["explanations"]["max_reasons"] == {
        "value": 4, "from": ["ecoa"], "cite": [view["explanations"]["max_reasons"]["cite"][0]]}
    assert view["pii"]["entities"]["PERSON"]["from"] == ["gdpr"]
    assert view["missing"] and "gdpr" in view["missing"][0]
