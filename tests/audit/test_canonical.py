"""canonical(): the orjson fast path gives exactly the standard library's bytes, on every kind of value."""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlguard.audit import record
from mlguard.audit.record import _canonical_std, canonical


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


class Kind(enum.StrEnum):
    A = "a"


@dataclasses.dataclass
class Point:
    y: float
    x: int


class MyDict(dict[str, Any]):
    pass


def _random_doubles(n: int) -> list[float]:
    rng = random.Random(7)
    out = []
    while len(out) < n:
        f = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(f):
            out.append(f)
    return out


SPECIAL = [0.0, -0.0, 0.1, 1e-4, 9.99e-5, 1e-5, -1e-5, 2.5e-5, 1e-7, 1e-10, 5e-324, 1e15, 1e16, 1.5e16,
           1e22, 1.7976931348623157e308, 0.30000000000000004, 123456789.0, float("nan"), float("inf")]

CASES: list[Any] = [
    {"b": 1, "a": [1, 2, {"d": None, "c": True}], "é": "ünï", "😀": "\u2028\x00\x1f\x7f\"\\"},
    {"score": 1e-05, "ok": 0.5}, [1e-7, 2], 1e-05, "text:0.00001", {"s": "a,1e-5"},
    {"big": 2**64, "neg": -(2**63), "huge": 10**30}, {1: "int key"}, {"t": (1, 2)},
    {"e": Colour.RED, "i": Size.BIG, "k": Kind.A}, {"p": Point(0.5, 1)}, {"d": datetime(2026, 1, 2, tzinfo=UTC)},
    MyDict(z=1, a=2), {"nan": float("nan"), "inf": [float("-inf")]}, {"s": {3, 1}},
    {"nested": [[[[{"x": 1e-300}]]]]}, {"sur": "x\udc00y"},
    # tiny floats beside strings that look like numbers, escaped quotes and backslashes, numeric keys
    {"c": {"a": 6.219138372148043e-05, "b": -2.5e-06}, "s": "q\":0.00001,\\", "0.00001": 1e-05,
     "t": ["\\", 1e-7, "1e-7", 10.00001, 0.0001, 12e-7, [-9.99e-5, "\\\"", 3]], "u": "e-0.0000"},
]


@pytest.mark.parametrize("value", CASES + SPECIAL, ids=lambda v: type(v).__name__)
def test_fast_path_equals_standard_library(value: Any) -> None:
    try:
        expected = _canonical_std(value)
    except (TypeError, ValueError):
        with pytest.raises((TypeError, ValueError)):
            canonical(value)
        return
    assert canonical(value) == expected


def test_random_doubles_alone_and_in_records() -> None:
    doubles = _random_doubles(50_000)
    bad = [f for f in doubles if canonical(f) != _canonical_std(f)]
    assert not bad, bad[:5]
    rows = [{"score": f, "list": [f, -f]} for f in doubles[:5000]]
    assert [canonical(r) for r in rows] == [_canonical_std(r) for r in rows]


def test_tiny_floats_among_others_are_rewritten_not_sent_to_the_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explanation contributions below 1e-4 are common: their records keep orjson's speed and Python's bytes."""
    import mlguard.audit.record as record

    rng = random.Random(3)
    docs = [{"contributions": {f"f{i}": rng.choice([1, -1]) * 10 ** rng.uniform(-9, 1) for i in range(8)},
             "note": f"x:{rng.random():.7f}e-5,\"0.00001\"", "n": rng.randint(0, 10**6)} for _ in range(2000)]
    expected = [_canonical_std(d) for d in docs]

    def refuse(obj: Any) -> bytes:
        raise AssertionError("the standard path ran")

    monkeypatch.setattr(record, "_canonical_std", refuse)
    assert [canonical(d) for d in docs] == expected


def test_without_orjson_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    value = {"z": [0.71, 1e-5, "x"], "a": {"k": Colour.RED}}
    fast = canonical(value)
    monkeypatch.setattr(record, "_orjson", None)
    assert canonical(value) == fast == b'{"a":{"k":"red"},"z":[0.71,1e-05,"x"]}'


def test_iso_equals_datetime_formatting() -> None:
    from datetime import datetime

    from mlguard.audit.record import iso

    rng = random.Random(5)
    values = [1_790_000_000 + rng.uniform(-1e8, 1e8) for _ in range(20_000)]
    values += [float(rng.randint(0, 2**33)) + f for f in (0.0, 5e-7, 0.9999995, 1.5e-6) for _ in range(500)]
    values += [0.0, 1.0, -1.5, 1_790_000_000.9999996, 1_790_000_001.0000005]
    for v in values:
        assert iso(v) == datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), v


def test_policy_identity_names_each_source_by_id_version_and_hash_once_per_policy() -> None:
    from types import SimpleNamespace

    from mlguard.audit.record import policy_identity

    src = {"id": "gdpr", "version": "2026.11", "sha256": "ab" * 32, "title": "T", "path": "/secret/layout/gdpr.yaml"}
    policy = SimpleNamespace(ids=["gdpr"], content_hash="cd" * 32, sources=[src], failure_mode="fail_closed")
    ident = policy_identity(policy)
    assert ident == {"ids": ["gdpr"], "content_hash": "cd" * 32, "failure_mode": "fail_closed",
                     "sources": [{"id": "gdpr", "version": "2026.11", "sha256": "ab" * 32}]}
    assert policy_identity(policy) is ident  # computed once per policy object
    other = SimpleNamespace(**{**vars(policy), "failure_mode": "fail_open"})
    assert policy_identity(other)["failure_mode"] == "fail_open"


_TRICKY = st.text(alphabet=st.sampled_from(list('0123456789.-e+E:,[]{}"\\ aé')), max_size=12)
_FLOATS = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.floats(min_value=-1e-4, max_value=1e-4, allow_nan=False),
                    st.sampled_from([1e-5, -1e-5, 2.5e-5, 9.99e-5, 1e-7, -3e-9, 1.5e-10, 0.0001]))
_DOCS = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), _FLOATS, _TRICKY),
                     lambda inner: st.one_of(st.lists(inner, max_size=5),
                                             st.dictionaries(_TRICKY, inner, max_size=5)),
                     max_leaves=20)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS)
def test_any_document_with_tiny_floats_and_number_like_strings(doc: Any) -> None:
    """Strings that look like numbers, quotes and separators beside floats of every size: the rewrite of
    orjson's output touches exactly the float tokens Python spells differently."""
    assert canonical(doc) == _canonical_std(doc)


def test_number_like_text_inside_strings_is_left_alone_without_escapes() -> None:
    """No backslash in the output, so the quote-parity test decides; every look-alike sits in a string."""
    doc = {"a": "x:0.00001", "b": 1e-05, "c": "[1e-7,", "d": [2.5e-07, ",0.00002"], "e-": "e-5", "0.00003": 3e-05}
    assert canonical(doc) == _canonical_std(doc)
    assert b'"x:0.00001"' in canonical(doc) and b'"b":1e-05' in canonical(doc)
