"""Tamper vectors: one corruption per file, each detected at the right seq (and the files are reproducible)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlguard.audit.bundle import Bundle
from mlguard.audit.verify import verify_log
from mlguard.cli import cli

VECTORS = Path(__file__).parent / "vectors"
EXPECTED: dict[str, int | None] = json.loads((VECTORS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector_detected_at_right_seq(name: str) -> None:
    b = Bundle(VECTORS / name)
    res = verify_log(b.rows(), head=b.head, checkpoints=b.checkpoints, public_keys=b.keys)
    want = EXPECTED[name]
    if want is None:
        assert res.ok, res.as_dict()
    else:
        assert not res.ok and res.seq == want, res.as_dict()
    out = CliRunner().invoke(cli, ["audit", "verify", "--bundle", str(VECTORS / name)])
    assert out.exit_code == (0 if want is None else 1), out.output
    if want is not None:
        assert f"INTEGRITY FAILURE at seq {want}:" in out.output
        assert "expected:" in out.output and "calculated:" in out.output


def test_vectors_are_reproducible(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    for name in EXPECTED:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


def test_pinned_pubkey_rejects_other_key() -> None:
    b = Bundle(VECTORS / "intact.jsonl")
    res = verify_log(b.rows(), head=b.head, checkpoints=b.checkpoints, public_keys=b.keys, trusted={})
    assert not res.ok
    pub = next(iter(b.keys.values())).hex()
    ok = CliRunner().invoke(cli, ["audit", "verify", "--bundle", str(VECTORS / "intact.jsonl"), "--pubkey", pub])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["audit", "verify", "--bundle", str(VECTORS / "intact.jsonl"),
                                   "--pubkey", "00" * 32])
    assert bad.exit_code == 1


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    from mlguard.cli import main

    assert main(["audit", "verify"]) == 2
    assert main(["audit", "verify", "--bundle", str(tmp_path / "nope.zip")]) == 2
    assert main(["audit", "verify", "--store", f"sqlite:///{tmp_path}/none.db"]) == 2
