"""Findings of a new user's walkthrough of explanations and model binding, one section each.

1. A counterfactual printed in the text must flip the decision when the model is evaluated at the printed value.
2. A batch path (``$[*].features``) is refused at config check, naming the field: one decision per request.
3. ``mlguard explain --config`` imports ``model.object`` from the current directory, as ``serve`` does.
4. ``config check`` reads the background as the start-up does: a text (categorical) column is found there.
5. The plain text names the service's own score and the explained output apart; the README says which explainer
   a Pipeline gets.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from mlguard.cli import main
from mlguard.config import load_config
from mlguard.config.explain import ExplainSettings, ModelBinding
from mlguard.errors import ConfigError
from mlguard.explain.binding import build_binding, resolve_model
from mlguard.explain.render import counterfactuals, render_plain
from mlguard.explain.route import build_route_explainer
from mlguard.jsonpath import compile_path
from mlguard.runtime import check_config

ROOT = Path(__file__).resolve().parents[2]


def _logistic(coef: float, intercept: float) -> Any:
    """A one-feature logistic model whose boundary is known exactly: P(1) = 0.5 at x = -intercept / coef."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression()
    model.classes_ = np.array([0, 1])
    model.coef_ = np.array([[coef]])
    model.intercept_ = np.array([intercept])
    model.n_features_in_ = 1
    return model


def _p_favourable(coef: float, intercept: float, x: float) -> float:
    return 1.0 / (1.0 + math.exp(-(coef * x + intercept)))


def _printed_values(text: str) -> list[float]:
    """The 'had been V' numbers exactly as the person reads them."""
    return [float(v.replace(",", "")) for v in re.findall(r"had been (-?[\d,]+(?:\.\d+)?(?:e[-+]\d+)?) ", text)]


# ---------------------------------------------------------------------- 1. counterfactuals are verified


@pytest.mark.parametrize(("coef", "intercept", "here", "low", "high"), [
    # the user's case: P(favourable) = 0.5 at 2452.6261; 12000 is refused; the text said 2,452.63 (refused too)
    (-0.001, 2.4526261, 12000.0, 100.0, 20000.0),
    # favourable above a boundary at 45.674901 (four significant digits printed: 45.67 is below it, refused)
    (1.0, -45.674901, 20.0, 0.0, 100.0),
    # favourable below a boundary at 0.12345678 (printed 0.1235 would be past it, on the refused side)
    (-100.0, 12.345678, 0.9, 0.0, 1.0),
])
def test_every_printed_counterfactual_flips_the_decision(coef: float, intercept: float, here: float,
                                                         low: float, high: float) -> None:
    model = _logistic(coef, intercept)
    rows = [{"x": float(v)} for v in np.linspace(low, high, 200)]
    binding = build_binding(0, ModelBinding(object=model, features="$.f", feature_order=["x"],
                                            background_rows=rows), base_dir=None)
    before = _p_favourable(coef, intercept, here) >= 0.5
    assert before is False  # each case starts from a refusal
    changes = counterfactuals(binding, {"x": here}, {"contributions": {"x": -1.0}})
    assert len(changes) == 1  # the boundary is inside the background: a verified change exists
    text = render_plain({"status": "ready", "contributions": {"x": -1.0}, "top": []}, changes=changes)
    printed = _printed_values(text)
    assert printed == [changes[0]["changed_to"]]  # the number read is the number verified
    for value in printed:
        p = _p_favourable(coef, intercept, value)
        assert (p >= 0.5) is not before, (value, p)
        assert abs(changes[0]["score"] - p) < 1e-12  # the score reported is the model's at that value
        boundary = -intercept / coef
        assert abs(value - boundary) < 1e-3 * abs(here - boundary)  # still a change to about the boundary


class _Notch:
    """Favourable only on (2452.6251, 2452.6259): narrower than the two decimals a person is shown, so no value
    the text could print flips the decision."""

    classes_ = np.array([0, 1])

    def predict_proba(self, x: Any) -> Any:
        v = np.asarray(x, dtype=np.float64)[:, 0]
        p = np.where((v > 2452.6251) & (v < 2452.6259), 0.9, 0.1)
        return np.column_stack([1 - p, p])

    def predict(self, x: Any) -> Any:
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(int)


def test_a_flip_that_cannot_be_printed_is_not_reported() -> None:
    rows = [{"x": v} for v in (100.0, 1000.0, 2452.6255, 5000.0, 9000.0)]
    binding = build_binding(0, ModelBinding(object=_Notch(), features="$.f", feature_order=["x"],
                                            background_rows=rows), base_dir=None)
    changes = counterfactuals(binding, {"x": 12000.0}, {"contributions": {"x": -1.0}})
    assert changes == []
    text = render_plain({"status": "ready", "contributions": {"x": -1.0}, "top": []}, changes=changes)
    assert "No single change to one of the main factors would have altered the result." in text


