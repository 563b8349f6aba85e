"""The example's credit model: a gradient-boosted classifier trained on a committed sample of UCI Adult.

The task is a stand-in for credit scoring: "income > 50K" plays the part of "approved". What matters for
mlguard is that the model is a real scikit-learn tree ensemble (so TreeSHAP applies), trains offline in about
a second, and that its inputs are what a lender may lawfully score.

Why these features: under ECOA / Regulation B (12 CFR 1002.2(z), 1002.6(b)) race, colour, religion, national
origin, sex, marital status and age are prohibited bases; they must not be model inputs and may never be cited
as a reason for a denial. So the model uses none of ``sex``, ``race``, ``age``, ``marital_status``,
``native_country`` or ``relationship`` (whose values Husband/Wife encode sex and marital status). ``fnlwgt``
is a census sampling weight, not a property of the person, so it is left out too. See ``EXCLUDED_COLUMNS``.

The fitted model is cached with joblib under ``cache_dir()`` (default ``.model-cache/`` beside this file,
overridable by the environment variable ``MLGUARD_EXAMPLE_CACHE``), in a file whose name carries a fingerprint
of the training data, the hyper-parameters and the scikit-learn version, so a stale or foreign cache is never
loaded. Nothing is ever downloaded.

Only the standard library is imported at module import time: ``make_requests.py`` reuses ``FEATURES`` and
``features_from_row`` without numpy or scikit-learn, and importing the app stays cheap.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier

logger = logging.getLogger("examples.credit_scoring.model")

HERE: Final = Path(__file__).resolve().parent
SAMPLE_CSV: Final = HERE / "data" / "adult_sample.csv"
BACKGROUND_CSV: Final = HERE / "data" / "background.csv"
DEFAULT_CACHE_DIR: Final = HERE / ".model-cache"
CACHE_ENV: Final = "MLGUARD_EXAMPLE_CACHE"

#: Model input columns, in the order the model was fitted on (it is fitted on a plain array, so this list *is*
#: the column order; mlguard.yaml repeats it as ``feature_order``). All numeric; binary flags are 0.0 / 1.0.
FEATURES: Final[list[str]] = [
    "education_num",
    "hours_per_week",
    "capital_gain",
    "capital_loss",
    "is_self_employed",
    "is_government",
    "is_managerial_professional",
    "is_skilled_technical",
]

#: UCI Adult columns deliberately not used by the model, and why (see the module docstring).
EXCLUDED_COLUMNS: Final[dict[str, str]] = {
    "sex": "prohibited basis (ECOA 1002.6(b)); protected attribute monitored by the guard",
    "race": "prohibited basis (ECOA 1002.6(b)); protected attribute monitored by the guard",
    "age": "prohibited basis (ECOA 1002.2(z), 1002.6(b)(2))",
    "marital_status": "prohibited basis (ECOA 1002.2(z))",
    "native_country": "national origin, a prohibited basis (ECOA 1002.2(z))",
    "relationship": "Husband/Wife encode sex and marital status",
    "fnlwgt": "census sampling weight, not a property of the applicant",
    "workclass": "used only through is_self_employed / is_government",
    "occupation": "used only through is_managerial_professional / is_skilled_technical",
    "education": "duplicate of education_num",
    "income": "the label",
}

#: Hyper-parameters: about 100 trees of depth 3, fixed seed, so training is deterministic and takes ~1 s.
MODEL_PARAMS: Final[dict[str, Any]] = {
    "n_estimators": 100,
    "max_depth": 3,
    "learning_rate": 0.1,
    "random_state": 0,
}
#: Share of the sample held out to measure the model (train.py prints it); the model is fitted on the rest.
HOLDOUT_FRACTION: Final = 0.2
SPLIT_SEED: Final = 0

_SELF_EMPLOYED: Final = frozenset({"Self-emp-inc", "Self-emp-not-inc"})
_GOVERNMENT: Final = frozenset({"Federal-gov", "State-gov", "Local-gov"})
_MANAGERIAL_PROFESSIONAL: Final = frozenset({"Exec-managerial", "Prof-specialty"})
_SKILLED_TECHNICAL: Final = frozenset({"Tech-support", "Protective-serv", "Craft-repair", "Sales"})

_LOCK = threading.Lock()
_MEMO: dict[Path, GradientBoostingClassifier] = {}


def features_from_row(row: Mapping[str, str]) -> dict[str, float]:
    """Turn one UCI Adult row (column name -> raw text, as in adult_sample.csv) into model features.

    Unknown categories ('?' in the source) simply set no flag.
    """
    workclass = row["workclass"].strip()
    occupation = row["occupation"].strip()
    return {
        "education_num": float(row["education_num"]),
        "hours_per_week": float(row["hours_per_week"]),
        "capital_gain": float(row["capital_gain"]),
        "capital_loss": float(row["capital_loss"]),
        "is_self_employed": float(workclass in _SELF_EMPLOYED),
        "is_government": float(workclass in _GOVERNMENT),
        "is_managerial_professional": float(occupation in _MANAGERIAL_PROFESSIONAL),
        "is_skilled_technical": float(occupation in _SKILLED_TECHNICAL),
    }


def load_dataset(path: Path = SAMPLE_CSV) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Feature matrix (columns in ``FEATURES`` order) and 0/1 labels (1 = income >50K = approved)."""
    import numpy as np

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([[features_from_row(r)[name] for name in FEATURES] for r in rows], dtype=np.float64)
    y = np.array([r["income"].strip().rstrip(".") == ">50K" for r in rows], dtype=np.int64)
    return x, y


