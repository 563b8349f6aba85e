"""Every shipped policy's entity set: each named entity, declared as a field, gets that policy's operator;
and the entities mlguard ships recognizers for are found in free text."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.jsonpath import compile_path
from mlguard.keys import Keyring
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine
from mlguard.pii.vault import Vault
from mlguard.policy import resolve_policies

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
SHIPPED = sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))

# One sample value per entity, in a sentence that gives it its usual context.
SAMPLES = {
    "PERSON": ("My name is Zebulon Quixmartin.", "Zebulon Quixmartin"),
    "EMAIL_ADDRESS": ("Write to zeb@planted.internal today.", "zeb@planted.internal"),
    "PHONE_NUMBER": ("Call me at 212-555-0199 tomorrow.", "212-555-0199"),
    "US_SSN": ("My SSN is 219-09-9999.", "219-09-9999"),
    "CREDIT_CARD": ("Card 4111 1111 1111 1111 was charged.", "4111 1111 1111 1111"),
    "IBAN_CODE": ("Pay to GB82 WEST 1234 5698 7654 32 now.", "GB82 WEST 1234 5698 7654 32"),
    "IP_ADDRESS": ("Login from 192.168.10.24 failed.", "192.168.10.24"),
    "STREET_ADDRESS": ("I live at 42 Elm Street, Springfield, IL 62704.", "42 Elm Street"),
    "ZIP_CODE": ("The zip code is 94105.", "94105"),
    "DATE_OF_BIRTH": ("DOB: 07/04/1976.", "07/04/1976"),
    "MEDICAL_RECORD_NUMBER": ("Patient MRN: 00123456 admitted.", "00123456"),
    "HEALTH_PLAN_NUMBER": ("Member ID W123456789 on file.", "W123456789"),
    "ACCOUNT_NUMBER": ("Account number 000123456789 closed.", "000123456789"),
    "VEHICLE_ID": ("The car 1M8GDM9AXKP042788 was sold.", "1M8GDM9AXKP042788"),
    "DEVICE_ID": ("IMEI 490154203237518 reported lost.", "490154203237518"),
    "AGE": ("A 93-year-old patient.", "93"),
    "URL": ("See https://planted.example.org/profile for more.", "planted.example.org/profile"),
    "LOCATION": ("She moved to Kyrgyzstan last year.", "Kyrgyzstan"),
    "NRP": ("He is Norwegian.", "Norwegian"),
    "DATE_TIME": ("Admitted on 2021-03-04.", "2021-03-04"),
}


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.from_seed(b"policy-tests-seed-material-0123456789ab")


def redactor_for(name: str, tmp_path: Path, keyring: Keyring, engine: PIIEngine) -> Redactor:
    pii = resolve_policies([name]).pii
    return Redactor.from_policy(pii, PIIEngineSettings(), keyring=keyring, vault=Vault(tmp_path / "v.db", keyring),
                                engine=engine)


def test_every_policy_is_tested() -> None:
    assert {"base", "gdpr", "hipaa", "ecoa"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_declared_entities_get_the_policy_operator(name: str, tmp_path: Path, keyring: Keyring,
                                                   engine: PIIEngine) -> None:
    pii = resolve_policies([name]).pii
    red = redactor_for(name, tmp_path, keyring, engine)
    for entity, rule in pii.entities.items():
        value = SAMPLES.get(entity, ("", "X-1234-PLANTED"))[1]
        out, findings = red.redact({"f": value}, [(compile_path("$.f"), entity)], scan_undeclared=False)
        assert findings[0].operator == rule.operator, entity
        if rule.operator == "keep":
            assert out == {"f": value}
        elif rule.operator == "drop":
            assert out == {}
        else:
            assert out["f"] != value, f"{name}: {entity} left in clear"


@pytest.mark.parametrize("name", SHIPPED)
def test_entity_set_is_detected_in_text(name: str, tmp_path: Path, keyring: Keyring, engine: PIIEngine) -> None:
    pii = resolve_policies([name]).pii
    red = redactor_for(name, tmp_path, keyring, engine)
    entities = [e for e, r in pii.entities.items() if r.operator != "keep" and e in SAMPLES]
    for entity in entities:
        text, value = SAMPLES[entity]
        out, findings = red.redact({"t": text})
        assert value not in out["t"], f"{name}: {entity} not redacted in text"
        assert findings, entity