# ---------------------------------------------------------------------- 2. one decision per request


def _config(tmp_path: Path, model: dict[str, Any], **extra: Any) -> Path:
    doc = {"routes": [{"path": "/claims", "model": model}], **extra}
    path = tmp_path / "mlguard.yaml"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["config", "check", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(("model", "field"), [
    ({"features": "$[*].features", "favorable": "$.fast_track"}, "routes.0.model.features"),
    ({"output": "$[*].score"}, "routes.0.model.output"),
    ({"output": "$.score", "favorable": "$[*].fast_track"}, "routes.0.model.favorable"),
    ({"favorable": "$.items.*.ok"}, "routes.0.model.favorable"),
])
def test_a_path_that_could_match_a_batch_is_refused_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], model: dict[str, Any], field: str) -> None:
    path = _config(tmp_path, model)
    code, out = _check(path, capsys)
    assert code == 1
    assert f"{path}:{field}:" in out and "one decision per request" in out
    with pytest.raises(ConfigError) as caught:  # what Guard (and so every serve worker) runs
        check_config(load_config(path), file=path)
    assert caught.value.field == field


def test_a_single_value_path_still_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, {"output": "$.results[0].score", "favorable": "$['fast track']"})
    assert _check(path, capsys)[0] == 0


def test_build_binding_refuses_a_wildcard_features_path() -> None:
    with pytest.raises(ConfigError, match="one decision per request") as caught:
        build_binding(0, ModelBinding(object=_logistic(1.0, 0.0), features="$[*].features", feature_order=["x"]),
                      base_dir=None)
    assert caught.value.field == "routes.0.model.features"


def test_several_matches_at_request_time_are_a_skip_not_the_first_item() -> None:
    binding = build_binding(0, ModelBinding(object=_logistic(1.0, 0.0), features="$.features",
                                            feature_order=["x"]), base_dir=None)
    batch = dataclasses.replace(binding, features_path=compile_path("$[*].features"))  # built by hand
    row = batch.build_row([{"features": {"x": 1.0}}, {"features": {"x": 2.0}}])
    assert row.values is None
    assert row.skip_reason == "$[*].features matches 2 values; one decision per request is supported"
    assert batch.build_row([{"features": {"x": 1.0}}]).values == {"x": 1.0}


# ---------------------------------------------------------------------- 3. the model module from the cwd


SERVICE = """\
import numpy as np
from sklearn.linear_model import LogisticRegression

model = LogisticRegression()
model.classes_ = np.array([0, 1])
model.coef_ = np.array([[-0.001]])
model.intercept_ = np.array([2.4526261])
model.n_features_in_ = 1
"""


