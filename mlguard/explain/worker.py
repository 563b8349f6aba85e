"""Deferred explanations: a bounded queue, one background thread, concurrent requests batched into one call.

Why a thread and not the event loop: explainers are CPU-bound numpy/C code; a single worker keeps them from
competing with request handling for both cores, and batching amortises shap's per-call overhead over every
request that arrived while the previous batch ran. Why bounded: under overload the explanation is skipped with a
reason (the response says so) rather than memory growing without limit.

Results (inline and deferred) live in a bounded in-memory :class:`ResultStore` that the admin endpoint
``GET {prefix}/explanations/{audit_id}`` reads; the sealed audit record holds the inline ones, and a deferred one
is appended to the audit trail as an event when ready.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("mlguard.explain.worker")

Status = Literal["pending", "ready", "skipped", "failed"]


@dataclass(slots=True)
class Entry:
    """One explanation's state. ``public`` is what clients may see; ``private`` adds the inputs (render)."""

    status: Status
    route_index: int
    public: dict[str, Any] = field(default_factory=dict)
    private: dict[str, Any] = field(default_factory=dict)


PRIVATE_ONLY = frozenset({"inputs", "outcome"})
"""Members of an entry's private document that its public one leaves out (and nothing else differs)."""


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    """What a client may see of an explanation document: all but ``PRIVATE_ONLY``."""
    return {k: v for k, v in doc.items() if k not in PRIVATE_ONLY}

_Stored = tuple[Status, int, dict[str, Any], dict[str, Any] | None]
"""(status, route, private document with ``top`` as its length when derivable, public document or None when
it is the private one's ``public_view``)."""


def top_contributions(contributions: dict[str, float], k: int) -> list[dict[str, Any]]:
    """The ``top`` member as ``RouteExplainer.explain_many`` writes it: largest absolute first, then by name."""
    ranked = sorted(contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    return [{"feature": f, "contribution": v} for f, v in ranked[:k]]


def _pack(entry: Entry) -> _Stored:
    """Keep one document per entry: the public one is the private one minus the inputs and outcome, and ``top``
    is a function of ``contributions``. Measured by the soak (bench/soak.py): the 10,000 entries a server keeps
    held the public copy and the top list too, about 1.9 KB of each entry's 3.9. Anything not derivable this
    way is kept as it is."""
    private, public = entry.private, entry.public
    derivable = public_view(private) == public
    top, contributions = private.get("top"), private.get("contributions")
    if (derivable and isinstance(top, list) and isinstance(contributions, dict)
            and top_contributions(contributions, len(top)) == top):
        private = {**private, "top": len(top)}
    return entry.status, entry.route_index, private, None if derivable else public


def _unpack(stored: _Stored) -> Entry:
    status, route_index, private, public = stored
    top, contributions = private.get("top"), private.get("contributions")
    if isinstance(top, int) and isinstance(contributions, dict):
        private = {**private, "top": top_contributions(contributions, top)}
    if public is None:
        public = public_view(private)
    return Entry(status, route_index, public, private)


class ResultStore:
    """Bounded, thread-safe map audit id -> Entry; the oldest entries are forgotten first. Entries are kept
    packed (one document each, see ``_pack``); ``get`` returns a new Entry equal to the one put."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, audit_id: str, entry: Entry) -> None:
        stored = _pack(entry)
        with self._lock:
            self._items[audit_id] = stored
            self._items.move_to_end(audit_id)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def discard(self, audit_id: str) -> None:
        with self._lock:
            self._items.pop(audit_id, None)

    def get(self, audit_id: str) -> Entry | None:
        with self._lock:
            stored = self._items.get(audit_id)
        return None if stored is None else _unpack(stored)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(slots=True)
class Job:
    """One deferred explanation: which route, which input row, and what the finished document needs."""

    audit_id: str
    route_index: int
    values: dict[str, float]
    context: dict[str, Any] = field(default_factory=dict)


ProcessBatch = Callable[[list[Job]], list[Entry]]
OnReady = Callable[[Job, Entry], None]


class DeferredWorker:
    """Runs ``process`` on batches of queued jobs in one daemon thread; stores each result in ``store``.

    After the first job of a batch arrives the thread waits ``linger_s`` before draining the queue.

    ``process`` gets jobs that may belong to several routes and returns one Entry per job, in order.
    """

    def __init__(self, process: ProcessBatch, store: ResultStore, *, queue_size: int, batch_max: int,
                 on_ready: OnReady | None = None, linger_s: float = 0.0) -> None:
        self._process = process
        self._linger_s = linger_s
        self._store = store
        self._batch_max = batch_max
        self._on_ready = on_ready
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="mlguard-explain", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full or the worker is closed (the caller skips with a reason)."""
        if self._closed:
            return False
        self._store.put(job.audit_id, Entry("pending", job.route_index,
                                            {"status": "pending", "deferred": True}))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._store.discard(job.audit_id)
            return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the queued jobs are done (or ``timeout`` passes)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("explain worker queue full at shutdown; pending explanations dropped")
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if self._linger_s > 0:
                # Let the request that queued this job send its response first: shap's C code holds the GIL,
                # so starting at once would delay that response by the whole explainer call. It also lets
                # concurrent requests join the batch.
                time.sleep(self._linger_s)
            batch = [first]
            stop = False
            while len(batch) < self._batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[Job]) -> None:
        try:
            entries = self._process(batch)
        except Exception as exc:  # one bad batch must not kill the worker; each job is marked failed
            log.error("deferred explanation batch failed", extra={"error": type(exc).__name__,
                                                                  "jobs": len(batch)})
            reason = f"the explainer raised {type(exc).__name__}"
            entries = [Entry("failed", j.route_index, {"status": "failed", "deferred": True, "reason": reason})
                       for j in batch]
        for job, entry in zip(batch, entries, strict=True):
            self._store.put(job.audit_id, entry)
            if self._on_ready is not None:
                try:
                    self._on_ready(job, entry)
                except Exception as exc:
                    log.warning("deferred explanation callback failed", extra={"error": type(exc).__name__})
