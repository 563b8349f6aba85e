"""Train the example model, refresh its cache and print how good it is.

    python -m examples.credit_scoring.train [--adult-test ../shared/data/uci_adult/adult.test]

Why a script when ``load_model()`` trains on first use anyway: it lets a deployment build the cache ahead of
the first request (e.g. in a container build step), and it shows the model's quality on the held-out part of
the sample, so nobody mistakes the example for a toy that predicts a constant. ``--adult-test`` additionally
scores the full UCI test file, when a copy is at hand; the example never needs it.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from examples.credit_scoring.model import (
    FEATURES,
    SAMPLE_CSV,
    _write_cache,
    cache_file,
    features_from_row,
    load_dataset,
    split_dataset,
    train_model,
)


def _scores(model: Any, x: Any, y: Any) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    proba = model.predict_proba(x)[:, 1]
    return float(accuracy_score(y, proba >= 0.5)), float(roc_auc_score(y, proba))


def _read_adult_test(path: Path) -> tuple[Any, Any]:
    """adult.test: no header, a '|1x3 Cross validator' first line, labels ending with '.'."""
    import numpy as np

    from examples.credit_scoring.make_sample import COLUMNS

    rows = []
    with path.open(newline="", encoding="ascii") as fh:
        for record in csv.reader(fh, skipinitialspace=True):
            if len(record) == len(COLUMNS):
                rows.append(dict(zip(COLUMNS, (v.strip() for v in record), strict=True)))
    x = np.array([[features_from_row(r)[name] for name in FEATURES] for r in rows], dtype=np.float64)
    y = np.array([r["income"].rstrip(".") == ">50K" for r in rows], dtype=np.int64)
    return x, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adult-test", type=Path, help="optional: also score the UCI adult.test file")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model = train_model()
    elapsed = time.perf_counter() - started
    path = cache_file()
    _write_cache(model, path)

    x, y = load_dataset(SAMPLE_CSV)
    _, x_hold, y_train, y_hold = split_dataset(x, y)
    acc, auc = _scores(model, x_hold, y_hold)
    print(f"trained GradientBoostingClassifier on {len(y_train)} rows in {elapsed:.2f} s; cached at {path}")
    print(f"features: {', '.join(FEATURES)}")
    print(f"holdout ({len(y_hold)} rows, {y_hold.mean():.1%} approved): accuracy {acc:.4f}  AUC {auc:.4f}")
    if args.adult_test:
        x_test, y_test = _read_adult_test(args.adult_test)
        acc, auc = _scores(model, x_test, y_test)
        print(f"UCI adult.test ({len(y_test)} rows): accuracy {acc:.4f}  AUC {auc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
