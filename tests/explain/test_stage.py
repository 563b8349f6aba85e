"""The explain stage through GuardMiddleware: on exactly the input the app received, attached, sealed, served."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest

from mlguard.errors import ConfigError
from mlguard.exchange import Exchange
from mlguard.explain.stage import ExplainStage
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.stage import BaseStage
from mlguard.testing import receive_body

pytestmark = pytest.mark.anyio
TOKEN = "test-admin-token"
CATALOG = {"income": "Income insufficient for amount of credit requested",
           "debt": "Excessive obligations in relation to income",
           "years_employed": "Length of employment", "late_payments": "Delinquent past or present credit obligations",
           "age": "Age"}  # must never be used: a prohibited basis under ecoa


class ModelApp:
    """A raw ASGI model endpoint: scores the features it received and records every body."""

    def __init__(self, model: Any, features: list[str], threshold: float = 0.5) -> None:
        self.model, self.features, self.threshold = model, features, threshold
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = await receive_body(receive)
        doc = json.loads(body)
        self.bodies.append(doc)
        feats = doc.get("features") or {}
        try:
            row = np.array([[float(feats[n]) for n in self.features]])
            score = float(self.model.predict_proba(row)[0, 1])
            out: dict[str, Any] = {"score": score, "approved": score >= self.threshold}
        except (KeyError, TypeError, ValueError):
            out = {"score": None, "approved": None}
        payload = json.dumps(out).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


class Rewriter(BaseStage):
    """Stands in for a PII stage that generalises a value: the app must get, and be explained on, the copy."""

    name = "pii"

    async def before_app(self, ex: Exchange) -> None:
        doc = json.loads(json.dumps(ex.document))
        doc["features"]["income"] = 42.0
        ex.set_document(doc)


def config(data: Any, model: Any, tmp_path: Path, *, policies: list[str] | None = None,
           explain: dict[str, Any] | None = None, **model_opts: Any) -> dict[str, Any]:
    return {
        "policies": policies or ["ecoa"],
        "retention": {"max": "P2Y3M"},  # gdpr asks the deployment to set one; ecoa's floor is 25 months
        "audit": {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")},
        "explain": {"reason_catalog": CATALOG, **(explain or {})},
        "routes": [{"path": "/predict", "subject": "$.applicant.id", "protected": {"sex": "$.applicant.sex"},
                    "model": {"object": model, "features": "$.features", "feature_order": data.features,
                              "output": "$.score", "favorable": "$.approved",
                              "background_rows": data.rows(0, 100), **model_opts}}],
    }


@pytest.fixture
def build(data: Any, models: dict[str, Any], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[GuardMiddleware, ModelApp, ExplainStage]]:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)

    def _build(model: str = "gbc", app_model: Any = None, **kw: Any
               ) -> tuple[GuardMiddleware, ModelApp, ExplainStage]:
        m = models[model] if isinstance(model, str) else model
        guard = Guard(config(data, m, tmp_path, **kw), stages=["explain"])
        app = ModelApp(app_model if app_model is not None else m, data.features)
        stage = next(s for s in guard.stages if s.name == "explain")
        assert isinstance(stage, ExplainStage)
        return GuardMiddleware(app, guard=guard), app, stage

    return _build


def client(asgi: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t")


def request(values: list[float], data: Any, **extra: Any) -> dict[str, Any]:
    return {"applicant": {"id": "A-1", "sex": "F"}, "features": dict(zip(data.features, values, strict=True)),
            **extra}


def _approved_and_refused(models: dict[str, Any], data: Any) -> tuple[list[float], list[float]]:
    scores = models["gbc"].predict_proba(data.x)[:, 1]
    return [float(v) for v in data.x[int(np.argmax(scores))]], [float(v) for v in data.x[int(np.argmin(scores))]]


async def test_explanation_is_attached_and_additive(build: Any, data: Any, models: dict[str, Any]) -> None:
    mw, _app, _stage = build()
    good, _ = _approved_and_refused(models, data)
    async with client(mw) as c:
        resp = await c.post("/predict", json=request(good, data))
    assert resp.status_code == 200
    body = resp.json()
    exp = body["explanation"]
    assert body["approved"] is True and "reasons" not in exp
    assert exp["method"] == "shap.TreeExplainer" and exp["output"] == "probability"
    assert set(exp["contributions"]) == set(data.features)
    assert abs(exp["base_value"] + sum(exp["contributions"].values()) - body["score"]) < 1e-6
    assert abs(exp["output_value"] - body["score"]) < 1e-6
    assert [t["feature"] for t in exp["top"]] == sorted(exp["contributions"],
                                                        key=lambda f: -abs(exp["contributions"][f]))[:5]
    ident = exp["identity"]
    assert ident["model"]["class"].endswith("GradientBoostingClassifier") and len(ident["model"]["sha256"]) == 64
    assert ident["explainer"]["name"] == "shap.TreeExplainer"
    assert ident["explainer"]["model_output"] == "probability"
    assert len(ident["background"]["sha256"]) == 64
    assert "inputs" not in exp  # the response never echoes input values
    assert int(resp.headers["content-length"]) == len(resp.content)


async def test_explained_on_exactly_the_redacted_input_the_app_received(build: Any, data: Any,
                                                                         models: dict[str, Any]) -> None:
    mw, app, stage = build()
    mw.guard.stages.insert(0, Rewriter())
    values = [float(v) for v in data.x[5]]
    async with client(mw) as c:
        resp = await c.post("/predict", json=request(values, data))
    received = app.bodies[-1]
    assert received["features"]["income"] == 42.0 != values[0]
    assert "sex" not in received["applicant"]  # ecoa: protected attributes never reach the model
    entry = stage.store.get(resp.headers["mlguard-audit-id"])
    assert entry is not None
    assert entry.private["inputs"] == received["features"]
    exp = resp.json()["explanation"]
    x = np.array([[received["features"][n] for n in data.features]])
    expected = float(models["gbc"].predict_proba(x)[0, 1])
    assert abs(exp["base_value"] + sum(exp["contributions"].values()) - expected) < 1e-6


async def test_adverse_decision_gets_reasons_never_a_prohibited_basis(build: Any, data: Any,
                                                                       models: dict[str, Any]) -> None:
    mw, _app, stage = build()
    _, bad = _approved_and_refused(models, data)
    async with client(mw) as c:
        resp = await c.post("/predict", json=request(bad, data))
    body = resp.json()
    assert body["approved"] is False
    reasons = body["explanation"]["reasons"]
    assert 1 <= len(reasons) <= 4
    assert all(r["feature"] != "age" and r["contribution"] < 0 for r in reasons)
    assert [r["text"] for r in reasons] == [CATALOG[r["feature"]] for r in reasons]
    contrib = body["explanation"]["contributions"]
    adverse = sorted((f for f in contrib if f != "age" and contrib[f] < 0), key=lambda f: contrib[f])
    assert [r["feature"] for r in reasons] == adverse[:4]
    assert body["explanation"]["reasons_baseline"]["kind"] == "all"
    entry = stage.store.get(resp.headers["mlguard-audit-id"])
    assert entry is not None and entry.private["outcome"] == {"score": body["score"], "favorable": False}


async def test_cutoff_baseline(build: Any, data: Any, models: dict[str, Any], monkeypatch: Any) -> None:
    from mlguard.policy.effective import EffectiveExplanations

    mw, _, stage = build(cutoff=0.5, cutoff_delta=0.1)
    rx = stage.routes[0]
    assert rx.reason_engine is None
    # Rebuild the route with the policy asking for the cut-off baseline (Reg B comment 9(b)(2)-5).
    from mlguard.explain.stage import build_route_explainer

    policy = mw.guard.policy.model_copy(update={"explanations": EffectiveExplanations(
        **{**mw.guard.policy.explanations.model_dump(), "baseline": "cutoff"})})
    route = mw.guard.table.routes[0]
    stage.routes[0] = build_route_explainer(0, route.config.model, policy, stage.settings, base_dir=None,
                                            protected=["sex"])
    assert stage.routes[0].reason_engine is not None
    _, bad = _approved_and_refused(models, data)
    async with client(mw) as c:
        body = (await c.post("/predict", json=request(bad, data))).json()
    base = body["explanation"]["reasons_baseline"]
    assert base["kind"] == "cutoff" and base["cutoff"] == 0.5 and base["rows"] >= 5
    assert body["explanation"]["reasons"]


async def test_header_mode_leaves_the_body_alone_and_admin_serves_it(build: Any, data: Any) -> None:
    mw, _app, _ = build(explain={"mode": "header"})
    async with client(mw) as c:
        resp = await c.post("/predict", json=request([float(v) for v in data.x[3]], data))
        audit_id = resp.headers["mlguard-audit-id"]
        assert set(resp.json()) == {"score", "approved"}
        assert resp.headers["mlguard-explanation"] == audit_id
        assert resp.headers["mlguard-explanation-status"] == "ready"
        got = await c.get(f"/mlguard/explanations/{audit_id}", headers={"authorization": f"Bearer {TOKEN}"})
        assert got.status_code == 200
        assert abs(got.json()["base_value"] + sum(got.json()["contributions"].values())
                   - resp.json()["score"]) < 1e-6
        assert (await c.get(f"/mlguard/explanations/{audit_id}")).status_code == 401
        unknown = await c.get("/mlguard/explanations/nope", headers={"authorization": f"Bearer {TOKEN}"})
        assert unknown.status_code == 404
        plain = await c.get(f"/mlguard/explanations/{audit_id}/plain",
                            headers={"authorization": f"Bearer {TOKEN}"})
        assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
        assert "Main factors" in plain.text
        # ecoa alone: explanations.counterfactuals is false, so the page says nothing about changes
        assert "What would have changed the result" not in plain.text


@pytest.mark.parametrize(("features", "reason"), [
    ({"income": 50}, "feature 'debt' is missing"),
    ({"income": "<REDACTED>", "debt": 1, "years_employed": 1, "late_payments": 0, "age": 30},
     "feature 'income' is not a number"),
])
async def test_missing_or_mistyped_features_skip_with_a_reason(build: Any, features: dict[str, Any],
                                                               reason: str) -> None:
    mw, _app, stage = build()
    async with client(mw) as c:
        resp = await c.post("/predict", json={"applicant": {"id": "A"}, "features": features})
    assert resp.status_code == 200
    assert resp.json()["explanation"] == {"status": "skipped", "skipped": True, "reason": reason}
    entry = stage.store.get(resp.headers["mlguard-audit-id"])
    assert entry is not None and entry.status == "skipped" and entry.private["reason"] == reason


class Flaky:
    """Predicts like the wrapped model, but raises on rows holding the poison value (after start-up)."""

    POISON = 666.0

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_

    def predict(self, x: Any) -> Any:
        return self.inner.predict(x)

    def predict_proba(self, x: Any) -> Any:
        if np.any(np.asarray(x) == self.POISON):
            raise RuntimeError(f"secret value {self.POISON}")
        return self.inner.predict_proba(x)


@pytest.mark.parametrize(("policies", "status"), [(["ecoa"], 503), (["gdpr"], 200)])
async def test_model_that_raises_follows_failure_mode(build: Any, data: Any, models: dict[str, Any],
                                                      policies: list[str], status: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    mw, _, stage = build(Flaky(models["gbc"]), app_model=models["gbc"], policies=policies)
    values = [float(v) for v in data.x[0]]
    values[2] = Flaky.POISON
    with caplog.at_level(logging.DEBUG, logger="mlguard"):
        async with client(mw) as c:
            resp = await c.post("/predict", json=request(values, data))
    assert resp.status_code == status
    assert "666" not in resp.text and all("666" not in r.getMessage() for r in caplog.records)
    entry = stage.store.get(resp.headers["mlguard-audit-id"])
    assert entry is not None and entry.status == "failed"
    if status == 503:
        assert resp.headers["content-type"].startswith("application/problem+json")
    else:
        assert resp.json()["explanation"] == {"status": "failed",
                                              "reason": "the explainer or the model raised RuntimeError"}


async def test_non_2xx_answer_is_not_explained(build: Any, data: Any, models: dict[str, Any]) -> None:
    mw, _app, stage = build()

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 422, "headers": [(b"content-type",
                                                                              b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"detail": "bad"}'})

    mw.app = failing
    async with client(mw) as c:
        resp = await c.post("/predict", json=request([1.0] * 5, data))
    assert resp.status_code == 422
    assert resp.json() == {"detail": "bad"}  # the app's own error body, as the app wrote it
    assert resp.headers["mlguard-explanation-status"] == "skipped"
    assert resp.headers["mlguard-explanation"] == resp.headers["mlguard-audit-id"]
    assert stage.store.get(resp.headers["mlguard-audit-id"]).public["reason"] == \
        "no decision to explain: the app answered 422"


async def test_deferred_mode_returns_a_reference_then_the_explanation(build: Any, data: Any) -> None:
    mw, _, stage = build(explain={"execution": "deferred"})
    assert stage.worker is not None and stage.routes[0].deferred
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with client(mw) as c:
        resp = await c.post("/predict", json=request([float(v) for v in data.x[9]], data))
        audit_id = resp.headers["mlguard-audit-id"]
        ref = resp.json()["explanation"]
        assert ref == {"status": "pending", "deferred": True, "ref": f"/mlguard/explanations/{audit_id}"}
        deadline = time.monotonic() + 10
        while True:
            got = await c.get(ref["ref"], headers=auth)
            if got.status_code == 200 or time.monotonic() > deadline:
                break
            assert got.status_code == 202
            await anyio.sleep(0.01)
    assert got.status_code == 200
    exp = got.json()
    assert exp["deferred"] is True and exp["status"] == "ready"
    assert abs(exp["base_value"] + sum(exp["contributions"].values()) - resp.json()["score"]) < 1e-6
    await mw.guard.aclose()


async def test_deferred_queue_full_skips_with_a_reason(build: Any, data: Any) -> None:
    mw, _, stage = build(explain={"execution": "deferred"})
    assert stage.worker is not None
    stage.worker.submit = lambda job: False
    async with client(mw) as c:
        resp = await c.post("/predict", json=request([float(v) for v in data.x[9]], data))
    assert resp.json()["explanation"] == {"status": "skipped", "skipped": True,
                                          "reason": "explanation queue full"}
    await mw.guard.aclose()


class Slow(Flaky):
    """A model-agnostic model whose every call costs 30 ms: over ecoa's 20 ms budget."""

    def predict_proba(self, x: Any) -> Any:
        time.sleep(0.03)
        return self.inner.predict_proba(x)


