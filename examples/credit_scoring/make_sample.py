"""Build the committed data files of the credit-scoring example.

Why a committed sample: the example must train offline on a fresh clone, with no ../shared directory and no
download, so a small, attributed sample of UCI Adult (CC BY 4.0) lives in the repository. This script
documents exactly how it was drawn; it is a maintainer tool and is not needed at run time.

    python -m examples.credit_scoring.make_sample [--source ../shared/data/uci_adult/adult.data]

It writes:

* ``data/adult_sample.csv``: ``SAMPLE_ROWS`` rows of ``adult.data`` drawn without replacement with a fixed
  seed, kept in their original order, values stripped of the file's padding, with a header row added.
* ``data/background.csv``: ``BACKGROUND_ROWS`` rows of model features only (the SHAP background, i.e. the
  "all applicants" baseline of Reg B comment 9(b)(2)-5), drawn from the sample with a fixed seed. This step
  reads only the committed sample, so ``--background-only`` can rebuild it (and the tests check it) without
  ../shared.

Standard library only, so it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from examples.credit_scoring.model import BACKGROUND_CSV, FEATURES, SAMPLE_CSV, features_from_row

#: Column names of adult.data (the file has no header); '-' replaced by '_' so they are identifiers.
COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
SAMPLE_ROWS = 3000
SAMPLE_SEED = 20260
BACKGROUND_ROWS = 100
BACKGROUND_SEED = 7

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = _REPO.parent / "shared" / "data" / "uci_adult" / "adult.data"


def read_adult(source: Path) -> list[list[str]]:
    """Parse adult.data: comma + space separated, blank trailing line, no header."""
    rows: list[list[str]] = []
    with source.open(newline="", encoding="ascii") as fh:
        for line_no, record in enumerate(csv.reader(fh, skipinitialspace=True), start=1):
            if not record:
                continue
            if len(record) != len(COLUMNS):
                raise ValueError(f"{source}:{line_no}: expected {len(COLUMNS)} fields, got {len(record)}")
            rows.append([value.strip() for value in record])
    return rows


def write_sample(source: Path, out: Path, n: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED) -> int:
    """Draw ``n`` rows with a fixed seed and write them with a header; returns the row count written."""
    rows = read_adult(source)
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows[i] for i in picked)
    return n


def background_rows(sample: Path = SAMPLE_CSV, n: int = BACKGROUND_ROWS, seed: int = BACKGROUND_SEED) -> list[
    list[str]
]:
    """The SHAP background: ``n`` sampled applicants, model features only, as CSV cells."""
    with sample.open(newline="", encoding="utf-8") as fh:
        applicants = list(csv.DictReader(fh))
    picked = sorted(random.Random(seed).sample(range(len(applicants)), n))
    out: list[list[str]] = []
    for i in picked:
        feats = features_from_row(applicants[i])
        out.append([_fmt(feats[name]) for name in FEATURES])
    return out


def write_background(sample: Path = SAMPLE_CSV, out: Path = BACKGROUND_CSV) -> int:
    """Write data/background.csv from the committed sample; returns the row count written."""
    rows = background_rows(sample)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(FEATURES)
        writer.writerows(rows)
    return len(rows)


def _fmt(value: float) -> str:
    """Integers print without '.0' so the CSV reads like the source data."""
    return str(int(value)) if value.is_integer() else repr(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="path to UCI adult.data")
    parser.add_argument(
        "--background-only", action="store_true", help="rebuild data/background.csv from the committed sample"
    )
    args = parser.parse_args(argv)
    if not args.background_only:
        n = write_sample(args.source, SAMPLE_CSV)
        print(f"wrote {n} rows to {SAMPLE_CSV}")
    n = write_background()
    print(f"wrote {n} rows to {BACKGROUND_CSV}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
