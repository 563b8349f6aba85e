"""Explainers chosen by model type, built once at start-up behind one small interface.

Why three families: TreeSHAP is exact and sub-millisecond on tree ensembles; linear models have a closed form;
everything else needs a model-agnostic sampler (Kernel or Permutation SHAP on a k-means summary of the
background), which costs tens of milliseconds to seconds per row and is therefore normally deferred.

Why the output space is explicit (traps.md): TreeSHAP on a gradient-boosted classifier explains the log-odds by
default; explaining the probability needs ``model_output="probability"`` with an interventional background.
Every engine says which space its numbers are in, and ``base_value + sum(contributions)`` equals
``Binding.explained_output`` in that space (tested per engine within 1e-6).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlguard.errors import ConfigError, DependencyMissing, ExplainError

if TYPE_CHECKING:
    from mlguard.explain.binding import Binding, FloatArray

log = logging.getLogger("mlguard.explain.explainers")

Family = Literal["tree", "linear", "generic"]

_SKLEARN_TREES = frozenset({
    "DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor",
    "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor",
    "GradientBoostingClassifier", "GradientBoostingRegressor",
    "HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
})
_TREE_PACKAGES = ("xgboost", "lightgbm", "catboost")
_SKLEARN_LINEAR_CLASSIFIERS = frozenset({"LogisticRegression", "LogisticRegressionCV"})


def model_family(model: Any) -> Family:
    """Tree ensemble, linear model, or anything else: decides the explainer."""
    cls = type(model)
    module = cls.__module__
    if module.startswith("sklearn.") and cls.__name__ in _SKLEARN_TREES:
        return "tree"
    if module.split(".")[0] in _TREE_PACKAGES:
        return "tree"
    if module.startswith("sklearn.linear_model") and hasattr(model, "coef_"):
        classifier = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        if not classifier:
            return "linear"
        if cls.__name__ in _SKLEARN_LINEAR_CLASSIFIERS and len(model.classes_) == 2:
            return "linear"
    return "generic"


@dataclass(slots=True)
class Engine:
    """A built explainer: ``explain(x)`` -> (base values (n,), contributions (n, features))."""

    method: str
    output_space: str
    params: dict[str, Any]
    _explainer: Any
    _run: Any
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def explain(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Explain each row of ``x``; the model raising becomes an ExplainError without its message."""
        with self._lock:
            try:
                result: tuple[FloatArray, FloatArray] = self._run(x)
            except ExplainError:
                raise
            except Exception as exc:
                log.warning("explainer raised", extra={"error": type(exc).__name__, "method": self.method})
                raise ExplainError(f"the explainer or the model raised {type(exc).__name__}") from None
        return result

    def timed(self, x: FloatArray, repeat: int = 5) -> float:
        """Median wall time of one explain call on ``x``, in milliseconds (measured at start-up)."""
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            self.explain(x)
            times.append((time.perf_counter() - t0) * 1000.0)
        times.sort()
        return times[len(times) // 2]

    def identity(self) -> dict[str, Any]:
        import shap

        return {"name": self.method, "shap": shap.__version__, **self.params}


def build_engine(binding: Binding, background: FloatArray | None, *, generic_method: str = "kernel",
                 kmeans_k: int = 10, field: str = "model") -> Engine:
    """Choose and build the explainer for ``binding`` with this ``background`` (rows in feature order)."""
    try:
        import shap  # noqa: F401
    except ImportError:
        raise DependencyMissing("shap", "explain") from None
    family = model_family(binding.model)
    if family == "tree":
        return _tree_engine(binding, background, field)
    if family == "linear" and binding.output_space != "probability":
        return _linear_engine(binding, background, field)
    return _generic_engine(binding, background, generic_method, kmeans_k, field)


# ---------------------------------------------------------------------- families


def _tree_engine(binding: Binding, background: FloatArray | None, where: str) -> Engine:
    import shap

    probe = shap.TreeExplainer(binding.model)
    tree_output = str(probe.model.tree_output)
    space = binding.output_space
    if space == "probability" and tree_output != "probability":
        model_output = "probability"
        if background is None:
            raise ConfigError("explaining the probability of a boosted model needs a background",
                              field=f"{where}.background")
    elif space == "log_odds" and tree_output != "log_odds":
        raise ConfigError(f"the trees output {tree_output}, not log-odds; use probability",
                          field=f"{where}.explain")
    else:
        model_output = "raw"
    if background is None:
        explainer, perturbation = probe, "tree_path_dependent"
    else:
        perturbation = "interventional"
        explainer = shap.TreeExplainer(binding.model, data=_as_float32(background), model_output=model_output,
                                       feature_perturbation=perturbation)

    def run(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        values = explainer.shap_values(_as_float32(x), check_additivity=False)
        return _select(binding, explainer.expected_value, values, x.shape[0])

    return Engine("shap.TreeExplainer", space,
                  {"model_output": model_output, "feature_perturbation": perturbation,
                   "tree_output": tree_output}, explainer, run)


def _linear_engine(binding: Binding, background: FloatArray | None, where: str) -> Engine:
    import shap

    if background is None:
        raise ConfigError("the linear explainer needs a background", field=f"{where}.background")
    masker = shap.maskers.Independent(background, max_samples=background.shape[0])
    explainer = shap.LinearExplainer(binding.model, masker)

    def run(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        values = explainer.shap_values(x)
        return _select(binding, explainer.expected_value, values, x.shape[0])

    return Engine("shap.LinearExplainer", binding.output_space, {"masker": "independent"}, explainer, run)


def _generic_engine(binding: Binding, background: FloatArray | None, method: str, k: int,
                    where: str) -> Engine:
    import numpy as np
    import shap

    if background is None:
        raise ConfigError("a model-agnostic explainer needs a background", field=f"{where}.background")
    k = min(k, background.shape[0])
    summary = shap.kmeans(background, k)
    fn = binding.explained_output
    if method == "permutation":
        masker = shap.maskers.Independent(np.asarray(summary.data, dtype=np.float64), max_samples=k)
        explainer: Any = shap.PermutationExplainer(fn, masker, seed=0)
        evals = max(500, 2 * len(binding.feature_order) + 1)

        def run(x: FloatArray) -> tuple[FloatArray, FloatArray]:
            out = explainer(x, max_evals=evals, silent=True)
            return (np.asarray(out.base_values, dtype=np.float64).reshape(-1),
                    np.asarray(out.values, dtype=np.float64).reshape(x.shape[0], -1))

        return Engine("shap.PermutationExplainer", binding.output_space,
                      {"background_summary": f"kmeans({k})", "max_evals": evals}, explainer, run)

    explainer = shap.KernelExplainer(fn, summary)

    def run_kernel(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        values = np.asarray(explainer.shap_values(x, silent=True), dtype=np.float64).reshape(x.shape[0], -1)
        base = np.full(x.shape[0], float(np.asarray(explainer.expected_value).reshape(-1)[0]))
        return base, values

    return Engine("shap.KernelExplainer", binding.output_space,
                  {"background_summary": f"kmeans({k})", "nsamples": "auto"}, explainer, run_kernel)


def _as_float32(x: FloatArray) -> FloatArray:
    """Values as the trees see them: scikit-learn, XGBoost and LightGBM compare float32 inputs with their
    thresholds, so a float64 value just beside a threshold would take the other branch inside shap."""
    import numpy as np

    return np.asarray(np.asarray(x, dtype=np.float32), dtype=np.float64)


def _select(binding: Binding, expected: Any, values: Any, n: int) -> tuple[FloatArray, FloatArray]:
    """Pick the favourable class from shap's per-class outputs; flip a single binary output for class 0."""
    import numpy as np

    base = np.asarray(expected, dtype=np.float64).reshape(-1)
    vals = np.asarray(values, dtype=np.float64)
    if isinstance(values, list):  # older shap: one array per class
        vals = np.stack([np.asarray(v, dtype=np.float64) for v in values], axis=-1)
    m = len(binding.feature_order)
    fav = binding.favorable_index
    if vals.ndim == 3:
        idx = fav if fav is not None else 0
        return np.full(n, base[idx]), vals.reshape(n, m, -1)[:, :, idx]
    vals = vals.reshape(n, m)
    b = float(base[0])
    if fav == 0 and binding.is_classifier:
        # One output for a binary model is the positive class; the favourable one is its complement.
        b = 1.0 - b if binding.output_space == "probability" else -b
        vals = -vals
    return np.full(n, b), vals
