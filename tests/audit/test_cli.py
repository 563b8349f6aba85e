"""The keys and audit commands end to end on a real SQLite log."""

from __future__ import annotations

import csv
import json
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlguard.audit.reader import AuditReader
from mlguard.audit.record import Pending, canonical, iso, pseudonym
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.writer import AuditWriter
from mlguard.cli import cli
from mlguard.errors import AuditUnavailable
from mlguard.keys import Keyring

T0 = 1_790_000_000.0
FULL = dict.fromkeys(("method", "policies", "model", "findings", "output", "explanation", "fairness", "decision",
                      "failures"))  # every field from_exchange writes, so export's JSONL fast path applies


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def _new_log(tmp_path: Path, db: str, **writer: Any) -> tuple[str, Path, Keyring, AuditStore, AuditWriter]:
    """A keyring made by `keys init`, and an empty SQLite log with a writer on it."""
    kpath = tmp_path / "k.keyring"
    assert run("keys", "init", "--out", str(kpath))[0] == 0
    ring = Keyring.load(kpath)
    url = f"sqlite:///{tmp_path / db}"
    store = open_store(url)
    return url, kpath, ring, store, AuditWriter(store, ring, **writer)


@pytest.fixture
def log(tmp_path: Path) -> tuple[str, Path, Keyring]:
    url, kpath, ring, store, w = _new_log(tmp_path, "a.db", witness=tmp_path / "w.jsonl")
    items = [Pending(f"id-{i:03d}", iso(T0 + 3600 * i), "exchange", "/a" if i % 2 else "/b",
                     pseudonym(ring, f"s{i % 4}"),
                     canonical({**FULL, "audit_id": f"id-{i:03d}", "kind": "exchange", "status": 200,
                                "latency_ms": 1.5, "ts": iso(T0 + 3600 * i), "route": "/a" if i % 2 else "/b",
                                "subject": pseudonym(ring, f"s{i % 4}"), "input": {"i": i}}), canonical({"sex": "F"}))
             for i in range(40)]
    w.append_now(items[:20])
    w.checkpoint()
    w.append_now(items[20:])
    w.checkpoint()
    store.close()
    return url, kpath, ring


def test_keys_commands(tmp_path: Path) -> None:
    k = tmp_path / "k"
    assert run("keys", "init", "--out", str(k))[0] == 0
    assert stat.S_IMODE(k.stat().st_mode) == 0o600
    assert run("keys", "init", "--out", str(k))[0] == 2  # never overwrites
    code, out = run("keys", "rotate", "--keyring", str(k))
    assert code == 0 and "new KEK" in out
    code, out = run("keys", "show", "--keyring", str(k))
    doc = json.loads(out)
    assert code == 0 and len(doc["keks"]) == 2 and len(doc["signing_keys"]) == 2
    assert json.loads(k.read_text())["root"]["key"] not in out
    k.chmod(0o644)
    assert run("keys", "show", "--keyring", str(k))[0] == 2


