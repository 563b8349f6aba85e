"""Reading a long audit log with several processes: verify and export split it into windows of sequence numbers.

Why processes: verifying and decrypting are Python work per record (read the row, hash or decrypt it) that holds
the GIL, so threads do not help, and a regulator's export of years of records should use every core.

How: the log's seq range is cut into windows ``(after, upto]`` of ``WINDOW`` records (the last one open-ended, so
rows past the head are read as a single reader reads them); each window is read by one worker process over its
own store connection, and the results come back **in window order**, so what the caller sees is exactly the
sequential stream. At most ``2 * jobs`` windows are in flight: memory stays bounded whatever the log's length.

Workers are forked (they inherit the keyring object without it ever being serialised); where ``fork`` is not
available, where the caller has other threads running, or the log is a single window, everything runs in the
calling process. Why not fork beside threads: the child gets a copy of every lock as it was, and one held by
another thread at that moment (a logging handler's, an allocator's) is held forever in the child, which then
hangs; Python 3.12+ warns of it ("This process is multi-threaded, use of fork() may lead to deadlocks in the
child", reproduced here on 3.12.1). The CLI runs single-threaded (its progress bars start no monitor thread);
a server or a notebook that verifies or exports in-process, with threads about, reads in its own process.
Workers never touch the parent's store connections (they open their own) and leave through ``os._exit`` (as
multiprocessing's workers do), so an inherited SQLite connection is never closed, or checkpointed, by a child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Generator, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from mlguard.audit.store.base import AuditStore, open_store
from mlguard.errors import MLGuardError

WINDOW = 4096
"""Records per window: large enough that a window's start-up (a query, a pickled result) is noise, small
enough that the first results arrive quickly and the windows in flight stay a few megabytes each."""
MAX_JOBS = 8

A = TypeVar("A")
R = TypeVar("R")

_STATE: dict[str, Any] = {}
"""What forked workers inherit (the store URL, a keyring, a task's arguments): set before they are forked.
One run at a time per process (the CLI, a benchmark): two threads running ``run_windows`` at once would share it."""
_STORE: list[AuditStore] = []  # the worker's own store, opened on its first window


def default_jobs() -> int:
    """Worker processes when the caller does not say: one per core, at most MAX_JOBS."""
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


def other_threads() -> bool:
    """Whether another Python thread is running in this process (forking then is not safe, see above)."""
    return threading.active_count() > 1


def can_fork() -> bool:
    """Whether workers can be forked safely: the platform has ``fork`` and no other Python thread is running."""
    return "fork" in multiprocessing.get_all_start_methods() and not other_threads()


def windows(upto: int, size: int = WINDOW) -> list[tuple[int, int | None]]:
    """Windows ``(after, upto]`` covering seq 1..``upto``, the last one open-ended (``None``)."""
    size = max(1, size)
    starts = list(range(0, max(upto, 0), size)) or [0]
    return [(a, a + size) for a in starts[:-1]] + [(starts[-1], None)]


def worker_store() -> AuditStore:
    """The store this worker reads: opened once per worker process from the inherited URL."""
    if not _STORE:
        _STORE.append(open_store(str(_STATE["url"]), create=False))
    return _STORE[0]


def state() -> dict[str, Any]:
    """What the parent set for this run's workers (``run_windows(..., state=...)``)."""
    return _STATE


def _call(fn: Callable[[A], R], task: A) -> tuple[bool, Any]:
    """Run ``fn`` in a worker; an exception comes back as a value that is sure to cross the pipe (one whose
    class cannot be rebuilt from its arguments would otherwise break the pool's result thread)."""
    try:
        return True, fn(task)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own object, round-tripped to test it)
        except Exception:
            exc = MLGuardError(f"{type(exc).__name__}: {exc}")
        return False, exc


def _serve(conn: Connection, fn: Callable[[Any], Any]) -> None:
    """A worker's loop: a task in, its result (or its error, see ``_call``) out, until ``None`` or EOF."""
    try:
        while (task := conn.recv()) is not None:
            conn.send(_call(fn, task))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        for store in _STORE:
            with contextlib.suppress(Exception):
                store.close()


def _forked(fn: Callable[[A], R], tasks: Sequence[A], n: int) -> Generator[R, None, None]:
    """``fn`` over ``tasks`` in ``n`` forked workers, each with its own pipe: task i goes to worker i % n, so
    reading the workers in turn gives the results in order, and at most two tasks wait per worker.

    Why not multiprocessing.Pool: its terminate() (what leaving a pool early does) can hang on the queue locks
    shared with the workers it kills (seen once in CI). Here nothing is shared but each worker's own pipe, an
    early stop kills the workers (they only read: SQLite and PostgreSQL drop what a dead reader held), and a
    normal end lets them leave by themselves."""
    ctx = multiprocessing.get_context("fork")
    procs: list[Any] = []
    conns: list[Connection] = []
    done = False
    try:
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, fn), daemon=True, name="mlguard-audit-reader")
            proc.start()
            child.close()
            procs.append(proc)
            conns.append(parent)
        sent = 0
        for sent in range(min(2 * n, len(tasks))):
            _send(conns[sent % n], tasks[sent])
        sent = min(2 * n, len(tasks))
        for i in range(len(tasks)):
            try:
                ok, result = conns[i % n].recv()
            except (EOFError, OSError):
                raise MLGuardError("an audit reader process ended unexpectedly") from None
            if sent < len(tasks):
                _send(conns[sent % n], tasks[sent])
                sent += 1
            if not ok:
                raise result
            yield result
        done = True
    finally:
        for conn, proc in zip(conns, procs, strict=False):
            if done:
                with contextlib.suppress(OSError):
                    conn.send(None)
            else:
                proc.kill()
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()


def _send(conn: Connection, task: Any) -> None:
    """Send a task to a worker. A worker that died (killed, out of memory) cannot take it: that is reported when
    its next result is due (its pipe's EOF, in task order), not as a BrokenPipeError from whichever send came
    first (which raced with the worker's death: a flaky error that named no cause)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        conn.send(task)


def run_windows(fn: Callable[[A], R], tasks: Sequence[A], *, url: str, jobs: int,
                state: dict[str, Any] | None = None) -> Generator[R, None, None]:
    """``fn(task)`` for every task, results yielded in task order; ``jobs`` worker processes when forking is
    possible and there is more than one task, else in this process (``fn`` then reads the same state).

    ``fn`` must be a module-level function (it is sent to workers by name); it finds the store through
    ``worker_store()`` and anything else through ``state()``. An exception in a worker is raised here, in
    order, when its task's result is due."""
    saved = dict(_STATE), list(_STORE)
    _STATE.clear()
    _STATE.update(state or {}, url=url)
    _STORE.clear()
    try:
        if jobs <= 1 or len(tasks) <= 1 or not can_fork():
            try:
                for task in tasks:
                    yield fn(task)
            finally:
                for s in _STORE:
                    s.close()
            return
        yield from _forked(fn, tasks, min(jobs, len(tasks)))
    finally:
        _STATE.clear()
        _STATE.update(saved[0])
        _STORE[:] = saved[1]
