"""``AuditReader.deferred_explanation``: the event a deferred explanation became, found by reading ahead and
parsing only the events whose decrypted bytes name the audit id; same answers as the per-event decode it replaced
(``reference``, kept in bench/deferred_lookup.py), on SQLite and PostgreSQL (``store`` fixture: skipped with a
reason without PostgreSQL, failed under CI)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bench.deferred_lookup import reference
from mlguard.audit.reader import DEFERRED_SCAN, PREFETCH, AuditReader
from mlguard.audit.record import Pending, canonical, event, iso, pseudonym
from mlguard.audit.store.base import AuditStore
from mlguard.audit.writer import AuditWriter
from mlguard.keys import Keyring

T0 = 1_790_000_000.0  # 2026-09-21
ME = "0192f1a4-7c3e-7b21-9d4a-3f6e8a1b2c01"  # the exchange whose explanation was deferred
_n = itertools.count()


def exchange(audit_id: str, keyring: Keyring) -> Pending:
    subject = pseudonym(keyring, f"applicant-{audit_id}")
    body = {"audit_id": audit_id, "kind": "exchange", "route": "/predict", "input": {"income": 1},
            "explanation": {"status": "pending", "deferred": True}}
    return Pending(audit_id, iso(T0), "exchange", "/predict", subject, canonical(body), None)


def ready(names: Any, tag: str = "ready", **extra: Any) -> dict[str, Any]:
    """An explanation event's data, as the explain stage writes it (``names``: the exchange's audit id)."""
    return {"audit_id": names, "route": "/predict",
            "explanation": {"status": "ready", "deferred": True, "tag": tag, "outcome": "denied", **extra}}


def ev(data: dict[str, Any], kind: str = "explanation", **kw: Any) -> Pending:
    n = next(_n)
    return event(f"00000000-0000-7000-8000-{n:012d}", T0 + n / 1000, kind, data, **kw)


def other(i: int) -> str:
    return f"0192f1a4-7c3e-7b21-9d4a-{i:012x}"


def others(k: int, start: int = 0) -> list[Pending]:
    """``k`` explanation events naming other exchanges."""
    return [ev(ready(other(start + i), tag=f"other-{start + i}")) for i in range(k)]


def readers(store: AuditStore, keyring: Keyring) -> list[AuditReader]:
    """A caching reader (``mlguard explain``) and a non-caching one (the admin endpoint's)."""
    return [AuditReader(store, keyring), AuditReader(store, keyring, cache_keys=False)]


def record_of(store: AuditStore, keyring: Keyring, audit_id: str) -> dict[str, Any]:
    rec = AuditReader(store, keyring).get(audit_id)
    assert rec is not None and rec["kind"] == "exchange"
    return rec


def test_found_among_many_events(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    w.append_now([ev(ready(ME, tag="before the exchange")), exchange(ME, keyring)])
    w.append_now([
        *others(120),
        # names the audit id, but not as the exchange it explains: must not match
        ev(ready(other(900), note=ME, cause={"audit_id": ME})),
        ev({"route": "/predict", "explanation": {"status": "ready"}, "ref": ME}),  # no audit_id at all
        ev(ready(ME.upper(), tag="other case")),
        ev(ready(ME[:-1], tag="a prefix")),
        ev({"audit_id": ME, "explanation": {"status": "ready"}}, kind="feedback"),  # another kind
        ev(ready(other(901), tag="clear"), clear=True),  # a clear event (no data key) is read too
        *others(150, start=120),
        ev(ready(ME, tag="the one")),
        *others(40, start=270),
        ev(ready(ME, tag="a later one")),
    ])
    rec = record_of(store, keyring, ME)
    for r in readers(store, keyring):
        found = r.deferred_explanation(rec)
        assert found == {"status": "ready", "deferred": True, "tag": "the one", "outcome": "denied"}
        assert found == reference(r, rec)
    for i in (0, 150, 299):  # the events of other exchanges are found as well, each its own
        rec_other = {"seq": rec["seq"], "audit_id": other(i)}
        got = AuditReader(store, keyring).deferred_explanation(rec_other)
        assert got is not None and got["tag"] == f"other-{i}"


def test_none_when_absent(store: AuditStore, keyring: Keyring) -> None:
    w = AuditWriter(store, keyring)
    w.append_now([exchange(ME, keyring), *others(300)])
    w.append_now([ev({"audit_id": ME, "explanation": {"status": "ready"}}, kind="admin_read")])
    rec = record_of(store, keyring, ME)
    for r in readers(store, keyring):
        assert r.deferred_explanation(rec) is None and reference(r, rec) is None
    # no event after the exchange at all, and a record without a place in the log
    assert AuditReader(store, keyring).deferred_explanation({"seq": store.head()[0], "audit_id": ME}) is None
    assert AuditReader(store, keyring).deferred_explanation({"audit_id": ME}) is None


def test_scan_bound(store: AuditStore, keyring: Keyring) -> None:
    at = PREFETCH + 44  # the event is the 300th explanation event after the exchange: on the second page
    w = AuditWriter(store, keyring)
    w.append_now([exchange(ME, keyring), *others(at - 1), ev(ready(ME)), *others(20, start=at)])
    # events of other kinds do not count towards the bound
    w.append_now([ev({"endpoint": "/x", "target": ME}, kind="admin_read")])
    rec = record_of(store, keyring, ME)
    for r in readers(store, keyring):
        assert r.deferred_explanation(rec, scan=at) == ready(ME)["explanation"]
        assert r.deferred_explanation(rec, scan=at - 1) is None  # placed beyond the scan: not found
        for scan in (-1, 0, 1, PREFETCH, at - 1, at, at + 1, 10_000):
            assert r.deferred_explanation(rec, scan=scan) == reference(r, rec, scan=scan), scan


def test_shredded_events_are_skipped(store: AuditStore, keyring: Keyring) -> None:
    gone = pseudonym(keyring, "gone")
    w = AuditWriter(store, keyring)
    w.append_now([exchange(ME, keyring), exchange(other(1), keyring), *others(30, start=10)])
    # events sealed under a subject's data key, which is then shredded: they name nothing readable any more
    w.append_now([ev(ready(ME, tag="shredded"), subject=gone), ev(ready(other(1), tag="shredded"), subject=gone),
                  *others(30, start=40), ev(ready(ME, tag="readable"))])
    rec, rec1 = record_of(store, keyring, ME), record_of(store, keyring, other(1))
    before = readers(store, keyring)  # opened before the shred; the non-caching one must see it at once
    assert before[0].deferred_explanation(rec) == ready(ME, tag="shredded")["explanation"]
    assert before[1].deferred_explanation(rec) == ready(ME, tag="shredded")["explanation"]
    assert store.delete_data_keys(subject=gone)
    for r in [*readers(store, keyring), before[1]]:
        assert r.deferred_explanation(rec) == ready(ME, tag="readable")["explanation"] == reference(r, rec)
        assert r.deferred_explanation(rec1) is None and reference(r, rec1) is None  # no error either
    shredded = [x for x in AuditReader(store, keyring).iter_records() if x["shredded"]]
    assert len(shredded) == 2 and all(x["kind"] == "explanation" for x in shredded)


def test_same_answers_as_the_per_event_decode(store: AuditStore, keyring: Keyring) -> None:
    """Every kind of record the lookup may be given, against the reference, with both readers."""
    odd = 'r\u00e9f "7"\\'  # an id a byte pre-filter cannot be sure of: every event is parsed for it
    ids = [ME, other(3), other(4), other(5), odd, "plain-id"]
    w = AuditWriter(store, keyring)
    w.append_now([exchange(i, keyring) for i in ids])
    w.append_now([
        *others(50, start=100),
        ev(ready(other(3), tag="first")),
        ev({"audit_id": other(4), "route": "/predict", "explanation": "not a document"}),  # the first: None
        ev(ready(other(4), tag="too late")),
        ev({"audit_id": None, "explanation": {"status": "ready", "tag": "names no id"}}),
        ev(ready(odd, tag="odd")),
        ev(ready("plain-id", tag="plain")),
        ev(ready(other(3), tag="second")),
        ev({"data": ready(ME)}),  # nested one level down: not a match
        *others(50, start=200),
    ])
    records = [record_of(store, keyring, i) for i in ids]
    records += [{**records[0], "audit_id": None}, {**records[0], "seq": str(records[0]["seq"])},
                {"seq": 0, "audit_id": other(3)}, {"seq": records[-1]["seq"], "audit_id": 17}]
    expected = [None, ready(other(3), tag="first")["explanation"], None, None, ready(odd, tag="odd")["explanation"],
                ready("plain-id", tag="plain")["explanation"],
                {"status": "ready", "tag": "names no id"}, None, ready(other(3), tag="first")["explanation"], None]
    for r in readers(store, keyring):
        for rec, want in zip(records, expected, strict=True):
            for scan in (DEFERRED_SCAN, 3, 60):
                assert r.deferred_explanation(rec, scan=scan) == reference(r, rec, scan=scan), (rec, scan)
            assert r.deferred_explanation(rec) == want, rec


@pytest.mark.parametrize("cache_keys", [True, False])
def test_one_key_query_per_page(store: AuditStore, keyring: Keyring, cache_keys: bool,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The data keys come a page at a time, not one query per event (the admin endpoint's reader caches none)."""
    w = AuditWriter(store, keyring)
    w.append_now([exchange(ME, keyring), *others(2 * PREFETCH + 10)])
    rec = record_of(store, keyring, ME)
    calls = {"one": 0, "many": 0}
    one, many = store.get_data_key, store.get_data_keys

    def get_one(key_id: str) -> Any:
        calls["one"] += 1
        return one(key_id)

    def get_many(key_ids: Any) -> Any:
        calls["many"] += 1
        return many(key_ids)

    monkeypatch.setattr(store, "get_data_key", get_one)
    monkeypatch.setattr(store, "get_data_keys", get_many)
    assert AuditReader(store, keyring, cache_keys=cache_keys).deferred_explanation(rec) is None
    assert calls["one"] == 0 and calls["many"] <= 3
