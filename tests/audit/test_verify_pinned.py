"""`audit verify` on logs that attest nothing and on damaged bundle files: a verdict that says what happened.

- A bundle stripped of its later records and of every checkpoint, its head line rewritten, printed OK with the
  operator's key pinned: with a pinned key, records that no checkpoint signed by it covers are a failure (a store
  too: a stripped store looks the same; a log just started is told to verify again after its first checkpoint).
  Without --pubkey it stays a note, worded for a log with no checkpoint at all.
- Two records swapped were reported as a missing record; they are reported as out of order, at the same seq.
- A log file cut in the middle of a line was "the log cannot be read (JSONDecodeError ...)" with no seq; it is a
  torn tail after the last good seq, and a damaged line in the middle names its line.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlguard.audit.record import Pending, canonical, iso, pseudonym
from mlguard.audit.store.base import open_store
from mlguard.audit.writer import AuditWriter
from mlguard.cli import cli
from mlguard.keys import Keyring

T0 = 1_790_000_000.0
RING = Keyring.from_seed(b"the-real-operator-seed-012345678")
VECTORS = Path(__file__).parent / "vectors"


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def pins() -> list[str]:
    return [x for pub in RING.public_keys().values() for x in ("--pubkey", pub.hex())]


def _items(first: int, n: int) -> list[Pending]:
    return [Pending(f"id-{i:03d}", iso(T0 + 60 * i), "exchange", "/a", pseudonym(RING, f"s{i % 4}"),
                    canonical({"i": i}), canonical({"sex": "F"})) for i in range(first, first + n)]


def _store(tmp_path: Path, *batches: tuple[int, bool]) -> str:
    """A SQLite log: each batch (records, then a checkpoint or not)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    w = AuditWriter(store, RING)
    first = 1
    for n, checkpoint in batches:
        if n:
            w.append_now(_items(first, n))
        first += n
        if checkpoint:
            w.checkpoint()
    store.close()
    return url


def _docs(path: Path) -> list[dict[str, object]]:
    raw = zipfile.ZipFile(path).read("log.jsonl") if zipfile.is_zipfile(path) else path.read_bytes()
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _write(path: Path, docs: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(d, sort_keys=True, separators=(",", ":")) + "\n" for d in docs))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """20 records, checkpoints at 15 and 20, as `audit bundle` writes them."""
    url = _store(tmp_path, (15, True), (5, True))
    out = tmp_path / "b.zip"
    assert run("audit", "bundle", "--store", url, "--out", str(out))[0] == 0
    return out


def _stripped(bundle: Path, tmp_path: Path, keep: int) -> Path:
    """What the auditor did: records 1..keep kept, later records and every checkpoint line dropped, the head
    line rewritten to seq ``keep`` (and its hash): a log consistent with itself."""
    docs = _docs(bundle)
    recs = [d for d in docs if d["t"] == "rec" and int(str(d["seq"])) <= keep]
    out: list[dict[str, object]] = [d for d in docs if d["t"] == "key"]
    out.append({"t": "head", "seq": keep, "hash": recs[-1]["hash"]})
    out += recs
    path = tmp_path / "stripped.jsonl"
    _write(path, out)
    return path


# ---------------------------------------------------------------------------------------------- nothing attested

