"""Binding: a route's model, its input row and its background, resolved once at start-up.

Why a separate object: the explainer, the reason codes, the deferred worker, the plain-language render and the
``mlguard explain`` command all need the same three answers (which model, which columns in which order, which
output), and they must be the answers the request path used. Everything here is computed once; per request only
``build_row`` runs, and it reads the *redacted* document, i.e. exactly what the wrapped app received.

Nothing here puts an input value in a message: skip reasons and errors name features and expected types only.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import math
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlguard.config.explain import compile_decision_path
from mlguard.errors import ConfigError
from mlguard.jsonpath import JSONPath

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from mlguard.config.explain import ModelBinding

    FloatArray = npt.NDArray[np.float64]

log = logging.getLogger("mlguard.explain.binding")

OutputSpace = Literal["probability", "log_odds", "raw"]
BACKGROUND_SEED = 0
NUMERIC_ONLY = ("features are given to the model as numbers (booleans as 0/1): encode a category as numbers, "
                "e.g. one 0/1 column per category")
"""What to do about a text column, in every message that meets one (README: Model binding)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One request's model input, or why there is none. ``values`` are the numbers the model gets, by name."""

    values: dict[str, float] | None
    skip_reason: str | None = None


@dataclass(slots=True)
class Background:
    """Background rows (already in feature order) and where they came from."""

    data: FloatArray | None
    sha256: str | None
    source: str | None
    rows_total: int = 0
    all_rows: FloatArray | None = None  # before sampling: the cut-off baseline selects from these

    def identity(self) -> dict[str, Any]:
        rows = 0 if self.data is None else int(self.data.shape[0])
        return {"sha256": self.sha256, "source": self.source, "rows": rows, "rows_total": self.rows_total}


@dataclass(slots=True)
class Binding:
    """A route's resolved model binding. Build it with :func:`build_binding`."""

    route_index: int
    model: Any
    model_class: str
    model_sha256: str
    is_classifier: bool
    features_path: JSONPath
    feature_order: list[str]
    feature_types: dict[str, str]
    output_space: OutputSpace
    favorable_index: int | None
    higher_is_favorable: bool
    cutoff: float | None
    cutoff_delta: float
    background: Background
    _frame_columns: list[str] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ per request

    def build_row(self, document: Any) -> Row:
        """Read the features from the document the app received; a missing or mistyped feature is a skip.

        The path addresses one object (:func:`build_binding` refuses a wildcard); should a path nevertheless
        match several (a Binding built by hand), that is a skip naming the count, never the first item's
        explanation passed off as the request's."""
        if None in self.features_path.steps:
            found = [value for _, value in self.features_path.find(document)]
            if len(found) > 1:
                return Row(None, f"{self.features_path.text} matches {len(found)} values; one decision per "
                                 "request is supported")
            obj = found[0] if found else None
        else:
            obj = self.features_path.first(document)
        if not isinstance(obj, dict):
            return Row(None, f"no feature object at {self.features_path.text}")
        values: dict[str, float] = {}
        for name in self.feature_order:
            if name not in obj:
                return Row(None, f"feature {name!r} is missing")
            raw = obj[name]
            expected = self.feature_types.get(name, "number")
            if expected == "boolean":
                if not isinstance(raw, bool):
                    return Row(None, f"feature {name!r} is not a boolean")
                values[name] = 1.0 if raw else 0.0
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return Row(None, f"feature {name!r} is not a number")
            number = float(raw)
            if not math.isfinite(number):
                return Row(None, f"feature {name!r} is not a finite number")
            values[name] = number
        return Row(values)

    def matrix(self, rows: list[dict[str, float]]) -> FloatArray:
        import numpy as np

        return np.array([[r[n] for n in self.feature_order] for r in rows], dtype=np.float64)

    # ------------------------------------------------------------------ model outputs

    def model_input(self, x: FloatArray) -> Any:
        """What the model's predict functions take: a DataFrame when it was fitted on one (names checked)."""
        if self._frame_columns is None:
            return x
        import pandas as pd

        return pd.DataFrame(x, columns=self._frame_columns)

    def explained_output(self, x: FloatArray) -> FloatArray:
        """The output the explanation is in, for each row (base_value + sum(contributions) equals it)."""
        import numpy as np

        data = self.model_input(x)
        if self.output_space == "raw":
            return np.asarray(self.model.predict(data), dtype=np.float64).reshape(-1)
        if self.output_space == "log_odds":
            margin = self._margin(data)
            if margin is not None and margin.ndim == 1:
                return margin if self.favorable_index == 1 else -margin
        proba = self._favorable_proba(data)
        if self.output_space == "probability":
            return proba
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(proba) - np.log1p(-proba), dtype=np.float64)

    def score(self, x: FloatArray) -> FloatArray:
        """The decision score the cut-off applies to: probability of the favourable class, or the value."""
        import numpy as np

        data = self.model_input(x)
        if self.is_classifier:
            return self._favorable_proba(data)
        return np.asarray(self.model.predict(data), dtype=np.float64).reshape(-1)

    def favorable_score(self, score: float) -> bool | None:
        """Whether a score is on the favourable side of the cut-off (None when there is no cut-off)."""
        if self.cutoff is None:
            return None
        if self.is_classifier or self.higher_is_favorable:
            return score >= self.cutoff
        return score <= self.cutoff

    def _margin(self, data: Any) -> FloatArray | None:
        """The binary model's own log-odds of class 1, when it exposes them.

        Why not the logit of ``predict_proba``: XGBoost returns float32 probabilities, whose logit loses
        precision fast (1e-6 at p = 0.99) and becomes infinite once the probability rounds to 1.0.
        """
        import numpy as np

        if hasattr(self.model, "decision_function"):
            return np.asarray(self.model.decision_function(data), dtype=np.float64)
        package = type(self.model).__module__.split(".")[0]
        if package == "xgboost":
            return np.asarray(self.model.predict(data, output_margin=True), dtype=np.float64)
        if package == "lightgbm":
            return np.asarray(self.model.predict(data, raw_score=True), dtype=np.float64)
        return None

    def _favorable_proba(self, data: Any) -> FloatArray:
        import numpy as np

        proba = np.asarray(self.model.predict_proba(data), dtype=np.float64)
        return np.asarray(proba[:, self.favorable_index or 0], dtype=np.float64)

    def identity(self) -> dict[str, Any]:
        return {"class": self.model_class, "sha256": self.model_sha256}


