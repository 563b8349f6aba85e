"""The fairness monitor's stop and a person's stop are two stops: each answered, counted, alerted and lifted as
itself (mlguard/oversight.py, decide() in mlguard/policy/decision.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlguard.fairness.alerts import AlertSink
from tests.fairness.conftest import build, client, make_config

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer test-admin-token"}
MALE = {"candidate": {"id": "m", "sex": "Male", "race": "White"}, "points": 90}


async def _violate(c: httpx.AsyncClient) -> None:
    """Feed decisions until the window violates (the decision revealing it is still served)."""
    for i in range(40):
        r = await c.post("/screen", json={"candidate": {"id": f"m{i}", "sex": "Male", "race": "White"},
                                          "points": 90})
        assert r.status_code == 200
    for i in range(200):
        r = await c.post("/screen", json={"candidate": {"id": f"f{i}", "sex": "Female", "race": "Black"},
                                          "points": 10})
        assert r.status_code == 200, r.text
        if r.headers["mlguard-fairness"] == "violation":
            return
    raise AssertionError("no violation")


async def _refusals(c: httpx.AsyncClient) -> dict[str, float]:
    resp = await c.get("/mlguard/metrics", headers=AUTH)
    assert resp.status_code == 200
    return {s.labels["reason"]: s.value for fam in text_string_to_metric_families(resp.text)
            for s in fam.samples if s.name == "mlguard_refusals_total"}


async def test_a_fairness_block_answers_as_itself_not_as_a_human_stop(tmp_path: Any, token: str) -> None:
    guard, app, events = build(make_config(tmp_path, action="block"))
    async with client(app) as c:
        await _violate(c)
        r = await c.post("/screen", json=MALE)
        counts = await _refusals(c)
    assert r.status_code == 503
    doc = r.json()
    assert doc["type"].endswith("/fairness-block")
    assert "fairness monitor" in doc["detail"] and "human oversight" not in doc["detail"]
    assert r.headers["mlguard-fairness"] == "violation"
    assert counts.get("fairness-block") == 1 and "halted" not in counts
    assert guard.oversight.stopped_by(0) == ("fairness",)
    stop = next(d for k, d in events.events if k == "oversight")
    assert stop["action"] == "stop" and stop["cause"] == "fairness"


async def test_a_human_stop_still_answers_halted(tmp_path: Any, token: str) -> None:
    _, app, _events = build(make_config(tmp_path, action="block"))
    async with client(app) as c:
        assert (await c.post("/mlguard/routes/0/stop", headers=AUTH)).status_code == 200
        r = await c.post("/screen", json=MALE)
        counts = await _refusals(c)
    assert r.status_code == 503 and r.json()["type"].endswith("/halted")
    assert "human oversight" in r.json()["detail"]
    assert counts.get("halted") == 1 and "fairness-block" not in counts


async def test_fairness_resume_does_not_lift_a_human_stop(tmp_path: Any, token: str) -> None:
    guard, app, events = build(make_config(tmp_path, action="block"))
    async with client(app) as c:
        assert (await c.post("/mlguard/routes/0/stop", headers=AUTH)).status_code == 200
        named = await c.post("/mlguard/fairness/resume", json={"route": 0, "reason": "x"}, headers=AUTH)
        every = await c.post("/mlguard/fairness/resume", json={"reset": True}, headers=AUTH)
        still = await c.post("/screen", json=MALE)
    assert named.status_code == 409
    assert "human oversight" in named.json()["detail"] and "/mlguard/routes/0/resume" in named.json()["detail"]
    assert every.status_code == 200
    assert every.json()["resumed"] == [] and every.json()["skipped"][0]["stopped_by"] == ["human"]
    assert still.status_code == 503 and still.json()["type"].endswith("/halted")
    assert guard.is_halted(guard.table.routes[0])
    assert [d["action"] for k, d in events.events if k == "oversight"] == ["stop"]  # no resume recorded


async def test_both_stops_each_lifted_by_its_own_control(tmp_path: Any, token: str) -> None:
    guard, app, _events = build(make_config(tmp_path, action="block"))
    async with client(app) as c:
        await _violate(c)
        human = await c.post("/mlguard/routes/0/stop", json={"reason": "bias review HR-123"}, headers=AUTH)
        both = await c.post("/screen", json=MALE)
        # the admin (human) resume lifts the person's stop only, and says the monitor's still holds
        admin_resume = await c.post("/mlguard/routes/0/resume", headers=AUTH)
        monitor_only = await c.post("/screen", json=MALE)
        await c.post("/mlguard/routes/0/stop", headers=AUTH)
        fair_resume = await c.post("/mlguard/fairness/resume", json={"route": 0}, headers=AUTH)
        human_only = await c.post("/screen", json=MALE)
        await c.post("/mlguard/routes/0/resume", headers=AUTH)
        served = await c.post("/screen", json=MALE)  # the fairness resume was a recorded override
    assert human.json()["stopped_by"] == ["human", "fairness"]
    # both hold: the monitor's stop is the one named (decide() says why), the record lists both
    assert both.status_code == 503 and both.json()["type"].endswith("/fairness-block")
    assert admin_resume.status_code == 200 and admin_resume.json()["halted"] is True
    assert admin_resume.json()["stopped_by"] == ["fairness"] and "fairness/resume" in admin_resume.json()["detail"]
    assert monitor_only.json()["type"].endswith("/fairness-block")
    entry = fair_resume.json()["resumed"][0]
    assert entry["lifted"] is True and entry["halted"] is True and entry["stopped_by"] == ["human"]
    assert human_only.status_code == 503 and human_only.json()["type"].endswith("/halted")
    assert served.status_code == 200
    assert not guard.is_halted(guard.table.routes[0])


async def test_stop_reason_is_audited_bounded_and_never_logged(tmp_path: Any, token: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mlguard")
    guard, app, events = build(make_config(tmp_path))
    async with client(app) as c:
        too_long = await c.post("/mlguard/routes/0/stop", json={"reason": "x" * 501}, headers=AUTH)
        not_text = await c.post("/mlguard/routes/0/stop", json={"reason": 5}, headers=AUTH)
        unknown = await c.post("/mlguard/routes/0/stop", json={"why": "x"}, headers=AUTH)
        not_json = await c.post("/mlguard/routes/0/stop", content=b"stop!", headers=AUTH)
        assert not guard.is_halted(guard.table.routes[0]) and events.events == []  # nothing changed
        ok = await c.post("/mlguard/routes/0/stop", json={"reason": "bias review HR-123 (Zebulon Planted)"},
                          headers=AUTH)
        bare = await c.post("/mlguard/routes/0/resume", headers=AUTH)
    for r in (too_long, not_text, unknown, not_json):
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "500 characters" in too_long.json()["detail"]
    assert ok.status_code == 200 and bare.status_code == 200
    assert events.events[0] == ("oversight", {"action": "stop", "cause": "human", "route": "/screen",
                                              "route_index": 0, "by": "admin",
                                              "reason": "bias review HR-123 (Zebulon Planted)"})
    assert "reason" not in events.events[1][1]  # no reason given: none recorded
    logs = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "Zebulon" not in logs and "HR-123" not in logs


async def test_alert_says_the_route_was_halted_and_text_log_says_what_happened(
        tmp_path: Any, token: str, caplog: pytest.LogCaptureFixture) -> None:
    guard, app, _ = build(make_config(tmp_path, action="block", webhook="http://hook.test/alert"))
    stage = guard.stages[0]
    calls: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(204)

    stage.alerts = AlertSink("http://hook.test/alert", transport=httpx.MockTransport(handler))
    caplog.set_level(logging.WARNING, logger="mlguard.fairness.alerts")
    async with client(app) as c:
        await _violate(c)
        await stage.alerts.drain()
    violation = [p for p in calls if p["status"] == "violation"]
    assert violation and violation[0]["halted"] is True and violation[0]["stopped_by"] == ["fairness"]
    # what a plain text log (uvicorn's default formatter, no JSON formatter, no extra fields) shows
    plain = logging.Formatter("%(levelname)s %(message)s")
    lines = [plain.format(r) for r in caplog.records if r.name == "mlguard.fairness.alerts"]
    line = next(x for x in lines if "-> violation" in x)
    assert "/screen" in line and "route halted" in line and "breaches:" in line
    for planted in ("Female", "Black", "f3"):  # no group name, no input value
        assert planted not in line
