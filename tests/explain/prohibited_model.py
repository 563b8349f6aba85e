"""A classifier that scores prohibited bases (Sex, Marital Status, age) heavily, as a careless deployment's might,
with the inputs whose reasons are known for it: shared by the lawful-notice tests (reasons, counterfactuals,
refusals of decisions without complete reasons)."""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

FEATURES = ["income", "debt", "Sex", "Marital Status", "age"]
PROHIBITED = ("Sex", "Marital Status", "age")
CATALOG = {"income": "Amount of income", "debt": "Amount of debt"}
PLANTED_INCOME = 81.953125  # an input value that must never reach a response, a log line or a message
# For this fixed model: the lawful factors are favourable, the prohibited ones are not; refused.
ON_PROHIBITED_ONLY = {"income": PLANTED_INCOME, "debt": 8.0, "Sex": 0.0, "Marital Status": 0.0, "age": 25.0}
# An ordinary refusal: the lawful factors carry it.
ORDINARY = {"income": 25.0, "debt": 35.0, "Sex": 1.0, "Marital Status": 0.0, "age": 45.0}


def scored_model() -> tuple[Any, list[dict[str, float]]]:
    """The fitted classifier (fixed seeds) and 200 background rows."""
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(11)
    n = 600
    x = np.column_stack([rng.normal(50, 15, n).round(1), rng.normal(20, 8, n).round(1),
                         rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float),
                         rng.integers(18, 80, n).astype(float)])
    logit = (0.04 * (x[:, 0] - 50) - 0.05 * (x[:, 1] - 20) + 3.0 * (x[:, 2] - 0.5) + 1.5 * (x[:, 3] - 0.5)
             + 0.04 * (x[:, 4] - 45))
    y = (logit + rng.normal(0, 0.3, n) > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    return model, [dict(zip(FEATURES, map(float, r), strict=True)) for r in x[:200]]


def client(mw: Any) -> httpx.AsyncClient:
    """An in-process client of the guarded app."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t")


def sealed_record(tmp_path: Path, audit_id: str) -> dict[str, Any]:
    """The decrypted audit record ``audit_id`` of the trail the tests keep in ``tmp_path``."""
    from mlguard.audit.reader import AuditReader

    reader = AuditReader(f"sqlite:///{tmp_path}/audit.db", tmp_path / "k.keyring")
    try:
        record = reader.get(audit_id)
    finally:
        reader.close()
    assert record is not None
    return record


def build_guard(scored: tuple[Any, list[dict[str, float]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                policies: list[str], *, module: str, token: str, explain: dict[str, Any] | None = None
                ) -> tuple[Path, Any]:
    """A guard with the explain and audit stages over the scored model (importable as ``module:MODEL``), its
    config written to ``tmp_path/mlguard.yaml``, the admin token set; returns (config path, Guard)."""
    from mlguard.runtime import Guard

    model, rows = scored
    mod = types.ModuleType(module)
    mod.MODEL = model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, mod)
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", token)
    cfg = {
        "policies": policies,
        "retention": {"max": "P2Y3M"},
        "audit": {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")},
        "explain": {"reason_catalog": CATALOG, **(explain or {})},
        "routes": [{"path": "/predict", "subject": "$.applicant.id", "protected": {"sex": "$.applicant.sex"},
                    "model": {"object": f"{module}:MODEL", "features": "$.features",
                              "feature_order": FEATURES, "output": "$.score", "favorable": "$.approved",
                              "background_rows": rows}}],
    }
    path = tmp_path / "mlguard.yaml"
    path.write_text(json.dumps(cfg))
    return path, Guard(path, stages=["explain", "audit"])
