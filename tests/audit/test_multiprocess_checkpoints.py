"""Periodic checkpoints of two writer processes on one log (what ``mlguard serve --workers 2`` runs).

Each process signs a checkpoint every few of ITS records, at the head it reads then, while the other process
keeps appending; both append to one witness file. Every checkpoint must match the chain at its seq, in the store
and in the witness, for the sync writer and for the pipelined one (async durability). The end to end form, the
two workers of a served app, is tests/e2e/test_workers.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlguard.audit.chain import Witness
from mlguard.audit.store.base import AuditStore
from mlguard.audit.verify import verify_log

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mlguard.audit.record import Pending, canonical, iso
    from mlguard.audit.store.base import open_store
    from mlguard.audit.writer import AuditWriter
    from mlguard.keys import Keyring

    url, tag, pipeline, witness = sys.argv[1], sys.argv[2], sys.argv[3] == "1", Path(sys.argv[4])
    w = AuditWriter(open_store(url), Keyring.from_seed(b"multi-process-seed-multi-process!"), checkpoint_every=7,
                    witness=witness, pipeline=pipeline)
    w.start()
    futs = []
    for i in range(300):
        item = Pending(f"{tag}-{i}", iso(time.time()), "exchange", "/p", f"s{i % 13}", canonical({"i": i}),
                       canonical({"g": "x"}))
        futs.append(w.submit(item, wait=not pipeline))
        if i % 10 == 9:
            time.sleep(0.002)  # small batches: many checkpoints, interleaved with the other process
    for f in futs:
        if f is not None:
            f.result(timeout=60)
    w.close()
    print(w.stats["checkpoints"])
""")


@pytest.mark.parametrize("pipeline", [False, True], ids=["sync", "pipelined"])
def test_two_processes_checkpoint_one_log(store_url: str, store: AuditStore, tmp_path: Path, pipeline: bool) -> None:
    root = Path(__file__).resolve().parents[2]
    witness = tmp_path / "witness.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, store_url, f"p{i}", "1" if pipeline else "0",
                               str(witness)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    per_process = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        per_process.append(int(out.split()[-1]))
    assert min(per_process) >= 3, per_process  # periodic ones from each process, besides its final one
    signed = sum(per_process)
    assert store.count() == 600 and store.head()[0] == 600
    checkpoints = store.checkpoints()
    witnessed = Witness.read(witness)
    assert len(checkpoints) == signed
    key = lambda cp: json.dumps(cp, sort_keys=True)  # noqa: E731
    assert sorted(map(key, witnessed)) == sorted(map(key, checkpoints))
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=checkpoints, public_keys=store.public_keys(),
                     witness=witnessed)
    assert res.ok, res.as_dict()
    assert (res.checkpoints, res.witness_entries) == (signed, signed)  # counted apart, not summed
