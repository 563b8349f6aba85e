"""The guard's own endpoints under ``admin.prefix``, token-protected.

Why in the guard and not the app: oversight (stop/resume), feedback, explanations and metrics must work the
same whatever framework the wrapped app uses. Stages contribute routes through ``Stage.admin_routes()``; this
module only authenticates and dispatches.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
from http import HTTPStatus
from typing import TYPE_CHECKING

from mlguard.logs import mask_route_paths
from mlguard.oversight import operator_reason
from mlguard.problem import PROBLEM_BASE, send_problem
from mlguard.routes import route_path
from mlguard.stage import AdminRequest, AdminResponse, AdminRoute
from mlguard.types import Receive, Scope, Send

if TYPE_CHECKING:
    from mlguard.runtime import Guard

ADMIN_BODY_LIMIT = 1024 * 1024
log = logging.getLogger("mlguard.admin")


def json_response(status: int, doc: object) -> AdminResponse:
    return AdminResponse(status, json.dumps(doc, default=str).encode())


class Admin:
    """Dispatches admin requests to core and stage handlers after checking the bearer token."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.prefix = guard.config.admin.prefix
        self._prefix_slash = self.prefix + "/"
        self.token_env = guard.config.admin.token_env
        routes: list[AdminRoute] = [
            AdminRoute("GET", "/health", self._health, public=True),
            AdminRoute("GET", "/policy", self._policy),
            AdminRoute("GET", "/metrics", self._metrics),
            AdminRoute("POST", "/routes/{index}/stop", self._stop),
            AdminRoute("POST", "/routes/{index}/resume", self._resume),
        ]
        for stage in guard.stages:
            routes.extend(stage.admin_routes())
        self._routes = [(r, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", r.path) + "$"))
                        for r in routes]
        # An admin path's parameter is whatever the caller typed (an audit id, or a name or an e-mail address
        # pasted by mistake, as a new user found in the access log): logged as its template, like a guarded
        # route's (mlguard/logs.py).
        # Any other path under the prefix (an endpoint of a stage not built here, a typo) is logged as
        # "{prefix}/{unknown}": only the fixed endpoints' paths are logged as they are.
        fixed = "|".join(re.escape(r.path[1:]) for r, _ in self._routes if "{" not in r.path)
        mask_route_paths([*((self.prefix + r.path, re.compile("^" + re.escape(self.prefix) + rx.pattern[1:]))
                            for r, rx in self._routes if "{" in r.path),
                          (self.prefix + "/{unknown}", re.compile(f"^{re.escape(self.prefix)}/(?!(?:{fixed})$).+$"))])

    def handles(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self._prefix_slash)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = route_path(scope)[len(self.prefix):] or "/"
        method = scope.get("method", "GET")
        matched = [(r, m) for r, rx in self._routes if (m := rx.match(sub))]
        if not matched:
            await send_problem(send, 404, "Not found", "no such admin endpoint", "not-found")
            return
        allowed = [(r, m) for r, m in matched if r.method == method]
        if not allowed:
            await send_problem(send, 405, "Method not allowed", f"use {matched[0][0].method}", "method-not-allowed")
            return
        route, m = allowed[0]
        if not route.public and not self._authorised(scope):
            await self._record_denied(route, method)
            await send_problem(send, 401, "Unauthorized",
                               f"a valid admin bearer token (env {self.token_env}) is required", "unauthorized",
                               headers=[(b"www-authenticate", b"Bearer")])
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > ADMIN_BODY_LIMIT:
                await send_problem(send, 413, "Request body too large", "admin body over 1 MiB", "body-too-large")
                return
            if not message.get("more_body", False):
                break
        query = _parse_query(scope.get("query_string", b""))
        query.update(m.groupdict())
        resp = await route.handler(AdminRequest(method, sub, query, body))
        if route.handler != self._health:  # health keeps one document shape, 200 or 503 (see _health)
            resp = _as_problem(resp)
        headers = [(b"content-type", resp.content_type.encode()),
                   (b"content-length", str(len(resp.body)).encode())]
        headers.extend((k.encode(), v.encode()) for k, v in resp.headers)
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body, "more_body": False})

    async def _record_denied(self, route: AdminRoute, method: str) -> None:
        """Write a refused admin request to the audit trail (PCI DSS 10.2.1.4: invalid logical access
        attempts), before the 401 leaves: the endpoint's template and the method only, never the token sent.
        Waiting for the durable append also slows down anyone guessing tokens. If it cannot be written, the 401
        is answered all the same and the failure logged."""
        events = self.guard.context.shared.get("audit_events")
        if events is None:
            return
        try:
            await events.append_event("admin_denied", {"endpoint": route.path, "method": method,
                                                       "reason": "missing or invalid bearer token"})
        except Exception as exc:
            log.error("refused admin request not audited", extra={"error": type(exc).__name__})

    def _authorised(self, scope: Scope) -> bool:
        expected = os.environ.get(self.token_env, "")
        if not expected:
            return False
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                scheme, _, token = bytes(v).decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)
        return False

    async def _health(self, req: AdminRequest) -> AdminResponse:
        """``ok`` (200) unless a stage reports itself failing through ``shared["health_checks"]`` (name ->
        callable returning None or a detail without input values; the audit stage's says the store is not
        taking writes). Then ``unavailable`` (503) when any route's policy is fail_closed, since those routes
        answer 503 until it recovers, so a load balancer takes the instance out of service; ``degraded`` (200)
        when every route is fail_open: they are served, their records listed in gap records later, and taking
        the instance out would refuse what the policy chose to serve. The checks read flags the stages keep
        (no query per call): health is polled often, and must not load a store that is struggling. The 503 is
        the same JSON document as the 200, not problem+json: a probe parses one shape whatever the status."""
        checks = self.guard.context.shared.get("health_checks", {})
        failing = {name: detail for name, check in checks.items() if (detail := check()) is not None}
        status, code = "ok", 200
        if failing:
            closed = any(r.policy.failure_mode != "fail_open" for r in self.guard.table.routes)
            status, code = ("unavailable", 503) if closed else ("degraded", 200)
        return json_response(code, {"status": status, "stages": [s.name for s in self.guard.stages],
                                    "unavailable": self.guard.unavailable, "failing": failing})

    async def _metrics(self, req: AdminRequest) -> AdminResponse:
        """Prometheus exposition of the guard's registry (mlguard/metrics.py): present whenever admin is on,
        whichever stages are built, so a scrape config does not depend on the policy."""
        from mlguard.metrics import CONTENT_TYPE, render

        return AdminResponse(200, render(self.guard.context.shared), content_type=CONTENT_TYPE)

    async def _policy(self, req: AdminRequest) -> AdminResponse:
        return json_response(200, {"ids": self.guard.policy.ids, "failure_mode": self.guard.policy.failure_mode})

    def _route_index(self, req: AdminRequest) -> int | None:
        try:
            index = int(req.query.get("index", ""))
        except ValueError:
            return None
        return index if 0 <= index < len(self.guard.table.routes) else None

    async def _stop(self, req: AdminRequest) -> AdminResponse:
        return await self._oversight(req, "stop")

    async def _resume(self, req: AdminRequest) -> AdminResponse:
        return await self._oversight(req, "resume")

    async def _oversight(self, req: AdminRequest, action: str) -> AdminResponse:
        """Human oversight (EU AI Act Art 14): stop or resume a route. The action is written to the audit
        trail first; if it cannot be recorded it is refused (503) and nothing changes.

        The optional body ``{"reason": "..."}`` is kept in the audit event as the operator wrote it (checked by
        ``oversight.operator_reason``: bounded, never logged). This is the person's stop: a resume here lifts
        it and not the fairness monitor's (mlguard/oversight.py), and the answer says which stops still hold."""
        index = self._route_index(req)
        if index is None:
            return json_response(404, {"detail": "no such route index"})
        try:
            doc = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or set(doc) - {"reason"}:
            return json_response(422, {"title": "Malformed body",
                                       "detail": 'expected no body or {"reason": text}'})
        try:
            reason = operator_reason(doc.get("reason"))
        except ValueError as exc:
            return json_response(422, {"title": "Malformed body", "detail": str(exc)})
        route = self.guard.table.routes[index]
        events = self.guard.context.shared.get("audit_events")
        event_id = None
        if events is not None:
            data: dict[str, object] = {"action": action, "cause": "human", "route": route.path,
                                       "route_index": index, "by": "admin"}
            if reason:
                data["reason"] = reason
            try:
                event_id = await events.append_event("oversight", data)
            except Exception as exc:
                log.error("oversight action not audited", extra={"action": action, "error": type(exc).__name__})
                return json_response(503, {"detail": f"the {action} could not be recorded in the audit trail; "
                                                     "nothing changed"})
        try:  # applies here at once; shared with every worker on the audit store (mlguard/oversight.py)
            if action == "stop":
                self.guard.halt(index)
            else:
                self.guard.resume(index)
        except Exception as exc:
            log.error("oversight action not shared", extra={"action": action, "error": type(exc).__name__})
            return json_response(503, {"detail": f"the {action} applies to this worker only: the shared oversight "
                                                 "state could not be written", "audit_event": event_id})
        stopped = list(self.guard.oversight.stopped_by(index))
        out: dict[str, object] = {"route": index, "halted": bool(stopped), "stopped_by": stopped,
                                  "audit_event": event_id}
        if action == "resume" and "fairness" in stopped:
            out["detail"] = (f"still stopped by the fairness monitor: POST {self.prefix}/fairness/resume "
                             "(mlguard fairness resume) lifts that stop")
        return json_response(200, out)


def _as_problem(resp: AdminResponse) -> AdminResponse:
    """An error a handler answered as plain JSON (``{"detail": ...}``, some with a ``title``), as RFC 9457
    problem+json, so every error of the guard has one shape whichever stage produced it. The handler's members
    are kept; ``type``, ``title`` and ``status`` are filled in when missing."""
    if resp.status < 400 or resp.content_type != "application/json":
        return resp
    try:
        doc = json.loads(resp.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    title = str(doc.get("title") or HTTPStatus(resp.status).phrase)
    out = {"type": PROBLEM_BASE + title.lower().replace(" ", "-"), "title": title, "status": resp.status,
           "detail": str(doc.get("detail", title)), **{k: v for k, v in doc.items() if k not in ("title", "detail")}}
    return AdminResponse(resp.status, json.dumps(out, default=str).encode(), "application/problem+json",
                         resp.headers)


def _parse_query(raw: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(raw.decode("latin-1")))
