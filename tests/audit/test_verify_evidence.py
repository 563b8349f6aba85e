"""`audit verify` on damaged witnesses and forged bundles: a clear verdict, exit 1, the true failure first.

- A witness line that is not a checkpoint entry is an integrity failure naming the file and line (it was a
  JSONDecodeError traceback); an empty witness beside a log with checkpoints vouches for nothing and fails.
- A bundle re-chained and re-signed with another key, verified with the real keys pinned, is reported as a
  checkpoint signed by a key that is not trusted, naming it (it said "no public key", expected None), also with
  the genuine witness given (which it blamed instead); pinned keys are trusted whatever keys the bundle carries.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlguard.audit.chain import GENESIS, Witness, WitnessCorrupt, link, make_checkpoint
from mlguard.audit.record import Pending, canonical, iso, pseudonym
from mlguard.audit.store.base import open_store
from mlguard.audit.writer import AuditWriter
from mlguard.cli import cli
from mlguard.keys import Keyring

T0 = 1_790_000_000.0
ATTACKER = Keyring.from_seed(b"someone-else-entirely-0123456789")


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def _items(ring: Keyring, first: int, n: int) -> list[Pending]:
    return [Pending(f"id-{i:03d}", iso(T0 + 60 * i), "exchange", "/a", pseudonym(ring, f"s{i % 4}"),
                    canonical({"i": i}), canonical({"sex": "F"})) for i in range(first, first + n)]


@pytest.fixture
def log(tmp_path: Path) -> tuple[str, Path, Keyring]:
    """30 records, checkpoints at 10, 20 and 30, each also in the witness w.jsonl."""
    ring = Keyring.from_seed(b"the-real-operator-seed-012345678")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    w = AuditWriter(store, ring, witness=tmp_path / "w.jsonl")
    for first in (1, 11, 21):
        w.append_now(_items(ring, first, 10))
        w.checkpoint()
    store.close()
    return url, tmp_path / "w.jsonl", ring


def _pins(*rings: Keyring) -> list[str]:
    return [x for ring in rings for pub in ring.public_keys().values() for x in ("--pubkey", pub.hex())]


# ---------------------------------------------------------------------------------------------- the witness file

@pytest.mark.parametrize(("line", "why"), [
    (b"garbage", "not JSON"), (b"[1, 2]", "not a JSON object"), (b'{"head": "00"}', "no sequence number"),
    (b'{"seq": "3"}', "no sequence number"), (b'{"seq": 1e3}', "no sequence number"),
    (b"\xff\xfe{}", "not ASCII text"),
])
def test_a_witness_line_that_is_not_an_entry_names_file_and_line(log: tuple[str, Path, Keyring], line: bytes,
                                                                 why: str) -> None:
    url, witness, _ = log
    with witness.open("ab") as fh:
        fh.write(b"\n" + line + b"\n")  # after a blank line: line 5 of the file (3 entries, a blank line)
    code, out = run("audit", "verify", "--store", url, "--witness", str(witness))
    assert code == 1, out
    assert f"INTEGRITY FAILURE: witness file {witness}, line 5: {why}" in out
    assert "Traceback" not in out and "JSONDecodeError" not in out
    code, out = run("audit", "verify", "--store", url, "--witness", str(witness), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["seq"] is None and "line 5" in doc["problem"]
    with pytest.raises(WitnessCorrupt) as err:
        Witness.read(witness)
    assert (err.value.path, err.value.line) == (witness, 5)


def test_an_empty_witness_beside_checkpoints_fails(log: tuple[str, Path, Keyring], tmp_path: Path) -> None:
    url, _, _ = log
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out = run("audit", "verify", "--store", url, "--witness", str(empty))
    assert code == 1, out
    assert "INTEGRITY FAILURE: the witness holds no entries, but the log has 3 signed checkpoints" in out
    assert "OK" not in out


def test_an_empty_witness_before_the_first_checkpoint_is_a_note(tmp_path: Path) -> None:
    """A guard just started: the witness exists (created empty) and nothing is signed yet anywhere."""
    ring = Keyring.from_seed(b"the-real-operator-seed-012345678")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    AuditWriter(store, ring, witness=tmp_path / "w.jsonl").append_now(_items(ring, 1, 3))
    store.close()
    code, out = run("audit", "verify", "--store", url, "--witness", str(tmp_path / "w.jsonl"))
    assert code == 0, out
    assert "OK: 3 records, 0 checkpoints and 0 witness entries verified" in out
    assert "note: the witness holds no entries yet" in out


# ---------------------------------------------------------------------------------------------- forged bundles

def _forge(bundle: Path, out: Path, *, edit: int, keys: dict[str, bytes], cp_seqs: tuple[int, ...] | None = None,
           signer: Keyring = ATTACKER) -> None:
    """What a forger does to a bundle: edit record ``edit``, re-chain every hash after it, re-sign checkpoints
    (at their seqs, or ``cp_seqs``) with ``signer`` and ship ``keys`` as the bundle's public keys."""
    import zipfile

    docs = [json.loads(line) for line in zipfile.ZipFile(bundle).read("log.jsonl").decode().splitlines()]
    recs = [d for d in docs if d["t"] == "rec"]
    seqs = cp_seqs if cp_seqs is not None else tuple(d["seq"] for d in docs if d["t"] == "cp")
    prev, hashes = GENESIS, {}
    for d in recs:
        sealed = base64.b64decode(d["sealed"])
        if d["seq"] == edit:
            sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
            d["sealed"] = base64.b64encode(sealed).decode()
        prev = link(prev, sealed)
        d["hash"] = hashes[d["seq"]] = prev.hex()
    lines: list[dict[str, Any]] = [{"t": "key", "kid": kid, "pub": pub.hex()} for kid, pub in keys.items()]
    lines.append({"t": "head", "seq": recs[-1]["seq"], "hash": prev.hex()})
    lines += recs
    lines += [{"t": "cp", **make_checkpoint(signer, s, bytes.fromhex(hashes[s]), T0)} for s in seqs]
    out.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in lines))


