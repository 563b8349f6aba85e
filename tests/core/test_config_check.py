"""``mlguard config check`` refuses what ``mlguard serve`` would refuse, naming file and field, and builds nothing.

The cases of the new-user test: a missing required retention maximum (gdpr), a maximum below a policy's legal
minimum (ecoa), a misspelt PII entity in a route's ``pii`` map, a model module or attribute that does not exist,
a background CSV that does not exist; and serve's own errors naming the file. The same validation runs in
``Guard`` (``mlguard.runtime.check_config``), so the serve-time message is the check's.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlguard.cli import main
from mlguard.cli._root import cli
from mlguard.config import load_config
from mlguard.errors import ConfigError, PolicyError
from mlguard.policy import KNOWN_ENTITIES, resolve_policies
from mlguard.runtime import Guard, check_config, located

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def write(tmp_path: Path, data: dict[str, Any], name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    return result.exit_code, result.output


def refused(path: Path, field: str) -> str:
    """The check's message for ``path``: exit 1, one line naming ``FILE:FIELD``; returned without ``error: ``."""
    code, out = check(path)
    assert code == 1, out
    line = out.strip()
    assert line.startswith(f"error: {path}:{field}: "), line
    return line.removeprefix("error: ")


def route(**extra: Any) -> dict[str, Any]:
    return {"path": "/predict", "subject": "$.applicant.id", **extra}


# ------------------------------------------------------------------------------------------ retention


def test_a_required_retention_maximum_left_out_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["gdpr"]})
    message = refused(path, "retention.max")
    assert message.endswith("a retention maximum must be configured (required by gdpr)")
    with pytest.raises(PolicyError) as info:
        Guard(path, stages=[])
    assert str(info.value) == message


def test_a_retention_maximum_below_a_legal_minimum_is_refused_naming_the_policy(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["gdpr", "ecoa"], "retention": {"max": "P1Y"}})
    message = refused(path, "retention.max")
    assert message == (f"{path}:retention.max: P1Y is shorter than the legal minimum retention: records must be "
                       "kept under ecoa (retention.min P25M); set retention.max to P25M or longer")
    with pytest.raises(PolicyError) as info:  # serve-time: the same message
        Guard(path, stages=[])
    assert str(info.value) == message
    assert info.value.file == str(path) and info.value.field == "retention.max"


def test_a_route_policy_with_a_longer_minimum_is_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["base"], "retention": {"max": "P1Y"},
                            "routes": [route(policies=["hipaa"])]})
    assert "under hipaa (retention.min P6Y)" in refused(path, "retention.max")


def test_a_retention_maximum_at_or_above_every_minimum_passes(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["gdpr", "ecoa"], "retention": {"max": "P25M"}})
    code, out = check(path)
    assert code == 0, out
    assert Guard(path, stages=[]).retention_max == "P25M"


def test_check_retention_max_keeps_retention_max_for_otherwise() -> None:
    policy = resolve_policies(["gdpr", "ecoa"])
    assert policy.check_retention_max("P3Y") == policy.retention_max_for("P3Y") == "P3Y"
    assert policy.retention_max_for("P1Y") == "P25M"  # what `mlguard audit purge --max` still does
    with pytest.raises(PolicyError, match="ecoa"):
        policy.check_retention_max("P1Y")
    with pytest.raises(PolicyError, match="required by gdpr"):
        policy.check_retention_max(None)


# ------------------------------------------------------------------------------------------ PII entities


def test_a_misspelt_pii_entity_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["gdpr"], "retention": {"max": "P3Y"},
                            "routes": [route(pii={"$.applicant.name": "NAME"})]})
    message = refused(path, "routes.0.pii.$.applicant.name")
    assert "unknown PII entity 'NAME' (did you mean PERSON?)" in message
    assert "US_SSN" in message and "pii_engine.custom_recognizers" in message
    with pytest.raises(ConfigError) as info:  # serve-time: the same message
        Guard(path, stages=[])
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "hint"), [("PERSN", "PERSON"), ("email", "EMAIL_ADDRESS"), ("Keep", "keep"),
                                             ("SSN", "US_SSN"), ("XYZZY", None)])
def test_suggestions(tmp_path: Path, value: str, hint: str | None) -> None:
    path = write(tmp_path, {"routes": [route(pii={"$.x": value})]})
    message = refused(path, "routes.0.pii.$.x")
    assert (f"(did you mean {hint}?)" in message) if hint else "did you mean" not in message


