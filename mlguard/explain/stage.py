"""The explanation stage: per-prediction SHAP contributions and adverse-action reasons, within a budget.

Where it sits: ``after_app``, once the app has answered, on exactly the document the app received (the redacted
one). Built once in :func:`create`: one ``RouteExplainer`` (:mod:`mlguard.explain.route`) per route with a model
object (binding, explainer, optional cut-off-baseline explainer, measured cost). Explainers whose measured cost
exceeds the policy's ``explanations.budget_ms`` run deferred in :mod:`mlguard.explain.worker`; the response then
carries a reference that the admin endpoint resolves. Inline ones run in a worker thread (``anyio.to_thread``),
except those measured under ``explain.on_loop_below_ms``: shap's C TreeSHAP holds the GIL for the whole call,
so a thread would not free the event loop and would only add its hop (about 0.1 ms here).

An unfavourable decision whose reasons cannot stand as its specific principal reasons (Reg B 1002.9(b)(2); see
:func:`mlguard.explain.reasons.incompleteness`) is not passed off as complete: its explanation says
``reasons_incomplete: true`` with a ``reasons_finding``, the audit record seals that, a WARNING names the
audit id, the finding's code and the excluded features (never an input value), and an inline one answers
``MLGuard-Reasons: incomplete`` (``complete`` otherwise), so a client in ``explain.mode: header`` sees it too.
The status stays ``ready`` and the app's answer is not changed: the explanation was computed; what it found is
that the model's decision rests on what may not be stated. Whether such a decision is served is not this
stage's call: the ``reasons_incomplete``/``reasons_finding`` of its record section is the evidence the Exchange
hands to :func:`mlguard.policy.decision.decide`, which refuses it (503 ``reasons-incomplete``) when the route's
policy requires reasons on adverse decisions under ``failure_mode: fail_closed``, and serves it flagged under
``fail_open``. A deferred explanation comes too late for that (start-up warns: :mod:`mlguard.explain.route`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from mlguard.errors import AuditUnavailable, ExplainError
from mlguard.explain.route import ReasonPolicy, RouteExplainer, build_route_explainer
from mlguard.explain.worker import DeferredWorker, Entry, Job, ResultStore, public_view
from mlguard.ids import audit_target, is_audit_id
from mlguard.metrics import register_gauges, single
from mlguard.stage import AdminRequest, AdminResponse, AdminRoute, BaseStage, BuildContext

if TYPE_CHECKING:
    from mlguard.exchange import Exchange
    from mlguard.metrics import Family

__all__ = ["ExplainStage", "ReasonPolicy", "RouteExplainer", "build_route_explainer", "create"]

log = logging.getLogger("mlguard.explain.stage")

HEADER = "MLGuard-Explanation"
EVENTS_AT_CLOSE_S = 10.0  # longest wait at shutdown for finished explanations' audit events
REASONS_HEADER = "MLGuard-Reasons"  # complete | incomplete, on unfavourable decisions explained inline
STATUS_HEADER = "MLGuard-Explanation-Status"


class ExplainStage(BaseStage):
    """Attaches explanations (inline or deferred) and serves them on the admin API."""

    name = "explain"

    def __init__(self, ctx: BuildContext, routes: dict[int, RouteExplainer]) -> None:
        self.ctx = ctx
        self.settings = ctx.config.explain
        self.routes = routes
        self.prefix = ctx.config.admin.prefix
        self.store = ResultStore(self.settings.keep_results)
        self.worker: DeferredWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Counted here (plain ints, on the event loop) and read at scrape time: see _gauges.
        self.deferred_count = 0
        self.queue_full_count = 0
        # Audit events of finished deferred explanations still on their way (awaited at close).
        self._events: set[concurrent.futures.Future[str]] = set()
        self._events_lock = threading.Lock()
        if any(r.deferred for r in routes.values()):
            self.worker = DeferredWorker(self._process, self.store, queue_size=self.settings.deferred_queue_size,
                                         batch_max=self.settings.deferred_batch_max, on_ready=self._on_ready,
                                         linger_s=self.settings.deferred_linger_ms / 1000.0)
        register_gauges(ctx.shared, self._gauges)

    # ------------------------------------------------------------------ hooks

    async def after_app(self, ex: Exchange) -> None:
        rx = self.routes.get(ex.route.index)
        if rx is None:
            return
        if ex.status is None or not 200 <= ex.status < 300:
            # The app's own error body (a validation error, a problem document) is left as the app wrote it:
            # the skip is in the record and the headers only.
            self._skip(ex, rx, f"no decision to explain: the app answered {ex.status}", body=False)
            return
        row = rx.binding.build_row(ex.document)
        if row.values is None:
            self._skip(ex, rx, row.skip_reason or "no model input")
            return
        adverse = self._adverse(ex, rx)
        outcome = {"score": ex.outcome.score, "favorable": ex.outcome.favorable} if ex.outcome else None
        if rx.deferred and self.worker is not None:
            self._remember_loop()
            job = Job(ex.audit_id, rx.binding.route_index, row.values, {"route": ex.path, "adverse": adverse,
                                                                    "outcome": outcome})
            if not self.worker.submit(job):
                self.queue_full_count += 1
                self._skip(ex, rx, "explanation queue full")
                return
            self.deferred_count += 1
            ref = f"{self.prefix}/explanations/{ex.audit_id}"
            doc = {"status": "pending", "deferred": True, "ref": ref}
            ex.record["explanation"] = dict(doc)
            self._attach(ex, doc, "deferred")
            return
        values = row.values
        try:
            if rx.on_loop:
                entry = rx.explain_many([values], [adverse])[0]
            else:
                entry = (await anyio.to_thread.run_sync(rx.explain_many, [values], [adverse]))[0]
        except ExplainError as exc:
            doc = {"status": "failed", "reason": str(exc)}
            ex.record["explanation"] = dict(doc)
            self.store.put(ex.audit_id, Entry("failed", rx.binding.route_index, doc, dict(doc)))
            self._attach(ex, doc, "failed")  # seen under fail_open; fail_closed answers 503 instead
            raise
        entry.private["outcome"] = outcome
        self.store.put(ex.audit_id, entry)
        ex.record["explanation"] = entry.private
        self._attach(ex, entry.public, "ready")
        if "reasons_incomplete" in entry.public:
            incomplete = bool(entry.public["reasons_incomplete"])
            ex.extra_headers[REASONS_HEADER] = "incomplete" if incomplete else "complete"
            if incomplete:
                _warn_incomplete(ex.audit_id, ex.path, entry.public)

    async def finish(self, ex: Exchange) -> None:
        rx = self.routes.get(ex.route.index)
        if rx is not None:
            ex.record.setdefault("model", rx.binding.identity())

    def admin_routes(self) -> list[AdminRoute]:
        return [AdminRoute("GET", "/explanations/{audit_id}", self._get),
                AdminRoute("GET", "/explanations/{audit_id}/plain", self._get_plain)]

    def describe(self) -> dict[str, Any]:
        return {"routes": {str(i): {**r.identity, "execution": "deferred" if r.deferred else
                                    ("inline, on the event loop" if r.on_loop else "inline, in a thread"),
                                    "predicted_ms": round(r.predicted_ms, 3), "budget_ms": r.rules.budget_ms}
                           for i, r in self.routes.items()}}

    async def aclose(self) -> None:
        """Let the worker finish what is queued, then wait for those explanations' audit events: the Guard
        closes the audit stage after this one, so they are committed, not lost with the writer."""
        if self.worker is not None:
            await anyio.to_thread.run_sync(self.worker.close)
        with self._events_lock:
            pending = [asyncio.wrap_future(f) for f in self._events]
        if pending:
            _, late = await asyncio.wait(pending, timeout=EVENTS_AT_CLOSE_S)
            if late:
                log.warning("explanation events not appended before shutdown", extra={"count": len(late)})

    def _gauges(self) -> list[Family]:
        """Scrape-time metrics: the deferred queue's depth and how many explanations were deferred or dropped."""
        depth = float(self.worker.pending) if self.worker is not None else 0.0
        return [
            ("mlguard_explain_queue_depth", "Deferred explanations waiting for the worker", single(depth)),
            ("mlguard_explain_deferred_total", "Explanations handed to the deferred worker",
             single(float(self.deferred_count)), "counter"),
            ("mlguard_explain_queue_full_total", "Explanations skipped because the deferred queue was full",
             single(float(self.queue_full_count)), "counter"),
        ]

    # ------------------------------------------------------------------ helpers

    def _adverse(self, ex: Exchange, rx: RouteExplainer) -> bool:
        outcome = ex.outcome
        if outcome is None:
            return False
        if outcome.favorable is not None:
            return outcome.favorable is False
        if outcome.score is not None:
            return rx.binding.favorable_score(outcome.score) is False
        return False

    def _skip(self, ex: Exchange, rx: RouteExplainer, reason: str, *, body: bool = True) -> None:
        doc = {"status": "skipped", "skipped": True, "reason": reason}
        ex.record["explanation"] = dict(doc)
        self.store.put(ex.audit_id, Entry("skipped", rx.binding.route_index, doc, dict(doc)))
        self._attach(ex, doc, "skipped", body=body)

    def _attach(self, ex: Exchange, doc: dict[str, Any], status: str, *, body: bool = True) -> None:
        """Add ``doc`` to the response body (``explain.mode: body``) or name it in headers; ``body=False``:
        headers only, whatever the mode."""
        body_doc = ex.response_doc
        name = self.settings.field
        in_body = body and self.settings.mode == "body"
        if in_body and isinstance(body_doc, dict) and name not in body_doc:
            ex.response_doc = {**body_doc, name: doc}
            ex.response_modified = True
            ex.attached[name] = "explanation"
            return
        if in_body:
            log.warning("explanation not added to the body (not a JSON object, or member taken); header used",
                        extra={"audit_id": ex.audit_id})
        ex.extra_headers[HEADER] = ex.audit_id
        ex.extra_headers[STATUS_HEADER] = status

    def _remember_loop(self) -> None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None

    def _process(self, jobs: list[Job]) -> list[Entry]:
        """Worker thread: explain queued jobs, one explainer call per route."""
        out: dict[int, Entry] = {}
        by_route: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            by_route.setdefault(job.route_index, []).append(i)
        for route_index, idx in by_route.items():
            rx = self.routes[route_index]
            try:
                entries = rx.explain_many([jobs[i].values for i in idx],
                                          [bool(jobs[i].context.get("adverse")) for i in idx])
            except ExplainError as exc:
                entries = [Entry("failed", route_index, {"status": "failed", "reason": str(exc)})
                           for _ in idx]
            for i, entry in zip(idx, entries, strict=True):
                if entry.public.get("reasons_incomplete"):
                    _warn_incomplete(jobs[i].audit_id, jobs[i].context.get("route"), entry.public)
                entry.public = {**entry.public, "deferred": True}
                entry.private = {**entry.private, "deferred": True, "outcome": jobs[i].context.get("outcome")}
                out[i] = entry
        return [out[i] for i in range(len(jobs))]

    def _on_ready(self, job: Job, entry: Entry) -> None:
        """Worker thread: link the finished explanation into the audit trail (when the audit stage is on)."""
        events = self.ctx.shared.get("audit_events")
        loop = self._loop
        if events is None or loop is None or loop.is_closed():
            return
        # Without the inputs: an event is not sealed under the subject's key, so it must hold nothing that
        # crypto-shredding the subject would have to erase; the exchange record keeps the (redacted) input.
        public = {k: v for k, v in entry.public.items() if k != "inputs"}
        data = {"audit_id": job.audit_id, "route": job.context.get("route"),
                "explanation": {**public, "outcome": job.context.get("outcome")}}
        future = asyncio.run_coroutine_threadsafe(events.append_event("explanation", data), loop)
        with self._events_lock:
            self._events.add(future)
        future.add_done_callback(self._event_done)

    def _event_done(self, future: concurrent.futures.Future[str]) -> None:
        with self._events_lock:
            self._events.discard(future)
        _log_event_failure(future)

    async def _audited_read(self, endpoint: str, audit_id: str, *, found: bool | None) -> bool:
        """Record the admin read in the audit trail when the audit stage is on (PCI DSS 10.2.1.3), with whether
        it found an explanation (``found``), before anything is disclosed; False when that fails, so the read is
        refused (503, nothing of the lookup) rather than unaudited. Callers look up first, in memory or the
        trail, which discloses nothing, so the event can say what the answer is."""
        events = self.ctx.shared.get("audit_events")
        if events is None:
            return True
        try:
            await events.append_event("admin_read", {"endpoint": endpoint, "target": audit_target(audit_id),
                                                     "found": found})
        except Exception as exc:
            log.error("audited read failed", extra={"error": type(exc).__name__})
            return False
        return True

    async def _audited_lookup(self, endpoint: str, audit_id: str) -> Entry | AdminResponse:
        """The explanation of ``audit_id``, or the answer to give instead: looked up first (nothing disclosed),
        then the read recorded with what it found, then answered: 503 when the trail could not be read or the
        read not recorded, 404 when there is none."""
        if not is_audit_id(audit_id):  # looked up nowhere; the trail keeps its length only (audit_target)
            if not await self._audited_read(endpoint, audit_id, found=False):
                return _json(503, {"detail": "audit trail unavailable"})
            return _json(404, {"detail": "not an audit id"})
        try:
            entry, missing = await self._lookup(audit_id)
        except _TrailUnreadable as exc:
            await self._audited_read(endpoint, audit_id, found=None)
            return _json(503, {"detail": str(exc)})
        if not await self._audited_read(endpoint, audit_id, found=entry is not None):
            return _json(503, {"detail": "audit trail unavailable"})
        return _json(404, {"detail": missing}) if entry is None else entry

    async def _get(self, req: AdminRequest) -> AdminResponse:
        entry = await self._audited_lookup("/explanations", req.query.get("audit_id", ""))
        if isinstance(entry, AdminResponse):
            return entry
        return _json(202 if entry.status == "pending" else 200, entry.public)

    async def _lookup(self, audit_id: str) -> tuple[Entry | None, str]:
        """The explanation of ``audit_id``: from this process's bounded memory, else, for an inline one, from its
        sealed exchange record in the audit trail (after a restart, another worker's request, or once
        ``explain.keep_results`` newer ones pushed it out). (None, why) when there is none to give;
        _TrailUnreadable when the trail could not be read (503: whether there is one is not known)."""
        entry = self.store.get(audit_id)
        if entry is not None:
            return entry, ""
        events = self.ctx.shared.get("audit_events")
        reader = getattr(events, "reader", None)
        if reader is None:
            return None, "no explanation for this audit id"
        try:
            record = await anyio.to_thread.run_sync(reader.get, audit_id)
        except Exception as exc:
            log.error("explanation lookup in the audit trail failed", extra={"error": type(exc).__name__})
            raise _TrailUnreadable("no explanation for this audit id in memory, and the audit trail could not be "
                                   "read") from None
        if record is None or record.get("kind") != "exchange":
            return None, "no explanation for this audit id"
        if record.get("shredded"):
            return None, "the record of this audit id was shredded"
        doc = record.get("explanation")
        status = doc.get("status") if isinstance(doc, dict) else None
        if status == "pending":  # a deferred one: its result is the explanation event appended when it was ready
            try:
                found = await anyio.to_thread.run_sync(reader.deferred_explanation, record)
            except Exception as exc:
                log.error("explanation lookup in the audit trail failed", extra={"error": type(exc).__name__})
                raise _TrailUnreadable("the audit trail could not be read") from None
            if found is None:
                return None, "a deferred explanation not in this process's memory and not (yet) in the audit trail"
            doc, status = found, found.get("status")
        if not isinstance(doc, dict) or status not in ("ready", "failed", "skipped"):
            return None, "no explanation for this audit id"
        index = next((r.index for r in self.ctx.routes if r.path == record.get("route")), -1)
        rx = self.routes.get(index)
        if status == "ready" and "inputs" not in doc and rx is not None:
            # a deferred explanation's event holds no inputs (it is not under the subject's key): the sealed
            # exchange record holds the (redacted) input it was computed on, as `mlguard explain` reads it
            values = rx.binding.build_row(record.get("input")).values
            if values is not None:
                doc = {**doc, "inputs": values}
        public = public_view(doc)  # the sealed record's inputs and outcome never go into the admin answer
        return Entry(status, index, public, dict(doc)), ""

    async def _get_plain(self, req: AdminRequest) -> AdminResponse:
        from mlguard.explain.render import counterfactuals, render_plain

        audit_id = req.query.get("audit_id", "")
        entry = await self._audited_lookup("/explanations/plain", audit_id)
        if isinstance(entry, AdminResponse):
            return entry
        if entry.status == "pending":
            return _json(202, entry.public)
        rx = self.routes.get(entry.route_index)
        changes = None
        inputs = entry.private.get("inputs")
        # Only where the route's effective policy asks for it (explanations.counterfactuals); otherwise the text
        # says nothing about changes, and never one to a prohibited basis or protected attribute.
        if rx is not None and rx.rules.counterfactuals and entry.status == "ready" and isinstance(inputs, dict):
            changes = await anyio.to_thread.run_sync(
                lambda: counterfactuals(rx.binding, inputs, entry.private,
                                        max_features=self.settings.counterfactual_features,
                                        prohibited=rx.rules.prohibited))
        catalog = self.settings.reason_catalog
        text = render_plain(entry.private, changes=changes, catalog=catalog, audit_id=audit_id)
        return AdminResponse(200, text.encode(), "text/plain; charset=utf-8")