async def test_slow_explainer_is_deferred_by_budget(build: Any, data: Any, models: dict[str, Any]) -> None:
    mw, _, stage = build(Slow(models["gbc"]), app_model=models["gbc"])
    rx = stage.routes[0]
    assert rx.engine.method == "shap.KernelExplainer"
    assert rx.predicted_ms > rx.rules.budget_ms and rx.deferred
    assert stage.describe()["routes"]["0"]["execution"] == "deferred"
    await mw.guard.aclose()


def test_no_stage_when_disabled_or_no_model(data: Any, models: dict[str, Any], tmp_path: Path) -> None:
    off = Guard(config(data, models["gbc"], tmp_path, explain={"enabled": False}), stages=["explain"])
    assert [s.name for s in off.stages] == []
    cfg = config(data, models["gbc"], tmp_path)
    cfg["routes"][0]["model"] = {"output": "$.score", "favorable": "$.approved"}
    assert [s.name for s in Guard(cfg, stages=["explain"]).stages] == []


def test_insufficient_catalog_text_refused_at_start_up(data: Any, models: dict[str, Any], tmp_path: Path) -> None:
    cfg = config(data, models["gbc"], tmp_path,
                 explain={"reason_catalog": {**CATALOG, "debt": "Does not meet internal standards"}})
    with pytest.raises(ConfigError) as err:
        Guard(cfg, stages=["explain"])
    assert err.value.field == "explain.reason_catalog.debt"


