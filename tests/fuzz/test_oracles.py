"""The oracles themselves can fail: each is fed an outcome that breaks it and must raise.

A fuzz run that reports "0 hits" is only worth something if a hit would have been seen; these run without the
guard (a stand-in environment), so the session's counters stay those of real traffic.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fuzz.harness import DECLARED, NOTE_VALUES, PROBLEM, FuzzEnv, FuzzRequest, LogCapture, Outcome, Stats

JSON_REQ = [(b"content-type", b"application/json")]


def _env(bare_status: int = 200) -> Any:
    return SimpleNamespace(stats=Stats(), logs=LogCapture(),
                           send_bare=lambda req: Outcome(status=bare_status))


def _check(out: Outcome, *, valid: bool = False, env: Any = None, path: str = "/predict") -> Any:
    env = env or _env()
    FuzzEnv.check(env, FuzzRequest(kind="oracle", path=path, headers=JSON_REQ, chunks=[b"{}"], valid=valid), out)
    return env


def _app_call(body: bytes, status: int = 200) -> dict[str, Any]:
    return {"body": body, "status": status, "raised": False, "path": "/predict"}


def test_a_clean_refusal_passes() -> None:
    env = _check(Outcome(status=422, headers={b"content-type": PROBLEM.encode()}, body=b'{"status": 422}'))
    assert env.stats.requests == 1 and env.stats.planted_hits == 0


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        (Outcome(error=ValueError("boom")), "exception escaped"),
        (Outcome(status=500, headers={b"content-type": b"text/plain"}, body=b"x"), "the guard answered 500"),
        (Outcome(status=422, headers={b"content-type": b"application/json"}, body=b"{}"), "content type"),
        (Outcome(status=400, headers={b"content-type": PROBLEM.encode()}, body=b"not json"), "not JSON"),
        (Outcome(status=200, app_calls=[_app_call(DECLARED["ssn"].encode())]), "received planted"),
        (Outcome(status=400, headers={b"content-type": PROBLEM.encode()},
                 body=b'{"detail": "' + NOTE_VALUES[1].encode() + b'"}'), "in the response body"),
        (Outcome(status=400, headers={b"content-type": PROBLEM.encode()}, body=b"{}",
                 app_calls=[_app_call(b"{}", 400)]), ""),  # the app's own 400: allowed, see below
        (Outcome(timed_out=True), "hung"),
    ],
    ids=["crash", "guard-500", "not-problem-json", "body-not-json", "app-got-ssn", "echoed-value", "app-400",
         "hang"],
)
def test_each_oracle_fires(outcome: Outcome, words: str) -> None:
    if not words:
        _check(outcome)
        return
    with pytest.raises(AssertionError, match=words):
        _check(outcome)


def test_a_valid_request_must_be_200_with_an_audit_id() -> None:
    with pytest.raises(AssertionError, match="valid application answered 422"):
        _check(Outcome(status=422, headers={b"content-type": PROBLEM.encode()}, body=b"{}"), valid=True)
    with pytest.raises(AssertionError, match="without MLGuard-Audit-Id"):
        _check(Outcome(status=200, app_calls=[_app_call(b"{}")]), valid=True)


def test_an_app_5xx_is_blamed_on_the_guard_unless_the_bare_app_fails_too() -> None:
    out = Outcome(status=500, app_calls=[_app_call(b"{}", 500)])
    with pytest.raises(AssertionError, match="behind the guard, 200 bare"):
        _check(out, env=_env(bare_status=200))
    env = _check(Outcome(status=500, app_calls=[_app_call(b"{}", 500)]), env=_env(bare_status=500))
    assert env.stats.app_server_errors == 1 and env.stats.guard_server_errors == 0


def test_a_planted_value_in_a_log_record_fires() -> None:
    env = _env()
    logger = logging.getLogger("mlguard.fuzz-oracle")
    logger.addHandler(env.logs)
    logger.propagate = False  # not to the session's capture: that one must see only real traffic
    try:
        logger.warning("oops", extra={"value": DECLARED["email"]})
    finally:
        logger.removeHandler(env.logs)
        logger.propagate = True
    with pytest.raises(AssertionError, match="in a log record"):
        _check(Outcome(status=200, app_calls=[_app_call(b"{}")]), env=env)
