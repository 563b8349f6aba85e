"""XGBoost and LightGBM through shap's TreeExplainer: additive in every output space, routed as the model routes.

Why these need their own cases: XGBoost sums its trees in float32 and reads inputs as float32; LightGBM reads
float64 and bakes the training mean into its first tree; both expose their log-odds natively (output_margin,
raw_score) rather than through decision_function. Each of these broke additivity before it was handled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlguard.config.explain import ModelBinding
from mlguard.errors import ConfigError
from mlguard.explain.binding import Binding, build_binding
from mlguard.explain.explainers import build_engine, model_family
from mlguard.testing import json_app

# model, binding options, with background, output space
CASES = [
    ("xgbc", {}, True, "probability"),
    ("xgbc", {"favorable_class": 0}, True, "probability"),
    ("xgbc", {"explain": "log_odds"}, True, "log_odds"),
    ("xgbc", {"explain": "log_odds", "favorable_class": 0}, True, "log_odds"),
    ("xgbc", {"explain": "log_odds"}, False, "log_odds"),
    ("xgbc_frame", {}, True, "probability"),
    ("xgbr", {}, True, "raw"),
    ("xgbr", {}, False, "raw"),
    ("lgbc", {}, True, "probability"),
    ("lgbc", {"favorable_class": 0}, True, "probability"),
    ("lgbc", {"explain": "log_odds"}, True, "log_odds"),
    ("lgbc", {"explain": "log_odds", "favorable_class": 0}, False, "log_odds"),
    ("lgbc_frame", {}, True, "probability"),
    ("lgbr", {}, True, "raw"),
    ("lgbr", {}, False, "raw"),
]


def _binding(model: Any, data: Any, *, background: bool = True, order: list[str] | None = None,
             **opts: Any) -> Binding:
    order = order or data.features
    rows = [dict(zip(order, r.values(), strict=True)) for r in data.rows(0, 80)] if background else None
    cfg = ModelBinding(object=model, features="$.features", feature_order=order, background_rows=rows, **opts)
    return build_binding(0, cfg, base_dir=None)


def _native(model: Any, x: Any, binding: Binding) -> Any:
    """The model's own number for the explained output, straight from its package's API."""
    fav = binding.favorable_index
    if binding.output_space == "probability":
        return model.predict_proba(binding.model_input(x))[:, fav].astype(np.float64)
    if binding.output_space == "log_odds":
        kw = {"output_margin": True} if "xgboost" in type(model).__module__ else {"raw_score": True}
        margin = model.predict(binding.model_input(x), **kw).astype(np.float64)
        return margin if fav == 1 else -margin
    return model.predict(binding.model_input(x)).astype(np.float64)


@pytest.mark.parametrize(("name", "opts", "background", "space"), CASES,
                         ids=[f"{c[0]}-{c[3]}-{'fav0-' if c[1].get('favorable_class') == 0 else ''}"
                              f"{'bg' if c[2] else 'nobg'}" for c in CASES])
def test_additivity(boosters: dict[str, Any], data: Any, name: str, opts: dict[str, Any], background: bool,
                    space: str) -> None:
    model = boosters[name]
    binding = _binding(model, data, background=background, **opts)
    engine = build_engine(binding, binding.background.data)
    assert engine.method == "shap.TreeExplainer" and engine.output_space == space == binding.output_space
    assert engine.identity()["feature_perturbation"] == ("interventional" if background else "tree_path_dependent")
    x = data.x[200:230]
    base, contrib = engine.explain(x)
    assert contrib.shape == (30, len(data.features))
    total = base + contrib.sum(axis=1)
    exact = engine.output(x)  # the same trees summed in float64
    if name.startswith("xgb") and not background:
        # Without a background shap hands back XGBoost's own pred_contribs, computed in float32.
        np.testing.assert_allclose(total, exact, rtol=2e-6, atol=1e-6)
    elif space == "raw":
        # shap's interventional algorithm holds leaf values and path weights as C floats: on a regression value
        # near 600 that leaves about 1e-6 (2e-9 relative) even with the trees centred, so the bound scales.
        np.testing.assert_allclose(total, exact, rtol=1e-8, atol=1e-6)
    else:
        np.testing.assert_allclose(total, exact, rtol=0, atol=1e-6)
    native = _native(model, x, binding)
    np.testing.assert_allclose(binding.explained_output(x), native, rtol=0, atol=0)
    if name.startswith("lgb"):
        np.testing.assert_allclose(exact, native, rtol=0, atol=1e-9)  # LightGBM computes in float64
    else:
        np.testing.assert_allclose(exact, native, rtol=1e-6, atol=1e-7)  # only XGBoost's float32 sum differs


def test_family_and_probability_is_interventional(boosters: dict[str, Any], data: Any) -> None:
    assert {model_family(m) for m in boosters.values()} == {"tree"}
    for name in ("xgbc", "lgbc"):
        ident = build_engine(_binding(boosters[name], data), _binding(boosters[name], data).background.data
                             ).identity()
        assert ident["model_output"] == "probability" and ident["tree_output"] == "log_odds"
    binding = _binding(boosters["xgbc"], data, background=False)
    with pytest.raises(ConfigError) as err:
        build_engine(binding, None, field="routes.2.model")
    assert err.value.field == "routes.2.model.background"


def test_lightgbm_is_explained_on_float64_inputs(boosters: dict[str, Any], data: Any) -> None:
    """A value between float32(threshold) and the threshold: LightGBM (float64) sends it right; rounding it to
    float32 first, as for scikit-learn and XGBoost, would send it left inside shap."""
    model = boosters["lgbr"]
    root = model.booster_.dump_model()["tree_info"][0]["tree_structure"]
    feature, threshold = int(root["split_feature"]), float(root["threshold"])
    above = float(np.nextafter(threshold, np.inf))
    assert float(np.float32(above)) <= threshold < above  # the trap: float32 puts it on the other side
    binding = _binding(model, data)
    engine = build_engine(binding, binding.background.data)
    x = np.array(data.x[200:204], dtype=np.float64)
    x[:, feature] = above
    base, contrib = engine.explain(x)
    np.testing.assert_allclose(base + contrib.sum(axis=1), model.predict(x), rtol=0, atol=1e-6)
    left = x.copy()
    left[:, feature] = float(np.float32(above))
    assert not np.allclose(model.predict(left), model.predict(x))  # the branch matters for these rows


def test_xgboost_is_explained_on_float32_inputs(boosters: dict[str, Any], data: Any) -> None:
    """XGBoost rounds x to float32, then goes left when it is below the float32 threshold. shap reads an
    XGBRegressor's inputs as float64 against the threshold's float32 predecessor, so a float64 value just above
    that predecessor, which XGBoost rounds down onto it (left), would go right inside shap unless rounded."""
    import json

    model = boosters["xgbr"]
    tree = json.loads(model.get_booster().get_dump(dump_format="json")[0])
    split = str(tree["split"])
    feature = int(split[1:]) if split.startswith("f") else data.features.index(split)
    threshold = np.float32(tree["split_condition"])
    below = float(np.nextafter(threshold, np.float32(-np.inf)))
    near = below + 0.25 * (float(threshold) - below)  # float32 rounds it down onto `below`
    assert below < near and float(np.float32(near)) == below
    binding = _binding(model, data)
    engine = build_engine(binding, binding.background.data)
    x = np.array(data.x[200:204], dtype=np.float64)
    x[:, feature] = near
    base, contrib = engine.explain(x)
    np.testing.assert_allclose(base + contrib.sum(axis=1), engine.output(x), rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(engine.output(x), model.predict(x), rtol=1e-6)
    right = x.copy()
    right[:, feature] = float(threshold)
    assert not np.allclose(model.predict(right), model.predict(x))  # the branch matters for these rows


def test_lightgbm_feature_names_with_spaces(boosters: dict[str, Any], data: Any) -> None:
    """LightGBM stores ``years employed`` as ``years_employed``; the request keeps the name it was trained on."""
    spaced = [f.replace("_", " ") for f in data.features]
    binding = _binding(boosters["lgbc_spaced"], data, order=spaced)
    assert binding.feature_order == spaced
    engine = build_engine(binding, binding.background.data)
    x = data.x[200:203]
    base, contrib = engine.explain(x)
    np.testing.assert_allclose(base + contrib.sum(axis=1), binding.explained_output(x), atol=1e-6)
    with pytest.raises(ConfigError) as err:
        _binding(boosters["lgbc_spaced"], data, order=list(reversed(spaced)))
    assert err.value.field == "routes.0.model.feature_order"


def test_frame_fitted_boosters_keep_their_names(boosters: dict[str, Any], data: Any) -> None:
    for name in ("xgbc_frame", "lgbc_frame"):
        binding = _binding(boosters[name], data)
        assert binding.feature_order == data.features
        with pytest.raises(ConfigError):
            _binding(boosters[name], data, order=list(reversed(data.features)))


def test_objective_shap_does_not_reproduce_is_refused_at_start_up(boosters: dict[str, Any], data: Any) -> None:
    """Poisson predicts exp(margin); explaining the margin as if it were the prediction would not add up."""
    binding = _binding(boosters["xgbr_poisson"], data)
    with pytest.raises(ConfigError) as err:
        build_engine(binding, binding.background.data, field="routes.0.model")
    assert err.value.field == "routes.0.model.explain"


CATALOG = {"income": "Income insufficient for amount of credit requested",
           "debt": "Excessive obligations in relation to income", "years_employed": "Length of employment",
           "late_payments": "Delinquent past or present credit obligations",
           "age": "Age"}  # a prohibited basis under ecoa: never given
TOKEN = "booster-admin-token"


def _xgb_app(model: Any, features: list[str]) -> Any:
    """A raw ASGI scoring endpoint serving the XGBoost model."""

    def score(doc: Any) -> dict[str, Any]:
        feats = doc["features"]
        p = float(model.predict_proba(np.array([[feats[n] for n in features]]))[0, 1])
        return {"score": p, "approved": p >= 0.5}

    return json_app(score)


@pytest.mark.anyio
async def test_xgboost_through_the_middleware_reasons_and_counterfactuals(
        boosters: dict[str, Any], data: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from mlguard.explain.render import counterfactuals
    from mlguard.explain.stage import ExplainStage
    from mlguard.middleware import GuardMiddleware
    from mlguard.runtime import Guard

    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)
    model = boosters["xgbc"]
    cfg = {
        "policies": ["gdpr", "ecoa"],  # gdpr asks for counterfactuals (C-203/22); ecoa alone does not
        "retention": {"max": "P2Y3M"},
        "audit": {"store": f"sqlite:///{tmp_path}/audit.db", "keyring": str(tmp_path / "k.keyring")},
        "explain": {"reason_catalog": CATALOG},
        "routes": [{"path": "/predict", "subject": "$.applicant.id", "protected": {"sex": "$.applicant.sex"},
                    "model": {"object": model, "features": "$.features", "feature_order": data.features,
                              "output": "$.score", "favorable": "$.approved",
                              "background_rows": data.rows(0, 100)}}],
    }
    guard = Guard(cfg, stages=["explain"])
    stage = next(s for s in guard.stages if s.name == "explain")
    assert isinstance(stage, ExplainStage)
    rx = stage.routes[0]
    assert not rx.deferred and rx.engine.method == "shap.TreeExplainer"
    scores = model.predict_proba(data.x)[:, 1]
    # Refused, but near the cut-off, so that a single change can flip it (far below, none can).
    near = data.x[int(np.argmax(np.where(scores < 0.5, scores, -1.0)))]
    best = data.x[int(np.argmax(scores))]
    auth = {"authorization": f"Bearer {TOKEN}"}
    mw = GuardMiddleware(_xgb_app(model, data.features), guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        refused = await c.post("/predict", json={"applicant": {"id": "A-1", "sex": "F"},
                                                 "features": dict(zip(data.features, map(float, near),
                                                                      strict=True))})
        approved = await c.post("/predict", json={"applicant": {"id": "A-2", "sex": "M"},
                                                  "features": dict(zip(data.features, map(float, best),
                                                                       strict=True))})
        audit_id = refused.headers["mlguard-audit-id"]
        plain = await c.get(f"/mlguard/explanations/{audit_id}/plain", headers=auth)
    await guard.aclose()

    body = refused.json()
    exp = body["explanation"]
    assert body["approved"] is False and exp["output"] == "probability"
    assert exp["identity"]["model"]["class"] == "xgboost.sklearn.XGBClassifier"
    assert abs(exp["base_value"] + sum(exp["contributions"].values()) - body["score"]) < 1e-6
    reasons = exp["reasons"]
    assert 1 <= len(reasons) <= 4
    assert all(r["feature"] != "age" and r["contribution"] < 0 for r in reasons)
    assert [r["text"] for r in reasons] == [CATALOG[r["feature"]] for r in reasons]
    contrib = exp["contributions"]
    assert [r["feature"] for r in reasons] == sorted((f for f in contrib if f != "age" and contrib[f] < 0),
                                                     key=lambda f: contrib[f])[:4]
    assert approved.json()["approved"] is True and "reasons" not in approved.json()["explanation"]

    assert plain.status_code == 200
    assert "Decision: unfavourable" in plain.text
    assert f"1. {reasons[0]['text']}" in plain.text
    assert "What would have changed the result:" in plain.text and "  - If " in plain.text
    assert "If age had been" not in plain.text  # a prohibited basis under ecoa: never a counterfactual
    entry = stage.store.get(audit_id)
    assert entry is not None
    changes = counterfactuals(rx.binding, entry.private["inputs"], entry.private)
    assert changes
    for change in changes:  # each single change really flips XGBoost's own decision
        row = dict(entry.private["inputs"], **{change["feature"]: change["changed_to"]})
        x = np.array([[row[n] for n in data.features]])
        assert float(model.predict_proba(x)[0, 1]) >= 0.5


def test_unsupported_boosters_are_refused_at_start_up_naming_the_field(data: Any) -> None:
    xgb = pytest.importorskip("xgboost")
    lgb = pytest.importorskip("lightgbm")
    x = data.x[:200]
    three = np.digitize(x[:, 0], [45.0, 55.0])
    multi = [xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1, verbosity=0).fit(x, three),
             lgb.LGBMClassifier(n_estimators=3, num_leaves=4, n_jobs=1, verbose=-1).fit(x, three)]
    for model in multi:
        binding = _binding(model, data)
        with pytest.raises(ConfigError) as err:
            build_engine(binding, binding.background.data, field="routes.0.model")
        assert err.value.field == "routes.0.model.explain" and "multi-class" in str(err.value)
    boosters = [xgb.train({"objective": "binary:logistic", "nthread": 1, "verbosity": 0},
                          xgb.DMatrix(x, label=data.y[:200]), 2),
                lgb.train({"objective": "binary", "num_threads": 1, "verbose": -1},
                          lgb.Dataset(x, label=data.y[:200]), 2)]
    for booster in boosters:
        with pytest.raises(ConfigError) as err:
            _binding(booster, data)
        assert err.value.field == "routes.0.model.object" and "Booster" in str(err.value)


ROUTING = [("models", "gbc"), ("models", "rf"), ("models", "dt"), ("models", "gbr"), ("models", "hgbc"),
           ("models", "hgbr"), ("boosters", "xgbc"), ("boosters", "xgbr"), ("boosters", "lgbc"),
           ("boosters", "lgbr")]


@pytest.mark.parametrize(("fixture", "name"), ROUTING, ids=[r[1] for r in ROUTING])
def test_values_on_and_beside_every_threshold_add_up(request: pytest.FixtureRequest, data: Any, fixture: str,
                                                     name: str) -> None:
    """Rows placed on each threshold, one float32 or float64 step either side, and on its float32 spelling:
    shap's interventional code compares with float32 thresholds, the models (and shap's own predict) with
    their float64 ones. Every row must be explained on the leaves the model itself reaches."""
    model = request.getfixturevalue(fixture)[name]
    binding = _binding(model, data)
    engine = build_engine(binding, binding.background.data)
    ensemble = engine._explainer.model
    split = np.asarray(ensemble.children_left) >= 0
    rows = []
    for j in range(len(data.features)):
        ts = np.unique(np.asarray(ensemble.thresholds, dtype=np.float64)[split][np.asarray(ensemble.features)
                                                                               [split] == j])
        for t in ts[:: max(1, ts.size // 4)]:
            t32 = np.float32(t)
            for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), float(t32),
                      float(np.nextafter(t32, np.float32(-np.inf))), float(np.nextafter(t32, np.float32(np.inf)))):
                row = np.array(data.x[200], dtype=np.float64)
                row[j] = v
                rows.append(row)
    x = np.array(rows)
    base, contrib = engine.explain(x)
    exact = engine.output(x)
    np.testing.assert_allclose(base + contrib.sum(axis=1), exact, rtol=1e-8 if binding.output_space == "raw" else 0,
                               atol=1e-6)
    np.testing.assert_allclose(exact, binding.explained_output(x), rtol=1e-6, atol=1e-7)