def test_custom_recognizer_entities_and_policy_entities_are_known(tmp_path: Path) -> None:
    recognizer = {"name": "employee", "entity": "EMPLOYEE_ID", "patterns": [{"regex": r"E\d{6}", "score": 0.8}]}
    path = write(tmp_path, {
        "policies": ["pci_dss"],  # declares a CARD_VERIFICATION_CODE recognizer of its own
        "pii_engine": {"custom_recognizers": [recognizer]},
        "routes": [route(pii={"$.employee": "EMPLOYEE_ID", "$.cvv": "CARD_VERIFICATION_CODE", "$.note": "scan",
                              "$.id": "keep", "$.itin": "US_ITIN"})],
    })
    code, out = check(path)
    assert code == 0, out
    Guard(path, stages=[])


def test_the_known_entities_cover_presidio_and_mlguard_recognizers() -> None:
    """KNOWN_ENTITIES is the static list the checks read (presidio imports spaCy); keep it in step."""
    from presidio_analyzer import RecognizerRegistry

    from mlguard.pii.engine import country_recognizers
    from mlguard.pii.recognizers import builtin_recognizers

    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"])
    presidio = {e for r in registry.recognizers for e in r.supported_entities}
    every_country = ["au", "ca", "de", "es", "fi", "fr", "in", "it", "kr", "ng", "ph", "pl", "se", "sg", "th",
                     "tr", "uk", "us", "za"]
    presidio |= {e for r in country_recognizers(every_country, "en", set()) for e in r.supported_entities}
    ours = {e for r in builtin_recognizers(every_country) for e in r.supported_entities}
    assert presidio | ours <= KNOWN_ENTITIES, sorted((presidio | ours) - KNOWN_ENTITIES)


@pytest.mark.parametrize(("policies", "named"), [(["gdpr", "eu_ai_act"], "eu_ai_act: Art 12"),
                                                  (["hipaa"], "hipaa: 164.312(b)"), (["pci_dss"], "pci_dss: 10.2.1")])
def test_the_audit_trail_switched_off_under_a_policy_that_requires_it_is_refused(
        tmp_path: Path, policies: list[str], named: str) -> None:
    """A test config's `audit: {enabled: false}` carried into production under eu_ai_act passed the check and
    served with no record at all (a developer's walk-through)."""
    cfg = {"policies": policies, "retention": {"max": "P10Y"}, "audit": {"enabled": False}, "routes": [route()]}
    message = refused(write(tmp_path, cfg), "audit.enabled")
    assert "the audit trail is off, but the policies in force require one" in message and named in message
    with pytest.raises(ConfigError, match="audit trail is off"):
        Guard(cfg)
    # per-route policies count too; policies that do not require a trail may run without one
    per_route = {"policies": ["gdpr"], "retention": {"max": "P10Y"}, "audit": {"enabled": False},
                 "routes": [route(), {**route(), "path": "/other", "policies": ["hipaa"]}]}
    assert "hipaa: 164.312(b)" in refused(write(tmp_path, per_route), "audit.enabled")
    code, out = check(write(tmp_path, {**cfg, "policies": ["gdpr", "ecoa"]}))
    assert code == 0, out


