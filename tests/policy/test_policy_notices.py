"""A policy's notices (not yet in effect, past its review date, conflicts) are told when the guard starts and by
``mlguard config check``, whoever composed the policy first.

Why these tests: the notices were logged when a policy was composed, and composition is cached per process.
``mlguard serve`` with one worker composes in its pre-start check (under a logger showing warnings only), so the
guard built afterwards in the same process said nothing: a deployment under eu_ai_act never learnt that the policy
it enforces applies only from a later date. With ``--workers 2`` the fresh worker processes said it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlguard.cli._root import cli
from mlguard.policy import resolve_policies
from mlguard.runtime import Guard

FUTURE = "policy future applies from 2099-01-01; it is enforced now as configured"
OLD = "policy old (version 1) is past its review_by date 2020-01-01: check it against the law"


@pytest.fixture
def policies(make_policy: Callable[..., Path]) -> tuple[Path, Path]:
    return (make_policy("future", effective_from="2099-01-01"),
            make_policy("old", effective_from="2019-01-01", review_by="2020-01-01"))


def notices(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mlguard.policy"]


def test_the_guard_tells_them_though_the_policy_was_composed_before(
        policies: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    future, old = policies
    resolve_policies([str(future), str(old)])  # what serve's pre-start check does in the same process
    caplog.set_level(logging.INFO, logger="mlguard")
    Guard({"policies": [str(future), str(old)], "audit": {"enabled": False}}, stages=[])
    assert notices(caplog) == [(logging.INFO, FUTURE), (logging.WARNING, OLD)]
    caplog.clear()
    Guard({"policies": [str(future), str(old)], "audit": {"enabled": False}}, stages=[])  # every start says them
    assert notices(caplog) == [(logging.INFO, FUTURE), (logging.WARNING, OLD)]


def test_a_routes_own_policies_are_told_once(policies: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    future, _ = policies
    caplog.set_level(logging.INFO, logger="mlguard")
    routes = [{"path": p, "subject": "$.id", "policies": [str(future)]} for p in ("/a", "/b")]
    Guard({"policies": ["base"], "routes": routes, "audit": {"enabled": False}}, stages=[])
    assert notices(caplog) == [(logging.INFO, FUTURE)]


def test_config_check_prints_them(policies: tuple[Path, Path], tmp_path: Path) -> None:
    future, old = policies
    path = tmp_path / "mlguard.yaml"
    path.write_text(yaml.safe_dump({"policies": [str(future), str(old)], "audit": {"enabled": False}}),
                    encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"note: {FUTURE}" in result.output
    assert f"warning: {OLD}" in result.output
