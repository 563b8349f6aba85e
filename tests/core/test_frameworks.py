"""``add_middleware(GuardMiddleware, config=...)`` works in Starlette and FastAPI, as the README shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlguard.middleware import GuardMiddleware
from tests.core.conftest import base_config

pytestmark = pytest.mark.anyio


def _config(tmp_path: Path) -> dict[str, Any]:
    cfg = base_config(tmp_path, policies=["ecoa"])
    cfg["audit"] = {**cfg["audit"], "enabled": False}  # its keyring (fairness names groups with it) in tmp_path
    cfg["routes"][0]["scan_undeclared"] = False
    return cfg


async def _exercise(app: Any) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        good = await c.post("/predict", json={"applicant": {"id": "A", "sex": "F"}, "x": 1})
        bad = await c.post("/predict", content=b"{", headers={"content-type": "application/json"})
        other = await c.get("/health")
    return good, bad, other


async def test_starlette_add_middleware(tmp_path: Path) -> None:
    received: list[Any] = []

    async def predict(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"score": 0.4, "approved": False})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)])
    app.add_middleware(GuardMiddleware, config=_config(tmp_path))
    good, bad, other = await _exercise(app)
    assert good.status_code == 200 and good.headers["mlguard-audit-id"]
    assert received == [{"applicant": {"id": "A"}, "x": 1}]  # ecoa: sex removed before the app
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert other.json() == {"ok": True} and "mlguard-audit-id" not in other.headers


async def test_fastapi_add_middleware(tmp_path: Path) -> None:
    app = FastAPI()
    received: list[Any] = []

    @app.post("/predict")
    async def predict(doc: dict[str, Any]) -> dict[str, Any]:
        received.append(doc)
        return {"score": 0.9, "approved": True}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(GuardMiddleware, config=_config(tmp_path))
    good, bad, other = await _exercise(app)
    assert good.status_code == 200 and good.json()["approved"] is True
    assert good.headers["mlguard-policy"] == "ecoa"
    assert received == [{"applicant": {"id": "A"}, "x": 1}]
    assert bad.status_code == 400 and len(received) == 1
    assert other.status_code == 200 and "mlguard-audit-id" not in other.headers
