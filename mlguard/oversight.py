"""Human oversight (EU AI Act Art 14 "stop"): which guarded routes are halted, by whom, shared by every worker.

Why the state lives in the audit store when there is one: a deployment's workers (``mlguard serve --workers N``,
replicas on several hosts with PostgreSQL) already share that store, and a stop made through one worker's admin
endpoint must stop them all, and must survive a restart: a halted model stays halted until a human resumes it.
Without an audit store (audit disabled) the state is this process's only, and the README says so.

Why a refresher thread: ``is_halted`` runs on every guarded request and must cost a set lookup, not a query. A
daemon thread re-reads the store every ``refresh_seconds``; a stop or resume is written through at once (rare
admin actions), so the worker that took it is exact and the others follow within the refresh interval.

Why two stops per route, ``human`` and ``fairness``: a person who stops a route (``POST {admin}/routes/{i}/stop``)
and the fairness monitor (a policy's ``block``) stop it for different reasons, are answered to clients with
different problem types, and are lifted by different controls: ``mlguard fairness resume`` is about the
monitor's verdict and must never lift a stop a person made for reasons the monitor knows nothing of, and the
admin resume lifts only the human stop (the monitor would stop the route again at its next violating decision
anyway, unless its own resume records an override). A route is halted while either stop holds. Each stop is its
own row in the store (the human one under the route's key, as before, the monitor's under the key plus
``#fairness``), so workers that write different stops at the same moment cannot overwrite each other's.

``override`` marks a route a human resumed while its fairness status was still "violation": a fairness ``block``
must not stop it again (in any worker) until the status has left "violation".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mlguard.audit.store.base import AuditStore
    from mlguard.routes import CompiledRoute

log = logging.getLogger("mlguard.oversight")
REFRESH_SECONDS = 1.0

StopCause = Literal["human", "fairness"]
CAUSES: tuple[StopCause, ...] = ("human", "fairness")
_KEY_SUFFIX: dict[StopCause, str] = {"human": "", "fairness": "#fairness"}  # '#' never occurs in a request path

REASON_MAX_CHARS = 500
"""Longest operator reason kept with a stop or resume: room for a ticket id and a sentence, not for a document."""


def operator_reason(value: object) -> str:
    """The ``reason`` an operator gave with a stop or resume, checked (raises ValueError, naming no value).

    Why kept as given and not redacted: it is the operator's own words, written for the audit trail (who decided
    what, and why), like ``mlguard fairness resume --reason``. It goes only to the sealed audit record, never to
    a log line: free text may still name a person ("complaint of ..."), and logs have neither the audit trail's
    access control nor its retention. Too long is refused, not cut, so the record never says less than the
    operator believes it says.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("reason must be a string")
    text = value.strip()
    if len(text) > REASON_MAX_CHARS:
        raise ValueError(f"reason is longer than {REASON_MAX_CHARS} characters")
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in text):
        raise ValueError("reason holds control characters")
    return text


class Oversight:
    """Halted and overridden routes, by route index and stop cause; optionally shared through an audit store."""

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        # A route is known by index and path together, so a config whose routes moved does not inherit a stop
        # meant for another route.
        self._keys = {r.index: {c: f"{r.index}:{r.path}{_KEY_SUFFIX[c]}" for c in CAUSES} for r in routes}
        self._halted: dict[StopCause, frozenset[int]] = {c: frozenset() for c in CAUSES}
        self._override: dict[StopCause, frozenset[int]] = {c: frozenset() for c in CAUSES}
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
        """True while any stop holds (human or fairness): decisions on the route are refused."""
        halted = self._halted
        return index in halted["human"] or index in halted["fairness"]

    def stopped_by(self, index: int) -> tuple[StopCause, ...]:
        """The stops holding on the route, in a fixed order (``()``: not halted)."""
        halted = self._halted
        return tuple(c for c in CAUSES if index in halted[c])

    def overridden(self, index: int) -> bool:
        override = self._override
        return index in override["human"] or index in override["fairness"]

    def halt(self, index: int, *, by: StopCause = "human") -> None:
        """Stop a route here at once, then for every worker (raises AuditUnavailable if that write fails; this
        worker stays stopped). A stop clears the override recorded with the same cause."""
        self._set(index, by, halted=True, override=False)

    def resume(self, index: int, *, override: bool = False, by: StopCause = "human") -> None:
        """Lift the stop of cause ``by`` only, here at once, then for every worker (raises AuditUnavailable if
        that write fails). A stop of the other cause keeps the route halted."""
        self._set(index, by, halted=False, override=override)

    def end_override(self, index: int) -> None:
        """The fairness status left "violation": a later violation may stop the route again (every cause's
        override ends; no stop is lifted or made)."""
        for cause in CAUSES:
            if index in self._override[cause]:
                self._set(index, cause, halted=index in self._halted[cause], override=False)

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
        halted: dict[StopCause, set[int]] = {c: set() for c in CAUSES}
        override: dict[StopCause, set[int]] = {c: set() for c in CAUSES}
        for index, keys in self._keys.items():
            for cause, key in keys.items():
                h, o = state.get(key, (False, False))
                if h:
                    halted[cause].add(index)
                if o:
                    override[cause].add(index)
        with self._lock:
            if self._changes == seen:
                self._halted = {c: frozenset(halted[c]) for c in CAUSES}
                self._override = {c: frozenset(override[c]) for c in CAUSES}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _set(self, index: int, cause: StopCause, *, halted: bool, override: bool) -> None:
        with self._lock:
            self._changes += 1
            h, o = self._halted[cause], self._override[cause]
            # new dicts, never mutated in place: is_halted reads them without the lock
            self._halted = {**self._halted, cause: h | {index} if halted else h - {index}}
            self._override = {**self._override, cause: o | {index} if override else o - {index}}
        if self._store is not None and index in self._keys:
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            self._store.put_oversight(self._keys[index][cause], halted, override, now)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()