@pytest.fixture
def bundle(log: tuple[str, Path, Keyring], tmp_path: Path) -> Path:
    url, _, _ = log
    b = tmp_path / "b.zip"
    assert run("audit", "bundle", "--store", url, "--out", str(b))[0] == 0
    return b


def test_a_forged_bundle_is_reported_as_signed_by_an_untrusted_key(log: tuple[str, Path, Keyring], bundle: Path,
                                                                   tmp_path: Path) -> None:
    _, witness, ring = log
    forged = tmp_path / "forged.jsonl"
    _forge(bundle, forged, edit=15, keys=ATTACKER.public_keys())
    (att_kid,) = ATTACKER.public_keys()
    code, out = run("audit", "verify", "--bundle", str(forged))
    assert code == 0, out  # consistent with its own keys: all a bundle proves without --pubkey
    for extra in ((), ("--witness", str(witness))):
        code, out = run("audit", "verify", "--bundle", str(forged), *_pins(ring), *extra)
        assert code == 1, out
        assert (f"INTEGRITY FAILURE at seq 10: checkpoint signed by key {att_kid}, which is not among the trusted "
                "public keys") in out, out
        assert f"calculated: signed by {att_kid}" in out and "None" not in out and "no public key" not in out
        assert "witness" not in out.split("\n")[0]


def test_a_forgery_is_found_before_the_witness_it_contradicts(log: tuple[str, Path, Keyring], bundle: Path,
                                                              tmp_path: Path) -> None:
    """The forger re-signed only the last checkpoint; the genuine witness disagrees at seq 10 already, but the
    untrusted signature is the finding: every later comparison only follows from it."""
    _, witness, ring = log
    forged = tmp_path / "forged.jsonl"
    _forge(bundle, forged, edit=5, keys={**ring.public_keys(), **ATTACKER.public_keys()}, cp_seqs=(30,))
    (att_kid,) = ATTACKER.public_keys()
    code, out = run("audit", "verify", "--bundle", str(forged), *_pins(ring), "--witness", str(witness))
    assert code == 1, out
    assert f"INTEGRITY FAILURE at seq 30: checkpoint signed by key {att_kid}, which is not among" in out, out


def test_pinned_keys_are_trusted_whatever_keys_the_bundle_carries(log: tuple[str, Path, Keyring], bundle: Path,
                                                                  tmp_path: Path) -> None:
    """A genuine log whose bundle no longer carries the key that signed it (trimmed, or a forger's key list) still
    verifies with that key pinned: the pin is the trust, the bundle's key list only names keys. Before, the pinned
    key was dropped for not being in the bundle, and the genuine witness was blamed for using it."""
    _, witness, ring = log
    trimmed = tmp_path / "trimmed.jsonl"
    _forge(bundle, trimmed, edit=0, keys=ATTACKER.public_keys(), signer=ring)  # edits nothing, ring re-signs
    code, out = run("audit", "verify", "--bundle", str(trimmed), *_pins(ring), "--witness", str(witness))
    assert code == 0 and "OK: 30 records, 3 checkpoints and 3 witness entries verified" in out, out
    code, out = run("audit", "verify", "--bundle", str(trimmed), *_pins(ATTACKER), "--witness", str(witness))
    assert code == 1 and "checkpoint signed by key sig-" in out and "not among the trusted public keys" in out


def test_a_pubkey_that_is_not_a_key_is_a_usage_error(bundle: Path) -> None:
    code, out = run("audit", "verify", "--bundle", str(bundle), "--pubkey", "not-hex")
    assert code == 2 and "--pubkey takes an Ed25519 public key as 64 hex digits" in out