# ---------------------------------------------------------------------- building


def build_binding(index: int, cfg: ModelBinding, *, base_dir: Path | None) -> Binding:
    """Resolve the model, the features, the output space and the background; ConfigError names the field."""
    where = f"routes.{index}.model"
    model = resolve_model(cfg.object, field=f"{where}.object")
    if type(model).__qualname__ == "Booster" and type(model).__module__.split(".")[0] in ("xgboost", "lightgbm"):
        # A bare Booster has no predict_proba or classes_ and XGBoost's wants a DMatrix: no decision to read.
        raise ConfigError("a bare Booster; give the scikit-learn wrapper (XGBClassifier, LGBMRegressor...)",
                          field=f"{where}.object")
    if cfg.features is None:
        raise ConfigError("a model object needs `features` (JSONPath to the feature object)",
                          field=f"{where}.features")
    features_path = compile_decision_path(cfg.features, field=f"{where}.features")
    names_in = getattr(model, "feature_names_in_", None)
    fitted_names = [str(n) for n in names_in] if names_in is not None else None
    order = list(cfg.feature_order) if cfg.feature_order else fitted_names
    if not order:
        raise ConfigError("cannot tell the model's column order: set feature_order",
                          field=f"{where}.feature_order")
    if len(set(order)) != len(order):
        raise ConfigError("feature names repeat", field=f"{where}.feature_order")
    if fitted_names is not None and fitted_names != order and not _lightgbm_same_names(model, fitted_names, order):
        raise ConfigError("differs from the names the model was fitted with (feature_names_in_)",
                          field=f"{where}.feature_order")
    n_in = getattr(model, "n_features_in_", None)
    if isinstance(n_in, int) and n_in != len(order):
        raise ConfigError(f"the model takes {n_in} features, feature_order names {len(order)}",
                          field=f"{where}.feature_order")
    types: dict[str, str] = dict(cfg.feature_types or {})
    unknown = sorted(set(types) - set(order))
    if unknown:
        raise ConfigError(f"types declared for features not in feature_order: {unknown}",
                          field=f"{where}.feature_types")

    is_classifier = hasattr(model, "predict_proba") and hasattr(model, "classes_")
    favorable_index = _favorable_index(model, cfg, is_classifier, where)
    space = _output_space(model, cfg, is_classifier, where)
    cutoff = cfg.cutoff if cfg.cutoff is not None else (0.5 if is_classifier else None)
    background = load_background(cfg, order, base_dir=base_dir, field=f"{where}.background")
    return Binding(
        route_index=index, model=model, model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        model_sha256=model_hash(model), is_classifier=is_classifier, features_path=features_path,
        feature_order=order, feature_types=types, output_space=space, favorable_index=favorable_index,
        higher_is_favorable=cfg.higher_is_favorable, cutoff=cutoff, cutoff_delta=cfg.cutoff_delta,
        background=background, _frame_columns=fitted_names,
    )


