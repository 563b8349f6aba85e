"""A fairness status judged against no threshold says so, and the guard warns about it at start.

Before: under [gdpr, eu_ai_act] (no policy sets min_impact_ratio, max_demographic_parity_difference or
max_equalized_odds_difference) the guard started without a word, and ``GET /mlguard/fairness`` and ``mlguard
report fairness`` said a bare ``status: ok`` next to an impact ratio of 0.73: nothing had been checked. The
``MLGuard-Fairness`` header keeps its four values (documented in metrics.py and the README).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from mlguard.fairness.metrics import Thresholds
from mlguard.fairness.report import build_report, render_html
from mlguard.policy import resolve_policies
from tests.fairness.conftest import build, client, make_config

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer test-admin-token"}
THRESHOLD_POLICIES = ("eeoc_four_fifths", "nyc_ll144", "ecoa")
"""Bundled policies that set a threshold: the warning names them (mlguard.fairness.stage.THRESHOLD_POLICIES)."""
NO_THRESHOLD = "no fairness threshold is set"


def _unchecked_config(tmp_path: Any) -> dict[str, Any]:
    """The walkthrough's deployment: [gdpr, eu_ai_act], a route with protected attributes and a decision."""
    cfg = make_config(tmp_path)
    cfg["policies"] = ["gdpr", "eu_ai_act"]
    cfg["retention"] = {"max": "P3Y"}
    return cfg


async def _skewed(c: httpx.AsyncClient) -> httpx.Response:
    """40 men selected at 90%, 40 women at 66%: an impact ratio of about 0.73 (under four-fifths)."""
    r = None
    for i in range(40):
        r = await c.post("/screen", json={"candidate": {"id": f"m{i}", "sex": "Male", "race": "White"},
                                          "points": 90 if i % 10 else 10})
    for i in range(40):
        r = await c.post("/screen", json={"candidate": {"id": f"f{i}", "sex": "Female", "race": "White"},
                                          "points": 90 if i % 3 else 10})
    assert r is not None and r.status_code == 200, r
    return r


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mlguard.fairness" and r.levelno == logging.WARNING and "no fairness threshold" in
            r.getMessage()]


async def test_start_warns_when_the_policies_set_no_threshold(tmp_path: Any, token: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    guard, _, _ = build(_unchecked_config(tmp_path))
    await guard.aclose()
    (message,) = _warnings(caplog)
    assert "/screen" in message and "race, sex" in message and "gdpr, eu_ai_act" in message
    assert all(name in message for name in THRESHOLD_POLICIES)  # which policies to add
    assert "extends" in message and "min_impact_ratio" in message  # or how to set one in an own policy


async def test_no_warning_when_a_policy_sets_a_threshold(tmp_path: Any, token: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    guard, _, _ = build(make_config(tmp_path))  # extends nyc_ll144: min_impact_ratio 0.8
    await guard.aclose()
    assert _warnings(caplog) == []


def test_the_policies_the_warning_names_set_a_threshold() -> None:
    from mlguard.fairness import stage

    assert stage.THRESHOLD_POLICIES == THRESHOLD_POLICIES
    for name in THRESHOLD_POLICIES:
        assert resolve_policies([name]).fairness.has_thresholds, name
    assert not resolve_policies(["gdpr", "eu_ai_act"]).fairness.has_thresholds


async def test_endpoint_says_no_threshold_is_set(tmp_path: Any, token: str) -> None:
    guard, app, _ = build(_unchecked_config(tmp_path))
    async with client(app) as c:
        last = await _skewed(c)
        assert last.headers["mlguard-fairness"] == "ok"  # the header keeps its values
        rep = (await c.get("/mlguard/fairness", headers=AUTH)).json()["routes"]["0"]["report"]
    await guard.aclose()
    ratios = [r["selection_impact_ratio"] for r in rep["dimensions"]["sex"]["impact"]]
    assert min(ratios) < 0.8  # a ratio that a four-fifths check would flag...
    assert rep["status"] == "ok"
    assert rep["thresholds_checked"] == []  # ...but none was checked, and the report says so
    assert NO_THRESHOLD in rep["status_detail"] and "eeoc_four_fifths" in rep["status_detail"]


async def test_endpoint_names_the_thresholds_it_checked(tmp_path: Any, token: str) -> None:
    guard, app, _ = build(make_config(tmp_path))
    async with client(app) as c:
        await _skewed(c)
        rep = (await c.get("/mlguard/fairness", headers=AUTH)).json()["routes"]["0"]["report"]
    await guard.aclose()
    assert rep["thresholds_checked"] == ["min_impact_ratio", "max_demographic_parity_difference"]
    assert rep["status_detail"] is None


def _records(sexes: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    out = []
    i = 0
    for sex, n, selected in sexes:
        for k in range(n):
            i += 1
            out.append({"kind": "exchange", "audit_id": f"a{i}", "ts": f"2026-01-01T00:00:{i % 60:02d}Z",
                        "route": "/screen", "policies": {"ids": ["gdpr", "eu_ai_act"]},
                        "fairness": {"counted": True, "favorable": k < selected, "groups": [f"sex={sex}"],
                                     "score": None}})
    return out


def test_report_says_no_threshold_is_set() -> None:
    effective = resolve_policies(["gdpr", "eu_ai_act"])
    th = Thresholds.from_policy(effective.fairness)
    report = build_report(_records([("Male", 40, 36), ("Female", 40, 26)]), thresholds=th)
    route = report["routes"]["/screen"]
    assert route["status"] == "ok"
    assert route["thresholds_checked"] == [] and NO_THRESHOLD in route["status_detail"]
    assert report["thresholds_checked"] == [] and NO_THRESHOLD in report["status_detail"]
    page = render_html(report)
    assert "ok (no threshold set: nothing checked)" in page and "No threshold set." in page

    checked = build_report(_records([("Male", 40, 36), ("Female", 40, 26)]), thresholds=Thresholds())
    assert checked["routes"]["/screen"]["status_detail"] is None
    assert checked["routes"]["/screen"]["thresholds_checked"] == ["min_impact_ratio"]
    assert "nothing checked" not in render_html(checked)


async def test_report_fairness_says_it_on_its_summary_line(tmp_path: Any, token: str) -> None:
    """The CLI's one line said '/screen ok' for a report whose every threshold was unset."""
    from click.testing import CliRunner

    from mlguard.cli import cli
    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard
    from tests.fairness.conftest import screening_app

    cfg = _unchecked_config(tmp_path)
    cfg["audit"] = {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")}
    guard = Guard(cfg, stages=["fairness", "audit"])
    async with client(GuardMiddleware(screening_app, guard=guard)) as c:
        await _skewed(c)
    await guard.aclose()
    res = CliRunner().invoke(cli, ["report", "fairness", "--store", f"sqlite:///{tmp_path}/audit.db",
                                   "--keyring", str(tmp_path / "k.keyring"), "--out", str(tmp_path / "r.json"),
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "/screen ok (no threshold set: nothing checked)" in res.output
