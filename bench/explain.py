"""Explanation cost: inline TreeSHAP overhead, and deferred mode against explanations off, in one run.

    .venv/bin/python bench/explain.py [--requests 3000] [--seconds 20] [--rate 50]

What is measured (all in one process, the guarded example app driven in-process through httpx.ASGITransport,
so client, guard and app share the same event loop and the same two cores on every side):

1. Inline: per-request latency with the explain stage inline vs the same guard with explanations off,
   requests rotating between the sides so drift hits all alike; overhead = p50(on) - p50(off). Two inline
   sides: the default (a sub-millisecond TreeSHAP runs on the event loop) and forced into a worker thread
   (``on_loop_below_ms: 0``). Also the explainer call alone (TreeSHAP, probability space, interventional,
   the example's 100 background rows), and the engine call alone: the served engine (mlguard's precomputed
   interventional TreeSHAP, mlguard/explain/fasttree.py) against shap's own algorithm on the same rows,
   interleaved, with the largest difference between their contributions.
2. Deferred at ``--rate`` requests/s (open loop: requests start on a fixed schedule whatever the latency):
   phases off / deferred / off / deferred, each half of ``--seconds``; p50 latency of each side, and for the
   deferred side the share of explanations ready (stored by the worker) within 2 s of the request being sent.

Only the explain stage runs (``stages=["explain"]``) with the ecoa policy (reasons on adverse decisions), so the
difference between the sides is the explain stage alone. The model is the example's
(``examples.credit_scoring.model:load_model``), or an equivalent one trained here when the example is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlguard.middleware import GuardMiddleware  # noqa: E402
from mlguard.runtime import Guard  # noqa: E402
from mlguard.testing import json_app  # noqa: E402

EXAMPLE = ROOT / "examples" / "credit_scoring"


def _example() -> tuple[Any, list[str], Path, Any]:
    """The example's model, features, background and a raw ASGI app serving it."""
    from examples.credit_scoring.model import BACKGROUND_CSV, FEATURES, load_model

    model = load_model()
    return model, list(FEATURES), BACKGROUND_CSV, _model_app(model, list(FEATURES))


def _model_app(model: Any, features: list[str]) -> Any:
    """The example's /predict logic as a raw ASGI app (no FastAPI validation cost on either side)."""
    try:
        from examples.credit_scoring.app import model_app

        return model_app
    except ImportError:
        pass

    def score(doc: Any) -> dict[str, Any]:
        feats = doc["features"]
        p = float(model.predict_proba(np.array([[feats[n] for n in features]]))[0, 1])
        return {"score": p, "approved": p >= 0.5}

    return json_app(score)


def _config(features: list[str], background: Path, *, enabled: bool, execution: str,
            on_loop_below_ms: float = 1.0) -> dict[str, Any]:
    return {
        "policies": ["ecoa"],
        "base_dir": str(EXAMPLE),
        "audit": {"enabled": False},
        "explain": {"enabled": enabled, "execution": execution, "on_loop_below_ms": on_loop_below_ms},
        "routes": [{"path": "/predict", "subject": "$.applicant.id", "protected": {"sex": "$.applicant.sex"},
                    "model": {"object": "examples.credit_scoring.model:load_model", "features": "$.features",
                              "feature_order": features, "output": "$.score", "favorable": "$.approved",
                              "background": str(background)}}],
    }


def _requests(background: Path, features: list[str], n: int) -> list[bytes]:
    import csv

    with background.open() as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        out.append(json.dumps({"applicant": {"id": f"A{i}", "name": "Ann Example", "sex": "F"},
                               "features": {f: float(r[f]) for f in features}}).encode())
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def inline_bench(apps: dict[str, Any], bodies: list[bytes]) -> dict[str, dict[str, float]]:
    """Sequential requests, rotating over the sides so drift and noise hit every side alike."""
    lat: dict[str, list[float]] = {k: [] for k in apps}
    headers = {"content-type": "application/json"}
    clients = {k: httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
               for k, a in apps.items()}
    names = list(apps)
    try:
        for body in bodies[:200]:  # warm-up, every side
            for c in clients.values():
                await c.post("/predict", content=body, headers=headers)
        for i, body in enumerate(bodies):
            for k in range(len(names)):
                side = names[(i + k) % len(names)]
                t0 = time.perf_counter()
                resp = await clients[side].post("/predict", content=body, headers=headers)
                lat[side].append((time.perf_counter() - t0) * 1000.0)
                if side != "off" and resp.json().get("explanation", {}).get("status") != "ready":
                    raise SystemExit("inline explanation missing")
    finally:
        for c in clients.values():
            await c.aclose()
    return {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in lat.items()}


