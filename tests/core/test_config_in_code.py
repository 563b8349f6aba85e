"""Configuration written in Python and the PII engine's own settings: clear errors, and the README's example runs.

Why (a compliance engineer's walk-through): ``GuardConfig(routse=...)`` raised pydantic's raw ValidationError
(input values quoted, a link to pydantic's site) where the same dict given to GuardMiddleware said "unknown key
(did you mean 'routes'?)"; the README's Python example failed under gdpr (no retention maximum);
``pii_engine.countries: [gb]`` loaded nothing, silently; ``pii_engine.custom_recognizers`` with ``paterns:`` or a
regex that does not compile passed ``config check`` and failed at start without file or reason.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlguard.cli._root import cli
from mlguard.config import GuardConfig, load_config
from mlguard.config.pii import COUNTRIES, CustomRecognizerSpec
from mlguard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "$.applicant.secret-path-value"


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"routse": []}, "routse", "unknown key (did you mean 'routes'?)"),
    ({"policies": "gdpr"}, "policies", "valid list"),
    ({"routes": [{"path": "/p", "subject": 7}]}, "routes.0.subject", "valid string"),
])
def test_guardconfig_in_code_raises_a_config_error(kwargs: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        GuardConfig(**kwargs)
    assert err.value.field == field and message in str(err.value)


def test_a_config_error_in_code_quotes_no_input() -> None:
    with pytest.raises(ConfigError) as err:
        GuardConfig(routes=[{"path": "/p", "subject": PLANTED, "pii": {"$.x": 3}}])
    assert PLANTED not in str(err.value) and "pydantic.dev" not in str(err.value)


def test_the_readmes_python_example_runs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"In Python instead of YAML:\s*```python\n(.*?)```", text, re.S)
    assert block is not None
    scope: dict[str, Any] = {"app": lambda scope, receive, send: None}
    exec(block.group(1), scope)  # the README's own code
    assert scope["app"].guard.config.retention.max == "P1Y"


@pytest.mark.parametrize(("countries", "message"), [(["gb"], "did you mean 'uk'?"), (["xx"], "no recognizers")])
def test_unknown_country_codes_are_refused(countries: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config({"pii_engine": {"countries": countries}})
    assert err.value.field == "pii_engine.countries"
    assert load_config({"pii_engine": {"countries": ["UK", "us"]}}).pii_engine.countries == ["uk", "us"]


def test_the_country_codes_are_presidios_and_ours() -> None:
    import inspect

    from presidio_analyzer import predefined_recognizers as predefined

    presidio = {str(getattr(c, "COUNTRY_CODE", "") or "").lower() for _, c in inspect.getmembers(predefined)
                if inspect.isclass(c)} - {""}
    assert set(COUNTRIES) == presidio | {"fr"}


def test_the_recognizer_validators_are_the_engines() -> None:
    from mlguard.pii.recognizers import VALIDATORS

    names = typing.get_args(typing.get_args(CustomRecognizerSpec.model_fields["validator"].annotation)[0])
    assert set(names) == {*VALIDATORS, "none"}


@pytest.mark.parametrize(("spec", "message"), [
    ({"entity": "CUST", "paterns": [{"regex": "CUST-\\d{4}"}]}, "[0].paterns: unknown key (did you mean 'patterns'?)"),
    ({"entity": "CUST", "patterns": [{"regex": "CUST-(\\d{4}"}]},
     "[0].patterns.0.regex: regex does not compile: missing ), unterminated subpattern at position 5"),
    ({"entity": "CUST", "patterns": [{"regex": "x"}], "contxt": ["customer"]}, "did you mean 'context'?"),
])
def test_config_check_refuses_a_bad_custom_recognizer(tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    path = tmp_path / "mlguard.yaml"
    path.write_text(yaml.safe_dump({"pii_engine": {"custom_recognizers": [spec]}, "audit": {"enabled": False}}))
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:pii_engine.custom_recognizers: " in result.output and message in result.output