def resolve_model(spec: Any, *, field: str) -> Any:
    """``module:attr`` (the model, or a zero-argument factory returning it) or the object itself."""
    if spec is None:
        raise ConfigError("no model object", field=field)
    obj = spec
    if isinstance(spec, str):
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ConfigError(f"expected 'module:attr', got {spec!r}", field=field)
        ensure_cwd_importable()  # as `mlguard serve` has made it before the model is imported
        try:
            obj = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import module {module_name!r} ({type(exc).__name__})", field=field) from None
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigError(f"{module_name!r} has no attribute {attr!r}", field=field) from None
    if inspect.isclass(obj):
        raise ConfigError("names a class; give a fitted model or a factory returning one", field=field)
    if not hasattr(obj, "predict") and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"the model factory raised {type(exc).__name__}", field=field) from None
    if not hasattr(obj, "predict"):
        raise ConfigError(f"{type(obj).__name__} has no predict(); not a model", field=field)
    return obj


def ensure_cwd_importable() -> str | None:
    """Put the current directory first on ``sys.path`` unless it is there; the directory when this call added it.

    Why one helper: ``mlguard serve`` makes the directory it is run from importable (as uvicorn does) before the
    app and so the model are imported, and every other command that finds or imports ``model.object``
    (``mlguard explain --config``, ``mlguard config check``) must find the same module the same way: without it,
    ``explain`` run beside ``service.py`` failed with "cannot import module 'service'" where ``serve`` did not.
    """
    cwd = os.getcwd()
    if cwd in sys.path:
        return None
    sys.path.insert(0, cwd)
    return cwd


