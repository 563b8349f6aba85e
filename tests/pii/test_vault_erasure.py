"""Erasing a subject from the token vault: tokens are linked to the subject they were issued or looked up for,
``Vault.forget`` deletes what no other subject still links to, leaves tokens issued with no subject alone, leaves
no ciphertext on disk, and the request's subject reaches the vault through the PII stage's context variable, in
the event loop's task and across the thread hop detection takes, without leaking between concurrent requests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from mlguard.errors import PIIError
from mlguard.keys import Keyring
from mlguard.pii.operators import build_operator, redacting_for
from mlguard.pii.vault import Vault


def _files(path: Path) -> bytes:
    return b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))


def _ciphertext(path: Path, token: str) -> bytes:
    db = sqlite3.connect(path)
    try:
        return bytes(db.execute("SELECT ciphertext FROM tokens WHERE token = ?", (token,)).fetchone()[0])
    finally:
        db.close()


def test_forget_erases_the_subjects_tokens_only(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "vault.db"
    vault = Vault(path, keyring)
    name = vault.token_for("PERSON", "Ada Quillfeather", subject="P-1")
    mrn = vault.token_for("MEDICAL_RECORD_NUMBER", "MRN-48213", subject="P-1")
    shared = vault.token_for("PHONE_NUMBER", "602-555-0143", subject="P-1")
    assert vault.token_for("PHONE_NUMBER", "602-555-0143", subject="P-2") == shared  # looked up: linked too
    other = vault.token_for("PERSON", "Bo Tarrant", subject="P-2")
    batch = vault.token_for("PERSON", "Cy Unlinked")  # `mlguard redact`: no subject
    assert vault.token_for("PERSON", "Ada Quillfeather") == name  # a lookup without subject adds no link
    secret = _ciphertext(path, name)

    done = vault.forget("P-1")
    assert (done.erased, done.kept, done.scrubbed) == (2, 1, True)
    assert vault.reveal(name) is None and vault.reveal(mrn) is None
    assert vault.reveal(shared) == ("PHONE_NUMBER", "602-555-0143")  # P-2 still has it
    assert vault.reveal(other) == ("PERSON", "Bo Tarrant")
    assert vault.reveal(batch) == ("PERSON", "Cy Unlinked")
    # overwritten, not left in a free page or the WAL for whoever holds the keyring
    assert secret not in _files(path)
    assert vault.forget("P-1").erased == 0  # idempotent

    assert vault.forget("P-2").erased == 2  # its last subject gone: the shared entry goes too
    assert vault.reveal(shared) is None and vault.reveal(batch) == ("PERSON", "Cy Unlinked")
    # a value seen again after the erasure gets a new token, not the erased one
    assert vault.token_for("PERSON", "Ada Quillfeather", subject="P-1") != name
    vault.close()


def test_old_vault_files_gain_the_link_table(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "vault.db"
    vault = Vault(path, keyring)
    old = vault.token_for("PERSON", "Ada Quillfeather")
    vault.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE token_subjects")  # the file as the previous version wrote it
    db.commit()
    db.close()
    vault = Vault(path, keyring)
    assert vault.reveal(old) == ("PERSON", "Ada Quillfeather")
    assert vault.token_for("PERSON", "Ada Quillfeather", subject="P-1") == old  # now linked
    assert vault.forget("P-1").erased == 1 and vault.reveal(old) is None
    vault.close()


def test_forget_refuses_another_keyring_and_missing_file(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "vault.db"
    vault = Vault(path, keyring)
    tok = vault.token_for("PERSON", "Ada Quillfeather", subject="P-1")
    vault.close()
    stranger = Vault(path, Keyring.from_seed(b"stranger-seed-material-0123456789abcdef"))
    with pytest.raises(PIIError):  # its links would never match: an erasure that erased nothing
        stranger.forget("P-1")
    stranger.close()
    assert Vault(path, keyring).reveal(tok) is not None
    with pytest.raises(PIIError, match="does not exist"):
        Vault(tmp_path / "typo.db", keyring, create=False)
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.anyio
async def test_subject_reaches_the_vault_per_request_across_threads(tmp_path: Path, keyring: Keyring) -> None:
    vault = Vault(tmp_path / "vault.db", keyring)
    op = build_operator("PERSON", "token", {}, keyring=keyring, vault=vault)
    tokens: dict[str, list[str]] = {"P-1": [], "P-2": []}

    async def request(subject: str, names: list[str]) -> None:
        with redacting_for(subject):
            for n in names:
                tokens[subject].append(op.apply(n))  # inline, on the event loop
                await anyio.sleep(0)  # let the other request run in between
                tokens[subject].append(await anyio.to_thread.run_sync(op.apply, n + " Jr"))  # the thread hop

    async with anyio.create_task_group() as tg:
        tg.start_soon(request, "P-1", ["Ada Quillfeather", "Ann Orrin"])
        tg.start_soon(request, "P-2", ["Bo Tarrant", "Bea Lund"])
    assert op.apply("Outside Anyrequest").startswith("tok_")  # no subject set here: no link

    assert vault.forget("P-1").erased == 4
    assert all(vault.reveal(t) is None for t in tokens["P-1"])
    assert all(vault.reveal(t) is not None for t in tokens["P-2"])
    assert vault.forget("P-2").erased == 4
    vault.close()
