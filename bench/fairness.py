"""Fairness benchmarks: window update cost, metrics vs fairlearn, and the COMPAS external check.

    .venv/bin/python -m bench.fairness [--data ../shared/data] [--report-dir /tmp/mlguard-fairness-bench]

1. Window update: mean time of ``FairnessWindow.add`` per decision (2 attributes + their intersection, labels
   joined for half of them), over 200,000 decisions in a 10,000-decision window. Target <= 20 us.
2. All metrics for a 10,000-decision window with 20 groups: mlguard (counts -> every metric, and the full
   evaluation with LL144 rows and significance tests) vs fairlearn ``MetricFrame`` over the same rows (selection
   rate, TPR, FPR, FNR by group, differences and ratios). Same run, best of repeats; results compared within 1e-9.
   Target >= 50x faster.
3. COMPAS (ProPublica): every African-American and Caucasian row is sent through the guard in-process (fairness +
   audit stages, sqlite audit trail), its two_year_recid label through the admin feedback endpoint; the report is
   built from the audit trail and compared with ProPublica's published FPRs and fairlearn on the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlguard.fairness.metrics import Thresholds, disparity, evaluate
from mlguard.fairness.window import FairnessWindow
from mlguard.testing import json_app

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------- 1. update cost

def bench_update(n: int = 200_000) -> dict[str, float]:
    rng = random.Random(1)
    sexes, races = ["F", "M"], ["A", "B", "C", "D", "E"]
    rows = [({"sex": rng.choice(sexes), "race": rng.choice(races)}, rng.random() < 0.5, rng.random())
            for _ in range(n)]
    ids = [f"id{i}" for i in range(n)]
    w = FairnessWindow(["race", "sex"], size=10_000)
    add, set_label = w.add, w.set_label
    t0 = time.perf_counter()
    for (prot, pred, score), aid in zip(rows, ids, strict=True):
        add(prot, pred, score, aid)
    t_add = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n - 10_000, n, 2):
        set_label(ids[i], rows[i][1])
    t_label = (time.perf_counter() - t0) / 5_000
    return {"update_us": t_add * 1e6, "label_join_us": t_label * 1e6}


def bench_stage(n: int = 20_000) -> dict[str, float]:
    """The whole after_app hook per decision: window update, evaluation of every dimension, header and record."""
    from types import SimpleNamespace

    from mlguard.runtime import Guard
    from mlguard.types import Outcome

    config = {"policies": ["nyc_ll144", "eeoc_four_fifths"], "fairness": {"window_size": 10_000},
              "routes": [{"path": "/s", "protected": {"sex": "$.sex", "race": "$.race"},
                          "model": {"output": "$.score", "favorable": "$.ok"}}]}
    guard = Guard(config, stages=["fairness"])
    logging.getLogger("mlguard").setLevel(logging.CRITICAL)
    stage: Any = guard.stages[0]
    route = guard.table.routes[0]
    rng = random.Random(5)
    races = ["Hispanic or Latino", "White", "Black or African American", "Asian", "Two or More Races", None]
    exs = [SimpleNamespace(route=route, outcome=Outcome(rng.random(), rng.random() < 0.5), audit_id=f"a{i}",
                           protected={"sex": rng.choice(["Female", "Male"]), "race": rng.choice(races)},
                           subject=None, extra_headers={}, record={}) for i in range(n)]

    async def run() -> float:
        t0 = time.perf_counter()
        for ex in exs:
            await stage.after_app(ex)
        return (time.perf_counter() - t0) / n

    per = asyncio.run(run())
    groups = len(stage.routes[0].window.snapshot())
    return {"after_app_us": per * 1e6, "groups": groups}


# ---------------------------------------------------------------------------------------------- 2. vs fairlearn

def _window_20_groups(n: int = 10_000) -> tuple[FairnessWindow, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    groups = np.array([f"g{i:02d}" for i in range(20)])
    g = rng.choice(groups, size=n)
    base = {k: rng.uniform(0.2, 0.8) for k in groups}
    pred = np.array([rng.random() < base[x] for x in g])
    label = rng.random(n) < 0.5
    w = FairnessWindow(["group"], size=n)
    for i in range(n):
        w.add({"group": str(g[i])}, bool(pred[i]), audit_id=str(i))
        w.set_label(str(i), bool(label[i]))
    return w, {"group": g, "pred": pred.astype(int), "label": label.astype(int)}


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_vs_fairlearn() -> dict[str, Any]:
    from fairlearn.metrics import (
        MetricFrame,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    w, data = _window_20_groups()
    th = Thresholds(min_group_size=30)

    def ours_disparity() -> Any:
        return disparity(w.snapshot())

    def ours_full() -> Any:
        return evaluate(w.snapshot(), w.dimensions, th)

    def theirs() -> dict[str, Any]:
        mf = MetricFrame(metrics={"sel": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate,
                                  "fnr": false_negative_rate},
                         y_true=data["label"], y_pred=data["pred"], sensitive_features=data["group"])
        diff, ratio = mf.difference(), mf.ratio()
        return {"by_group": mf.by_group, "dpd": diff["sel"], "dpr": ratio["sel"],
                "eod": max(diff["tpr"], diff["fpr"]), "eor": min(ratio["tpr"], ratio["fpr"])}

    t_ours, m = _best(ours_disparity, 200)
    t_full, rep = _best(ours_full, 50)
    t_fl, fl = _best(theirs, 10)
    by = fl["by_group"]
    diffs = [abs(m.demographic_parity_difference - fl["dpd"]), abs(m.demographic_parity_ratio - fl["dpr"]),
             abs(m.equalized_odds_difference - fl["eod"]), abs(m.equalized_odds_ratio - fl["eor"])]
    for key in m.selection_rate:
        g = key.split("=", 1)[1]
        diffs += [abs(m.selection_rate[key] - by.loc[g, "sel"]), abs(m.tpr[key] - by.loc[g, "tpr"]),
                  abs(m.fpr[key] - by.loc[g, "fpr"]), abs(m.fnr[key] - by.loc[g, "fnr"])]
    full = rep.dimensions["group"].all_groups
    diffs.append(abs(full.demographic_parity_difference - fl["dpd"]))
    return {"ours_ms": t_ours * 1e3, "ours_full_ms": t_full * 1e3, "fairlearn_ms": t_fl * 1e3,
            "speedup": t_fl / t_ours, "speedup_full": t_fl / t_full, "max_abs_diff": max(diffs),
            "groups": len(m.selection_rate)}


# ---------------------------------------------------------------------------------------------- 3. COMPAS

def _compas_decision(doc: Any) -> dict[str, Any]:
    """The 'model': COMPAS' own score_text, read from the request; high risk = not Low."""
    return {"high_risk": doc["score_text"] != "Low", "decile": doc["decile_score"] / 10}


