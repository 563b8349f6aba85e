"""Fixtures of the fairness tests: a tiny screening app, a guard with only the fairness stage, a fake audit sink."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

TOKEN = "test-admin-token"


class FakeAuditEvents:
    """Stand-in for the audit stage's ``append_event``; ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def append_event(self, kind: str, data: dict[str, Any]) -> str:
        if self.fail:
            raise RuntimeError("audit store down")
        self.events.append((kind, data))
        return f"evt-{len(self.events)}"


def _screen(doc: Any) -> dict[str, Any]:
    """Selects a candidate when its ``points`` reach 50; answers {"selected", "score"}."""
    points = float(doc.get("points", 0))
    return {"selected": points >= 50, "score": points / 100}


screening_app = json_app(_screen)


POLICY = """\
id: test_fairness_{action}
title: Test fairness policy
instrument: test
jurisdiction: test
status: in_force
effective_from: 2026-01-01
review_by: 2027-01-01
version: "1"
extends: [nyc_ll144]
fairness:
  action: {{value: {action}, cite: "(D) test"}}
  min_group_size: {{value: 5, cite: "(D) test"}}
  max_demographic_parity_difference: {{value: 0.3, cite: "(D) test"}}
"""


CATEGORIES = {"sex": ["Female", "Male"], "race": ["Black", "White"]}
"""The values the tests send, declared (undeclared attributes are shown by digests: test_stage.py)."""


def make_config(tmp_path: Any, action: str = "annotate", **fairness: Any) -> dict[str, Any]:
    """A guard config with one screening route under a test policy extending nyc_ll144."""
    policy = tmp_path / f"fair_{action}.yaml"
    policy.write_text(POLICY.format(action=action))
    return {
        "base_dir": str(tmp_path),  # a keyring, when one is made (undeclared categories), goes there
        "policies": [str(policy)],
        "admin": {"token_env": "MLGUARD_TEST_FAIRNESS_TOKEN"},
        "fairness": {"window_size": 1000, "evaluate_every": 1, "categories": CATEGORIES, **fairness},
        "routes": [{
            "path": "/screen", "subject": "$.candidate.id",
            "protected": {"sex": "$.candidate.sex", "race": "$.candidate.race"},
            "model": {"output": "$.score", "favorable": "$.selected"},
        }],
    }


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLGUARD_TEST_FAIRNESS_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def build(config: dict[str, Any]) -> tuple[Guard, GuardMiddleware, FakeAuditEvents]:
    events = FakeAuditEvents()
    guard = Guard(config, stages=["fairness"], shared={"audit_events": events})
    return guard, GuardMiddleware(screening_app, guard=guard), events


def client(app: GuardMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