class _Reader:
    """Stands in for the audit reader: one sealed decision with its explanation."""

    record: dict[str, Any] = {}

    def __init__(self, store_url: str, keyring_path: Any = None) -> None:
        pass

    def get(self, audit_id: str) -> dict[str, Any] | None:
        return self.record if audit_id == self.record.get("audit_id") else None

    def deferred_explanation(self, record: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        pass


@pytest.fixture
def service_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A service module beside mlguard.yaml, the current directory, which is not otherwise on sys.path."""
    name = f"svc_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(SERVICE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    importlib.invalidate_caches()
    yield tmp_path, name
    sys.modules.pop(name, None)


def test_resolve_model_imports_from_the_current_directory(service_dir: tuple[Path, str]) -> None:
    _, name = service_dir
    model = resolve_model(f"{name}:model", field="routes.0.model.object")
    assert type(model).__name__ == "LogisticRegression"


def test_mlguard_explain_finds_the_model_where_serve_does(service_dir: tuple[Path, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlguard.audit.reader as reader_mod
    import mlguard.cli.explain  # noqa: F401  (registers the command)
    from mlguard.cli._root import cli

    here, name = service_dir
    (here / "bg.csv").write_text("claim_amount\n" + "\n".join(f"{v:.2f}" for v in np.linspace(100, 20000, 200))
                                 + "\n", encoding="utf-8")
    (here / "mlguard.yaml").write_text(json.dumps({
        "policies": ["gdpr"], "retention": {"max": "P1Y"},
        "routes": [{"path": "/claims", "model": {"object": f"{name}:model", "features": "$.features",
                                                 "feature_order": ["claim_amount"], "background": "bg.csv"}}],
    }), encoding="utf-8")
    monkeypatch.setattr(reader_mod, "AuditReader", _Reader)
    _Reader.record = {"audit_id": "a-1", "route": "/claims", "shredded": False, "explanation": {
        "status": "ready", "method": "shap.LinearExplainer", "output": "log_odds", "base_value": 0.0,
        "output_value": -9.5, "contributions": {"claim_amount": -9.5},
        "top": [{"feature": "claim_amount", "contribution": -9.5}], "inputs": {"claim_amount": 12000.0},
        "outcome": {"score": 0.9969, "favorable": False}}}
    res = CliRunner().invoke(cli, ["explain", "a-1", "--store", "sqlite:///x.db", "--config", "mlguard.yaml"])
    assert res.exit_code == 0, res.output
    assert "cannot import module" not in res.output
    printed = _printed_values(res.stdout)
    assert len(printed) == 1 and _p_favourable(-0.001, 2.4526261, printed[0]) >= 0.5  # flips, as printed


# ---------------------------------------------------------------------- 4. categorical columns


@pytest.fixture
def found_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module config check can find (it is only looked up, never imported)."""
    name = f"cat_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("model = None\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    importlib.invalidate_caches()
    return f"{name}:model"


def _claims_csv(tmp_path: Path, body: str) -> None:
    (tmp_path / "bg.csv").write_text("claim_amount,region,label\n" + body, encoding="utf-8")


def test_a_text_feature_column_in_the_background_is_refused_by_config_check(
        tmp_path: Path, found_model: str, capsys: pytest.CaptureFixture[str]) -> None:
    _claims_csv(tmp_path, "1200.5,1,yes\n800,north,no\n")
    path = _config(tmp_path, {"object": found_model, "features": "$.features",
                              "feature_order": ["claim_amount", "region"], "background": "bg.csv"})
    code, out = _check(path, capsys)
    assert code == 1
    assert f"{path}:routes.0.model.background: non-numeric value in background at row 2 (column 'region')" in out
    assert "north" not in out  # the value found is never repeated


@pytest.mark.parametrize(("body", "message"), [
    ("", "background has no rows"),
    ("1200.5,1,yes\ninf,2,no\n", "background holds non-finite values"),
])
def test_config_check_refuses_what_the_start_up_refuses(tmp_path: Path, found_model: str,
                                                        capsys: pytest.CaptureFixture[str], body: str,
                                                        message: str) -> None:
    _claims_csv(tmp_path, body)
    path = _config(tmp_path, {"object": found_model, "features": "$.features",
                              "feature_order": ["claim_amount", "region"], "background": "bg.csv"})
    code, out = _check(path, capsys)
    assert code == 1 and f"routes.0.model.background: {message}" in out


def test_without_feature_order_a_text_column_is_a_warning_naming_it(
        tmp_path: Path, found_model: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Which columns the model takes is known only once it is imported: the check warns, naming each column
    the start-up refuses if it is a feature, and still passes (a label column beside the features is fine)."""
    _claims_csv(tmp_path, "1200.5,1,yes\n800,north,no\n")
    path = _config(tmp_path, {"object": found_model, "features": "$.features", "background": "bg.csv"})
    code, out = _check(path, capsys)
    assert code == 0, out
    assert "warning:" in out and "column 'region'" in out and "row 2" in out and "column 'label'" in out
    assert "column 'claim_amount'" not in out and "north" not in out


# ---------------------------------------------------------------------- 5. scales named apart; README


def test_the_text_names_the_services_score_and_the_explained_output_apart() -> None:
    doc = {"status": "ready", "method": "shap.KernelExplainer", "output": "probability", "base_value": 0.41,
           "output_value": 0.0031, "contributions": {"claim_amount": -0.4069},
           "top": [{"feature": "claim_amount", "contribution": -0.4069}],
           "outcome": {"score": 0.9969, "favorable": False}}
    text = render_plain(doc)
    assert "Decision: unfavourable (the service's own score: 0.9969, on the service's scale)." in text
    assert ("Explained output: the probability of a favourable result, 0.0031 for this decision "
            "(typical value 0.41).") in text


def test_a_pipeline_ending_in_logistic_regression_gets_kernel_shap_on_a_kmeans_summary(data: Any) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame = pd.DataFrame(data.x, columns=data.features)
    pipe = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), data.features)])),
                     ("lr", LogisticRegression(max_iter=1000))]).fit(frame, data.y)
    cfg = ModelBinding(object=pipe, features="$.features", background_rows=data.rows(0, 120))
    rx = build_route_explainer(0, cfg, None, ExplainSettings(), base_dir=None)
    assert rx.engine.method == "shap.KernelExplainer" and rx.engine.output_space == "probability"
    assert rx.identity["explainer"]["background_summary"] == "kmeans(10)"
    bare = build_route_explainer(0, ModelBinding(object=LogisticRegression(max_iter=1000).fit(data.x, data.y),
                                                 features="$.features", feature_order=data.features,
                                                 background_rows=data.rows(0, 120)),
                                 None, ExplainSettings(), base_dir=None)
    assert bare.engine.method == "shap.LinearExplainer" and bare.engine.output_space == "log_odds"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "LinearExplainer for linear models" not in readme
    assert "including a `Pipeline` that ends in `LogisticRegression`" in readme and "KernelExplainer" in readme
    assert "`explain.kmeans_k` centres (10)" in readme
