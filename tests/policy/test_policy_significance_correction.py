"""``fairness.significance_correction`` in policy files: validation, composition, defaults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlguard.errors import PolicyError
from mlguard.fairness.metrics import Thresholds
from mlguard.policy import bundled_policies, effective_view, load_policy_file, resolve_policies

PolicyFactory = Callable[..., Path]
FIELD = "fairness.significance_correction"


def rule(value: object, cite: str = "test cite") -> dict[str, object]:
    return {"value": value, "cite": cite}


def fairness(value: object) -> dict[str, object]:
    return {"fairness": {"significance_correction": rule(value)}}


@pytest.mark.parametrize(("a", "b", "expected", "origin"), [
    ("none", "holm", "none", ["a"]),
    ("holm", "none", "none", ["b"]),
    ("bonferroni", "none", "none", ["b"]),
    ("bonferroni", "holm", "holm", ["b"]),
    ("holm", "bonferroni", "holm", ["a"]),
    ("holm", "holm", "holm", ["a", "b"]),
    ("bonferroni", "bonferroni", "bonferroni", ["a", "b"]),
])
def test_composition_keeps_the_value_that_flags_the_most(make_policy: PolicyFactory, a: str, b: str,
                                                         expected: str, origin: list[str]) -> None:
    p = resolve_policies([make_policy("a", **fairness(a)), make_policy("b", **fairness(b))])
    assert p.fairness.significance_correction == expected
    assert p.origin(FIELD) == origin
    assert not p.conflicts
    assert Thresholds.from_policy(p.fairness).significance_correction == expected


def test_composed_with_a_policy_that_sets_nothing_the_setting_stays(make_policy: PolicyFactory) -> None:
    p = resolve_policies(["eeoc_four_fifths", make_policy("mine", **fairness("holm"))])
    assert p.fairness.significance_correction == "holm" and p.origin(FIELD) == ["mine"]
    assert effective_view(p)["fairness"]["significance_correction"]["value"] == "holm"
    assert p.fairness.significance_alpha == 0.05


@pytest.mark.parametrize(("value", "words"), [
    ("holmes", "'none', 'holm' or 'bonferroni'"),
    ("Holm", "'none', 'holm' or 'bonferroni'"),
    (None, "'none', 'holm' or 'bonferroni'"),
    (True, "'none', 'holm' or 'bonferroni'"),
])
def test_unknown_value_is_a_validation_error_naming_the_field(make_policy: PolicyFactory, value: object,
                                                               words: str) -> None:
    path = make_policy("broken", **fairness(value))
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert info.value.file == str(path)
    assert info.value.field == f"{FIELD}.value"
    assert words in str(info.value)
    assert str(info.value).startswith(f"{path}:{FIELD}.value: ")


def test_unquoted_none_in_yaml_is_the_word_not_null(make_policy: PolicyFactory) -> None:
    path = make_policy("plain")
    path.write_text(path.read_text(encoding="utf-8")
                    + "fairness:\n  significance_correction: {value: none, cite: '(D) test'}\n", encoding="utf-8")
    doc = load_policy_file(path)
    assert doc.fairness.significance_correction is not None
    assert doc.fairness.significance_correction.value == "none"


def test_no_shipped_policy_sets_it_and_the_default_is_none() -> None:
    for name, path in bundled_policies().items():
        assert load_policy_file(path).fairness.significance_correction is None, name
    every = resolve_policies(sorted(bundled_policies()))
    assert every.fairness.significance_correction is None
    assert every.origin(FIELD) == []
    assert Thresholds.from_policy(every.fairness).significance_correction == "none"
