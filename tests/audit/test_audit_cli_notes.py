"""What the audit commands tell an auditor and a data-protection officer beyond their verdict.

- The bundle's README.txt says what anyone can read without a key (every field of the real sealed header, the
  clear tombstones and gaps) and what stays sealed, and that an audit id links to the subject's other records.
- `export --subject ID` that matches nothing still exits 0, but says on stderr that no record of that subject is
  in the selected range and that ids match exactly, naming no other subject (it said only "exported 0 records").
- `shred` reminds, after an erasure, that earlier copies still hold the records and how to make old backups
  unreadable, with the real command names (it said nothing).
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlguard.audit.record import Pending, canonical, iso, pseudonym
from mlguard.audit.seal import decode
from mlguard.audit.store.base import open_store
from mlguard.audit.writer import AuditWriter
from mlguard.cli import cli
from mlguard.keys import Keyring

T0 = 1_790_000_000.0
SUBJECTS = ("Alice-7", "bob-8")


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def log(tmp_path: Path) -> tuple[str, Path, Keyring]:
    """6 exchanges of two subjects (ts T0 + 1 h * i), under a keyring file, checkpointed."""
    kpath = tmp_path / "k.keyring"
    assert run("keys", "init", "--out", str(kpath))[0] == 0
    ring = Keyring.load(kpath)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    w = AuditWriter(store, ring)
    w.append_now([Pending(f"id-{i:03d}", iso(T0 + 3600 * i), "exchange", "/predict/{model}",
                          pseudonym(ring, SUBJECTS[i % 2]),
                          canonical({"audit_id": f"id-{i:03d}", "kind": "exchange", "input": {"i": i}}),
                          canonical({"sex": "F"})) for i in range(6)])
    w.checkpoint()
    store.close()
    return url, kpath, ring


# ---------------------------------------------------------------------------------------------- the bundle README

def test_the_bundle_readme_says_what_is_readable_without_a_key(log: tuple[str, Path, Keyring],
                                                                tmp_path: Path) -> None:
    url, kpath, _ = log
    assert run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", SUBJECTS[1],
               "--override-retention")[0] == 0
    b = tmp_path / "b.zip"
    assert run("audit", "bundle", "--store", url, "--out", str(b))[0] == 0
    zf = zipfile.ZipFile(b)
    readme = zf.read("README.txt").decode()
    headers, clear = [], {}
    for line in zf.read("log.jsonl").decode().splitlines():
        doc = json.loads(line)
        if doc["t"] == "rec":
            sealed = decode(base64.b64decode(doc["sealed"]))
            headers.append(sealed.header)
            if sealed.header["kid"] is None:
                clear[sealed.header["kind"]] = json.loads(sealed.parts[0][1])
    # every key of the real header is explained (the README's table lists each at the start of a line)
    keys = {k for h in headers for k in h}
    assert keys == {"id", "ts", "kind", "route", "subj", "kid", "pkid", "seq", "prev", "v"}
    listed = {line.split()[0].rstrip(",") for line in readme.splitlines() if line.startswith("    ")}
    assert keys - {"prev", "v"} <= listed and "seq," in readme
    # the tombstone's clear fields are the ones it names
    tomb = clear["tombstone"]["data"]
    assert set(tomb) == {"days", "fairness_decisions_erased", "keys_destroyed", "override_retention", "reason",
                         "vault_entries_erased"}
    for said in ("the UTC days it had records on", "data keys, token vault entries and fairness decisions",
                 "legal minimum", 'reason "retention"', "served or refused"):
        assert said in " ".join(readme.split()), said
    # what is sealed, and the link from a client's audit id to the subject's other records
    flat = " ".join(readme.split())
    for said in ("(redacted) input, the output", "the decision, the explanation", "protected attributes",
                 "MLGuard-Audit-Id", "every other record of the same subject", "route template",
                 "count records per route, kind and day", "--pubkey HEX"):
        assert said in flat, said


# ---------------------------------------------------------------------------------------------- export --subject

def test_export_of_an_unknown_subject_says_so_on_stderr(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, kpath, ring = log
    out = tmp_path / "x.jsonl"
    code, stdout, stderr = run("audit", "export", "--store", url, "--keyring", str(kpath), "--subject", "alice-7",
                               "--out", str(out))
    assert code == 0 and out.read_text() == ""
    assert "exported 0 records" in stderr
    assert "note: no record of this subject in this store" in stderr
    assert "case-sensitive" in stderr and "exactly" in stderr
    for other in (*SUBJECTS, "alice-7", *(str(pseudonym(ring, s)) for s in SUBJECTS)):
        assert other not in stderr and other not in stdout  # no other subject, and not even the id given


def test_export_of_a_subject_outside_the_range_says_it_has_records_elsewhere(log: tuple[str, Path, Keyring],
                                                                             tmp_path: Path) -> None:
    url, kpath, _ = log
    out = tmp_path / "x.jsonl"
    late = iso(T0 + 3600 * 100)
    code, _, stderr = run("audit", "export", "--store", url, "--keyring", str(kpath), "--subject", SUBJECTS[0],
                          "--since", late, "--out", str(out))
    assert code == 0, stderr
    assert "note: no record of this subject in the selected range (--since); it has records outside that range" \
        in stderr
    code, _, stderr = run("audit", "export", "--store", url, "--keyring", str(kpath), "--subject", " Alice-7",
                          "--since", late, "--out", str(out))
    assert code == 0 and "none outside it either" in stderr and "begins or ends with whitespace" in stderr
    code, _, stderr = run("audit", "export", "--store", url, "--keyring", str(kpath), "--subject", SUBJECTS[0],
                          "--out", str(out))
    assert code == 0 and "exported 3 records" in stderr and "note:" not in stderr


# ---------------------------------------------------------------------------------------------- shred

def test_shred_reminds_of_earlier_copies_and_how_to_make_backups_unreadable(log: tuple[str, Path, Keyring]) -> None:
    url, kpath, ring = log
    code, stdout, stderr = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", SUBJECTS[0],
                               "--override-retention")
    assert code == 0 and "shredded subject" in stdout, stdout + stderr
    flat = " ".join(stderr.split())
    assert "copies made before this erasure still hold the subject's records" in flat
    for said in ("Database backups", "exports are decrypted files", "evidence bundles",
                 "`mlguard keys rotate --keyring FILE`", "`mlguard audit rewrap --store URL --keyring FILE`",
                 "`mlguard keys retire OLD_KEK --store URL --keyring FILE`", ring.active_kek_id()):
        assert said in flat, said
    # commands the reminder names exist with those options
    for args in (("keys", "rotate", "--help"), ("audit", "rewrap", "--help"), ("keys", "retire", "--help")):
        code, text, _ = run(*args)
        assert code == 0 and "--keyring" in text and (args[1] == "rotate" or "--store" in text)
    # no reminder where nothing was erased: already shredded, or an unknown subject
    for subject, want in ((SUBJECTS[0], 0), ("nobody", 1)):
        code, _, stderr = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", subject,
                              "--override-retention")
        assert code == want and "reminder" not in stderr, stderr