async def test_model_identity_goes_to_the_record(build: Any, data: Any) -> None:
    mw, _, _stage = build()
    seen: dict[str, Any] = {}

    class Spy(BaseStage):
        name = "audit"

        async def finish(self, ex: Exchange) -> None:
            seen.update(ex.record)

    mw.guard.stages.append(Spy())
    async with client(mw) as c:
        await c.post("/predict", json=request([float(v) for v in data.x[1]], data))
    assert seen["model"]["class"].endswith("GradientBoostingClassifier")
    assert seen["explanation"]["status"] == "ready" and "inputs" in seen["explanation"]


async def test_the_record_keeps_one_copy_of_the_attached_explanation(build: Any, data: Any) -> None:
    """The client's body is the app's output plus the explanation member; the record holds the app's output
    and the explanation section, and names the member the guard added."""
    import json

    from mlguard.audit.record import from_exchange
    from mlguard.keys import Keyring

    mw, _, _stage = build()
    exchanges: list[Exchange] = []

    class Spy(BaseStage):
        name = "audit"

        async def finish(self, ex: Exchange) -> None:
            exchanges.append(ex)

    mw.guard.stages.append(Spy())
    async with client(mw) as c:
        body = (await c.post("/predict", json=request([float(v) for v in data.x[1]], data))).json()
    record = json.loads(from_exchange(exchanges[0], Keyring.from_seed(b"s" * 32)).body)
    assert "explanation" in body and "explanation" not in record["output"]
    assert record["output"] == {k: v for k, v in body.items() if k != "explanation"}
    assert record["attached"] == {"explanation": "explanation"}
    assert record["explanation"]["contributions"] == body["explanation"]["contributions"]


