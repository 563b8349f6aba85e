"""Human oversight (EU AI Act Art 14 "stop"): which guarded routes are halted, shared by every worker.

Why the state lives in the audit store when there is one: a deployment's workers (``mlguard serve --workers N``,
replicas on several hosts with PostgreSQL) already share that store, and a stop made through one worker's admin
endpoint must stop them all, and must survive a restart: a halted model stays halted until a human resumes it.
Without an audit store (audit disabled) the state is this process's only, and the README says so.

Why a refresher thread: ``is_halted`` runs on every guarded request and must cost a set lookup, not a query. A
daemon thread re-reads the store every ``refresh_seconds``; a stop or resume is written through at once (rare
admin actions), so the worker that took it is exact and the others follow within the refresh interval.

``override`` marks a route a human resumed while its fairness status was still "violation": a fairness ``block``
must not stop it again (in any worker) until the status has left "violation".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlguard.audit.store.base import AuditStore
    from mlguard.routes import CompiledRoute

log = logging.getLogger("mlguard.oversight")
REFRESH_SECONDS = 1.0


class Oversight:
    """Halted and overridden routes, by route index; optionally shared through an audit store."""

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        # A route is known by index and path together, so a config whose routes moved does not inherit a stop
        # meant for another route.
        self._keys = {r.index: f"{r.index}:{r.path}" for r in routes}
        self._halted: frozenset[int] = frozenset()
        self._override: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self._store: AuditStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changes = 0  # bumped by every local stop/resume: a refresh read before it must not undo it

    def attach(self, store: AuditStore, refresh_seconds: float = REFRESH_SECONDS) -> None:
        """Share the state through ``store``: read it now (a worker starting while a route is stopped starts
        with it stopped), then every ``refresh_seconds``."""
        self._store = store
        self.refresh()
        self._thread = threading.Thread(target=self._run, args=(refresh_seconds,), name="mlguard-oversight",
                                        daemon=True)
        self._thread.start()

    @property
    def shared(self) -> bool:
        return self._store is not None

    def is_halted(self, index: int) -> bool:
        return index in self._halted

    def overridden(self, index: int) -> bool:
        return index in self._override

    def halt(self, index: int) -> None:
        """Stop a route here at once, then for every worker (raises AuditUnavailable if that write fails; this
        worker stays stopped)."""
        self._set(index, halted=True, override=False)

    def resume(self, index: int, *, override: bool = False) -> None:
        """Resume a route here at once, then for every worker (raises AuditUnavailable if that write fails)."""
        self._set(index, halted=False, override=override)

    def refresh(self) -> None:
        """Re-read the shared state; on a read error keep the last known state (and say so in the log)."""
        store = self._store
        if store is None:
            return
        seen = self._changes
        try:
            state = store.oversight()
        except Exception as exc:
            log.warning("oversight state not refreshed", extra={"error": type(exc).__name__})
            return
        halted, override = set(), set()
        for index, key in self._keys.items():
            h, o = state.get(key, (False, False))
            if h:
                halted.add(index)
            if o:
                override.add(index)
        with self._lock:
            if self._changes == seen:
                self._halted, self._override = frozenset(halted), frozenset(override)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _set(self, index: int, *, halted: bool, override: bool) -> None:
        with self._lock:
            self._changes += 1
            self._halted = self._halted | {index} if halted else self._halted - {index}
            self._override = self._override | {index} if override else self._override - {index}
        if self._store is not None and index in self._keys:
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            self._store.put_oversight(self._keys[index], halted, override, now)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()
