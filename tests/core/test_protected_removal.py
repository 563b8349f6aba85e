"""Protected attributes are taken out of what the app receives by copying only the containers on their paths:
the original request (what the client sent, read by later stages and the audit record) stays untouched."""

from __future__ import annotations

import copy

from mlguard.exchange import _without


def test_removes_members_copies_only_their_paths_and_keeps_the_original() -> None:
    doc = {"applicant": {"id": 1, "sex": "F", "race": "B", "nested": {"x": [1, {"y": 2}]}},
           "features": {"a": 1}, "l": [{"s": 1}, {"s": 2}]}
    original = copy.deepcopy(doc)
    out, removed = _without(doc, [("applicant", "sex"), ("applicant", "race"), ("l", 1, "s")])
    assert removed and doc == original
    assert out == {"applicant": {"id": 1, "nested": {"x": [1, {"y": 2}]}}, "features": {"a": 1},
                   "l": [{"s": 1}, {}]}
    assert out["features"] is doc["features"]  # untouched containers are shared, not copied
    assert out["applicant"] is not doc["applicant"] and out["l"][1] is not doc["l"][1]


def test_nested_and_missing_locations() -> None:
    doc = {"applicant": {"sex": "F", "nested": {"x": 1}}, "k": 2}
    out, removed = _without(doc, [("applicant",), ("applicant", "nested", "x"), ("nope", "x")])
    assert removed and out == {"k": 2} and doc == {"applicant": {"sex": "F", "nested": {"x": 1}}, "k": 2}
    same, removed = _without(doc, [("nope", "x"), ("k", "deeper")])
    assert not removed and same == doc
    assert _without([1, 2], [(0, "a")]) == ([1, 2], False)
    assert _without("text", [("a",)]) == ("text", False)
