"""GDPR erasure reaches the token vault: a guarded request under hipaa with a subject, a name and an MRN, then
`mlguard audit shred --config FILE --subject ID` (store, keyring and vault from the config): the subject's tokens
no longer reveal, another subject's do, no ciphertext of theirs is left on disk, the tombstone counts the vault
entries, and a second shred is a no-op."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mlguard.cli import cli
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from tests.audit.conftest import tombstones
from tests.pii.conftest import RecordingApp

pytestmark = pytest.mark.anyio

CONFIG = """\
policies: [hipaa]
audit: {store: "sqlite:///audit.db", keyring: mlguard.keyring, witness: witness.jsonl}
pii_engine: {vault_path: pii/vault.db}
admin: {enabled: false}
routes:
  - path: /predict
    subject: $.patient.id
    scan_undeclared: false
    pii: {$.patient.id: keep, $.patient.name: PERSON, $.patient.mrn: MEDICAL_RECORD_NUMBER}
"""
PATIENTS = {"P-1": ("Ada Quillfeather", "MRN-48213"), "P-2": ("Bo Tarrant", "MRN-77120")}


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


async def _serve(cfg: Path) -> list[Any]:
    app = RecordingApp()
    mw = GuardMiddleware(app, config=cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        for pid, (name, mrn) in PATIENTS.items():
            r = await c.post("/predict", json={"patient": {"id": pid, "name": name, "mrn": mrn}, "age": 40})
            assert r.status_code == 200, r.text
    await mw.guard.aclose()
    return app.bodies


async def test_shred_erases_the_subjects_vault_entries(tmp_path: Path) -> None:
    from mlguard.pii.vault import Vault

    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(CONFIG)
    bodies = await _serve(cfg)
    seen = {b["patient"]["id"]: b["patient"] for b in bodies}
    tokens = {pid: (p["name"], p["mrn"]) for pid, p in seen.items()}
    assert all(t.startswith("tok_") for pair in tokens.values() for t in pair)  # the model saw tokens only
    vault_db = tmp_path / "pii" / "vault.db"
    ring = Keyring.load(tmp_path / "mlguard.keyring")
    con = sqlite3.connect(vault_db)
    erased_ct = [bytes(con.execute("SELECT ciphertext FROM tokens WHERE token = ?", (t,)).fetchone()[0])
                 for t in tokens["P-1"]]
    con.close()

    # hipaa keeps records 6 years: an erasure inside that is a legal order, --override-retention
    code, out = run("audit", "shred", "--config", str(cfg), "--subject", "P-1", "--override-retention")
    assert code == 0, out
    assert "2 token vault entries erased" in out and "tombstone appended" in out

    vault = Vault(vault_db, ring, create=False)
    try:
        assert [vault.reveal(t) for t in tokens["P-1"]] == [None, None]
        assert vault.reveal(tokens["P-2"][0]) == ("PERSON", "Bo Tarrant")
        assert vault.reveal(tokens["P-2"][1]) == ("MEDICAL_RECORD_NUMBER", "MRN-77120")
    finally:
        vault.close()
    on_disk = b"".join(f.read_bytes() for f in vault_db.parent.iterdir())
    assert not any(ct in on_disk for ct in erased_ct)
    assert [t["data"]["vault_entries_erased"] for t in tombstones(tmp_path)] == [2]
    assert run("audit", "verify", "--store", f"sqlite:///{tmp_path / 'audit.db'}",
               "--witness", str(tmp_path / "witness.jsonl"))[0] == 0

    # again: already shredded, said so, exit 0, no second tombstone
    code, out = run("audit", "shred", "--config", str(cfg), "--subject", "P-1", "--override-retention")
    assert code == 0 and "already shredded" in out, out
    assert len(tombstones(tmp_path)) == 1


async def test_a_named_vault_that_cannot_be_opened_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(CONFIG)
    await _serve(cfg)
    (tmp_path / "pii" / "vault.db").rename(tmp_path / "moved.db")
    code, out = run("audit", "shred", "--config", str(cfg), "--subject", "P-1", "--override-retention")
    assert code == 2 and "does not exist" in out, out
    assert tombstones(tmp_path) == []  # nothing was destroyed
    code, out = run("audit", "shred", "--config", str(cfg), "--vault", str(tmp_path / "moved.db"),
                    "--subject", "P-1", "--override-retention")
    assert code == 0 and "2 token vault entries erased" in out, out
