"""Finding, parsing and inheriting policy files; errors name the file and the dotted field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlguard.errors import ConfigError, PolicyError
from mlguard.policy import (
    bundled_policies,
    find_policy,
    load_policy_file,
    parse_duration,
    resolve_policies,
    resolve_policy,
)

PolicyFactory = Callable[..., Path]


def rule(value: object, cite: str = "test cite") -> dict[str, object]:
    return {"value": value, "cite": cite}


def test_find_by_name_and_by_path(make_policy: PolicyFactory, tmp_path: Path) -> None:
    assert find_policy("gdpr") == bundled_policies()["gdpr"]
    path = make_policy("mine")
    assert find_policy(str(path)) == path
    assert find_policy("mine.yaml", base_dir=tmp_path) == tmp_path / "mine.yaml"
    assert find_policy(Path("mine.yaml"), base_dir=tmp_path) == tmp_path / "mine.yaml"


def test_unknown_name_lists_the_bundled_policies() -> None:
    with pytest.raises(PolicyError) as info:
        find_policy("gdrp")
    message = str(info.value)
    assert "unknown policy 'gdrp'" in message
    for name in ("base", "gdpr", "hipaa", "ecoa", "pci_dss"):
        assert name in message
    assert isinstance(info.value, ConfigError)


def test_a_file_next_to_the_config_never_shadows_a_bundled_name(make_policy: PolicyFactory,
                                                                  tmp_path: Path) -> None:
    make_policy("gdpr", failure_mode=rule("fail_closed"))
    assert find_policy("gdpr", base_dir=tmp_path) == bundled_policies()["gdpr"]


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        find_policy("nowhere.yaml", base_dir=tmp_path)
    assert info.value.file == str(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(("sections", "field", "words"), [
    ({"failure_mode": rule("fail_sideways")}, "failure_mode.value", "fail_open"),
    ({"failure_mode": {"value": "fail_closed"}}, "failure_mode.cite", "required"),
    ({"pii": {"entitys": []}}, "pii.entitys", "unknown key (did you mean 'entities'?)"),
    # a misspelt required key: the typo is reported first, and the missing key it leaves on the next line
    ({"pii": {"entities": [{"entity": "US_SSN", "operator": "drop", "citation": "x"}]}},
     "pii.entities.0.citation", "unknown key (did you mean 'cite'?)\n"),
    ({"pii": {"entities": [{"entity": "US_SSN", "operator": "drop", "citation": "x"}]}},
     "pii.entities.0.citation", "broken.yaml:pii.entities.0.cite: Field required"),
    ({"pii": {"entities": [{"entity": "US_SSN", "operator": "shred", "cite": "x"}]}},
     "pii.entities.0.operator", "replace"),
    ({"pii": {"entities": [{"entity": "us_ssn", "operator": "drop", "cite": "x"}]}},
     "pii.entities.0.entity", "pattern"),
    ({"pii": {"entities": [{"entity": "CREDIT_CARD", "operator": "mask", "params": {"keep_middle": 1},
                            "cite": "x"}]}}, "pii.entities.0", "keep_middle"),
    ({"pii": {"entities": [{"entity": "ZIP_CODE", "operator": "generalize", "params": {"zip": "zip5"},
                            "cite": "x"}]}}, "pii.entities.0", "zip3"),
    ({"pii": {"entities": [{"entity": "X", "operator": "drop", "cite": "a"},
                           {"entity": "X", "operator": "mask", "cite": "b"}]}}, "pii", "listed twice"),
    ({"pii": {"custom_recognizers": [{"name": "bad", "entity": "X", "cite": "x",
                                      "patterns": [{"name": "p", "regex": "([", "score": 0.5}]}]}},
     "pii.custom_recognizers.0.patterns.0.regex", "does not compile"),
    ({"retention": {"min": rule("6 months")}}, "retention.min.value", "ISO 8601"),
    ({"explanations": {"max_reasons": rule(0)}}, "explanations.max_reasons.value", "greater than or equal"),
    ({"fairness": {"min_impact_ratio": rule(1.5)}}, "fairness.min_impact_ratio.value", "less than"),
])
def test_errors_name_file_and_dotted_field(make_policy: PolicyFactory, sections: dict[str, object],
                                           field: str, words: str) -> None:
    path = make_policy("broken", **sections)
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert info.value.file == str(path)
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(f"{path}:{field}: ")


def test_bad_yaml_and_bad_top_level(make_policy: PolicyFactory) -> None:
    with pytest.raises(PolicyError, match="not valid YAML") as info:
        load_policy_file(make_policy("y", raw="id: [unclosed\n"))
    assert info.value.field is not None and info.value.field.startswith("line ")
    with pytest.raises(PolicyError, match="mapping"):
        load_policy_file(make_policy("z", raw="- a\n- b\n"))


def test_unquoted_version_is_accepted(make_policy: PolicyFactory) -> None:
    path = make_policy("v")
    path.write_text(path.read_text().replace("version: '1'", "version: 2026.11"))
    assert load_policy_file(path).version == "2026.11"


def test_extends_child_overrides_parent_field_by_field(make_policy: PolicyFactory) -> None:
    make_policy("parent", failure_mode=rule("fail_open", "parent cite"),
                retention={"min": rule("P1Y")},
                pii={"entities": [{"entity": "PERSON", "operator": "hmac", "cite": "p"},
                                  {"entity": "US_SSN", "operator": "drop", "cite": "p"}]})
    child = make_policy("child", extends=["parent.yaml"], failure_mode=rule("fail_closed", "child cite"),
                        pii={"entities": [{"entity": "PERSON", "operator": "keep", "cite": "c"}]})
    resolved = resolve_policy(child)
    assert [s.id for s in resolved.chain] == ["base", "parent", "child"]
    assert resolved.rules["failure_mode"].value == "fail_closed"
    assert resolved.rules["retention.min"].origin == "parent"
    assert resolved.rules["pii.entities.PERSON"].value["operator"] == "keep"
    assert resolved.rules["pii.entities.US_SSN"].origin == "parent"
    assert resolved.rules["pii.default_operator"].origin == "base"
    merged = resolved.merged_doc()
    assert merged.id == "child" and merged.retention.min is not None and merged.retention.min.value == "P1Y"
    assert {e.entity for e in merged.pii.entities} >= {"PERSON", "US_SSN", "EMAIL_ADDRESS"}


@pytest.mark.parametrize("order", [["one.yaml", "two.yaml"], ["two.yaml", "one.yaml"]])
def test_several_parents_combine_as_a_composition(make_policy: PolicyFactory, order: list[str]) -> None:
    """Parents that both set a rule combine as the deployment's composition does (the smallest
    min_group_size: more groups judged), whatever their order; the file's own rule overrides them."""
    make_policy("one", fairness={"min_group_size": rule(10), "action": rule("block")})
    make_policy("two", fairness={"min_group_size": rule(50), "action": rule("alert")})
    both = make_policy("both", extends=order)
    rules = resolve_policy(both).rules
    assert (rules["fairness.min_group_size"].value, rules["fairness.action"].value) == (10, "block")
    own = make_policy("own", extends=order, fairness={"min_group_size": rule(40)})
    assert resolve_policy(own).rules["fairness.min_group_size"].value == 40


