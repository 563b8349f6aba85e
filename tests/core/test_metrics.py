"""``GET {admin prefix}/metrics``: token-protected, always there when admin is on, and exact counts per outcome.

Each guarded exchange must be counted exactly once whatever happened to it (served, refused by a policy decision,
rejected input, the app raising, the client leaving), and the state gauges of every stage must be present.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlguard.errors import PIIError
from mlguard.exchange import Exchange
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.stage import BaseStage
from mlguard.testing import receive_body
from mlguard.types import Finding
from tests.core.conftest import RecordingApp, base_config, client

pytestmark = pytest.mark.anyio

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OK = {"applicant": {"id": "A-1", "sex": "Female"}, "features": {"age": 41}}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)


def parse(text: str) -> Series:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def total(series: Series, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in series.items() if n == name and want <= lab)


async def scrape(c: httpx.AsyncClient) -> Series:
    resp = await c.get("/mlguard/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(resp.text)


class FindingStage(BaseStage):
    """A stand-in PII stage: reports the findings the request asks for, fails when it says ``fail``."""

    name = "pii"

    async def before_app(self, ex: Exchange) -> None:
        doc = ex.document if isinstance(ex.document, dict) else {}
        if doc.get("fail"):
            raise PIIError("engine unavailable")
        for entity, operator in doc.get("plant", []):
            ex.findings.append(Finding(entity, "$.x", None, None, "test", 1.0, operator))


class RaisingApp(RecordingApp):
    """RecordingApp, except that a body containing ``boom`` makes it raise."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = await receive_body(receive)
        if b"boom" in body:
            raise RuntimeError("the app failed")

        async def replay() -> Any:
            return {"type": "http.request", "body": body, "more_body": False}

        await super().__call__(scope, replay, send)


def core_guard(tmp_path: Path, app: Any = None, **overrides: Any) -> tuple[GuardMiddleware, Any]:
    cfg = base_config(tmp_path, fairness={"enabled": False}, **overrides)
    guard = Guard(cfg, stages=[])
    inner = app if app is not None else RecordingApp()
    return GuardMiddleware(inner, guard=guard), inner


