"""Fixtures for policy tests: a fresh policy cache per test and a factory for small policy files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlguard.policy import clear_cache


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def make_policy(tmp_path: Path) -> Callable[..., Path]:
    """Write ``<tmp>/<pid>.yaml`` with valid metadata plus the given sections; returns its path."""

    def make(pid: str, *, extends: list[str] | None = None, raw: str | None = None, **sections: Any) -> Path:
        path = tmp_path / f"{pid}.yaml"
        if raw is not None:
            path.write_text(raw, encoding="utf-8")
            return path
        doc: dict[str, Any] = {
            "id": pid, "title": f"test policy {pid}", "instrument": "test", "jurisdiction": "test",
            "status": "engineering_default", "effective_from": "2026-01-01", "review_by": "2099-12-31",
            "version": "1", "extends": extends if extends is not None else ["base"],
        }
        doc.update(sections)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    return make
