"""The deferred worker: bounded, batching, pending until done, failures contained."""

from __future__ import annotations

import threading
import time

from mlguard.explain.worker import DeferredWorker, Entry, Job, ResultStore


def _wait(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.002)


def test_concurrent_jobs_are_batched_and_pending_until_done() -> None:
    gate = threading.Event()
    calls: list[list[str]] = []

    def process(jobs: list[Job]) -> list[Entry]:
        calls.append([j.audit_id for j in jobs])
        gate.wait(5)
        return [Entry("ready", j.route_index, {"status": "ready", "id": j.audit_id}) for j in jobs]

    store = ResultStore(100)
    ready: list[str] = []
    worker = DeferredWorker(process, store, queue_size=50, batch_max=8,
                            on_ready=lambda job, entry: ready.append(job.audit_id))
    assert worker.submit(Job("a", 0, {"x": 1.0}))
    _wait(lambda: calls)  # the first job is being processed alone; the next ones queue up
    for i in range(10):
        assert worker.submit(Job(f"b{i}", 0, {"x": float(i)}))
    entry = store.get("b0")
    assert entry is not None and entry.status == "pending"
    gate.set()
    _wait(lambda: len(ready) == 11)
    worker.close()
    assert calls[0] == ["a"]
    assert calls[1] == [f"b{i}" for i in range(8)]  # one explainer call for the queued requests, up to 8
    assert calls[2] == ["b8", "b9"]
    assert all(store.get(k).status == "ready" for k in ["a", *[f"b{i}" for i in range(10)]])  # type: ignore[union-attr]


def test_full_queue_refuses() -> None:
    gate = threading.Event()

    started = threading.Event()

    def process(jobs: list[Job]) -> list[Entry]:
        started.set()
        gate.wait(5)
        return [Entry("ready", 0, {}) for _ in jobs]

    store = ResultStore(10)
    worker = DeferredWorker(process, store, queue_size=2, batch_max=4)
    assert worker.submit(Job("0", 0, {}))
    assert started.wait(5)
    results = [worker.submit(Job(str(i), 0, {})) for i in range(1, 5)]
    assert results == [True, True, False, False]  # 1 running + 2 queued
    assert store.get("3") is None
    gate.set()
    worker.close()
    assert worker.submit(Job("late", 0, {})) is False


def test_a_failing_batch_marks_its_jobs_failed_and_the_worker_goes_on() -> None:
    n = {"calls": 0}

    def process(jobs: list[Job]) -> list[Entry]:
        n["calls"] += 1
        if n["calls"] == 1:
            raise ValueError("secret 12345")
        return [Entry("ready", 0, {"status": "ready"}) for _ in jobs]

    store = ResultStore(10)
    worker = DeferredWorker(process, store, queue_size=10, batch_max=1)
    worker.submit(Job("bad", 0, {}))
    worker.submit(Job("good", 0, {}))
    _wait(lambda: (e := store.get("good")) is not None and e.status == "ready")
    worker.close()
    bad = store.get("bad")
    assert bad is not None and bad.status == "failed"
    assert bad.public["reason"] == "the explainer raised ValueError" and "12345" not in str(bad.public)


def test_result_store_is_bounded() -> None:
    store = ResultStore(3)
    for i in range(5):
        store.put(str(i), Entry("ready", 0))
    assert len(store) == 3 and store.get("0") is None and store.get("4") is not None


def test_result_store_keeps_one_document_and_gives_back_equal_entries() -> None:
    """Packed: the public document and ``top`` are derived again on get; what cannot be derived is kept."""
    from mlguard.explain.worker import Entry, ResultStore, top_contributions

    contributions = {"b": -0.2, "a": 0.2, "c": 1e-5, "d": -0.7}
    doc = {"status": "ready", "contributions": contributions, "top": top_contributions(contributions, 3),
           "base_value": 0.1}
    cases = {
        "ready": Entry("ready", 0, dict(doc), {**doc, "inputs": {"a": 1.0}, "outcome": {"favorable": False}}),
        "deferred": Entry("ready", 1, {**doc, "deferred": True}, {**doc, "deferred": True, "outcome": None}),
        "failed": Entry("failed", 0, {"status": "failed", "reason": "x"}),  # private empty: not derivable
        "odd top": Entry("ready", 0, {**doc, "top": [{"feature": "z", "contribution": 9.0}]},
                         {**doc, "top": [{"feature": "z", "contribution": 9.0}]}),
        "public differs": Entry("ready", 0, {**doc, "extra": 1}, dict(doc)),
    }
    store = ResultStore(10)
    for key, entry in cases.items():
        store.put(key, entry)
    for key, entry in cases.items():
        got = store.get(key)
        assert got is not None and got == entry, key
        assert got is not entry
    packed = store._items["ready"]
    assert packed[2]["top"] == 3 and packed[3] is None  # one document, top as its length
    assert store._items["odd top"][2]["top"] == [{"feature": "z", "contribution": 9.0}]
    assert store._items["public differs"][3] == {**doc, "extra": 1}
    assert top_contributions(contributions, 3) == [{"feature": "d", "contribution": -0.7},
                                                   {"feature": "a", "contribution": 0.2},
                                                   {"feature": "b", "contribution": -0.2}]