def test_extending_shipped_policies_equals_listing_them(make_policy: PolicyFactory) -> None:
    """A new user's payments policy, extends: [pci_dss, ccpa, gdpr]: gdpr's copies of base's defaults undid
    pci_dss (responses not scanned, card numbers replaced not masked, reads not audited) and gdpr's fail_open
    won, so full card numbers reached clients. Extending them must enforce what listing them enforces."""
    mine = make_policy("mine", extends=["pci_dss", "ccpa", "gdpr"])
    extended = resolve_policies([mine])
    listed = resolve_policies(["pci_dss", "ccpa", "gdpr"])
    assert extended.failure_mode == listed.failure_mode == "fail_closed"
    assert extended.pii.scan_response is listed.pii.scan_response is True
    assert extended.audit.record_reads is listed.audit.record_reads is True
    card = extended.pii.entities["CREDIT_CARD"]
    assert (card.operator, card.params) == (listed.pii.entities["CREDIT_CARD"].operator,
                                            listed.pii.entities["CREDIT_CARD"].params)
    assert card.operator != "replace"  # base's default, which undid pci_dss's mask
    def ops(policy: Any) -> dict[str, tuple[str, dict[str, Any]]]:
        return {e: (r.operator, r.params) for e, r in policy.pii.entities.items()}

    assert ops(extended) == ops(listed)  # the values; which parents' citations go with them may differ
    enforced = {"failure_mode", "retention", "explanations", "fairness", "audit", "oversight"}
    assert extended.model_dump(include=enforced) == listed.model_dump(include=enforced)
    assert (extended.pii.model_dump(exclude={"entities", "custom_recognizers"})
            == listed.pii.model_dump(exclude={"entities", "custom_recognizers"}))


