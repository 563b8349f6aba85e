"""Declared categories match ignoring case and surrounding whitespace; decline-to-state answers count as unknown.

Before: with ``fairness.categories: {sex: [Female, Male]}`` the value "female" counted as ``other`` (a split group
and a bigger catch-all), and "prefer not to say" too, where LL144 asks for it in the unknown count. Values that
match nothing still never become a group name in clear. Counts are checked against pandas on the same values.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from mlguard.config.fairness import DEFAULT_UNKNOWN_VALUES, FairnessSettings
from mlguard.fairness.metrics import Thresholds, evaluate
from mlguard.fairness.window import FairnessWindow
from tests.fairness.conftest import build, client, make_config

CATEGORIES = {"sex": ["Female", "Male"], "code": ["F", "M"]}
VALUES = {
    "sex": ["Female", "female", " Female ", "FEMALE\t", "Male", "male", "  MALE", "Prefer not to say",
            "prefer NOT to say ", "Decline to state", " N/A", "Unknown", "Nonbinary free text", None],
    "code": ["F", "F ", "f", " m", "M", "n/a", "Q"],
}


def _pandas_counts(raw: list[Any], declared: list[str], unknown: list[str], pred: list[bool]) -> pd.DataFrame:
    """n and selected per category, mapped in pandas: strip + casefold, declared name, unknown, else other."""
    names = {d.casefold(): d for d in declared}
    unk = {u.strip().casefold() for u in unknown} | {"unknown"}

    def cat(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            return "unknown"
        f = v.strip().casefold()
        return names.get(f) or ("unknown" if f in unk else "other")

    df = pd.DataFrame({"cat": [cat(v) for v in raw], "pred": pred})
    return df.groupby("cat")["pred"].agg(["size", "sum"])


@pytest.mark.parametrize("attribute", ["sex", "code"])
def test_counts_equal_pandas_with_case_and_whitespace_ignored(attribute: str) -> None:
    raw = VALUES[attribute] * 5
    pred = [i % 3 == 0 for i in range(len(raw))]
    w = FairnessWindow([attribute], size=1000, categories={attribute: CATEGORIES[attribute]})
    for v, p in zip(raw, pred, strict=True):
        w.add({attribute: v}, p)
    got = {g.key: (g.n, g.selected) for g in w.snapshot()}
    expected = _pandas_counts(raw, CATEGORIES[attribute], list(DEFAULT_UNKNOWN_VALUES), pred)
    assert got == {f"{attribute}={k}": (int(r["size"]), int(r["sum"])) for k, r in expected.iterrows()}
    if attribute == "sex":
        assert got["sex=Female"][0] == 20 and got["sex=Male"][0] == 15 and got["sex=other"][0] == 5
        assert got["sex=unknown"][0] == 30  # 4 decline-to-state spellings, "Unknown" and a missing value
        assert evaluate(w.snapshot(), w.dimensions, Thresholds()).dimensions["sex"].unknown == 30
    else:
        assert {k: n for k, (n, _) in got.items()} == {"code=F": 15, "code=M": 10, "code=unknown": 5, "code=other": 5}


def test_spellings_do_not_grow_the_map_and_free_text_stays_out() -> None:
    w = FairnessWindow(["sex"], size=10_000, categories={"sex": ["Female", "Male"]})
    for i in range(300):
        spelling = "".join(c.upper() if (i >> k) & 1 else c for k, c in enumerate("female"))
        assert w.add({"sex": " " * (i % 4) + spelling + "\t" * (i % 3)}, True) == ("sex=Female",)
        assert w.add({"sex": f"free text {i}"}, True) == ("sex=other",)
    assert len(w._values["sex"]) == 1  # one entry for every spelling of Female; nothing for free text
    assert {g.key for g in w.snapshot()} == {"sex=Female", "sex=other"}


def test_unknown_values_are_configurable_and_replace_the_default() -> None:
    w = FairnessWindow(["sex"], size=100, categories={"sex": ["Female", "Male", "Prefer not to say"]},
                       unknown_values=["Rather not", "decline to state"])
    assert w.add({"sex": " RATHER NOT"}, True) == ("sex=unknown",)
    assert w.add({"sex": "unknown"}, True) == ("sex=unknown",)  # always
    assert w.add({"sex": "prefer not to say"}, True) == ("sex=Prefer not to say",)  # declared: a category
    assert w.add({"sex": "n/a"}, True) == ("sex=other",)  # not in this list


def test_undeclared_attribute_decline_to_state_is_unknown_not_a_digest() -> None:
    w = FairnessWindow(["race"], size=100, label_key=b"k" * 32)
    assert w.add({"race": "Prefer not to say"}, True) == ("race=unknown",)
    planted = w.add({"race": "Zebulon Quixotic"}, True)[0]
    assert planted.startswith("race=~") and "Zebulon" not in planted


def test_settings_default_and_validation() -> None:
    s = FairnessSettings()
    assert {"prefer not to say", "decline to state", "unknown", "not specified", "n/a"} <= set(s.unknown_values)
    assert FairnessSettings(unknown_values=["x"]).unknown_values == ["x"]
    with pytest.raises(ValidationError) as err:
        FairnessSettings(categories={"sex": ["Female", " female", "Male"]})
    msg = err.value.errors()[0]["msg"]
    assert "lists a value twice" in msg and "categories.sex" in msg and "female" not in msg.lower()


@pytest.mark.anyio
async def test_stage_counts_spellings_and_configured_unknowns(tmp_path: Any, token: str) -> None:
    guard, app, _ = build(make_config(tmp_path, unknown_values=["rather not", "prefer not to say"]))
    auth = {"authorization": f"Bearer {token}"}
    sent = ["female", "FEMALE ", "Male", " male", "Rather Not", "Prefer not to say", "Nonbinary free text"]
    async with client(app) as c:
        for i, sex in enumerate(sent):
            r = await c.post("/screen", json={"candidate": {"id": f"c{i}", "sex": sex, "race": "white"},
                                              "points": 90})
            assert r.status_code == 200
        text = (await c.get("/mlguard/fairness", headers=auth)).text
        rep = (await c.get("/mlguard/fairness", headers=auth)).json()["routes"]["0"]["report"]
    await guard.aclose()
    sex = {r["group"]: r["n"] for r in rep["dimensions"]["sex"]["impact"]}
    assert sex == {"sex=Female": 2, "sex=Male": 2, "sex=other": 1}
    assert rep["dimensions"]["sex"]["unknown"] == 2
    assert {r["group"] for r in rep["dimensions"]["race"]["impact"]} == {"race=White"}
    assert "Nonbinary" not in text and "Rather" not in text


def test_shared_window_maps_with_the_configured_unknown_values(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                               token: str) -> None:
    """shared_pg.SharedWindow builds its own value mapper; the stage gives it the configured unknown values."""
    import mlguard.fairness.shared_pg as shared_pg

    made: list[Any] = []

    class FakeShared:
        def __init__(self, url: str, **kw: Any) -> None:
            self._keys = FairnessWindow(kw["attributes"], size=1, categories=kw["categories"])
            self.dimensions = self._keys.dimensions
            made.append(self)

    monkeypatch.setattr(shared_pg, "SharedWindow", FakeShared)
    build(make_config(tmp_path, shared_store="postgresql://unused/x", unknown_values=["rather not"]))
    assert made and made[0]._keys.group_keys({"sex": "RATHER NOT", "race": "Black"})[0] == "race=Black"
    assert made[0]._keys.group_keys({"sex": "RATHER NOT", "race": "Black"})[1] == "sex=unknown"