def model_hash(model: Any) -> str:
    """sha256 of the pickled model (its identity in records); of its class and parameters if it won't pickle."""
    try:
        blob = pickle.dumps(model, protocol=4)
    except Exception:
        params = model.get_params() if hasattr(model, "get_params") else {}
        blob = json.dumps([type(model).__qualname__, params], sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()


def load_background(cfg: ModelBinding, order: list[str], *, base_dir: Path | None, field: str) -> Background:
    """Read the background (CSV or inline rows) in feature order, sample it to ``background_size``."""
    import numpy as np

    read = read_background(cfg, order, base_dir=base_dir, field=field)
    if read is None:
        return Background(None, None, None)
    rows, sha, source = read
    data = np.array(rows, dtype=np.float64)
    return Background(sample_rows(data, cfg.background_size), sha, source, data.shape[0], data)


def read_background(cfg: ModelBinding, order: list[str], *, base_dir: Path | None, field: str
                    ) -> tuple[list[list[float]], str, str] | None:
    """The background's rows in feature order, its sha256 and source; None when there is none.

    Plain Python (no numpy), so that ``mlguard config check`` runs exactly what the start-up runs when it knows
    the feature order (:func:`check_binding`): every refusal below is one ``serve`` would otherwise meet later.
    Messages name the row and column, never the value found there.
    """
    if cfg.background is not None and cfg.background_rows is not None:
        raise ConfigError("give background or background_rows, not both", field=field)
    if cfg.background is None and cfg.background_rows is None:
        return None
    if cfg.background is not None:
        blob = _read_background_file(background_path(cfg.background, base_dir), field=field)
        header, records = _csv_records(blob, field=field)
        missing = [n for n in order if n not in header]
        if missing:
            raise ConfigError(f"background lacks columns {missing}", field=field)
        rows = []
        for number, record in enumerate(records, start=1):
            row = []
            for name in order:
                value = _csv_number(record.get(name))
                if value is None:
                    raise ConfigError(f"non-numeric value in background at row {number} (column {name!r}); "
                                      f"{NUMERIC_ONLY}", field=field)
                row.append(value)
            rows.append(row)
        sha, source = hashlib.sha256(blob).hexdigest(), str(cfg.background)
    else:
        inline = cfg.background_rows or []
        missing = sorted({n for r in inline for n in order if n not in r})
        if missing:
            raise ConfigError(f"background_rows lack features {missing}", field=f"{field}_rows")
        sha = hashlib.sha256(json.dumps(inline, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        rows = [[float(r[n]) for n in order] for r in inline]
        source = "inline"
    if not rows:
        raise ConfigError("background has no rows", field=field)
    if not all(math.isfinite(v) for row in rows for v in row):
        raise ConfigError("background holds non-finite values", field=field)
    return rows, sha, source


def _read_background_file(path: Path, *, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read background ({exc.strerror})", field=field) from None


def _csv_records(blob: bytes, *, field: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("background is not UTF-8 text", field=field) from None
    reader = csv.DictReader(text.splitlines())
    records = list(reader)
    return list(reader.fieldnames or []), records


def _csv_number(text: str | None) -> float | None:
    """A CSV cell as the model's number, as ``float`` reads it; None for text (a category, a label...)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def background_path(background: Path, base_dir: Path | None) -> Path:
    """Where a configured background CSV is read from: relative paths resolve against ``base_dir``."""
    return background if background.is_absolute() or base_dir is None else base_dir / background


# ---------------------------------------------------------------------- checking without building


def check_binding(index: int, cfg: ModelBinding, *, base_dir: Path | None) -> list[str]:
    """What ``mlguard config check`` can tell of a model binding without importing the model or building an
    engine; returns warnings for what only the model can settle.

    The ``module:attr`` of ``object`` is looked up, not imported: the module file is found on ``sys.path`` and
    the current directory (where ``mlguard serve`` imports from), without running any package's ``__init__``
    unless the module cannot be found otherwise, and ``attr`` is looked for among the names the module's
    source binds at top level (a module already imported is asked directly). The background is read as the
    start-up reads it (:func:`read_background`) when ``feature_order`` says which columns the model takes:
    a missing column, a text value (a category), no rows or a non-finite value are refused here rather than
    when ``serve`` starts. Without ``feature_order`` the columns are the model's ``feature_names_in_``, known
    only once it is imported: each column the start-up would refuse if it is a feature is a warning.
    Raises ConfigError naming the field, with the messages :func:`build_binding` would give at start-up.
    """
    where = f"routes.{index}.model"
    if cfg.object is None:
        return []
    if cfg.features is None:
        raise ConfigError("a model object needs `features` (JSONPath to the feature object)",
                          field=f"{where}.features")
    if isinstance(cfg.object, str):
        _check_model_spec(cfg.object, field=f"{where}.object")
    field = f"{where}.background"
    if cfg.background is not None and cfg.background_rows is not None:
        raise ConfigError("give background or background_rows, not both", field=field)
    if cfg.background is not None:
        path = background_path(cfg.background, base_dir)
        if not path.is_file():
            raise ConfigError(f"background file {str(path)!r} does not exist", field=field)
    if cfg.feature_order:
        read_background(cfg, list(cfg.feature_order), base_dir=base_dir, field=field)
        return []
    if cfg.background is None:
        if cfg.background_rows is None:
            # Only the imported model settles whether it needs one, and this check does not import it; a new user
            # whose boosted model passed the check saw `serve` refuse it half a minute later.
            return [f"{field}: none given: the start-up refuses a linear model, a model-agnostic one and a "
                    "gradient-boosted classifier explained as a probability without a background (a random "
                    "forest or a decision tree does without): set model.background to a CSV of typical rows (header = "
                    "the feature names)"]
        return []
    header, records = _csv_records(_read_background_file(path, field=field), field=field)
    if not records:
        raise ConfigError("background has no rows", field=field)
    warnings = []
    for name in header:
        bad = next((n for n, r in enumerate(records, start=1)
                    if (v := _csv_number(r.get(name))) is None or not math.isfinite(v)), None)
        if bad is not None:
            warnings.append(f"{field}: column {name!r} holds a non-numeric or non-finite value at row {bad}: "
                            f"the start-up refuses it if {name!r} is one of the model's features ({NUMERIC_ONLY}); "
                            "set model.feature_order to have the background checked exactly")
    return warnings


def _check_model_spec(spec: str, *, field: str) -> None:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'module:attr', got {spec!r}", field=field)
    first = attr.split(".")[0]
    module = sys.modules.get(module_name)
    if module is not None:  # already imported (in this process): ask it
        known = hasattr(module, first)
    else:
        found = find_module_spec(module_name)
        if found is None:
            raise ConfigError(f"cannot find module {module_name!r} (looked on sys.path and in the current "
                              "directory)", field=field)
        known = _binds_at_top_level(found, first)
    if not known:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}", field=field)


def find_module_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of module ``name`` as ``mlguard serve`` would import it (the current directory importable).

    Packages on the way are searched through their ``__path__`` without being imported; only when that finds
    nothing (a package that extends its ``__path__`` when imported) is :func:`importlib.util.find_spec` asked,
    which imports the parent packages (never writing bytecode)."""
    added = ensure_cwd_importable()  # found where `mlguard serve` would import it; a check leaves no trace
    try:
        parts = name.split(".")
        try:
            spec = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            return None
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                spec = None
                break
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]),
                                                            list(spec.submodule_search_locations))
        if spec is None and len(parts) > 1:
            dont_write = sys.dont_write_bytecode
            sys.dont_write_bytecode = True
            try:
                spec = importlib.util.find_spec(name)
            except Exception:  # a parent package that fails to import: the module cannot be imported either
                spec = None
            finally:
                sys.dont_write_bytecode = dont_write
        return spec
    finally:
        if added is not None and added in sys.path:
            sys.path.remove(added)


_DYNAMIC = ("__getattr__", "globals()", "setattr(", "exec(", "vars()", "sys.modules", "import *", ":=")
"""Ways a module may bind a name that a reading of its top-level statements does not see."""


def _binds_at_top_level(spec: importlib.machinery.ModuleSpec, name: str) -> bool:
    """Whether the module's source binds ``name`` at top level (or may, in ways a reading cannot tell)."""
    origin = spec.origin
    if not spec.has_location or origin is None or not origin.endswith(".py"):
        return True  # an extension or namespace module: only importing it would tell
    try:
        source = Path(origin).read_text(encoding="utf-8")
        tree = ast.parse(source, filename=origin)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return True  # the import at start-up reports it
    if name in _top_level_names(tree.body) or any(d in source for d in _DYNAMIC):
        return True
    if spec.submodule_search_locations:  # pkg:submodule
        return importlib.machinery.PathFinder.find_spec(f"{spec.name}.{name}",
                                                        list(spec.submodule_search_locations)) is not None
    return False


_BLOCKS = (ast.If, ast.Try, ast.TryStar, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)


def _top_level_names(body: list[ast.stmt]) -> set[str]:
    """Names the statements of a module's top level bind, inside if/try/for/while/with blocks too."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor | ast.With
                        | ast.AsyncWith):
            targets: list[ast.AST] = (list(node.targets) if isinstance(node, ast.Assign)
                                      else [i.optional_vars for i in node.items if i.optional_vars is not None]
                                      if isinstance(node, ast.With | ast.AsyncWith) else [node.target])
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        if isinstance(node, _BLOCKS):
            for block in ("body", "orelse", "finalbody"):
                names |= _top_level_names(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                names |= _top_level_names(handler.body)
    return names


def sample_rows(data: FloatArray, size: int) -> FloatArray:
    """At most ``size`` rows, chosen with a fixed seed so every process explains against the same rows."""
    import numpy as np

    total = data.shape[0]
    if total <= size:
        return data
    pick = np.sort(np.random.default_rng(BACKGROUND_SEED).choice(total, size, replace=False))
    return np.asarray(data[pick], dtype=np.float64)


def _lightgbm_same_names(model: Any, fitted: list[str], order: list[str]) -> bool:
    """LightGBM replaces whitespace in feature names with ``_`` when it trains (its ``feature_names_in_`` then
    reads ``years_employed`` for a column ``years employed``): the request's names still match the model's."""
    if type(model).__module__.split(".")[0] != "lightgbm":
        return False
    return [re.sub(r"\s", "_", name) for name in order] == fitted


def _favorable_index(model: Any, cfg: ModelBinding, is_classifier: bool, where: str) -> int | None:
    if not is_classifier:
        return None
    classes = list(model.classes_)
    if cfg.favorable_class is None:
        return len(classes) - 1
    for i, c in enumerate(classes):
        if c == cfg.favorable_class:  # numpy scalars compare by value; 1 and True are one class label
            return i
    raise ConfigError("is not one of the model's classes", field=f"{where}.favorable_class")


def _output_space(model: Any, cfg: ModelBinding, is_classifier: bool, where: str) -> OutputSpace:
    from mlguard.explain.explainers import model_family

    if not is_classifier:
        if cfg.explain not in ("auto", "raw"):
            raise ConfigError(f"{cfg.explain} needs a classifier with predict_proba", field=f"{where}.explain")
        return "raw"
    if cfg.explain == "auto":
        return "log_odds" if model_family(model) == "linear" else "probability"
    if cfg.explain == "raw":
        raise ConfigError("raw is for regressors; use probability or log_odds", field=f"{where}.explain")
    if cfg.explain == "log_odds" and len(model.classes_) != 2:
        raise ConfigError("log_odds needs a binary classifier", field=f"{where}.explain")
    return cfg.explain
