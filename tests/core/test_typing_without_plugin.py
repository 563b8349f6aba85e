"""The config models type-check in a user's ``mypy --strict`` without the pydantic mypy plugin.

Why: pydantic's ``dataclass_transform`` makes a field optional for a type checker only when its default is
given as ``Field(default=...)`` (or a plain ``= value``); ``Field(None, description=...)`` is a required
argument to mypy and pyright without the plugin, so ``RouteConfig(path="/p", pii=...)`` in a user's code failed
with ``Missing named argument "subject" [call-arg]`` (and "scan_undeclared", "model", "policies"). The repo's
own mypy run uses the plugin and never saw it: this test runs mypy with an empty config file (no plugin), in a
directory of its own, as a user would.

Measured here: about 5 s (mypy on a snippet importing mlguard.config and mlguard.policy.model, cold cache in
tmp_path); marked ``slow`` for that.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

SNIPPET = textwrap.dedent('''
    from datetime import date

    from mlguard.config import (AdminSettings, AuditSettings, ExplainSettings, FairnessSettings, GuardConfig,
                                LimitSettings, ModelBinding, PIIEngineSettings, RetentionSettings, RouteConfig)
    from mlguard.config.pii import CustomRecognizerSpec, RecognizerPattern
    from mlguard.policy.model import EntityRule, PIISection, PolicyDoc, Rule

    binding = ModelBinding(output="$.score", favorable="$.approved")
    route = RouteConfig(path="/p", pii={"$.applicant.name": "PERSON"}, model=binding)
    bare_route = RouteConfig(path="/q")
    config = GuardConfig(routes=[route, bare_route])
    settings = (LimitSettings(), AdminSettings(), RetentionSettings(), AuditSettings(), PIIEngineSettings(),
                ExplainSettings(), FairnessSettings(), ModelBinding())
    spec = CustomRecognizerSpec(entity="BADGE", patterns=[RecognizerPattern(regex="B-[0-9]{6}")])
    rule = Rule[bool](value=True, cite="(D)")
    entity = EntityRule(entity="PERSON", operator="replace", cite="(D)")
    policy = PolicyDoc(id="mine", title="Mine", instrument="(D)", jurisdiction="none", status="engineering_default",
                       effective_from=date(2024, 1, 1), review_by=date(2030, 1, 1), version="1",
                       pii=PIISection(entities=[entity]))
''')


@pytest.mark.slow
def test_config_models_need_only_their_required_arguments_without_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET, encoding="utf-8")
    (tmp_path / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")  # no settings: no pydantic plugin
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(tmp_path / "mypy.ini"),
         "--cache-dir", str(tmp_path / "mypy-cache"), "--no-error-summary", "snippet.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
