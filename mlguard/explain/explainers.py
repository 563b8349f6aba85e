"""Explainers chosen by model type, built once at start-up behind one small interface.

Why three families: TreeSHAP is exact and sub-millisecond on tree ensembles; linear models have a closed form;
everything else needs a model-agnostic sampler (Kernel or Permutation SHAP on a k-means summary of the
background), which costs tens of milliseconds to seconds per row and is therefore normally deferred.

Why the output space is explicit (traps.md): TreeSHAP on a gradient-boosted classifier explains the log-odds by
default; explaining the probability needs ``model_output="probability"`` with an interventional background.
Every engine says which space its numbers are in, and ``base_value + sum(contributions)`` equals
``Engine.output`` in that space (tested per engine within 1e-6; see tests/explain/test_boosters.py for the
bound on regression values), which is ``Binding.explained_output`` up to the model's own float32 rounding.

Tree ensembles (scikit-learn, XGBoost, LightGBM) need three precautions, each measured to matter:

* rows reach shap in the precision the model compares in (float32 for scikit-learn trees and XGBoost, float64
  for LightGBM and HistGradientBoosting), or a value beside a threshold is routed to another leaf;
* shap's interventional code holds thresholds and leaf values as C ``float``: :class:`RouteSnap` moves each value
  to a point of its cell that both spellings of every threshold agree on, and :func:`_centre_trees` takes the
  large constant LightGBM keeps in its first tree out of the float32 arithmetic;
* at start-up, shap's reading of the trees must reproduce the model's output (:func:`_check_tree_engine`), so an
  objective or booster shap does not model (Poisson, multi-class softmax, random-forest boosters, a bare
  Booster) is refused with the field to fix instead of explained wrongly.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlguard.errors import ConfigError, DependencyMissing, ExplainError
from mlguard.explain.shap_import import import_shap

if TYPE_CHECKING:
    from mlguard.explain.binding import Binding, FloatArray
    from mlguard.explain.fasttree import FastTreeShap

log = logging.getLogger("mlguard.explain.explainers")

Family = Literal["tree", "linear", "generic"]

_SKLEARN_TREES = frozenset({
    "DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor",
    "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor",
    "GradientBoostingClassifier", "GradientBoostingRegressor",
    "HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
})
_TREE_PACKAGES = ("xgboost", "lightgbm", "catboost")
#: What to do about a missing background, in every error that asks for one (the user reads it at start-up).
BACKGROUND_HINT = ("set model.background to a CSV of typical rows (header = the feature names, e.g. 100 rows of "
                   "training data) or give them inline as model.background_rows")
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
    _output: Any = None
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

    def output(self, x: FloatArray) -> FloatArray:
        """The output the contributions add up to, as the explainer evaluates the model (float64).

        Tree engines evaluate the trees themselves, in double precision: XGBoost sums its trees in float32, so
        its own numbers carry that rounding (about 1e-7 relative), which 1e-6 additivity cannot absorb on a
        value near 600. Other engines explain ``Binding.explained_output`` directly.
        """
        import numpy as np

        if self._output is None:
            raise ExplainError("this explainer does not evaluate the model itself")
        return np.asarray(self._output(x), dtype=np.float64).reshape(-1)

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
        shap = import_shap()
        return {"name": self.method, "shap": shap.__version__, **self.params}


def build_engine(binding: Binding, background: FloatArray | None, *, generic_method: str = "kernel",
                 kmeans_k: int = 10, field: str = "model") -> Engine:
    """Choose and build the explainer for ``binding`` with this ``background`` (rows in feature order)."""
    try:
        import_shap()
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
    import numpy as np

    shap = import_shap()
    dtype = _tree_input_dtype(binding.model)
    if type(binding.model).__module__.split(".")[0] == "lightgbm":
        # shap warns on every path-dependent call of a binary LightGBM model that its output shape once
        # changed; that is about shap's API, not this request, and would flood the logs.
        warnings.filterwarnings("ignore", message="LightGBM binary classifier with TreeExplainer",
                                category=UserWarning)
    probe = _tree_explainer(shap, binding.model, where)
    tree_output = str(probe.model.tree_output)
    space = binding.output_space
    if space == "probability" and tree_output != "probability":
        model_output = "probability"
        if len(getattr(binding.model, "classes_", ())) > 2:
            raise ConfigError("shap's TreeExplainer cannot explain a multi-class boosted model's probability "
                              "(a softmax across trees); use a binary model or the generic explainer",
                              field=f"{where}.explain")
        if background is None:
            raise ConfigError("explaining the probability of a boosted model needs a background; "
                              + BACKGROUND_HINT, field=f"{where}.background")
    elif space == "log_odds" and tree_output != "log_odds":
        raise ConfigError(f"the trees output {tree_output}, not log-odds; use probability",
                          field=f"{where}.explain")
    else:
        model_output = "raw"
    snap: RouteSnap | None = None
    fast: FastTreeShap | None = None
    if background is None:
        explainer, perturbation = probe, "tree_path_dependent"
    else:
        perturbation = "interventional"
        snap = RouteSnap.build(probe.model, len(binding.feature_order), dtype)
        data = np.asarray(background, dtype=dtype)
        given = data if snap is None else snap(data)
        explainer = _tree_explainer(shap, binding.model, where, data=given,
                                    model_output=model_output, feature_perturbation=perturbation)
        _centre_trees(explainer.model)
        fast = _fast_tree(explainer, given, model_output, len(binding.feature_order),
                          lambda rows: np.asarray(rows, dtype=dtype) if snap is None
                          else snap(np.asarray(rows, dtype=dtype)))

    def run(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        xin = np.asarray(x, dtype=dtype)
        rows = xin if snap is None else snap(xin)
        if fast is not None and not np.isnan(rows).any():
            values = fast.shap_values(np.asarray(rows, dtype=np.float64))
        else:
            values = explainer.shap_values(rows, check_additivity=False)
        return _select(binding, explainer.expected_value, values, x.shape[0])

    def output(x: FloatArray) -> FloatArray:
        # The trees evaluated by shap in float64 (leaf values summed in double): what run() is additive to.
        return _select_output(binding, explainer.model.predict(np.asarray(x, dtype=dtype)), x.shape[0])

    engine = Engine("shap.TreeExplainer", space,
                    {"model_output": model_output, "feature_perturbation": perturbation,
                     "tree_output": tree_output,
                     "implementation": "shap" if fast is None else "mlguard.fasttree"}, explainer, run, output)
    _check_tree_engine(engine, binding, background, where)
    return engine


def _fast_tree(explainer: Any, given: Any, model_output: str, n_features: int,
               prepare: Callable[[Any], Any]) -> FastTreeShap | None:
    """The precomputed interventional explainer (mlguard/explain/fasttree.py) when it applies and, checked on
    background rows and on rows moved off them (prepared as requests are), gives shap's own numbers; else None
    (shap serves). ``given`` is the background as shap was given it."""
    import numpy as np

    from mlguard.explain import fasttree

    fast = fasttree.build(explainer.model, given, model_output, n_features)
    if fast is None:
        return None
    data = np.asarray(given, dtype=np.float64)
    moved = np.concatenate([data[:8], data[8:16][::-1] * 1.5 + 0.25, data[16:24][:, ::-1]])
    rows = np.asarray(prepare(moved[~np.isnan(moved).any(axis=1)]), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = explainer.shap_values(rows, check_additivity=False)
    if not fasttree.agrees(fast, reference, rows):
        log.warning("the precomputed TreeSHAP disagrees with shap on this model; shap's own algorithm serves")
        return None
    return fast


def _tree_explainer(shap: Any, model: Any, where: str, **kwargs: Any) -> Any:
    """shap.TreeExplainer, its refusals (unsupported objective, booster type...) as a ConfigError at start-up."""
    try:
        with warnings.catch_warnings():  # start-up only: not shared with request threads
            warnings.simplefilter("ignore")
            return shap.TreeExplainer(model, **kwargs)
    except Exception as exc:
        raise ConfigError(f"shap's TreeExplainer cannot explain this model ({type(exc).__name__})",
                          field=f"{where}.object") from None


def _tree_input_dtype(model: Any) -> Any:
    """The precision the model itself compares features in, so shap routes every row as the model does.

    scikit-learn's trees and forests and XGBoost cast inputs to float32 before comparing them with their
    float32 thresholds; LightGBM and scikit-learn's HistGradientBoosting compare float64 inputs with float64
    thresholds (which sit on data values such as 49.6). Rounding for the latter, or not rounding for XGBoost
    (shap reads an XGBRegressor's inputs as float64), sends a value at or beside a threshold down the other
    branch inside shap, and the explanation no longer adds up to the model's output.
    """
    import numpy as np

    cls = type(model)
    if cls.__module__.split(".")[0] == "lightgbm" or cls.__name__.startswith("HistGradientBoosting"):
        return np.float64
    return np.float32


class RouteSnap:
    """Moves each input value to a stand-in that every tree routes the same way, in float32 as in float64.

    Why: shap's interventional algorithm stores each threshold as a C ``float``, while its prediction code, and
    models such as LightGBM, HistGradientBoosting and scikit-learn's trees (float64 midpoints), compare with the
    float64 threshold. A value between the two (49.6 against a threshold at 49.6 stored as 49.599998) goes the
    other way inside the explainer: that row is explained on a leaf the model never reached, and the
    contributions no longer add up (by 1.5 on a HistGradientBoosting regressor here). Only the cell between
    consecutive thresholds matters to the trees, so each value is replaced by one point of its cell that lies
    on the same side of both spellings of every threshold: the model's function, and so the Shapley values,
    are unchanged.
    """

    def __init__(self, columns: list[tuple[int, Any, Any, float]]) -> None:
        self.columns = columns  # (feature, thresholds ascending, stand-in per cell, stand-in floor above all)
        # the same as Python lists, for a request's single row: a bisect per feature instead of six numpy calls
        self._lists = [(j, t.tolist(), stand_in.tolist(), top) for j, t, stand_in, top in columns]

    @classmethod
    def build(cls, ensemble: Any, n_features: int, dtype: Any) -> RouteSnap | None:
        """From shap's reading of the trees; None when every threshold is exact in float32 (XGBoost)."""
        import numpy as np

        split = np.asarray(ensemble.children_left) >= 0
        features = np.asarray(ensemble.features)[split]
        thresholds = np.asarray(ensemble.thresholds, dtype=np.float64)[split]
        columns = []
        for j in range(n_features):
            t = np.unique(thresholds[features == j])
            t32 = t.astype(np.float32).astype(np.float64)
            if t.size == 0 or np.array_equal(t, t32):
                continue
            lower, upper = np.minimum(t, t32), np.maximum(t, t32)
            stand_in = _floor_to(lower, dtype)
            if np.any(stand_in[1:] <= upper[:-1]):
                log.warning("feature %d has thresholds closer than float32 can tell apart; rows near them may "
                            "be explained on a neighbouring leaf", j)
                continue
            columns.append((j, t, stand_in, float(_above(float(upper[-1]), dtype))))
        return cls(columns) if columns else None

    def __call__(self, x: FloatArray) -> FloatArray:
        import numpy as np

        out = np.array(x, dtype=np.float64)
        if out.shape[0] == 1:
            row = out[0].tolist()
            for j, t, stand_in, top in self._lists:
                v = row[j]
                if v == v:  # not NaN
                    at = bisect_left(t, v)  # = searchsorted(side="left")
                    row[j] = stand_in[at] if at < len(t) else max(v, top)
            out[0] = row
            return out
        for j, t, stand_in, top in self.columns:
            v = out[:, j]
            known = ~np.isnan(v)
            cell = np.searchsorted(t, v[known], side="left")  # first threshold with v <= t: the trees' "left"
            inside = cell < t.size
            v[known] = np.where(inside, stand_in[np.minimum(cell, t.size - 1)], np.maximum(v[known], top))
        return out


def _floor_to(values: Any, dtype: Any) -> Any:
    """The largest values of ``dtype`` at or below ``values`` (float64 values as they are)."""
    import numpy as np

    if dtype is not np.float32:
        return values
    rounded = values.astype(np.float32)
    too_high = rounded.astype(np.float64) > values
    rounded[too_high] = np.nextafter(rounded[too_high], np.float32(-np.inf))
    return rounded.astype(np.float64)


def _above(value: float, dtype: Any) -> float:
    """The smallest value of ``dtype`` strictly above ``value``."""
    import numpy as np

    if dtype is not np.float32:
        return float(np.nextafter(value, np.inf))
    rounded = np.float32(value)
    if float(rounded) <= value:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return float(rounded)


def _centre_trees(ensemble: Any) -> None:
    """Move each tree's root value into the ensemble's base offset (the same function, exactly).

    Why: shap's interventional algorithm holds leaf values and path weights as C ``float``, so its rounding
    error grows with the size of the leaf values. LightGBM puts the training mean (``boost_from_average``)
    into the first tree's leaves; a regression target near 600 then costs 2.5e-5 of additivity. Centred
    leaves hold only the tree's own effect, which brings the error to about 1e-6 there. A constant per tree
    contributes nothing to any feature's Shapley value, so the contributions are unchanged in exact arithmetic.
    """
    import numpy as np

    values = np.asarray(ensemble.values, dtype=np.float64)
    if values.ndim != 3:
        return
    shift = values[:, 0, :].copy()
    ensemble.values = np.ascontiguousarray(values - shift[:, None, :])
    base = np.asarray(ensemble.base_offset, dtype=np.float64)
    ensemble.base_offset = np.ascontiguousarray(np.broadcast_to(base, shift.shape[1:]) + shift.sum(axis=0))


def _check_tree_engine(engine: Engine, binding: Binding, background: FloatArray | None, where: str) -> None:
    """At start-up, on a few background rows: shap's reading of the trees must reproduce the model's own
    outputs (up to the model's float32 rounding), or the explanation would explain another function (an
    objective with a link shap does not apply, such as Poisson's exp; a random-forest booster...)."""
    import numpy as np

    rows = background[:8] if background is not None else np.zeros((1, len(binding.feature_order)))
    try:
        ours = engine.output(rows)
        native = binding.explained_output(rows)
    except Exception as exc:
        raise ConfigError(f"cannot evaluate the model's output for the explainer ({type(exc).__name__})",
                          field=f"{where}.object") from None
    if ours.shape != native.shape or not np.allclose(ours, native, rtol=1e-5, atol=1e-6):
        raise ConfigError(f"shap's reading of the trees does not reproduce the model's {binding.output_space} "
                          "output (unsupported objective or booster?)", field=f"{where}.explain")


def _linear_engine(binding: Binding, background: FloatArray | None, where: str) -> Engine:
    shap = import_shap()
    if background is None:
        raise ConfigError("the linear explainer needs a background; " + BACKGROUND_HINT, field=f"{where}.background")
    masker = shap.maskers.Independent(background, max_samples=background.shape[0])
    explainer = shap.LinearExplainer(binding.model, masker)

    def run(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        values = explainer.shap_values(x)
        return _select(binding, explainer.expected_value, values, x.shape[0])

    return Engine("shap.LinearExplainer", binding.output_space, {"masker": "independent"}, explainer, run,
                  binding.explained_output)


def _generic_engine(binding: Binding, background: FloatArray | None, method: str, k: int,
                    where: str) -> Engine:
    import numpy as np

    shap = import_shap()
    if background is None:
        raise ConfigError("a model-agnostic explainer needs a background; " + BACKGROUND_HINT,
                          field=f"{where}.background")
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
                      {"background_summary": f"kmeans({k})", "max_evals": evals}, explainer, run, fn)

    explainer = shap.KernelExplainer(fn, summary)

    def run_kernel(x: FloatArray) -> tuple[FloatArray, FloatArray]:
        values = np.asarray(explainer.shap_values(x, silent=True), dtype=np.float64).reshape(x.shape[0], -1)
        base = np.full(x.shape[0], float(np.asarray(explainer.expected_value).reshape(-1)[0]))
        return base, values

    return Engine("shap.KernelExplainer", binding.output_space,
                  {"background_summary": f"kmeans({k})", "nsamples": "auto"}, explainer, run_kernel, fn)


def _select_output(binding: Binding, out: Any, n: int) -> FloatArray:
    """The favourable class's column of shap's model evaluation; the complement for class 0 of one output."""
    import numpy as np

    vals = np.asarray(out, dtype=np.float64).reshape(n, -1)
    fav = binding.favorable_index
    if vals.shape[1] > 1:
        return np.asarray(vals[:, fav if fav is not None else 0], dtype=np.float64)
    col = vals[:, 0]
    if fav == 0 and binding.is_classifier:
        return np.asarray(1.0 - col if binding.output_space == "probability" else -col, dtype=np.float64)
    return np.asarray(col, dtype=np.float64)


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
