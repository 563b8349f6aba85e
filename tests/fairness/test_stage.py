"""The fairness stage through the middleware: header and record, feedback, alerts, block and resume."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from mlguard.fairness.alerts import AlertSink
from tests.fairness.conftest import build, client, make_config

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer test-admin-token"}


def _cand(i: int, sex: Any, race: Any, points: float, **extra: Any) -> dict[str, Any]:
    return {"candidate": {"id": f"c{i}", "sex": sex, "race": race, **extra}, "points": points}


async def _feed(c: httpx.AsyncClient, n: int, sex: str, race: str, points: float, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        r = await c.post("/screen", json=_cand(i, sex, race, points))
        assert r.status_code == 200, r.text
        ids.append(r.headers["mlguard-audit-id"])
    return ids


async def test_header_record_and_unknown_groups(tmp_path: Any, token: str) -> None:
    guard, app, _ = build(make_config(tmp_path))
    async with client(app) as c:
        r = await c.post("/screen", json=_cand(1, "Female", "Black", 70))
        assert r.status_code == 200
        assert r.headers["mlguard-fairness"] == "insufficient"
        # unexpected types and a missing attribute: counted as unknown, never a crash
        for bad in ({"x": 1}, 12.5, None, True, ["a"]):
            r = await c.post("/screen", json=_cand(2, "Male", bad, 10))
            assert r.status_code == 200
        r = await c.post("/screen", json={"candidate": {"id": "c3"}, "points": 10})
        assert r.status_code == 200
    st = guard.stages[0].routes[0]
    keys = {g.key: g.n for g in st.window.snapshot()}
    assert keys["race=unknown"] == 6
    assert keys["sex=unknown"] == 1
    assert keys["race=Black|sex=Female"] == 1


async def test_record_section_holds_categories_not_values(tmp_path: Any, token: str) -> None:
    guard, _, _ = build(make_config(tmp_path))
    stage = guard.stages[0]
    from types import SimpleNamespace

    from mlguard.types import Outcome

    ex = SimpleNamespace(route=guard.table.routes[0], outcome=Outcome(0.7, True), audit_id="a1",
                         protected={"sex": "Female", "race": "Black"}, subject="S-PLANTED-1",
                         extra_headers={}, record={})
    await stage.after_app(ex)
    sec = ex.record["fairness"]
    assert sec["status"] == "insufficient"
    assert sec["groups"] == ["race=Black", "sex=Female", "race=Black|sex=Female"]
    assert sec["favorable"] is True and sec["score"] == 0.7
    assert "S-PLANTED-1" not in json.dumps(sec)


async def test_feedback_joins_labels_and_validates(tmp_path: Any, token: str) -> None:
    guard, app, events = build(make_config(tmp_path))
    async with client(app) as c:
        ids = await _feed(c, 3, "Female", "Black", 70)
        r = await c.post("/mlguard/feedback", json={"audit_id": ids[0], "label": True}, headers=AUTH)
        assert r.status_code == 200, r.text
        r = await c.post("/mlguard/feedback", json={"subject": "c1", "label": False}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["audit_id"] == ids[1]
        assert (await c.post("/mlguard/feedback", json={"audit_id": "nope", "label": True},
                             headers=AUTH)).status_code == 404
        assert (await c.post("/mlguard/feedback", json={"subject": "zz", "label": True},
                             headers=AUTH)).status_code == 404
        assert (await c.post("/mlguard/feedback", json={"audit_id": ids[0], "label": True})).status_code == 401
        for bad, word in (
            (b"not json", "JSON object"), (b"[1]", "JSON object"), (b'{"audit_id": "x"}', "label"),
            (b'{"audit_id": "x", "label": "yes"}', "true or false"),
            (b'{"label": true}', "exactly one"),
            (b'{"audit_id": "x", "subject": "y", "label": true}', "exactly one"),
            (b'{"audit_id": 5, "label": true}', "audit_id"),
            (b'{"audit_id": "x", "label": true, "z": 1}', "unexpected"),
        ):
            r = await c.post("/mlguard/feedback", content=bad, headers={**AUTH, "content-type": "application/json"})
            assert r.status_code == 422, bad
            assert word in r.json()["detail"]
    st = guard.stages[0].routes[0]
    g = {x.key: x for x in st.window.snapshot()}["sex=Female"]
    assert (g.labelled, g.tp, g.fp) == (2, 1, 1)
    assert [e[0] for e in events.events] == ["feedback", "feedback", "admin_denied"]  # the 401 is recorded too
    assert events.events[0][1] == {"decision": ids[0], "label": True, "route": "/screen"}


async def test_feedback_not_joined_when_audit_fails(tmp_path: Any, token: str) -> None:
    guard, app, events = build(make_config(tmp_path))
    async with client(app) as c:
        ids = await _feed(c, 1, "Female", "Black", 70)
        events.fail = True
        r = await c.post("/mlguard/feedback", json={"audit_id": ids[0], "label": True}, headers=AUTH)
        assert r.status_code == 503
    assert guard.stages[0].routes[0].window.snapshot()[0].labelled == 0


async def test_block_halts_then_admin_resume(tmp_path: Any, token: str) -> None:
    guard, app, events = build(make_config(tmp_path, action="block"))
    async with client(app) as c:
        await _feed(c, 40, "Male", "White", 90)
        for i in range(100, 200):
            r = await c.post("/screen", json=_cand(i, "Female", "Black", 10))
            assert r.status_code == 200  # the decision that reveals the violation is served...
            if r.headers["mlguard-fairness"] == "violation":
                break
        assert r.headers["mlguard-fairness"] == "violation"
        r = await c.post("/screen", json=_cand(1000, "Male", "White", 90))
        assert r.status_code == 503  # ...new ones are stopped
        assert r.headers["content-type"].startswith("application/problem+json")
        assert guard.is_halted(guard.table.routes[0])
        stop = [d for k, d in events.events if k == "oversight"]
        assert stop and stop[0]["action"] == "stop" and stop[0]["reason"] == "fairness_violation"
        # resume without token: 401; audit down: stays stopped
        assert (await c.post("/mlguard/fairness/resume", json={})).status_code == 401
        events.fail = True
        assert (await c.post("/mlguard/fairness/resume", json={}, headers=AUTH)).status_code == 503
        assert guard.is_halted(guard.table.routes[0])
        events.fail = False
        r = await c.post("/mlguard/fairness/resume", json={"route": 0, "reason": "reviewed"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["resumed"][0]["override"] is True
        assert events.events[-1][1]["action"] == "resume"
        # a human override: served although the window still violates, not halted again at once
        r = await c.post("/screen", json=_cand(1001, "Male", "White", 90))
        assert r.status_code == 200
        assert r.headers["mlguard-fairness"] == "violation"
        # resume with a reset clears the window
        r = await c.post("/mlguard/fairness/resume", json={"reset": True}, headers=AUTH)
        assert r.status_code == 200
        assert len(guard.stages[0].routes[0].window) == 0
        assert (await c.post("/mlguard/fairness/resume", json={"route": "x"}, headers=AUTH)).status_code == 422
        assert (await c.post("/mlguard/fairness/resume", json={"route": 7}, headers=AUTH)).status_code == 404


async def test_alert_webhook_retries_and_metrics(tmp_path: Any, token: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    guard, app, _ = build(make_config(tmp_path, action="alert", webhook="http://hook.test/alert"))
    stage = guard.stages[0]
    calls: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        if len(calls) == 1:
            return httpx.Response(500)
        if len(calls) == 2:
            raise httpx.ConnectTimeout("timeout")
        return httpx.Response(204)

    stage.alerts = AlertSink("http://hook.test/alert", timeout_s=1, retries=3, backoff_s=0.01,
                             transport=httpx.MockTransport(handler))
    caplog.set_level(logging.DEBUG, logger="mlguard")
    async with client(app) as c:
        await _feed(c, 40, "Male", "White", 90)
        for i in range(40):
            r = await c.post("/screen", json={"candidate": {"id": f"f{i}", "sex": "Female", "race": "Black",
                                                            "name": "Zebulon Plantedname"}, "points": 10})
        assert r.headers["mlguard-fairness"] == "violation"
        await stage.alerts.drain()
        assert len(calls) == 3 and calls[-1]["status"] == "violation"
        assert stage.alerts.sent == 1
        assert not guard.is_halted(guard.table.routes[0])  # alert does not block
        m = await c.get("/mlguard/metrics", headers=AUTH)
        assert m.status_code == 200
        assert 'mlguard_fairness_status{route="/screen"} 2.0' in m.text
        assert "mlguard_fairness_selection_rate" in m.text
        assert (await c.get("/mlguard/metrics")).status_code == 401
        s = await c.get("/mlguard/fairness", headers=AUTH)
        assert s.status_code == 200
        rep = s.json()["routes"]["0"]["report"]
        assert rep["status"] == "violation"
    logs = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "fairness status changed" in logs
    for planted in ("Zebulon", "Plantedname", "f3"):
        assert planted not in logs


async def test_status_is_reevaluated_every_n_decisions(tmp_path: Any, token: str) -> None:
    guard, app, _ = build(make_config(tmp_path, evaluate_every=5))
    st = guard.stages[0].routes[0]
    async with client(app) as c:
        seen = []
        for i in range(12):
            await c.post("/screen", json=_cand(i, "Female", "Black", 70))
            seen.append(st.report.decisions if st.report else None)
    assert seen == [1, 1, 1, 1, 1, 6, 6, 6, 6, 6, 11, 11]


def test_categories_must_name_a_declared_protected_attribute(tmp_path: Any) -> None:
    from mlguard.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build(make_config(tmp_path, categories={"gender": ["F", "M"]}))
    assert err.value.field == "fairness.categories.gender"


@pytest.mark.anyio
async def test_categories_keep_free_text_out_of_reports_and_metrics(tmp_path: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_TEST_FAIRNESS_TOKEN", "t0k")
    _, mw, _ = build(make_config(tmp_path, categories={"sex": ["F", "M"]}))
    auth = {"authorization": "Bearer t0k"}
    async with client(mw) as c:
        for sex in ("F", "M", "912-45-6789"):
            r = await c.post("/screen", json={"candidate": {"id": "c1", "sex": sex, "race": "A"}, "x": 1})
            assert r.status_code == 200
        report = (await c.get("/mlguard/fairness", headers=auth)).text
        metrics = (await c.get("/mlguard/metrics", headers=auth)).text
    assert "912-45-6789" not in report and "912-45-6789" not in metrics
    assert "sex=other" in report


@pytest.mark.anyio
async def test_undeclared_attributes_are_named_by_keyed_digests(tmp_path: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No categories declared: free text sent in a protected field (a name, an email address) must not become a
    group name in clear in the admin endpoint or the metrics; groups are named by keyed digests, the same value
    always by the same one, also after a restart (the keyring's key)."""
    monkeypatch.setenv("MLGUARD_TEST_FAIRNESS_TOKEN", "t0k")
    planted = "Zebulon Quixotic planted.person@example.com"
    config = make_config(tmp_path, categories={})  # base_dir tmp_path: the keyring goes there
    guard, mw, _ = build(config)
    auth = {"authorization": "Bearer t0k"}
    async with client(mw) as c:
        for sex in (planted, planted, "Female"):
            r = await c.post("/screen", json={"candidate": {"id": "c1", "sex": sex, "race": "Black"}, "x": 1})
            assert r.status_code == 200
        report = (await c.get("/mlguard/fairness", headers=auth)).text
        metrics = (await c.get("/mlguard/metrics", headers=auth)).text
    counts = {g.key: g.n for g in guard.stages[0].routes[0].window.snapshot()}  # type: ignore[attr-defined]
    sexes = sorted((k, n) for k, n in counts.items() if k.startswith("sex="))
    assert sorted(n for _, n in sexes) == [1, 2] and all(k.startswith("sex=~") and len(k) == 15 for k, _ in sexes)
    for text in (report, metrics, str(counts)):
        assert "Zebulon" not in text and "planted.person" not in text and "Female" not in text
        assert "Black" not in text  # race is undeclared too
    assert "sex=~" in report and "sex=~" in metrics
    again, _, _ = build(config)  # a restart: same keyring, same names
    assert again.stages[0].routes[0].window.group_keys({"sex": planted, "race": "Black"}) == \
        guard.stages[0].routes[0].window.group_keys({"sex": planted, "race": "Black"})  # type: ignore[attr-defined]
    assert (tmp_path / "mlguard.keyring").exists()
