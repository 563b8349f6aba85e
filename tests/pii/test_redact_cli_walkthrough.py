"""`mlguard redact` as a new user met it: keyring precedence, the middleware's parse rules per line, lines kept as
they came, output paths checked first, lines counted from 1, a BOM, --workers bounds, progress and summary."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlguard.cli import cli
from mlguard.keys import Keyring

SECRET = "Zebulon Quixmartin"
PERSON = json.dumps({"name": SECRET})
PLAIN = '{"t": "the quick brown fox", "n": 1.10, "m": 1E2,  "z": [ 1 ,2 ]}'
ENV_SEED = base64.b64encode(b"walkthrough-env-seed-material-0123456789").decode()
NO_ENV = {"MLGUARD_KEYRING": ""}


def run(args: list[str], lines: list[str] | bytes, env: dict[str, str] | None = None
        ) -> tuple[int, list[str], str]:
    data = lines if isinstance(lines, bytes) else "".join(line + "\n" for line in lines).encode()
    result = CliRunner().invoke(cli, ["redact", *args], input=data, env=env)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def strict(line: str) -> Any:
    """Parse as JSON proper: NaN and Infinity, which Python's json accepts, are not JSON."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} written out: not JSON")

    return json.loads(line, parse_constant=refuse)


@pytest.fixture(autouse=True)
def _engine_loaded(engine: object) -> None:
    """Share the session's engine with the CLI (same settings: same process-wide engine)."""


def _gdpr_name(args: list[str], env: dict[str, str]) -> str:
    code, out, err = run(["--policy", "gdpr", *args], [PERSON], env=env)
    assert code == 0, err
    name = strict(out[0])["name"]
    assert isinstance(name, str) and name.startswith("PERSON_")
    return name


# 1 -------------------------------------------------------------------- keyring precedence


def test_explicit_keyring_wins_over_the_environment(tmp_path: Path) -> None:
    ring = tmp_path / "right.keyring"
    Keyring.create(ring)
    from_file = _gdpr_name(["--keyring", str(ring)], NO_ENV)
    from_env = _gdpr_name([], {"MLGUARD_KEYRING": ENV_SEED})
    assert from_file != from_env  # two keys, two pseudonyms: the test can tell which key was used
    assert _gdpr_name(["--keyring", str(ring)], {"MLGUARD_KEYRING": ENV_SEED}) == from_file


def test_environment_wins_over_the_configs_keyring(tmp_path: Path) -> None:
    Keyring.create(tmp_path / "cfg.keyring")
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text("policies: [gdpr]\naudit: {keyring: cfg.keyring}\n")  # relative to the config's directory
    from_cfg = _gdpr_name(["--config", str(cfg)], NO_ENV)
    from_env = _gdpr_name([], {"MLGUARD_KEYRING": ENV_SEED})
    assert from_cfg != from_env
    assert _gdpr_name(["--config", str(cfg)], {"MLGUARD_KEYRING": ENV_SEED}) == from_env


def test_help_states_the_keyring_order() -> None:
    text = " ".join(CliRunner().invoke(cli, ["redact", "--help"]).output.split())
    assert "wins over env MLGUARD_KEYRING, which wins over the config's audit.keyring" in text


# 4 -------------------------------------------------------------------- a named keyring that is not there


def test_missing_keyring_file_is_named_as_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.keyring"
    code, out, err = run(["--policy", "gdpr", "--keyring", str(missing)], [PERSON], env=NO_ENV)
    assert code == 2 and out == []
    assert f"--keyring {missing}: no such file" in err
    assert "give --keyring" not in err


# 2 -------------------------------------------------------------------- the middleware's parse rules per line


@pytest.mark.parametrize("line, limit", [
    ('{"body": "Quixmartin", "body": "x"}', "duplicate_member"),
    ('{"v": NaN}', "json"),
    ('{"v": -Infinity}', "json"),
    ('{"v": 1e400}', "number_range"),
    ('{"v": 1' + "0" * 70 + "}", "max_integer_digits"),
    ("[" * 40 + "]" * 40, "max_depth"),
])
def test_a_line_serve_would_refuse_is_refused_by_its_rule(line: str, limit: str) -> None:
    code, out, err = run(["--policy", "base"], [PLAIN, line, PLAIN])
    assert code == 1
    assert out[1] == "null" and len(out) == 3
    assert all(strict(x) is not None for x in (out[0], out[2]))
    assert f"line 2: refused ({limit})" in err
    assert "Quixmartin" not in err and "body\": " not in err


def test_the_configs_limits_apply(tmp_path: Path) -> None:
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text("policies: [base]\nlimits: {max_string_length: 5, max_body_bytes: 40}\n")
    code, out, err = run(["--config", str(cfg)], ['{"t": "abc"}', '{"t": "abcdefgh"}', '{"t": "' + "a" * 50 + '"}'])
    assert code == 1 and out[0] == '{"t": "abc"}' and out[1:] == ["null", "null"]
    assert "line 2: refused (max_string_length)" in err and "line 3: refused (max_body_bytes)" in err
    assert "abcdefgh" not in err