async def test_metrics_need_the_token_and_exist_without_fairness(tmp_path: Path) -> None:
    mw, app = core_guard(tmp_path)
    assert not any(s.name == "fairness" for s in mw.guard.stages)
    async with client(mw) as c:
        assert (await c.get("/mlguard/metrics")).status_code == 401
        wrong = await c.get("/mlguard/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert (await c.post("/mlguard/metrics", headers=AUTH)).status_code == 405
        series = await scrape(c)
    assert value(series, "mlguard_route_halted", route="/predict") == 0.0
    assert not app.called


async def test_no_metrics_endpoint_when_admin_is_off(tmp_path: Path) -> None:
    mw, app = core_guard(tmp_path, admin={"enabled": False})
    async with client(mw) as c:
        resp = await c.get("/mlguard/metrics", headers=AUTH)
    assert resp.json() == {"score": 0.7, "approved": True}  # the app answered: the guard has no admin here
    assert app.called


async def test_every_outcome_is_counted_exactly_once(tmp_path: Path) -> None:
    app = RaisingApp()
    mw, _ = core_guard(tmp_path, app=app)
    mw.guard.stages.append(FindingStage())
    bad_json = {"content": b'{"applicant": ', "headers": {"content-type": "application/json"}}
    async with client(mw) as c:
        for _ in range(2):
            assert (await c.post("/predict", json=OK)).status_code == 200
        planted = {**OK, "plant": [["PERSON", "replace"], ["PERSON", "replace"], ["EMAIL_ADDRESS", "mask"]]}
        assert (await c.post("/predict", json=planted)).status_code == 200
        for _ in range(2):
            assert (await c.post("/predict", **bad_json)).status_code == 400  # type: ignore[arg-type]
        wrong_type = await c.post("/predict", content=b"a=1", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 415
        assert (await c.post("/predict", json={**OK, "fail": True})).status_code == 503
        with pytest.raises(RuntimeError):
            await c.post("/predict", json={**OK, "boom": True})
        assert (await c.post("/mlguard/routes/0/stop", headers=AUTH)).status_code == 200
        assert (await c.post("/predict", json=OK)).status_code == 503
        assert (await c.post("/mlguard/routes/0/resume", headers=AUTH)).status_code == 200
        await _disconnecting_request(mw)
        assert (await c.post("/elsewhere", json=OK)).status_code == 200  # not guarded: not counted
        series = await scrape(c)

    def requests(outcome: str, status_class: str) -> float | None:
        return value(series, "mlguard_requests_total", route="/predict", method="POST", outcome=outcome,
                     status_class=status_class)

    assert requests("served", "2xx") == 3
    assert requests("rejected", "4xx") == 3
    assert requests("refused", "5xx") == 2
    assert requests("app_error", "5xx") == 1
    assert requests("disconnected", "4xx") == 1
    assert total(series, "mlguard_requests_total") == 10
    assert value(series, "mlguard_refusals_total", route="/predict", reason="malformed-body") == 2
    assert value(series, "mlguard_refusals_total", route="/predict", reason="unsupported-media-type") == 1
    assert value(series, "mlguard_refusals_total", route="/predict", reason="stage-failed") == 1
    assert value(series, "mlguard_refusals_total", route="/predict", reason="halted") == 1
    assert total(series, "mlguard_refusals_total") == 5
    assert value(series, "mlguard_redactions_total", route="/predict", entity="PERSON", operator="replace") == 2
    assert value(series, "mlguard_redactions_total", route="/predict", entity="EMAIL_ADDRESS", operator="mask") == 1
    assert value(series, "mlguard_stage_failures_total", stage="pii", phase="before_app", error="PIIError") == 1
    assert value(series, "mlguard_request_duration_seconds_count", route="/predict") == 10
    assert value(series, "mlguard_overhead_seconds_count", route="/predict") == 10
    # before_app ran for the exchanges whose body parsed (3 served, failed stage, app error, halted); finish
    # runs for every exchange.
    assert value(series, "mlguard_stage_duration_seconds_count", stage="pii", phase="before_app") == 6
    assert value(series, "mlguard_stage_duration_seconds_count", stage="pii", phase="after_app") == 3
    assert value(series, "mlguard_stage_duration_seconds_count", stage="pii", phase="finish") == 10
    assert value(series, "mlguard_route_halted", route="/predict") == 0.0


async def _disconnecting_request(mw: GuardMiddleware) -> None:
    """The client sends half a body, then leaves."""
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": b'{"applicant"', "more_body": True},
                                      {"type": "http.disconnect"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("c", 1)}
    await mw(scope, receive, send)
    assert sent == []


async def test_two_guards_in_one_process_keep_their_own_counts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mw_a, _ = core_guard(tmp_path / "a")
    mw_b, _ = core_guard(tmp_path / "b")
    twice = GuardMiddleware(RecordingApp(), guard=mw_a.guard)  # a second middleware on guard A shares its metrics
    async with client(mw_a) as a, client(mw_b) as b, client(twice) as a2:
        await a.post("/predict", json=OK)
        await a2.post("/predict", json=OK)
        await b.post("/predict", json=OK)
        sa, sb = await scrape(a), await scrape(b)
    assert total(sa, "mlguard_requests_total") == 2
    assert total(sb, "mlguard_requests_total") == 1


# ---------------------------------------------------------------------- every stage built

FEATURES = ["income", "debt", "years"]


def _model() -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    return LogisticRegression().fit(x, y), x


async def test_every_stage_reports_its_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _model()
    mod = types.ModuleType("mlguard_metrics_model")
    mod.MODEL = model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlguard_metrics_model", mod)
    (tmp_path / "bg.csv").write_text(",".join(FEATURES) + "\n" + "\n".join(",".join(f"{v:.4f}" for v in r)
                                                                        for r in x[:50]) + "\n")
    cfg = base_config(tmp_path, explain={"execution": "deferred"},
                      fairness={"window_size": 100, "evaluate_every": 1})
    cfg["routes"][0].update({
        "pii": {"$.applicant.name": "PERSON", "$.applicant.email": "EMAIL_ADDRESS", "$.applicant.id": "keep"},
        "scan_undeclared": False,
        "model": {"object": "mlguard_metrics_model:MODEL", "features": "$.features", "feature_order": FEATURES,
                  "output": "$.score", "favorable": "$.approved", "background": str(tmp_path / "bg.csv")},
    })
    guard = Guard(cfg)
    assert [s.name for s in guard.stages] == ["pii", "explain", "fairness", "audit"]

    async def scoring(scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        feats = json.loads(msg["body"])["features"]
        p = float(model.predict_proba(np.array([[feats[n] for n in FEATURES]]))[0, 1])
        body = json.dumps({"score": p, "approved": p >= 0.5}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    mw = GuardMiddleware(scoring, guard=guard)
    planted = "Zebulon Metricsplant"
    async with client(mw) as c:
        for i in range(4):
            doc = {"applicant": {"id": f"A-{i}", "sex": "Female" if i % 2 else "Male", "name": planted,
                                 "email": "zeb@metricsplant.com"},
                   "features": {"income": 1.0 - i, "debt": 0.5, "years": 2.0}}
            assert (await c.post("/predict", json=doc)).status_code == 200
        resp = await c.get("/mlguard/metrics", headers=AUTH)
        series = parse(resp.text)
        await guard.aclose()
        after_close = await scrape(c)
    assert planted not in resp.text and "metricsplant" not in resp.text
    assert all(name.startswith("mlguard_") for name, _ in series)
    assert value(series, "mlguard_requests_total", route="/predict", method="POST", outcome="served",
                 status_class="2xx") == 4
    assert value(series, "mlguard_redactions_total", route="/predict", entity="PERSON", operator="replace") == 4
    assert total(series, "mlguard_redactions_total", entity="EMAIL_ADDRESS") == 4
    for stage, phase in [("pii", "before_app"), ("explain", "after_app"), ("fairness", "after_app"),
                         ("audit", "finish")]:
        assert value(series, "mlguard_stage_duration_seconds_count", stage=stage, phase=phase) == 4
    assert value(series, "mlguard_explain_deferred_total") == 4
    assert value(series, "mlguard_explain_queue_full_total") == 0
    depth = value(series, "mlguard_explain_queue_depth")
    assert depth is not None and 0 <= depth <= 4
    queued = value(series, "mlguard_audit_queue_depth")  # deferred explanations' events may be on their way
    assert queued is not None and queued >= 0
    assert value(after_close, "mlguard_audit_queue_depth") == 0  # closing drains the queue
    records = value(series, "mlguard_audit_records_total")
    assert records is not None and records >= 4  # the 4 exchanges, and the deferred explanations' events
    assert value(series, "mlguard_audit_gaps_total") == 0
    assert value(series, "mlguard_audit_errors_total") == 0
    since = value(series, "mlguard_audit_seconds_since_checkpoint")
    assert since is not None and since >= 0
    assert value(series, "mlguard_fairness_status", route="/predict") is not None
    assert value(series, "mlguard_fairness_window_decisions", route="/predict") == 4
    assert value(series, "mlguard_route_halted", route="/predict") == 0
    # closing the guard signs a final checkpoint: the counter moves, read from the same registry
    checkpoints = value(series, "mlguard_audit_checkpoints_total")
    assert checkpoints is not None
    assert value(after_close, "mlguard_audit_checkpoints_total") == checkpoints + 1
