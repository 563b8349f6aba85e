"""The keyring from env MLGUARD_KEYRING on the command line, and the keyring file the guard creates itself.

- ``keys show`` reads the variable as the ``audit`` commands do (an explicit ``--keyring`` wins);
- ``keys rotate`` / ``keys retire`` on it write the new keyring where the user says (``--out FILE``, 0600, no
  overwrite without ``--force``; ``--print-env``), never silently, never printing key material unasked;
- a missing keyring file while the variable is set is never answered with "mlguard keys init";
- a guard that creates its keyring file (no variable) says so in a WARNING naming the file and the variable.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlguard.audit.store.base import open_store
from mlguard.keys import ENV_VAR, Keyring
from mlguard.runtime import Guard
from tests.core.conftest import base_config

SEED = base64.b64encode(b"mlguard-env-keyring-seed-0123456789").decode()


@pytest.fixture
def env_ring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Keyring:
    """MLGUARD_KEYRING set, working directory empty (no mlguard.keyring to fall back on)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, SEED)
    return Keyring.from_env(SEED)


def run(*args: str) -> Result:
    from mlguard.cli import cli

    return CliRunner().invoke(cli, ["keys", *args])


def _material(ring_doc: dict[str, object]) -> list[str]:
    """Every secret string of a keyring document (root key, KEKs, signing seeds)."""
    doc = json.loads(json.dumps(ring_doc))
    return [doc["root"]["key"], *(k["key"] for k in doc["keks"]), *(s["seed"] for s in doc["signing"])]


# ---------------------------------------------------------------------------------------------- read only


def test_show_reads_the_environment(env_ring: Keyring, tmp_path: Path) -> None:
    res = run("show")
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["path"] == "env" and shown["active_kek"] == env_ring.active_kek_id()
    assert os.listdir(tmp_path) == []


def test_an_explicit_keyring_wins_over_the_environment(env_ring: Keyring, tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "file.keyring")
    res = run("show", "--keyring", "file.keyring")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["active_kek"] == ring.active_kek_id() != env_ring.active_kek_id()


@pytest.mark.parametrize("command", [["show"], ["rotate"], ["retire", "kek-x", "--store", "sqlite:///a.db"]])
def test_a_missing_file_never_suggests_init_when_the_variable_is_set(env_ring: Keyring, tmp_path: Path,
                                                                     command: list[str]) -> None:
    res = run(*command, "--keyring", "nope.keyring")
    assert res.exit_code == 2
    assert "keys init" not in res.output and ENV_VAR in res.output, res.output
    assert os.listdir(tmp_path) == []


def test_an_empty_variable_is_named_not_answered_with_init(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, "")
    res = run("show")
    assert res.exit_code == 2 and "keys init" not in res.output and "set but empty" in res.output, res.output


