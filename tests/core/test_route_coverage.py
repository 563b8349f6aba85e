"""A guarded route that matches no route of the app is warned about at start-up; one line for unexplained routes.

Why these tests (a developer adding mlguard to a FastAPI service): the guard config declared ``/score`` while
``APIRouter(prefix="/v1")`` served ``/v1/score``, and ``/v1/applicants/{aid}`` without ``methods`` (default
``[POST]``) for a ``@router.put`` route: both handlers got ``{"name": ...}`` in clear and start-up logged only
"guard ready". And "policy requires explanations but route has no model object" came once per route, the route
only in ``extra``, which plain formatters drop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from tests.core.conftest import base_config

NAME = "Maria Lopez"

PREFIX_MISS = ("guarded route matches no app route: declared POST /score; the app serves POST /v1/score "
               "(a router prefix or Mount path belongs in the guarded path)")
METHOD_MISS = ("guarded route matches no app route for POST: declared POST /v1/applicants/{aid}; the app serves "
               "PUT /v1/applicants/{aid} (set the route's methods; they default to [POST])")


def _routes() -> list[dict[str, Any]]:
    return [
        {"path": "/score", "pii": {"$.name": "PERSON"}},  # served as /v1/score: missed
        {"path": "/v1/applicants/{aid}", "pii": {"$.name": "PERSON"}},  # served with PUT only: missed
        {"path": "/v1/items/{item_id:int}", "methods": ["POST"]},  # a convertor, another parameter name: served
        {"path": "/legacy/predict"},  # inside a Mount: served
        {"path": "/v1/score/"},  # the trailing slash is ignored, as the guard ignores it: served
    ]


def _config(tmp_path: Path) -> dict[str, Any]:
    cfg = base_config(tmp_path, routes=_routes())
    cfg["audit"] = {**cfg["audit"], "enabled": False}
    return cfg


def _router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/score")
    async def score(doc: dict[str, Any]) -> dict[str, Any]:
        return {"score": 0.5}

    @router.put("/applicants/{aid}")
    async def applicant(aid: str, doc: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    @router.post("/items/{iid:int}")
    async def item(iid: int) -> dict[str, Any]:
        return {"ok": True}

    return router


def _legacy() -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        return JSONResponse({"score": 0.1})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlguard.coverage" and r.levelno == logging.WARNING]


def test_add_middleware_warns_at_lifespan_startup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    app = FastAPI()
    app.add_middleware(GuardMiddleware, guard=Guard(_config(tmp_path), stages=[]))
    app.include_router(_router())  # after the middleware: read at start-up, not when the guard was built
    app.mount("/legacy", _legacy())
    with TestClient(app) as c:
        assert _warnings(caplog) == [PREFIX_MISS, METHOD_MISS]  # before any request: at the lifespan startup
        assert c.post("/v1/score", json={"name": NAME}).status_code == 200
        assert c.put("/v1/applicants/7", json={"name": NAME}).status_code == 200
    assert _warnings(caplog) == [PREFIX_MISS, METHOD_MISS]  # once
    assert NAME not in caplog.text


@pytest.mark.anyio
async def test_no_lifespan_warns_at_the_first_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    app = FastAPI()
    guarded = GuardMiddleware(app, guard=Guard(_config(tmp_path), stages=[]))  # wraps the whole app
    app.include_router(_router())
    app.mount("/legacy", _legacy())
    assert _warnings(caplog) == []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t") as c:
        assert (await c.post("/v1/score", json={"name": NAME})).status_code == 200
        assert _warnings(caplog) == [PREFIX_MISS, METHOD_MISS]
        await c.post("/legacy/predict", json={"name": NAME})
    assert _warnings(caplog) == [PREFIX_MISS, METHOD_MISS]
    assert NAME not in caplog.text


def test_a_covered_app_and_an_unreadable_app_are_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mlguard")
    app = FastAPI()
    app.include_router(_router())
    app.mount("/legacy", _legacy())
    cfg = _config(tmp_path)
    cfg["routes"] = [_routes()[i] for i in (2, 3, 4)]
    cfg["log_level"] = "DEBUG"  # the Guard sets the mlguard logger's level
    with TestClient(GuardMiddleware(app, guard=Guard(cfg, stages=[]))):
        pass
    assert _warnings(caplog) == []

    class Unreadable:  # a route table that raises when read: start-up goes on, a DEBUG line says why
        @property
        def router(self) -> Any:
            raise RuntimeError("no")

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await JSONResponse({"score": 0.1})(scope, receive, send)

    with TestClient(GuardMiddleware(Unreadable(), guard=Guard(cfg, stages=[]))) as c:
        assert c.post("/v1/score", json={}).status_code == 200
    assert _warnings(caplog) == []
    assert any(r.getMessage() == "route coverage not checked" for r in caplog.records)


def test_unexplained_routes_are_one_warning_naming_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlguard")
    routes = [{"path": p, "model": {"output": "$.score", "favorable": "$.approved"}}
              for p in ("/a", "/b/{id:int}", "/c")]
    cfg = base_config(tmp_path, policies=["ecoa"], routes=routes)
    cfg["audit"] = {**cfg["audit"], "enabled": False}
    Guard(cfg, stages=["explain"])
    lines = [r.getMessage() for r in caplog.records if "no model object" in r.getMessage()]
    assert lines == ["policy requires explanations but 3 route(s) have no model object: /a, /b/{id:int}, /c"]
