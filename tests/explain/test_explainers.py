"""Additivity per explainer type: base_value + sum(contributions) == the explained model output (1e-6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlguard.config.explain import ModelBinding
from mlguard.errors import ConfigError
from mlguard.explain.binding import Binding, build_binding
from mlguard.explain.explainers import build_engine, model_family

CASES = [
    # model, binding options, generic method, expected explainer, expected output space
    ("gbc", {}, "kernel", "shap.TreeExplainer", "probability"),
    ("gbc", {"explain": "log_odds"}, "kernel", "shap.TreeExplainer", "log_odds"),
    ("gbc", {"favorable_class": 0}, "kernel", "shap.TreeExplainer", "probability"),
    ("gbc", {"favorable_class": 0, "explain": "log_odds"}, "kernel", "shap.TreeExplainer", "log_odds"),
    ("rf", {}, "kernel", "shap.TreeExplainer", "probability"),
    ("rf", {"favorable_class": 0}, "kernel", "shap.TreeExplainer", "probability"),
    ("dt", {}, "kernel", "shap.TreeExplainer", "probability"),
    ("gbr", {}, "kernel", "shap.TreeExplainer", "raw"),
    ("hgbc", {}, "kernel", "shap.TreeExplainer", "probability"),
    ("hgbc", {"explain": "log_odds"}, "kernel", "shap.TreeExplainer", "log_odds"),
    ("hgbr", {}, "kernel", "shap.TreeExplainer", "raw"),
    ("lr", {}, "kernel", "shap.LinearExplainer", "log_odds"),
    ("lr", {"favorable_class": 0}, "kernel", "shap.LinearExplainer", "log_odds"),
    ("lr", {"explain": "probability"}, "kernel", "shap.KernelExplainer", "probability"),
    ("linreg", {}, "kernel", "shap.LinearExplainer", "raw"),
    ("mlp", {}, "kernel", "shap.KernelExplainer", "probability"),
    ("mlp", {}, "permutation", "shap.PermutationExplainer", "probability"),
    ("svc", {}, "kernel", "shap.KernelExplainer", "probability"),
]


def _binding(model: Any, data: Any, **opts: Any) -> Binding:
    cfg = ModelBinding(object=model, features="$.features", feature_order=data.features,
                       background_rows=data.rows(0, 80), **opts)
    return build_binding(0, cfg, base_dir=None)


@pytest.mark.parametrize(("name", "opts", "generic", "method", "space"), CASES,
                         ids=[f"{c[0]}-{c[3].split('.')[-1]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_additivity(models: dict[str, Any], data: Any, name: str, opts: dict[str, Any], generic: str,
                    method: str, space: str) -> None:
    binding = _binding(models[name], data, **opts)
    engine = build_engine(binding, binding.background.data, generic_method=generic, kmeans_k=8)
    assert engine.method == method
    assert engine.output_space == space == binding.output_space
    x = data.x[200:204]
    base, contrib = engine.explain(x)
    assert contrib.shape == (4, len(data.features))
    np.testing.assert_allclose(base + contrib.sum(axis=1), binding.explained_output(x), rtol=0, atol=1e-6)


def test_favourable_class_zero_is_the_complement(models: dict[str, Any], data: Any) -> None:
    pos = _binding(models["gbc"], data)
    neg = _binding(models["gbc"], data, favorable_class=0)
    x = data.x[210:212]
    np.testing.assert_allclose(pos.explained_output(x) + neg.explained_output(x), 1.0, atol=1e-12)
    _, c_pos = build_engine(pos, pos.background.data).explain(x)
    _, c_neg = build_engine(neg, neg.background.data).explain(x)
    np.testing.assert_allclose(c_pos, -c_neg, atol=1e-9)


def test_tree_probability_is_interventional_on_the_background(models: dict[str, Any], data: Any) -> None:
    engine = build_engine(_binding(models["gbc"], data), _binding(models["gbc"], data).background.data)
    ident = engine.identity()
    assert ident["model_output"] == "probability"
    assert ident["feature_perturbation"] == "interventional"
    assert ident["tree_output"] == "log_odds"


def test_model_family(models: dict[str, Any]) -> None:
    assert {k: model_family(m) for k, m in models.items()} == {
        "gbc": "tree", "rf": "tree", "dt": "tree", "gbr": "tree", "hgbc": "tree", "hgbr": "tree",
        "lr": "linear", "linreg": "linear", "mlp": "generic", "svc": "generic"}


def test_log_odds_of_a_forest_is_refused(models: dict[str, Any], data: Any) -> None:
    binding = _binding(models["rf"], data, explain="log_odds")
    with pytest.raises(ConfigError) as err:
        build_engine(binding, binding.background.data, field="routes.0.model")
    assert err.value.field == "routes.0.model.explain"


def test_boosted_probability_without_background_is_refused(models: dict[str, Any], data: Any) -> None:
    cfg = ModelBinding(object=models["gbc"], features="$.features", feature_order=data.features)
    binding = build_binding(3, cfg, base_dir=None)
    with pytest.raises(ConfigError) as err:
        build_engine(binding, None, field="routes.3.model")
    assert err.value.field == "routes.3.model.background"


def test_log_odds_tree_without_background_is_path_dependent(models: dict[str, Any], data: Any) -> None:
    cfg = ModelBinding(object=models["gbc"], features="$.features", feature_order=data.features,
                       explain="log_odds")
    binding = build_binding(0, cfg, base_dir=None)
    engine = build_engine(binding, None)
    assert engine.identity()["feature_perturbation"] == "tree_path_dependent"
    x = data.x[:3]
    base, contrib = engine.explain(x)
    np.testing.assert_allclose(base + contrib.sum(1), binding.explained_output(x), atol=1e-6)
