"""The hiring-screen example: its config loads under nyc_ll144 + eeoc_four_fifths and fairness works without a
model object."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mlguard.config import load_config
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "hiring_screen" / "mlguard.yaml"


@pytest.mark.anyio
async def test_hiring_screen_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from examples.hiring_screen.app import model_app
    from examples.hiring_screen.simulate import candidate

    cfg = load_config(CONFIG)
    assert cfg.routes[0].model is not None and cfg.routes[0].model.object is None
    guard = Guard(cfg, stages=["fairness"])
    assert guard.policy.ids == ["nyc_ll144", "eeoc_four_fifths"]
    st = guard.stages[0].routes[0]
    assert st.action == "alert" and st.thresholds.min_impact_ratio == 0.8
    assert st.thresholds.exclude_below_share == 0.02
    received: list[bytes] = []

    async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
        async def rec():  # type: ignore[no-untyped-def]
            msg = await receive()
            received.append(msg.get("body", b""))
            return msg
        await model_app(scope, rec, send)

    app = GuardMiddleware(spy, guard=guard)
    rng = random.Random(1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for i in range(50):
            body, _ = candidate(i, rng)
            r = await c.post("/screen", json=body)
            assert r.status_code == 200, r.text
            assert r.headers["mlguard-fairness"] in ("ok", "warn", "violation", "insufficient")
    assert st.window.snapshot()
    assert all(b"Black or African American" not in b and b'"sex"' not in b for b in received)
