"""Conflicts between the parents of ``extends`` are reported, recognizers of one name merge, ``check`` points
to the right place.

Why these tests: a new user's ``extends: [./conflict_a.yaml, ./fintech_internal.yaml]`` took conflict_a's weaker
``customer_id`` regex over fintech_internal's (``-AB`` of ``CUST-1234-AB`` stayed in clear) and ``extends:
[./conflict_a.yaml, hipaa]`` capped ages at 80 instead of 90, and neither ``policy check --strict``, ``policy show
--effective`` nor the start-up notices said so: ``merge_extends`` dropped the conflict. Listing the same policies
under ``policies:`` reported both. ``policy check`` also named ``pii.entities.19`` (the index in the merged list)
for the first entity of a file, and spelt the file differently in errors and warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlguard.cli._root import cli
from mlguard.pii.recognizers import custom_recognizers
from mlguard.policy import policy_notices, resolve_policies

PolicyFactory = Callable[..., Path]

WEAK = r"\bCUST-\d{4}\b"
STRONG = r"\bCUST-\d{4}-[A-Z]{2}\b"
RECOGNIZER = "pii.custom_recognizers.customer_id"


def _recognizer(regex: str, *, entity: str = "CUSTOMER_ID", context: list[str] | None = None,
                validator: str = "none") -> dict[str, object]:
    return {"name": "customer_id", "entity": entity, "patterns": [{"name": "cust", "regex": regex, "score": 0.7}],
            "context": context or [], "validator": validator, "cite": f"recognizer {regex}"}


@pytest.fixture
def conflict_a(make_policy: PolicyFactory) -> Path:
    return make_policy("conflict_a", pii={
        "entities": [{"entity": "AGE", "operator": "generalize", "params": {"age_cap": 80}, "cite": "A 1"}],
        "custom_recognizers": [_recognizer(WEAK)]})


@pytest.fixture
def fintech(make_policy: PolicyFactory) -> Path:
    return make_policy("fintech_internal", extends=["ecoa"], pii={
        "entities": [{"entity": "CUSTOMER_ID", "operator": "drop", "cite": "F 1"}],
        "custom_recognizers": [_recognizer(STRONG, context=["customer"])]})


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def fields(path: Path) -> list[str]:
    return [c.field for c in resolve_policies([str(path)]).conflicts]


# ------------------------------------------------------------------------ conflicts between parents

def test_a_recognizer_defined_twice_by_the_parents_is_reported_and_keeps_both_patterns(
        make_policy: PolicyFactory, conflict_a: Path, fintech: Path) -> None:
    multi2 = make_policy("multi2", extends=["./conflict_a.yaml", "./fintech_internal.yaml"])
    policy = resolve_policies([str(multi2)])
    (conflict,) = [c for c in policy.conflicts if c.field == RECOGNIZER]
    assert [v.policy for v in conflict.values] == ["conflict_a", "fintech_internal"]
    (rec,) = policy.pii.custom_recognizers
    assert [p.regex for p in rec.patterns] == [WEAK, STRONG]
    assert rec.context == ["customer"]
    # what the PII stage builds from it leaves nothing of the identifier in clear
    (built,) = custom_recognizers([rec.model_dump()], origin="test")
    text = "ref CUST-1234-AB"
    assert any((r.start, r.end) == (4, len(text)) for r in built.analyze(text, []))


def test_parents_asking_for_different_parameters_are_reported_like_listed_policies(
        make_policy: PolicyFactory, conflict_a: Path) -> None:
    multi3 = make_policy("multi3", extends=["./conflict_a.yaml", "hipaa"])
    assert "pii.entities.AGE" in fields(multi3)
    assert sorted(fields(multi3)) == sorted(c.field for c in resolve_policies([str(conflict_a), "hipaa"]).conflicts)
    warnings = [text for level, text in policy_notices(resolve_policies([str(multi3)])) if level == logging.WARNING]
    assert any(t.startswith("policy conflict on pii.entities.AGE: ") for t in warnings)


def test_check_and_show_list_the_conflicts_of_extends(make_policy: PolicyFactory, conflict_a: Path,
                                                       fintech: Path) -> None:
    multi2 = make_policy("multi2", extends=["./conflict_a.yaml", "./fintech_internal.yaml"])
    multi3 = make_policy("multi3", extends=["./conflict_a.yaml", "hipaa"])
    code, out = run("policy", "check", "--strict", str(multi2), str(multi3))
    assert code == 1
    assert f"{multi2}:{RECOGNIZER}: conflict: " in out
    assert f"{multi3}:pii.entities.AGE: conflict: " in out
    code, out = run("policy", "show", "--effective", str(multi3))
    assert code == 0, out
    assert "pii.entities.AGE" in [c["field"] for c in yaml.safe_load(out)["conflicts"]]
    code, out = run("policy", "show", str(multi2))
    assert code == 0, out
    assert [c["field"] for c in yaml.safe_load(out)["conflicts"]] == [RECOGNIZER]


def test_config_check_prints_the_conflict_of_extends(make_policy: PolicyFactory, conflict_a: Path,
                                                      tmp_path: Path) -> None:
    multi3 = make_policy("multi3", extends=["./conflict_a.yaml", "hipaa"])
    config = tmp_path / "mlguard.yaml"
    config.write_text(yaml.safe_dump({"policies": [str(multi3)]}), encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert "warning: policy conflict on pii.entities.AGE: " in result.output


def test_the_conflict_is_inherited_and_reported_once(make_policy: PolicyFactory, conflict_a: Path) -> None:
    make_policy("multi3", extends=["./conflict_a.yaml", "hipaa"])
    child = make_policy("child", extends=["./multi3.yaml"])
    assert fields(child).count("pii.entities.AGE") == 1
    # listed next to a parent that takes part in it: still one conflict, not one per route to it
    composed = resolve_policies([str(child), "hipaa"])
    assert [c.field for c in composed.conflicts].count("pii.entities.AGE") == 1


def test_deciding_the_field_in_the_file_settles_the_conflict(make_policy: PolicyFactory, conflict_a: Path) -> None:
    undecided = make_policy("undecided", extends=["./conflict_a.yaml", "hipaa"])
    assert "pii.entities.AGE" in fields(undecided)
    decided = make_policy("decided", extends=["./conflict_a.yaml", "hipaa"], pii={
        "entities": [{"entity": "AGE", "operator": "generalize", "params": {"age_cap": 85}, "cite": "ours"}]})
    policy = resolve_policies([str(decided)])
    assert "pii.entities.AGE" not in [c.field for c in policy.conflicts]
    assert policy.pii.rule_for("AGE").params == {"age_cap": 85}


# --------------------------------------------------------------------- recognizers of the same name

def test_listed_policies_merge_recognizers_of_one_name_too(conflict_a: Path, fintech: Path) -> None:
    policy = resolve_policies([str(conflict_a), str(fintech)])
    (rec,) = policy.pii.custom_recognizers
    assert {p.regex for p in rec.patterns} == {WEAK, STRONG}
    assert RECOGNIZER in [c.field for c in policy.conflicts]


def test_merged_recognizer_drops_a_validator_they_disagree_on(make_policy: PolicyFactory) -> None:
    a = make_policy("a", pii={"custom_recognizers": [_recognizer(WEAK, validator="luhn")]})
    b = make_policy("b", pii={"custom_recognizers": [_recognizer(STRONG)]})
    (rec,) = resolve_policies([str(a), str(b)]).pii.custom_recognizers
    assert rec.validator == "none" and len(rec.patterns) == 2


def test_recognizers_of_different_entities_keep_the_first_and_say_so(make_policy: PolicyFactory) -> None:
    make_policy("a", pii={"custom_recognizers": [_recognizer(WEAK)]})
    make_policy("b", pii={"custom_recognizers": [_recognizer(STRONG, entity="ACCOUNT_NUMBER")]})
    m = make_policy("m", extends=["./a.yaml", "./b.yaml"])
    policy = resolve_policies([str(m)])
    (rec,) = policy.pii.custom_recognizers
    assert (rec.entity, [p.regex for p in rec.patterns]) == ("CUSTOMER_ID", [WEAK])
    (conflict,) = [c for c in policy.conflicts if c.field == RECOGNIZER]
    assert "different entities" in conflict.resolution


# ----------------------------------------------------------------------------- where check points

def test_check_names_the_index_in_the_files_own_entities(make_policy: PolicyFactory) -> None:
    typo = make_policy("typo", extends=["gdpr"], pii={"entities": [
        {"entity": "PERSN", "operator": "drop", "cite": "x"},
        {"entity": "PERSON", "operator": "drop", "cite": "x"},
        {"entity": "EMPLOYE_ID", "operator": "drop", "cite": "x"}]})
    code, out = run("policy", "check", str(typo))
    assert code == 0, out
    assert f"{typo}:pii.entities.0.entity: no recognizer is known for PERSN" in out
    assert f"{typo}:pii.entities.2.entity: no recognizer is known for EMPLOYE_ID" in out


def test_errors_and_warnings_name_the_file_the_same_way(make_policy: PolicyFactory, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    make_policy("typo", pii={"entities": [{"entity": "PERSN", "operator": "drop", "cite": "x"}]})
    make_policy("bad", explanations={"max_reasons": {"value": "four", "cite": "x"}})
    monkeypatch.chdir(tmp_path)
    code, out = run("policy", "check", "typo.yaml", "bad.yaml")
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith("typo.yaml:pii.entities.0.entity: ") for line in lines), out
    assert any(line.startswith("bad.yaml:explanations.max_reasons.value: ") for line in lines), out
