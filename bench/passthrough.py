"""Pass-through cost: requests/s on an UNGUARDED route, bare app vs the same app behind the guard.

Target (foundation issue): guarded >= 0.97x bare. Both servers run one after the other in the same run with the
same uvicorn settings; rounds alternate (bare, guarded, bare, guarded, ...) so drift in the machine hits both
sides, and the median of the rounds is compared.

    python bench/passthrough.py [--seconds 10] [--rounds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import run_load
from bench.server import uvicorn_server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    body = json.dumps({"applicant": {"id": "A-1"}, "features": {"age": 40}}).encode()
    sides = {"bare": ("bench._apps:bare_app", False), "guarded": ("bench._apps:guarded_app", True)}
    rps: dict[str, list[float]] = {k: [] for k in sides}
    p50: dict[str, list[float]] = {k: [] for k in sides}
    tool = ""
    for r in range(args.rounds):
        for name, (target, factory) in sides.items():
            with uvicorn_server(target, factory=factory) as (base, _ready):
                run_load(base + "/score", seconds=2, connections=args.connections, method="POST", body=body)
                res = run_load(base + "/score", seconds=args.seconds, connections=args.connections,
                               method="POST", body=body)
            tool = res.tool
            rps[name].append(res.rps)
            p50[name].append(res.p50_ms)
            print(f"round {r + 1} {name:8s} {res.rps:8.0f} req/s  p50 {res.p50_ms:.2f} ms  errors {res.errors}",
                  flush=True)
    bare, guarded = statistics.median(rps["bare"]), statistics.median(rps["guarded"])
    ratio = guarded / bare
    print(f"median: bare {bare:.0f} req/s, guarded {guarded:.0f} req/s, ratio {ratio:.3f} "
          f"(target >= 0.97: {'met' if ratio >= 0.97 else 'MISSED'}); load: {tool}, "
          f"{args.connections} connections, {args.seconds:.0f} s x {args.rounds} rounds; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    if args.json:
        args.json.write_text(json.dumps({"rps": rps, "p50_ms": p50, "ratio": ratio, "tool": tool}, indent=2))
    return 0 if ratio >= 0.97 else 1


if __name__ == "__main__":
    raise SystemExit(main())
