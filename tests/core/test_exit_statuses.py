"""One exit-status convention: 1 when what the command checked or read is bad, 2 when it was called wrong.

Why: ``mlguard config check`` exited 1 on an invalid config while ``mlguard serve`` exited 2 on the same file, so
a deployment script could not tell a bad file from a bad command line; and several commands' --help said nothing
of what they exit with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from mlguard.cli import cli, main


def write(tmp_path: Path, data: dict[str, Any], name: str = "mlguard.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve must refuse before uvicorn starts; a start would be a failure of the test, not a hang."""
    import uvicorn

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn started")

    monkeypatch.setattr(uvicorn, "run", never)


INVALID = [
    {"routes": [{"path": "/p", "methds": ["POST"]}], "log_level": "LOUD"},  # the file's own schema
    {"policies": ["gdpr", "ecoa"], "retention": {"max": "P1Y"}},  # a check against the policies (retention)
    {"policies": ["no_such_policy"]},  # a name the file gives
]


@pytest.mark.parametrize("data", INVALID)
def test_config_check_and_serve_exit_1_with_the_same_message(tmp_path: Path, data: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str],
                                                              no_server: None) -> None:
    path = write(tmp_path, data)
    assert main(["config", "check", str(path)]) == 1
    checked = capsys.readouterr().err
    assert main(["serve", str(path), "json:dumps"]) == 1
    served = capsys.readouterr().err
    assert checked == served and checked.startswith(f"error: {path}:")


def test_an_invalid_policy_file_named_by_the_config_is_exit_1_for_both(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     no_server: None) -> None:
    (tmp_path / "mine.yaml").write_text("id: mine\n", encoding="utf-8")  # most required keys missing
    path = write(tmp_path, {"policies": ["./mine.yaml"]})
    assert main(["config", "check", str(path)]) == 1
    assert main(["serve", str(path), "json:dumps"]) == 1
    assert "mine.yaml:" in capsys.readouterr().err


def test_usage_errors_stay_2(tmp_path: Path, no_server: None) -> None:
    path = write(tmp_path, {"routes": []})
    assert main(["config", "check", str(tmp_path / "absent.yaml")]) == 2
    assert main(["serve", str(tmp_path / "absent.yaml"), "json:dumps"]) == 2
    assert main(["serve", str(path), "no_colon"]) == 2  # MODULE:APP is an argument, not the file's content
    assert main(["serve", str(path), "nonexistent_module_xyz:app"]) == 2
    assert main(["serve", str(path), "json:dumps", "--port", "-1"]) == 2


STATES_EXIT = re.compile(r"exit(?: codes?:)?\s*\d", re.IGNORECASE)


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _commands(command, (*path, name))
        else:
            out.append((*path, name))
    return out


@pytest.mark.parametrize("command", _commands(cli), ids=" ".join)
def test_every_command_help_states_its_exit_statuses(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert STATES_EXIT.search(result.output), result.output


def test_config_check_help_states_1_for_an_invalid_file_and_2_for_usage() -> None:
    text = " ".join(CliRunner().invoke(cli, ["config", "check", "--help"]).output.split())
    assert "Exit codes: 0 valid" in text and "1 invalid" in text and "2 usage error" in text


@pytest.mark.parametrize("command", [["audit", "shred", "--subject", "s-1"], ["audit", "purge"]])
def test_audit_commands_reading_an_invalid_config_exit_1_as_serve_does(tmp_path: Path, command: list[str],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """They turned the config's own mistakes into usage errors (2): a script saw a bad command line where the
    file was bad. Now the same exit 1 and file:field message as `config check`."""
    path = write(tmp_path, {"policies": ["gdpr"], "retention": {"max": "P1Y"},
                            "audit": {"store": "sqlite:///./a.db", "bogus": 1}})
    assert main([*command, "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:audit.bogus: unknown key"), err
    assert not (tmp_path / "a.db").exists()
