"""After the fuzzed traffic: the audit trail verifies, and its decrypted records hold no planted value of a
declared PII field (the guard sealed redacted input; protected attributes are sealed apart, by design).

Runs last in the directory (file order); on its own it sends a few planted applications first, so it is never
vacuous.
"""

from __future__ import annotations

import json

from mlguard.audit.reader import AuditReader
from mlguard.cli import main
from tests.fuzz.harness import DECLARED, FEATURES, NOTE, NOTE_VALUES, PROTECTED, FuzzEnv, FuzzRequest


def _planted_application(i: int) -> bytes:
    doc = {"applicant": {"id": f"APP-TRAIL-{i}", **DECLARED, **PROTECTED},
           "features": dict.fromkeys(FEATURES, float(i % 3)), "note": NOTE}
    return json.dumps(doc).encode()


def test_the_trail_verifies_and_holds_no_declared_value(fuzz_env: FuzzEnv) -> None:
    for i in range(3):
        out = fuzz_env.send(FuzzRequest(kind="trail", valid=True, chunks=[_planted_application(i)],
                                        headers=[(b"host", b"t"), (b"content-type", b"application/json")]))
        assert out.status == 200
    # Every record committed (sync durability), then the CLI verifies the chain without any key.
    witness = fuzz_env.work / "witness.log"  # written at signed checkpoints: not before the first one
    args = ["--witness", str(witness)] if witness.exists() else []
    assert main(["audit", "verify", "--store", fuzz_env.store_url, *args]) == 0

    reader = AuditReader(fuzz_env.store_url, fuzz_env.work / "fuzz.keyring")
    try:
        lines = list(reader.iter_jsonl())
    finally:
        reader.close()
    assert len(lines) >= fuzz_env.stats.requests // 2  # refusals and exchanges alike are on the record
    exported = "\n".join(lines)
    for value in DECLARED.values():
        assert value not in exported, value
    assert json.dumps(PROTECTED["sex"]) in exported  # sealed apart for the key holder: the export is real
    for value in NOTE_VALUES:  # the note's values: caught by NER or not, never in a log or file in clear
        assert value.encode() not in (fuzz_env.work / "audit.db").read_bytes()
    assert fuzz_env.files_hits() == {}
    assert fuzz_env.logs.seen > 0  # the guard's log records were captured (and checked) all along