# ------------------------------------------------------------------------------------------ model binding


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module and a package in the current directory, as `mlguard serve` imports them. The package's
    ``__init__`` raises: a check that passes proves it looked the module up without importing anything."""
    (tmp_path / "cc_tiny_model.py").write_text("def load_model():\n    return None\n", encoding="utf-8")
    pkg = tmp_path / "cc_tiny_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")
    (pkg / "scoring.py").write_text("import json\nif True:\n    model, other = 1, 2\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bg.csv").write_text("a\n1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    importlib.invalidate_caches()
    return tmp_path


def model_config(obj: str, **extra: Any) -> dict[str, Any]:
    return {"routes": [route(model={"object": obj, "features": "$.features", **extra})]}


@pytest.mark.parametrize("obj", ["cc_tiny_model:load_model", "cc_tiny_pkg.scoring:model",
                                 "cc_tiny_pkg.scoring:json", "cc_tiny_pkg:scoring"])
def test_a_model_that_can_be_found_passes_without_being_imported(modules: Path, obj: str) -> None:
    path = write(modules, model_config(obj, background="data/bg.csv"))
    code, out = check(path)
    assert code == 0, out
    assert not {"cc_tiny_model", "cc_tiny_pkg"} & set(sys.modules)


@pytest.mark.parametrize(("obj", "expected"), [
    ("cc_tiny_model:missing", "'cc_tiny_model' has no attribute 'missing'"),
    ("cc_tiny_pkg.scoring:nothing", "'cc_tiny_pkg.scoring' has no attribute 'nothing'"),
    ("cc_no_such_module:model", "cannot find module 'cc_no_such_module'"),
    ("cc_tiny_pkg.absent:model", "cannot find module 'cc_tiny_pkg.absent'"),
    ("cc_tiny_model", "expected 'module:attr', got 'cc_tiny_model'"),
])
def test_a_model_that_cannot_be_found_is_refused(modules: Path, obj: str, expected: str) -> None:
    path = write(modules, model_config(obj))
    assert expected in refused(path, "routes.0.model.object")


def test_a_missing_background_file_is_refused_where_the_runtime_would_read_it(modules: Path,
                                                                             tmp_path: Path) -> None:
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    path = write(elsewhere, model_config("cc_tiny_model:load_model", background="data/bg.csv"))
    message = refused(path, "routes.0.model.background")  # relative to the config's directory, not the cwd
    assert f"background file '{elsewhere / 'data' / 'bg.csv'}' does not exist" in message


def test_a_model_without_a_background_is_warned_about(modules: Path) -> None:
    """A boosted model explained as a probability needs a background; the check cannot tell without importing the
    model, so it passed and `serve` refused the model half a minute later (a new user's walk-through). It warns."""
    code, out = check(write(modules, model_config("cc_tiny_model:load_model")))
    assert code == 0, out
    assert "warning: " in out and "routes.0.model.background: none given" in out and "gradient-boosted" in out
    code, out = check(write(modules, model_config("cc_tiny_model:load_model", background="data/bg.csv")))
    assert code == 0 and "none given" not in out, out


# ------------------------------------------------------------------------------------------ serve, and valid


def test_serve_refuses_before_starting_and_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn started")

    monkeypatch.setattr(uvicorn, "run", never)
    path = write(tmp_path, {"policies": ["gdpr", "ecoa"], "retention": {"max": "P1Y"}})
    assert main(["serve", str(path), "json:dumps"]) == 1  # as `config check` exits on the same file
    assert capsys.readouterr().err.startswith(f"error: {path}:retention.max: P1Y is shorter")


def test_located_names_the_config_unless_the_error_names_its_own_file() -> None:
    exc = located(ConfigError("no rows", field="routes.0.model.background"), "c.yaml")
    assert str(exc) == "c.yaml:routes.0.model.background: no rows" and exc.file == "c.yaml"
    own = PolicyError("bad", file="p.yaml", field="id")
    assert located(own, "c.yaml") is own
    assert str(located(PolicyError("bad"), "c.yaml")) == "c.yaml: bad"


def test_an_unknown_policy_name_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["base"], "routes": [route(policies=["gdrp"])]})
    assert "unknown policy 'gdrp'" in refused(path, "routes.0.policies")


@pytest.mark.parametrize("example", ["credit_scoring", "hiring_screen"])
def test_the_examples_pass_without_building_anything_or_creating_files(example: str) -> None:
    """In a fresh interpreter: no engine library is imported, and no file appears beside the config."""
    config = EXAMPLES / example / "mlguard.yaml"
    before = sorted(p for p in (EXAMPLES / example).rglob("*"))
    code = ("import json, sys\nfrom mlguard.cli import main\n"
            f"rc = main(['config', 'check', {str(config)!r}])\n"
            "heavy = [m for m in ('spacy', 'presidio_analyzer', 'shap', 'sklearn', 'numpy') "
            "if m in sys.modules]\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy, 'model': 'examples.credit_scoring.model' in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "heavy": [], "model": False}, proc.stderr
    assert f"{config}: ok (1 routes" in proc.stdout
    assert sorted(p for p in (EXAMPLES / example).rglob("*")) == before


def test_check_config_is_what_the_guard_runs(tmp_path: Path) -> None:
    path = write(tmp_path, {"policies": ["gdpr"], "retention": {"max": "P2Y"},
                            "routes": [route(pii={"$.applicant.name": "PERSON"})]})
    checked = check_config(load_config(path), file=path, files=True)
    guard = Guard(path, stages=[])
    assert guard.policy is checked.policy and guard.retention_max == checked.retention_max == "P2Y"
    assert [r.pii_rules[0][1] for r in guard.table.routes] == [r.pii_rules[0][1] for r in checked.routes]
