"""Impact ratios are measured against the most selected group that can be judged, as a hand computation does.

Before: the reference (most selected) group was chosen among every group above the 2% exclusion share, so a group
under ``min_group_size`` (``race=White|sex=other``, n=7, marked insufficient) or the ``other`` bucket could be it:
every real group's ratio fell (Black|Female 0.2917 where pandas gives 0.3036 against White|Male), a route was
halted on "White (n=39) IR 0.7265" measured against Hispanic n=15, and an alert fired on Female against ``other``.
The report's periods judged every group of a few hundred decisions (``unknown``, groups of one), so each read
"violation" with a lowest ratio of 0.0. Each figure here is checked against pandas on the same rows.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

from mlguard.fairness.metrics import Thresholds, evaluate
from mlguard.fairness.report import build_report
from mlguard.fairness.window import FairnessWindow, GroupSnapshot
from tests.fairness.conftest import build, client, make_config

CATEGORIES = {"sex": ["Female", "Male"], "race": ["Asian", "Black", "Hispanic", "White"]}
EEOC = Thresholds(min_impact_ratio=0.8, min_group_size=30, exclude_below_share=0.0)
LL144 = Thresholds(min_impact_ratio=0.8, min_group_size=30, exclude_below_share=0.02)

# (sex, race, n, selected): 3,000 decisions. "Nonbinary" and "X" are not declared: they count as "other".
CELLS = [
    ("Male", "White", 400, 200), ("Female", "White", 380, 175), ("Male", "Black", 350, 140),
    ("Female", "Black", 360, 126), ("Male", "Asian", 420, 190), ("Female", "Asian", 400, 170),
    ("Male", "Hispanic", 8, 8), ("Female", "Hispanic", 7, 6),  # race=Hispanic n=15: insufficient, 93% selected
    ("Nonbinary", "White", 7, 7),  # race=White|sex=other: n=7, all selected
    ("X", "Black", 40, 36), ("X", "Asian", 30, 27),  # sex=other n=77 (2.6%), 91% selected
    (None, "White", 300, 150), ("Male", None, 298, 100),  # unknown
]


def _rows(seed: int = 7) -> pd.DataFrame:
    rows = [{"sex": s, "race": r, "pred": k < sel} for s, r, n, sel in CELLS for k in range(n)]
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    assert len(df) == 3000
    return df


def _window(df: pd.DataFrame) -> FairnessWindow:
    w = FairnessWindow(["sex", "race"], size=10_000, categories=CATEGORIES)
    for rec in df.itertuples():
        w.add({"sex": rec.sex, "race": rec.race}, bool(rec.pred))
    return w


def _pandas_ratios(df: pd.DataFrame, th: Thresholds
                   ) -> dict[str, tuple[str | None, dict[str, float | None], set[str]]]:
    """Per dimension, straight from the rows: the reference group, each known group's selection impact ratio, and
    the eligible groups (known, declared, at least min_group_size, at least the exclusion share)."""
    d = df.copy()
    for col in ("sex", "race"):
        d[col] = d[col].map(lambda v, c=col: "unknown" if pd.isna(v) else v if v in CATEGORIES[c] else "other")
    d["s"] = "sex=" + d["sex"]
    d["r"] = "race=" + d["race"]
    d["sr"] = d["s"] + "|" + d["r"]
    out: dict[str, tuple[str | None, dict[str, float | None], set[str]]] = {}
    for dim, col in (("sex", "s"), ("race", "r"), ("sex|race", "sr")):
        g = d.groupby(col)["pred"].agg(["size", "mean"])
        g["unknown"] = g.index.str.contains("=unknown")
        g["other"] = g.index.str.contains("=other")
        g["excluded"] = g["size"] / len(d) < th.exclude_below_share
        eligible = g[~g["unknown"] & ~g["other"] & ~g["excluded"] & (g["size"] >= th.min_group_size)]
        ref = str(eligible["mean"].idxmax()) if len(eligible) else None
        best = float(eligible["mean"].max()) if len(eligible) else math.nan
        ratios = {str(k): (None if row["excluded"] or not best > 0 else float(row["mean"] / best))
                  for k, row in g.iterrows() if not row["unknown"]}
        out[dim] = (ref, ratios, {str(k) for k in eligible.index})
    return out


@pytest.mark.parametrize("th", [EEOC, LL144], ids=["eeoc", "ll144"])
def test_impact_ratios_equal_pandas_against_the_most_selected_eligible_group(th: Thresholds) -> None:
    df = _rows()
    report = evaluate(_window(df).snapshot(), ["sex", "race", "sex|race"], th)
    expected = _pandas_ratios(df, th)
    lowest = []
    for dim, (ref, ratios, eligible) in expected.items():
        d = report.dimensions[dim]
        got = {r.group: r.selection_impact_ratio for r in d.impact}
        assert set(got) == set(ratios)
        for key, value in ratios.items():
            if value is None:
                assert got[key] is None, key
            else:
                assert got[key] == pytest.approx(value, abs=1e-12), key
        assert d.reference == ref, dim
        assert {r.group for r in d.impact if r.eligible} == eligible, dim
        lowest.append(min(cast(float, ratios[k]) for k in eligible))
    assert expected["sex|race"][0] == "sex=Male|race=White"  # not the n=7 White|other, 100% selected
    assert expected["race"][0] == "race=White" and expected["sex"][0] == "sex=Male"
    # the user's kind of figure: Black|Female against White|Male, 0.35 / 0.5
    black_f = next(r for r in report.dimensions["sex|race"].impact if r.group == "sex=Female|race=Black")
    assert black_f.selection_impact_ratio == pytest.approx(0.7)
    assert report.summary()["min_impact_ratio"] == pytest.approx(min(lowest), abs=1e-12)


def test_no_eligible_group_no_ratio() -> None:
    snap = [GroupSnapshot("race=White", "race", False, n=12, selected=6),
            GroupSnapshot("race=other", "race", False, n=80, selected=70),
            GroupSnapshot("race=unknown", "race", True, n=50, selected=50)]
    d = evaluate(snap, ["race"], EEOC).dimensions["race"]
    assert all(r.selection_impact_ratio is None and not r.below_four_fifths for r in d.impact)
    assert d.reference is None and d.status == "insufficient"


def test_a_tiny_group_neither_halts_nor_sets_the_ratio() -> None:
    """The halted route: White (n=39) measured against Hispanic (n=15, insufficient) read 0.7265, a violation."""
    snap = [GroupSnapshot("race=White", "race", False, n=39, selected=26),
            GroupSnapshot("race=Black", "race", False, n=40, selected=28),
            GroupSnapshot("race=Hispanic", "race", False, n=15, selected=14)]
    rep = evaluate(snap, ["race"], EEOC)
    d = rep.dimensions["race"]
    rows = {r.group: r for r in d.impact}
    assert rows["race=White"].selection_impact_ratio == pytest.approx((26 / 39) / (28 / 40), abs=1e-12)
    assert rep.status == "ok" and d.breaches == []
    assert d.reference == "race=Black"
    assert rows["race=Hispanic"].insufficient and not rows["race=Hispanic"].eligible
    assert rep.summary()["min_impact_ratio"] == pytest.approx((26 / 39) / (28 / 40), abs=1e-12)


def test_breach_names_its_reference() -> None:
    snap = [GroupSnapshot("sex=Female", "sex", False, n=31, selected=10),
            GroupSnapshot("sex=Male", "sex", False, n=40, selected=30),
            GroupSnapshot("sex=other", "sex", False, n=60, selected=60)]
    d = evaluate(snap, ["sex"], EEOC).dimensions["sex"]
    assert [b["group"] for b in d.breaches] == ["sex=Female"]
    assert d.breaches[0]["value"] == pytest.approx((10 / 31) / (30 / 40), abs=1e-12)
    assert d.breaches[0]["reference"] == "sex=Male"


@pytest.mark.anyio
async def test_live_route_is_not_halted_against_the_other_bucket(tmp_path: Any, token: str) -> None:
    """Through the stage (block action): status, gauges and the admin endpoint all measure against White."""
    # categories race: [Black, White]; the window judged once, on the last of the 50 decisions (the first is
    # judged alone), so no half-sent window can halt the route first
    guard, app, events = build(make_config(tmp_path, action="block", evaluate_every=49))
    auth = {"authorization": f"Bearer {token}"}
    people = [("Female", "White", 10, 5), ("Male", "White", 10, 5), ("Female", "Black", 10, 4),
              ("Male", "Black", 10, 5), ("Female", "Hispanic", 5, 5), ("Male", "Hispanic", 5, 5)]
    async with client(app) as c:
        i = 0
        for sex, race, n, sel in people:
            for k in range(n):
                i += 1
                r = await c.post("/screen", json={"candidate": {"id": f"c{i}", "sex": sex, "race": race},
                                                  "points": 90 if k < sel else 10})
                assert r.status_code == 200, r.text
        assert r.headers["mlguard-fairness"] == "ok"
        rep = (await c.get("/mlguard/fairness", headers=auth)).json()["routes"]["0"]
        metrics = (await c.get("/mlguard/metrics", headers=auth)).text
    await guard.aclose()
    assert not rep["halted"] and not [e for e in events.events if e[0] == "oversight"]
    race = rep["report"]["dimensions"]["race"]
    assert race["reference"] == "race=White"  # race=other (Hispanic, undeclared) selected 100%: not a category
    ratios = {r["group"]: r["selection_impact_ratio"] for r in race["impact"]}
    assert ratios["race=Black"] == pytest.approx(0.9)
    line = next(x for x in metrics.splitlines() if x.startswith("mlguard_fairness_metric{")
                and 'metric="impact_ratio"' in x and 'group="race=Black"' in x and 'dimension="race"' in x)
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(0.9)
    # no impact-ratio sample for the catch-all, which no threshold judges (an alert "< 0.8" would fire on it)
    assert not [x for x in metrics.splitlines() if x.startswith("mlguard_fairness_metric{")
                and 'metric="impact_ratio"' in x and 'group="race=other"' in x]


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"kind": "exchange", "audit_id": f"a{i}", "ts": f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:"
             f"{i % 60:02d}Z", "route": "/r",
             "fairness": {"counted": True, "favorable": bool(r.pred), "score": None, "groups": [f"race={r.race}"]}}
            for i, r in enumerate(rows.itertuples())]


def test_report_periods_judge_eligible_groups_only() -> None:
    """3,000 decisions, 12 periods of 250, each with unknowns, a group of one never selected and one selected."""
    rng = np.random.default_rng(11)
    # per period: (race, n, selected)
    period = [("A", 120, 60), ("B", 75, 36), ("C", 46, 21), ("unknown", 7, 0), ("Tiny", 1, 0), ("Solo", 1, 1)]
    parts = []
    for _ in range(12):
        rows = pd.DataFrame([{"race": r, "pred": k < sel} for r, n, sel in period for k in range(n)])
        parts.append(rows.iloc[rng.permutation(len(rows))])
    df = pd.concat(parts, ignore_index=True)
    rep = build_report(_records(df), thresholds=EEOC)
    periods = rep["routes"]["/r"]["over_time"]
    assert len(periods) == 12
    for k, p in enumerate(periods):
        part = df.iloc[k * 250:(k + 1) * 250]
        g = part[part["race"] != "unknown"].groupby("race")["pred"].agg(["size", "mean"])
        g = g[g["size"] >= EEOC.min_group_size]
        d = p["dimensions"]["race"]
        assert d["min_impact_ratio"] == pytest.approx(g["mean"].min() / g["mean"].max(), abs=1e-12)
        assert d["demographic_parity_difference"] == pytest.approx(g["mean"].max() - g["mean"].min(), abs=1e-12)
        assert sorted(d["selection_rate"]) == sorted("race=" + g.index)
        assert p["status"] == "ok"  # every ratio over 0.9: nothing breached
        assert d["reference"] == "race=" + g["mean"].idxmax() == "race=A"
        assert d["detail"] is None


def test_report_period_with_nothing_eligible_says_so() -> None:
    df = pd.DataFrame({"race": ["unknown"] * 40 + ["Tiny"] * 20 + ["A", "B"] * 30,
                       "pred": [True] * 40 + [False] * 20 + [True, False] * 30})
    periods = build_report(_records(df), thresholds=EEOC)["routes"]["/r"]["over_time"]
    assert [p["decisions"] for p in periods] == [60, 60]
    first = periods[0]["dimensions"]["race"]
    assert first["min_impact_ratio"] is None and first["selection_rate"] == {}
    assert first["reference"] is None and "no group is eligible" in first["detail"]
    assert periods[1]["dimensions"]["race"]["min_impact_ratio"] == pytest.approx(0.0)
