"""The fairness stage: live per-group counts, status against the policy's thresholds, and what to do about it.

Per decision (``after_app``): read the decision the route declares (``model.favorable``, or ``model.output``
against ``fairness.score_threshold``), count it in the route's window under the exchange's protected groups,
evaluate the window against ``policy.fairness`` and act:

* annotate: ``MLGuard-Fairness: ok|warn|violation|insufficient`` and ``ex.record["fairness"]`` (always);
* alert: also a structured log line and a webhook POST when the status changes; gauges at ``GET /metrics`` (core admin);
* block: also the EU AI Act Art 14 "stop": on entering "violation" the monitor stops the route (new decisions
  answer 503, problem type ``fairness-block``) until a human resumes it (``POST /fairness/resume`` or
  ``mlguard fairness resume``). Stop and resume are appended to the audit trail. A resume while the window still
  violates is a logged human override: the route is not halted again until its status has left "violation" (or
  the window was reset on resume). The monitor's stop is its own (mlguard/oversight.py): a fairness resume
  lifts only it, never a stop a person made through ``POST /routes/{i}/stop``, and says so.

Ground truth arrives later through ``POST /feedback`` and joins the decision in the window. Feedback on a decision
whose record was erased (``mlguard audit shred``, or its day purged) is refused with 410 and the decision is taken
out of the window: the audit store says so (the record's data key is gone), in shared and per-worker mode alike,
whereas only the shared store can be reached by the shred itself.

Why a warning at start when a route's policies set no threshold (gdpr and eu_ai_act alone, say): the status can
then never be worse than "ok", and an operator reading "ok" next to an impact ratio of 0.7 believes a check ran.
The endpoint's report says it too (``thresholds_checked``, ``status_detail``: metrics.py); the header keeps its
four values.

Why the record holds only category keys: the audit record's ``protected`` section (its own key domain) holds the
raw attributes; this section holds what the metrics used, i.e. the groups ("sex=Female"), the decision and the
window's summary figures.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mlguard.errors import ConfigError
from mlguard.fairness.alerts import AlertSink
from mlguard.fairness.feedback import FeedbackInvalid, SubjectIndex, parse_feedback
from mlguard.fairness.metrics import STATUS_ORDER, FairnessReport, Status, Thresholds, evaluate
from mlguard.fairness.window import FairnessWindow, GroupSnapshot
from mlguard.oversight import operator_reason
from mlguard.stage import AdminRequest, AdminResponse, AdminRoute, BaseStage, BuildContext

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlguard.config.fairness import FairnessSettings
    from mlguard.exchange import Exchange
    from mlguard.routes import CompiledRoute
    from mlguard.types import Outcome

log = logging.getLogger("mlguard.fairness")

HEADER = "MLGuard-Fairness"
STATUS_GAUGE = {"insufficient": -1.0, "ok": 0.0, "warn": 1.0, "violation": 2.0}
THRESHOLD_POLICIES = ("eeoc_four_fifths", "nyc_ll144", "ecoa")
"""Bundled policies that set a fairness threshold, named by the start-up warning (a test keeps this true)."""
ERASED = {"title": "Decision erased",
          "detail": "this decision's record was erased (its subject shredded, or its day purged under retention): "
                    "it is no longer in the fairness window and takes no feedback"}


class WindowLike(Protocol):
    """What the stage needs of a window: the in-process one, or the PostgreSQL-shared one."""

    dimensions: list[str]

    def add(self, protected: Mapping[str, Any], pred: bool, score: float | None = None,
            audit_id: str | None = None, now: float | None = None) -> tuple[str, ...]: ...

    def set_label(self, audit_id: str, label: bool) -> bool: ...

    def knows(self, audit_id: str) -> bool: ...

    def forget(self, audit_id: str) -> bool: ...

    def snapshot(self, *, scores: bool = False, now: float | None = None) -> list[GroupSnapshot]: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...


@dataclass(slots=True)
class RouteState:
    """The fairness state of one guarded route."""

    route: CompiledRoute
    window: WindowLike
    thresholds: Thresholds
    action: str
    status: Status = "insufficient"
    report: FairnessReport | None = None
    halted_by_fairness: bool = False
    overridden: bool = False
    alerted: str = "insufficient"
    alerted_at: float = -math.inf
    breaches: list[str] = field(default_factory=list)
    since_evaluation: int = 0


def create(ctx: BuildContext) -> FairnessStage | None:
    """The stage, or None when fairness is disabled or no route declares protected attributes."""
    settings = ctx.config.fairness
    if not settings.enabled:
        return None
    routes = [r for r in ctx.routes if r.protected]
    if not routes:
        return None
    declared = {name for r in routes for name in r.protected}
    for name in settings.categories:
        if name not in declared:
            raise ConfigError(f"no route declares a protected attribute named {name!r}",
                              field=f"fairness.categories.{name}")
    return FairnessStage(ctx, settings, routes)


class FairnessStage(BaseStage):
    """Keeps a window per route with protected attributes; see the module docstring."""

    name = "fairness"

    def __init__(self, ctx: BuildContext, settings: FairnessSettings, routes: list[CompiledRoute]) -> None:
        self.ctx = ctx
        self.shared = ctx.shared
        self.settings = settings
        self.alerts = AlertSink(settings.webhook, timeout_s=settings.webhook_timeout_s,
                                retries=settings.webhook_retries)
        self.subjects = SubjectIndex(settings.window_size * max(1, len(routes)))
        self.routes: dict[int, RouteState] = {}
        for r in routes:
            window = self._window(r)
            policy_fairness = getattr(r.policy, "fairness", None)
            self.routes[r.index] = RouteState(
                route=r, window=window, thresholds=Thresholds.from_policy(policy_fairness),
                action=str(getattr(policy_fairness, "action", None) or "annotate"),
            )
            if not self.routes[r.index].thresholds.checked:
                _warn_unchecked(r)
        from mlguard.metrics import register_gauges

        register_gauges(self.shared, self._gauges)

    def _window(self, route: CompiledRoute) -> WindowLike:
        s = self.settings
        attributes = sorted(route.protected)
        policy_fairness = getattr(route.policy, "fairness", None)
        intersectional = s.intersectional or bool(getattr(policy_fairness, "intersectional", False))
        label_key = self._label_key(attributes)
        if s.shared_store:
            from mlguard.fairness.shared_pg import SharedWindow
            from mlguard.keys import keyring_for

            secret = keyring_for(self.ctx).secret("fairness.shared")
            shared = SharedWindow(s.shared_store, route=route.path, attributes=attributes, size=s.window_size,
                                  secret=secret,
                                  seconds=s.window_seconds, bucket_seconds=s.bucket_seconds,
                                  intersectional=intersectional, max_categories=s.max_categories,
                                  categories=s.categories, label_key=label_key)
            # SharedWindow maps values with a FairnessWindow of its own, built without unknown_values: give it
            # the configured ones, so a shared window counts "unknown" exactly as a per-worker one does.
            shared._keys = FairnessWindow(attributes, size=1, intersectional=intersectional,
                                          max_categories=s.max_categories, categories=s.categories,
                                          label_key=label_key, unknown_values=s.unknown_values)
            return shared
        return FairnessWindow(attributes, size=s.window_size, seconds=s.window_seconds,
                              intersectional=intersectional, max_categories=s.max_categories,
                              categories=s.categories, label_key=label_key, unknown_values=s.unknown_values)

    def _label_key(self, attributes: list[str]) -> bytes | None:
        """The key that names values of attributes without declared categories (window.py: Names); None when
        every attribute is declared. From the keyring, so every worker and every restart names a value alike."""
        undeclared = [a for a in attributes if a not in self.settings.categories]
        if not undeclared:
            return None
        from mlguard.keys import keyring_for

        log.warning("fairness: groups of %s are shown by keyed digests (~...), not by value: list the values "
                    "under fairness.categories to see them by name", ", ".join(undeclared))
        return keyring_for(self.ctx).secret("fairness.labels")

    # ------------------------------------------------------------------ per decision

    async def before_app(self, ex: Exchange) -> None:
        """While the monitor's own stop holds, report it as the request's fairness evidence ("violation"), so
        decide() answers ``fairness-block`` and not a person's ``halted``; the record says which stops hold.

        Why "violation" although this worker's window may say otherwise: in per-worker mode another worker's
        window may have found the violation; the stop, shared by all, is what is in force here."""
        st = self.routes.get(ex.route.index)
        guard = self.shared.get("guard")
        if st is None or guard is None:
            return
        stopped = guard.oversight.stopped_by(st.route.index)
        if "fairness" not in stopped:
            return
        ex.extra_headers[HEADER] = "violation"
        ex.record["fairness"] = {"status": "violation", "counted": False, "stopped_by": list(stopped),
                                 "reason": "the fairness monitor stopped this route (fairness.action block)"}

    def _decision(self, outcome: Outcome | None) -> tuple[bool | None, float | None]:
        if outcome is None:
            return None, None
        score = outcome.score if outcome.score is not None and math.isfinite(outcome.score) else None
        if outcome.favorable is not None:
            return outcome.favorable, score
        if score is not None and self.settings.score_threshold is not None:
            return score >= self.settings.score_threshold, score
        return None, score

    async def after_app(self, ex: Exchange) -> None:
        st = self.routes.get(ex.route.index)
        if st is None:
            return
        pred, score = self._decision(ex.outcome)
        if pred is None:
            ex.extra_headers[HEADER] = st.status
            ex.record["fairness"] = {"status": st.status, "counted": False,
                                     "reason": "the response carries no decision at model.favorable"}
            return
        keys = await self._add(st, ex.protected, pred, score, ex.audit_id)
        if ex.subject is not None:
            self.subjects.put(ex.subject, ex.audit_id)
        # Evaluating every dimension costs ~0.2 ms in Python; every ``evaluate_every`` decisions is enough for a
        # status over thousands of decisions, and keeps the per-request cost in microseconds.
        st.since_evaluation += 1
        report = st.report
        if report is None or st.since_evaluation >= self.settings.evaluate_every:
            report = await self._evaluate(st)
        ex.extra_headers[HEADER] = report.status
        ex.record["fairness"] = {"status": report.status, "counted": True, "groups": list(keys),
                                 "favorable": pred, "score": score, "metrics": report.summary()}
        await self._act(st, report)

    async def _add(self, st: RouteState, protected: Mapping[str, Any], pred: bool, score: float | None,
                   audit_id: str) -> tuple[str, ...]:
        if self.settings.shared_store:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(lambda: st.window.add(protected, pred, score, audit_id))
        return st.window.add(protected, pred, score, audit_id)

    async def _evaluate(self, st: RouteState, *, scores: bool = False) -> FairnessReport:
        if self.settings.shared_store:
            import anyio.to_thread

            snap = await anyio.to_thread.run_sync(lambda: st.window.snapshot(scores=scores))
        else:
            snap = st.window.snapshot(scores=scores)
        report = evaluate(snap, st.window.dimensions, st.thresholds)
        st.report = report
        st.since_evaluation = 0
        st.status = report.status
        return report

    async def _act(self, st: RouteState, report: FairnessReport) -> None:
        status = report.status
        guard = self.shared.get("guard")
        oversight = guard.oversight if guard is not None else None
        index = st.route.index
        if status != "violation":
            st.overridden = False
            if oversight is not None and oversight.overridden(index):
                oversight.end_override(index)  # the override ends with the violation, everywhere
        # A human who resumed this route despite the violation (maybe through another worker) is not overruled.
        # A person's stop does not keep the monitor from making its own: it must still hold when they resume.
        overridden = st.overridden or (oversight is not None and oversight.overridden(index))
        halting = (st.action == "block" and status == "violation" and not overridden and oversight is not None
                   and "fairness" not in oversight.stopped_by(index))
        failure: Exception | None = None
        if halting and oversight is not None:
            try:
                oversight.halt(index, by="fairness")
            except Exception as exc:  # this worker is stopped all the same; raised below, after the alert
                failure = exc
            st.halted_by_fairness = True
            log.error("route %s halted by the fairness monitor: fairness violation", st.route.path,
                      extra={"route": st.route.path})
        self._alert(st, report, halting)
        if halting:
            await self._audit_event("oversight", {
                "action": "stop", "cause": "fairness", "route": st.route.path, "route_index": index,
                "reason": "fairness_violation", "by": "mlguard.fairness",
                "breaches": report.summary()["breaches"]}, required=False)
        if failure is not None:
            raise failure

    def _alert(self, st: RouteState, report: FairnessReport, halting: bool) -> None:
        """Alert on a change of status (and always when the monitor has just stopped the route), saying whether
        the route is halted now and by which stops."""
        status = report.status
        if st.action not in ("alert", "block") or (status == st.alerted and not halting):
            return
        # Alert at once when the status gets worse; otherwise (recovery, flapping around a threshold) at most
        # once per alert_min_interval_s, so a window hovering at a threshold does not flood the webhook.
        now = time.monotonic()
        worse = STATUS_ORDER[status] > max(STATUS_ORDER[st.alerted], STATUS_ORDER["ok"])
        relevant = max(STATUS_ORDER[status], STATUS_ORDER[st.alerted]) >= STATUS_ORDER["warn"]
        if halting or (relevant and (worse or now - st.alerted_at >= self.settings.alert_min_interval_s)):
            guard = self.shared.get("guard")
            stopped = list(guard.oversight.stopped_by(st.route.index)) if guard is not None else []
            self.alerts.emit({"event": "fairness_status", "route": st.route.path, "status": status,
                              "previous": st.alerted, "halted": bool(stopped), "stopped_by": stopped,
                              "summary": report.summary()})
            st.alerted, st.alerted_at = status, now
        elif not relevant:
            st.alerted = status

    async def _audit_event(self, kind: str, data: dict[str, Any], *, required: bool) -> str | None:
        """Append an event to the audit trail when audit is on; ``required`` re-raises a failure."""
        events = self.shared.get("audit_events")
        if events is None:
            return None
        try:
            event_id: str = await events.append_event(kind, data)
            return event_id
        except Exception as exc:
            log.error("audit event not written", extra={"kind": kind, "error": type(exc).__name__})
            if required:
                raise
            return None

    # ------------------------------------------------------------------ admin endpoints

    def admin_routes(self) -> list[AdminRoute]:
        return [
            AdminRoute("POST", "/feedback", self._feedback),
            AdminRoute("POST", "/fairness/resume", self._resume),
            AdminRoute("GET", "/fairness", self._status),
        ]

    async def _feedback(self, req: AdminRequest) -> AdminResponse:
        try:
            fb = parse_feedback(req.body)
        except FeedbackInvalid as exc:
            return _json(422, {"title": "Malformed feedback", "detail": str(exc)})
        audit_id = fb.audit_id
        if audit_id is None and fb.subject is not None:
            audit_id = self.subjects.get(fb.subject)
            if audit_id is None:
                return _json(404, {"title": "Not found", "detail": "no decision for this subject in the window"})
        if audit_id is None:
            return _json(404, {"title": "Not found", "detail": "unknown audit_id"})
        try:
            erased = await self._erased(audit_id)
        except Exception as exc:
            log.error("feedback: the erasure check failed", extra={"error": type(exc).__name__})
            return _json(503, {"title": "Audit unavailable",
                               "detail": "could not check that the decision was not erased; try again"})
        if erased:
            return _json(410, ERASED)
        st = await self._route_of(audit_id)
        if st is None:
            return _json(404, {"title": "Not found",
                               "detail": "unknown audit_id (or no longer in the live window)"})
        try:
            await self._audit_event("feedback", {"decision": audit_id, "label": fb.label,
                                                 "route": st.route.path}, required=True)
        except Exception:
            return _json(503, {"title": "Audit unavailable", "detail": "the feedback could not be audited"})
        if self.settings.shared_store:
            import anyio.to_thread

            ok = await anyio.to_thread.run_sync(lambda: st.window.set_label(audit_id, fb.label))
        else:
            ok = st.window.set_label(audit_id, fb.label)
        if not ok:
            return _json(404, {"title": "Not found", "detail": "the decision left the live window"})
        report = await self._evaluate(st)
        await self._act(st, report)
        return _json(200, {"audit_id": audit_id, "route": st.route.path, "labelled": True,
                           "status": report.status})

    async def _erased(self, audit_id: str) -> bool:
        """Whether the audit store holds the record of ``audit_id`` with its data key destroyed (shred, purge);
        if so the decision is also taken out of the window that still holds it (a per-worker window, which no
        shred can reach). False without an audit store, or when the record is not there (yet)."""
        store = self.shared.get("audit_store")
        if store is None:
            return False

        def check() -> bool:
            row = store.get_row(audit_id)
            if row is None or row.kind != "exchange":
                return False
            # one data key per subject (pseudonym; "" for none) and UTC day: audit/seal.py
            return str(row.ts)[:10] not in store.subject_periods(row.subject or "")

        import anyio.to_thread

        if not await anyio.to_thread.run_sync(check):
            return False
        for st in self.routes.values():
            if self.settings.shared_store:
                forgot = await anyio.to_thread.run_sync(st.window.forget, audit_id)
            else:
                forgot = st.window.forget(audit_id)  # on the loop, as every other change of this window
            if forgot:
                await self._act(st, await self._evaluate(st))
        return True

    async def _route_of(self, audit_id: str) -> RouteState | None:
        """The route whose window holds ``audit_id`` (a database lookup, off the loop, when shared)."""
        def find() -> RouteState | None:
            return next((s for s in self.routes.values() if s.window.knows(audit_id)), None)

        if self.settings.shared_store:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(find)
        return find()

    async def _resume(self, req: AdminRequest) -> AdminResponse:
        """Lift the monitor's stop (never a person's: mlguard/oversight.py), with an optional window reset.

        A route stopped only by a person is not this control's to resume: named by ``route`` it is answered 409
        and nothing changes; in a resume of every route it is listed under ``skipped``. A route stopped by both
        loses the monitor's stop and the answer says it is still halted, and by what."""
        try:
            doc = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or set(doc) - {"route", "reset", "reason"}:
            return _json(422, {"title": "Malformed body",
                               "detail": 'expected {"route": index (optional), "reset": bool, "reason": text}'})
        route = doc.get("route")
        reset = doc.get("reset", False)
        if (route is not None and (not isinstance(route, int) or isinstance(route, bool))) or \
                not isinstance(reset, bool) or not isinstance(doc.get("reason", ""), str):
            return _json(422, {"title": "Malformed body",
                               "detail": "route must be an integer, reset a boolean, reason a string"})
        try:
            reason = operator_reason(doc.get("reason"))
        except ValueError as exc:
            return _json(422, {"title": "Malformed body", "detail": str(exc)})
        if route is not None and route not in self.routes:
            return _json(404, {"title": "Not found", "detail": "no fairness-monitored route with this index"})
        guard = self.shared.get("guard")
        oversight = guard.oversight if guard is not None else None
        prefix = self.ctx.config.admin.prefix
        targets = [self.routes[route]] if route is not None else list(self.routes.values())
        resumed: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for st in targets:
            index = st.route.index
            stopped = oversight.stopped_by(index) if oversight is not None else ()
            by_monitor = "fairness" in stopped
            if stopped and not by_monitor:  # a person's stop only
                if route is not None:
                    return _json(409, {
                        "title": "Stopped by human oversight",
                        "detail": f"route {index} is stopped by human oversight, not by the fairness monitor: a "
                                  f"fairness resume does not lift it (POST {prefix}/routes/{index}/resume does); "
                                  "nothing changed",
                        "route": index, "stopped_by": list(stopped)})
                skipped.append({"route": index, "path": st.route.path, "stopped_by": list(stopped)})
                continue
            if not by_monitor and not reset and route is None:
                continue
            try:
                event = await self._audit_event("oversight", {
                    "action": "resume", "cause": "fairness", "route": st.route.path, "route_index": index,
                    "by": "admin", "reset_window": reset, "status_at_resume": st.status,
                    "lifted": by_monitor, "reason": reason}, required=True)
            except Exception:
                return _json(503, {"title": "Audit unavailable",
                                   "detail": "the resume could not be audited; the route stays stopped"})
            st.halted_by_fairness = False
            if reset:
                st.window.clear()
                await self._evaluate(st)
            st.overridden = st.status == "violation"
            if oversight is not None:
                try:  # every worker on the audit store resumes (and keeps the override) within a second
                    oversight.resume(index, override=st.overridden, by="fairness")
                except Exception as exc:
                    log.error("resume not shared", extra={"route": st.route.path, "error": type(exc).__name__})
                    return _json(503, {"title": "Audit unavailable",
                                       "detail": "the resume applies to this worker only: the shared oversight "
                                                 "state could not be written"})
            remaining = list(oversight.stopped_by(index)) if oversight is not None else []
            log.warning("route %s: %s by admin", st.route.path,
                        "fairness stop lifted" if by_monitor else "fairness window reset",
                        extra={"route": st.route.path, "reset_window": reset})
            entry: dict[str, Any] = {"route": index, "path": st.route.path, "audit_event": event,
                                     "status": st.status, "override": st.overridden, "lifted": by_monitor,
                                     "halted": bool(remaining), "stopped_by": remaining}
            if remaining:
                entry["detail"] = (f"still stopped by human oversight: POST {prefix}/routes/{index}/resume "
                                   "lifts that stop")
            resumed.append(entry)
        return _json(200, {"resumed": resumed, "skipped": skipped})

    async def _status(self, req: AdminRequest) -> AdminResponse:
        out = {}
        for idx, st in self.routes.items():
            report = await self._evaluate(st, scores=True)
            guard = self.shared.get("guard")
            out[str(idx)] = {"path": st.route.path, "action": st.action, "window": len(st.window),
                             "halted": bool(guard is not None and guard.is_halted(st.route)),
                             "stopped_by": list(guard.oversight.stopped_by(idx)) if guard is not None else [],
                             "report": report.as_dict()}
        return _json(200, {"routes": out})

    def _gauges(self) -> list[tuple[str, str, list[tuple[dict[str, str], float]]]]:
        status: list[tuple[dict[str, str], float]] = []
        window: list[tuple[dict[str, str], float]] = []
        metric: list[tuple[dict[str, str], float]] = []
        rates: list[tuple[dict[str, str], float]] = []
        for st in self.routes.values():
            r = {"route": st.route.path}
            status.append((r, STATUS_GAUGE[st.status]))
            window.append((r, float(len(st.window))))
            if st.report is None:
                continue
            for dim, d in st.report.dimensions.items():
                for name in ("demographic_parity_difference", "demographic_parity_ratio",
                             "equalized_odds_difference", "equalized_odds_ratio"):
                    v = getattr(d.eligible, name)
                    if math.isfinite(v):
                        metric.append(({**r, "dimension": dim, "metric": name}, float(v)))
                for row in d.impact:
                    rates.append(({**r, "dimension": dim, "group": row.group}, row.selection_rate))
                    # Only groups that can be judged: an alert rule "< 0.8" must not fire on a group of seven,
                    # the catch-all or unknown, which no threshold is applied to (metrics.eligibility).
                    if row.selection_impact_ratio is not None and row.eligible:
                        metric.append(({**r, "dimension": dim, "metric": "impact_ratio", "group": row.group},
                                       row.selection_impact_ratio))
        return [
            ("mlguard_fairness_status", "Fairness status: -1 insufficient, 0 ok, 1 warn, 2 violation", status),
            ("mlguard_fairness_window_decisions", "Decisions in the live fairness window", window),
            ("mlguard_fairness_metric", "Fairness metric over the eligible groups of a dimension", metric),
            ("mlguard_fairness_selection_rate", "Selection rate per group in the live window", rates),
        ]

    def describe(self) -> dict[str, Any]:
        return {"window_size": self.settings.window_size, "window_seconds": self.settings.window_seconds,
                "shared": bool(self.settings.shared_store),
                "routes": {st.route.path: {"action": st.action, "thresholds": st.thresholds.as_dict()}
                           for st in self.routes.values()}}

    async def aclose(self) -> None:
        await self.alerts.aclose()
        for st in self.routes.values():
            close = getattr(st.window, "close", None)
            if close is not None:
                close()


def _warn_unchecked(route: CompiledRoute) -> None:
    """Log that ``route`` is monitored against no threshold, and what to do (see the module docstring)."""
    ids = list(getattr(route.policy, "ids", None) or [])
    log.warning(
        "fairness: route %s declares protected attributes (%s) but its policies (%s) set no fairness threshold: "
        "nothing is checked, its status can only be ok or insufficient, and no bias alert or block can follow. "
        "Add a policy that sets one (%s), or set fairness.min_impact_ratio, max_demographic_parity_difference or "
        "max_equalized_odds_difference in a policy of your own that extends yours",
        route.path, ", ".join(sorted(route.protected)), ", ".join(ids) or "none",
        ", ".join(THRESHOLD_POLICIES))


def _json(status: int, doc: Mapping[str, Any]) -> AdminResponse:
    return AdminResponse(status, json.dumps(doc, default=str, allow_nan=False).encode())


__all__ = ["HEADER", "THRESHOLD_POLICIES", "FairnessStage", "RouteState", "create"]
