"""A config or policy file with several mistakes: every one is reported, each as ``file:field: message`` on its
own line, with at most MAX_LISTED lines and then "and N more".

Why: the message used to name the first error and "(and N more)"; a user fixed one, ran the check again, and met
the next one only then. ``ConfigError.field`` still names the first error (code reads it).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlguard.cli._root import cli
from mlguard.config import GuardConfig, load_config
from mlguard.errors import ConfigError, PolicyError
from mlguard.middleware import GuardMiddleware
from mlguard.policy.load import load_policy_file
from mlguard.testing import json_app

SECRET = "$.applicant.planted-secret-value"
MAX_LISTED = 20  # mlguard.validation.MAX_LISTED: errors listed before "and N more"

THREE_MISTAKES = {
    "audit": {"witnes": "./w.log"},
    "routes": [{"path": "/p", "subject": 7, "methds": ["POST"]}],
    "log_level": "LOUD",
}
"""Two unknown keys (listed first, each with the nearest known key) and two bad values."""

EXPECTED = [
    ("routes.0.methds", "unknown key (did you mean 'methods'?)"),
    ("audit.witnes", "unknown key (did you mean 'witness'?)"),
    ("routes.0.subject", "Input should be a valid string"),
    ("log_level", "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
]


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "mlguard.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_load_config_lists_every_error_one_a_line_with_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [f"{path}:{field}: {message}" for field, message in EXPECTED]
    assert info.value.file == str(path) and info.value.field == "routes.0.methds"  # the first error's
    assert "and " not in str(info.value)


def test_one_error_reads_as_before(tmp_path: Path) -> None:
    path = write(tmp_path, {"audit": {"witnes": "./w.log"}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:audit.witnes: unknown key (did you mean 'witness'?)"


def test_config_check_prints_every_error(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {path}:{EXPECTED[0][0]}: {EXPECTED[0][1]}",
                     *(f"{path}:{field}: {message}" for field, message in EXPECTED[1:])]


def test_a_wildly_wrong_file_is_cut_after_the_first_errors(tmp_path: Path) -> None:
    routes = [{"path": f"/r{i}", f"bogus{i}": 1} for i in range(MAX_LISTED + 5)]
    path = write(tmp_path, {"routes": routes})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == MAX_LISTED + 1 and lines[-1] == "and 5 more"
    assert all(line.startswith(f"{path}:routes.{i}.bogus{i}: unknown key") for i, line in enumerate(lines[:-1]))


def test_in_code_and_in_the_middleware_every_error_is_listed_without_input_values() -> None:
    bad = {"routse": [], "policies": "gdpr", "audit": {"store": 5}, "pii_engine": {"max_scan_chars": SECRET}}
    with pytest.raises(ConfigError) as info:
        GuardConfig(**bad)
    in_code = str(info.value)
    assert in_code.splitlines()[0] == "routse: unknown key (did you mean 'routes'?)"
    assert {"policies: Input should be a valid list", "audit.store: Input should be a valid string"} <= set(
        in_code.splitlines())
    with pytest.raises(ConfigError) as mw:
        GuardMiddleware(json_app(lambda doc: doc), config=bad)
    assert str(mw.value) == in_code and mw.value.field == "routse"
    assert SECRET not in in_code and "pydantic.dev" not in in_code


def test_a_policy_file_lists_every_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({
        "id": "broken", "title": "t", "instrument": "test", "jurisdiction": "test",
        "status": "engineering_default", "effective_from": "2026-01-01", "review_by": "2099-12-31",
        "version": "1", "extends": ["base"], "failure_mode": {"value": "fail_closed"},
        "pii": {"entitys": [], "entities": [{"entity": "US_SSN", "operator": "drop", "citation": "x"}]},
    }), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    lines = str(info.value).splitlines()
    assert lines == [f"{path}:pii.entities.0.citation: unknown key (did you mean 'cite'?)",
                     f"{path}:pii.entitys: unknown key (did you mean 'entities'?)",
                     f"{path}:failure_mode.cite: Field required",
                     f"{path}:pii.entities.0.cite: Field required"]
    assert info.value.field == "pii.entities.0.citation"


def test_the_list_survives_being_said_again_with_a_file_and_pickled() -> None:
    """load_config re-raises GuardConfig's own ConfigError with the file; a worker's error crosses processes."""
    from mlguard.errors import ErrorLines
    from mlguard.validation import MAX_LISTED as listed

    assert listed == MAX_LISTED
    message = ErrorLines([("a.b", "first"), ("c", "second"), (None, "third")], omitted=2)
    assert str(ConfigError(message, field="a.b")) == "a.b: first\nc: second\nthird\nand 2 more"
    again = ConfigError(ConfigError(message, field="a.b").message, file="f.yaml", field="a.b")
    assert str(again) == "f.yaml:a.b: first\nf.yaml:c: second\nf.yaml: third\nand 2 more"
    copy = pickle.loads(pickle.dumps(message))
    assert isinstance(copy, ErrorLines) and copy == message and copy.entries == message.entries
