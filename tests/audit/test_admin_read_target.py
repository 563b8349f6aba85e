"""An admin record read whose target is not an audit id is answered 404 unread, and the trail keeps only its
length, never the string.

A security review read ``/mlguard/audit/records/zq@quackmail.eu``: the ``admin_read`` event kept the e-mail
address as its ``target`` (sealed, but kept for the retention period, outside any subject's erasure).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app
from tests.audit.conftest import records_of_kind

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer tok"}


def _config(tmp_path: Path) -> dict[str, Any]:
    return {"policies": ["base"], "base_dir": str(tmp_path),
            "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring"},
            "routes": [{"path": "/predict", "model": {"output": "$.score"}}]}


def _reads(tmp_path: Path) -> list[dict[str, Any]]:
    return records_of_kind(tmp_path, "admin_read", "k.keyring")


@pytest.mark.parametrize("target", ["zq@quackmail.eu", "Zephyrine Quackworth", "078-05-1120", "nope",
                                    "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}"])
async def test_a_target_that_is_not_an_audit_id_is_not_read_and_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "tok")
    guard = Guard(_config(tmp_path), stages=["audit"])
    app = GuardMiddleware(json_app(lambda doc: {"score": 0.5}), guard=guard)
    stage: Any = guard.stages[0]
    looked_up: list[str] = []
    real_get = stage.reader.get
    monkeypatch.setattr(stage.reader, "get", lambda audit_id: looked_up.append(audit_id) or real_get(audit_id))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get(f"/mlguard/audit/records/{quote(target, safe='')}", headers=AUTH)
    await guard.aclose()
    assert r.status_code == 404 and target not in r.text
    assert looked_up == []  # not read
    reads = _reads(tmp_path)
    assert [x["data"] for x in reads] == [
        {"endpoint": "/audit/records", "target": {"not_an_audit_id": True, "length": len(target)}, "found": False}]
    assert r.json()["read_id"] == reads[0]["audit_id"]
    assert target not in repr(reads)


async def test_a_well_formed_audit_id_is_read_and_kept_as_before(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "tok")
    guard = Guard(_config(tmp_path), stages=["audit"])
    app = GuardMiddleware(json_app(lambda doc: {"score": 0.5}), guard=guard)
    absent = str(uuid.uuid4())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        present = (await client.post("/predict", json={"x": 1})).headers["mlguard-audit-id"]
        found = await client.get(f"/mlguard/audit/records/{present}", headers=AUTH)
        missing = await client.get(f"/mlguard/audit/records/{absent}", headers=AUTH)
        upper = await client.get(f"/mlguard/audit/records/{absent.upper()}", headers=AUTH)
    await guard.aclose()
    assert found.status_code == 200 and found.json()["record"]["audit_id"] == present
    assert missing.status_code == upper.status_code == 404
    assert [x["data"] for x in _reads(tmp_path)] == [
        {"endpoint": "/audit/records", "target": present, "found": True},
        {"endpoint": "/audit/records", "target": absent, "found": False},
        {"endpoint": "/audit/records", "target": absent.upper(), "found": False}]
