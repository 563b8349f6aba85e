"""Every metric computed from the window's counts equals fairlearn's on the same rows, within 1e-9."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from mlguard.fairness.metrics import Thresholds, disparity, evaluate
from mlguard.fairness.window import FairnessWindow

TOL = 1e-9


def _close(a: float, b: float) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or math.isnan(b)
    return abs(a - b) <= TOL


def _random_window(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 600))
    size = int(rng.integers(10, 700))
    n_sex = int(rng.integers(1, 4))
    n_race = int(rng.integers(1, 6))
    sexes = [f"s{i}" for i in range(n_sex)] + [None]
    races = [f"r{i}" for i in range(n_race)] + [3.5]  # a float: unexpected type -> unknown
    p_sex = rng.dirichlet(np.ones(len(sexes)))
    p_race = rng.dirichlet(np.ones(len(races)))
    w = FairnessWindow(["sex", "race"], size=size)
    rows = []
    bias = rng.uniform(0.05, 0.95, size=(len(sexes), len(races)))
    label_share = float(rng.uniform(0.0, 1.0))
    for i in range(n):
        si, ri = rng.choice(len(sexes), p=p_sex), rng.choice(len(races), p=p_race)
        pred = bool(rng.random() < bias[si, ri])
        aid = f"a{i}"
        w.add({"sex": sexes[si], "race": races[ri]}, pred, audit_id=aid)
        label = None
        if rng.random() < label_share:
            label = bool(rng.random() < 0.5)
        rows.append({"id": aid, "sex": sexes[si] if isinstance(sexes[si], str) else "unknown",
                     "race": races[ri] if isinstance(races[ri], str) else "unknown",
                     "pred": int(pred), "label": label})
    rows = rows[-size:]
    for r in rows:
        if r["label"] is not None:
            assert w.set_label(r["id"], r["label"])
    df = pd.DataFrame(rows)
    df["sex|race"] = "sex=" + df["sex"] + "|race=" + df["race"]
    return w, df


@pytest.mark.parametrize("seed", range(40))
def test_every_metric_equals_fairlearn(seed: int) -> None:
    w, df = _random_window(seed)
    snap = w.snapshot()
    assert len(w) == len(df)
    for dim, cols in (("sex", ["sex"]), ("race", ["race"]), ("sex|race", ["sex", "race"])):
        groups = [g for g in snap if g.dimension == dim]
        m = disparity(groups)
        sf = df[cols] if len(cols) > 1 else df[cols[0]]
        y_pred = df["pred"].to_numpy()
        y_any = np.zeros_like(y_pred)
        assert _close(m.demographic_parity_difference,
                      demographic_parity_difference(y_any, y_pred, sensitive_features=sf))
        assert _close(m.demographic_parity_ratio,
                      demographic_parity_ratio(y_any, y_pred, sensitive_features=sf))
        mf = MetricFrame(metrics=selection_rate, y_true=y_any, y_pred=y_pred, sensitive_features=sf)
        for key, value in m.selection_rate.items():
            assert _close(value, mf.by_group[_fl_key(key, cols)])
        lab = df[df["label"].notna()]
        if lab.empty:
            assert math.isnan(m.equalized_odds_difference)
            continue
        sfl = lab[cols] if len(cols) > 1 else lab[cols[0]]
        yt, yp = lab["label"].astype(int).to_numpy(), lab["pred"].to_numpy()
        assert _close(m.equalized_odds_difference, equalized_odds_difference(yt, yp, sensitive_features=sfl))
        assert _close(m.equalized_odds_ratio, equalized_odds_ratio(yt, yp, sensitive_features=sfl))
        mf = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate,
                                  "fnr": false_negative_rate}, y_true=yt, y_pred=yp, sensitive_features=sfl)
        by = mf.by_group
        for key in m.tpr:
            row = by.loc[_fl_key(key, cols)]
            assert _close(m.tpr[key], row["tpr"])
            assert _close(m.fpr[key], row["fpr"])
            assert _close(m.fnr[key], row["fnr"])
        assert set(m.tpr) == {_our_key(k, cols) for k in by.dropna().index}


def test_eligible_metrics_equal_fairlearn_on_the_eligible_rows() -> None:
    w, df = _random_window(7)
    th = Thresholds(min_group_size=5, exclude_below_share=0.02)
    rep = evaluate(w.snapshot(), w.dimensions, th)
    race = rep.dimensions["race"]
    keep = [g.split("=", 1)[1] for g in race.eligible.groups]
    sub = df[df["race"].isin(keep)]
    assert _close(race.eligible.demographic_parity_difference,
                  demographic_parity_difference(np.zeros(len(sub)), sub["pred"], sensitive_features=sub["race"]))


def _fl_key(key: str, cols: list[str]):
    parts = [p.split("=", 1)[1] for p in key.split("|")]
    return tuple(parts) if len(cols) > 1 else parts[0]


def _our_key(k, cols: list[str]) -> str:
    if len(cols) > 1:
        return "|".join(f"{c}={v}" for c, v in zip(cols, k, strict=True))
    return f"{cols[0]}={k}"