def split_dataset(
    x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The fixed, stratified train/holdout split: (x_train, x_holdout, y_train, y_holdout)."""
    from sklearn.model_selection import train_test_split

    parts = train_test_split(x, y, test_size=HOLDOUT_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return parts[0], parts[1], parts[2], parts[3]


def train_model(path: Path = SAMPLE_CSV) -> GradientBoostingClassifier:
    """Fit a fresh model on the training part of the sample (deterministic; no cache involved)."""
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = load_dataset(path)
    x_train, _, y_train, _ = split_dataset(x, y)
    model = GradientBoostingClassifier(**MODEL_PARAMS)
    model.fit(x_train, y_train)
    return model


def cache_dir() -> Path:
    """Where the fitted model is cached: ``$MLGUARD_EXAMPLE_CACHE`` or ``.model-cache/`` beside this file."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else DEFAULT_CACHE_DIR


def cache_file(directory: Path | None = None, data: Path = SAMPLE_CSV) -> Path:
    """The cache file for the current data, parameters and scikit-learn version.

    Why a fingerprint in the name: a pickled model is only safe to reuse with the same scikit-learn version
    and the same training inputs; a different fingerprint means a different file, never a stale model.
    """
    import sklearn

    digest = hashlib.sha256()
    digest.update(data.read_bytes())
    digest.update(repr(sorted(MODEL_PARAMS.items())).encode())
    digest.update(repr((FEATURES, HOLDOUT_FRACTION, SPLIT_SEED, sklearn.__version__)).encode())
    return (directory or cache_dir()) / f"credit-gbc-{digest.hexdigest()[:16]}.joblib"


def load_model() -> GradientBoostingClassifier:
    """The fitted model: from memory, else from the disk cache, else trained now (about a second) and cached.

    Thread-safe and loaded once per process and cache location, so the app and the guard (which both call
    this) share one object. This is the ``model.object`` named in mlguard.yaml.
    """
    path = cache_file()
    with _LOCK:
        model = _MEMO.get(path)
        if model is None:
            model = _load_or_train(path)
            _MEMO[path] = model
    return model


def _load_or_train(path: Path) -> GradientBoostingClassifier:
    """Read the cache file if it is usable; otherwise train and try to write it (atomically)."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    if path.is_file():
        try:
            cached = joblib.load(path)
        except Exception as exc:  # a corrupt or truncated cache is rebuilt, never fatal
            logger.warning("model cache %s unreadable (%s); retraining", path, type(exc).__name__)
        else:
            if isinstance(cached, GradientBoostingClassifier):
                return cached
            logger.warning("model cache %s holds a %s; retraining", path, type(cached).__name__)
    model = train_model()
    _write_cache(model, path)
    return model


def _write_cache(model: GradientBoostingClassifier, path: Path) -> None:
    """Write to a temporary file and rename, so a concurrent reader never sees half a file.

    A read-only checkout still works: the model is then simply retrained in each new process.
    """
    import joblib

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".joblib")
        os.close(fd)
        try:
            joblib.dump(model, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        logger.warning("cannot cache the model in %s (%s); continuing without a cache", path.parent, exc)
