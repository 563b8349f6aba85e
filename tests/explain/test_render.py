"""Plain-language render, the counterfactual search, and ``mlguard explain`` (on a stand-in audit reader)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from mlguard.config.explain import ExplainSettings, ModelBinding
from mlguard.explain.binding import build_binding
from mlguard.explain.render import counterfactuals, render_plain
from mlguard.explain.stage import build_route_explainer


def _explained(models: dict[str, Any], data: Any, idx: int) -> tuple[Any, dict[str, Any], dict[str, float]]:
    cfg = ModelBinding(object=models["gbc"], features="$.features", feature_order=data.features,
                       background_rows=data.rows(0, 200))
    rx = build_route_explainer(0, cfg, None, ExplainSettings(), base_dir=None)
    inputs = data.rows(idx, idx + 1)[0]
    score = float(rx.binding.score(rx.binding.matrix([inputs]))[0])
    entry = rx.explain_many([inputs], [score < 0.5])[0]
    record = {**entry.private, "outcome": {"score": score, "favorable": score >= 0.5}}
    return rx.binding, record, inputs


def _lowest(models: dict[str, Any], data: Any) -> int:
    return int(np.argmin(models["gbc"].predict_proba(data.x)[:, 1]))


def test_counterfactuals_flip_the_decision(models: dict[str, Any], data: Any) -> None:
    for idx in (_lowest(models, data), int(np.argmax(models["gbc"].predict_proba(data.x)[:, 1])), 17):
        binding, record, inputs = _explained(models, data, idx)
        before = binding.favorable_score(float(binding.score(binding.matrix([inputs]))[0]))
        changes = counterfactuals(binding, inputs, record, max_features=3)
        for c in changes:
            assert c["current"] == inputs[c["feature"]] != c["changed_to"]
            trial = dict(inputs, **{c["feature"]: c["changed_to"]})
            after = binding.favorable_score(float(binding.score(binding.matrix([trial]))[0]))
            assert after is not before
            assert abs(c["score"] - float(binding.score(binding.matrix([trial]))[0])) < 1e-12
            # discrete features: the nearest flipping value among the background's values
            column = binding.background.all_rows[:, binding.feature_order.index(c["feature"])]
            if np.unique(column).size > 64:
                continue
            closer = [v for v in np.unique(column)
                      if abs(v - c["current"]) < abs(c["changed_to"] - c["current"]) and v != c["current"]]
            for v in closer:
                t = dict(inputs, **{c["feature"]: float(v)})
                assert binding.favorable_score(float(binding.score(binding.matrix([t]))[0])) is before


def test_counterfactuals_need_a_cutoff(models: dict[str, Any], data: Any) -> None:
    cfg = ModelBinding(object=models["gbr"], features="$.f", feature_order=data.features,
                       background_rows=data.rows(0, 50))
    binding = build_binding(0, cfg, base_dir=None)
    assert counterfactuals(binding, data.rows(0, 1)[0], {"contributions": {"income": -1.0}}) == []


def test_render_plain_refusal(models: dict[str, Any], data: Any) -> None:
    binding, record, inputs = _explained(models, data, _lowest(models, data))
    record["reasons"] = [{"rank": 1, "feature": "late_payments", "text": "Delinquent credit obligations",
                          "contribution": -0.2}]
    changes = counterfactuals(binding, inputs, record)
    text = render_plain(record, changes=changes, audit_id="0190-abc")
    assert text.startswith("Explanation of decision 0190-abc")
    assert "Decision: unfavourable" in text
    assert "Data used: the model used these 5 items of information about you:" in text
    assert "  - late payments: " in text
    assert "Main factors" in text and "toward an unfavourable result" in text
    assert "Principal reasons for the decision:\n  1. Delinquent credit obligations" in text
    assert "What would have changed the result:" in text
    assert "How this was computed: shap.TreeExplainer" in text


@pytest.mark.parametrize(("doc", "phrase"), [
    ({"status": "skipped", "reason": "feature 'debt' is missing"},
     "No explanation was computed for this decision: feature 'debt' is missing."),
    ({"status": "pending", "deferred": True}, "still being computed"),
])
def test_render_plain_without_explanation(doc: dict[str, Any], phrase: str) -> None:
    assert phrase in render_plain(doc)


def test_render_without_changes_says_none_found() -> None:
    doc = {"status": "ready", "method": "m", "output": "probability", "base_value": 0.3,
           "top": [{"feature": "a", "contribution": 0.1}], "contributions": {"a": 0.1}}
    text = render_plain(doc, changes=[])
    assert "No single change to one of the main factors would have altered the result." in text
    assert "What would have changed" not in render_plain(doc)



def test_numbers_are_written_as_people_read_them() -> None:
    """The plain text is for the person concerned: no scientific notation for ordinary amounts."""
    doc = {"status": "ready", "method": "m", "output": "probability", "base_value": 0.3,
           "inputs": {"capital_gain": 61010.5, "hours": 40.0, "rate": 0.123456, "debt": -1234.567, "n": 15024},
           "top": [{"feature": "capital_gain", "contribution": 0.1}], "contributions": {"capital_gain": 0.1}}
    text = render_plain(doc)
    assert "e+0" not in text
    for line in ("capital gain: 61,010.5", "hours: 40", "rate: 0.1235", "debt: -1,234.57", "n: 15024"):
        assert f"  - {line}\n" in text, line


# ---------------------------------------------------------------------- mlguard explain


class FakeReader:
    records: dict[str, dict[str, Any]] = {}

    def __init__(self, store_url: str, keyring_path: Any = None) -> None:
        self.store_url = store_url

    def get(self, audit_id: str) -> dict[str, Any] | None:
        return self.records.get(audit_id)

    def iter_records(self, since: Any = None, until: Any = None, route: Any = None, subject: Any = None) -> Any:
        return iter(self.records.values())

    def deferred_explanation(self, record: dict[str, Any]) -> dict[str, Any] | None:
        for event in self.records.values():
            data = event.get("data")
            if event.get("kind") == "explanation" and isinstance(data, dict) \
                    and data.get("audit_id") == record.get("audit_id"):
                return data.get("explanation")  # type: ignore[no-any-return]
        return None

    def close(self) -> None:
        pass


@pytest.fixture
def cli_env(models: dict[str, Any], data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import mlguard.audit.reader as reader_mod

    monkeypatch.setattr(reader_mod, "AuditReader", FakeReader)
    mod = types.ModuleType("mlguard_cli_test_model")
    mod.MODEL = models["gbc"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlguard_cli_test_model", mod)
    rows = [",".join(data.features)] + [",".join(str(v) for v in r) for r in data.x[:200]]
    (tmp_path / "bg.csv").write_text("\n".join(rows) + "\n")
    cfg = {"policies": ["gdpr"], "retention": {"max": "P1Y"}, "routes": [{"path": "/predict", "model": {
        "object": "mlguard_cli_test_model:MODEL", "features": "$.features", "feature_order": data.features,
        "background": "bg.csv"}}]}
    path = tmp_path / "mlguard.yaml"
    path.write_text(json.dumps(cfg))
    _, record, _ = _explained(models, data, _lowest(models, data))
    FakeReader.records = {
        "id-1": {"audit_id": "id-1", "route": "/predict", "kind": "exchange", "shredded": False,
                 "explanation": record, "ts": "2026-01-01T00:00:00Z"},
        "id-2": {"audit_id": "id-2", "route": "/predict", "kind": "exchange", "shredded": True,
                 "explanation": None},
        "id-3": {"audit_id": "id-3", "route": "/predict", "kind": "exchange", "shredded": False,
                 "explanation": {"status": "pending", "deferred": True, "ref": "/x"}, "ts": "t"},
        "ev-3": {"audit_id": "ev-3", "kind": "explanation", "shredded": False,
                 "data": {"audit_id": "id-3", "explanation": {**record, "deferred": True}}},
    }
    return path


def _run(*args: str) -> Any:
    import mlguard.cli.explain  # noqa: F401  (registers the command)
    from mlguard.cli._root import cli

    return CliRunner().invoke(cli, ["explain", *args])


def test_cli_renders_with_changes(cli_env: Path) -> None:
    res = _run("id-1", "--store", "sqlite:///x.db", "--keyring", "k", "--config", str(cli_env))
    assert res.exit_code == 0, res.output
    assert "Decision: unfavourable" in res.output and "What would have changed the result:" in res.output
    assert "If " in res.output or "No single change" in res.output


def test_cli_without_config_and_json(cli_env: Path) -> None:
    res = _run("id-1", "--store", "sqlite:///x.db")
    assert res.exit_code == 0 and "What would have changed" not in res.stdout
    assert "without --config" in res.stderr  # says what is missing and where to get it
    assert "catalogue" not in res.stderr  # the reasons' texts are sealed: nothing of them is missing
    res = _run("id-1", "--store", "sqlite:///x.db", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["method"] == "shap.TreeExplainer"


def test_cli_deferred_explanation_comes_from_its_event(cli_env: Path) -> None:
    res = _run("id-3", "--store", "sqlite:///x.db", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["deferred"] is True


@pytest.mark.parametrize(("audit_id", "message"), [("nope", "no audit record"), ("id-2", "crypto-shredded")])
def test_cli_exit_1(cli_env: Path, audit_id: str, message: str) -> None:
    res = _run(audit_id, "--store", "sqlite:///x.db")
    assert res.exit_code == 1 and message in res.output


def test_cli_usage_is_2() -> None:
    assert _run("id-1").exit_code == 2  # --store is required
