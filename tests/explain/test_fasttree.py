"""The precomputed interventional TreeSHAP (mlguard/explain/fasttree.py) gives shap's own numbers, or steps aside.

Each case builds the route's engine twice, once as served and once with the precomputation switched off (shap's
C algorithm), and compares the two on rows the background never held: moved rows, rows on and beside split
thresholds, and single features swapped in from another row.
"""

from __future__ import annotations

import logging
from itertools import combinations
from math import factorial
from typing import Any

import numpy as np
import pytest

from mlguard.explain import fasttree
from mlguard.explain.explainers import build_engine
from tests.explain.test_boosters import _binding

TREES = [("models", "gbc"), ("models", "rf"), ("models", "dt"), ("models", "gbr"), ("models", "hgbc"),
         ("models", "hgbr"), ("boosters", "xgbc"), ("boosters", "xgbr"), ("boosters", "lgbc"),
         ("boosters", "lgbr")]


def _shap_only(monkeypatch: pytest.MonkeyPatch, binding: Any) -> Any:
    with monkeypatch.context() as m:
        m.setattr(fasttree, "build", lambda *a, **k: None)
        engine = build_engine(binding, binding.background.data)
    assert engine.params["implementation"] == "shap"
    return engine


def _rows(data: Any, engine: Any) -> Any:
    rng = np.random.default_rng(3)
    x = np.array(data.x[200:260], dtype=np.float64)
    moved = x * rng.uniform(0.5, 1.5, x.shape)
    swapped = x.copy()
    swapped[:, rng.integers(0, x.shape[1], x.shape[0])] = x[::-1][:, rng.integers(0, x.shape[1], x.shape[0])]
    ensemble = engine._explainer.model
    split = np.asarray(ensemble.children_left) >= 0
    on_threshold = []
    for j in range(x.shape[1]):
        ts = np.unique(np.asarray(ensemble.thresholds)[split][np.asarray(ensemble.features)[split] == j])
        for t in ts[:: max(1, ts.size // 3)]:
            for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
                row = x[0].copy()
                row[j] = v
                on_threshold.append(row)
    return np.concatenate([x, moved, swapped, np.array(on_threshold).reshape(-1, x.shape[1])])


@pytest.mark.parametrize(("fixture", "name"), TREES, ids=[t[1] for t in TREES])
def test_same_contributions_as_shap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, data: Any,
                                    fixture: str, name: str) -> None:
    model = request.getfixturevalue(fixture)[name]
    binding = _binding(model, data)
    served = build_engine(binding, binding.background.data)
    assert served.params["implementation"] == "mlguard.fasttree"
    reference = _shap_only(monkeypatch, binding)
    x = _rows(data, served)
    base, contrib = served.explain(x)
    ref_base, ref_contrib = reference.explain(x)
    np.testing.assert_array_equal(base, ref_base)
    scale = max(1.0, float(np.abs(ref_contrib).sum(axis=1).max()))
    # shap walks the trees with float32 thresholds; where RouteSnap cannot separate two thresholds (gbr here)
    # a value between a threshold and its float32 spelling is explained on another leaf by shap: those rows
    # are checked against the definition instead (test_exact_where_shap_rounds)
    clear = ~_in_float32_gap(served, x)
    assert clear.sum() >= 150
    np.testing.assert_allclose(contrib[clear], ref_contrib[clear], rtol=0, atol=1e-6 * scale)
    # and additive to the trees' own output, as every engine must be
    np.testing.assert_allclose(base + contrib.sum(axis=1), served.output(x), rtol=1e-8, atol=1e-6 * scale)


def _in_float32_gap(engine: Any, x: Any) -> Any:
    """Rows holding a value between a split threshold and its float32 spelling (inclusive)."""
    ensemble = engine._explainer.model
    split = np.asarray(ensemble.children_left) >= 0
    feats = np.asarray(ensemble.features)[split]
    ts = np.asarray(ensemble.thresholds, dtype=np.float64)[split]
    t32 = ts.astype(np.float32).astype(np.float64)
    lo, hi = np.minimum(ts, t32), np.maximum(ts, t32)
    gap = (t32 != ts)[None, :] & (x[:, feats] >= lo[None, :]) & (x[:, feats] <= hi[None, :])
    return gap.any(axis=1)


def _brute_force(margin: Any, x: Any, background: Any, logistic: bool) -> Any:
    """Interventional SHAP by its definition: for each background row r, the Shapley values of
    S -> margin(x on S, r elsewhere) over every coalition, rescaled to the probability as shap does, averaged."""
    m = x.shape[1]
    masks = ((np.arange(1 << m)[:, None] >> np.arange(m)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    out = np.zeros(x.shape)
    for i, row in enumerate(x):
        hybrid = np.where(masks[None, :, :], row[None, None, :], background[:, None, :])
        v = margin(hybrid.reshape(-1, m)).reshape(background.shape[0], 1 << m)
        phi = np.zeros((background.shape[0], m))
        for s in range(1 << m):
            for j in range(m):
                if not masks[s, j]:
                    w = factorial(sizes[s]) * factorial(m - sizes[s] - 1) / factorial(m)
                    phi[:, j] += w * (v[:, s | (1 << j)] - v[:, s])
        if logistic:
            mx, mr = v[:, -1], v[:, 0]
            same = mx == mr
            sig = 1.0 / (1.0 + np.exp(-np.stack([mx, mr])))
            phi *= np.where(same, 1.0, (sig[0] - sig[1]) / np.where(same, 1.0, mx - mr))[:, None]
        out[i] = phi.mean(axis=0)
    return out


@pytest.mark.parametrize(("name", "logistic"), [("gbr", False), ("gbc", True)])
def test_exact_where_shap_rounds(models: dict[str, Any], data: Any, name: str, logistic: bool) -> None:
    """Against the definition, on ordinary rows and on every row that falls in a float32 gap."""
    model = models[name]
    binding = _binding(model, data)
    served = build_engine(binding, binding.background.data)
    assert served.params["implementation"] == "mlguard.fasttree"
    x = _rows(data, served)
    gap = np.where(_in_float32_gap(served, x))[0]
    x = np.asarray(np.concatenate([x[:6], x[gap[:10]]]), dtype=np.float32).astype(np.float64)
    background = np.asarray(binding.background.data, dtype=np.float32).astype(np.float64)
    margin = model.decision_function if logistic else model.predict
    _, contrib = served.explain(x)
    np.testing.assert_allclose(contrib, _brute_force(margin, x, background, logistic), rtol=0, atol=1e-9)


def test_a_row_with_a_missing_value_is_explained_by_shap(models: dict[str, Any], data: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    binding = _binding(models["hgbc"], data)  # HistGradientBoosting routes missing values
    served = build_engine(binding, binding.background.data)
    assert served.params["implementation"] == "mlguard.fasttree"
    x = np.array(data.x[200:203], dtype=np.float64)
    x[1, 2] = np.nan
    calls: list[int] = []
    original = served._explainer.shap_values
    monkeypatch.setattr(served._explainer, "shap_values", lambda rows, **k: calls.append(1) or original(rows, **k))
    _, contrib = served.explain(x)
    assert calls == [1]  # the batch holding a missing value went to shap
    _, ref_contrib = _shap_only(monkeypatch, binding).explain(x)
    np.testing.assert_allclose(contrib, ref_contrib, atol=1e-6)
    served.explain(x[[0, 2]])
    assert calls == [1]  # complete rows did not


def test_paths_over_the_limit_keep_shap(models: dict[str, Any], data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fasttree, "MAX_PATH_FEATURES", 1)
    binding = _binding(models["gbc"], data)
    assert build_engine(binding, binding.background.data).params["implementation"] == "shap"


def test_disagreement_at_start_up_keeps_shap_and_says_so(models: dict[str, Any], data: Any,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fasttree, "agrees", lambda *a: False)
    binding = _binding(models["gbc"], data)
    with caplog.at_level(logging.WARNING, logger="mlguard.explain.explainers"):
        engine = build_engine(binding, binding.background.data)
    assert engine.params["implementation"] == "shap"
    assert "disagrees with shap" in caplog.text


def test_agrees_rejects_a_wrong_answer(models: dict[str, Any], data: Any) -> None:
    binding = _binding(models["gbc"], data)
    engine = build_engine(binding, binding.background.data)
    ensemble = engine._explainer.model
    fast = fasttree.build(ensemble, binding.background.data.astype(np.float32).astype(np.float64),
                          "probability", len(data.features))
    assert fast is not None
    rows = np.array(data.x[:5], dtype=np.float32).astype(np.float64)
    right = fast.shap_values(rows)
    assert fasttree.agrees(fast, right, rows)
    wrong = right.copy()
    wrong[2, 1] += 1e-3
    assert not fasttree.agrees(fast, wrong, rows)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_coefficients_are_the_shapley_values_of_the_leaf_game(k: int) -> None:
    """The table against Shapley's formula evaluated by brute force over every coalition of k players."""
    table = fasttree._coefficients(k)
    size = 1 << k
    for a in range(size):
        for p in range(size):
            def v(coalition: frozenset[int], a: int = a, p: int = p) -> float:
                # the leaf is reached when every position takes a value inside its interval
                return float(all(((a if j in coalition else p) >> j) & 1 for j in range(k)))

            for j in range(k):
                others = [i for i in range(k) if i != j]
                phi = 0.0
                for n in range(k):
                    for s in combinations(others, n):
                        w = factorial(n) * factorial(k - n - 1) / factorial(k)
                        phi += w * (v(frozenset(s) | {j}) - v(frozenset(s)))
                assert table[a * size + p, j] == pytest.approx(phi, abs=1e-12), (a, p, j)


@pytest.mark.parametrize(("fixture", "name"), [("models", "gbc"), ("models", "hgbr"), ("boosters", "lgbc")])
def test_route_snap_one_row_path_is_the_batch_path(request: pytest.FixtureRequest, data: Any, fixture: str,
                                                   name: str) -> None:
    """A request's single row is snapped with bisect on lists; batches with numpy: the same values."""
    from mlguard.explain.explainers import RouteSnap, _tree_input_dtype

    model = request.getfixturevalue(fixture)[name]
    binding = _binding(model, data)
    engine = build_engine(binding, binding.background.data)
    snap = RouteSnap.build(engine._explainer.model, len(data.features), _tree_input_dtype(model))
    assert snap is not None
    rows = _rows(data, engine)
    rows = np.concatenate([rows, [[np.nan, 1e30, -1e30, 0.0, 3.0]]])
    batch = snap(rows)
    single = np.concatenate([snap(r[None, :]) for r in rows])
    np.testing.assert_array_equal(single, batch)
    assert not np.array_equal(batch, rows)  # it did move values


def test_a_precomputation_over_its_memory_bound_keeps_shap(models: dict[str, Any], data: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fasttree, "MAX_GROUP_BYTES", 1000)
    binding = _binding(models["gbc"], data)  # probability: the row-group matrix is what is bounded
    assert build_engine(binding, binding.background.data).params["implementation"] == "shap"
    monkeypatch.setattr(fasttree, "MAX_CELLS", 10)
    binding = _binding(models["rf"], data)
    assert build_engine(binding, binding.background.data).params["implementation"] == "shap"
