"""Fairness reports: from record dicts (unit) and from a real audit trail written by the guard (end to end)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner

from mlguard.cli import cli
from mlguard.fairness.metrics import Thresholds
from mlguard.fairness.report import build_report, render_html, render_json
from tests.fairness.conftest import client, make_config, screening_app


def _records() -> list[dict[str, Any]]:
    """200 decisions over time: group A selected 60%, B 30%; labels for all; one unknown; one tiny group."""
    recs: list[dict[str, Any]] = []
    for i in range(200):
        grp = "A" if i % 2 == 0 else "B"
        fav = (i // 2) % 10 < (6 if grp == "A" else 3)
        label = (i % 3) == 0
        aid = f"id{i}"
        recs.append({"kind": "exchange", "audit_id": aid, "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                     "route": "/screen", "policies": {"ids": ["nyc_ll144"]},
                     "fairness": {"status": "ok", "counted": True, "groups": [f"race={grp}"], "favorable": fav,
                                  "score": (i % 100) / 100}})
        recs.append({"kind": "feedback", "audit_id": f"fb{i}", "data": {"decision": aid, "label": label}})
    recs.append({"kind": "exchange", "audit_id": "u", "ts": "2026-01-01T00:04:00Z", "route": "/screen",
                 "fairness": {"counted": True, "groups": ["race=unknown"], "favorable": True, "score": None}})
    recs.append({"kind": "exchange", "audit_id": "t", "ts": "2026-01-01T00:04:01Z", "route": "/screen",
                 "fairness": {"counted": True, "groups": ["race=Tiny"], "favorable": False, "score": None}})
    recs.append({"kind": "oversight", "audit_id": "o", "data": {"action": "stop"}})
    recs.append({"kind": "exchange", "audit_id": "x", "route": "/screen", "fairness": {"counted": False}})
    return recs


def test_report_numbers() -> None:
    rep = build_report(_records(), thresholds=Thresholds(min_group_size=20, exclude_below_share=0.02))
    r = rep["routes"]["/screen"]
    assert r["decisions"] == 202 and r["labelled"] == 200
    groups = {g["group"]: g for g in r["groups"]}
    a, b = groups["race=A"], groups["race=B"]
    assert (a["n"], a["selected"]) == (100, 60) and (b["n"], b["selected"]) == (100, 30)
    exp_fp = sum(1 for i in range(0, 200, 2) if (i // 2) % 10 < 6 and i % 3 != 0)
    exp_neg = sum(1 for i in range(0, 200, 2) if i % 3 != 0)
    assert a["fpr"] == pytest.approx(exp_fp / exp_neg, abs=1e-12)
    race = r["metrics"]["race"]
    assert race["unknown"] == 1
    assert race["eligible"]["demographic_parity_difference"] == pytest.approx(0.3)
    ll = {c["group"]: c for c in r["ll144"]["dimensions"]["race"]["categories"]}
    assert ll["race=B"]["selection_impact_ratio"] == pytest.approx(0.5)
    assert ll["race=B"]["below_four_fifths"] and ll["race=B"]["significant"]
    assert ll["race=Tiny"]["excluded"] and "2%" in ll["race=Tiny"]["justification"]
    assert ll["race=A"]["scoring_rate"] is not None
    assert r["status"] == "violation"
    assert len(r["over_time"]) > 1


def test_html_is_self_contained_and_json_same_numbers() -> None:
    rep = build_report(_records(), thresholds=Thresholds(min_group_size=20))
    page = render_html(rep)
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r'(src|href)="(https?:)?//', page)
    doc = json.loads(render_json(rep))
    assert doc["routes"]["/screen"]["metrics"]["race"]["eligible"]["demographic_parity_difference"] == \
        pytest.approx(0.3)
    assert "60.00%" in page and "30.00%" in page  # the same rates, rendered


@pytest.mark.anyio
async def test_report_cli_over_a_real_audit_trail(tmp_path: Any, token: str, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard

    monkeypatch.delenv("MLGUARD_KEYRING", raising=False)
    cfg = make_config(tmp_path)
    cfg["audit"] = {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring"),
                    "durability": "sync"}
    guard = Guard(cfg, stages=["fairness", "audit"])
    app = GuardMiddleware(screening_app, guard=guard)
    async with client(app) as c:
        for i in range(60):
            sex, pts = ("Male", 90) if i % 2 else ("Female", 40 if i % 4 else 60)
            r = await c.post("/screen", json={"candidate": {"id": f"c{i}", "sex": sex, "race": "Black"},
                                               "points": pts})
            assert r.status_code == 200
            if i % 3 == 0:
                fb = await c.post("/mlguard/feedback", json={"audit_id": r.headers["mlguard-audit-id"],
                                                             "label": i % 2 == 1},
                                  headers={"authorization": f"Bearer {token}"})
                assert fb.status_code == 200, fb.text
    await guard.aclose()
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["report", "fairness", "--store", f"sqlite:///{tmp_path}/audit.db",
                                   "--keyring", str(tmp_path / "k.keyring"), "--out", str(out),
                                   "--format", "json"])
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(out.read_text())
    r = doc["routes"]["/screen"]
    assert r["decisions"] == 60 and r["labelled"] == 20
    groups = {g["group"]: g for g in r["groups"]}
    assert groups["sex=Male"]["selection_rate"] == 1.0
    assert groups["sex=Female"]["selection_rate"] == pytest.approx(0.5)
    html_out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", "fairness", "--store", f"sqlite:///{tmp_path}/audit.db",
                                   "--keyring", str(tmp_path / "k.keyring"), "--out", str(html_out)])
    assert html_out.read_text().startswith("<!doctype html>")
    # the report names the policy each threshold comes from (here the minimum group size: eeoc_four_fifths)
    res = CliRunner().invoke(cli, ["report", "fairness", "--store", f"sqlite:///{tmp_path}/audit.db",
                                   "--keyring", str(tmp_path / "k.keyring"), "--out", str(out),
                                   "--format", "json", "--policy", "nyc_ll144", "--policy", "eeoc_four_fifths"])
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(out.read_text())
    assert doc["threshold_sources"]["min_group_size"] == ["eeoc_four_fifths"]
    assert doc["routes"]["/screen"]["ll144"]["min_group_size_from"] == ["eeoc_four_fifths"]


def _small_group_records() -> list[dict[str, Any]]:
    """race=A: 100 decisions, 77 selected; race=B: 26 decisions (under 30), 2 selected: impact ratio ~0.10."""
    recs: list[dict[str, Any]] = []
    for i in range(126):
        grp, fav = ("A", i < 77) if i < 100 else ("B", i < 102)
        recs.append({"kind": "exchange", "audit_id": f"s{i}", "route": "/screen",
                     "ts": f"2026-03-{1 + i // 24:02d}T{i % 24:02d}:00:00Z", "policies": {"ids": ["eeoc_four_fifths"]},
                     "fairness": {"counted": True, "groups": [f"race={grp}"], "favorable": fav, "score": None}})
    return recs


def _ll144_cells(page: str, group: str) -> list[str]:
    row = re.search(rf"<tr><td>{re.escape(group)}</td>.*?</tr>", page.split("NYC LL144 summary", 1)[1])
    assert row is not None
    return re.findall(r"<td>(.*?)</td>", row.group(0))


def test_small_group_is_not_assessed_and_the_report_says_why() -> None:
    rep = build_report(_small_group_records(), thresholds=Thresholds(min_group_size=30),
                       threshold_sources={"min_group_size": ["eeoc_four_fifths"]})
    ll = rep["routes"]["/screen"]["ll144"]
    b = {c["group"]: c for c in ll["dimensions"]["race"]["categories"]}["race=B"]
    assert b["n"] == 26 and b["selection_impact_ratio"] == pytest.approx(0.0999, abs=1e-3)
    assert b["insufficient"] is True and b["below_four_fifths"] is None  # not "false" beside a 0.10 ratio
    assert ll["min_group_size"] == 30 and ll["min_group_size_from"] == ["eeoc_four_fifths"]
    assert rep["threshold_sources"]["min_group_size"] == ["eeoc_four_fifths"]
    assert rep["threshold_sources"]["significance_alpha"] == ["mlguard default"]
    page = render_html(rep)
    cells = _ll144_cells(page, "race=B")
    assert cells[-3:-1] == ["yes", "n/a (insufficient data)"]  # insufficient, below 4/5
    assert "fewer than 30 decisions (minimum group size, set by eeoc_four_fifths)" in page
    # without --since/--until: the dates of the first and last decision reported, not "start to end"
    assert rep["first_decision"] == "2026-03-01T00:00:00Z" and rep["last_decision"] == "2026-03-06T05:00:00Z"
    assert "period 2026-03-01T00:00:00Z to 2026-03-06T05:00:00Z" in page
    assert "start to end" not in page
    asked = render_html(build_report(_small_group_records(), since="2026-02-01"))
    assert "period 2026-02-01 to 2026-03-06T05:00:00Z (decisions reported from 2026-03-01T00:00:00Z" in asked