async def open_loop(app: Any, bodies: list[bytes], rate: float, seconds: float,
                    sent_at: dict[str, float] | None) -> list[float]:
    """Start one request every 1/rate s for ``seconds``; return latencies (ms)."""
    lat: list[float] = []
    headers = {"content-type": "application/json"}
    n = int(rate * seconds)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            resp = await c.post("/predict", content=body, headers=headers)
            lat.append((time.perf_counter() - t0) * 1000.0)
            if sent_at is not None:
                sent_at[resp.headers["mlguard-audit-id"]] = t0

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                tg.start_soon(one, bodies[i % len(bodies)])
    return lat


async def deferred_bench(off: Any, deferred: Any, stage: Any, bodies: list[bytes], rate: float,
                         seconds: float) -> dict[str, float]:
    ready_at: dict[str, float] = {}
    inner = stage.worker._on_ready

    def on_ready(job: Any, entry: Any) -> None:  # instrumentation only: note when each one is stored
        ready_at[job.audit_id] = time.perf_counter()
        inner(job, entry)

    stage.worker._on_ready = on_ready
    sent_at: dict[str, float] = {}
    lat_off: list[float] = []
    lat_def: list[float] = []
    await open_loop(off, bodies, rate, 2.0, None)  # warm-up
    await open_loop(deferred, bodies, rate, 2.0, {})
    phase = seconds / 4
    for _ in range(2):
        lat_off += await open_loop(off, bodies, rate, phase, None)
        lat_def += await open_loop(deferred, bodies, rate, phase, sent_at)
    await anyio.sleep(2.5)
    within = sum(1 for k, t0 in sent_at.items() if k in ready_at and ready_at[k] - t0 <= 2.0)
    waits = [ready_at[k] - t0 for k, t0 in sent_at.items() if k in ready_at]
    return {"p50_off": pct(lat_off, 50), "p50_deferred": pct(lat_def, 50), "ratio": pct(lat_def, 50)
            / pct(lat_off, 50), "ready_2s": within / len(sent_at), "n": len(sent_at),
            "ready_p50_ms": statistics.median(waits) * 1000.0 if waits else float("nan"),
            "ready_p95_ms": pct(waits, 95) * 1000.0 if waits else float("nan")}


def explainer_alone(stage: Any, background: Path, features: list[str], n: int = 2000) -> dict[str, float]:
    rx = stage.routes[0]
    bodies = [json.loads(b)["features"] for b in _requests(background, features, 100)]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        rx.explain_many([bodies[i % len(bodies)]], [False])
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"p50": pct(times, 50), "p95": pct(times, 95)}


