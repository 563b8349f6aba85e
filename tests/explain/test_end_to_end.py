"""Sealed into the real audit trail, rendered by ``mlguard explain``; planted values never in logs or files."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

pytestmark = pytest.mark.anyio
PLANTED_INCOME = 31337.25


def _scoring_app(model: Any, features: list[str]) -> Any:
    def score(doc: Any) -> dict[str, Any]:
        feats = doc["features"]
        try:
            p: float | None = float(model.predict_proba(np.array([[feats[n] for n in features]]))[0, 1])
        except (KeyError, ValueError):
            p = None
        return {"score": p, "approved": None if p is None else p >= 0.5}

    return json_app(score)


async def test_sealed_then_rendered_and_never_leaked(models: dict[str, Any], data: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlguard.audit.stage")
    mod = types.ModuleType("mlguard_e2e_model")
    mod.MODEL = models["gbc"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlguard_e2e_model", mod)
    rows = [",".join(data.features)] + [",".join(str(v) for v in r) for r in data.x[:200]]
    (tmp_path / "bg.csv").write_text("\n".join(rows) + "\n")
    cfg = {
        "policies": ["ecoa"],
        "audit": {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")},
        "explain": {"reason_catalog": {"income": "Income insufficient for amount of credit requested",
                                       "debt": "Excessive obligations", "years_employed": "Length of employment",
                                       "late_payments": "Delinquent credit obligations"}},
        "routes": [{"path": "/predict", "subject": "$.applicant.id", "protected": {"sex": "$.applicant.sex"},
                    "model": {"object": "mlguard_e2e_model:MODEL", "features": "$.features",
                              "feature_order": data.features, "output": "$.score", "favorable": "$.approved",
                              "background": "bg.csv"}}],
    }
    path = tmp_path / "mlguard.yaml"
    path.write_text(json.dumps(cfg))
    guard = Guard(path, stages=["explain", "audit"])
    mw = GuardMiddleware(_scoring_app(models["gbc"], data.features), guard=guard)
    worst = data.x[int(np.argmin(models["gbc"].predict_proba(data.x)[:, 1]))]
    feats = {n: float(v) for n, v in zip(data.features, worst, strict=True)}
    feats["income"] = -PLANTED_INCOME  # a planted value: far below anything seen, certainly refused
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
            resp = await c.post("/predict", json={"applicant": {"id": "subject-1", "sex": "F"}, "features": feats})
            bad = await c.post("/predict", json={"applicant": {"id": "s2"}, "features": {"income": "x"}})
        await guard.aclose()
    assert resp.status_code == 200 and resp.json()["approved"] is False
    assert bad.json()["explanation"]["reason"] == "feature 'income' is not a number"
    audit_id = resp.headers["mlguard-audit-id"]

    from mlguard.audit.reader import AuditReader

    reader = AuditReader(f"sqlite:///{tmp_path}/audit.db", tmp_path / "k.keyring")
    try:
        record = reader.get(audit_id)
        skipped = reader.get(bad.headers["mlguard-audit-id"])
    finally:
        reader.close()
    assert record is not None
    sealed = record["explanation"]
    assert sealed["inputs"]["income"] == -PLANTED_INCOME
    assert sealed["contributions"] == resp.json()["explanation"]["contributions"]
    assert sealed["reasons"][0]["feature"] == "income"
    assert record["model"]["class"].endswith("GradientBoostingClassifier")
    assert skipped is not None and skipped["explanation"]["reason"] == "feature 'income' is not a number"

    import mlguard.cli.explain  # noqa: F401
    from mlguard.cli._root import cli

    res = CliRunner().invoke(cli, ["explain", audit_id, "--store", f"sqlite:///{tmp_path}/audit.db",
                                   "--keyring", str(tmp_path / "k.keyring"), "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert "Decision: unfavourable" in res.output
    assert "1. Income insufficient for amount of credit requested" in res.output
    # ecoa alone does not ask for counterfactuals (explanations.counterfactuals: false): no section, a note why
    assert "What would have changed the result" not in res.stdout
    assert "does not ask for counterfactuals" in res.stderr

    planted = ("31337.25", "31337")
    for rec in caplog.records:
        assert not any(p in rec.getMessage() or p in str(rec.__dict__) for p in planted)
    for f in tmp_path.iterdir():
        if f.is_file() and f.name != "mlguard.yaml":
            blob = f.read_bytes()
            assert not any(p.encode() in blob for p in planted), f.name


def _deferred_guard(models: dict[str, Any], data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    explain: dict[str, Any]) -> tuple[Path, Guard]:
    """A gdpr guard with the explain and audit stages over the gbc model, ``explain`` as its explain settings."""
    mod = types.ModuleType("mlguard_e2e_deferred")
    mod.MODEL = models["gbc"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlguard_e2e_deferred", mod)
    cfg = {
        "policies": ["gdpr"],
        "retention": {"max": "P1Y"},
        "audit": {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")},
        "explain": explain,
        "routes": [{"path": "/predict", "subject": "$.applicant.id",
                    "model": {"object": "mlguard_e2e_deferred:MODEL", "features": "$.features",
                              "feature_order": data.features, "output": "$.score", "favorable": "$.approved",
                              "background_rows": data.rows(0, 150)}}],
    }
    path = tmp_path / "mlguard.yaml"
    path.write_text(json.dumps(cfg))
    return path, Guard(path, stages=["explain", "audit"])


def _records(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    """The decrypted records of one kind in the test's audit store."""
    from mlguard.audit.reader import AuditReader

    reader = AuditReader(f"sqlite:///{tmp_path}/audit.db", tmp_path / "k.keyring")
    try:
        return [r for r in reader.iter_records() if r["kind"] == kind]
    finally:
        reader.close()


