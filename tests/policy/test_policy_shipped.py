"""Every shipped policy loads, is current, cites every rule, and carries the parameters regulations.md asks."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mlguard.policy import (
    KNOWN_ENTITIES,
    OPERATOR_STRENGTH,
    bundled_policies,
    load_policy_file,
    resolve_policies,
    resolve_policy,
)
from mlguard.policy.compose import STRATEGIES
from mlguard.policy.model import SECTIONS, PolicyDoc, Rule

EXPECTED = {"base", "gdpr", "hipaa", "ccpa", "eu_ai_act", "ecoa", "nyc_ll144", "eeoc_four_fifths", "pci_dss",
            "colorado_admt"}
SHIPPED = sorted(bundled_policies())
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_all_expected_policies_ship() -> None:
    assert set(SHIPPED) >= EXPECTED


def test_bundled_names_resolve_to_the_repo_policies() -> None:
    """From a checkout or an installed wheel (mlguard/_policies), a name finds the same file content."""
    bundled = bundled_policies()
    for path in REPO_POLICIES.glob("*.yaml"):
        assert bundled[path.stem].read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_loads_and_is_named_after_its_file(name: str) -> None:
    path = bundled_policies()[name]
    doc = load_policy_file(path)
    assert doc.id == path.stem
    assert doc.title and doc.instrument and doc.jurisdiction and doc.version
    if name != "base":
        assert doc.extends == ["base"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_is_not_past_review_by(name: str) -> None:
    doc = load_policy_file(bundled_policies()[name])
    assert doc.review_by >= date.today(), (
        f"{name}: review_by {doc.review_by} is past; re-check the policy against the law and move the date")


def _rules(doc: PolicyDoc) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if doc.failure_mode:
        found.append(("failure_mode", doc.failure_mode))
    for section in SECTIONS:
        body = getattr(doc, section)
        for name in type(body).model_fields:
            item = getattr(body, name)
            if isinstance(item, list):
                found.extend((f"{section}.{name}.{i}", x) for i, x in enumerate(item))
            elif item is not None:
                found.append((f"{section}.{name}", item))
    return found


@pytest.mark.parametrize("name", SHIPPED)
def test_every_rule_carries_a_citation(name: str) -> None:
    doc = load_policy_file(bundled_policies()[name])
    for where, item in _rules(doc):
        assert item.cite.strip(), f"{name}:{where} has no citation"
        if name == "base":
            assert item.cite.startswith("(D)"), f"base:{where} must be marked as an engineering default"


@pytest.mark.parametrize("name", SHIPPED)
def test_entities_are_known_or_have_a_recognizer(name: str) -> None:
    pii = resolve_policy(name).merged_doc().pii
    custom = {r.entity for r in pii.custom_recognizers}
    unknown = {e.entity for e in pii.entities} - KNOWN_ENTITIES - custom
    assert not unknown


@pytest.mark.parametrize(("name", "field"), [
    ("hipaa", "pii.restricted_zip3"), ("hipaa", "retention.min"), ("ecoa", "retention.min"),
    ("ecoa", "explanations.notice_within"), ("nyc_ll144", "fairness.exclude_below_share"),
    ("ccpa", "retention.erasure_within"), ("ccpa", "explanations.required"),
    ("colorado_admt", "retention.min"), ("colorado_admt", "explanations.required"),
    ("colorado_admt", "oversight.human_review"),
])
def test_secondary_sources_are_marked_verify(name: str, field: str) -> None:
    effective = resolve_policies([name])
    assert effective.cites(field), f"{name} does not set {field}"
    assert all(c.verify for c in effective.cites(field))


def test_colorado_every_rule_outside_engineering_defaults_is_verify() -> None:
    doc = load_policy_file(bundled_policies()["colorado_admt"])
    assert doc.status == "enacted_not_yet_effective"
    for where, item in _rules(doc):
        assert item.verify or item.cite.startswith("(D)"), where


def test_every_schema_rule_field_has_a_composition_strategy() -> None:
    fields = {"failure_mode"}
    for section in SECTIONS:
        model = PolicyDoc.model_fields[section].annotation
        assert isinstance(model, type)
        fields |= {f"{section}.{n}" for n in model.model_fields if n not in ("entities", "custom_recognizers")}
    assert fields == set(STRATEGIES)


def test_rule_is_generic_over_values() -> None:
    assert Rule[bool](value=True, cite="x").value is True


# ------------------------------------------------------------------------------- parameters per law

def test_hipaa_safe_harbor_generalisations_and_tokens() -> None:
    p = resolve_policies(["hipaa"])
    assert p.pii.entities["ZIP_CODE"].operator == "generalize"
    assert p.pii.entities["ZIP_CODE"].params == {"zip": "zip3"}
    assert p.pii.entities["DATE_OF_BIRTH"].params == {"date": "year"}
    assert p.pii.entities["DATE_TIME"].params == {"date": "year"}
    assert p.pii.entities["AGE"].params == {"age_cap": 90}
    assert len(p.pii.restricted_zip3) == 17 and "036" in p.pii.restricted_zip3 and "893" in p.pii.restricted_zip3
    assert all(len(z) == 3 and z.isdigit() for z in p.pii.restricted_zip3)
    # 164.514(c): codes must not be derived from the identifier, so no HMAC anywhere
    assert all(r.operator != "hmac" for r in p.pii.entities.values())
    assert p.pii.entities["PERSON"].operator == "token"
    assert p.pii.default_operator == "token"
    for entity in ("PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "MEDICAL_RECORD_NUMBER",
                   "HEALTH_PLAN_NUMBER", "ACCOUNT_NUMBER", "MEDICAL_LICENSE", "VEHICLE_ID", "DEVICE_ID", "URL",
                   "IP_ADDRESS", "STREET_ADDRESS"):
        assert entity in p.pii.entities
    assert p.failure_mode == "fail_closed"
    assert p.retention.min == "P6Y"
    assert p.audit.record_reads and p.audit.tamper_evident and p.audit.encrypt


def test_pci_masks_bin_and_last_four_and_scans_responses() -> None:
    p = resolve_policies(["pci_dss"])
    card = p.pii.entities["CREDIT_CARD"]
    assert card.operator == "mask" and card.params == {"keep_first": 6, "keep_last": 4}
    assert p.pii.scan_response is True
    assert p.pii.entities["CARD_VERIFICATION_CODE"].operator == "drop"
    assert [r.validator for r in p.pii.custom_recognizers] == ["none"]
    assert p.retention.min == "P12M"
    assert p.audit.record_reads and p.failure_mode == "fail_closed"


def test_ecoa_reasons_and_prohibited_bases() -> None:
    p = resolve_policies(["ecoa"])
    assert p.pii.protected_to_model is False
    assert p.explanations.max_reasons == 4
    assert p.explanations.reasons_on_adverse and p.explanations.required
    for basis in ("race", "color", "religion", "national_origin", "sex", "marital_status", "age",
                  "public_assistance_income"):
        assert basis in p.explanations.prohibited_bases
    assert p.explanations.is_prohibited("Marital-Status")
    assert p.explanations.insufficient_text("Does not meet our Internal Standards") == "internal standards"
    assert p.explanations.insufficient_text("Too many recent credit inquiries") is None
    assert p.retention.min == "P25M"
    assert p.fairness.min_impact_ratio == 0.8
    assert p.failure_mode == "fail_closed"


def test_gdpr_requires_a_deployment_retention_maximum() -> None:
    p = resolve_policies(["gdpr"])
    assert p.retention.max_required and p.retention.max is None
    assert p.missing == ["retention.max"]
    assert p.failure_mode == "fail_open"
    assert p.oversight.log_solely_automated and p.oversight.human_review
    assert p.pii.entities["PERSON"].operator == "hmac"


def test_eu_ai_act_and_fairness_profiles() -> None:
    ai = resolve_policies(["eu_ai_act"])
    assert ai.retention.min == "P6M" and ai.oversight.stop_control and ai.failure_mode == "fail_closed"
    ll = resolve_policies(["nyc_ll144"])
    assert ll.fairness.exclude_below_share == 0.02 and ll.fairness.report_unknown
    assert ll.fairness.min_impact_ratio == 0.8 and ll.fairness.intersectional
    ee = resolve_policies(["eeoc_four_fifths"])
    assert ee.fairness.min_impact_ratio == 0.8 and ee.fairness.significance_alpha == 0.05


def test_base_is_neutral_and_operators_are_ordered() -> None:
    p = resolve_policies([])
    assert p.ids == ["base"]
    assert p.failure_mode == "fail_closed"
    assert p.pii.default_operator == "replace" and not p.pii.protected_to_model
    assert OPERATOR_STRENGTH.index("drop") > OPERATOR_STRENGTH.index("token") > OPERATOR_STRENGTH.index(
        "hmac") > OPERATOR_STRENGTH.index("mask")


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(SHIPPED, 2)))
def test_every_pair_of_shipped_policies_composes(a: str, b: str) -> None:
    p = resolve_policies([a, b])
    assert p.ids == [a, b]
    assert p.content_hash
    assert all(c.field != "retention.max" for c in p.conflicts)
