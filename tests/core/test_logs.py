"""Structured logs never carry an input value: planted values go in through every path that logs, never come out.

The values are planted where a log line could pick them up: request bodies (well-formed, malformed, refused), a
stage's exception text, the app's exception text, a library's message arguments, an ``extra`` field, the query
string of the server's access line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.errors import ConfigError
from mlguard.exchange import Exchange
from mlguard.logs import JsonFormatter, TextFormatter, configure_logging, uvicorn_log_config
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.stage import BaseStage
from mlguard.testing import free_port
from tests.core.conftest import RecordingApp, base_config, client

NAME = "Quentin Logplantson"
EMAIL = "quentin.logplant@example.com"
SSN = "078-05-1120"
PLANTED = (NAME, "Logplantson", EMAIL, "logplant", SSN, "078051120")


def _record(name: str, msg: str, *args: Any, level: int = logging.WARNING, exc: BaseException | None = None,
            **extra: Any) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, exc_info, extra=extra)
    return record


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _clean(text: str) -> None:
    for value in PLANTED:
        assert value not in text


def test_every_extra_field_mlguard_logs_is_allow_listed() -> None:
    """A field added to a log call but not to SAFE_FIELDS would vanish silently; this makes it a review."""
    import ast

    import mlguard
    from mlguard.logs import SAFE_FIELDS

    used: dict[str, str] = {}
    for path in Path(mlguard.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                for kw in node.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                        for key in kw.value.keys:
                            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                                used.setdefault(key.value, f"{path.name}:{node.lineno}")
    assert "audit_id" in used and "error" in used
    assert {k: v for k, v in used.items() if k not in SAFE_FIELDS} == {}


def test_json_line_has_the_fields_and_only_allowed_extras() -> None:
    line = JsonFormatter().format(_record("mlguard.exchange", "stage failed", audit_id="0190-x", route="/predict",
                                          stage="pii", phase="before_app", error="ValueError",
                                          applicant_name=NAME, body={"ssn": SSN}))
    doc = json.loads(line)
    assert list(doc)[:4] == ["ts", "level", "logger", "message"]
    assert doc["ts"].endswith("Z") and doc["level"] == "WARNING" and doc["logger"] == "mlguard.exchange"
    assert doc["message"] == "stage failed"
    assert {k: doc[k] for k in ("audit_id", "route", "stage", "phase", "error")} == {
        "audit_id": "0190-x", "route": "/predict", "stage": "pii", "phase": "before_app", "error": "ValueError"}
    assert "applicant_name" not in doc and "body" not in doc
    _clean(line)


def test_a_foreign_exception_is_its_class_and_frames_only() -> None:
    exc = _raised(ValueError(f"cannot parse {EMAIL} for {NAME}"))
    line = JsonFormatter().format(_record("mlguard.pii.stage", "redaction failed", level=logging.ERROR, exc=exc))
    doc = json.loads(line)
    assert doc["exc_type"] == "ValueError" and "exc_message" not in doc
    assert any("test_logs.py" in f and "_raised" in f for f in doc["exc_frames"])
    _clean(line)
    ours = _raised(ConfigError("unknown operator", field="routes.0.pii"))
    doc = json.loads(JsonFormatter().format(_record("mlguard.runtime", "bad config", exc=ours)))
    assert doc["exc_type"] == "ConfigError" and "unknown operator" in doc["exc_message"]


def test_foreign_loggers_keep_their_template_not_their_arguments() -> None:
    line = JsonFormatter().format(_record("presidio-analyzer", "could not analyse %s (%s)", NAME, SSN))
    assert json.loads(line)["message"] == "could not analyse %s (%s)"
    _clean(line)
    ours = json.loads(JsonFormatter().format(_record("mlguard.explain", "reason tie: %d of %d", 3, 4)))
    assert ours["message"] == "reason tie: 3 of 4"


def test_uvicorn_access_line_loses_client_and_query_string() -> None:
    rec = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "POST",
                  f"/predict?ssn={SSN}&email={EMAIL}", "1.1", 200, level=logging.INFO)
    for fmt in (JsonFormatter(), TextFormatter()):
        line = fmt.format(rec)
        _clean(line)
        assert "203.0.113.9" not in line and "/predict" in line
    doc = json.loads(JsonFormatter().format(rec))
    assert (doc["message"], doc["method"], doc["path"], doc["status"]) == ("request", "POST", "/predict", 200)
    ws = _record("uvicorn.error", '%s - "WebSocket %s" [accepted]', "203.0.113.9:5123", f"/ws?name={NAME}",
                 level=logging.INFO)
    _clean(JsonFormatter().format(ws))


def test_a_guarded_route_parameter_is_logged_as_its_template() -> None:
    import re

    from mlguard.logs import mask_route_paths

    mask_route_paths([("/people/{person}/score", re.compile(r"^/people/(?P<person>[^/]+)/score$")),
                      ("/fixed", re.compile(r"^/fixed$"))])
    rec = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "POST",
                  f"/people/{SSN}/score?email={EMAIL}", "1.1", 200, level=logging.INFO)
    for fmt in (JsonFormatter(), TextFormatter()):
        line = fmt.format(rec)
        _clean(line)
        assert "/people/{person}/score" in line
    ws = _record("uvicorn.error", '%s - "WebSocket %s" [accepted]', "203.0.113.9:5123", f"/people/{NAME}/score",
                 level=logging.INFO)
    assert "/people/{person}/score" in JsonFormatter().format(ws)
    other = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "GET", "/people/list", "1.1",
                    200, level=logging.INFO)
    assert json.loads(JsonFormatter().format(other))["path"] == "/people/list"  # not a guarded route: as it is


@pytest.mark.anyio
async def test_an_admin_path_parameter_is_logged_as_its_template(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin path's parameter is what the caller typed: a new user found the e-mail address they had pasted
    as an audit id (/mlguard/explanations/<address>) verbatim in the access log."""
    import mlguard.logs

    monkeypatch.setattr(mlguard.logs, "_TEMPLATES", {})  # process-wide: only this guard's templates here
    guard = Guard(base_config(tmp_path), stages=["audit", "explain"])
    GuardMiddleware(RecordingApp(), guard=guard)
    try:
        # no explain stage here: its endpoints are unknown paths, masked all the same
        for path, template in ((f"/mlguard/explanations/{EMAIL}", "/mlguard/{unknown}"),
                               (f"/mlguard/explanations/{NAME}/plain", "/mlguard/{unknown}"),
                               (f"/mlguard/audit/records/{SSN}", "/mlguard/audit/records/{audit_id}"),
                               ("/mlguard/routes/0/stop", "/mlguard/routes/{index}/stop"),
                               (f"/mlguard/{NAME}", "/mlguard/{unknown}")):
            rec = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "GET", path, "1.1",
                          404, level=logging.INFO)
            for fmt in (JsonFormatter(), TextFormatter()):
                line = fmt.format(rec)
                _clean(line)
                assert template in line
        health = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "203.0.113.9:5123", "GET", "/mlguard/health",
                         "1.1", 200, level=logging.INFO)
        assert json.loads(JsonFormatter().format(health))["path"] == "/mlguard/health"
    finally:
        await guard.aclose()


