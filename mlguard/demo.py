"""``mlguard demo``: the guarded credit-scoring example, end to end, on a free localhost port.

Why a real server and real HTTP: the demo should show what a user's deployment does, headers and all, not an
in-process shortcut. Everything it writes goes to a temporary directory.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlguard.errors import ConfigError
from mlguard.testing import receive_body
from mlguard.types import Receive, Scope, Send

EXAMPLE = Path("examples") / "credit_scoring"


def find_example() -> Path:
    """The example directory of a source checkout: from the current directory or beside the package."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / EXAMPLE / "mlguard.yaml").exists():
            return root / EXAMPLE
    raise ConfigError("the demo needs a source checkout of mlguard (examples/credit_scoring not found); "
                      "run it from the repository root")


class CaptureApp:
    """Wraps the model app and keeps the bodies it received, so the demo can show what the model saw."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await receive_body(receive)
        self.bodies.append(body)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def run_demo(out: Callable[[str], None] = print, limit: int | None = None, hiring: bool = True) -> int:
    """Run the demo and print its summary; returns the exit code."""
    import httpx
    import uvicorn

    from mlguard.config import load_config
    from mlguard.keys import Keyring
    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard

    example = find_example()
    root = example.parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from examples.credit_scoring.app import model_app

    work = Path(tempfile.mkdtemp(prefix="mlguard-demo-"))
    # made here, on purpose: a keyring the guard has to create for itself is warned about (one meant to come from
    # MLGUARD_KEYRING was not found), which would be noise in the demo
    Keyring.create(work / "demo.keyring")
    token = secrets.token_urlsafe(16)
    cfg = load_config(example / "mlguard.yaml")
    os.environ[cfg.admin.token_env] = token
    cfg = cfg.model_copy(update={"audit": cfg.audit.model_copy(update={
        "store": f"sqlite:///{work / 'audit.db'}", "keyring": work / "demo.keyring",
        "witness": work / "witness.log"})})
    out(f"mlguard demo: guarded example {example} (work files in {work})")
    t0 = time.perf_counter()
    guard = Guard(cfg)
    capture = CaptureApp(model_app)
    app = GuardMiddleware(capture, guard=guard)
    out(f"  guard built in {time.perf_counter() - t0:.1f} s; policies {', '.join(guard.policy.ids)}; "
        f"stages {', '.join(s.name for s in guard.stages) or 'none'}")
    for name, why in guard.unavailable.items():
        out(f"  stage {name}: {why}")

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            out("the server did not start")
            return 1
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    lines = (example / "sample_requests.jsonl").read_text(encoding="utf-8").splitlines()
    requests = [json.loads(line) for line in lines if line.strip()][:limit]
    results: list[tuple[dict[str, Any], httpx.Response, float]] = []
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for doc in requests:
                s = time.perf_counter()
                resp = client.post("/predict", json=doc)
                results.append((doc, resp, (time.perf_counter() - s) * 1000))
            _summarise(results, capture, guard, out)
            _fairness_section(client, guard, {"authorization": f"Bearer {token}"}, results, out)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    audit_ok = _audit_section(guard, cfg, requests, out)
    if hiring:
        _hiring_section(out)
    served = all(r.status_code == 200 for _, r, _ in results)
    out(f"\ndemo {'finished' if served and audit_ok else 'FAILED'}; work files kept in {work} for you to inspect "
        f"(they hold a demo keyring: `rm -r {work}` when done)")
    return 0 if served and audit_ok else 1


def _summarise(results: list[tuple[dict[str, Any], Any, float]], capture: CaptureApp, guard: Any,
               out: Callable[[str], None]) -> dict[str, Any]:
    statuses = Counter(r.status_code for _, r, _ in results)
    lat = sorted(ms for _, _, ms in results)
    out(f"\n1. Requests: {len(results)} sample applications sent; statuses {dict(statuses)}; "
        f"latency p50 {statistics.median(lat):.1f} ms, max {lat[-1]:.1f} ms (client side, incl. HTTP)")

    out("\n2. Redaction (what the model received)")
    if "pii" not in {s.name for s in guard.stages}:
        out(f"   PII stage not available: {guard.unavailable.get('pii', 'disabled by config')}")
    total = sum(int(r.headers.get("mlguard-redactions", 0)) for _, r, _ in results)
    out(f"   {total} values redacted across {len(results)} requests")
    for (doc, _, _), seen in zip(results, capture.bodies, strict=False):
        model_saw = json.loads(seen)
        if doc.get("note") and model_saw.get("note") != doc["note"]:
            out(f"   sent:       applicant={json.dumps(doc.get('applicant'))}")
            out(f"               note={doc['note']!r}")
            out(f"   model saw:  applicant={json.dumps(model_saw.get('applicant'))}")
            out(f"               note={model_saw.get('note')!r}")
            out("   (sex and race were read before redaction for fairness and the sealed record; "
                "under ecoa they never reach the model)")
            break

    out("\n3. One decision with its explanation")
    field = guard.config.explain.field
    shown = False
    for _, resp, _ in results:
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        exp = body.get(field) if isinstance(body, dict) else None
        if exp and body.get("approved") is False and exp.get("reasons"):
            out(f"   score {body['score']:.3f}, approved {body['approved']} (audit id "
                f"{resp.headers.get('mlguard-audit-id')})")
            out(f"   base value {exp.get('base_value'):.4f} ({exp.get('output', '')}); top contributions:")
            for item in exp.get("top", [])[:5]:
                out(f"     {item['feature']:<20} {item['contribution']:+.4f}")
            out("   adverse-action reasons:")
            for reason in exp["reasons"]:
                out(f"     - {reason.get('text', reason.get('feature'))}")
            shown = True
            break
    if not shown:
        out(f"   explanations not available: {guard.unavailable.get('explain', 'no explanation in responses')}")

    return {"statuses": dict(statuses)}


def _fairness_section(client: Any, guard: Any, headers: dict[str, str],
                      results: list[tuple[dict[str, Any], Any, float]], out: Callable[[str], None]) -> None:
    out("\n4. Fairness against the policy")
    if "fairness" not in {s.name for s in guard.stages}:
        out(f"   fairness stage not available: {guard.unavailable.get('fairness', 'disabled by config')}")
        return
    seen = Counter(r.headers.get("mlguard-fairness", "n/a") for _, r, _ in results)
    out(f"   MLGuard-Fairness headers over the run: {dict(seen)}")
    thresholds = guard.policy.fairness
    source = ", ".join(guard.policy.origin("fairness.action"))
    out(f"   policy: impact ratio >= {thresholds.min_impact_ratio}, minimum group size "
        f"{thresholds.min_group_size}, action {thresholds.action} ({source})")
    status = client.get(f"{guard.config.admin.prefix}/fairness", headers=headers).json()
    for route in status["routes"].values():
        rep = route["report"]
        out(f"   route {route['path']}: {rep['status']} over {rep['decisions']} decisions")
        if rep["status"] in ("warn", "violation"):
            out("   (the 'fairness status changed' ERROR line above is the guard's alert for this: expected with "
                "this example's model; in production it goes to your logs, metrics and fairness.webhook)")
        for dim, d in rep["dimensions"].items():
            if "|" in dim:
                continue  # intersections: in the report (mlguard report fairness), not the summary
            out(f"     {dim}: {d['status']}; unknown {d['unknown']} of {d['total']}")
            for row in d["impact"]:
                ir = row["selection_impact_ratio"]
                flag = "  below 4/5" if row["below_four_fifths"] else ""
                small = "  (insufficient data)" if row["insufficient"] else ""
                out(f"       {row['group']:<40} n={row['n']:<4} selection rate {row['selection_rate']:.3f} "
                    f"impact ratio {'n/a' if ir is None else f'{ir:.2f}'}{flag}{small}")


def _audit_section(guard: Any, cfg: Any, requests: list[dict[str, Any]], out: Callable[[str], None]) -> bool:
    out("\n5. Audit trail")
    if "audit" not in {s.name for s in guard.stages}:
        out(f"   audit stage not available: {guard.unavailable.get('audit', 'disabled by config')}")
        return True
    from mlguard.audit.chain import Witness
    from mlguard.audit.verify import verify_store

    witness = Witness.read(cfg.audit.witness) if cfg.audit.witness and cfg.audit.witness.exists() else None
    res = verify_store(cfg.audit.store, witness=witness)
    out(f"   store {cfg.audit.store}")
    out(f"   verified without any decryption key: {'intact' if res.ok else 'INTEGRITY FAILURE'}; "
        f"{res.records} records, {res.checkpoints} signed checkpoints"
        + ("" if res.ok else f"; first bad seq {res.seq}: {res.problem}"))
    db = Path(cfg.audit.store[len("sqlite:///"):]) if cfg.audit.store.startswith("sqlite:///") else None
    if db is not None:
        files = [p for p in db.parent.iterdir() if p.is_file()]
        blob = b"".join(p.read_bytes() for p in files)
        planted = [v for doc in requests for v in (doc.get("applicant") or {}).values()
                   if isinstance(v, str) and len(v) > 6 and v not in ("Female", "Male")]
        hits = sum(1 for v in planted if v.encode() in blob)
        out(f"   {len(planted)} applicant values (names, e-mails, SSNs, addresses ...) searched in "
            f"{len(files)} files on disk: {hits} found in clear")
    out(f"   export: mlguard audit export --store {cfg.audit.store} --keyring {cfg.audit.keyring} "
        "--format jsonl --out records.jsonl")
    return res.ok


def _hiring_section(out: Callable[[str], None]) -> None:
    out("\n6. Second example: a hiring screen under nyc_ll144 + eeoc_four_fifths (examples/hiring_screen)")
    import asyncio

    try:
        from examples.hiring_screen.simulate import run as simulate
    except ImportError as exc:  # pragma: no cover - a checkout without the example
        out(f"   not available: {exc}")
        return
    asyncio.run(simulate(400, None, 7))