def engines_alone(stage: Any, background: Path, features: list[str], n: int = 2000) -> dict[str, float]:
    """The served engine (mlguard's precomputed interventional TreeSHAP) against shap's own algorithm on the
    same rows, calls interleaved; and the largest difference between their contributions."""
    from mlguard.explain import fasttree
    from mlguard.explain.explainers import build_engine

    rx = stage.routes[0]
    served = rx.engine
    original = fasttree.build
    fasttree.build = lambda *a, **k: None  # type: ignore[assignment]
    try:
        reference = build_engine(rx.binding, rx.binding.background.data)
    finally:
        fasttree.build = original  # type: ignore[assignment]
    rows = [json.loads(b)["features"] for b in _requests(background, features, 100)]
    xs = [rx.binding.matrix([r]) for r in rows]
    t_served: list[float] = []
    t_shap: list[float] = []
    diff = 0.0
    for i in range(n):
        x = xs[i % len(xs)]
        t0 = time.perf_counter()
        _, a = served.explain(x)
        t1 = time.perf_counter()
        _, b = reference.explain(x)
        t2 = time.perf_counter()
        t_served.append((t1 - t0) * 1000.0)
        t_shap.append((t2 - t1) * 1000.0)
        diff = max(diff, float(np.abs(a - b).max()))
    return {"served_p50": pct(t_served, 50), "shap_p50": pct(t_shap, 50), "served_p95": pct(t_served, 95),
            "shap_p95": pct(t_shap, 95), "max_abs_diff": diff,
            "implementation": str(served.params.get("implementation"))}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="inline: requests per side")
    ap.add_argument("--seconds", type=float, default=20.0, help="deferred: total measured seconds")
    ap.add_argument("--rate", type=float, default=50.0, help="deferred: requests per second")
    args = ap.parse_args()
    logging.getLogger("mlguard").setLevel(logging.WARNING)

    _model, features, background, app = _example()
    bodies = _requests(background, features, 500)
    off = GuardMiddleware(app, guard=Guard(_config(features, background, enabled=False, execution="auto"),
                                           stages=["explain"]))
    inline_guard = Guard(_config(features, background, enabled=True, execution="inline"), stages=["explain"])
    on = GuardMiddleware(app, guard=inline_guard)
    thread_guard = Guard(_config(features, background, enabled=True, execution="inline", on_loop_below_ms=0),
                         stages=["explain"])
    on_thread = GuardMiddleware(app, guard=thread_guard)
    deferred_guard = Guard(_config(features, background, enabled=True, execution="deferred"), stages=["explain"])
    deferred = GuardMiddleware(app, guard=deferred_guard)
    on_stage = inline_guard.stages[0]
    def_stage = deferred_guard.stages[0]
    rx = on_stage.routes[0]
    print(f"model {rx.binding.model_class}, {len(features)} features, explainer {rx.engine.method} "
          f"({rx.engine.identity()['model_output']}, {rx.engine.identity()['feature_perturbation']}), "
          f"background {rx.binding.background.identity()['rows']} rows; predicted {rx.predicted_ms:.3f} ms "
          f"vs budget {rx.rules.budget_ms} ms -> auto runs "
          f"{'deferred' if rx.predicted_ms > rx.rules.budget_ms else 'inline'}"
          f"{', on the event loop' if rx.on_loop else ''}")

    stage_ms: list[float] = []
    original_after_app = on_stage.after_app

    async def timed_after_app(ex: Any) -> None:  # instrumentation only: the stage's own time per request
        t0 = time.perf_counter()
        await original_after_app(ex)
        stage_ms.append((time.perf_counter() - t0) * 1000.0)

    on_stage.after_app = timed_after_app
    alone = explainer_alone(on_stage, background, features)
    print(f"explainer call alone (incl. building the document): p50 {alone['p50']:.3f} ms, "
          f"p95 {alone['p95']:.3f} ms")
    eng = engines_alone(on_stage, background, features)
    print(f"engine call alone, interleaved: {eng['implementation']} p50 {eng['served_p50']:.3f} ms "
          f"(p95 {eng['served_p95']:.3f}); shap's own algorithm p50 {eng['shap_p50']:.3f} ms "
          f"(p95 {eng['shap_p95']:.3f}); {eng['shap_p50'] / eng['served_p50']:.1f}x; largest difference in a "
          f"contribution {eng['max_abs_diff']:.2e}")
    n = args.requests
    res = await inline_bench({"off": off, "on": on, "thread": on_thread},
                             (bodies * (n // len(bodies) + 1))[:n])
    print(f"inline ({n} requests per side, rotating): p50 off {res['off']['p50']:.3f} ms, "
          f"inline {res['on']['p50']:.3f} ms -> overhead {res['on']['p50'] - res['off']['p50']:.3f} ms p50; "
          f"inline in a thread {res['thread']['p50']:.3f} ms -> overhead "
          f"{res['thread']['p50'] - res['off']['p50']:.3f} ms p50 "
          f"(p95 off {res['off']['p95']:.3f}, inline {res['on']['p95']:.3f}, thread {res['thread']['p95']:.3f}); "
          f"explain stage after_app alone: p50 {pct(stage_ms, 50):.3f} ms")
    dres = await deferred_bench(off, deferred, def_stage, bodies, args.rate, args.seconds)
    print(f"deferred at {args.rate:g} req/s ({dres['n']} deferred requests): p50 off {dres['p50_off']:.3f} ms, "
          f"deferred {dres['p50_deferred']:.3f} ms -> {dres['ratio']:.3f}x; ready within 2 s "
          f"{dres['ready_2s'] * 100:.1f}% (ready after p50 {dres['ready_p50_ms']:.1f} ms, "
          f"p95 {dres['ready_p95_ms']:.1f} ms)")
    await deferred_guard.aclose()


if __name__ == "__main__":
    anyio.run(main)
