"""Interventional TreeSHAP against a fixed background, with the background's share of the work done at start-up.

Why: shap's interventional algorithm (``feature_perturbation="interventional"``, the only way it explains a
boosted classifier's probability) walks every tree once per background row for every request, and evaluates
the whole ensemble on every background row again each time: 100 trees x 100 rows is 0.6-0.7 ms of C holding
the GIL per request on the example, most of the guard's cost. All of that except a few vector operations
depends only on the background, which never changes while a route is served.

The computation, exact (the same numbers as shap's, which :func:`build` checks at start-up). For one background
row ``r`` the game ``v(S) = f(x_S, r_rest)`` of a tree ensemble is a sum over leaves: a leaf is reached when,
for every feature on its path, the value taken (``x``'s if the feature is in S, ``r``'s otherwise) lies in that
feature's interval on the path. Per path feature there are four cases: both ``x`` and ``r`` inside (free), only
``x`` (the feature must be in S), only ``r`` (it must not be), neither (the leaf is unreachable). A leaf with
``nx`` features that must be in S and ``nr`` that must not contributes ``value * (nx-1)! nr! / (nx+nr)!`` to
each of the first and ``-value * nx! (nr-1)! / (nx+nr)!`` to each of the second (the Shapley values of a
unanimity game). For a probability, shap rescales each row's log-odds contributions by
``(sigmoid(m_x) - sigmoid(m_r)) / (m_x - m_r)`` (1 when the margins are equal) and averages over rows.

So for a leaf only the pattern of "``r`` inside" bits over its path features matters: the background rows are
grouped per (leaf, pattern) once, and a request costs the ``x`` bits of every leaf, one weighted sum of the
rescale factors per distinct group of rows, and one gather of the unanimity coefficients: about 0.07 ms on the
example instead of 0.7 ms.

Where it does not apply the route keeps shap's own algorithm (:func:`build` returns None and says why at
debug level): missing values in the background (rows with a missing value are explained by shap, per call),
categorical splits, stacked models, several outputs under a non-linear transform, paths with more than
``MAX_PATH_FEATURES`` distinct features (the coefficient table grows as 4^k), more than ``MAX_CELLS``
(background row, leaf) cells, or a row-group matrix over ``MAX_GROUP_BYTES``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np

log = logging.getLogger("mlguard.explain.fasttree")

MAX_PATH_FEATURES = 6
"""Distinct features on one root-to-leaf path: the coefficient table has 4^k rows of k entries."""
MAX_CELLS = 20_000_000
"""Background rows x leaves: the start-up grouping holds one boolean per cell."""
MAX_GROUP_BYTES = 64 * 1024 * 1024
"""The (background rows x distinct row groups) matrix kept for the logistic rescale: a very large ensemble whose
leaves split the background in many different ways keeps shap's algorithm instead of holding more than this."""
CHECK_TOLERANCE = 1e-6
"""Start-up agreement with shap, relative to the output's magnitude (shap keeps thresholds, leaf values and
path weights in C float)."""


@dataclass(frozen=True, slots=True)
class _Leaves:
    """Every leaf of the ensemble as boxes: the features on its path (padded), their intervals lo < z <= hi."""

    feature: Any  # (leaves, k) int: feature index; padding points at feature 0 with an infinite interval
    lo: Any  # (leaves, k) float64
    hi: Any  # (leaves, k) float64
    value: Any  # (leaves, outputs) float64
    k: int


def _leaves(children_left: Any, children_right: Any, features: Any, thresholds: Any, values: Any,
            n_trees: int) -> _Leaves | None:
    boxes: list[tuple[Any, dict[int, tuple[float, float]]]] = []
    for t in range(n_trees):
        cl, cr, ft, th, vals = children_left[t], children_right[t], features[t], thresholds[t], values[t]
        stack: list[tuple[int, dict[int, tuple[float, float]]]] = [(0, {})]
        while stack:
            node, box = stack.pop()
            if cl[node] < 0:
                boxes.append((vals[node], box))
                continue
            f, thr = int(ft[node]), float(th[node])
            low, high = box.get(f, (-np.inf, np.inf))
            stack.append((int(cl[node]), {**box, f: (low, min(high, thr))}))
            stack.append((int(cr[node]), {**box, f: (max(low, thr), high)}))
    k = max((len(b) for _, b in boxes), default=0)
    if k > MAX_PATH_FEATURES:
        log.debug("fast TreeSHAP not used: a path has %d distinct features", k)
        return None
    k = max(k, 1)
    n = len(boxes)
    feature = np.zeros((n, k), dtype=np.intp)
    lo = np.full((n, k), -np.inf)
    hi = np.full((n, k), np.inf)
    value = np.zeros((n, np.asarray(values).shape[-1]))
    for i, (val, box) in enumerate(boxes):
        value[i] = val
        for j, (f, (a, b)) in enumerate(sorted(box.items())):
            feature[i, j], lo[i, j], hi[i, j] = f, a, b
    return _Leaves(feature, lo, hi, value, k)