async def test_deferred_explanation_is_linked_in_the_audit_trail(models: dict[str, Any], data: Any,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlguard.audit.stage")
    import anyio

    path, guard = _deferred_guard(models, data, tmp_path, monkeypatch, {"execution": "deferred"})
    mw = GuardMiddleware(_scoring_app(models["gbc"], data.features), guard=guard)
    feats = {n: float(v) for n, v in zip(data.features, data.x[11], strict=True)}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        resp = await c.post("/predict", json={"applicant": {"id": "subject-9"}, "features": feats})
        audit_id = resp.headers["mlguard-audit-id"]
        assert resp.json()["explanation"]["deferred"] is True

        from mlguard.audit.reader import AuditReader

        found = None
        with anyio.fail_after(10):
            while found is None:
                await anyio.sleep(0.05)
                reader = AuditReader(f"sqlite:///{tmp_path}/audit.db", tmp_path / "k.keyring")
                try:
                    found = next((r for r in reader.iter_records() if r["kind"] == "explanation"), None)
                finally:
                    reader.close()
        monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "tok")
        got = await c.get(f"/mlguard/explanations/{audit_id}", headers={"authorization": "Bearer tok"})
        assert got.status_code == 200 and got.json()["status"] == "ready"
        # out of this process's memory (a restart, another worker, newer ones pushed it out): read back from the
        # explanation event in the audit trail, the same document
        stage = next(s for s in guard.stages if s.name == "explain")
        stage.store.discard(audit_id)
        again = await c.get(f"/mlguard/explanations/{audit_id}", headers={"authorization": "Bearer tok"})
        assert again.status_code == 200 and again.json() == got.json()
        plain = await c.get(f"/mlguard/explanations/{audit_id}/plain", headers={"authorization": "Bearer tok"})
        assert plain.status_code == 200 and "What would have changed the result" in plain.text
    await guard.aclose()
    reads = _records(tmp_path, "admin_read")
    assert [r["data"] for r in reads] == [{"endpoint": "/explanations", "target": audit_id, "found": True}] * 2 + [
        {"endpoint": "/explanations/plain", "target": audit_id, "found": True}]
    assert found["data"]["audit_id"] == audit_id
    assert "inputs" not in found["data"]["explanation"]  # the event is not under the subject's key

    import mlguard.cli.explain  # noqa: F401
    from mlguard.cli._root import cli

    res = CliRunner().invoke(cli, ["explain", audit_id, "--store", f"sqlite:///{tmp_path}/audit.db",
                                   "--keyring", str(tmp_path / "k.keyring"), "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert "Data used: the model used these 5 items" in res.output
    assert "What would have changed the result:" in res.output


async def test_explanations_finished_at_shutdown_still_reach_the_audit_trail(models: dict[str, Any], data: Any,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing the guard right after a deferred request: the worker finishes the job while closing, and its
    explanation event is committed before the audit writer stops (the audit stage closes last)."""
    pytest.importorskip("mlguard.audit.stage")
    # the worker waits before it starts: the guard is closed while the job is still queued
    _, guard = _deferred_guard(models, data, tmp_path, monkeypatch,
                               {"execution": "deferred", "deferred_linger_ms": 300})
    mw = GuardMiddleware(_scoring_app(models["gbc"], data.features), guard=guard)
    feats = {n: float(v) for n, v in zip(data.features, data.x[12], strict=True)}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        resp = await c.post("/predict", json={"applicant": {"id": "subject-10"}, "features": feats})
    assert resp.status_code == 200 and resp.json()["explanation"]["deferred"] is True
    audit_id = resp.headers["mlguard-audit-id"]
    await guard.aclose()
    events = _records(tmp_path, "explanation")
    assert [e["data"]["audit_id"] for e in events] == [audit_id]
    assert events[0]["data"]["explanation"]["status"] == "ready"
