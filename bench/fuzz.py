"""The long form of the fuzzing (issue 7, item 4): >= 10,000 generated requests through the guarded example.

Runs the same suite as ``make test`` runs in its smoke form (tests/fuzz: Hypothesis strategies for every kind of
hostile request, schemathesis cases from the example's OpenAPI, the trail check after), with many more examples
per test, then prints what was sent and what came back. Pass criteria: every test green, >= the requested
number of requests, 0 server errors caused by the guard, 0 crashes, 0 planted-value hits.

    python bench/fuzz.py [--examples 650] [--min-requests 10000] [--json out.json] [-- extra pytest args]

Why pytest and not a loop of its own: one set of strategies and oracles, so the long form cannot drift from
what CI checks. The example count per test comes from MLGUARD_FUZZ_EXAMPLES; the totals from the suite's own
summary file (MLGUARD_FUZZ_SUMMARY).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=650, help="Hypothesis examples per fuzz test (17 tests)")
    ap.add_argument("--min-requests", type=int, default=10_000, help="fail below this many requests")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mlguard-fuzz-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        env = {**os.environ, "MLGUARD_FUZZ_EXAMPLES": str(args.examples),
               "MLGUARD_FUZZ_SUMMARY": str(summary_file)}
        cmd = [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider", *args.pytest_args]
        print(f"$ MLGUARD_FUZZ_EXAMPLES={args.examples} {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        elapsed = time.perf_counter() - t0
        if not summary_file.exists():
            print("fuzz: the suite wrote no summary (it did not get as far as the guard)", file=sys.stderr)
            return rc or 1
        stats = json.loads(summary_file.read_text(encoding="utf-8"))

    stats["seconds"] = round(elapsed, 1)
    stats["pytest_exit"] = rc
    print()
    print(f"fuzz long form: {stats['requests']} requests in {elapsed:.0f} s ({args.examples} examples per test)")
    print("requests by kind:")
    for kind, n in sorted(stats["kinds"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {kind:32s} {n:6d}")
    print("statuses:", ", ".join(f"{k}: {v}" for k, v in stats["statuses"].items()))
    checks = [
        ("requests", stats["requests"], f">= {args.min_requests}", stats["requests"] >= args.min_requests),
        ("server errors caused by the guard", stats["guard_server_errors"], "0", stats["guard_server_errors"] == 0),
        ("crashes (exception out of the guard)", stats["crashes"], "0", stats["crashes"] == 0),
        ("planted-value hits (app, logs, errors, files)", stats["planted_hits"], "0", stats["planted_hits"] == 0),
        ("stage failures", stats["stage_failures"], "0", stats["stage_failures"] == 0),
        ("pytest exit code", rc, "0", rc == 0),
    ]
    for name, value, target, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {value} (target {target})")
    print(f"  info: 5xx of the example app itself (the bare app answers the same): {stats['app_server_errors']}")
    if args.json:
        args.json.write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