@pytest.mark.parametrize(("below", "on_loop"), [(0.0, False), (1000.0, True)])
async def test_inline_on_the_loop_or_in_a_thread_gives_the_same_explanation(build: Any, data: Any,
                                                                           below: float, on_loop: bool) -> None:
    mw, _, stage = build(explain={"on_loop_below_ms": below})
    assert stage.routes[0].on_loop is on_loop
    assert stage.describe()["routes"]["0"]["execution"] == (
        "inline, on the event loop" if on_loop else "inline, in a thread")
    async with client(mw) as c:
        body = (await c.post("/predict", json=request([float(v) for v in data.x[4]], data))).json()
    assert abs(body["explanation"]["output_value"] - body["score"]) < 1e-6


def _audited(data: Any, models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             **explain: Any) -> tuple[Guard, GuardMiddleware, dict[str, str], Any]:
    """A guard with the explain and audit stages, the admin token's header, and a row the model refuses."""
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)
    guard = Guard(config(data, models["gbc"], tmp_path, explain=explain or None), stages=["explain", "audit"])
    mw = GuardMiddleware(ModelApp(models["gbc"], data.features), guard=guard)
    _, bad = _approved_and_refused(models, data)
    return guard, mw, {"authorization": f"Bearer {TOKEN}"}, bad


