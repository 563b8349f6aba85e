"""Group commit: one writer thread batches pending records from all requests into one transaction.

Why: one fsync per record caps SQLite near 5,000 records/s here; one fsync per batch of concurrent requests
keeps every request's durability (its future resolves only after COMMIT returned) at many times that rate.

The thread also signs checkpoints every N records and every T seconds even when idle, and writes gap records:
an exchange whose record could not be written (queue full, or a failed batch), whether its client was served
(fail_open, async durability) or refused (fail_closed), is listed by audit id in a clear ``gap`` record once the
store takes writes again, covered at once by a signed checkpoint. Why refused ones too: under fail_closed the
app has usually run (the record is written last), and the 503 carries an audit id; without a gap record that
id resolves to nothing and the trail never says the exchange happened.

Health: the writer keeps a cheap flag, set when a write to the store (a batch, a gap record, a checkpoint)
fails and cleared by the next one that commits, so ``{admin}/health`` answers without a query. After a failed
batch the housekeeping probes the store every second (a checkpoint), so an instance a load balancer took out
of service, and which therefore gets no traffic, still finds out that the store is back.
A checkpoint that falls due under traffic is signed and inserted inside the batch's own transaction, over the
head that transaction sets. Why: as a transaction of its own, after the batch was resolved, it cost a second
COMMIT and fsync, and each of its SQLite calls released the GIL and had to win it back from an event loop busy
with the batch just answered (up to the 5 ms switch interval each): 17-57 ms per checkpoint under load against
0.7 ms idle, a stall every 1,000 records that every request queued behind it waited out. Only idle time-based
checkpoints (and the last one at close) still take a transaction of their own.
Failures are never swallowed: the waiting requests get AuditUnavailable, and the error is logged.

A store that accepts a connection and then never answers (a PostgreSQL server stopped with SIGSTOP, a storage
volume hung, a network path that drops packets while the peer's kernel keeps acknowledging) would hold the thread
in the driver's read with no error at all, and every sync request behind it for ever. With ``write_timeout`` a
watchdog thread notices a transaction open longer than that and declares the store stalled: the waiters of that
batch get AuditUnavailable (whether it will commit is unknown), everything queued behind it and every record
submitted while it stays stalled gets Unrecorded (``store_timeout``: never sent, listed in a gap record later), and
health reports ``StoreTimeout``. The transaction itself cannot be taken back from the driver; when the store
answers again it ends (committed or failed) and the writer goes on as after any batch.

``pipeline=True`` (async durability) splits the work over two threads: the writer thread seals batch N+1
(Python, holding the GIL) while a committer thread runs batch N's INSERT and COMMIT (SQLite and the fsync,
which release the GIL), so a backlog drains at the rate of the slower side instead of the sum of both. The
writer thread seals *speculatively*, after the head it predicts (the end of the batch it sealed before); the
committer checks the prediction inside the write transaction (head seq and hash, key generation, the sealer's
slot epoch) and re-seals the batch there when it does not hold (another process appended, a shred, a failed
batch): the chain and the keys are only ever decided in the transaction, as before. Sync durability keeps the
one-thread path: its closed loop has nothing to overlap, and a hand-off would only add latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlguard.audit.chain import Witness, link, make_checkpoint
from mlguard.audit.record import Pending, event
from mlguard.audit.seal import KeyRow, Sealer
from mlguard.audit.store.base import AuditStore, RecordRow, WriteTx
from mlguard.errors import AuditError, AuditUnavailable, MLGuardError
from mlguard.ids import uuid7
from mlguard.keys import KeyProvider

_STOP = object()

log = logging.getLogger("mlguard.audit.writer")
MAX_BATCH = 2048
GAP_IDS = 1000  # audit ids listed per gap record (several records when more)
GAP_MEMORY = 100_000  # ids held for the next gap records; beyond it only counted (a long outage is bounded)
SEAL_CHUNK = 128  # records sealed between two GIL yields of the pipelined writer (about 1.2 ms)

AsyncWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]"]
Waiter = Future[int] | AsyncWaiter | None
"""Who waits for a record: a thread (concurrent Future), an event loop (resolved in one wake-up per batch and
loop, instead of one cross-thread call per record), or nobody (async durability)."""


class StoreTimeout(AuditUnavailable):
    """The store has held a write transaction open longer than ``write_timeout`` (the health flag's error)."""


class Unrecorded(AuditUnavailable):
    """A record known not to be written; ``reason`` says why, as its gap record will: ``queue_full`` (the
    bounded queue was full, nothing reached the store) or ``store_error`` (its batch failed and was rolled
    back; ``store_timeout``: queued or submitted while the store was stalled, never sent). A plain
    AuditUnavailable from the writer means it does not know (it failed unexpectedly, or the batch was still in
    the store's hands when the write timeout passed)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AuditWriter:
    def __init__(self, store: AuditStore, keys: KeyProvider, *, sealer: Sealer | None = None,
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 60.0, witness: Path | None = None,
                 queue_size: int = 10_000, pipeline: bool = False, write_timeout: float | None = None) -> None:
        self.store = store
        self.write_timeout = write_timeout
        self.pipeline = pipeline
        self.keys = keys
        self.sealer = sealer or Sealer(keys)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.witness = Witness(witness) if witness is not None else None
        if self.witness is not None:
            try:
                self.witness.ensure()
            except AuditError as exc:  # e.g. its volume not mounted yet: appends are retried, as at run time
                log.warning("audit witness file cannot be created yet", extra={"error": type(exc).__name__})
        # The queue: a deque (append/popleft are atomic) plus a condition used only to wake a sleeping writer.
        # queue.Queue took a lock and a notify per record on both sides, several microseconds of GIL time each.
        self._dq: deque[tuple[Pending, Waiter] | None] = deque()
        self._maxsize = queue_size
        self._cv = threading.Condition(threading.Lock())
        self._sleeping = False
        # Records a coroutine submitted, per event loop, until that loop's next iteration hands them over
        # (submit_async). Touched only by the loop that owns the list.
        self._from_loops: dict[asyncio.AbstractEventLoop, list[tuple[Pending, Waiter]]] = {}
        self._gap_lock = threading.Lock()
        self._gaps: list[tuple[str, str, bool]] = []  # (audit_id, reason, client refused)
        self._unlisted: dict[tuple[str, bool], int] = {}  # noted beyond GAP_MEMORY: counted, not listed
        # Health (read by {admin}/health across threads, no lock): monotonic time of the first failed write
        # since the last one that committed, and that failure's class; None while writes succeed.
        self._failing_since: float | None = None
        self._failing_error = ""
        self._since_cp = 0
        self._last_cp = time.monotonic()
        self._last_cp_signed = self._last_cp  # only ever moved by a checkpoint written (``_last_cp`` also by a retry)
        self._thread: threading.Thread | None = None
        self._committer: threading.Thread | None = None
        # The write transaction in the store's hands: (monotonic start, its batch), set by the thread that runs
        # it; read by the watchdog. ``_stalled``: the watchdog found it older than write_timeout (submissions are
        # refused at once until it ends).
        self._inflight: tuple[float, list[tuple[Pending, Waiter]]] | None = None
        self._stalled = False
        self._closed = False  # close() was called: nothing is taken any more (a request would wait for ever)
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        # Pipeline hand-off: at most two sealed batches wait for the committer (bounded memory; the writer
        # thread then blocks, and the request-side queue fills as before).
        self._handoff: queue.Queue[_Job | object] = queue.Queue(maxsize=2)
        # The head the writer thread seals after: (seq, chain hash, key generation), or None when unknown
        # (start, after a failure): the committer then seals the batch inside its transaction. Guarded by
        # sealer.write_lock.
        self._pred: tuple[int, bytes, int] | None = None
        self._committed: tuple[int, bytes, int] | None = None  # the same, as last committed (committer side)
        self.stats: dict[str, Any] = {"batches": 0, "records": 0, "errors": 0, "checkpoints": 0, "gaps": 0,
                                      "resealed": 0}
        store.put_public_keys(keys.public_keys())

    # ------------------------------------------------------------------ producer side (any thread)

    def start(self) -> None:
        if self._thread is None:
            if self.pipeline:
                self._committer = threading.Thread(target=self._run_committer, name="mlguard-audit-committer",
                                                   daemon=True)
                self._committer.start()
            self._thread = threading.Thread(target=self._run_pipelined if self.pipeline else self._run,
                                            name="mlguard-audit-writer", daemon=True)
            self._thread.start()
            if self.write_timeout is not None:
                self._watchdog = threading.Thread(target=self._watch, args=(self.write_timeout,),
                                                  name="mlguard-audit-watchdog", daemon=True)
                self._watchdog.start()

    def submit(self, item: Pending, *, wait: bool = True) -> Future[int] | None:
        """Queue a record; with ``wait`` the future resolves with its seq after COMMIT. Full -> AuditUnavailable."""
        if self._stalled or self._closed:
            raise _stalled_error() if self._stalled else _closed_error()
        fut: Future[int] | None = Future() if wait else None
        self._put((item, fut))
        return fut

    def submit_async(self, item: Pending) -> asyncio.Future[int]:
        """Queue a record from a coroutine; await the result (its seq, after COMMIT). Full -> AuditUnavailable.

        The records an event loop submits during one of its iterations are handed to the writer together, by one
        callback scheduled for the loop's next iteration (``_hand_over``), instead of one by one. Why: code that
        releases the GIL on the request path (numpy, in an inline explanation) let the writer, woken by the first
        record, take the GIL at once and commit it nearly alone: 1.6-2.2 records per COMMIT and fsync with 32
        concurrent requests against 16 without the explanation, four times the writer's CPU per record. Handed
        over per iteration, the same load commits about 32 per batch (in-process, bench/audit.py's stage case
        and the end-to-end driver). The callback runs after the callbacks already ready; when the loop has
        nothing else to do it runs at once, so a lone request waits no longer than before."""
        if self._stalled or self._closed:
            raise _stalled_error() if self._stalled else _closed_error()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        pending = self._from_loops.get(loop)
        if pending is None:
            pending = self._from_loops[loop] = []
            loop.call_soon(self._hand_over, loop)
        if len(self._dq) + len(pending) >= self._maxsize:
            raise Unrecorded("audit queue is full", "queue_full")
        pending.append((item, (loop, fut)))
        return fut

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: queue what it submitted since the last hand-over, and wake the writer once."""
        entries = self._from_loops.pop(loop, None)
        if entries:
            if self._stalled or self._closed:  # submitted just before the watchdog's verdict or close()
                err = _stalled_error() if self._stalled else _closed_error()
                self._resolve_batch(entries, [err] * len(entries))
                return
            self._dq.extend(entries)
            self._wake()

    def _put(self, entry: tuple[Pending, Waiter] | None, *, force: bool = False) -> None:
        """Append to the queue (bounded, softly: racing producers may overshoot by a few) and wake the writer
        if it sleeps. The writer sets ``_sleeping`` under the condition and looks at the queue again before it
        waits, so an append is never missed."""
        if not force and len(self._dq) >= self._maxsize:
            raise Unrecorded("audit queue is full", "queue_full")
        self._dq.append(entry)
        self._wake()

    def _wake(self) -> None:
        """Wake the writer if it sleeps."""
        if self._sleeping:
            with self._cv:
                self._cv.notify()
                # One wake-up is enough: the writer takes everything queued when it runs. Without this, every
                # record queued before the woken writer gets the GIL back (often a whole burst of requests)
                # notified again, a lock and a Python-level notify each.
                self._sleeping = False

    def note_gap(self, audit_id: str, reason: str, *, refused: bool = False) -> None:
        """Remember an exchange whose record was not written; a gap record will list it with ``reason`` and
        whether its client was served or ``refused``. Past GAP_MEMORY ids waiting (a long outage) the rest are
        only counted, so memory stays bounded; the gap record says how many it could not list."""
        with self._gap_lock:
            if len(self._gaps) < GAP_MEMORY:
                self._gaps.append((audit_id, reason, refused))
            else:
                key = (reason, refused)
                self._unlisted[key] = self._unlisted.get(key, 0) + 1

    def health(self) -> dict[str, Any] | None:
        """None while the store takes writes; else the failing write's error class and for how long (seconds).
        Why a flag and not a query: a load balancer polls health often, and a query would add load to the very
        store that is struggling; the flag is as fresh as the last write (and the one-second probe after a
        failure)."""
        since = self._failing_since
        if since is None:
            return None
        return {"error": self._failing_error, "failing_seconds": round(time.monotonic() - since, 3)}

    def _write_failed(self, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self._failing_error = type(exc).__name__

    def _write_succeeded(self) -> None:
        self._failing_since = None

    @property
    def depth(self) -> int:
        return len(self._dq)

    @property
    def seconds_since_checkpoint(self) -> float:
        """Seconds since this writer last wrote a checkpoint (since it was built, before the first one)."""
        return time.monotonic() - self._last_cp_signed

    def close(self, timeout: float = 30.0) -> None:
        """Drain the queue, write pending gaps and a final checkpoint, stop the thread."""
        self._closing.set()
        if self._thread is not None:
            self._closed = True
            deadline = time.monotonic() + timeout
            self._put(None, force=True)
            self._thread.join(timeout)
            self._thread = None
            if self._committer is not None:
                self._committer.join(max(0.0, deadline - time.monotonic()))
                self._committer = None

    # ------------------------------------------------------------------ the watchdog (write_timeout)

    def _watch(self, timeout: float) -> None:
        """Declare the store stalled once a transaction has been in its hands longer than ``timeout``: answer
        that batch's waiters (unknown outcome) and fail what is queued behind it (never sent). Checks four times
        per timeout, at most once a second: the cost is one attribute read."""
        interval = min(1.0, timeout / 4)
        while not self._closing.wait(interval):
            inflight = self._inflight
            if inflight is None or self._stalled or time.monotonic() - inflight[0] < timeout:
                continue
            self._stalled = True
            exc = StoreTimeout(f"the audit store has not answered a write for {timeout:g} s (audit.write_timeout)")
            self._write_failed(exc)
            self.stats["errors"] += 1
            log.error("audit store stalled: no answer within audit.write_timeout",
                      extra={"error": "StoreTimeout", "records": len(inflight[1])})
            with contextlib.suppress(Exception):
                self._resolve_batch(inflight[1], [AuditUnavailable(str(exc))] * len(inflight[1]))
            self._fail_queued()

    def _fail_queued(self) -> None:
        """Take every record queued (not yet sent) and fail it as ``store_timeout``: its waiter is answered,
        a record nobody waits for (async) is noted for a gap record. The stop sentinel stays queued."""
        taken: list[tuple[Pending, Waiter]] = []
        stop = False
        while True:
            try:
                entry = self._dq.popleft()
            except IndexError:
                break
            if entry is None:
                stop = True
            else:
                taken.append(entry)
        if stop:
            self._dq.append(None)
        # Batches sealed ahead and handed to the committer (async durability) are not sent either; dropping one
        # is safe: the batch after it finds its predicted head wrong and is re-sealed in its transaction.
        stop_job = False
        while True:
            try:
                job = self._handoff.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                taken += job.batch
            else:
                stop_job = True
            self._handoff.task_done()
        if stop_job:
            self._handoff.put(_STOP)
        for item, waiter in taken:
            if waiter is None:
                self.note_gap(item.audit_id, "store_timeout")
        with contextlib.suppress(Exception):
            self._resolve_batch(taken, [_stalled_error()] * len(taken))

    def _begin(self, batch: list[tuple[Pending, Waiter]]) -> None:
        self._inflight = (time.monotonic(), batch)

    def _end(self) -> None:
        self._inflight = None
        self._stalled = False

    # ------------------------------------------------------------------ synchronous use (CLI, tests)

    def append_now(self, items: list[Pending]) -> list[int]:
        """Append in the calling thread (no writer thread running): used by the CLI."""
        return self._commit([(p, None) for p in items])

    def checkpoint(self) -> dict[str, Any]:
        """Sign the store's head now, in a transaction of its own (idle, closing, the CLI)."""
        self._begin([])
        try:
            seq, head = self.store.head()
            cp = make_checkpoint(self.keys, seq, head)
            self.store.add_checkpoint(cp)
        except Exception as exc:
            self._end()
            self._write_failed(exc)
            raise
        self._end()
        self._write_succeeded()
        self._checkpoint_written(cp)
        if self.witness is not None:
            self.witness.append(cp)
        return cp

    def _checkpoint_due(self, n: int) -> bool:
        """Whether committing ``n`` more records reaches the record count or the interval of a checkpoint."""
        return (self._since_cp + n >= self.checkpoint_every
                or time.monotonic() - self._last_cp >= self.checkpoint_seconds)

    def _checkpoint_in(self, tx: WriteTx, seq: int, head: bytes) -> dict[str, Any] | None:
        """Sign (seq, head), the head ``tx`` is setting, and insert the checkpoint in ``tx``. A signing failure
        (a remote key provider down) costs this checkpoint, not the batch: it is logged, counted and retried by
        the housekeeping a second later; a database error fails the batch as any other would."""
        try:
            cp = make_checkpoint(self.keys, seq, head)
        except Exception as exc:
            self.stats["errors"] += 1
            self._last_cp = time.monotonic() - self.checkpoint_seconds + 1.0
            log.error("audit checkpoint signing failed", extra={"error": type(exc).__name__})
            return None
        tx.insert_checkpoint(cp)
        return cp

    def _checkpoint_written(self, cp: dict[str, Any]) -> None:
        self._since_cp = 0
        self._last_cp = self._last_cp_signed = time.monotonic()
        self.stats["checkpoints"] += 1

    def _after_commit(self, n: int, cp: dict[str, Any] | None) -> None:
        """Counters after a committed batch of ``n`` records; the witness line of the checkpoint it held.

        The records are durable whatever the witness does: a witness that cannot be written is logged and
        counted, and the housekeeping writes a fresh checkpoint (store and witness) a second later, and every
        second until it can, instead of failing requests whose records are committed."""
        self._write_succeeded()
        self.stats["batches"] += 1
        self.stats["records"] += n
        self._since_cp += n
        if cp is None:
            return
        self._checkpoint_written(cp)
        if self.witness is not None:
            try:
                self.witness.append(cp)
            except Exception as exc:
                self.stats["errors"] += 1
                self._last_cp = time.monotonic() - self.checkpoint_seconds + 1.0
                log.error("audit witness append failed", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[tuple[Pending, Waiter]] = []
            try:
                timeout = max(0.0, self._last_cp + self.checkpoint_seconds - time.monotonic())
                batch, stop = self._take(timeout)
                if batch:
                    self._commit_and_resolve(batch)
                self._housekeeping(force=stop)
            except Exception as exc:  # a bug: see _abandon
                self._abandon("audit writer failed", batch, exc)

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
            seqs = self._failed(batch, exc)
        self._resolve_batch(batch, seqs)

    @staticmethod
    def _resolve_batch(batch: list[tuple[Pending, Waiter]], seqs: list[int | BaseException]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]] = {}
        for (_, waiter), result in zip(batch, seqs, strict=True):
            if isinstance(waiter, Future):
                # InvalidStateError: cancelled by its caller between done() and here; nobody waits for it
                with contextlib.suppress(InvalidStateError):
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

    def _commit(self, batch: list[tuple[Pending, Waiter]], *, checkpoint: bool = False) -> list[int]:
        """Seal and commit ``batch`` in one transaction (with a checkpoint when one is due, or ``checkpoint``)."""
        items = [p for p, _ in batch]
        cp = None
        self._begin(batch)
        try:
            with self.store.write() as tx:
                seq0, prev = tx.head()
                gen = tx.key_generation()
                sealed = self.sealer.seal_batch(tx, items, seq0, prev, link)
                tx.insert_records([RecordRow(seq, p.audit_id, p.ts, p.kind, p.route, p.subject, blob, h)
                                   for p, (seq, blob, h) in zip(items, sealed, strict=True)])
                tx.set_head(sealed[-1][0], sealed[-1][2])
                if checkpoint or self._checkpoint_due(len(items)):
                    cp = self._checkpoint_in(tx, sealed[-1][0], sealed[-1][2])
        except BaseException as exc:
            self._end()
            self._write_failed(exc)
            self._forget_prediction()
            raise
        self._end()
        if self.pipeline:
            with self.sealer.write_lock:
                self._committed = (sealed[-1][0], sealed[-1][2], gen)
                self._pred = None  # the writer thread resynchronises on the committed head
        self._after_commit(len(items), cp)
        return [s for s, _, _ in sealed]

    def _forget_prediction(self) -> None:
        """After a rolled-back batch: keys created for it (and for batches sealed after it) must not be used
        again, and the head is unknown until the next transaction reads it."""
        with self.sealer.write_lock:
            self.sealer.drop_slots()
            self._pred = None
            self._committed = None

    # ------------------------------------------------------------------ the pipeline (async durability)

    def _run_pipelined(self) -> None:
        """Writer thread: take a batch, seal it after the predicted head, hand it to the committer."""
        stop = False
        try:
            while not stop:
                batch, stop = self._take(0.5)
                if batch:
                    self._handoff.put(self._preseal(batch))
        finally:
            self._handoff.put(_STOP)

    def _preseal(self, batch: list[tuple[Pending, Waiter]]) -> _Job:
        """Seal ``batch`` after the predicted head. Without a prediction (start, or after the committer found
        one wrong) wait until every batch handed over is committed and take the committed head; when even
        that is unknown (nothing committed yet, or a failure), the committer seals this batch itself."""
        items = [p for p, _ in batch]
        sealer = self.sealer
        if self._pred is None:
            self._handoff.join()  # every batch sealed after the old prediction is committed or re-sealed
            with sealer.write_lock:
                self._pred = self._committed
        with sealer.write_lock:
            pred = self._pred
            if pred is None:
                return _Job(batch, None, [], 0, b"", 0, 0)
            try:
                sealed: list[tuple[int, bytes, bytes]] = []
                new: list[KeyRow] = []
                seq, prev, gen = pred
                for i in range(0, len(items), SEAL_CHUNK):
                    if i:
                        # Let the committer take the GIL: its SQLite calls release it and re-take it after
                        # each statement; without a voluntary yield every re-take waits for this thread's
                        # switch interval (5 ms). A yield costs tens of microseconds: every 8 records it
                        # measured 37,000 records/s, every 128 about 62,000, never about 55,000.
                        time.sleep(0)
                    part, more = sealer.seal_detached(items[i:i + SEAL_CHUNK], seq, prev, gen, link)
                    sealed += part
                    new += more
                    seq, prev = part[-1][0], part[-1][2]
            except Exception:  # e.g. a keyring error: the committer seals in its transaction and reports it
                self._pred = None
                return _Job(batch, None, [], 0, b"", 0, 0)
            epoch = sealer.epoch  # read after sealing: a generation change inside it started a new epoch
            self._pred = (seq, prev, gen)
        rows = [RecordRow(seq, p.audit_id, p.ts, p.kind, p.route, p.subject, blob, h)
                for p, (seq, blob, h) in zip(items, sealed, strict=True)]
        return _Job(batch, rows, new, pred[0], pred[1], pred[2], epoch)

    def _run_committer(self) -> None:
        """Committer thread: commit sealed batches in order, resolve their waiters, keep the housekeeping."""
        while True:
            timeout = max(0.0, self._last_cp + self.checkpoint_seconds - time.monotonic())
            try:
                job = self._handoff.get(timeout=timeout)
            except queue.Empty:
                self._housekeeping()
                continue
            try:
                if job is _STOP:
                    self._housekeeping(force=True)
                    return
                if isinstance(job, _Job):  # only jobs and _STOP are ever queued
                    try:
                        seqs: list[int | BaseException] = list(self._commit_job(job))
                    except Exception as exc:
                        seqs = self._failed(job.batch, exc)
                    self._resolve_batch(job.batch, seqs)
                    self._housekeeping()
            except Exception as exc:  # a bug: see _abandon (the writer thread would also wait for it forever)
                self._abandon("audit committer failed", job.batch if isinstance(job, _Job) else [], exc)
            finally:
                self._handoff.task_done()

    def _abandon(self, what: str, batch: list[tuple[Pending, Waiter]], exc: Exception) -> None:
        """After an unexpected error in a thread's loop (a bug, not a store error: those are failed batches):
        log and count it, answer whoever still waits for ``batch`` with AuditUnavailable, and let the thread go
        on. Why: a thread that ended would leave every later sync request waiting for a COMMIT that never
        comes, with no error, no 503 and no timeout. Whether the batch was committed is not known here, so no
        gap record is written (a waiter already answered keeps its answer: futures settle once)."""
        self.stats["errors"] += 1
        log.error(what, extra={"error": type(exc).__name__, "records": len(batch)})
        err = AuditUnavailable(f"{what}: {type(exc).__name__}")
        with contextlib.suppress(Exception):
            self._resolve_batch(batch, [err] * len(batch))

    def _failed(self, batch: list[tuple[Pending, Waiter]], exc: Exception) -> list[int | BaseException]:
        """A batch rolled back: every waiter gets Unrecorded (``store_error``: the stage lists it in a gap
        record, served or refused as its policy decides); records nobody waits for (async durability, already
        served) are listed here. The housekeeping then probes the store in a second (see the module docstring)."""
        self.stats["errors"] += 1
        detail = str(exc) if isinstance(exc, AuditUnavailable) else (
            f"audit append failed: {type(exc).__name__}" + (f": {exc}" if isinstance(exc, MLGuardError) else ""))
        err = Unrecorded(detail, "store_error")
        log.error("audit batch failed", extra={"records": len(batch), "error": str(err)})
        for item, waiter in batch:
            if waiter is None:
                self.note_gap(item.audit_id, "store_error")
        self._last_cp = time.monotonic() - self.checkpoint_seconds + 1.0
        return [err] * len(batch)

    def _commit_job(self, job: _Job) -> list[int]:
        """Commit a pre-sealed batch when its prediction holds in the transaction; re-seal it there otherwise."""
        if job.rows is None:
            return self._commit(job.batch)
        sealer = self.sealer
        self._begin(job.batch)
        try:
            with self.store.write() as tx:
                head = tx.head()
                gen = tx.key_generation()
                rows, new = job.rows, job.new
                if head != (job.seq0, job.prev) or gen != job.gen or job.epoch != sealer.epoch:
                    with sealer.write_lock:
                        if gen != job.gen or job.epoch != sealer.epoch:
                            # keys of this batch may be unknown to the store: start from fresh keys
                            sealer.drop_slots()
                            new = []
                        # else only the head moved (another process appended): the batch's new keys stay
                        # valid (their slots are live) and are inserted with the re-sealed records
                        items = [p for p, _ in job.batch]
                        sealed, more = sealer.seal_detached(items, head[0], head[1], gen, link)
                        new = new + more
                        self._pred = None  # batches sealed after this one are re-sealed too; then resync
                    rows = [RecordRow(seq, p.audit_id, p.ts, p.kind, p.route, p.subject, blob, h)
                            for p, (seq, blob, h) in zip(items, sealed, strict=True)]
                    self.stats["resealed"] += 1
                if new:
                    tx.insert_data_keys(new)
                tx.insert_records(rows)
                tx.set_head(rows[-1].seq, rows[-1].hash)
                cp = self._checkpoint_in(tx, rows[-1].seq, rows[-1].hash) if self._checkpoint_due(len(rows)) else None
        except BaseException as exc:
            self._end()
            self._write_failed(exc)
            self._forget_prediction()
            raise
        self._end()
        self._committed = (rows[-1].seq, rows[-1].hash, gen)
        self._after_commit(len(rows), cp)
        return [r.seq for r in rows]

    def _housekeeping(self, *, force: bool = False) -> None:
        gaps: list[tuple[str, str, bool]] = []
        unlisted: dict[tuple[str, bool], int] = {}
        try:
            with self._gap_lock:
                gaps, self._gaps = self._gaps, []
                unlisted, self._unlisted = self._unlisted, {}
            if gaps or unlisted:
                self._write_gap(gaps, unlisted)
            due = time.monotonic() - self._last_cp >= self.checkpoint_seconds
            if force or due or self._since_cp >= self.checkpoint_every:
                self.checkpoint()
        except Exception as exc:
            self.stats["errors"] += 1
            if gaps or unlisted:
                with self._gap_lock:
                    self._gaps[:0] = gaps
                    for key, n in unlisted.items():
                        self._unlisted[key] = self._unlisted.get(key, 0) + n
            # retry in a second, not in a tight loop against a store that is down
            self._last_cp = time.monotonic() - self.checkpoint_seconds + 1.0
            log.error("audit housekeeping failed", extra={"error": type(exc).__name__})

    def _write_gap(self, gaps: list[tuple[str, str, bool]], unlisted: dict[tuple[str, bool], int]) -> None:
        """Gap records for the exchanges noted since the last ones, in one transaction with a checkpoint (so
        they are covered by a signature at once): served and refused exchanges in separate records (``client``),
        at most GAP_IDS audit ids each, ``reasons`` counting why; ``truncated`` when some were only counted
        (``count`` includes them, ``audit_ids`` does not)."""
        now = time.time()
        items: list[tuple[Pending, Waiter]] = []
        for refused in (False, True):
            ids = [(a, r) for a, r, ref in gaps if ref is refused]
            extra = {r: n for (r, ref), n in unlisted.items() if ref is refused}
            chunks = [ids[i:i + GAP_IDS] for i in range(0, len(ids), GAP_IDS)] or ([[]] if extra else [])
            for i, chunk in enumerate(chunks):
                reasons: dict[str, int] = {}
                for _, r in chunk:
                    reasons[r] = reasons.get(r, 0) + 1
                last = i == len(chunks) - 1
                if last:  # the ids only counted go with the last record of their kind
                    for r, n in extra.items():
                        reasons[r] = reasons.get(r, 0) + n
                data = {"count": sum(reasons.values()), "audit_ids": [a for a, _ in chunk], "reasons": reasons,
                        "client": "refused" if refused else "served", "truncated": bool(last and extra)}
                items.append((event(str(uuid7()), now, "gap", data, clear=True), None))
        self._commit(items, checkpoint=True)
        refused_n = sum(1 for g in gaps if g[2]) + sum(n for (_, ref), n in unlisted.items() if ref)
        total = len(gaps) + sum(unlisted.values())
        self.stats["gaps"] += total
        log.warning("audit gap recorded", extra={"count": total, "refused": refused_n})


@dataclass(slots=True)
class _Job:
    """A batch on its way to the committer: sealed after (seq0, prev) at key generation ``gen`` and slot
    ``epoch``, or ``rows`` None when it must be sealed inside the transaction."""

    batch: list[tuple[Pending, Waiter]]
    rows: list[RecordRow] | None
    new: list[KeyRow]
    seq0: int
    prev: bytes
    gen: int
    epoch: int


def _closed_error() -> Unrecorded:
    return Unrecorded("the audit writer is closed (the app's lifespan shut the guard down): record not taken",
                      "writer_closed")


def _stalled_error() -> Unrecorded:
    return Unrecorded("the audit store is not answering (audit.write_timeout passed): record not sent",
                      "store_timeout")


def _resolve(results: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """Runs on the waiting event loop: settle every future of one batch in one wake-up."""
    for fut, result in results:
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