def _coefficients(k: int) -> Any:
    """(x bits, r bits) -> the unanimity game's Shapley coefficient of each path position, (4^k, k)."""
    size = 1 << k
    table = np.zeros((size * size, k))
    for a in range(size):
        for p in range(size):
            x_in = [(a >> j) & 1 for j in range(k)]
            r_in = [(p >> j) & 1 for j in range(k)]
            if any(not xi and not ri for xi, ri in zip(x_in, r_in, strict=True)):
                continue  # unreachable leaf for this row
            nx = sum(1 for xi, ri in zip(x_in, r_in, strict=True) if xi and not ri)
            nr = sum(1 for xi, ri in zip(x_in, r_in, strict=True) if ri and not xi)
            for j in range(k):
                if x_in[j] and not r_in[j]:
                    table[a * size + p, j] = factorial(nx - 1) * factorial(nr) / factorial(nx + nr)
                elif r_in[j] and not x_in[j]:
                    table[a * size + p, j] = -factorial(nx) * factorial(nr - 1) / factorial(nx + nr)
    return table


class _TooLarge(Exception):
    """The precomputation would hold more than its bounds allow (build() then returns None)."""


class FastTreeShap:
    """Built once per route from shap's reading of the trees (after centring) and the background it was given."""

    def __init__(self, leaves: _Leaves, background: Any, base_offset: Any, logistic: bool, n_features: int
                 ) -> None:
        k = leaves.k
        self.k = k
        self.size = 1 << k
        self.n_features = n_features
        self.feature = leaves.feature
        self.lo, self.hi = leaves.lo, leaves.hi
        self.weights = (1 << np.arange(k)).astype(np.float64)
        self.value = leaves.value
        self.base = np.asarray(base_offset, dtype=np.float64).reshape(-1)
        self.full = self.size - 1
        self.logistic = logistic
        n_rows = background.shape[0]
        self.n_rows = n_rows
        n_leaves = leaves.value.shape[0]
        patterns = self._bits(background)  # (rows, leaves)
        margins = self.base + (patterns == self.full).astype(np.float64) @ self.value  # (rows, outputs)
        self.margin_r = margins[:, 0].copy()
        self.sigmoid_r = 1.0 / (1.0 + np.exp(-self.margin_r))
        cell = np.arange(n_leaves) * self.size + patterns  # (rows, leaves): (leaf, pattern) of each cell
        pairs, pos = np.unique(cell, return_inverse=True)
        if n_rows * pairs.size > 4 * MAX_CELLS:  # the membership matrix below, one byte per (row, pair)
            raise _TooLarge(f"{n_rows} background rows x {pairs.size} (leaf, pattern) pairs")
        pos = pos.reshape(cell.shape)
        self.pair_leaf = pairs // self.size
        self.pair_pattern = pairs % self.size
        member = np.zeros((n_rows, pairs.size), dtype=bool)
        member[np.repeat(np.arange(n_rows), n_leaves), pos.ravel()] = True
        # Pairs whose background rows are the same set share one column (all the leaves of a tree that a
        # group of rows reaches alike): the per-request sum over rows is one small matrix product.
        packed = np.packbits(member, axis=0).T
        uniq, inverse = np.unique(packed, axis=0, return_inverse=True)
        if logistic and n_rows * uniq.shape[0] * 8 > MAX_GROUP_BYTES:
            raise _TooLarge(f"{uniq.shape[0]} distinct groups of background rows")
        self.columns = np.unpackbits(uniq, axis=1, count=n_rows).T.astype(np.float64)  # (rows, groups)
        self.column_of_pair = inverse.reshape(-1)
        self.counts = self.columns.sum(axis=0)[self.column_of_pair]  # rows per pair (linear output)
        self.pair_value_t = np.ascontiguousarray(leaves.value[self.pair_leaf].T)  # (outputs, pairs)
        self.value0 = np.ascontiguousarray(leaves.value[:, 0])
        self.base0 = float(self.base[0])
        self.coef = _coefficients(k).T.copy()  # (k, 4^k)
        # flat index of (position j, pair's leaf feature) for the final per-feature sum
        self.pair_feature = (self.feature[self.pair_leaf].T).ravel()  # (k * pairs,), position-major
        # coefficient row of (position, pair) = position * 4^k + x bits * 2^k + the pair's pattern
        self.pair_index = (np.arange(k) * self.size * self.size)[:, None] + self.pair_pattern[None, :]
        self.coef_flat = self.coef.ravel()

    def _bits(self, rows: Any) -> Any:
        """Pattern of "inside the path interval" bits of every row at every leaf: (rows, leaves) int."""
        z = rows[:, self.feature]  # (rows, leaves, k)
        inside = (z > self.lo) & (z <= self.hi)
        return (inside @ self.weights).astype(np.intp)

    def shap_values(self, x: Any) -> Any:
        """Contributions of each row of ``x`` (float64, no missing value): (n, features) for one output,
        (n, features, outputs) for several, as shap's ``shap_values`` returns them."""
        n_out = self.value.shape[1]
        out = np.zeros((x.shape[0], self.n_features, n_out))
        flat_coef = self.coef_flat
        for i, a in enumerate(self._bits(x)):
            coef = flat_coef.take((a * self.size)[self.pair_leaf] + self.pair_index)  # (k, pairs)
            if self.logistic:
                mx = self.base0 + float(self.value0[a == self.full].sum())
                d = mx - self.margin_r
                scale = np.divide(1.0 / (1.0 + math.exp(-mx)) - self.sigmoid_r, d, out=np.ones(self.n_rows),
                                  where=d != 0.0)  # shap: 1 where the margins are equal
                weight = (scale @ self.columns)[self.column_of_pair]
            else:
                weight = self.counts
            for o in range(n_out):
                if n_out == 1:
                    coef *= weight * self.pair_value_t[0]  # in place: no other output needs coef
                    w = coef
                else:
                    w = coef * (weight * self.pair_value_t[o])
                out[i, :, o] = np.bincount(self.pair_feature, weights=w.ravel(), minlength=self.n_features)
        out /= self.n_rows
        return out[:, :, 0] if n_out == 1 else out


