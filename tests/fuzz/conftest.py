"""The fuzz session: the guarded example built ONCE (its engines take seconds), shared by every fuzz test.

The example count comes from MLGUARD_FUZZ_EXAMPLES (bench/fuzz.py sets it for the long form); the default is
the CI smoke form. The totals are printed at the end of the run and, when MLGUARD_FUZZ_SUMMARY names a file,
written there as JSON (bench/fuzz.py reads it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.harness import FuzzEnv

_ENVS: list[FuzzEnv] = []


@pytest.fixture(scope="session")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEnv]:
    work = tmp_path_factory.mktemp("fuzz") / "work"
    work.mkdir()
    with FuzzEnv.open(work) as env:
        _ENVS.append(env)
        yield env


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ENVS:
        return
    stats = _ENVS[0].stats.as_dict()
    terminalreporter.write_sep("-", "mlguard fuzz")
    terminalreporter.write_line(f"requests: {stats['requests']}  guard 5xx: {stats['guard_server_errors']}  "
                                f"crashes: {stats['crashes']}  planted-value hits: {stats['planted_hits']}  "
                                f"stage failures: {stats['stage_failures']}  "
                                f"app's own 5xx (bare app too): {stats['app_server_errors']}")
    terminalreporter.write_line(f"statuses: {stats['statuses']}")
    terminalreporter.write_line(f"kinds: {stats['kinds']}")
    out = os.environ.get("MLGUARD_FUZZ_SUMMARY")
    if out:
        Path(out).write_text(json.dumps(stats, indent=2), encoding="utf-8")