def test_a_line_with_nothing_found_is_written_out_byte_for_byte() -> None:
    odd = '  {"t": "the quick brown fox\\u0021 \u00e9", "k": true}  '  # escapes, spacing, non-ASCII
    code, out, err = run(["--policy", "base"], [PLAIN, PERSON, odd])
    assert code == 0, err
    assert out[0] == PLAIN  # not 1.1 / 100.0 / re-spaced
    assert SECRET not in out[1]
    assert out[2] == odd


# 3 -------------------------------------------------------------------- output paths checked first


def test_findings_in_a_missing_directory_is_a_usage_error_before_any_work(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlguard.pii.redactor as redactor_module

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("the engine was built before the findings path was checked")

    monkeypatch.setattr(redactor_module.Redactor, "from_policy", no_work)
    target = tmp_path / "nonexistent" / "dir" / "f.jsonl"
    code, out, err = run(["--policy", "base", "--findings", str(target)], [PERSON])
    assert code == 2 and out == []
    assert str(target) in err and "does not exist" in err
    assert "Traceback" not in err and "FileNotFoundError" not in err


def test_findings_under_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    target = tmp_path / "plain" / "f.jsonl"
    code, out, err = run(["--policy", "base", "--findings", str(target)], [PERSON])
    assert code == 2 and out == [] and str(target) in err and "is not a directory" in err


# 5 -------------------------------------------------------------------- lines counted from 1


def test_lines_are_counted_from_one_in_messages_and_findings(tmp_path: Path) -> None:
    findings = tmp_path / "f.jsonl"
    lines = [PERSON, '{"secret": "' + SECRET + '"', PLAIN, json.dumps({"text": "Call 212-555-0199 now"})]
    code, out, err = run(["--policy", "base", "--findings", str(findings)], lines)
    assert code == 1 and len(out) == 4 and out[1] == "null"
    assert "line 2: refused (json)" in err and "line 1:" not in err and SECRET not in err
    rows = [json.loads(x) for x in findings.read_text().splitlines()]
    assert {r["line"] for r in rows} == {1, 4}  # the 1st and 4th lines, as `sed -n 1p;4p` shows them
    assert SECRET not in findings.read_text()


def test_findings_help_documents_the_line_field() -> None:
    text = " ".join(CliRunner().invoke(cli, ["redact", "--help"]).output.split())
    assert "line counts from 1" in text


# 6 -------------------------------------------------------------------- UTF-8 byte order mark


def test_a_byte_order_mark_opening_the_file_is_dropped() -> None:
    data = b"\xef\xbb\xbf" + PLAIN.encode() + b"\n" + PERSON.encode() + b"\n"
    code, out, err = run(["--policy", "base"], data)
    assert code == 0, err
    assert out[0] == PLAIN  # the mark belongs to the file, not to line 1
    assert SECRET not in out[1]


# 7 -------------------------------------------------------------------- --workers bounds


def test_negative_workers_is_refused() -> None:
    code, out, err = run(["--policy", "base", "--workers", "-1"], [PLAIN])
    assert code == 2 and out == [] and "--workers" in err


def test_workers_help_documents_zero() -> None:
    text = " ".join(CliRunner().invoke(cli, ["redact", "--help"]).output.split())
    assert "0 = one per core" in text


# 8 -------------------------------------------------------------------- progress and summary


def test_summary_on_stderr_counts_lines_redactions_entities_and_bad_lines() -> None:
    lines = [PERSON, PLAIN, json.dumps({"a": "Call 212-555-0199", "b": "or 212-555-0188"}), "{oops"]
    code, out, err = run(["--policy", "base"], lines)
    assert code == 1 and len(out) == 4
    summary = [x for x in err.splitlines() if "line(s) read" in x]
    assert len(summary) == 1
    assert summary[0].startswith("mlguard redact: 4 line(s) read, 2 redacted, ")
    assert "PERSON 1" in summary[0] and "PHONE_NUMBER 2" in summary[0] and "1 bad line(s)" in summary[0]
    assert SECRET not in err and "212-555" not in err


def test_summary_also_when_all_is_well_and_no_bar_off_a_terminal() -> None:
    code, _, err = run(["--policy", "base"], [PLAIN])
    assert code == 0
    assert err.strip() == "mlguard redact: 1 line(s) read, 0 redacted, 0 finding(s), 0 bad line(s)"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    from mlguard.cli import redact

    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with redact._progress(2048) as advance:
        advance(1024)
    assert ("redact" in err.getvalue() and "50%" in err.getvalue()) is tty
    assert tty or err.getvalue() == ""
