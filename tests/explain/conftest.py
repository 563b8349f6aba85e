"""Small synthetic data and tiny models for the explain tests, trained once per session (no shared files)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

FEATURES = ["income", "debt", "years_employed", "late_payments", "age"]


@dataclass(frozen=True)
class Data:
    x: Any
    y: Any
    y_reg: Any
    features: list[str]

    def rows(self, start: int, stop: int) -> list[dict[str, float]]:
        return [dict(zip(self.features, map(float, r), strict=True)) for r in self.x[start:stop]]


@pytest.fixture(scope="session")
def data() -> Data:
    rng = np.random.default_rng(7)
    n = 400
    x = np.column_stack([
        rng.normal(50, 15, n).round(1),          # income
        rng.normal(20, 8, n).round(1),           # debt
        rng.integers(0, 30, n).astype(float),    # years_employed
        rng.poisson(1.0, n).astype(float),       # late_payments
        rng.integers(18, 80, n).astype(float),   # age (a prohibited basis under ecoa)
    ])
    logit = 0.08 * (x[:, 0] - 50) - 0.12 * (x[:, 1] - 20) + 0.05 * x[:, 2] - 0.9 * x[:, 3] + 0.02 * (x[:, 4] - 45)
    y = (logit + rng.normal(0, 0.5, n) > 0).astype(int)
    y_reg = 600 + 3 * (x[:, 0] - 50) - 4 * (x[:, 1] - 20) - 25 * x[:, 3]
    return Data(x, y, y_reg, list(FEATURES))


@pytest.fixture(scope="session")
def models(data: Data) -> dict[str, Any]:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    x, y, yr = data.x, data.y, data.y_reg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "gbc": GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y),
            "rf": RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(x, y),
            "dt": DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y),
            "gbr": GradientBoostingRegressor(n_estimators=30, random_state=0).fit(x, yr),
            "hgbc": HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y),
            "hgbr": HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x, yr),
            "lr": LogisticRegression(max_iter=2000).fit(x, y),
            "linreg": LinearRegression().fit(x, yr),
            "mlp": make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=3000,
                                                                 random_state=0)).fit(x, y),
            "svc": make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(x, y),
        }


@pytest.fixture(scope="session")
def boosters(data: Data) -> dict[str, Any]:
    """XGBoost and LightGBM models (the dev extra), tiny and single-threaded; skipped only without the extra."""
    xgb = pytest.importorskip("xgboost")
    lgb = pytest.importorskip("lightgbm")
    import pandas as pd

    x, y, yr = data.x, data.y, data.y_reg
    frame = pd.DataFrame(x, columns=data.features)
    spaced = pd.DataFrame(x, columns=[f.replace("_", " ") for f in data.features])
    xo = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1, "verbosity": 0, "random_state": 0}
    lo = {"n_estimators": 20, "num_leaves": 8, "n_jobs": 1, "verbose": -1, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "xgbc": xgb.XGBClassifier(**xo).fit(x, y),
            "xgbr": xgb.XGBRegressor(**xo).fit(x, yr),
            "xgbc_frame": xgb.XGBClassifier(**xo).fit(frame, y),
            "xgbr_poisson": xgb.XGBRegressor(objective="count:poisson", **xo).fit(x, yr),
            "lgbc": lgb.LGBMClassifier(**lo).fit(x, y),
            "lgbr": lgb.LGBMRegressor(**lo).fit(x, yr),
            "lgbc_frame": lgb.LGBMClassifier(**lo).fit(frame, y),
            "lgbc_spaced": lgb.LGBMClassifier(**lo).fit(spaced, y),
        }
