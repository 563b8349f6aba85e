"""shap is imported without matplotlib on the serving path, and its plots still work when user code asks for them.

Each case runs in a fresh interpreter: whether shap and matplotlib are already imported is the point, and the
test process has imported both long before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_explainer_built_without_matplotlib_and_plots_load_on_first_use() -> None:
    out = _run("""
        import sys
        import numpy as np
        from sklearn.ensemble import GradientBoostingClassifier
        from mlguard.explain.shap_import import import_shap

        shap = import_shap()
        print("after import:", "matplotlib" in sys.modules)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 3)); y = (x[:, 0] + x[:, 1] > 0).astype(int)
        model = GradientBoostingClassifier(n_estimators=5).fit(x, y)
        values = shap.TreeExplainer(model).shap_values(x[:2])
        print("explained:", np.asarray(values).shape, "matplotlib" in sys.modules)
        exp = shap.Explanation(values=np.asarray(values), base_values=np.zeros(2), data=x[:2],
                               feature_names=["a", "b", "c"])
        shap.plots.bar(exp, show=False)
        print("plots:", type(shap.plots).__name__, "matplotlib" in sys.modules)
        shap.summary_plot(np.asarray(values), x[:2], show=False)
        print("summary_plot: ok")
        print("same module:", import_shap() is shap is sys.modules["shap"])
    """)
    assert "after import: False" in out
    assert "explained: (2, 3) False" in out
    assert "plots: module True" in out
    assert "summary_plot: ok" in out
    assert "same module: True" in out


def test_nothing_hidden_when_matplotlib_is_already_imported() -> None:
    out = _run("""
        import sys
        import matplotlib
        from mlguard.explain.shap_import import import_shap

        shap = import_shap()
        print("plots:", type(shap.plots).__name__, shap.have_matplotlib)
    """)
    assert "plots: module True" in out


def test_route_explainer_built_without_matplotlib() -> None:
    """What the measurement was about: building a tree model's explainer (shap's reading of the trees, the
    fast path's start-up check against shap) leaves matplotlib unloaded, and explains."""
    out = _run("""
        import sys
        import numpy as np
        from sklearn.ensemble import GradientBoostingClassifier
        from mlguard.config.explain import ModelBinding
        from mlguard.explain.binding import build_binding
        from mlguard.explain.explainers import build_engine

        rng = np.random.default_rng(1)
        x = rng.normal(size=(300, 3)); y = (x[:, 0] - x[:, 2] > 0).astype(int)
        model = GradientBoostingClassifier(n_estimators=10).fit(x, y)
        names = ["a", "b", "c"]
        rows = [dict(zip(names, map(float, r))) for r in x[:50]]
        binding = build_binding(0, ModelBinding(object=model, features="$.features", feature_order=names,
                                                background_rows=rows), base_dir=None)
        engine = build_engine(binding, binding.background.data)
        base, contrib = engine.explain(x[:1])
        print("engine:", engine.method, engine.identity()["implementation"], contrib.shape)
        print("matplotlib loaded:", "matplotlib" in sys.modules, "PIL" in sys.modules)
    """)
    assert "engine: shap.TreeExplainer mlguard.fasttree (1, 3)" in out
    assert "matplotlib loaded: False False" in out
