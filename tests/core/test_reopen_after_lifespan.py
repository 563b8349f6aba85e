"""An app reused after ``with TestClient(app)`` still guards (and audits) requests from clients without lifespan.

Why (a developer's test suite): one test's ``with TestClient(app)`` block ran the lifespan shutdown, which closed
the guard (audit writer drained and closed); a later ``TestClient(app)`` without ``with`` or
``httpx.AsyncClient(transport=ASGITransport(app))`` then got 503 on every guarded request under fail_closed
(served with no audit record under fail_open).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from mlguard.audit.store.base import open_store
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app
from tests.core.conftest import base_config

BODY = {"applicant": {"id": "A-1", "sex": "F"}, "x": 1}
REOPENED = "the guard was closed by the app's lifespan shutdown; reopened for a request that came after it"


def _guarded(tmp_path: Path) -> GuardMiddleware:
    app = json_app(lambda doc: {"score": 0.7, "approved": True})  # answers lifespan by returning: the guard's own
    return GuardMiddleware(app, guard=Guard(base_config(tmp_path), stages=["audit"]))  # base: fail_closed


def _records(tmp_path: Path) -> int:
    store = open_store(f"sqlite:///{tmp_path}/audit.db", create=False)
    try:
        seq, _ = store.head()
        return int(seq)
    finally:
        store.close()


def _reopened(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage() == REOPENED and r.levelno == logging.INFO for r in caplog.records)


def _after_a_lifespan(mw: GuardMiddleware) -> None:
    with TestClient(mw) as c:
        assert c.post("/predict", json=BODY).status_code == 200
    assert mw.guard.closed


def test_testclient_without_with_after_one_with(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    mw = _guarded(tmp_path)
    _after_a_lifespan(mw)
    r = TestClient(mw).post("/predict", json=BODY)  # no lifespan
    assert r.status_code == 200 and r.headers["mlguard-audit-id"]
    assert not mw.guard.closed and _reopened(caplog) == 1
    anyio.run(mw.guard.aclose)  # drain the writer before counting
    assert _records(tmp_path) == 2


def test_concurrent_first_requests_reopen_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    mw = _guarded(tmp_path)
    _after_a_lifespan(mw)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
            out: list[Any] = [None] * 6

            async def one(i: int) -> None:
                out[i] = (await c.post("/predict", json=BODY)).status_code

            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(one, i)
        await mw.guard.aclose()
        return out

    assert anyio.run(burst) == [200] * 6
    assert _reopened(caplog) == 1
    assert _records(tmp_path) == 7


def test_a_guard_closed_by_its_owner_is_not_reopened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlguard")
    mw = _guarded(tmp_path)
    closed = mw.guard
    anyio.run(closed.aclose)  # not a lifespan shutdown: the owner closed it and means it
    assert TestClient(mw).post("/predict", json=BODY).status_code == 503
    assert mw.guard is closed and _reopened(caplog) == 0