def test_verify_store_and_tampering(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, _, _ = log
    code, out = run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"))
    assert code == 0 and "40 records" in out
    db = sqlite3.connect(tmp_path / "a.db")
    sealed = bytearray(db.execute("SELECT sealed FROM records WHERE seq = 17").fetchone()[0])
    sealed[-3] ^= 0xFF
    db.execute("UPDATE records SET sealed = ? WHERE seq = 17", (bytes(sealed),))
    db.commit()
    code, out = run("audit", "verify", "--store", url)
    assert code == 1 and "at seq 17" in out
    db.execute("DELETE FROM records WHERE seq >= 17")
    db.commit()
    code, out = run("audit", "verify", "--store", url)  # head row says 40
    assert code == 1 and "at seq 17" in out and "truncated" in out
    db.execute("UPDATE head SET seq = 16, hash = (SELECT hash FROM records WHERE seq = 16)")
    db.commit()
    code, out = run("audit", "verify", "--store", url)  # the checkpoint at 20 still says more
    assert code == 1 and "at seq 17" in out
    db.execute("DELETE FROM checkpoints")
    db.commit()
    code, out = run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"))
    assert code == 1 and "at seq 17" in out and "witness" in out
    db.close()


def test_export_formats_and_filters(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, kpath, _ = log
    out = tmp_path / "x.jsonl"
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--out", str(out))[0] == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 40 and recs[3]["input"] == {"i": 3} and recs[3]["protected"] == {"sex": "F"}
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--route", "/a", "--subject", "s1",
               "--since", iso(T0 + 3600 * 10), "--out", str(out))[0] == 0
    assert [json.loads(x)["audit_id"] for x in out.read_text().splitlines()] == [
        f"id-{i:03d}" for i in range(10, 40) if i % 4 == 1]
    c = tmp_path / "x.csv"
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--format", "csv",
               "--until", "2026-09-21T15:00:00Z", "--out", str(c))[0] == 0
    rows = list(csv.DictReader(c.open()))
    assert rows and json.loads(rows[0]["input"]) == {"i": 0}
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--since", "yesterday",
               "--out", str(out))[0] == 2


def test_export_parquet(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is the `parquet` extra")
    url, kpath, _ = log
    p = tmp_path / "x.parquet"
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--format", "parquet",
               "--out", str(p))[0] == 0
    t = pq.read_table(p)
    assert t.num_rows == 40 and t.column("seq").to_pylist() == list(range(1, 41))
    assert json.loads(t.column("input").to_pylist()[5]) == {"i": 5}


def test_bundle_roundtrip(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, _, ring = log
    b = tmp_path / "b.zip"
    assert run("audit", "bundle", "--store", url, "--out", str(b))[0] == 0
    pub = next(iter(ring.public_keys().values())).hex()
    code, out = run("audit", "verify", "--bundle", str(b), "--pubkey", pub)
    assert code == 0 and "40 records" in out
    import zipfile

    assert set(zipfile.ZipFile(b).namelist()) == {"README.txt", "log.jsonl"}


def test_shred_and_purge(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, kpath, ring = log
    db0 = sqlite3.connect(tmp_path / "a.db")
    wrapped = [bytes(r[0]) for r in db0.execute("SELECT wrapped FROM data_keys WHERE subject = ?",
                                                 (pseudonym(ring, "s1"),))]
    db0.close()
    assert wrapped
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s1",
                    "--witness", str(tmp_path / "w.jsonl"))
    assert code == 0 and "tombstone" in out
    assert run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"))[0] == 0
    x = tmp_path / "x.jsonl"
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--out", str(x))[0] == 0
    recs = [json.loads(r) for r in x.read_text().splitlines()]
    s1 = pseudonym(ring, "s1")
    assert all(r["shredded"] and r["input"] is None for r in recs if r["subject"] == s1 and r["kind"] == "exchange")
    assert all(not r["shredded"] for r in recs if r["subject"] != s1)
    assert recs[-1]["kind"] == "tombstone" and recs[-1]["data"]["reason"] == "erasure"
    # shredded key material is gone from the database file and its WAL (secure_delete + WAL checkpoint)
    files = b"".join(f.read_bytes() for f in tmp_path.glob("a.db*"))
    assert not any(w in files for w in wrapped)

    # inside PCI DSS's 12-month minimum: refused, naming the policy
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s2",
                    "--policy", "pci_dss")
    assert code == 1 and "pci_dss" in out and "retention.min P12M" in out
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--policy", "pci_dss",
                    "--before", "2099-01-01")
    assert code == 1 and "pci_dss" in out
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--policy", "base",
                    "--max", "P1D")
    assert code == 0 and "purged" in out
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--out", str(x))[0] == 0
    recs = [json.loads(r) for r in x.read_text().splitlines()]
    assert all(r["shredded"] for r in recs if r["kind"] == "exchange")
    assert run("audit", "verify", "--store", url)[0] == 0
    assert run("audit", "purge", "--store", url)[0] == 2  # needs policies


