"""Where a guarded route is found, and the guard's life across the app's lifespan.

Why these tests (a platform engineer's walk-through): under ``uvicorn --root-path /api`` or a Starlette
``Mount("/v1", ...)`` the scope's ``path`` is the full one and guarded routes never matched (bodies reached the
app in clear, the admin endpoints were 404); ``/items/{item_id:int}`` (FastAPI's syntax) was accepted and matched
nothing; an app route ``/predict/`` guarded as ``/predict`` took the redirected request unguarded; ``methods:
[GET]`` was accepted and then refused every GET; a second ``with TestClient(app)`` (one per test, as suites do)
hung on the audit writer the first one's shutdown had closed; and an app without lifespan never closed its guard,
so no final checkpoint was signed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from mlguard.audit.store.base import open_store
from mlguard.audit.writer import AuditWriter, Unrecorded
from mlguard.errors import ConfigError
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.routes import route_path
from mlguard.runtime import Guard
from tests.core.conftest import RecordingApp, base_config

BODY = {"applicant": {"id": "A-1", "sex": "Plantedfemale"}, "x": 1}


def guarded_by(app: RecordingApp, i: int = -1) -> bool:
    """The call reached the app through the guard: the protected attribute was taken out of its body."""
    return "sex" not in app.json(i)["applicant"]


@pytest.mark.anyio
@pytest.mark.parametrize(("root_path", "url"), [("/api", "/api/predict"), ("", "/predict")])
async def test_root_path_is_stripped_before_matching(tmp_path: Path, root_path: str, url: str) -> None:
    app = RecordingApp()
    guarded = GuardMiddleware(app, guard=Guard(base_config(tmp_path), stages=[]))
    transport = httpx.ASGITransport(app=guarded, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post(url, json=BODY)
        health = await client.get(f"{root_path}/mlguard/health")
    assert r.status_code == 200 and guarded_by(app) and "mlguard-policy" in r.headers
    assert health.status_code == 200


@pytest.mark.anyio
async def test_a_guard_inside_a_mount(tmp_path: Path) -> None:
    app = RecordingApp()
    outer = Starlette(routes=[Mount("/v1", app=GuardMiddleware(app, guard=Guard(base_config(tmp_path), stages=[])))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://t") as client:
        r = await client.post("/v1/predict", json=BODY)
    assert r.status_code == 200 and guarded_by(app)


@pytest.mark.parametrize(("scope", "expected"), [
    ({"path": "/api/predict", "root_path": "/api"}, "/predict"),
    ({"path": "/api", "root_path": "/api"}, "/"),
    ({"path": "/apiary/predict", "root_path": "/api"}, "/apiary/predict"),  # not under it
    ({"path": "/predict", "root_path": "/api"}, "/predict"),  # a server that already stripped it
    ({"path": "/predict"}, "/predict"),
])
def test_route_path(scope: dict[str, Any], expected: str) -> None:
    assert route_path(scope) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(("template", "url", "guarded"), [
    ("/items/{item_id:int}", "/items/5", True),
    ("/items/{item_id:int}", "/items/abc", False),
    ("/files/{p:path}", "/files/a/b/c.json", True),
    ("/u/{uid:uuid}/score", "/u/0b6f1c1e-5a7f-4f43-9d0e-2f8a4c1b9e11/score", True),
    ("/items/{item_id}", "/items/5/", True),
    ("/predict", "/predict/", True),
    ("/predict/", "/predict", True),
])
async def test_path_templates_and_trailing_slashes(tmp_path: Path, template: str, url: str, guarded: bool) -> None:
    app = RecordingApp()
    cfg = base_config(tmp_path)
    cfg["routes"][0]["path"] = template
    mw = GuardMiddleware(app, guard=Guard(cfg, stages=[]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as client:
        r = await client.post(url, json=BODY)
    assert r.status_code == 200
    assert guarded_by(app) is guarded


@pytest.mark.parametrize(("path", "message"), [("/items/{item_id:integer}", "unknown path convertor 'integer'"),
                                               ("/items/{item-id}", "malformed path parameter")])
def test_bad_path_templates_are_refused(tmp_path: Path, path: str, message: str) -> None:
    cfg = base_config(tmp_path)
    cfg["routes"][0]["path"] = path
    with pytest.raises(ConfigError, match=message) as err:
        Guard(cfg, stages=[])
    assert err.value.field == "routes.0.path"


@pytest.mark.parametrize(("method", "message"), [("GET", "GET cannot be guarded"), ("PSOT", "unknown HTTP method")])
def test_methods_without_a_body_are_refused(tmp_path: Path, method: str, message: str) -> None:
    cfg = base_config(tmp_path)
    cfg["routes"][0]["methods"] = [method]
    with pytest.raises(ConfigError, match=message):
        Guard(cfg, stages=[])


def _in_thread(fn: Any, seconds: float = 60.0) -> Any:
    """Run ``fn`` in a thread, failing (not hanging the suite) when it does not return in time."""
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung"
    return out["v"]


async def _raw(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # a bare ASGI callable's usual answer to lifespan
    await RecordingApp()(scope, receive, send)


@pytest.mark.parametrize("lifespan", [True, False])
def test_the_lifespan_can_run_again(tmp_path: Path, lifespan: bool) -> None:
    app = Starlette(routes=[Mount("/", app=RecordingApp())]) if lifespan else _raw
    mw = GuardMiddleware(app, config=base_config(tmp_path))  # every stage, the audit writer included

    def twice() -> list[int]:
        codes = []
        for _ in range(2):
            with TestClient(mw) as c:
                codes.append(c.post("/predict", json=BODY).status_code)
        return codes

    assert _in_thread(twice) == [200, 200]
    assert mw.guard.closed  # the second shutdown closed the guard built for the second run


async def _raising(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("only http")  # another bare callable's answer
    await RecordingApp()(scope, receive, send)


@pytest.mark.parametrize("raw", [_raw, _raising])
def test_an_app_without_lifespan_still_gets_a_final_checkpoint(tmp_path: Path, raw: Any) -> None:
    cfg = base_config(tmp_path)
    cfg["audit"] = {**cfg["audit"], "checkpoint_every": 1000, "checkpoint_seconds": 3600}
    mw = GuardMiddleware(raw, config=cfg)

    def run() -> int:
        with TestClient(mw) as c:
            return c.post("/predict", json=BODY).status_code

    assert _in_thread(run) == 200
    assert mw.guard.closed
    store = open_store(f"sqlite:///{tmp_path}/audit.db", create=False)
    try:
        seq, _ = store.head()
        assert seq >= 1 and store.checkpoints() and store.checkpoints()[-1]["seq"] == seq  # the tail is signed
    finally:
        store.close()


def test_a_closed_writer_refuses_at_once(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/a.db")
    w = AuditWriter(store, Keyring.from_seed(b"closed-writer-seed-0123456789abcdef"))
    w.start()
    w.close()
    with pytest.raises(Unrecorded) as err:
        w.submit(json.loads("{}"))  # never queued: the item is not even looked at
    assert err.value.reason == "writer_closed"
    store.close()
