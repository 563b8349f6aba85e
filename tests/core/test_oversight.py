"""Human oversight shared by workers: a stop taken through one guard stops every guard on the same audit store,
survives a restart, and a resume (with or without a fairness override) reaches them all.

Two Guard objects on one SQLite audit file stand for two worker processes (each has its own in-process state;
they share only the store, as processes do). ``refresh()`` is what the refresher thread runs every second; it is
called directly so the test does not depend on timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from tests.core.conftest import RecordingApp, base_config

AUTH = {"authorization": "Bearer s3cret"}
BODY = {"applicant": {"id": "A-1", "sex": "F"}, "x": 1}


def _worker(tmp_path: Path) -> GuardMiddleware:
    return GuardMiddleware(RecordingApp(), guard=Guard(base_config(tmp_path), stages=["audit"]))


async def _status(mw: GuardMiddleware) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        return (await c.post("/predict", json=BODY)).status_code


@pytest.mark.anyio
async def test_stop_through_one_worker_stops_the_others_and_survives_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "s3cret")
    a, b = _worker(tmp_path), _worker(tmp_path)
    restarted: GuardMiddleware | None = None
    try:
        assert a.guard.oversight.shared and b.guard.oversight.shared
        assert await _status(a) == 200 and await _status(b) == 200
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") as c:
            assert (await c.post("/mlguard/routes/0/stop", headers=AUTH)).status_code == 200
        assert await _status(a) == 503  # the worker that took the stop: at once
        b.guard.oversight.refresh()      # the other: at its next refresh (every second)
        assert await _status(b) == 503

        restarted = _worker(tmp_path)  # a worker (re)started while the route is stopped starts stopped
        assert await _status(restarted) == 503

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=b), base_url="http://t") as c:
            assert (await c.post("/mlguard/routes/0/resume", headers=AUTH)).status_code == 200
        assert await _status(b) == 200
        a.guard.oversight.refresh()
        restarted.guard.oversight.refresh()
        assert await _status(a) == 200 and await _status(restarted) == 200
    finally:
        for mw in (a, b, restarted):
            if mw is not None:
                await mw.guard.aclose()


@pytest.mark.anyio
async def test_fairness_override_is_shared(tmp_path: Path) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)
    try:
        route = a.guard.table.routes[0]
        a.guard.halt(route.index)
        a.guard.resume(route.index, override=True)
        b.guard.oversight.refresh()
        assert not b.guard.is_halted(route) and b.guard.oversight.overridden(route.index)
        b.guard.halt(route.index)  # a later stop clears the override everywhere
        a.guard.oversight.refresh()
        assert a.guard.is_halted(route) and not a.guard.oversight.overridden(route.index)
    finally:
        await a.guard.aclose()
        await b.guard.aclose()


@pytest.mark.anyio
async def test_without_an_audit_store_the_state_is_per_process(tmp_path: Path) -> None:
    cfg: dict[str, Any] = base_config(tmp_path, audit={"enabled": False})
    one, two = Guard(cfg, stages=["audit"]), Guard(cfg, stages=["audit"])
    try:
        assert not one.oversight.shared
        one.halt(0)
        two.oversight.refresh()
        assert one.is_halted(one.table.routes[0]) and not two.is_halted(two.table.routes[0])
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.anyio
async def test_a_stop_that_cannot_be_shared_says_so_and_still_stops_this_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlguard.errors import AuditUnavailable

    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "s3cret")
    a = _worker(tmp_path)
    try:
        store = a.guard.context.shared["audit_store"]

        def down(*_: Any) -> None:
            raise AuditUnavailable("audit store (sqlite) failed")

        monkeypatch.setattr(store, "put_oversight", down)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") as c:
            r = await c.post("/mlguard/routes/0/stop", headers=AUTH)
        assert r.status_code == 503 and "this worker only" in r.json()["detail"]
        assert r.json()["audit_event"]  # the stop itself was audited before
        assert await _status(a) == 503
    finally:
        await a.guard.aclose()


@pytest.mark.anyio
async def test_admin_errors_are_problem_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler's plain-JSON error (here: no route 99) reaches the client as problem+json, its detail kept."""
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "s3cret")
    a = _worker(tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") as c:
            r = await c.post("/mlguard/routes/99/stop", headers=AUTH)
            ok = await c.get("/mlguard/health")
    finally:
        await a.guard.aclose()
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == 404 and doc["title"] == "Not Found" and doc["detail"] == "no such route index"
    assert doc["type"].endswith("/not-found")
    assert ok.headers["content-type"] == "application/json"  # successes keep their type


@pytest.mark.anyio
async def test_fairness_and_human_stops_are_shared_apart(tmp_path: Path) -> None:
    """The monitor's stop and a person's are two rows in the store: another worker sees which holds, and lifting
    one leaves the other in force there too."""
    a, b = _worker(tmp_path), _worker(tmp_path)
    restarted: GuardMiddleware | None = None
    try:
        a.guard.oversight.halt(0, by="fairness")
        b.guard.halt(0)  # a person, through the other worker, before it has seen the monitor's stop
        a.guard.oversight.refresh()
        b.guard.oversight.refresh()
        assert a.guard.oversight.stopped_by(0) == b.guard.oversight.stopped_by(0) == ("human", "fairness")
        restarted = _worker(tmp_path)
        assert restarted.guard.oversight.stopped_by(0) == ("human", "fairness")
        a.guard.resume(0)  # the person's resume
        b.guard.oversight.refresh()
        assert b.guard.oversight.stopped_by(0) == ("fairness",) and await _status(b) == 503
        b.guard.oversight.resume(0, override=True, by="fairness")
        a.guard.oversight.refresh()
        assert not a.guard.is_halted(a.guard.table.routes[0]) and a.guard.oversight.overridden(0)
        a.guard.oversight.end_override(0)
        b.guard.oversight.refresh()
        assert not b.guard.oversight.overridden(0) and await _status(b) == 200
    finally:
        for mw in (a, b, restarted):
            if mw is not None:
                await mw.guard.aclose()
