"""`mlguard redact`: JSON lines in and out in order, findings lines, bad lines, config rules, workers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlguard.cli import cli

LINES = [
    {"text": "Call Zebulon Quixmartin at 212-555-0199 or mail zeb@planted.internal"},
    {"a": [1, True, None, {"b": "I live at 42 Elm Street, Springfield, IL 62704."}]},
    {"nothing": "the quick brown fox"},
]


def run(args: list[str], lines: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    runner = CliRunner()
    result = runner.invoke(cli, ["redact", *args], input="".join(line + "\n" for line in lines), env=env)
    return result.exit_code, result.stdout.splitlines(), result.stderr


@pytest.fixture(autouse=True)
def _engine_loaded(engine: object) -> None:
    """Share the session's engine with the CLI (same settings: same process-wide engine)."""


def test_redact_lines_in_order_with_findings(tmp_path: Path) -> None:
    findings = tmp_path / "f.jsonl"
    code, out, err = run(["--policy", "base", "--findings", str(findings)], [json.dumps(x) for x in LINES])
    assert code == 0, err
    docs = [json.loads(x) for x in out]
    assert len(docs) == 3
    assert "Zebulon" not in docs[0]["text"] and "212-555-0199" not in docs[0]["text"]
    assert "zeb@planted.internal" not in docs[0]["text"]
    assert docs[1]["a"][:3] == [1, True, None] and "42 Elm Street" not in docs[1]["a"][3]["b"]
    assert docs[2] == LINES[2]
    rows = [json.loads(x) for x in findings.read_text().splitlines()]
    assert rows and set(rows[0]) == {"line", "path", "start", "end", "entity", "score", "recognizer", "operator"}
    first = [r for r in rows if r["line"] == 1]
    text = LINES[0]["text"]
    assert any(text[r["start"]:r["end"]] == "212-555-0199" and r["path"] == "$.text" for r in first)
    assert {r["line"] for r in rows} == {1, 2}
    assert "Zebulon" not in findings.read_text()


def test_bad_lines_named_by_number_never_content() -> None:
    lines = [json.dumps(LINES[0]), '{"secret": "Zebulon Quixmartin"', json.dumps(LINES[2])]
    code, out, err = run(["--policy", "base"], lines)
    assert code == 1
    assert "line 2" in err and "Zebulon" not in err
    assert out[1] == "null" and len(out) == 3


def test_config_route_rules_and_keyring_from_env(tmp_path: Path) -> None:
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(
        "policies: [gdpr]\n"
        "routes:\n"
        "  - path: /predict\n"
        "    pii: {$.name: PERSON, $.id: keep, $.note: scan}\n"
        "    scan_undeclared: false\n"
    )
    env = {"MLGUARD_KEYRING": base64.b64encode(b"cli-tests-seed-material-0123456789abcd").decode()}
    doc = {"id": "Zebulon", "name": "Zebulon Quixmartin", "other": "Zebulon Quixmartin", "note": "hi"}
    code, out, err = run(["--config", str(cfg)], [json.dumps(doc)] * 2, env=env)
    assert code == 0, err
    a, b = (json.loads(x) for x in out)
    assert a["id"] == "Zebulon" and a["other"] == "Zebulon Quixmartin"  # keep; undeclared not scanned
    assert a["name"].startswith("PERSON_") and a["name"] == b["name"]  # gdpr hmac, consistent


@pytest.mark.parametrize("entity, hint", [("NAME", "PERSON"), ("EMAIL_ADRESS", "EMAIL_ADDRESS")])
def test_config_with_unknown_entity_is_refused_as_config_check_refuses_it(tmp_path: Path, entity: str,
                                                                          hint: str) -> None:
    """`redact --config` runs the start-up check of `config check`/`serve`: same message, usage error, no output."""
    from mlguard.config import load_config
    from mlguard.errors import ConfigError
    from mlguard.runtime import check_config

    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(
        "policies: [base]\n"
        "routes:\n"
        "  - path: /predict\n"
        f"    pii: {{$.name: {entity}}}\n"
    )
    with pytest.raises(ConfigError) as expected:
        check_config(load_config(cfg), file=cfg)
    code, out, err = run(["--config", str(cfg)], [json.dumps({"name": "Zebulon Quixmartin"})])
    assert code == 2
    assert out == []
    assert str(expected.value) in err  # the message of `config check` / `serve`, word for word
    assert f"did you mean {hint}?" in err and "routes.0.pii.$.name" in err and str(cfg) in err
    assert "Zebulon" not in err


def test_config_check_applies_to_every_route_even_with_route_chosen(tmp_path: Path) -> None:
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(
        "policies: [base]\n"
        "routes:\n"
        "  - path: /good\n"
        "    pii: {$.name: PERSON}\n"
        "  - path: /bad\n"
        "    pii: {$.name: NAME}\n"
    )
    code, out, err = run(["--config", str(cfg), "--route", "/good"], [json.dumps(LINES[2])])
    assert code == 2 and out == [] and "routes.1.pii.$.name" in err and "did you mean PERSON?" in err


def test_keyed_policy_without_keyring_is_a_usage_error() -> None:
    code, _, err = run(["--policy", "gdpr"], [json.dumps(LINES[2])], env={"MLGUARD_KEYRING": ""})
    assert code == 2 and "keyring" in err


def test_workers_keep_order() -> None:
    lines = [json.dumps({"i": i, "t": f"Call 212-555-01{i % 100:02d} now"}) for i in range(150)]
    code, out, err = run(["--policy", "base", "--workers", "2"], lines)
    assert code == 0, err
    docs = [json.loads(x) for x in out]
    assert [d["i"] for d in docs] == list(range(150))
    assert all("212-555" not in d["t"] for d in docs)


def test_config_route_with_its_own_policies_redacts_as_serve_would(tmp_path: Path) -> None:
    """A route naming its own policies is redacted under them (as serve does), not under the global list;
    --policy still overrides both."""
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(
        "policies: [gdpr]\n"
        "routes:\n"
        "  - path: /predict\n"
        "    policies: [base]\n"
        "    pii: {$.name: PERSON}\n"
    )
    env = {"MLGUARD_KEYRING": base64.b64encode(b"cli-tests-seed-material-0123456789abcd").decode()}
    doc = json.dumps({"name": "Zebulon Quixmartin"})
    code, out, err = run(["--config", str(cfg)], [doc], env=env)
    assert code == 0, err
    assert json.loads(out[0])["name"] == "<PERSON>"  # base: replace (gdpr would give PERSON_<hmac>)
    code, out, err = run(["--config", str(cfg), "--policy", "gdpr"], [doc], env=env)
    assert code == 0, err
    assert json.loads(out[0])["name"].startswith("PERSON_")