async def test_admin_reads_an_explanation_from_the_audit_trail_once_out_of_memory(
        data: Any, models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for one explanation in memory, an older one is read back from its sealed exchange record: the
    same document as before, the plain-language page too, and each read audited."""
    guard, mw, auth, bad = _audited(data, models, tmp_path, monkeypatch, keep_results=1)
    async with client(mw) as c:
        first = await c.post("/predict", json=request(bad, data))
        first_id = first.headers["mlguard-audit-id"]
        in_memory = await c.get(f"/mlguard/explanations/{first_id}", headers=auth)
        assert in_memory.status_code == 200 and in_memory.json()["reasons"]
        second = await c.post("/predict", json=request([float(v) for v in data.x[4]], data))
        assert second.status_code == 200
        assert guard_stage(guard).store.get(first_id) is None  # pushed out of memory
        from_trail = await c.get(f"/mlguard/explanations/{first_id}", headers=auth)
        assert from_trail.status_code == 200 and from_trail.json() == in_memory.json()
        assert "inputs" not in from_trail.json() and "outcome" not in from_trail.json()
        plain = await c.get(f"/mlguard/explanations/{first_id}/plain", headers=auth)
        assert plain.status_code == 200 and "Principal reasons for the decision:\n  1. " in plain.text
        assert "Data used: the model used these 5 items" in plain.text  # the sealed inputs, from the trail
        events = guard_stage(guard).ctx.shared["audit_events"]
        reads = [r for r in events.reader.iter_records() if r["kind"] == "admin_read"]
        not_exchange = await c.get(f"/mlguard/explanations/{reads[0]['audit_id']}", headers=auth)
        assert not_exchange.status_code == 404
        missing_plain = await c.get("/mlguard/explanations/nope/plain", headers=auth)
        assert missing_plain.status_code == 404
        # not an audit id (an e-mail pasted by mistake): 404 unread, and the trail keeps its length only
        pasted = await c.get("/mlguard/explanations/zq%40quackmail.eu", headers=auth)
        assert pasted.status_code == 404 and "quackmail" not in pasted.text
        reads = [r for r in events.reader.iter_records() if r["kind"] == "admin_read"]
    # each read in the trail, saying whether it found an explanation (200) or not (404)
    assert [r["data"] for r in reads] == [
        {"endpoint": "/explanations", "target": first_id, "found": True},
        {"endpoint": "/explanations", "target": first_id, "found": True},
        {"endpoint": "/explanations/plain", "target": first_id, "found": True},
        {"endpoint": "/explanations", "target": reads[0]["audit_id"], "found": False},
        {"endpoint": "/explanations/plain", "target": {"not_an_audit_id": True, "length": 4}, "found": False},
        {"endpoint": "/explanations", "target": {"not_an_audit_id": True, "length": 15}, "found": False}]
    assert "quackmail" not in repr(reads)
    await guard.aclose()


@pytest.mark.parametrize("endpoint", ["/explanations/{}", "/explanations/{}/plain"])
async def test_admin_read_that_cannot_be_audited_discloses_nothing(
        data: Any, models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """When the admin_read event cannot be appended, the answer is the same 503 for an explanation that exists
    and one that does not: neither it nor its existence is disclosed by an unaudited read."""
    from mlguard.errors import AuditUnavailable

    guard, mw, auth, bad = _audited(data, models, tmp_path, monkeypatch)
    async with client(mw) as c:
        audit_id = (await c.post("/predict", json=request(bad, data))).headers["mlguard-audit-id"]
        assert (await c.get(f"/mlguard/explanations/{audit_id}", headers=auth)).status_code == 200
        events = guard_stage(guard).ctx.shared["audit_events"]
        before = [r["audit_id"] for r in events.reader.iter_records() if r["kind"] == "admin_read"]

        def refuse(*_: Any, **__: Any) -> Any:
            raise AuditUnavailable("audit queue is full")

        monkeypatch.setattr(events.writer, "submit_async", refuse)
        monkeypatch.setattr(events.writer, "submit", refuse)
        found = await c.get("/mlguard" + endpoint.format(audit_id), headers=auth)
        missing = await c.get("/mlguard" + endpoint.format("nope"), headers=auth)
        monkeypatch.undo()
        monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)
        after = [r["audit_id"] for r in events.reader.iter_records() if r["kind"] == "admin_read"]
    await guard.aclose()
    assert found.status_code == missing.status_code == 503
    assert found.content == missing.content and found.json()["detail"] == "audit trail unavailable"
    assert "reasons" not in found.text and "contributions" not in found.text
    assert after == before  # nothing recorded, nothing disclosed


@pytest.mark.parametrize(("endpoint", "name"), [("/explanations/{}", "/explanations"),
                                               ("/explanations/{}/plain", "/explanations/plain")])
async def test_explanation_lookup_when_the_trail_cannot_be_read_is_503_not_404(
        data: Any, models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str,
        name: str) -> None:
    """An explanation out of memory whose record cannot be read (the store is down) may well exist: 503, not
    "no such explanation" (404); the read is still recorded, with found null."""
    from mlguard.errors import AuditUnavailable

    guard, mw, auth, bad = _audited(data, models, tmp_path, monkeypatch, keep_results=1)
    async with client(mw) as c:
        first_id = (await c.post("/predict", json=request(bad, data))).headers["mlguard-audit-id"]
        assert (await c.post("/predict", json=request(bad, data))).status_code == 200  # pushes the first out
        events = guard_stage(guard).ctx.shared["audit_events"]

        def unreadable(*_: Any, **__: Any) -> Any:
            raise AuditUnavailable("database is locked")

        monkeypatch.setattr(events.reader, "get", unreadable)
        answer = await c.get("/mlguard" + endpoint.format(first_id), headers=auth)
        monkeypatch.undo()
        monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)
        reads = [r["data"] for r in events.reader.iter_records() if r["kind"] == "admin_read"]
    await guard.aclose()
    assert answer.status_code == 503
    assert "could not be read" in answer.json()["detail"] and "reasons" not in answer.text
    assert reads == [{"endpoint": name, "target": first_id, "found": None}]


def guard_stage(guard: Guard) -> ExplainStage:
    return next(s for s in guard.stages if isinstance(s, ExplainStage))
