"""``audit.store: "sqlite:///:memory:"`` is a ConfigError naming audit.store, not a raw FileNotFoundError.

The walk-through built its config in code with an in-memory store (as one does in tests) and got
``FileNotFoundError: [Errno 2] No such file or directory: ':memory:'``; from a config file the same URL made a
file literally named ``:memory:`` in the config's directory. An in-memory trail cannot be one: it vanishes with
the process and each of the store's connections (writer thread, readers) would see its own empty database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlguard.audit.store.base import open_store
from mlguard.config import load_config
from mlguard.errors import ConfigError
from mlguard.runtime import Guard


def _config(tmp_path: Path, store: str) -> dict[str, object]:
    return {"policies": ["base"], "retention": {"max": "P3Y"},
            "audit": {"store": store, "keyring": str(tmp_path / "k.keyring")},
            "routes": [{"path": "/predict"}]}


def _says_why(exc: ConfigError) -> None:
    assert exc.field == "audit.store"
    assert "vanish with the process" in exc.message
    assert "writer thread and the readers" in exc.message
    assert "sqlite:///{tmp}/audit.db" in exc.message


def test_memory_store_in_code_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Guard(_config(tmp_path, "sqlite:///:memory:"), stages=["audit"])
    _says_why(info.value)


def test_memory_store_in_a_config_file_is_refused_and_no_file_is_made(tmp_path: Path) -> None:
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text('retention: {max: P3Y}\naudit: {store: "sqlite:///:memory:"}\nroutes: [{path: /predict}]\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    _says_why(info.value)
    assert info.value.file == str(cfg)
    assert not (tmp_path / ":memory:").exists()


def test_open_store_refuses_a_memory_url(tmp_path: Path) -> None:
    """A store opened by URL (a config built with model_copy, the CLI's --store) is refused the same way,
    also once a relative ``:memory:`` was resolved against a directory."""
    for url in ("sqlite:///:memory:", f"sqlite:///{tmp_path}/:memory:"):
        with pytest.raises(ConfigError) as info:
            open_store(url)
        _says_why(info.value)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_shared_fairness_store_is_a_config_error(tmp_path: Path) -> None:
    cfg = {**_config(tmp_path, f"sqlite:///{tmp_path}/audit.db"), "fairness": {"shared_store": "sqlite:///:memory:"}}
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.field == "fairness.shared_store"
    assert "PostgreSQL" in info.value.message


def test_a_file_store_still_opens(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/audit.db")
    store.close()
    assert (tmp_path / "audit.db").exists()


@pytest.mark.parametrize("vault", [":memory:", " :memory: ", ""])
def test_a_token_vault_in_memory_is_refused_too(tmp_path: Path, vault: str) -> None:
    """From a config file, ``pii_engine.vault_path: ":memory:"`` became a file named ``:memory:``; in memory, the
    tokens issued could not be resolved after a restart nor erased by ``audit shred``."""
    path = tmp_path / "mlguard.yaml"
    path.write_text(f'policies: [base]\npii_engine: {{vault_path: "{vault}"}}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "pii_engine.vault_path" and "the token vault must be a file" in str(info.value)
    assert not (tmp_path / ":memory:").exists()
