"""GuardConfig loading: errors name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlguard.config import GuardConfig, load_config
from mlguard.errors import ConfigError
from mlguard.jsonpath import compile_path, format_location


def test_yaml_config_loads_with_base_dir(tmp_path: Path) -> None:
    f = tmp_path / "mlguard.yaml"
    f.write_text("policies: [gdpr]\nroutes:\n  - path: /predict\n    pii: {$.name: PERSON}\n")
    cfg = load_config(f)
    assert cfg.policies == ["gdpr"]
    assert cfg.routes[0].methods == ["POST"]
    assert cfg.base_dir == tmp_path


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "mlguard.yaml"
    f.write_text("routes:\n  - path: /predict\n    pii_rules: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert str(f) in str(info.value)
    assert info.value.field == "routes.0.pii_rules"


@pytest.mark.parametrize(("text", "field", "words"), [
    ("audit: {witnes: ./w.log}\n", "audit.witnes", "unknown key (did you mean 'witness'?)"),
    ("routes:\n  - path: /p\n    subjet: $.id\n", "routes.0.subjet", "did you mean 'subject'?"),
    ("routes:\n  - path: /p\n    model: {output: $.s, favourable: $.ok}\n", "routes.0.model.favourable",
     "did you mean 'favorable'?"),
    ("pii_engine: {max_feild_chars: 10}\n", "pii_engine.max_feild_chars", "did you mean 'max_field_chars'?"),
    ("limits: {zzz: 1}\n", "limits.zzz", "unknown key; the keys allowed here: "),
    ("zzz: 1\n", "zzz", "unknown key; the keys allowed here: "),
])
def test_unknown_key_suggests_the_nearest_known_one(tmp_path: Path, text: str, field: str, words: str) -> None:
    """pydantic's "Extra inputs are not permitted" said neither that the key is unknown nor what was meant."""
    f = tmp_path / "mlguard.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.field == field
    assert words in str(info.value) and "Extra inputs" not in str(info.value)
    if "allowed here" in words:
        assert "audit" in str(info.value) if field == "zzz" else "max_body_bytes" in str(info.value)


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "mlguard.yaml"
    f.write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_python_construction() -> None:
    cfg = GuardConfig(routes=[{"path": "/p", "methods": ["post"]}])  # type: ignore[list-item]
    assert cfg.routes[0].methods == ["POST"]
    with pytest.raises(ConfigError, match=r"limits\.max_depth"):
        load_config({"limits": {"max_depth": 0}})


@pytest.mark.parametrize(("path", "loc", "hit"), [
    ("$.a.b", ("a", "b"), True),
    ("$.a[*].b", ("a", 3, "b"), True),
    ("$.a[*].b", ("a", "x", "b"), True),  # RFC 9535: [*] and .* both select all children
    ("$.a[*].b", ("a", 0, "c"), False),
    ("$['a b'].c", ("a b", "c"), True),
    ("$.a.*", ("a", "z"), True),
    ("$.a[1]", ("a", 1), True),
])
def test_jsonpath_matches(path: str, loc: tuple[str | int, ...], hit: bool) -> None:
    assert compile_path(path).matches(loc) is hit


def test_jsonpath_find_and_format() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}], "c d": {"e": 3}}
    assert [v for _, v in compile_path("$.a[*].b").find(doc)] == [1, 2]
    assert compile_path("$.a[-1].b").first(doc) == 2
    assert compile_path("$.missing").first(doc, "dflt") == "dflt"
    assert format_location(("a", 0, "b")) == "$.a[0].b"
    assert format_location(("c d", "e")) == "$['c d'].e"
    with pytest.raises(ConfigError):
        compile_path("a.b")
    with pytest.raises(ConfigError):
        compile_path("$.a[?(@.x)]")


@pytest.mark.parametrize("path", ["$", "$.a", "$.a[0]", "$.a[-1].b", "$.a[5]", "$.a[-4]", "$.a.b", "$.s.t",
                                  "$['x y'].z", "$.n[0]", "$.a[1].b", "$.s[0]", "$.missing.deeper"])
def test_jsonpath_without_wildcards_walks_as_the_general_matcher(path: str) -> None:
    """Paths without a wildcard take a direct walk: the same locations and values as the recursive matcher."""
    from mlguard.jsonpath import _find

    docs: list[Any] = [{"a": [{"b": 1}, {"b": 2}, 3], "s": "text", "x y": {"z": None}, "n": None},
                       {"a": {"b": [1]}, "s": {"t": 0}}, [1, 2], "scalar", None, {"a": []}]
    p = compile_path(path)
    for doc in docs:
        assert list(p.find(doc)) == list(_find(doc, p.steps, ())), (path, doc)
        general = next((v for _, v in _find(doc, p.steps, ())), "absent")
        assert p.first(doc, "absent") == general, (path, doc)


def test_gdpr_requires_a_configured_retention_maximum(tmp_path: Path) -> None:
    from mlguard.errors import PolicyError
    from mlguard.runtime import Guard

    with pytest.raises(PolicyError, match=r"retention\.max"):
        Guard({"policies": ["gdpr"], "audit": {"enabled": False}}, stages=[])
    with pytest.raises(PolicyError, match=r"under ecoa \(retention\.min P25M\)"):  # never below ecoa's floor
        Guard({"policies": ["gdpr", "ecoa"], "retention": {"max": "P1Y"}, "audit": {"enabled": False}}, stages=[])
    guard = Guard({"policies": ["gdpr", "ecoa"], "retention": {"max": "P25M"}, "audit": {"enabled": False}},
                  stages=[])
    assert guard.retention_max == "P25M"
