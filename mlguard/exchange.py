"""Exchange: one per guarded request; runs the pipeline top to bottom.

read body (capped) > parse JSON (limits) > split subject and protected attributes > stages.before_app (PII)
> decide > call the app with the (possibly rewritten) body > capture its response > stages.after_app
(explain, fairness, response scan) > decide > stages.finish (audit) > decide > send (+ MLGuard-* headers).
A ``before_app`` that raises RequestRejected (the PII scan budget) refuses the input as a body limit does: its
problem+json, the app not called, no failure_mode involved.

Why a per-request object: all state of one request lives here and dies with it; the middleware and the stages
hold only what is built once. Nothing here logs or raises with an input value.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from mlguard import body as bodyio
from mlguard.errors import ClientDisconnected, MLGuardError, RequestRejected, StageError
from mlguard.ids import uuid7
from mlguard.policy.decision import PROCEED, Decision, Evidence, FairnessStatus, Phase, Rules, decide
from mlguard.problem import send_problem
from mlguard.types import JSON, ASGIApp, Finding, Message, Outcome, Receive, Scope, Send, StageFailure

if TYPE_CHECKING:
    from mlguard.routes import CompiledRoute
    from mlguard.runtime import Guard

log = logging.getLogger("mlguard.exchange")


@dataclass(slots=True)
class Exchange:
    """Everything known about one guarded request. Stages read and write the fields documented here."""

    guard: Guard
    route: CompiledRoute
    scope: Scope
    audit_id: str = field(default_factory=lambda: str(uuid7()))
    started_wall: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    raw_body: bytes = b""
    original: JSON = None  # the parsed request as the client sent it: never logged, never to the model
    document: JSON = None  # what the app will receive; stages replace it (copy-on-write)
    document_changed: bool = False
    subject: str | None = None
    protected: dict[str, Any] = field(default_factory=dict)  # read from ``original`` before redaction
    findings: list[Finding] = field(default_factory=list)
    status: int | None = None
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_start_extra: dict[str, Any] = field(default_factory=dict)  # other keys of the app's start message
    response_held: list[Message] = field(default_factory=list)  # what the app sent after its body (trailers)
    response_body: bytes = b""
    response_doc: JSON = None
    response_modified: bool = False
    # members a stage added to the response body -> the record section that already holds them (the audit
    # record's "output" is the app's own output; the client's body is output + these members)
    attached: dict[str, str] = field(default_factory=dict)
    inspected: bool = False
    # the app's response went to the client as the app sent it (streamed, or cut short): nothing after the app can
    # refuse it any more, so a failed record is a gap of a *served* exchange whatever the failure mode
    passed_through: bool = False
    outcome: Outcome | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    failures: list[StageFailure] = field(default_factory=list)
    unredacted: bool = False  # set by the PII stage when it failed with no redacted document: never passed on
    rejection: RequestRejected | None = None
    decision: Decision = PROCEED
    app_called: bool = False
    app_error: str | None = None
    disconnected: bool = False
    record: dict[str, Any] = field(default_factory=dict)  # sections stages add to the audit record
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.scope.get("method", ""))

    @property
    def path(self) -> str:
        return str(self.scope.get("path", ""))

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def set_document(self, doc: JSON) -> None:
        """Replace what the app receives; stages call this instead of mutating ``original``."""
        self.document = doc
        self.document_changed = True

    # ------------------------------------------------------------------ the pipeline

    async def run(self, app: ASGIApp, receive: Receive, send: Send) -> None:
        guard = self.guard
        limits = guard.config.limits
        try:
            # The content type is checked only for a body with bytes; an empty one is "no document" (None):
            # the app gets it unchanged, the stages find nothing to redact, the record's input is null.
            self.raw_body = await bodyio.read_body(self.scope, receive, limits.max_body_bytes,
                                                   check=lambda: bodyio.check_content_type(self.scope, limits))
            self.original = bodyio.parse_json(self.raw_body, limits) if self.raw_body else None
        except RequestRejected as exc:
            await self._reject(exc, send)
            return
        except ClientDisconnected:
            self.disconnected = True
            self.status = 499
            await self._finish_stages()
            return

        self.document = self.original
        self._split_subject_and_protected()

        for stage in guard.stages:
            await self._run_hook(stage.name, "before_app", stage.before_app)
            if self.rejection is not None:  # a stage refused the input (PII scan budget): as a body limit
                self.protected.clear()  # read from a refused input: not kept in the record
                await self._reject(self.rejection, send)
                return
        if await self._refused("request", send):
            return

        await self._call_app(app, receive, send)

    async def _call_app(self, app: ASGIApp, receive: Receive, send: Send) -> None:
        guard = self.guard
        try:
            payload = bodyio.dump_json(self.document) if self.document_changed else self.raw_body
        except (TypeError, ValueError) as exc:  # a stage left a value JSON cannot carry (NaN, an object)
            await self._unserialisable("request", exc, send)
            return
        scope = bodyio.with_content_length(self.scope, len(payload)) if self.document_changed else self.scope
        capture = bodyio.ResponseCapture(send, self._pass_headers(), guard.config.limits.max_body_bytes * 8)
        self.app_called = True
        try:
            try:
                await app(scope, bodyio.replay_receive(payload, receive), capture)
            finally:
                if scope is not self.scope:
                    _copy_back(scope, self.scope)
        except BaseException as exc:
            # The app's own error propagates exactly as without the guard; the record notes its class only.
            self.app_error = type(exc).__name__
            self.status = capture.response.status or 500
            with anyio.CancelScope(shield=True):
                await self._finish_stages()
            await capture.flush_partial()
            raise
        resp = capture.response
        self.status = resp.status
        self.response_headers = resp.headers
        self.response_start_extra = resp.start_extra
        self.response_held = resp.held
        if resp.streamed or not resp.complete:
            # Streamed through, or the app returned mid-response: hand on what it sent, as without the guard.
            self.inspected = False
            self.passed_through = True
            if resp.complete:
                _not_inspected(self, "not_json_or_too_large")
            await self._finish_stages()
            await capture.flush_partial()
            return
        self.response_body = resp.body
        self.response_doc = _parse_response(resp.body)
        self.inspected = self.response_doc is not None
        if not self.inspected:
            _not_inspected(self, "encoded" if bodyio.header({"headers": resp.headers}, b"content-encoding")
                           else "unparsable")
        if self.inspected:
            self.outcome = _read_outcome(self)
            for stage in guard.stages:
                await self._run_hook(stage.name, "after_app", stage.after_app)
        if await self._refused("response", send):
            return
        if self.response_modified:  # written now, so a failure is answered before the record is made
            try:
                self.response_body = bodyio.dump_json(self.response_doc)
            except (TypeError, ValueError) as exc:
                await self._unserialisable("response", exc, send)
                return
        await self._finish_stages()
        if await self._refused("finish", send):
            return
        await self._send_response(send)

    # ------------------------------------------------------------------ helpers

    def _split_subject_and_protected(self) -> None:
        """Read the subject and the protected attributes from the original request, before any redaction.

        Whether protected attributes reach the model is the policy's call (``pii.protected_to_model``); when they
        must not, they are removed from the document the app receives.
        """
        route = self.route
        if route.subject is not None:
            value = route.subject.first(self.original)
            self.subject = None if value is None or isinstance(value, dict | list) else str(value)
        if not route.protected:
            return
        for name, path in route.protected.items():
            self.protected[name] = path.first(self.original)
        if not route.policy.pii.protected_to_model:
            locations = [loc for path in route.protected.values() for loc, _ in path.find(self.document) if loc]
            if locations:
                doc, removed = _without(self.document, locations)
                if removed:
                    self.set_document(doc)

    async def _reject(self, exc: RequestRejected, send: Send) -> None:
        """Answer a refused input with its problem+json, after the finish stages ran."""
        self.rejection = exc
        self.status = exc.status
        await self._finish_stages()
        await send_problem(send, exc.status, exc.title, exc.detail, exc.type_suffix,
                           instance=self.audit_id, headers=self._guard_headers(), limit=exc.limit)

    async def _run_hook(self, name: str, phase: str, hook: Any) -> None:
        t0 = time.perf_counter()
        try:
            await hook(self)
        except Exception as exc:
            if phase == "before_app" and isinstance(exc, RequestRejected):
                # A refusal of the input, not a failure of the stage: no failure_mode applies (run answers it).
                self.rejection = exc
            else:
                self._record_failure(name, phase, exc)
        finally:
            key = f"{name}.{phase}"
            self.timings_ms[key] = self.timings_ms.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0

    def _record_failure(self, name: str, phase: str, exc: Exception) -> None:
        # Our own errors keep input values out of their messages; foreign ones may not, so only the class.
        message = str(exc) if isinstance(exc, MLGuardError) else "unexpected error in stage"
        self.failures.append(StageFailure(name, phase, type(exc).__name__, message))
        log.error("stage failed", extra={"stage": name, "phase": phase, "error": type(exc).__name__,
                                          "audit_id": self.audit_id})

    async def _finish_stages(self) -> None:
        for stage in self.guard.stages:
            await self._run_hook(stage.name, "finish", stage.finish)

    def _evidence(self, phase: Phase) -> Evidence:
        failed = tuple(dict.fromkeys(f.stage for f in self.failures if _phase_of(f.phase) == phase))
        status = self.record.get("fairness", {}).get("status", "off")
        fairness: FairnessStatus = status if status in ("ok", "warn", "violation", "insufficient") else "off"
        # the explain stage's record section says whether an unfavourable decision lacks complete lawful reasons
        explanation = self.record.get("explanation", {})
        finding = explanation.get("reasons_finding") or {}
        return Evidence(phase=phase, failed_stages=failed, halted=self.guard.is_halted(self.route),
                        fairness_status=fairness, unredacted=self.unredacted,
                        reasons_incomplete=explanation.get("reasons_incomplete") is True,
                        reasons_finding=str(finding.get("code") or ""))

    async def _refused(self, phase: Phase, send: Send) -> bool:
        policy = self.route.policy
        rules = Rules(failure_mode=policy.failure_mode, fairness_action=policy.fairness.action,
                      reasons_required=policy.explanations.reasons_on_adverse,
                      reasons_policy=",".join(policy.origin("explanations.reasons_on_adverse")))
        decision = decide(self._evidence(phase), rules)
        if decision.gap or decision.refused:
            self.decision = decision
        if not decision.refused:
            return False
        self.status = decision.status
        if phase != "finish":
            await self._finish_stages()
        await send_problem(send, decision.status or 503, decision.title, decision.detail,
                           decision.reason.replace("_", "-"), instance=self.audit_id,
                           headers=self._guard_headers())
        return True

    def _guard_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"mlguard-audit-id", self.audit_id.encode()),
                   (b"mlguard-policy", ",".join(self.route.policy.ids).encode())]
        headers.extend((k.lower().encode(), v.encode("latin-1", "replace")) for k, v in self.extra_headers.items())
        return headers

    def _pass_headers(self) -> list[tuple[bytes, bytes]]:
        return self._guard_headers()

    async def _unserialisable(self, phase: Phase, exc: Exception, send: Send) -> None:
        """A document a stage rewrote cannot be written as JSON: answer 500 problem+json (the guard's own
        fault, whatever the failure mode: there is nothing safe to pass on) after the finish stages ran."""
        self._record_failure("core", "before_app" if phase == "request" else "after_app", exc)
        self.status = 500
        await self._finish_stages()
        await send_problem(send, 500, "Internal guard error",
                           f"the guard could not write the {phase} it rewrote as JSON", "unserialisable",
                           instance=self.audit_id, headers=self._guard_headers())

    async def _send_response(self, send: Send) -> None:
        body = self.response_body
        headers = [(k, v) for k, v in self.response_headers]
        if self.response_modified:  # response_body holds the rewritten document (written in run)
            # what described the app's bytes no longer describes these: the length, and the validators of
            # caches (an ETag of the app's body would let a cache serve it for ours, or ours for it)
            headers = [(k, v) for k, v in headers if k.lower() not in _BODY_BOUND]
            headers.append((b"content-length", str(len(body)).encode()))
        headers.extend(self._guard_headers())
        headers.append((b"mlguard-inspected", b"true" if self.inspected else b"false"))
        await send({**self.response_start_extra, "type": "http.response.start", "status": self.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        for message in self.response_held:  # trailers, after the body as the app sent them
            await send(message)


_BODY_BOUND = frozenset({b"content-length", b"etag", b"content-md5", b"digest", b"content-digest",
                         b"repr-digest"})


def _copy_back(mine: Scope, theirs: Scope) -> None:
    """What the app wrote into the copy of the scope it was given (a rewritten body needs its own
    Content-Length), written into the server's scope too: Starlette and FastAPI record the matched ``route``,
    ``endpoint`` and ``path_params`` there, and an outer middleware (OpenTelemetry's ``http.route``, Sentry's
    transaction name) read them as missing only on requests whose body the guard had rewritten."""
    for key, value in mine.items():
        if key != "headers" and theirs.get(key) is not value:
            theirs[key] = value


def _without(doc: JSON, locations: list[tuple[str | int, ...]]) -> tuple[JSON, bool]:
    """``doc`` without the object members at ``locations``, copying only the containers on their paths (the
    original stays untouched: it is what the client sent). Why not deepcopy: it copied the whole request, every
    guarded request, to delete one or two members."""
    copied: dict[int, Any] = {}

    def own(node: Any) -> Any:
        mine = copied.get(id(node))
        if mine is None:
            mine = copied[id(node)] = dict(node) if isinstance(node, dict) else list(node)
            copied[id(mine)] = mine  # already ours
        return mine

    if not isinstance(doc, dict | list):
        return doc, False
    root = own(doc)
    removed = False
    for location in locations:
        parent = root
        for part in location[:-1]:
            try:
                child = parent[part]
            except (KeyError, IndexError, TypeError):  # an enclosing member was removed by an earlier location
                break
            if not isinstance(child, dict | list):
                break
            parent[part] = child = own(child)
            parent = child
        else:
            last = location[-1]
            if isinstance(parent, dict) and last in parent:
                del parent[last]
                removed = True
    return root, removed


def _phase_of(hook_phase: str) -> Phase:
    return {"before_app": "request", "after_app": "response"}.get(hook_phase, "finish")  # type: ignore[return-value]


def _not_inspected(ex: Exchange, reason: str) -> None:
    """Say once per route and reason (per process) that a route whose policy needs its responses (a model
    binding: explanation, fairness count; or response scanning) sends some it cannot read.

    Why: a GZipMiddleware inside the guard, a text/plain answer or a response over the inspection cap went
    through marked ``MLGuard-Inspected: false`` and nothing else: under ecoa no reasons, under pci_dss no masked
    PAN, and no line in any log. The reason names the kind, never content."""
    route = ex.route
    if route.config.model is None and not getattr(route.policy.pii, "scan_response", False):
        return
    key = (route.index, reason)
    if key in ex.guard.warned:
        return
    ex.guard.warned.add(key)
    log.warning("responses of a guarded route are not inspected: explanation, fairness count and response "
                "scanning skipped for them (see MLGuard-Inspected)",
                extra={"route": route.path, "kind": reason})


def _parse_response(raw: bytes) -> JSON:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _read_outcome(ex: Exchange) -> Outcome | None:
    route = ex.route
    if route.output is None and route.favorable is None:
        return None
    score = route.output.first(ex.response_doc) if route.output else None
    fav = route.favorable.first(ex.response_doc) if route.favorable else None
    return Outcome(
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
        favorable=fav if isinstance(fav, bool) else None,
    )


__all__ = ["Exchange", "StageError"]
