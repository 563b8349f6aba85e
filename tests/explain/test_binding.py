"""Binding: model resolution, the input row from the (redacted) document, the background and its hash."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlguard.config.explain import ModelBinding
from mlguard.errors import ConfigError
from mlguard.explain.binding import build_binding, resolve_model

PLANTED = 98765.4321  # a value that must never appear in a skip reason


def _cfg(model: Any, data: Any, **kw: Any) -> ModelBinding:
    kw.setdefault("background_rows", data.rows(0, 30))
    return ModelBinding(object=model, features="$.features", feature_order=data.features, **kw)


@pytest.fixture
def fake_module(models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    mod = types.ModuleType("mlguard_test_models")
    mod.MODEL = models["gbc"]  # type: ignore[attr-defined]
    mod.factory = lambda: models["gbc"]  # type: ignore[attr-defined]
    mod.broken = lambda: 1 / 0  # type: ignore[attr-defined]
    mod.Klass = type(models["gbc"])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlguard_test_models", mod)
    return "mlguard_test_models"


def test_resolve_object_attr_and_factory(models: dict[str, Any], fake_module: str) -> None:
    assert resolve_model(f"{fake_module}:MODEL", field="f") is models["gbc"]
    assert resolve_model(f"{fake_module}:factory", field="f") is models["gbc"]
    assert resolve_model(models["gbc"], field="f") is models["gbc"]
    assert resolve_model(lambda: models["lr"], field="f") is models["lr"]


@pytest.mark.parametrize(("spec", "message"), [
    ("no_colon", "module:attr"),
    ("mlguard_test_models:missing", "no attribute"),
    ("mlguard_no_such_module_xyz:thing", "cannot import"),
    ("mlguard_test_models:broken", "factory raised ZeroDivisionError"),
    ("mlguard_test_models:Klass", "names a class"),
])
def test_resolve_errors_name_the_field(fake_module: str, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_model(spec, field="routes.0.model.object")
    assert err.value.field == "routes.0.model.object"
    assert message in str(err.value)


def test_not_a_model() -> None:
    with pytest.raises(ConfigError, match="not a model"):
        resolve_model(42, field="f")


@pytest.mark.parametrize(("features", "reason"), [
    (None, "no feature object at $.features"),
    ({"income": 1.0}, "feature 'debt' is missing"),
    ({"income": "<PERSON>", "debt": 1, "years_employed": 1, "late_payments": 0, "age": 30},
     "feature 'income' is not a number"),
    ({"income": True, "debt": 1, "years_employed": 1, "late_payments": 0, "age": 30},
     "feature 'income' is not a number"),
    ({"income": float("nan"), "debt": 1, "years_employed": 1, "late_payments": 0, "age": 30},
     "feature 'income' is not a finite number"),
    ({"income": [PLANTED], "debt": 1, "years_employed": 1, "late_payments": 0, "age": 30},
     "feature 'income' is not a number"),
])
def test_missing_or_mistyped_features_give_a_reason(models: dict[str, Any], data: Any, features: Any,
                                                     reason: str) -> None:
    binding = build_binding(0, _cfg(models["gbc"], data), base_dir=None)
    doc = {"features": features} if features is not None else {"other": 1}
    row = binding.build_row(doc)
    assert row.values is None
    assert row.skip_reason == reason
    assert str(PLANTED) not in reason


def test_row_in_feature_order_with_booleans(models: dict[str, Any], data: Any) -> None:
    binding = build_binding(0, _cfg(models["gbc"], data, feature_types={"late_payments": "boolean"}),
                            base_dir=None)
    doc = {"features": {"age": 40, "late_payments": True, "years_employed": 3, "debt": 10.5, "income": 55,
                        "extra": "ignored"}}
    row = binding.build_row(doc)
    assert row.values == {"income": 55.0, "debt": 10.5, "years_employed": 3.0, "late_payments": 1.0,
                          "age": 40.0}
    assert list(row.values) == data.features
    assert binding.build_row({"features": {**doc["features"], "late_payments": 1}}).skip_reason == \
        "feature 'late_payments' is not a boolean"


def test_background_csv_relative_to_base_dir(tmp_path: Path, models: dict[str, Any], data: Any) -> None:
    lines = [",".join(reversed(data.features))]  # column order differs from the model's: read by name
    lines += [",".join(str(v) for v in reversed(r)) for r in data.x[:150]]
    (tmp_path / "bg").mkdir()
    csv_path = tmp_path / "bg" / "background.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    cfg = ModelBinding(object=models["gbc"], features="$.features", feature_order=data.features,
                       background=Path("bg/background.csv"), background_size=100)
    binding = build_binding(0, cfg, base_dir=tmp_path)
    bg = binding.background
    assert bg.sha256 == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert bg.data is not None and bg.data.shape == (100, 5)
    assert bg.all_rows is not None and bg.all_rows.shape == (150, 5)
    np.testing.assert_array_equal(bg.all_rows, data.x[:150])
    assert bg.identity() == {"sha256": bg.sha256, "source": "bg/background.csv", "rows": 100, "rows_total": 150}
    again = build_binding(0, cfg, base_dir=tmp_path).background
    np.testing.assert_array_equal(again.data, bg.data)  # the sample is deterministic


@pytest.mark.parametrize(("content", "message"), [
    ("income,debt\n1,2\n", "lacks columns"),
    ("income,debt,years_employed,late_payments,age\n1,2,x,4,5\n", "non-numeric value in background at row 1"),
    ("income,debt,years_employed,late_payments,age\n", "no rows"),
])
def test_bad_background(tmp_path: Path, models: dict[str, Any], data: Any, content: str, message: str) -> None:
    (tmp_path / "b.csv").write_text(content)
    cfg = ModelBinding(object=models["gbc"], features="$.features", feature_order=data.features,
                       background=Path("b.csv"))
    with pytest.raises(ConfigError) as err:
        build_binding(2, cfg, base_dir=tmp_path)
    assert err.value.field == "routes.2.model.background"
    assert message in str(err.value)


def test_missing_background_file(tmp_path: Path, models: dict[str, Any], data: Any) -> None:
    cfg = ModelBinding(object=models["gbc"], features="$.features", feature_order=data.features,
                       background=Path("nope.csv"))
    with pytest.raises(ConfigError, match="cannot read background"):
        build_binding(0, cfg, base_dir=tmp_path)


def test_inline_background_hash_is_canonical(models: dict[str, Any], data: Any) -> None:
    rows = data.rows(0, 5)
    a = build_binding(0, _cfg(models["gbc"], data, background_rows=rows), base_dir=None)
    b = build_binding(0, _cfg(models["gbc"], data, background_rows=[dict(reversed(r.items())) for r in rows]),
                      base_dir=None)
    assert a.background.sha256 == b.background.sha256
    assert a.background.source == "inline"


def test_feature_order_checks(models: dict[str, Any], data: Any) -> None:
    with pytest.raises(ConfigError) as err:
        build_binding(0, ModelBinding(object=models["gbc"], features="$.features",
                                      feature_order=data.features[:3]), base_dir=None)
    assert err.value.field == "routes.0.model.feature_order"
    with pytest.raises(ConfigError, match="set feature_order"):
        build_binding(0, ModelBinding(object=models["gbc"], features="$.features"), base_dir=None)
    with pytest.raises(ConfigError) as err:
        build_binding(0, ModelBinding(object=models["gbc"], feature_order=data.features), base_dir=None)
    assert err.value.field == "routes.0.model.features"


def test_dataframe_model_takes_its_fitted_names(data: Any) -> None:
    import pandas as pd
    from sklearn.tree import DecisionTreeClassifier

    frame = pd.DataFrame(data.x, columns=data.features)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(frame, data.y)
    binding = build_binding(0, ModelBinding(object=model, features="$.f", background_rows=data.rows(0, 20)),
                            base_dir=None)
    assert binding.feature_order == data.features
    with pytest.raises(ConfigError, match="feature_names_in_"):
        build_binding(0, ModelBinding(object=model, features="$.f", feature_order=list(reversed(data.features))),
                      base_dir=None)


def test_output_space_and_favourable_class(models: dict[str, Any], data: Any) -> None:
    assert build_binding(0, _cfg(models["gbc"], data), base_dir=None).favorable_index == 1
    assert build_binding(0, _cfg(models["gbc"], data, favorable_class=0), base_dir=None).favorable_index == 0
    with pytest.raises(ConfigError) as err:
        build_binding(0, _cfg(models["gbc"], data, favorable_class=7), base_dir=None)
    assert err.value.field == "routes.0.model.favorable_class"
    with pytest.raises(ConfigError):
        build_binding(0, _cfg(models["gbr"], data, explain="probability"), base_dir=None)
    reg = build_binding(0, _cfg(models["gbr"], data), base_dir=None)
    assert reg.output_space == "raw" and reg.cutoff is None and not reg.is_classifier


def test_model_hash_is_stable(models: dict[str, Any], data: Any) -> None:
    a = build_binding(0, _cfg(models["gbc"], data), base_dir=None)
    b = build_binding(0, _cfg(models["gbc"], data), base_dir=None)
    assert a.model_sha256 == b.model_sha256
    assert a.identity()["class"] == "sklearn.ensemble._gb.GradientBoostingClassifier"