def build(ensemble: Any, background: Any, model_output: str, n_features: int) -> FastTreeShap | None:
    """The precomputed explainer for shap's tree ensemble ``ensemble`` (``explainer.model``) and the background
    rows shap was given, or None where it does not apply (see the module docstring)."""
    transform = {"raw": False, "probability": str(ensemble.tree_output) == "log_odds"}.get(model_output)
    if transform is None:
        return None
    data = np.asarray(background, dtype=np.float64)
    values = np.asarray(ensemble.values, dtype=np.float64)
    n_trees = int(getattr(ensemble, "tree_limit", None) or values.shape[0])
    reasons = []
    if np.isnan(data).any():
        reasons.append("missing values in the background")
    types = getattr(ensemble, "threshold_types", None)
    if types is not None and np.any(np.asarray(types)[np.asarray(ensemble.children_left) >= 0] != 0):
        reasons.append("categorical splits")  # shap marks leaves -1, numeric splits 0
    if int(getattr(ensemble, "num_stacked_models", 1) or 1) != 1:
        reasons.append("stacked models")
    if transform and values.shape[-1] != 1:
        reasons.append("several outputs under the logistic transform")
    if model_output == "probability" and str(ensemble.tree_output) not in ("log_odds", "probability"):
        reasons.append(f"tree output {ensemble.tree_output}")
    if reasons:
        log.debug("fast TreeSHAP not used: %s", ", ".join(reasons))
        return None
    leaves = _leaves(ensemble.children_left, ensemble.children_right, ensemble.features, ensemble.thresholds,
                     values, n_trees)
    if leaves is None:
        return None
    if data.shape[0] * leaves.value.shape[0] > MAX_CELLS:
        log.debug("fast TreeSHAP not used: %d background rows x %d leaves", data.shape[0], leaves.value.shape[0])
        return None
    try:
        return FastTreeShap(leaves, data, ensemble.base_offset, transform, n_features)
    except _TooLarge as exc:
        log.debug("fast TreeSHAP not used: %s", exc)
        return None


def agrees(fast: FastTreeShap, reference: Any, rows: Any) -> bool:
    """True when ``fast`` gives shap's contributions on ``rows`` (start-up check, before it serves)."""
    ours = np.asarray(fast.shap_values(rows), dtype=np.float64)
    theirs = np.asarray(reference, dtype=np.float64)
    if ours.shape != theirs.shape:
        return False
    scale = max(1.0, float(np.abs(theirs).sum(axis=1).max(initial=0.0)))
    return bool(np.all(np.abs(ours - theirs) <= CHECK_TOLERANCE * scale))
