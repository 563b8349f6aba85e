"""`mlguard fairness resume|status` against a running guarded server (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from mlguard.cli import main
from tests.fairness.conftest import build, make_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Any, token: str) -> Iterator[tuple[str, Any, Any]]:
    guard, app, events = build(make_config(tmp_path, action="block"))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 10
    while not srv.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", guard, events
    finally:
        srv.should_exit = True
        th.join(timeout=10)


def test_resume_cli_resumes_a_stopped_route(server: tuple[str, Any, Any], capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    url, guard, events = server
    with httpx.Client(base_url=url) as c:
        for i in range(40):
            c.post("/screen", json={"candidate": {"id": f"m{i}", "sex": "Male", "race": "White"}, "points": 90})
        for i in range(200):
            r = c.post("/screen", json={"candidate": {"id": f"f{i}", "sex": "Female", "race": "Black"},
                                        "points": 10})
            if r.status_code == 503:
                break
        assert r.status_code == 503
    assert main(["fairness", "status", "--url", url, "--prefix", "/mlguard",
                 "--token-env", "MLGUARD_TEST_FAIRNESS_TOKEN"]) == 1  # in violation
    assert main(["fairness", "resume", "--url", url, "--route", "0", "--reason", "reviewed by HR",
                 "--token-env", "MLGUARD_TEST_FAIRNESS_TOKEN"]) == 0
    assert not guard.is_halted(guard.table.routes[0])
    assert events.events[-1][0] == "oversight" and events.events[-1][1]["action"] == "resume"
    assert events.events[-1][1]["reason"] == "reviewed by HR"


def test_resume_cli_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLGUARD_NO_SUCH_TOKEN", raising=False)
    assert main(["fairness", "resume", "--url", "http://127.0.0.1:9", "--token-env", "MLGUARD_NO_SUCH_TOKEN"]) == 2


def test_resume_cli_wrong_token_fails(server: tuple[str, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, _ = server
    monkeypatch.setenv("MLGUARD_WRONG", "nope")
    assert main(["fairness", "resume", "--url", url, "--token-env", "MLGUARD_WRONG"]) == 1


def test_resume_cli_does_not_lift_a_manual_stop(server: tuple[str, Any, Any], capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    url, guard, events = server
    with httpx.Client(base_url=url) as c:
        r = c.post("/mlguard/routes/0/stop", json={"reason": "bias review HR-123"},
                   headers={"authorization": "Bearer test-admin-token"})
        assert r.status_code == 200
    capsys.readouterr()
    assert main(["fairness", "resume", "--url", url, "--route", "0", "--reason", "monitor looked fine",
                 "--token-env", "MLGUARD_TEST_FAIRNESS_TOKEN"]) == 1
    assert "human oversight" in capsys.readouterr().err
    assert guard.is_halted(guard.table.routes[0])
    assert [d["action"] for k, d in events.events if k == "oversight"] == ["stop"]
    assert events.events[0][1]["reason"] == "bias review HR-123"