def test_purge_reads_config(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, kpath, _ = log
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text("policies: [base]\nretention: {max: P1D}\n")
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--config", str(cfg), "--dry-run")
    assert code == 0 and "retention maximum P1D" in out
    cfg.write_text("policies: [base]\n")
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--config", str(cfg))
    assert code == 0 and "nothing to purge" in out


def test_readers_never_create_a_missing_log(store_url: str, tmp_path: Path) -> None:
    """verify, export and the reader on a log that does not exist (a mistyped path or PostgreSQL schema): exit 2
    naming it, and nothing is created; an intact empty log must never be reported for a log that is not there."""
    code, out = run("audit", "verify", "--store", store_url)
    assert code == 2 and "no audit log" in out, out
    k = tmp_path / "k.json"
    Keyring.create(k)
    code, out = run("audit", "export", "--store", store_url, "--keyring", str(k), "--format", "jsonl",
                    "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "no audit log" in out, out
    with pytest.raises(AuditUnavailable):
        AuditReader(store_url, k)
    if store_url.startswith("sqlite"):
        assert not (tmp_path / "audit.db").exists()
    else:
        import psycopg

        from tests.pg import PG_URL

        schema = store_url.rsplit("schema=", 1)[1]
        with psycopg.connect(PG_URL) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.records",)).fetchone() == (None,)


def test_rotate_rewrap_retire(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    """The rotation procedure on the command line: retire refuses while keys are under the KEK, rewrap moves
    them, retire then removes it, and export still decrypts every record with the smaller keyring."""
    url, kpath, ring = log
    old = ring.active_kek_id()
    assert run("keys", "retire", old, "--keyring", str(kpath), "--store", url)[0] == 2  # the active KEK
    code, out = run("keys", "rotate", "--keyring", str(kpath))
    new = Keyring.load(kpath).active_kek_id()
    assert code == 0 and new != old
    code, out = run("keys", "retire", old, "--keyring", str(kpath), "--store", url)
    assert code == 2 and "still wrapped under" in out and "mlguard audit rewrap" in out
    assert f"24 data keys in store {url} are still wrapped" in out
    assert old in Keyring.load(kpath).kek_ids()
    store = open_store(url)
    under_old = store.data_key_counts()
    store.close()
    assert list(under_old) == [old] and under_old[old] == 24  # 4 subjects x (data, protected) x 3 UTC days
    code, out = run("audit", "rewrap", "--store", url, "--keyring", str(kpath))
    assert code == 0 and f"re-wrapped 24 data keys under {new}" in out
    code, out = run("keys", "retire", old, "--keyring", str(kpath), "--store", url)
    assert code == 0 and f"retired {old}" in out
    assert Keyring.load(kpath).kek_ids() == [new]
    assert stat.S_IMODE(kpath.stat().st_mode) == 0o600
    assert run("keys", "retire", "kek-nonexistent", "--keyring", str(kpath), "--store", url)[0] == 2
    out_file = tmp_path / "x.jsonl"
    code, _ = run("audit", "export", "--store", url, "--keyring", str(kpath), "--out", str(out_file))
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert code == 0 and len(lines) == 40 and all(x["input"] == {"i": int(x["audit_id"][3:])} for x in lines)
    assert run("audit", "verify", "--store", url)[0] == 0


def test_retire_names_the_store_without_its_password(tmp_path: Path) -> None:
    from mlguard.cli.keys import _where

    assert _where("postgresql://bob:s3cret@db.example:5432/audit?schema=x") == "postgresql://db.example/audit"
    assert _where(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"


@pytest.fixture
def ecoa_log(tmp_path: Path) -> tuple[str, Path, Keyring]:
    """Records of today, written under gdpr + ecoa (ecoa: kept at least 25 months), as the stage writes them."""
    url, kpath, ring, store, w = _new_log(tmp_path, "e.db")
    now = time.time()
    w.append_now([Pending(f"e-{i}", iso(now), "exchange", "/a", pseudonym(ring, f"s{i % 2}"),
                          canonical({**FULL, "audit_id": f"e-{i}", "kind": "exchange", "status": 200, "ts": iso(now),
                                     "route": "/a", "subject": pseudonym(ring, f"s{i % 2}"), "input": {"i": i},
                                     "policies": {"ids": ["gdpr", "ecoa"], "content_hash": "x", "sources": []}}),
                          canonical({"sex": "F"})) for i in range(6)])
    store.close()
    return url, kpath, ring


def _readable(url: str, kpath: Path, tmp_path: Path) -> int:
    x = tmp_path / "readable.jsonl"
    assert run("audit", "export", "--store", url, "--keyring", str(kpath), "--out", str(x))[0] == 0
    recs = [json.loads(line) for line in x.read_text().splitlines()]
    return sum(1 for r in recs if r["kind"] == "exchange" and not r["shredded"])


def test_retention_minimums_come_from_the_records_too(ecoa_log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    """A shred with no --policy, or a purge naming gdpr only, must not destroy records written under ecoa inside
    its 25-month minimum: the records name their policies, and those are checked whatever is passed."""
    url, kpath, _ = ecoa_log
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s0")
    assert code == 1 and "ecoa" in out and "retention.min P25M" in out
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--policy", "gdpr",
                    "--before", "2099-01-01")
    assert code == 1 and "ecoa" in out
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--policy", "gdpr", "--max", "P1D")
    assert code == 0 and "purged: 0 data keys" in out  # today's records are not in that window
    code, out = run("audit", "purge", "--store", url, "--keyring", str(kpath), "--policy", "ecoa", "--max", "P1D")
    assert code == 1 and "P1D is shorter than the legal minimum" in out and "ecoa" in out  # not quietly raised
    assert _readable(url, kpath, tmp_path) == 6  # nothing was destroyed
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s0",
                    "--override-retention")
    assert code == 0 and "tombstone" in out
    assert _readable(url, kpath, tmp_path) == 3  # s1's three records


def test_shred_of_an_unknown_subject_says_so(ecoa_log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, kpath, _ = ecoa_log
    store = open_store(url)
    before = store.head()
    store.close()
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "NOBODY-XYZ")
    assert code == 1 and "no records of this subject" in out
    store = open_store(url)
    assert store.head() == before  # no tombstone appended
    store.close()


def test_shred_with_config_appends_to_the_configured_witness(ecoa_log: tuple[str, Path, Keyring],
                                                              tmp_path: Path) -> None:
    url, kpath, _ = ecoa_log
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text("policies: [base]\naudit: {witness: ./wit.jsonl}\n")
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s1", "--config",
                    str(cfg), "--override-retention")
    assert code == 0, out
    assert (tmp_path / "wit.jsonl").read_text().strip()  # the checkpoint after the tombstone is there


def test_verify_pinned_to_a_rotated_out_key_says_so(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    """After `keys rotate`, checkpoints are signed by the new key: pinning only the old one must read as what it
    is (a key not trusted), not as a forged signature."""
    url, kpath, ring = log
    old = {kid: pub.hex() for kid, pub in ring.public_keys().items()}
    assert run("keys", "rotate", "--keyring", str(kpath))[0] == 0
    rotated = Keyring.load(kpath)
    store = open_store(url)
    w = AuditWriter(store, rotated)
    w.append_now([Pending("id-new", iso(T0), "exchange", "/a", pseudonym(rotated, "s9"),
                          canonical({**FULL, "audit_id": "id-new", "kind": "exchange", "input": {}}), None)])
    w.checkpoint()
    store.close()
    new = {kid: pub.hex() for kid, pub in rotated.public_keys().items() if kid not in old}
    assert new
    code, out = run("audit", "verify", "--store", url, *(x for v in old.values() for x in ("--pubkey", v)))
    assert code == 1 and "not among the trusted public keys" in out and "signature invalid" not in out
    code, out = run("audit", "verify", "--store", url,
                    *(x for v in (*old.values(), *new.values()) for x in ("--pubkey", v)))
    assert code == 0, out


def _tombstones(url: str) -> int:
    store = open_store(url, create=False)
    try:
        return sum(1 for _ in store.iter_rows(kind="tombstone"))
    finally:
        store.close()


def test_shred_and_purge_as_the_readme_shows_them(log: tuple[str, Path, Keyring], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`shred --store URL --subject ID` and `purge --store URL --config FILE` find the keyring in the config (and
    `--config` alone names the store too), relative paths against the config's directory, as serve resolves them."""
    url, kpath, ring = log
    monkeypatch.delenv("MLGUARD_KEYRING", raising=False)
    monkeypatch.chdir(tmp_path.parent)  # relative paths must resolve against the config's directory, not here
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text("policies: [base]\nretention: {max: P1D}\n"
                   "audit: {store: 'sqlite:///a.db', keyring: k.keyring, witness: w.jsonl}\n")
    code, out = run("audit", "shred", "--store", url, "--subject", "s1")
    assert code == 2 and "no keyring given" in out  # no config: nothing to find it in
    code, out = run("audit", "shred", "--config", str(cfg), "--subject", "s1")
    assert code == 0 and f"shredded subject {pseudonym(ring, 's1')}" in out, out
    assert "no token vault at" in out  # said, not silently skipped
    code, out = run("audit", "purge", "--store", url, "--config", str(cfg))
    assert code == 0 and "purged" in out, out
    assert run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"))[0] == 0
    assert _readable(url, kpath, tmp_path) == 0


def test_shred_twice_is_a_no_op_without_a_second_tombstone(log: tuple[str, Path, Keyring]) -> None:
    url, kpath, ring = log
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s2")
    assert code == 0 and "data keys destroyed" in out and "0 data keys" not in out, out
    assert _tombstones(url) == 1
    code, out = run("audit", "shred", "--store", url, "--keyring", str(kpath), "--subject", "s2")
    assert code == 0 and f"subject {pseudonym(ring, 's2')} already shredded" in out, out
    assert "no tombstone appended" in out
    assert _tombstones(url) == 1


def test_verify_counts_checkpoints_and_witness_entries_apart(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, _, _ = log
    code, out = run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"))
    assert code == 0 and "40 records, 2 checkpoints and 2 witness entries verified" in out, out
    code, out = run("audit", "verify", "--store", url)
    assert code == 0 and "40 records, 2 checkpoints verified" in out, out
    code, out = run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"), "--json")
    doc = json.loads(out)
    assert (doc["checkpoints"], doc["witness_entries"]) == (2, 2)


@pytest.mark.parametrize("command", [("shred", "--subject", "s0", "--override-retention"),
                                     ("purge", "--policy", "gdpr", "--before", "2099-01-01")])
def test_shred_and_purge_refuse_a_keyring_that_is_not_the_logs(ecoa_log: tuple[str, Path, Keyring], tmp_path: Path,
                                                               command: tuple[str, ...]) -> None:
    """With another deployment's keyring, purge read none of the records' policies (none decrypt), so ecoa's
    25-month minimum held nothing back, and destroyed the keys; shred could not find the subject (its pseudonym is
    keyed) and blamed the id. Both now refuse the keyring as serve does, before anything changes."""
    url, kpath, _ = ecoa_log
    other = tmp_path / "other.keyring"
    assert run("keys", "init", "--out", str(other))[0] == 0
    store = open_store(url)
    before = store.head()
    store.close()
    code, out = run("audit", command[0], "--store", url, "--keyring", str(other), *command[1:])
    assert code == 2, out
    assert "shares no key with the audit store's existing log" in out and str(other) in out
    store = open_store(url)
    assert store.head() == before  # no tombstone
    store.close()
    assert _readable(url, kpath, tmp_path) == 6  # no data key destroyed
