"""``pii_engine.countries`` loads the recognizers of the countries it names, European ones included.

Why these tests: Presidio ties most European recognizers to their country's language (PlPeselRecognizer ``pl``,
EsNieRecognizer ``es`` ...) and loads only those of the engine's language, so on the English pipeline
``countries: [es, it, pl, de, fr]`` changed nothing: a PESEL, an NIE, a codice fiscale in a claim's free text
reached the model under gdpr. France had no recognizer at all (mlguard's FR_NIR now).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlguard.config.pii import PIIEngineSettings
from mlguard.keys import Keyring
from mlguard.pii import Redactor
from mlguard.pii.engine import PIIEngine, get_engine
from mlguard.pii.recognizers import _nir_ok
from mlguard.pii.vault import Vault
from mlguard.policy import resolve_policies

EU = ["us", "de", "es", "fr", "it", "pl"]
CASES = [  # (text, the identifier in it, entity): check digits valid
    ("PESEL 44051401359 on file", "44051401359", "PL_PESEL"),
    ("her NIE is X1234567L", "X1234567L", "ES_NIE"),
    ("NIF 12345678Z", "12345678Z", "ES_NIF"),
    ("codice fiscale RSSMRA85T10A562S", "RSSMRA85T10A562S", "IT_FISCAL_CODE"),
    ("numéro de sécurité sociale 1 84 12 76 451 089 46", "1 84 12 76 451 089 46", "FR_NIR"),
    ("NIR 284022A00512374", "284022A00512374", "FR_NIR"),  # Corsica: 2A counts as 19 in the key
]


@pytest.fixture(scope="module")
def eu_engine() -> PIIEngine:
    return get_engine(PIIEngineSettings(countries=EU))


@pytest.mark.parametrize(("text", "value", "entity"), CASES)
def test_the_named_countries_identifiers_are_found(eu_engine: PIIEngine, text: str, value: str,
                                                   entity: str) -> None:
    (spans,) = eu_engine.analyze_many([text])
    assert (entity, value) in [(s.entity, text[s.start:s.end]) for s in spans]


def test_without_the_country_they_are_not_loaded(engine: PIIEngine) -> None:
    """The default (``us``) leaves them out: the option is what turns them on (README says so)."""
    texts = [text for text, _, _ in CASES]
    found = {s.entity for spans in engine.analyze_many(texts) for s in spans}
    assert not found & {entity for _, _, entity in CASES}


def test_under_gdpr_the_claim_reaches_the_model_without_them(tmp_path: Path, keyring: Keyring,
                                                           eu_engine: PIIEngine) -> None:
    red = Redactor.from_policy(resolve_policies(["gdpr"]).pii, PIIEngineSettings(countries=EU), keyring=keyring,
                               vault=Vault(tmp_path / "v.db", keyring), engine=eu_engine)
    note = " / ".join(text for text, _, _ in CASES)
    out, _ = red.redact({"description": note}, scan_undeclared=True)
    for _, value, _ in CASES:
        assert value not in out["description"]


@pytest.mark.parametrize(("nir", "ok"), [("184127645108946", True), ("184127645108947", False),
                                         ("284022A00512374", True), ("284022B00512374", False)])
def test_the_nir_key(nir: str, ok: bool) -> None:
    assert _nir_ok(nir) is ok


UK_CASES = [("My NI number is LC928327D", "LC928327D"), ("NI: XC 96 00 12 A on file", "XC 96 00 12 A")]


@pytest.fixture(scope="module")
def uk_engine() -> PIIEngine:
    return get_engine(PIIEngineSettings(countries=["us", "uk"]))


@pytest.mark.parametrize(("text", "value"), UK_CASES)
def test_presidio_recognizers_its_config_disables_load_for_their_country(uk_engine: PIIEngine, text: str,
                                                                          value: str) -> None:
    """UK_NINO is English, but Presidio's default configuration ships it disabled: ``countries: [uk]`` loaded
    the NHS number alone, and 952 of a user's 2,000 compact NI numbers reached the output in clear."""
    (spans,) = uk_engine.analyze_many([text])
    assert ("UK_NINO", value) in [(s.entity, text[s.start:s.end]) for s in spans]


def test_a_policy_entity_nothing_detects_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import yaml

    from mlguard.runtime import Guard

    policy = tmp_path / "fintech.yaml"
    policy.write_text(yaml.safe_dump({
        "id": "fintech", "title": "t", "instrument": "t", "jurisdiction": "UK", "status": "engineering_default",
        "effective_from": "2026-01-01", "review_by": "2099-12-31", "version": "1", "extends": ["gdpr"],
        "pii": {"entities": [{"entity": "UK_NINO", "operator": "drop", "cite": "internal"}]}}))
    caplog.set_level(logging.WARNING, logger="mlguard")
    for countries, warned in ((["us"], True), (["us", "uk"], False)):
        caplog.clear()
        guard = Guard({"policies": [str(policy)], "retention": {"max": "P1Y"}, "audit": {"enabled": False},
                       "pii_engine": {"countries": countries, "vault_path": str(tmp_path / "v.db")},
                       "routes": [{"path": "/p"}]}, stages=["pii"])
        lines = [r.getMessage() for r in caplog.records if "no recognizer finds" in r.getMessage()]
        assert bool(lines) is warned, lines
        if warned:
            assert "UK_NINO by fintech" in lines[0] and "add uk to pii_engine.countries" in lines[0]
        asyncio.run(guard.aclose())
