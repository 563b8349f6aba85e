"""A classifier that scores prohibited bases (Sex, Marital Status, age) heavily, as a careless deployment's might,
with the inputs whose reasons are known for it: shared by the lawful-notice tests (reasons, counterfactuals,
refusals of decisions without complete reasons)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

FEATURES = ["income", "debt", "Sex", "Marital Status", "age"]
PROHIBITED = ("Sex", "Marital Status", "age")
CATALOG = {"income": "Amount of income", "debt": "Amount of debt"}
PLANTED_INCOME = 81.953125  # an input value that must never reach a response, a log line or a message
# For this fixed model: the lawful factors are favourable, the prohibited ones are not; refused.
ON_PROHIBITED_ONLY = {"income": PLANTED_INCOME, "debt": 8.0, "Sex": 0.0, "Marital Status": 0.0, "age": 25.0}
# An ordinary refusal: the lawful factors carry it.
ORDINARY = {"income": 25.0, "debt": 35.0, "Sex": 1.0, "Marital Status": 0.0, "age": 45.0}


def scored_model() -> tuple[Any, list[dict[str, float]]]:
    """The fitted classifier (fixed seeds) and 200 background rows."""
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(11)
    n = 600
    x = np.column_stack([rng.normal(50, 15, n).round(1), rng.normal(20, 8, n).round(1),
                         rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float),
                         rng.integers(18, 80, n).astype(float)])
    logit = (0.04 * (x[:, 0] - 50) - 0.05 * (x[:, 1] - 20) + 3.0 * (x[:, 2] - 0.5) + 1.5 * (x[:, 3] - 0.5)
             + 0.04 * (x[:, 4] - 45))
    y = (logit + rng.normal(0, 0.3, n) > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    return model, [dict(zip(FEATURES, map(float, r), strict=True)) for r in x[:200]]