class _TrailUnreadable(AuditUnavailable):
    """The audit trail could not be read during an explanation lookup: answered 503, not 404 (the explanation
    may well exist), and recorded as a read with ``found: null``."""


def _warn_incomplete(audit_id: str, route: Any, doc: dict[str, Any]) -> None:
    """WARNING for an unfavourable decision without complete lawful reasons: feature names and the finding's
    code only (configuration, not input values), and the audit id to find the sealed record by."""
    finding = doc.get("reasons_finding")
    code = finding.get("code") if isinstance(finding, dict) else None
    log.warning("unfavourable decision without complete lawful reasons (%s); excluded from reasons: %s",
                code, doc.get("reasons_excluded") or [],
                extra={"audit_id": audit_id, "route": route, "kind": code, "count": len(doc.get("reasons") or [])})


def _json(status: int, doc: Any) -> AdminResponse:
    return AdminResponse(status, json.dumps(doc).encode())


def _log_event_failure(future: Any) -> None:
    exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
    if exc is not None:
        log.warning("explanation event not appended to the audit trail", extra={"error": type(exc).__name__})


# ---------------------------------------------------------------------- factory


def create(ctx: BuildContext) -> ExplainStage | None:
    """Build the stage once: None when explanations are off or no route names a model object."""
    settings = ctx.config.explain
    bound = [r for r in ctx.routes if r.config.model is not None and r.config.model.object is not None]
    # One line for all such routes, their templates in the message: one line per route was noise (a service
    # with six routes logged it six times), and the route sat only in ``extra``, which plain formatters drop.
    unexplained = [r.path for r in ctx.routes if r not in bound and ReasonPolicy.of(r.policy).required]
    if unexplained:
        log.warning("policy requires explanations but %d route(s) have no model object: %s",
                    len(unexplained), ", ".join(unexplained), extra={"count": len(unexplained)})
    if not settings.enabled or not bound:
        return None
    routes = {r.index: build_route_explainer(r.index, r.config.model, r.policy, settings,
                                             base_dir=ctx.config.base_dir, protected=list(r.protected))
              for r in bound if r.config.model is not None}
    return ExplainStage(ctx, routes)
