"""A JSON member's name counts as evidence of what its value is (cvv, securityCode, ssn...), and the card look-alikes
a payments user met: a 4-digit CVC, an expiry year next to "cvv", a PAN written with underscores.

Why these tests: with ``policies: [pci_dss]`` and a route declaring only ``$.card.*``, ``{"payment": {"cvv": "737"}}``
reached the model and the audit record in clear (PCI DSS 3.3.1.2: a card verification code is never stored after
authorisation): the CVV recognizer needs a context word in the text, and the member name was not text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.jsonpath import compile_path
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine, get_engine
from mlguard.pii.vault import Vault
from mlguard.policy import resolve_policies
from tests.pii.conftest import RecordingApp

CVV = "CARD_VERIFICATION_CODE"
MEMBER_NAME = "member-name"  # the recognizer findings name
CARD_RULES = [(compile_path("$.card.*"), "CREDIT_CARD")]


@pytest.fixture(scope="module")
def pci_engine() -> PIIEngine:
    """The engine with pci_dss's custom CVV recognizer, as the stage builds it."""
    pii = resolve_policies(["pci_dss"]).pii
    return get_engine(PIIEngineSettings(), [r.model_dump() for r in pii.custom_recognizers])


@pytest.fixture
def pci(tmp_path: Path, keyring: Keyring, pci_engine: PIIEngine) -> Redactor:
    pii = resolve_policies(["pci_dss"]).pii
    return Redactor.from_policy(pii, PIIEngineSettings(), keyring=keyring, vault=Vault(tmp_path / "v.db", keyring),
                                engine=pci_engine)


def _by_path(findings: list[Any]) -> dict[str, tuple[str, str, str]]:
    return {f.path: (f.entity, f.recognizer, f.operator) for f in findings}


# ------------------------------------------------------------------------------------------ member names


def test_the_reported_request_loses_its_cvv_and_security_code(pci: Redactor) -> None:
    doc = {"payment": {"pan": "4111111111111111", "cvv": "737", "security_code": "123"}}
    out, findings = pci.redact(doc, CARD_RULES)
    assert out == {"payment": {"pan": "411111******1111"}}
    got = _by_path(findings)
    assert got["$.payment.cvv"] == (CVV, MEMBER_NAME, "drop")
    assert got["$.payment.security_code"] == (CVV, MEMBER_NAME, "drop")
    assert doc["payment"]["cvv"] == "737"  # the input is never mutated


def test_a_cvv_sent_as_a_number_is_dropped_too(pci: Redactor) -> None:
    out, findings = pci.redact({"payment": {"cvv": 737, "amount": 12.5, "pin_verified": True}}, CARD_RULES)
    assert out == {"payment": {"amount": 12.5, "pin_verified": True}}  # other numbers and booleans untouched
    assert _by_path(findings) == {"$.payment.cvv": (CVV, MEMBER_NAME, "drop")}


@pytest.mark.parametrize("name", ["cvv", "CVV", "cvv2", "cvc", "CVC2", "securityCode", "security-code",
                                  "SECURITY_CODE", "Security Code", "card_verification_value", "cardCvc",
                                  "card.code"])
def test_member_names_are_matched_whatever_their_case_and_separators(pci: Redactor, name: str) -> None:
    out, findings = pci.redact({"p": {name: "0421"}}, CARD_RULES)
    assert out == {"p": {}}
    assert [(f.entity, f.recognizer) for f in findings] == [(CVV, MEMBER_NAME)]


def test_a_four_digit_cvc_is_a_cvv_not_a_date(pci: Redactor) -> None:
    out, findings = pci.redact({"cvc": "1234"}, CARD_RULES)
    assert out == {}
    assert [f.entity for f in findings] == [CVV]


@pytest.mark.parametrize("doc", [
    {"code": "737"},  # "code": a product, promo, country or error code as often as a CVV
    {"cid": "737"},  # Amex's name for it, but "cid" is a client, correlation or content id in most APIs
    {"pin": "7371"},  # a map pin, a GPIO pin, India's postal "PIN code"
    {"verification_code": "737"},  # an e-mail/SMS one-time code
    {"cvc_check": "pass", "cvv_result": "M"},  # a gateway's check results, not the code: names match whole
])
def test_ambiguous_names_are_not_hints(pci: Redactor, doc: dict[str, Any]) -> None:
    out, findings = pci.redact(doc, CARD_RULES)
    assert out == doc
    assert findings == []


def test_a_route_rule_always_wins(pci: Redactor) -> None:
    doc = {"payment": {"cvv": "737", "security_code": "123", "cvc": "456"}, "meta": {"cvv": "999"}}
    rules = [(compile_path("$.payment.cvv"), "keep"), (compile_path("$.payment.security_code"), "PERSON"),
             (compile_path("$.meta"), "keep")]
    out, findings = pci.redact(doc, rules)
    assert out == {"payment": {"cvv": "737", "security_code": "<PERSON>"}, "meta": {"cvv": "999"}}
    assert _by_path(findings) == {"$.payment.security_code": ("PERSON", "declared", "replace"),
                                  "$.payment.cvc": (CVV, MEMBER_NAME, "drop")}


def test_no_hint_where_nothing_is_scanned(pci: Redactor) -> None:
    """scan_undeclared off: the operator chose to pass undeclared fields as they are; a hint is detection."""
    doc = {"cvv": "737"}
    assert pci.redact(doc, CARD_RULES, scan_undeclared=False) == (doc, [])


