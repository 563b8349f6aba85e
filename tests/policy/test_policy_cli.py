"""``mlguard policy list | show | check`` through click's CliRunner, and ``main()`` exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from click.testing import CliRunner

from mlguard.cli import main
from mlguard.cli._root import cli
from mlguard.policy import bundled_policies

PolicyFactory = Callable[..., Path]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_list_shows_every_bundled_policy() -> None:
    code, out = run("policy", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "TITLE", "STATUS", "REVIEW", "BY"]
    for name in bundled_policies():
        assert any(line.startswith(name + " ") for line in out.splitlines())
    assert "enacted_not_yet_effective" in out and "2027-06-30" in out
    code, out = run("policy", "list", "--format", "json")
    assert {row["id"] for row in json.loads(out)} == set(bundled_policies())


def test_show_effective_gdpr_ecoa_has_sources_and_origins() -> None:
    code, out = run("policy", "show", "gdpr", "ecoa", "--effective")
    assert code == 0, out
    data = yaml.safe_load(out)
    assert data["policies"] == ["gdpr", "ecoa"]
    assert [s["id"] for s in data["sources"]] == ["base", "gdpr", "ecoa"]
    assert all(len(s["sha256"]) == 64 for s in data["sources"])
    assert data["failure_mode"] == {"value": "fail_closed", "from": ["ecoa"],
                                    "cite": ["ecoa: (D) no credit decision without its safeguards"]}
    assert data["explanations"]["max_reasons"]["from"] == ["ecoa"]
    assert data["pii"]["entities"]["PERSON"]["from"] == ["gdpr"]
    assert data["retention"]["min"]["value"] == "P25M"
    assert "conflicts" in data and data["missing"]


def test_show_effective_json() -> None:
    code, out = run("policy", "show", "hipaa", "pci_dss", "--effective", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["pii"]["entities"]["CREDIT_CARD"]["operator"] == "token"
    assert data["pii"]["scan_response"]["from"] == ["pci_dss"]


def test_show_without_effective_prints_each_file_after_extends() -> None:
    code, out = run("policy", "show", "ecoa", "pci_dss")
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert [d["id"] for d in docs] == ["ecoa", "pci_dss"]
    assert docs[0]["extends_chain"] == ["base", "ecoa"]
    assert docs[0]["explanations"]["max_reasons"]["value"] == 4
    # inherited from base, written out in full
    assert docs[0]["audit"]["encrypt"]["cite"].startswith("(D)")
    assert docs[0]["inherited_from"]["audit.encrypt"] == "base"
    assert "explanations.max_reasons" not in docs[0]["inherited_from"]
    code, out = run("policy", "show", "gdpr", "--format", "json")
    assert json.loads(out)["id"] == "gdpr"


def test_show_unknown_name_is_a_usage_error_listing_bundled_names() -> None:
    code, out = run("policy", "show", "gdrp")
    assert code == 2
    assert "unknown policy 'gdrp'" in out and "gdpr" in out and "hipaa" in out


def test_check_ok(make_policy: PolicyFactory) -> None:
    path = make_policy("mine", failure_mode={"value": "fail_closed", "cite": "ours"})
    code, out = run("policy", "check", str(path), str(bundled_policies()["hipaa"]))
    assert code == 0, out
    assert f"{path}: ok (mine 1," in out


def test_check_broken_file_exits_1_naming_the_field(make_policy: PolicyFactory) -> None:
    good = make_policy("good")
    bad = make_policy("bad", explanations={"max_reasons": {"value": "four", "cite": "x"}})
    code, out = run("policy", "check", str(good), str(bad))
    assert code == 1
    assert f"{bad}:explanations.max_reasons.value: " in out
    assert f"{good}: ok" in out


def test_check_reports_extends_cycles_and_unknown_parents(make_policy: PolicyFactory) -> None:
    a = make_policy("a", extends=["b.yaml"])
    make_policy("b", extends=["a.yaml"])
    code, out = run("policy", "check", str(a))
    assert code == 1 and "extends cycle" in out
    c = make_policy("c", extends=["no_such_policy"])
    code, out = run("policy", "check", str(c))
    assert code == 1 and ":extends.0: " in out


def test_check_warnings_fail_only_with_strict(make_policy: PolicyFactory) -> None:
    path = make_policy("old", review_by="2020-01-01",
                      pii={"entities": [{"entity": "MYSTERY_ID", "operator": "drop", "cite": "x"}]})
    code, out = run("policy", "check", str(path))
    assert code == 0
    assert f"{path}:review_by: 2020-01-01 is past" in out
    assert "no recognizer is known for MYSTERY_ID" in out
    code, _ = run("policy", "check", "--strict", str(path))
    assert code == 1


def test_check_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _ = run("policy", "check", str(tmp_path / "absent.yaml"))
    assert code == 2


def test_main_returns_exit_codes(make_policy: PolicyFactory, capsys: object) -> None:
    assert main(["policy", "list"]) == 0
    bad = make_policy("bad", failure_mode={"value": "maybe", "cite": "x"})
    assert main(["policy", "check", str(bad)]) == 1
    assert main(["policy", "show", "nonexistent"]) == 2
    assert main(["policy", "bogus-subcommand"]) == 2
