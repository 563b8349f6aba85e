"""A difference or ratio over fewer than two groups compares nothing: no value, never "perfect parity".

Before: with one eligible intersection (the others under the minimum group size), ``/mlguard/metrics`` published
``demographic_parity_difference{dimension="race|sex"} 0.0`` and ``demographic_parity_ratio 1.0``, and the JSON
report 0.0 and 1.0: read as perfect parity where nothing was compared. Now the sample is left out (as the
module already leaves out every non-finite value) and the JSON says null.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlguard.fairness.metrics import Thresholds, evaluate
from mlguard.fairness.report import build_report
from mlguard.fairness.window import GroupSnapshot
from tests.fairness.conftest import build, client, make_config

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer test-admin-token"}
BETWEEN = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
           "equalized_odds_ratio")


def _samples(text: str, dimension: str) -> dict[str, str]:
    """metric label -> value of the ``mlguard_fairness_metric`` samples of one dimension, over its groups (an
    empty group label; impact ratios, one per group, are left out)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("mlguard_fairness_metric{") and f'dimension="{dimension}"' in line \
                and 'group=""' in line:
            metric = line.split('metric="', 1)[1].split('"', 1)[0]
            out[metric] = line.rsplit(" ", 1)[1]
    return out


async def test_metrics_and_endpoint_give_no_value_for_one_eligible_group(tmp_path: Any, token: str) -> None:
    # min_group_size 5 (test policy): sex and race each have two eligible groups, the intersection only one
    guard, app, _ = build(make_config(tmp_path))
    people = [("Male", "White", 40), ("Male", "Black", 4), ("Female", "White", 3), ("Female", "Black", 3)]
    async with client(app) as c:
        i = 0
        for sex, race, n in people:
            for k in range(n):
                i += 1
                r = await c.post("/screen", json={"candidate": {"id": f"c{i}", "sex": sex, "race": race},
                                                  "points": 90 if k % 2 else 10})
                assert r.status_code == 200
        ids = [r.headers["mlguard-audit-id"]]
        assert (await c.post("/mlguard/feedback", json={"audit_id": ids[0], "label": True},
                             headers=AUTH)).status_code == 200
        text = (await c.get("/mlguard/metrics", headers=AUTH)).text
        rep = (await c.get("/mlguard/fairness", headers=AUTH)).json()["routes"]["0"]["report"]
    await guard.aclose()
    assert set(_samples(text, "sex")) >= {"demographic_parity_difference", "demographic_parity_ratio"}
    assert not set(_samples(text, "race|sex")) & set(BETWEEN), _samples(text, "race|sex")
    inter = rep["dimensions"]["race|sex"]
    assert inter["eligible"]["groups"] == ["race=White|sex=Male"]
    assert all(inter["eligible"][name] is None for name in BETWEEN)
    assert rep["dimensions"]["sex"]["eligible"]["demographic_parity_difference"] is not None
    # one group labelled: equalized odds compares nothing either
    assert rep["dimensions"]["sex"]["eligible"]["equalized_odds_difference"] is None


def test_evaluate_gives_nan_below_two_groups() -> None:
    snap = [GroupSnapshot("sex=F", "sex", False, n=40, selected=20, labelled=10, tp=5, fn=5),
            GroupSnapshot("sex=M", "sex", False, n=3, selected=3)]
    dim = evaluate(snap, ["sex"], Thresholds(min_group_size=5)).dimensions["sex"]
    assert dim.status == "insufficient"
    for name in BETWEEN:
        assert math.isnan(getattr(dim.eligible, name)), name
    assert dim.all_groups.demographic_parity_difference == pytest.approx(0.5)  # two groups: a real figure
    assert math.isnan(dim.all_groups.equalized_odds_difference)  # only one of them labelled

    alone = evaluate(snap[:1], ["sex"], Thresholds(min_group_size=5)).dimensions["sex"]
    assert math.isnan(alone.all_groups.demographic_parity_difference)
    assert math.isnan(alone.all_groups.demographic_parity_ratio)


def test_json_report_gives_null_below_two_groups() -> None:
    records = [{"kind": "exchange", "audit_id": f"a{i}", "ts": f"2026-01-01T00:00:{i:02d}Z", "route": "/r",
                "fairness": {"counted": True, "favorable": i % 2 == 0, "score": None,
                             "groups": ["sex=F" if i < 40 else "sex=M"]}} for i in range(43)]
    report = build_report(records, thresholds=Thresholds(min_group_size=5))
    eligible = report["routes"]["/r"]["metrics"]["sex"]["eligible"]
    assert eligible["demographic_parity_difference"] is None and eligible["demographic_parity_ratio"] is None
    first = report["routes"]["/r"]["over_time"][0]  # a period of women only: nothing to compare
    assert first["dimensions"]["sex"]["demographic_parity_difference"] is None
