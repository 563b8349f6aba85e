"""kill -9 while appending: every acknowledged record survives, and the log still verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mlguard.audit.store.base import open_store
from mlguard.audit.verify import verify_log

ROUNDS = int(os.environ.get("MLGUARD_CRASH_ROUNDS", "3"))

CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from mlguard.audit.record import Pending, canonical, iso
    from mlguard.audit.stage import append_durably
    from mlguard.audit.store.base import open_store
    from mlguard.audit.writer import AuditWriter
    from mlguard.keys import Keyring

    ring = Keyring.from_seed(b"crash-test-seed-crash-test-seed-!")
    w = AuditWriter(open_store(sys.argv[1]), ring, checkpoint_every=50)
    w.start()

    async def worker(k):
        i = 0
        while True:
            aid = f"{sys.argv[2]}-{k}-{i}"
            await append_durably(w, Pending(aid, iso(time.time()), "exchange", "/p", None, canonical({"i": i})))
            print(aid, flush=True)  # the "2xx reached the client": only after COMMIT returned
            i += 1

    async def main():
        await asyncio.gather(*(worker(k) for k in range(16)))

    asyncio.run(main())
""")


def test_kill_9_keeps_acknowledged_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    acked: list[str] = []
    for rnd in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, url, f"r{rnd}"], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).resolve().parents[2])
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        seen = 0
        while seen < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.strip())
            seen += 1
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        acked.extend(x for x in rest.splitlines() if x.strip())
        assert seen >= 300, "child did not get going"
    store = open_store(url)
    have = {r.audit_id for r in store.iter_rows()}
    missing = [a for a in acked if a not in have]
    assert not missing, f"{len(missing)} acknowledged records lost"
    res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                     public_keys=store.public_keys())
    assert res.ok, res.as_dict()
    store.close()
