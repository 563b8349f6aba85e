"""The README documents every configuration key; the public API is sorted and complete."""

from __future__ import annotations

from pathlib import Path

import mlguard
from mlguard.config.reference import iter_keys, markdown_table

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def test_readme_config_table_matches_the_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table(), "regenerate with: python -m mlguard config reference"
    for key, _, _, _ in iter_keys():
        assert f"`{key}`" in table


def test_readme_quickstart_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick


def test_public_api_sorted_and_complete() -> None:
    assert mlguard.__all__ == sorted(mlguard.__all__)
    for name in mlguard.__all__:
        assert hasattr(mlguard, name)
