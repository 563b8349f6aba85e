"""The whole guard on the credit-scoring example: planted personal data never reaches the model, a log line, an
error response or any file on disk in clear, while the response carries its explanation and the log verifies."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from mlguard.config import load_config
from mlguard.demo import CaptureApp
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
PLANTED = {
    "name": "Quillon Vexmoor",
    "email": "q.vexmoor@vexmoor-family.example",
    "phone": "415-555-0199",
    "ssn": "912-47-3305",
    "address": "4417 Zanzibar Crescent, Tucson, AZ 85719",
    "dob": "1966-03-14",
}
NOTE = "Co-signer Ottoline Brackwater (ottoline@brack.internal, 602-555-0142) will sign on Friday."
NOTE_VALUES = ["Ottoline Brackwater", "ottoline@brack.internal", "602-555-0142"]
FEATURES = {"education_num": 9.0, "hours_per_week": 38.0, "capital_gain": 0.0, "capital_loss": 0.0,
            "is_self_employed": 0.0, "is_government": 0.0, "is_managerial_professional": 0.0,
            "is_skilled_technical": 1.0}


def _all_values() -> list[str]:
    return [*PLANTED.values(), *NOTE_VALUES]


async def test_planted_values_never_leave_in_clear(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_EXAMPLE_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", "e2e-token")
    caplog.set_level(logging.DEBUG)
    from examples.credit_scoring.app import model_app

    cfg = load_config(ROOT / "examples" / "credit_scoring" / "mlguard.yaml")
    work = tmp_path / "work"
    work.mkdir()
    cfg = cfg.model_copy(update={
        "audit": cfg.audit.model_copy(update={"store": f"sqlite:///{work / 'audit.db'}",
                                              "keyring": work / "k.keyring", "witness": work / "witness.log"}),
        "pii_engine": cfg.pii_engine.model_copy(update={"vault_path": str(work / "vault.db")}),
    })
    guard = Guard(cfg)
    capture = CaptureApp(model_app)
    app = GuardMiddleware(capture, guard=guard)
    doc = {"applicant": {"id": "APP-E2E-1", **PLANTED, "sex": "Female", "race": "Black"},
           "features": FEATURES, "note": NOTE}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.post("/predict", json=doc)
        bad_json = await c.post("/predict", content=b'{"applicant": {"name": "' + PLANTED["name"].encode(),
                                headers={"content-type": "application/json"})
        bad_type = await c.post("/predict", content=PLANTED["ssn"].encode(), headers={"content-type": "text/plain"})
        too_deep = await c.post("/predict", content=(b'{"a":' * 40) + b'"' + PLANTED["email"].encode() + b'"'
                                + b"}" * 40, headers={"content-type": "application/json"})
        record = await c.get(f"/mlguard/audit/records/{ok.headers['mlguard-audit-id']}",
                             headers={"authorization": "Bearer e2e-token"})
    await guard.aclose()

    assert ok.status_code == 200
    body = ok.json()
    assert set(body) >= {"score", "approved", "explanation"}
    exp = body["explanation"]
    assert abs(exp["base_value"] + sum(exp["contributions"].values()) - body["score"]) < 1e-6
    assert [r.status_code for r in (bad_json, bad_type, too_deep)] == [400, 415, 422]
    assert len(capture.bodies) == 1  # refused requests never reached the model

    seen_by_model = capture.bodies[0].decode()
    for value in _all_values():
        assert value not in seen_by_model, value
    assert "Female" not in seen_by_model and "Black" not in seen_by_model  # ecoa: protected never to the model

    responses = "".join(r.text for r in (ok, bad_json, bad_type, too_deep))
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    files = b"".join(p.read_bytes() for p in work.rglob("*") if p.is_file())
    for value in _all_values():
        assert value not in responses, value
        assert value not in logs, value
        assert value.encode() not in files, value

    # The key holder reads the sealed record back: redacted input, findings without values, protected attributes.
    assert record.status_code == 200
    sealed = record.json()["record"]
    assert sealed["protected"] == {"sex": "Female", "race": "Black"}
    assert sealed["findings"] and all("value" not in f for f in sealed["findings"])
    assert PLANTED["ssn"] not in str(sealed["input"])

    from mlguard.audit.verify import verify_store

    result = verify_store(f"sqlite:///{work / 'audit.db'}")
    assert result.ok and result.records >= 5  # 4 exchanges (3 refused) + the audited admin read