def test_a_stripped_bundle_fails_with_the_key_pinned(bundle: Path, tmp_path: Path) -> None:
    stripped = _stripped(bundle, tmp_path, 12)
    code, out = run("audit", "verify", "--bundle", str(stripped), *pins())
    assert code == 1, out
    assert ("INTEGRITY FAILURE: no checkpoint signed by a pinned key covers any of the 12 records: nothing attests "
            "them, so they could have been cut or rewritten by whoever made this bundle") in out, out
    assert "OK" not in out
    code, out = run("audit", "verify", "--bundle", str(stripped), *pins(), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["records"] == 12 and doc["checkpoints"] == 0
    # the genuine bundle, same key pinned: fine
    code, out = run("audit", "verify", "--bundle", str(bundle), *pins())
    assert code == 0 and "OK: 20 records, 2 checkpoints verified" in out, out


def test_without_pubkey_a_log_with_no_checkpoint_is_a_note_that_says_so(bundle: Path, tmp_path: Path) -> None:
    stripped = _stripped(bundle, tmp_path, 12)
    code, out = run("audit", "verify", "--bundle", str(stripped))
    assert code == 0, out
    assert "OK: 12 records, 0 checkpoints verified" in out
    assert "note: no checkpoint covers any record yet: the 12 records are chained but none is signed" in out
    assert "after the last checkpoint" not in out  # there is none


def test_records_after_the_last_checkpoint_are_named_by_seq(bundle: Path, tmp_path: Path) -> None:
    docs = [d for d in _docs(bundle) if not (d["t"] == "cp" and d["seq"] == 20)]
    path = tmp_path / "b.jsonl"
    _write(path, docs)
    code, out = run("audit", "verify", "--bundle", str(path), *pins())
    assert code == 0, out
    assert "note: the 5 records after the last checkpoint (seq 15), seq 16-20, are chained but not yet signed" in out


def test_a_store_with_no_checkpoint_fails_with_the_key_pinned_and_says_to_wait(tmp_path: Path) -> None:
    """A live log just started and a store stripped of its checkpoint rows look the same: both fail pinned (the
    message says to verify again after the first checkpoint); without --pubkey, a note."""
    url = _store(tmp_path, (0, True), (7, False))  # a checkpoint at seq 0 (a writer closed on an empty log)
    code, out = run("audit", "verify", "--store", url, *pins())
    assert code == 1, out
    assert "no checkpoint signed by a pinned key covers any of the 7 records" in out
    assert "whoever can write to the store" in out and "verify again after it" in out
    code, out = run("audit", "verify", "--store", url)
    assert code == 0 and "note: no checkpoint covers any record yet" in out, out
    store = open_store(url)
    AuditWriter(store, RING).checkpoint()  # the first checkpoint comes: the same command passes
    store.close()
    code, out = run("audit", "verify", "--store", url, *pins())
    assert code == 0 and "OK: 7 records, 2 checkpoints verified" in out, out


def test_an_empty_log_with_the_key_pinned_is_fine(tmp_path: Path) -> None:
    url = _store(tmp_path, (0, False))
    code, out = run("audit", "verify", "--store", url, *pins())
    assert code == 0 and "OK: 0 records" in out, out


# ---------------------------------------------------------------------------------------------- messages

def test_two_swapped_records_are_out_of_order_not_missing(bundle: Path, tmp_path: Path) -> None:
    docs = _docs(bundle)
    a = next(i for i, d in enumerate(docs) if d["t"] == "rec" and d["seq"] == 10)
    docs[a], docs[a + 1] = docs[a + 1], docs[a]
    path = tmp_path / "swapped.jsonl"
    _write(path, docs)
    code, out = run("audit", "verify", "--bundle", str(path))
    assert code == 1, out
    assert "INTEGRITY FAILURE at seq 10: records out of order (found seq 11 where 10 was due; seq 10 follows it)" \
        in out, out
    assert "missing" not in out
    code, out = run("audit", "verify", "--bundle", str(VECTORS / "reordered_records.jsonl"))
    assert code == 1 and "at seq 5: records out of order" in out, out
    code, out = run("audit", "verify", "--bundle", str(VECTORS / "deleted_record.jsonl"))
    assert code == 1 and "at seq 5: record missing (found seq 6 where 5 was due)" in out, out


@pytest.mark.parametrize("zipped", [False, True])
def test_a_log_cut_in_the_middle_of_a_line_is_a_torn_tail_after_the_last_good_seq(bundle: Path, tmp_path: Path,
                                                                                   zipped: bool) -> None:
    raw = zipfile.ZipFile(bundle).read("log.jsonl")
    lines = raw.split(b"\n")
    at = next(i for i, line in enumerate(lines) if b'"seq":9,' in line and b'"t":"rec"' in line)
    cut = b"\n".join(lines[:at]) + b"\n" + lines[at][:85]
    path = tmp_path / ("torn.zip" if zipped else "torn.jsonl")
    if zipped:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("log.jsonl", cut)
    else:
        path.write_bytes(cut)
    code, out = run("audit", "verify", "--bundle", str(path), *pins())
    assert code == 1, out
    assert (f"INTEGRITY FAILURE at seq 9: torn tail: the log file ends in the middle of line {at + 1}, after "
            "seq 8") in out, out
    assert "JSONDecodeError" not in out and "cannot be read" not in out
    code, out = run("audit", "verify", "--bundle", str(path), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["seq"] == 9 and doc["records"] == 8 and "torn tail" in doc["problem"]


def test_a_damaged_line_in_the_middle_is_named_with_its_seq(bundle: Path, tmp_path: Path) -> None:
    lines = zipfile.ZipFile(bundle).read("log.jsonl").split(b"\n")
    at = next(i for i, line in enumerate(lines) if b'"seq":4,' in line and b'"t":"rec"' in line)
    lines[at] = lines[at][:40] + b"\xff" + lines[at][41:]
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"\n".join(lines))
    code, out = run("audit", "verify", "--bundle", str(path))
    assert code == 1, out
    assert f"INTEGRITY FAILURE at seq 4: log file damaged: line {at + 1}, after seq 3, is not ASCII text" in out, out
    assert "torn" not in out
