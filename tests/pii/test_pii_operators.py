"""Every operator: replace, mask, drop, hmac, token (vault), encrypt, generalize, keep; and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlguard.errors import ConfigError, PIIError
from mlguard.keys import Keyring
from mlguard.pii.operators import DROP, build_operator, decrypt_value, generalize, mask
from mlguard.pii.vault import Vault

SSN = "123-45-6789"


def op(entity: str, kind: str, keyring: Keyring | None = None, vault: Vault | None = None, **params: object):
    return build_operator(entity, kind, params, keyring=keyring, vault=vault)


def test_replace_default_and_text() -> None:
    assert op("US_SSN", "replace").apply(SSN) == "<US_SSN>"
    assert op("US_SSN", "replace", text="[gone]").apply(SSN) == "[gone]"
    assert op("US_SSN", "replace").apply(123456789) == "<US_SSN>"


def test_mask_pci_bin_and_last_four() -> None:
    card = "4111 1111 1111 1111"
    assert op("CREDIT_CARD", "mask", keep_first=6, keep_last=4).apply(card) == "4111 11** **** 1111"
    assert mask("ab", 1, 1) == "**"  # too short to keep anything
    assert op("X", "mask", keep_first=0, keep_last=0, char="#").apply("a-b") == "#-#"


def test_drop_and_keep() -> None:
    assert op("NRP", "drop").apply("French") is DROP
    assert op("NRP", "drop").apply_span("French") == ""
    assert op("NRP", "keep").apply("French") == "French"


def test_hmac_is_keyed_consistent_and_normalised(keyring: Keyring) -> None:
    h = op("PERSON", "hmac", keyring)
    a, b = h.apply("Jane Doe"), h.apply("  jane   DOE ")
    assert a == b and a.startswith("PERSON_") and "Jane" not in a
    other = op("PERSON", "hmac", Keyring.from_seed(b"another-seed-material-0123456789abcdef"))
    assert other.apply("Jane Doe") != a
    assert op("EMAIL_ADDRESS", "hmac", keyring).apply("Jane Doe") != a  # entity is part of the input


def test_hmac_needs_keyring() -> None:
    with pytest.raises(ConfigError, match="keyring"):
        op("PERSON", "hmac")


def test_token_vault_random_consistent_reversible(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "vault.db"
    vault = Vault(path, keyring)
    t = op("PERSON", "token", keyring, vault)
    tok = t.apply("Jane Planted-Doe")
    assert tok.startswith("tok_") and t.apply("Jane Planted-Doe") == tok
    assert t.apply("John Other") != tok
    assert vault.reveal(tok) == ("PERSON", "Jane Planted-Doe")
    assert vault.reveal("tok_unknown") is None
    vault.close()
    # Not derived from the value: a vault with the same key but a fresh file issues a different token.
    other = Vault(tmp_path / "other.db", keyring)
    assert other.token_for("PERSON", "Jane Planted-Doe") != tok
    other.close()
    for f in tmp_path.iterdir():
        assert b"Planted" not in f.read_bytes()
    # The key holder only: another keyring cannot read the entry.
    stranger = Vault(path, Keyring.from_seed(b"stranger-seed-material-0123456789abcdef"))
    with pytest.raises(PIIError):
        stranger.reveal(tok)


def test_token_needs_vault(keyring: Keyring) -> None:
    with pytest.raises(ConfigError, match="vault"):
        op("PERSON", "token", keyring)


def test_encrypt_roundtrip_and_binding(keyring: Keyring) -> None:
    e = op("US_SSN", "encrypt", keyring)
    blob = e.apply(SSN)
    assert blob.startswith("enc:v1:") and SSN not in blob
    assert e.apply(SSN) != blob  # fresh nonce each time
    key = keyring.secret("pii.encrypt")
    assert decrypt_value(key, "US_SSN", blob) == SSN
    with pytest.raises(PIIError):
        decrypt_value(key, "PERSON", blob)
    with pytest.raises(PIIError):
        decrypt_value(keyring.secret("pii.hmac"), "US_SSN", blob)


def test_generalize_zip_date_age() -> None:
    assert generalize("ZIP_CODE", "94105-1234", {"zip": "zip3"}) == "941"
    assert generalize("ZIP_CODE", "03601", {"zip": "zip3", "restricted_zip3": ["036"]}) == "000"
    assert generalize("ZIP_CODE", "12", {"zip": "zip3"}) == "<ZIP_CODE>"
    assert generalize("DATE_OF_BIRTH", "1970-12-07", {"date": "year"}) == "1970"
    assert generalize("DATE_OF_BIRTH", "12/07/1970", {"date": "year"}) == "1970"
    assert generalize("DATE_OF_BIRTH", "last week", {"date": "year"}) == "<DATE_OF_BIRTH>"
    assert generalize("AGE", 95, {"age_cap": 90}) == 90
    assert generalize("AGE", 42, {"age_cap": 90}) == 42
    assert generalize("AGE", "93", {"age_cap": 90}) == "90"
    assert op("ZIP_CODE", "generalize").apply("94105") == "941"  # entity default


def test_unknown_operator_and_bad_generalize() -> None:
    with pytest.raises(ConfigError, match=r"pii\.entities\.X"):
        op("X", "scramble")
    with pytest.raises(ConfigError, match="generalize"):
        op("PERSON", "generalize")