def test_other_entities_by_member_name(tmp_path: Path, keyring: Keyring, engine: PIIEngine) -> None:
    red = Redactor.from_policy(resolve_policies(["base"]).pii, PIIEngineSettings(), keyring=keyring, engine=engine)
    doc = {"applicant": {"SSN": 219099999, "date_of_birth": "07.04.1976", "mobileNumber": ["+1 602 555 0143"],
                         "emailAddress": "zeb@planted.internal", "iban": "GB82WEST12345698765432",
                         "pan": 0.25, "email": True, "phone": "unknown"}}
    out, findings = red.redact(doc)
    a = out["applicant"]
    assert a["SSN"] == "<US_SSN>" and a["date_of_birth"] == "<DATE_OF_BIRTH>"
    assert a["mobileNumber"] == ["<PHONE_NUMBER>"] and a["emailAddress"] == "<EMAIL_ADDRESS>"
    assert a["iban"] == "<IBAN_CODE>"
    # a value that cannot be the named entity is left to ordinary detection: a camera pan, a flag, a word
    assert a["pan"] == 0.25 and a["email"] is True and a["phone"] == "unknown"
    hinted = {f.path for f in findings if f.recognizer == MEMBER_NAME}
    assert hinted == {"$.applicant.SSN", "$.applicant.date_of_birth", "$.applicant.mobileNumber[0]",
                      "$.applicant.emailAddress", "$.applicant.iban"}


def test_a_hinted_value_is_also_found_in_the_free_text(pci: Redactor) -> None:
    """As a declared field's is: the CVV the request named is not left in clear in its note."""
    out, _ = pci.redact({"cvc": "4821", "note": "customer read out 4821 twice"}, CARD_RULES)
    assert "4821" not in out["note"]


def test_member_hint_table() -> None:
    from mlguard.pii.redactor import member_hint

    assert member_hint("Security-Code", "737") == CVV
    assert member_hint("cardNumber", 4111111111111111) == "CREDIT_CARD"
    assert member_hint("card_number", "1234") is None  # too few digits for a PAN: left to detection
    assert member_hint("cvv", True) is None and member_hint("cvv", "") is None
    assert member_hint("email", "not given") is None


# ------------------------------------------------------------------------------------------ look-alikes


def test_an_expiry_year_is_not_a_cvv(pci: Redactor) -> None:
    out, findings = pci.redact({"note": "cvv 123, expires 09/2027"}, CARD_RULES)
    assert out["note"] == "cvv , expires 09/2027"
    assert [f.entity for f in findings] == [CVV]
    text = "security code 4821 valid thru 2027-09"
    _, findings = pci.redact({"note": text}, CARD_RULES)
    assert [text[f.start:f.end] for f in findings if f.entity == CVV] == ["4821"]


@pytest.mark.parametrize("text", ["4111_1111_1111_1111", "paid with 4111_1111_1111_1111 today",
                                  "card 3782_822463_10005"])
def test_a_pan_with_underscores_is_a_pan(pci: Redactor, text: str) -> None:
    out, findings = pci.redact({"note": text}, CARD_RULES)
    assert "1111_1111_1111" not in out["note"] and "822463" not in out["note"]
    assert [f.entity for f in findings] == ["CREDIT_CARD"]


@pytest.mark.parametrize(("text", "middle"), [  # PCI DSS masking keeps the first six and last four digits
    ("paid with 4539.1488.0343.6467 today", "0343"),  # dots: the MAC address pattern took 12 digits of 16
    ("card 3782.822463.10005", "2463"),
    ("pay with 2223 0031 2200 3222 now", "2200"),  # Mastercard 2-series: read as a date, not a card
    ("pay with 2223003122003222 now", "312200"),
    ("charged 2720-9912-3456-7803 yesterday", "3456"),
])
def test_a_pan_with_dots_or_of_the_mastercard_2_series_is_a_pan(pci: Redactor, text: str, middle: str) -> None:
    out, findings = pci.redact({"note": text}, CARD_RULES)
    assert middle not in out["note"]
    assert [f.entity for f in findings] == ["CREDIT_CARD"]


@pytest.mark.parametrize("text", ["build 4111.1111.1111.1112 done", "version 2024.11.27 and 10.0.0.1",
                                  "order 2223 0031 2200 3223 shipped"])
def test_dotted_or_2_series_digits_failing_luhn_are_not_a_pan(pci: Redactor, text: str) -> None:
    _, findings = pci.redact({"note": text}, CARD_RULES)
    assert "CREDIT_CARD" not in {f.entity for f in findings}


def test_underscored_digits_failing_luhn_are_not_a_pan(pci: Redactor) -> None:
    doc = {"note": "batch 4111_1111_1111_1112 done"}
    _, findings = pci.redact(doc, CARD_RULES)
    assert "CREDIT_CARD" not in {f.entity for f in findings}


# ------------------------------------------------------------------------------------------ request and response


@pytest.mark.anyio
async def test_request_and_response_through_the_middleware(tmp_path: Path) -> None:
    app = RecordingApp({"status": "ok", "echo": {"cvc": "0421", "securityCode": 737}})
    cfg = {"policies": ["pci_dss"],
           "audit": {"store": f"sqlite:///{tmp_path / 'audit.db'}", "keyring": str(tmp_path / "mlguard.keyring"),
                     "witness": str(tmp_path / "witness.log")},
           "pii_engine": {"vault_path": str(tmp_path / "vault.db")}, "admin": {"enabled": False},
           "retention": {"max": "P3Y"},
           "routes": [{"path": "/pay", "pii": {"$.card.*": "CREDIT_CARD"}}]}
    mw = GuardMiddleware(app, config=cfg)
    body = {"payment": {"pan": "4111111111111111", "cvv": "737", "security_code": 123}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        r = await c.post("/pay", json=body)
    assert r.status_code == 200
    assert app.bodies[0] == {"payment": {"pan": "411111******1111"}}
    assert r.json()["echo"] == {}