def test_without_the_variable_a_missing_file_still_suggests_init(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    res = run("show")
    assert res.exit_code == 2 and "mlguard keys init --out mlguard.keyring" in res.output, res.output


# ---------------------------------------------------------------------------------------------- rotate


def test_rotate_needs_a_destination_and_writes_nothing_without_one(env_ring: Keyring, tmp_path: Path) -> None:
    res = run("rotate")
    assert res.exit_code == 2 and "--out FILE" in res.output and "--print-env" in res.output, res.output
    assert "keys init" not in res.output
    assert os.listdir(tmp_path) == []


def test_rotate_out_writes_a_0600_keyring_and_says_what_next(env_ring: Keyring, tmp_path: Path) -> None:
    res = run("rotate", "--out", "new.keyring")
    assert res.exit_code == 0, res.output
    path = tmp_path / "new.keyring"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    new = Keyring.load(path)
    assert new.active_kek_id() != env_ring.active_kek_id() and env_ring.active_kek_id() in new.kek_ids()
    assert new.secret("pii.hmac") == env_ring.secret("pii.hmac")  # pseudonyms survive the rotation
    assert ENV_VAR in res.stderr and "restart" in res.stderr and "base64 -w0 new.keyring" in res.stderr
    assert res.stdout == ""
    for secret in _material(json.loads(path.read_text())):
        assert secret not in res.output
    assert new.env_value() not in res.output


def test_rotate_out_refuses_to_overwrite_without_force(env_ring: Keyring, tmp_path: Path) -> None:
    (tmp_path / "new.keyring").write_text("keep me")
    res = run("rotate", "--out", "new.keyring")
    assert res.exit_code == 2 and "--force" in res.output, res.output
    assert (tmp_path / "new.keyring").read_text() == "keep me"
    res = run("rotate", "--out", "new.keyring", "--force")
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE((tmp_path / "new.keyring").stat().st_mode) == 0o600
    assert Keyring.load(tmp_path / "new.keyring").active_kek_id() != env_ring.active_kek_id()


def test_rotate_print_env_prints_only_the_new_value(env_ring: Keyring, tmp_path: Path) -> None:
    res = run("rotate", "--print-env")
    assert res.exit_code == 0, res.output
    value = res.stdout.strip()
    assert res.stdout == value + "\n"  # stdout holds the value alone: NEW=$(mlguard keys rotate --print-env)
    new = Keyring.from_env(value)
    assert new.active_kek_id() != env_ring.active_kek_id() and env_ring.active_kek_id() in new.kek_ids()
    assert ENV_VAR in res.stderr and "restart" in res.stderr
    assert value not in res.stderr
    assert os.listdir(tmp_path) == []


def test_rotate_of_a_keyring_file_takes_no_env_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    Keyring.create(tmp_path / "mlguard.keyring")
    res = run("rotate", "--out", "other.keyring")
    assert res.exit_code == 2 and "in place" in res.output, res.output
    assert not (tmp_path / "other.keyring").exists()


# ---------------------------------------------------------------------------------------------- retire


def test_retire_from_the_environment_writes_the_new_keyring(monkeypatch: pytest.MonkeyPatch,
                                                            env_ring: Keyring, tmp_path: Path) -> None:
    assert run("rotate", "--out", "rotated.keyring").exit_code == 0
    rotated = Keyring.load(tmp_path / "rotated.keyring")
    monkeypatch.setenv(ENV_VAR, rotated.env_value())
    open_store(f"sqlite:///{tmp_path / 'a.db'}").close()  # a store with no data key under the old KEK
    old = env_ring.active_kek_id()
    assert run("retire", old, "--store", f"sqlite:///{tmp_path / 'a.db'}").exit_code == 2  # no destination
    res = run("retire", old, "--store", f"sqlite:///{tmp_path / 'a.db'}", "--out", "retired.keyring")
    assert res.exit_code == 0, res.output
    retired = Keyring.load(tmp_path / "retired.keyring")
    assert old not in retired.kek_ids() and retired.active_kek_id() == rotated.active_kek_id()
    assert ENV_VAR in res.stderr and res.stdout == ""


# ---------------------------------------------------------------------------------------------- serve


@pytest.mark.anyio
async def test_a_keyring_file_created_at_start_is_logged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with caplog.at_level(logging.WARNING, logger="mlguard.keys"):
        guard = Guard(base_config(tmp_path), stages=["audit"])
        await guard.aclose()
    path = tmp_path / "k.keyring"
    assert path.exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "mlguard.keys" and r.levelno == logging.WARNING]
    assert len(lines) == 1 and str(path) in lines[0] and f"env {ENV_VAR} is not set" in lines[0], lines
    for secret in _material(json.loads(path.read_text())):
        assert secret not in lines[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlguard.keys"):  # the file exists now: nothing to say
        guard = Guard(base_config(tmp_path), stages=["audit"])
        await guard.aclose()
    assert not [r for r in caplog.records if r.name == "mlguard.keys"]


@pytest.mark.anyio
async def test_an_empty_variable_is_named_in_the_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV_VAR, "")
    with caplog.at_level(logging.WARNING, logger="mlguard.keys"):
        guard = Guard(base_config(tmp_path), stages=["audit"])
        await guard.aclose()
    assert any("is set but empty" in r.getMessage() for r in caplog.records if r.name == "mlguard.keys")


@pytest.mark.anyio
async def test_a_keyring_from_the_environment_creates_no_file(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, SEED)
    guard = Guard(base_config(tmp_path), stages=["audit"])
    await guard.aclose()
    assert not (tmp_path / "k.keyring").exists()
