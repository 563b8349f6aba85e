"""The guarded path and the pass-through path of GuardMiddleware."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlguard.errors import PIIError
from mlguard.exchange import Exchange
from mlguard.stage import BaseStage
from tests.core.conftest import RecordingApp, client

pytestmark = pytest.mark.anyio

REQUEST = {"applicant": {"id": "A-1", "name": "Ada", "sex": "Female"}, "features": {"age": 41}}


class SpyStage(BaseStage):
    """Records the hooks it saw and can fail in one of them."""

    name = "pii"

    def __init__(self, fail_in: str | None = None, error: Exception | None = None) -> None:
        self.fail_in = fail_in
        self.error = error or PIIError("engine unavailable")
        self.seen: list[tuple[str, Any]] = []

    async def before_app(self, ex: Exchange) -> None:
        self.seen.append(("before_app", ex.document))
        if self.fail_in == "before_app":
            raise self.error

    async def after_app(self, ex: Exchange) -> None:
        self.seen.append(("after_app", ex.outcome))
        if self.fail_in == "after_app":
            raise self.error

    async def finish(self, ex: Exchange) -> None:
        self.seen.append(("finish", (ex.status, list(ex.failures), ex.decision)))
        if self.fail_in == "finish":
            raise self.error


async def test_guarded_route_replays_body_and_adds_headers(make_guarded: Any) -> None:
    mw, _app = make_guarded()
    spy = SpyStage()
    mw.guard.stages.append(spy)
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 200
    assert resp.json() == {"score": 0.7, "approved": True}
    assert resp.headers["mlguard-audit-id"]
    assert resp.headers["mlguard-inspected"] == "true"
    assert resp.headers["mlguard-policy"] == "base"
    assert [h for h, _ in spy.seen] == ["before_app", "after_app", "finish"]
    outcome = spy.seen[1][1]
    assert outcome.score == 0.7 and outcome.favorable is True


async def test_audit_ids_are_uuid7_and_unique(make_guarded: Any) -> None:
    mw, _ = make_guarded()
    async with client(mw) as c:
        ids = [(await c.post("/predict", json=REQUEST)).headers["mlguard-audit-id"] for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(i[14] == "7" for i in ids)
    assert ids == sorted(ids)


async def test_protected_attributes_removed_when_policy_forbids(make_guarded: Any) -> None:
    mw, app = make_guarded(policies=["ecoa"])
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 200
    received = app.json()
    assert "sex" not in received["applicant"]
    assert received["applicant"]["id"] == "A-1"
    assert int(app.calls[0]["scope"]["headers"][-1][1]) == len(app.calls[0]["body"])


async def test_stage_failure_fail_closed_refuses_without_calling_app(make_guarded: Any) -> None:
    mw, app = make_guarded(policies=["ecoa"])  # ecoa: fail_closed
    assert mw.guard.policy.failure_mode == "fail_closed"
    spy = SpyStage(fail_in="before_app", error=RuntimeError("boom Zebulon"))
    mw.guard.stages.append(spy)
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert "pii stage failed" in resp.json()["detail"]
    assert "Zebulon" not in resp.text
    assert not app.called
    _status, failures, decision = spy.seen[-1][1]
    assert failures[0].stage == "pii" and failures[0].error == "RuntimeError"
    assert "Zebulon" not in failures[0].message
    assert decision.refused


async def test_stage_failure_fail_open_serves_and_records_gap(make_guarded: Any) -> None:
    mw, app = make_guarded(policies=["gdpr"])  # gdpr: fail_open
    assert mw.guard.policy.failure_mode == "fail_open"
    spy = SpyStage(fail_in="before_app")
    mw.guard.stages.append(spy)
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 200
    assert app.called
    status, failures, decision = spy.seen[-1][1]
    assert status == 200 and decision.gap and failures[0].message == "engine unavailable"


async def test_after_app_failure_fail_closed_withholds_response(make_guarded: Any) -> None:
    mw, app = make_guarded(policies=["ecoa"])
    mw.guard.stages.append(SpyStage(fail_in="after_app"))
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 503
    assert app.called
    assert "score" not in resp.text


async def test_finish_failure_fail_closed_withholds_response(make_guarded: Any) -> None:
    mw, _app = make_guarded(policies=["ecoa"])
    mw.guard.stages.append(SpyStage(fail_in="finish"))
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 503


async def test_app_exception_propagates_unchanged(make_guarded: Any) -> None:
    class Boom(Exception):
        pass

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise Boom("from the app")

    mw, _ = make_guarded(app=failing)
    spy = SpyStage()
    mw.guard.stages.append(spy)
    with pytest.raises(Boom, match="from the app"):
        async with client(mw) as c:
            await c.post("/predict", json=REQUEST)
    assert spy.seen[-1][0] == "finish"


async def test_halted_route_answers_503_until_resumed(make_guarded: Any) -> None:
    mw, app = make_guarded()
    mw.guard.halt(0)
    async with client(mw) as c:
        r1 = await c.post("/predict", json=REQUEST)
        mw.guard.resume(0)
        r2 = await c.post("/predict", json=REQUEST)
    assert r1.status_code == 503 and "stopped" in r1.json()["detail"]
    assert r2.status_code == 200
    assert len(app.calls) == 1


async def test_non_json_response_passes_through_not_inspected(make_guarded: Any) -> None:
    app = RecordingApp(content_type=b"text/event-stream")
    mw, _ = make_guarded(app=app)
    spy = SpyStage()
    mw.guard.stages.append(spy)
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 200
    assert resp.headers["mlguard-inspected"] == "false"
    assert resp.headers["mlguard-audit-id"]
    assert [h for h, _ in spy.seen] == ["before_app", "finish"]


async def test_unconfigured_route_and_method_pass_through_untouched(make_guarded: Any) -> None:
    mw, app = make_guarded()
    async with client(mw) as c:
        r1 = await c.post("/other", content=b"not json at all", headers={"content-type": "text/plain"})
        r2 = await c.get("/predict")
    assert r1.status_code == 200 and r2.status_code == 200
    assert "mlguard-audit-id" not in r1.headers
    assert app.calls[0]["body"] == b"not json at all"


async def test_passthrough_hands_over_original_receive_and_send(make_guarded: Any) -> None:
    mw, app = make_guarded()
    chunks = [b"a" * 10, b"b" * 10]

    async def receive() -> Any:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    sent: list[Any] = []

    async def send(msg: Any) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/elsewhere", "headers": [], "query_string": b""}
    await mw(scope, receive, send)
    call = app.calls[0]
    assert call["receive"] is receive and call["send"] is send
    assert len(call["messages"]) == 2  # not buffered: the app saw the client's own chunks


async def test_websocket_passes_through(make_guarded: Any) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    mw, _ = make_guarded(app=app)

    async def receive() -> Any:
        return {}

    async def send(msg: Any) -> None:
        return None

    scope = {"type": "websocket", "path": "/predict"}
    await mw(scope, receive, send)
    assert seen == [(scope, receive, send)]


async def test_lifespan_passes_through_and_closes_stages_at_shutdown(make_guarded: Any) -> None:
    closed: list[str] = []

    class Closing(BaseStage):
        name = "audit"

        async def aclose(self) -> None:
            closed.append("audit")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                assert closed == []
                await send({"type": "lifespan.shutdown.complete"})
                return

    mw, _ = make_guarded(app=app)
    mw.guard.stages.append(Closing())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return incoming.pop(0)

    async def send(msg: Any) -> None:
        sent.append((msg, list(closed)))

    await mw({"type": "lifespan"}, receive, send)
    assert [m["type"] for m, _ in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sent[0][1] == [] and sent[1][1] == ["audit"]  # closed before the server hears "complete"


async def test_route_with_path_parameters(make_guarded: Any) -> None:
    mw, _app = make_guarded(routes=[{"path": "/models/{name}/predict"}])
    async with client(mw) as c:
        resp = await c.post("/models/credit/predict", content=b"[", headers={"content-type": "application/json"})
        ok = await c.post("/models/credit/other", content=b"[", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert ok.status_code == 200


async def test_admin_health_and_token(make_guarded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mw, app = make_guarded()
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "s3cret")
    async with client(mw) as c:
        health = await c.get("/mlguard/health")
        denied = await c.get("/mlguard/policy")
        wrong = await c.get("/mlguard/policy", headers={"authorization": "Bearer nope"})
        ok = await c.get("/mlguard/policy", headers={"authorization": "Bearer s3cret"})
        stop = await c.post("/mlguard/routes/0/stop", headers={"authorization": "Bearer s3cret"})
        refused = await c.post("/predict", json=REQUEST)
        await c.post("/mlguard/routes/0/resume", headers={"authorization": "Bearer s3cret"})
        served = await c.post("/predict", json=REQUEST)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert denied.status_code == 401 and wrong.status_code == 401
    assert ok.json()["ids"] == ["base"]
    assert stop.status_code == 200 and refused.status_code == 503 and served.status_code == 200
    assert not any(c["scope"]["path"].startswith("/mlguard") for c in app.calls)


async def test_response_rewritten_by_stage_gets_new_length(make_guarded: Any) -> None:
    class Annotate(BaseStage):
        name = "explain"

        async def after_app(self, ex: Exchange) -> None:
            ex.response_doc["explanation"] = {"base_value": 0.1}
            ex.response_modified = True

    mw, _ = make_guarded()
    mw.guard.stages.append(Annotate())
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.json()["explanation"] == {"base_value": 0.1}
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert json.loads(resp.content)["score"] == 0.7


async def test_oversight_stop_and_resume_are_audited(make_guarded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Events:
        fail = False

        async def append_event(self, kind: str, data: dict[str, Any]) -> str:
            if self.fail:
                raise RuntimeError("store down")
            events.append((kind, data))
            return f"ev-{len(events)}"

    mw, _ = make_guarded()
    sink = Events()
    mw.guard.context.shared["audit_events"] = sink
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "s3cret")
    auth = {"authorization": "Bearer s3cret"}
    async with client(mw) as c:
        stop = await c.post("/mlguard/routes/0/stop", headers=auth)
        sink.fail = True
        refused = await c.post("/mlguard/routes/0/resume", headers=auth)
        still = await c.post("/predict", json=REQUEST)
        sink.fail = False
        resumed = await c.post("/mlguard/routes/0/resume", headers=auth)
        missing = await c.post("/mlguard/routes/9/stop", headers=auth)
    assert stop.json() == {"route": 0, "halted": True, "stopped_by": ["human"], "audit_event": "ev-1"}
    assert refused.status_code == 503 and still.status_code == 503
    assert resumed.json()["audit_event"] == "ev-2"
    assert [(k, d["action"]) for k, d in events] == [("oversight", "stop"), ("oversight", "resume")]
    assert missing.status_code == 404


async def test_json_response_that_does_not_parse_is_marked_not_inspected(make_guarded: Any) -> None:
    async def broken_json(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{not json"})

    mw, _ = make_guarded(app=broken_json)
    spy = SpyStage()
    mw.guard.stages.append(spy)
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 200 and resp.content == b"{not json"
    assert resp.headers["mlguard-inspected"] == "false"
    assert [h for h, _ in spy.seen] == ["before_app", "finish"]


async def test_app_returning_mid_response_gets_what_it_sent_forwarded(make_guarded: Any) -> None:
    async def unfinished(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"score": 0.5', "more_body": True})

    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(msg: Any) -> None:
        sent.append(msg)

    mw, _ = make_guarded(app=unfinished)
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json")]}
    await mw(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"score": 0.5'


@pytest.mark.parametrize("phase", ["before_app", "after_app"])
async def test_a_document_json_cannot_carry_is_a_500_problem_not_a_crash(make_guarded: Any, phase: str) -> None:
    """A stage that leaves a NaN (e.g. an explanation of a model answering NaN) in the document it rewrote: the
    client gets a 500 problem+json, the finish stages still run once, and nothing propagates to the server."""
    class NaNStage(BaseStage):
        name = "explain"

        async def before_app(self, ex: Exchange) -> None:
            if phase == "before_app":
                ex.set_document({**ex.document, "features": {"age": float("nan")}})

        async def after_app(self, ex: Exchange) -> None:
            if phase == "after_app":
                ex.response_doc["explanation"] = {"base_value": float("nan")}
                ex.response_modified = True

    mw, app = make_guarded()
    spy = SpyStage()
    mw.guard.stages[:0] = [NaNStage()]
    mw.guard.stages.append(spy)
    async with client(mw) as c:
        resp = await c.post("/predict", json=REQUEST)
    assert resp.status_code == 500 and resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["type"].endswith("unserialisable") and resp.headers["mlguard-audit-id"]
    finishes = [v for h, v in spy.seen if h == "finish"]
    assert len(finishes) == 1 and finishes[0][0] == 500
    assert [f.stage for f in finishes[0][1]] == ["core"]
    assert len(app.calls) == (0 if phase == "before_app" else 1)  # the app is not called with a broken body
