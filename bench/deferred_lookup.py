"""Deferred explanation lookup: ``AuditReader.deferred_explanation`` against the per-event decode it replaced.

    .venv/bin/python bench/deferred_lookup.py [--events 100000] [--at 50000] [--repeat 3] [--db PATH]

Builds a SQLite audit log with the real writer: two exchange records whose explanation was deferred, then
``--events`` explanation events (``record.event``, as the explain stage appends them: a ready explanation with its
reasons and contributions) naming other audit ids, except the ``--at``-th which names the second exchange. Times
the lookup of each exchange: the first one's event never came (the worst case: every event up to the scan bound
is looked at, and None comes back), the second one's is the ``--at``-th. Both readers are timed: a caching one (as
``mlguard explain`` opens) and a non-caching one (``cache_keys=False``, as the audit stage's admin endpoint
opens); each run uses a fresh reader (cold key cache), best of ``--repeat``.

The reference is the loop the lookup was before (one ``decode`` per event: a data-key query for a non-caching
reader, a decryption and a full record dict each), run on the same log in the same process; both must return the
same result, or the script exits 1. ``--db`` keeps the log at PATH (built once, reused when it exists).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlguard.audit.reader import DEFERRED_SCAN, AuditReader
from mlguard.audit.record import Pending, canonical, event, iso, pseudonym
from mlguard.audit.store.base import open_store
from mlguard.audit.writer import AuditWriter
from mlguard.ids import uuid7
from mlguard.keys import Keyring

RING = Keyring.from_seed(b"bench-seed-bench-seed-bench-seed!")
BATCH = 5000


def reference(reader: AuditReader, record: dict[str, Any], scan: int = DEFERRED_SCAN) -> dict[str, Any] | None:
    """The lookup as it was: every explanation event decoded into a full record, its data key fetched."""
    seq = record.get("seq")
    if not isinstance(seq, int):
        return None
    for n, row in enumerate(reader.store.iter_rows(since_seq=seq, kind="explanation")):
        if n >= scan:
            break
        ev = reader.decode(row)
        data = ev.get("data")
        if isinstance(data, dict) and data.get("audit_id") == record.get("audit_id"):
            explanation = data.get("explanation")
            return explanation if isinstance(explanation, dict) else None
    return None


def exchange(audit_id: str, n: int) -> Pending:
    """An exchange record whose explanation was deferred (its document says pending)."""
    now = time.time()
    subject = pseudonym(RING, f"applicant-{n}")
    body: dict[str, Any] = {
        "audit_id": audit_id, "kind": "exchange", "route": "/predict", "method": "POST", "status": 200,
        "input": {"income": 52000 + n, "age": 41}, "output": {"score": 0.31, "approved": False},
        "explanation": {"status": "pending", "deferred": True}, "ts": iso(now), "subject": subject}
    return Pending(audit_id, body["ts"], "exchange", "/predict", subject, canonical(body), None)


def explanation_event(names: str, i: int) -> Pending:
    """An explanation event as the explain stage appends it when a deferred explanation is ready."""
    doc = {"status": "ready", "deferred": True, "method": "treeshap", "outcome": "denied",
           "reasons": [{"feature": "income", "text": "Income too low", "code": "R01"},
                       {"feature": "debt_ratio", "text": "Debt ratio too high", "code": "R07"}],
           "contributions": {f"f{k}": round(0.01 * (i % 97) - 0.003 * k, 6) for k in range(8)},
           "base_value": 0.42, "took_ms": 3.1}
    return event(str(uuid7()), time.time(), "explanation", {"audit_id": names, "route": "/predict", "explanation": doc})


def build(url: str, events: int, at: int) -> tuple[str, str]:
    """The log: exchanges A (no event ever) and B (its event the ``at``-th), then the events; (A, B)."""
    store = open_store(url)
    writer = AuditWriter(store, RING)
    a, b = str(uuid7()), str(uuid7())
    writer.append_now([exchange(a, 0), exchange(b, 1)])
    for start in range(0, events, BATCH):
        writer.append_now([explanation_event(b if i + 1 == at else str(uuid7()), i)
                           for i in range(start, min(start + BATCH, events))])
    writer.checkpoint()
    store.close()
    return a, b


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="explanation events after the two exchanges")
    ap.add_argument("--at", type=int, default=50_000, help="which event (1-based) names the second exchange")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (the best is reported)")
    ap.add_argument("--db", type=Path, help="keep the log here (reused when the file exists)")
    ap.add_argument("--no-reference", action="store_true", help="time the current lookup only")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "audit.db"
        url = f"sqlite:///{path}"
        meta = path.with_suffix(".ids.json")
        if path.exists() and meta.exists():
            a, b = json.loads(meta.read_text())
        else:
            t0 = time.perf_counter()
            a, b = build(url, args.events, args.at)
            meta.write_text(json.dumps([a, b]))
            print(f"built {args.events:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results: dict[str, Any] = {"events": args.events, "at": args.at}
        ok = True
        for cache in (True, False):
            for name, audit_id in (("absent", a), ("found", b)):
                store = open_store(url, create=False)
                record = AuditReader(store, RING).get(audit_id)
                assert record is not None
                sides: dict[str, Callable[[AuditReader, dict[str, Any]], Any]] = {
                    "lookup": AuditReader.deferred_explanation}
                if not args.no_reference:
                    sides["reference"] = reference
                outs = {}
                for side, fn in sides.items():
                    def run(fn: Callable[[AuditReader, dict[str, Any]], Any] = fn, store: Any = store,
                            cache: bool = cache, record: dict[str, Any] = record) -> Any:
                        return fn(AuditReader(store, RING, cache_keys=cache), record)  # fresh reader: cold keys

                    secs, outs[side] = best(run, args.repeat)
                    results[f"{'cached' if cache else 'uncached'}_{name}_{side}_s"] = round(secs, 4)
                if (outs["lookup"] is None) != (name == "absent") or len({json.dumps(o, sort_keys=True)
                                                                         for o in outs.values()}) != 1:
                    ok = False
                    print(f"MISMATCH ({'cached' if cache else 'uncached'}, {name}): {outs}", file=sys.stderr)
                store.close()
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