def test_text_format_applies_the_same_rules() -> None:
    exc = _raised(KeyError(EMAIL))
    line = TextFormatter().format(_record("mlguard.exchange", "stage failed", exc=exc, stage="pii", name_=NAME))
    assert "WARNING mlguard.exchange: stage failed" in line and "stage=pii" in line and "exc_type=KeyError" in line
    _clean(line)


def test_uvicorn_log_config_is_accepted_by_dictconfig() -> None:
    import logging.config

    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in ("uvicorn", "uvicorn.access", "uvicorn.error", "mlguard", "")}
    try:
        for fmt in ("json", "text"):
            logging.config.dictConfig(uvicorn_log_config(fmt, "info"))
            handler = logging.getLogger("uvicorn.access").handlers[0]
            assert isinstance(handler.formatter, JsonFormatter if fmt == "json" else TextFormatter)
            assert logging.getLogger("mlguard").handlers[0] is handler
    finally:
        for n, (handlers, propagate, level) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.setLevel(level)
    with pytest.raises(ValueError):
        uvicorn_log_config("xml", "info")  # type: ignore[arg-type]


@pytest.mark.parametrize("level", ["info", "warning"])
def test_a_dead_worker_is_a_warning_even_at_log_level_warning(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn's supervisor says "Child process [pid] died" at INFO: an alert on WARNING missed a killed worker,
    and ``--log-level warning`` dropped the line. The other INFO lines still follow the configured level."""
    import logging.config

    names = ("uvicorn", "uvicorn.access", "uvicorn.error", "mlguard", "")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level,
                 logging.getLogger(n).filters[:]) for n in names}
    try:
        logging.config.dictConfig(uvicorn_log_config("json", level))
        err = logging.getLogger("uvicorn.error")
        err.info("Started server process [%d]", 4242)
        err.info("Child process [4243] died")  # uvicorn formats it itself (an f-string)
        err.warning("Terminating child process [4244]")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    finally:
        for n, (handlers, propagate, lvl, filters) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.setLevel(lvl)
            lg.filters[:] = filters
    by_message = {d["message"]: d["level"] for d in lines}
    assert by_message["Child process [4243] died"] == "WARNING"
    assert by_message["Terminating child process [4244]"] == "WARNING"
    assert ("Started server process [4242]" in by_message) is (level == "info")


# ---------------------------------------------------------------------- through the guard


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged during the test, through the JSON formatter, at DEBUG."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    mlguard_level = logging.getLogger("mlguard").level
    # uvicorn's own logging config (left by any earlier in-process server) stops its records at "uvicorn"
    uv = logging.getLogger("uvicorn")
    uv_state = (uv.handlers[:], uv.propagate)
    uv.handlers[:], uv.propagate = [], True
    handler = configure_logging("json", "DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.getLogger("mlguard").setLevel(mlguard_level)
        uv.handlers[:], uv.propagate = uv_state


class LeakyStage(BaseStage):
    """A stage whose exception text carries the input (as a careless library's would)."""

    name = "explain"

    async def after_app(self, ex: Exchange) -> None:
        doc = ex.document if isinstance(ex.document, dict) else {}
        if doc.get("leak"):
            raise ValueError(f"cannot use {json.dumps(ex.original)}")


class BoomApp(RecordingApp):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        if b"boom" in msg.get("body", b""):
            raise RuntimeError(f"model failed on {msg['body'].decode()}")

        async def replay() -> Any:
            return msg

        await super().__call__(scope, replay, send)


@pytest.mark.anyio
async def test_planted_values_never_reach_the_log(tmp_path: Path, json_log: io.StringIO,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "t")
    cfg = base_config(tmp_path, log_level="DEBUG", fairness={"enabled": False},
                      pii_engine={"scan_undeclared": False})
    cfg["routes"][0]["pii"] = {"$.applicant.name": "PERSON", "$.applicant.email": "EMAIL_ADDRESS",
                               "$.applicant.ssn": "US_SSN", "$.applicant.id": "keep"}
    cfg["routes"][0]["policies"] = ["base"]
    guard = Guard(cfg, stages=["pii", "audit"])
    guard.stages.insert(1, LeakyStage())
    mw = GuardMiddleware(BoomApp(), guard=guard)
    applicant = {"id": "A-1", "sex": "Female", "name": NAME, "email": EMAIL, "ssn": SSN}
    async with client(mw) as c:
        ok = await c.post("/predict", json={"applicant": applicant, "features": {"age": 41}})
        assert ok.status_code == 200
        bad = await c.post("/predict", content=f'{{"applicant": {{"name": "{NAME}", "ssn": "{SSN}"'.encode(),
                           headers={"content-type": "application/json"})
        assert bad.status_code == 400
        leak = await c.post("/predict", json={"applicant": applicant, "leak": True})
        assert leak.status_code == 503  # fail_closed: the failing stage refuses
        with pytest.raises(RuntimeError) as info:
            await c.post("/predict", json={"applicant": applicant, "boom": True})
        # what a server does with an app's exception: log it with its traceback
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=info.value)
        logging.getLogger("somelib").warning("value was %s", EMAIL)
        logging.getLogger("mlguard.exchange").info("careless extra", extra={"applicant": applicant})
        r = await c.get(f"/mlguard/metrics?name={NAME}", headers={"Authorization": "Bearer t"})
        assert r.status_code == 200
    await guard.aclose()
    text = json_log.getvalue()
    _clean(text)
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"ts", "level", "logger", "message"} <= set(d) for d in lines)
    failed = [d for d in lines if d["message"] == "stage failed"]
    assert len(failed) == 1 and failed[0]["stage"] == "explain" and failed[0]["error"] == "ValueError"
    assert failed[0]["audit_id"] == leak.headers["mlguard-audit-id"]
    app_error = next(d for d in lines if d["logger"] == "uvicorn.error")
    assert app_error["exc_type"] == "RuntimeError" and "exc_message" not in app_error
    assert any(d["message"] == "guard ready" and d["stages"] == ["pii", "audit"] for d in lines)