@pytest.mark.parametrize("shape", ["self", "pair", "triangle"])
def test_extends_cycles_are_detected(make_policy: PolicyFactory, shape: str) -> None:
    if shape == "self":
        start = make_policy("a", extends=["a.yaml"])
    elif shape == "pair":
        start = make_policy("a", extends=["b.yaml"])
        make_policy("b", extends=["a.yaml"])
    else:
        start = make_policy("a", extends=["b.yaml"])
        make_policy("b", extends=["c.yaml"])
        make_policy("c", extends=["a.yaml"])
    with pytest.raises(PolicyError, match=r"extends cycle: a -> .*a") as info:
        resolve_policy(start)
    assert info.value.field == "extends"


def test_unknown_extends_names_the_field(make_policy: PolicyFactory) -> None:
    path = make_policy("x", extends=["base", "nonexistent_policy"])
    with pytest.raises(PolicyError) as info:
        resolve_policy(path)
    assert info.value.field == "extends.1" and info.value.file == str(path.resolve())
    assert "bundled policies" in str(info.value)


def test_two_files_with_one_id_are_refused(make_policy: PolicyFactory, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    other = make_policy("dup")
    copy = tmp_path / "sub" / "dup.yaml"
    copy.write_text(other.read_text())
    with pytest.raises(PolicyError, match="two different files declare policy id 'dup'"):
        resolve_policies([other, copy])


def test_effective_policies_are_cached_per_names_and_base_dir(make_policy: PolicyFactory,
                                                              tmp_path: Path) -> None:
    first = resolve_policies(["gdpr", "ecoa"])
    assert resolve_policies(("gdpr", "ecoa")) is first
    assert resolve_policies(["ecoa", "gdpr"]) is not first
    make_policy("mine")
    assert resolve_policies(["mine.yaml"], base_dir=tmp_path) is resolve_policies(["mine.yaml"], tmp_path)


def test_path_objects_without_suffix_are_paths(tmp_path: Path) -> None:
    source = (Path(__file__).resolve().parents[2] / "policies" / "pci_dss.yaml").read_text()
    (tmp_path / "cards").write_text(source.replace("id: pci_dss", "id: cards"))
    assert resolve_policies([Path("cards")], base_dir=tmp_path).ids == ["cards"]
    with pytest.raises(PolicyError, match="unknown policy 'cards'"):
        resolve_policies(["cards"], base_dir=tmp_path)


def test_same_file_named_twice_counts_once(make_policy: PolicyFactory) -> None:
    path = make_policy("once")
    p = resolve_policies([path, str(path)])
    assert p.ids == ["once"]


@pytest.mark.parametrize(("text", "days"), [("P6M", 182.62), ("P1Y", 365.24), ("P25M", 760.92),
                                            ("P30D", 30), ("P2W", 14), ("PT12H", 0.5), ("P1Y2M3DT4H", 429.28)])
def test_durations_parse_in_calendar_units(text: str, days: float) -> None:
    assert parse_duration(text).sort_key == pytest.approx(days, abs=0.01)


@pytest.mark.parametrize("text", ["", "P", "PT", "6M", "P6m", "P1.5Y", "P-1D", "180 days"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


def test_duration_calendar_arithmetic() -> None:
    from datetime import datetime

    assert parse_duration("P1M").add_to(datetime(2027, 1, 31)) == datetime(2027, 2, 28)
    assert parse_duration("P25M").subtract_from(datetime(2027, 1, 15)) == datetime(2024, 12, 15)
    assert parse_duration("P1Y").add_to(datetime(2028, 2, 29)) == datetime(2029, 2, 28)