_compas_app = json_app(_compas_decision)


async def bench_compas(data_dir: Path, report_dir: Path) -> dict[str, Any]:
    import httpx
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    from mlguard.audit.reader import AuditReader
    from mlguard.fairness.report import build_report, render_html, render_json
    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard

    with open(data_dir / "compas" / "compas-two-years-deidentified.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["race"] in ("African-American", "Caucasian")]
    token = "bench-" + os.urandom(8).hex()
    os.environ["MLGUARD_BENCH_TOKEN"] = token
    tmp = Path(tempfile.mkdtemp(prefix="mlguard-compas-"))
    config = {
        "policies": ["eeoc_four_fifths"],
        "admin": {"token_env": "MLGUARD_BENCH_TOKEN"},
        "audit": {"store": f"sqlite:///{tmp}/audit.db", "keyring": str(tmp / "k.keyring"), "durability": "sync"},
        "fairness": {"window_size": 10_000, "intersectional": False},
        "routes": [{"path": "/risk", "protected": {"race": "$.person.race"},
                    "model": {"output": "$.decile", "favorable": "$.high_risk"}}],
    }
    guard = Guard(config, stages=["fairness", "audit"])
    logging.getLogger("mlguard").setLevel(logging.CRITICAL)  # alerts are expected here; keep stdout readable
    app = GuardMiddleware(_compas_app, guard=guard)
    auth = {"authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as c:
        for r in rows:
            resp = await c.post("/risk", json={"person": {"race": r["race"]}, "score_text": r["score_text"],
                                               "decile_score": int(r["decile_score"])})
            if resp.status_code != 200:
                raise RuntimeError(f"guard answered {resp.status_code}")
            fb = await c.post("/mlguard/feedback", headers=auth,
                              json={"audit_id": resp.headers["mlguard-audit-id"],
                                    "label": r["two_year_recid"] == "1"})
            if fb.status_code != 200:
                raise RuntimeError(f"feedback answered {fb.status_code}")
        live = (await c.get("/mlguard/fairness", headers=auth)).json()
    elapsed = time.perf_counter() - t0
    await guard.aclose()
    reader = AuditReader(f"sqlite:///{tmp}/audit.db", tmp / "k.keyring")
    records = list(reader.iter_records())
    reader.close()
    report = build_report(records, thresholds=Thresholds(min_group_size=30), source="COMPAS via guard")
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "compas-report.html").write_text(render_html(report))
    (report_dir / "compas-report.json").write_text(render_json(report))
    route = report["routes"]["/risk"]
    groups = {g["group"]: g for g in route["groups"]}
    y_true = np.array([int(r["two_year_recid"]) for r in rows])
    y_pred = np.array([int(r["score_text"] != "Low") for r in rows])
    race = np.array([r["race"] for r in rows])
    live_m = live["routes"]["0"]["report"]["dimensions"]["race"]["all_groups"]
    return {
        "rows": len(rows), "seconds": elapsed,
        "fpr_aa": groups["race=African-American"]["fpr"], "fpr_cauc": groups["race=Caucasian"]["fpr"],
        "fnr_aa": groups["race=African-American"]["fnr"], "fnr_cauc": groups["race=Caucasian"]["fnr"],
        "dpd_report": route["metrics"]["race"]["all_groups"]["demographic_parity_difference"],
        "eod_report": route["metrics"]["race"]["all_groups"]["equalized_odds_difference"],
        "dpd_live": live_m["demographic_parity_difference"],
        "dpd_fairlearn": float(demographic_parity_difference(y_true, y_pred, sensitive_features=race)),
        "eod_fairlearn": float(equalized_odds_difference(y_true, y_pred, sensitive_features=race)),
        "labelled": route["labelled"], "status": route["status"], "report": str(report_dir / "compas-report.html"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--report-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlguard-fairness-bench")
    args = ap.parse_args()
    runs = [bench_update() for _ in range(3)]
    up = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"window update: {up['update_us']:.2f} us/decision (median of 3 runs of 200,000; target <= 20 us); "
          f"label join {up['label_join_us']:.2f} us")
    sb = bench_stage()
    print(f"stage after_app (update + evaluate {sb['groups']} groups in 3 dimensions + record): "
          f"{sb['after_app_us']:.1f} us/decision")
    vs = bench_vs_fairlearn()
    print(f"metrics, 10,000 decisions, {vs['groups']} groups: mlguard {vs['ours_ms']:.3f} ms "
          f"(full evaluation with LL144 + significance {vs['ours_full_ms']:.3f} ms), fairlearn MetricFrame "
          f"{vs['fairlearn_ms']:.2f} ms -> {vs['speedup']:.0f}x ({vs['speedup_full']:.0f}x full); "
          f"max |difference| {vs['max_abs_diff']:.1e} (target >= 50x, <= 1e-9)")
    c = asyncio.run(bench_compas(args.data, args.report_dir))
    print(f"COMPAS: {c['rows']} rows through the guard + feedback in {c['seconds']:.1f} s; {c['labelled']} labelled")
    print(f"  FPR African-American {c['fpr_aa']:.2%} (ProPublica 44.85%), Caucasian {c['fpr_cauc']:.2%} (23.45%)")
    print(f"  FNR African-American {c['fnr_aa']:.2%} (27.99%), Caucasian {c['fnr_cauc']:.2%} (47.72%)")
    print(f"  demographic parity difference: report {c['dpd_report']:.4f}, live window {c['dpd_live']:.4f}, "
          f"fairlearn {c['dpd_fairlearn']:.4f} (published 0.2402)")
    print(f"  equalized odds difference: report {c['eod_report']:.4f}, fairlearn {c['eod_fairlearn']:.4f} "
          f"(published 0.2139); status {c['status']}; report {c['report']}")


if __name__ == "__main__":
    main()
