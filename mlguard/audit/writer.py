"""Group commit: one writer thread batches pending records from all requests into one transaction.

Why: one fsync per record caps SQLite near 5,000 records/s here; one fsync per batch of concurrent requests
keeps every request's durability (its future resolves only after COMMIT returned) at many times that rate.

The thread also signs checkpoints every N records and every T seconds even when idle, and writes gap records:
a record that could not be written (async queue full under fail_open, or a failed batch) is listed by audit id
in a clear ``gap`` record once the store takes writes again, followed at once by a signed checkpoint.
Failures are never swallowed: the waiting requests get AuditUnavailable, and the error is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from mlguard.audit.chain import Witness, link, make_checkpoint
from mlguard.audit.record import Pending, event
from mlguard.audit.seal import Sealer
from mlguard.audit.store.base import AuditStore, RecordRow
from mlguard.errors import AuditUnavailable, MLGuardError
from mlguard.ids import uuid7
from mlguard.keys import KeyProvider

log = logging.getLogger("mlguard.audit.writer")
MAX_BATCH = 2048
GAP_IDS = 1000

AsyncWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]"]
Waiter = Future[int] | AsyncWaiter | None
"""Who waits for a record: a thread (concurrent Future), an event loop (resolved in one wake-up per batch and
loop, instead of one cross-thread call per record), or nobody (async durability)."""


class AuditWriter:
    def __init__(self, store: AuditStore, keys: KeyProvider, *, sealer: Sealer | None = None,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 60.0, witness: Path | None = None,
                 queue_size: int = 10_000) -> None:
        self.store = store
        self.keys = keys
        self.sealer = sealer or Sealer(keys)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.witness = Witness(witness) if witness is not None else None
        # The queue: a deque (append/popleft are atomic) plus a condition used only to wake a sleeping writer.
        # queue.Queue took a lock and a notify per record on both sides, several microseconds of GIL time each.
        self._dq: deque[tuple[Pending, Waiter] | None] = deque()
        self._maxsize = queue_size
        self._cv = threading.Condition(threading.Lock())
        self._sleeping = False
        self._gap_lock = threading.Lock()
        self._gaps: list[tuple[str, str]] = []
        self._since_cp = 0
        self._last_cp = time.monotonic()
        self._thread: threading.Thread | None = None
        self.stats: dict[str, Any] = {"batches": 0, "records": 0, "errors": 0, "checkpoints": 0, "gaps": 0}
        store.put_public_keys(keys.public_keys())

    # ------------------------------------------------------------------ producer side (any thread)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlguard-audit-writer", daemon=True)
            self._thread.start()

    def submit(self, item: Pending, *, wait: bool = True) -> Future[int] | None:
        """Queue a record; with ``wait`` the future resolves with its seq after COMMIT. Full -> AuditUnavailable."""
        fut: Future[int] | None = Future() if wait else None
        self._put((item, fut))
        return fut

    def submit_async(self, item: Pending) -> asyncio.Future[int]:
        """Queue a record from a coroutine; await the result (its seq, after COMMIT). Full -> AuditUnavailable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._put((item, (loop, fut)))
        return fut

    def _put(self, entry: tuple[Pending, Waiter] | None, *, force: bool = False) -> None:
        """Append to the queue (bounded, softly: racing producers may overshoot by a few) and wake the writer
        if it sleeps. The writer sets ``_sleeping`` under the condition and looks at the queue again before it
        waits, so an append is never missed."""
        if not force and len(self._dq) >= self._maxsize:
            raise AuditUnavailable("audit queue is full")
        self._dq.append(entry)
        if self._sleeping:
            with self._cv:
                self._cv.notify()

    def note_gap(self, audit_id: str, reason: str) -> None:
        """Remember a record that was served but not written; a gap record will list it."""
        with self._gap_lock:
            self._gaps.append((audit_id, reason))

    @property
    def depth(self) -> int:
        return len(self._dq)

    def close(self, timeout: float = 30.0) -> None:
        """Drain the queue, write pending gaps and a final checkpoint, stop the thread."""
        if self._thread is not None:
            self._put(None, force=True)
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ synchronous use (CLI, tests)

    def append_now(self, items: list[Pending]) -> list[int]:
        """Append in the calling thread (no writer thread running): used by the CLI."""
        return self._commit([(p, None) for p in items])

    def checkpoint(self) -> dict[str, Any]:
        seq, head = self.store.head()
        cp = make_checkpoint(self.keys, seq, head)
        self.store.add_checkpoint(cp)
        if self.witness is not None:
            self.witness.append(cp)
        self._since_cp = 0
        self._last_cp = time.monotonic()
        self.stats["checkpoints"] += 1
        return cp

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        stop = False
        while not stop:
            timeout = max(0.0, self._last_cp + self.checkpoint_seconds - time.monotonic())
            batch, stop = self._take(timeout)
            if batch:
                self._commit_and_resolve(batch)
            self._housekeeping(force=stop)

    def _take(self, timeout: float) -> tuple[list[tuple[Pending, Waiter]], bool]:
        """Everything queued (up to MAX_BATCH), waiting up to ``timeout`` for the first record; and whether the
        stop sentinel was seen."""
        dq = self._dq
        if not dq:
            with self._cv:
                self._sleeping = True
                try:
                    if not dq:
                        self._cv.wait(timeout)
                finally:
                    self._sleeping = False
        batch: list[tuple[Pending, Waiter]] = []
        while dq and len(batch) < MAX_BATCH:
            entry = dq.popleft()
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _commit_and_resolve(self, batch: list[tuple[Pending, Waiter]]) -> None:
        try:
            seqs: list[int | BaseException] = list(self._commit(batch))
        except Exception as exc:
            self.stats["errors"] += 1
            err = exc if isinstance(exc, AuditUnavailable) else AuditUnavailable(
                f"audit append failed: {type(exc).__name__}" + (f": {exc}" if isinstance(exc, MLGuardError) else ""))
            log.error("audit batch failed", extra={"records": len(batch), "error": str(err)})
            for item, waiter in batch:
                if waiter is None:
                    self.note_gap(item.audit_id, "store_error")
            seqs = [err] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]] = {}
        for (_, waiter), result in zip(batch, seqs, strict=True):
            if isinstance(waiter, Future):
                if not waiter.done():
                    if isinstance(result, BaseException):
                        waiter.set_exception(result)
                    else:
                        waiter.set_result(result)
            elif waiter is not None:
                by_loop.setdefault(waiter[0], []).append((waiter[1], result))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, results)

    def _commit(self, batch: list[tuple[Pending, Waiter]]) -> list[int]:
        items = [p for p, _ in batch]
        try:
            with self.store.write() as tx:
                seq0, prev = tx.head()
                sealed = self.sealer.seal_batch(tx, items, seq0, prev, link)
                tx.insert_records([RecordRow(seq, p.audit_id, p.ts, p.kind, p.route, p.subject, blob, h)
                                   for p, (seq, blob, h) in zip(items, sealed, strict=True)])
                tx.set_head(sealed[-1][0], sealed[-1][2])
        except BaseException:
            self.sealer.drop_slots()  # keys created in the rolled-back transaction must not be used again
            raise
        self.stats["batches"] += 1
        self.stats["records"] += len(items)
        self._since_cp += len(items)
        return [s for s, _, _ in sealed]

    def _housekeeping(self, *, force: bool = False) -> None:
        gaps: list[tuple[str, str]] = []
        try:
            with self._gap_lock:
                gaps, self._gaps = self._gaps, []
            if gaps:
                self._write_gap(gaps)
            due = time.monotonic() - self._last_cp >= self.checkpoint_seconds
            if force or due or self._since_cp >= self.checkpoint_every:
                self.checkpoint()
        except Exception as exc:
            self.stats["errors"] += 1
            if gaps:
                with self._gap_lock:
                    self._gaps[:0] = gaps
            # retry in a second, not in a tight loop against a store that is down
            self._last_cp = time.monotonic() - self.checkpoint_seconds + 1.0
            log.error("audit housekeeping failed", extra={"error": type(exc).__name__})

    def _write_gap(self, gaps: list[tuple[str, str]]) -> None:
        reasons: dict[str, int] = {}
        for _, r in gaps:
            reasons[r] = reasons.get(r, 0) + 1
        data = {"count": len(gaps), "audit_ids": [a for a, _ in gaps[:GAP_IDS]], "reasons": reasons,
                "truncated": len(gaps) > GAP_IDS}
        self._commit([(event(str(uuid7()), time.time(), "gap", data, clear=True), None)])
        self.stats["gaps"] += len(gaps)
        log.warning("audit gap recorded", extra={"count": len(gaps)})
        self.checkpoint()  # the gap is covered by a signature at once


def _resolve(results: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """Runs on the waiting event loop: settle every future of one batch in one wake-up."""
    for fut, result in results:
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
