"""docs/POLICIES.md documents every shipped policy, and its example policies are valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlguard.policy import bundled_policies, load_policy_file, resolve_policies

DOC = Path(__file__).resolve().parents[2] / "docs" / "POLICIES.md"


def test_every_shipped_policy_has_a_section_with_its_version() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, path in bundled_policies().items():
        doc = load_policy_file(path)
        assert f"### `{name}`: {doc.title}" in text
        assert f"version {doc.version}" in text


@pytest.mark.parametrize("block", re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S))
def test_example_policies_in_the_docs_are_valid(block: str, tmp_path: Path) -> None:
    data = yaml.safe_load(block)
    path = tmp_path / f"{data['id']}.yaml"
    path.write_text(block, encoding="utf-8")
    policy = resolve_policies([path])
    assert policy.ids == [data["id"]]