# ---------------------------------------------------------------------- mlguard serve --log-format json

APP = '''
import json

from mlguard.testing import receive_body

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await receive_body(receive)
    if b"boom" in body:
        raise RuntimeError("model failed on " + body.decode())
    out = json.dumps({"score": 0.9, "approved": True}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
'''


def test_serve_logs_json_without_input_values(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP)
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(json.dumps({
        "policies": ["base"], "log_level": "DEBUG",
        "audit": {"enabled": False}, "explain": {"enabled": False}, "fairness": {"enabled": False},
        "routes": [{"path": "/predict", "scan_undeclared": False,
                    "pii": {"$.name": "PERSON", "$.email": "EMAIL_ADDRESS", "$.ssn": "US_SSN"}},
                   {"path": "/applicants/{applicant}/score", "scan_undeclared": False}],
    }))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "mlguard", "serve", str(cfg), "logapp:app", "--port", str(port),
                             "--log-format", "json"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    doc = {"name": NAME, "email": EMAIL, "ssn": SSN}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ok = httpx.post(f"http://127.0.0.1:{port}/predict?ssn={SSN}", json=doc, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        bad = httpx.post(f"http://127.0.0.1:{port}/predict", content=f'{{"name": "{NAME}"'.encode(),
                         headers={"content-type": "application/json"}, timeout=5)
        boom = httpx.post(f"http://127.0.0.1:{port}/predict", json={**doc, "boom": 1}, timeout=5)
        # a path parameter is an input value: the access line names the route template instead
        param = httpx.post(f"http://127.0.0.1:{port}/applicants/{SSN}/score?email={EMAIL}", json={}, timeout=5)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert (ok.status_code, bad.status_code, boom.status_code, param.status_code) == (200, 400, 500, 200)
    text = err.decode()
    _clean(text)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(d) for d in lines)
    access = [d for d in lines if d["logger"] == "uvicorn.access"]
    assert [(d["method"], d["path"], d["status"]) for d in access] == [
        ("POST", "/predict", 200), ("POST", "/predict", 400), ("POST", "/predict", 500),
        ("POST", "/applicants/{applicant}/score", 200)]
    crash = [d for d in lines if d.get("exc_type") == "RuntimeError"]
    assert crash and "exc_message" not in crash[0]
    assert any(d["logger"] == "mlguard.runtime" and d["message"] == "guard ready" for d in lines)
