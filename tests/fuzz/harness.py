"""The fuzz harness: the guarded credit-scoring example built once, a raw ASGI driver, and the oracles.

Why a raw driver and not only httpx: chunking, slowness and disconnects must be under the test's control, and
the test must see an exception that escapes the guard as it escapes (httpx would turn some into its own errors).

Why one event loop for the whole session (a blocking portal): the guard is built once and holds engines,
an audit writer thread and per-loop futures; every request of every test runs on the portal's loop, the way a
server runs them on one loop.

Oracles (checked for every request by :meth:`FuzzEnv.check`):

* no exception escapes the guard unless the wrapped app itself raised;
* no 5xx made by the guard except a 503 refusal by policy decision (application/problem+json); a 5xx of the
  wrapped app counts as the app's own only when the bare app answers 5xx to the same request or to the very
  document the guard forwarded (a differential replay), otherwise it is the guard's;
* every 4xx/5xx the guard makes on a guarded route is application/problem+json with a JSON body (admin
  endpoints: problem+json or JSON);
* a valid application gets 200 with MLGuard-Audit-Id; a refused one never reaches the app; a client that left
  mid-body gets no response and the app is not called;
* what the wrapped app received never holds a planted value of a declared PII field or a protected attribute;
* no planted value in any guard-made response body or header, in any captured log record (the raw record:
  message, arguments, extra fields, exception text; stricter than the formatted line), no stage failure
  logged; and (checked by the tests after the traffic) none in the bytes of any file the guard wrote (audit
  database, WAL, witness, keyring, vault) nor in the decrypted export of a declared field.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import yaml
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "credit_scoring"
ADMIN_TOKEN = "fuzz-admin-token-7f3c"
GUARDED_PATH = "/predict"

# Planted values: unusual enough that a hit can only come from the request. Each sits in a declared PII field.
DECLARED: dict[str, str] = {
    "name": "Thaddeus Quornwhistle",
    "email": "t.quornwhistle@quornwhistle-mail.com",
    "phone": "415-555-0187",
    "ssn": "923-41-7765",
    "address": "7731 Brindlewood Terrace, Tucson, AZ 85719",
    "dob": "1961-08-23",
}
# Protected attributes: under ecoa they never reach the model (they are sealed in the record instead).
PROTECTED: dict[str, str] = {"sex": "Xylofemme", "race": "Quellarian"}
# Values planted in the free-text note (scanned, not declared): they must never reach a log, an error the
# guard makes or a file in clear; whether NER catches each one is detection quality, not this oracle.
NOTE_VALUES = ["Ottavia Brackenridge", "ottavia.b@brackenridge-post.com", "602-555-0143"]
NOTE = f"Co-signer {NOTE_VALUES[0]} ({NOTE_VALUES[1]}, {NOTE_VALUES[2]}) will sign on Friday."

NEVER_TO_APP = [*DECLARED.values(), *PROTECTED.values()]
NEVER_LOGGED = [*DECLARED.values(), *PROTECTED.values(), *NOTE_VALUES]

FEATURES = ["education_num", "hours_per_week", "capital_gain", "capital_loss", "is_self_employed",
            "is_government", "is_managerial_professional", "is_skilled_technical"]
PROBLEM = "application/problem+json"
REFUSAL_STATUSES = {400, 413, 415, 422}
LOG_NAMES = ("mlguard", "uvicorn", "uvicorn.error", "uvicorn.access")


SMOKE_EXAMPLES = 12  # per Hypothesis test (one per request kind): the CI smoke form stays well under a minute


def fuzz_examples(default: int) -> int:
    """Examples per Hypothesis test: MLGUARD_FUZZ_EXAMPLES (the long form sets it), else the CI smoke default."""
    raw = os.environ.get("MLGUARD_FUZZ_EXAMPLES", "")
    return int(raw) if raw.strip() else default


def fuzz_settings(default: int = SMOKE_EXAMPLES) -> settings:
    """Hypothesis settings for fuzz tests: no deadline (the first request may wait for the model), no example
    database (nothing written into the repository), deterministic unless the long form asks for variety."""
    long_form = bool(os.environ.get("MLGUARD_FUZZ_EXAMPLES", "").strip())
    return settings(
        max_examples=fuzz_examples(default),
        deadline=None,
        database=None,
        derandomize=not long_form or bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                               HealthCheck.filter_too_much],
        print_blob=True,
    )


# ---------------------------------------------------------------------------------------------- requests


@dataclass
class FuzzRequest:
    """One generated request, as bytes and timing: what a client would put on the wire."""

    kind: str
    method: str = "POST"
    path: str = GUARDED_PATH
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    delay: float = 0.0  # seconds between chunks: a slow client
    disconnect_after: int | None = None  # receive() reports http.disconnect after this many chunks
    valid: bool = False  # a well-formed application: must be answered 200 with an audit id
    query: bytes = b""

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Outcome:
    """What came back: the response as the client saw it, or the exception that escaped."""

    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    error: BaseException | None = None
    timed_out: bool = False
    app_own_error: bool = False  # a 5xx of the wrapped app that the bare app gives for the same request too
    app_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")


class SpyApp:
    """Wraps ``model_app``: records every body and the response start it sent, per request (keyed by a token
    the driver puts in the scope), then replays the body so the model app runs unchanged."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: dict[int, list[dict[str, Any]]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        call: dict[str, Any] = {"body": b"", "status": None, "raised": False, "path": scope.get("path")}
        self.calls.setdefault(scope.get("fuzz_id", 0), []).append(call)
        chunks: list[bytes] = []
        disconnected = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        call["body"] = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                if disconnected:
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": call["body"], "more_body": False}
            return dict(await receive())

        async def spy_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                call["status"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, replay, spy_send)
        except BaseException:
            call["raised"] = True
            raise


class LogCapture(logging.Handler):
    """Keeps every record of the guard's and server-style loggers (DEBUG and up) and warnings from anyone."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.seen = 0  # records from the mlguard loggers: proves the capture is wired (not vacuous)
        self._texts_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name} {record.getMessage()} {record.__dict__!r}"
        except Exception as exc:  # a record that cannot format is itself worth seeing
            text = f"{record.name} UNFORMATTABLE {type(exc).__name__} {record.__dict__!r}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        with self._texts_lock:
            self.texts.append(text)
            self.seen += record.name.startswith("mlguard")

    def take(self) -> list[str]:
        with self._texts_lock:
            out, self.texts = self.texts, []
        return out


@dataclass
class Stats:
    """Counts for the summary printed at the end of the run (and written for bench/fuzz.py)."""

    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    guard_server_errors: int = 0
    app_server_errors: int = 0
    crashes: int = 0
    planted_hits: int = 0
    stage_failures: int = 0
    requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "kinds": dict(sorted(self.kinds.items())),
                "statuses": dict(sorted(self.statuses.items())), "guard_server_errors": self.guard_server_errors,
                "app_server_errors": self.app_server_errors, "crashes": self.crashes,
                "planted_hits": self.planted_hits, "stage_failures": self.stage_failures}


def find_planted(data: bytes | str, values: list[str]) -> list[str]:
    """The planted values found in ``data`` (text, or bytes in UTF-8 and as JSON-escaped ASCII)."""
    if isinstance(data, str):
        return [v for v in values if v in data]
    hits = []
    for v in values:
        if v.encode() in data or json.dumps(v)[1:-1].encode() in data:
            hits.append(v)
    return hits


class FuzzEnv:
    """The guarded example, built once, plus the oracles. Use as ``with FuzzEnv.open(tmp) as env``."""

    def __init__(self, work: Path, portal: anyio.from_thread.BlockingPortal, logs: LogCapture) -> None:
        self.work = work
        self.portal = portal
        self.stats = Stats()
        self.logs = logs
        self._next_id = 0
        self.config_path = self._write_config()
        from examples.credit_scoring.app import model_app
        from mlguard.middleware import GuardMiddleware
        from mlguard.runtime import Guard

        self.spy = SpyApp(model_app)
        self.guard = portal.call(lambda: Guard(self.config_path))
        self.app = GuardMiddleware(self.spy, guard=self.guard)
        self.store_url = f"sqlite:///{work / 'audit.db'}"

    def _write_config(self) -> Path:
        """The example's mlguard.yaml, copied with every file it writes moved into ``work``."""
        cfg = yaml.safe_load((EXAMPLE_DIR / "mlguard.yaml").read_text(encoding="utf-8"))
        cfg["audit"].update({"store": f"sqlite:///{self.work / 'audit.db'}",
                             "keyring": str(self.work / "fuzz.keyring"),
                             "witness": str(self.work / "witness.log")})
        cfg["pii_engine"] = {**cfg.get("pii_engine", {}), "vault_path": str(self.work / "vault.db")}
        cfg["log_level"] = "DEBUG"  # the Guard sets the mlguard logger to this: every record is captured
        for route in cfg["routes"]:
            model = route.get("model") or {}
            if "background" in model:
                model["background"] = str((EXAMPLE_DIR / model["background"]).resolve())
        path = self.work / "mlguard.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    @classmethod
    @contextmanager
    def open(cls, work: Path) -> Iterator[FuzzEnv]:
        saved = {k: os.environ.get(k) for k in ("MLGUARD_EXAMPLE_CACHE", "MLGUARD_ADMIN_TOKEN")}
        os.environ["MLGUARD_EXAMPLE_CACHE"] = str(work.parent / "model-cache")
        os.environ["MLGUARD_ADMIN_TOKEN"] = ADMIN_TOKEN
        loggers = [logging.getLogger(n) for n in LOG_NAMES]
        levels = [lg.level for lg in loggers]
        root = logging.getLogger()
        handler = LogCapture()
        with anyio.from_thread.start_blocking_portal("asyncio") as portal:
            env = None
            root.addHandler(handler)
            try:
                for lg in loggers:
                    lg.setLevel(logging.DEBUG)
                env = cls(work, portal, handler)
                yield env
            finally:
                if env is not None:
                    portal.call(env.guard.aclose)
                root.removeHandler(handler)
                for lg, level in zip(loggers, levels, strict=True):
                    lg.setLevel(level)
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    # ------------------------------------------------------------------------------------------ driving

    def send(self, req: FuzzRequest, timeout: float = 60.0) -> Outcome:
        """Run one request through the guard on the portal's loop; check every oracle; return the outcome."""
        self._next_id += 1
        out: Outcome = self.portal.call(self._drive, req, self._next_id, timeout)
        out.app_calls = self.spy.calls.pop(self._next_id, [])
        self.check(req, out)
        return out

    def send_bare(self, req: FuzzRequest, timeout: float = 60.0) -> Outcome:
        """The same request to the bare ``model_app`` (no guard): the differential for the app's own errors."""
        out: Outcome = self.portal.call(self._drive, req, 0, timeout, self.spy.app)
        return out

    async def _drive(self, req: FuzzRequest, fuzz_id: int, timeout: float, app: Any = None) -> Outcome:
        out = Outcome()
        done = anyio.Event()
        sent_chunks = 0
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": req.method, "scheme": "http", "path": req.path, "raw_path": req.path.encode(),
                 "root_path": "", "query_string": req.query, "headers": list(req.headers),
                 "client": ("127.0.0.1", 50123), "server": ("testserver", 80), "fuzz_id": fuzz_id}
        chunks = list(req.chunks) or [b""]

        async def receive() -> dict[str, Any]:
            nonlocal sent_chunks
            if req.disconnect_after is not None and sent_chunks >= req.disconnect_after:
                return {"type": "http.disconnect"}
            if sent_chunks < len(chunks):
                if sent_chunks and req.delay:
                    await anyio.sleep(req.delay)
                else:
                    await anyio.sleep(0)  # always yield: a receive() is a suspension point on a real server
                chunk = chunks[sent_chunks]
                sent_chunks += 1
                return {"type": "http.request", "body": chunk, "more_body": sent_chunks < len(chunks)}
            await done.wait()  # as a server does: the next event is the disconnect after the response
            return {"type": "http.disconnect"}

        started = False
        body: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                assert not started, "two http.response.start messages"
                started = True
                out.status = int(message["status"])
                out.headers = {bytes(k).lower(): bytes(v) for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                assert started, "http.response.body before http.response.start"
                assert not done.is_set(), "http.response.body after the response was complete"
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            with anyio.fail_after(timeout):
                await (app or self.app)(scope, receive, send)
        except TimeoutError:
            out.timed_out = True
        except Exception as exc:
            out.error = exc
        finally:
            done.set()
        out.body = b"".join(body)
        return out

    # ------------------------------------------------------------------------------------------ oracles

    def check(self, req: FuzzRequest, out: Outcome) -> None:
        """Every oracle of the module docstring for one request; counts first, then asserts."""
        st = self.stats
        st.requests += 1
        st.kinds[req.kind] += 1
        st.statuses[str(out.status) if out.status is not None else "none"] += 1
        problems: list[str] = []
        app_raised = any(c["raised"] for c in out.app_calls)
        app_statuses = [c["status"] for c in out.app_calls if c["status"] is not None]
        from_app = bool(app_statuses) and out.status == app_statuses[-1]
        admin = req.path.startswith("/mlguard")
        guarded = _guarded(req)

        if out.timed_out:
            problems.append("the request hung (no end within the timeout)")
        if out.error is not None and not app_raised:
            st.crashes += 1
            problems.append(f"exception escaped the guard: {type(out.error).__name__}: {out.error}")
        out.app_own_error = False
        if out.status is not None and out.status >= 500:
            if from_app:
                # The app's own 5xx, not the guard's doing: the bare app answers 5xx to the same request, or to
                # the very document the guard forwarded (valid JSON any client could have sent it directly).
                bare = self.send_bare(req)
                if (bare.status is None or bare.status < 500) and out.app_calls:
                    fwd = out.app_calls[-1]["body"]
                    headers = [(k, v) for k, v in req.headers if k != b"content-length"]
                    bare = self.send_bare(FuzzRequest(kind="bare-replay", headers=[
                        *headers, (b"content-length", str(len(fwd)).encode())], chunks=[fwd]))
                if bare.status is not None and bare.status >= 500:
                    st.app_server_errors += 1
                    out.app_own_error = True
                else:
                    st.guard_server_errors += 1
                    problems.append(f"the wrapped app answered {out.status} behind the guard, {bare.status} bare")
            elif not (out.status == 503 and out.content_type == PROBLEM):
                st.guard_server_errors += 1
                problems.append(f"the guard answered {out.status} ({out.content_type})")
        if out.status is not None and out.status >= 400 and not from_app and (guarded or admin):
            wanted = {PROBLEM} if guarded else {PROBLEM, "application/json"}
            if out.content_type not in wanted:
                problems.append(f"guard error {out.status} has content type {out.content_type!r}")
            try:
                json.loads(out.body)
            except ValueError:
                problems.append(f"guard error {out.status} body is not JSON")
        if (guarded and out.status is not None and out.status >= 400 and not from_app
                and out.status not in REFUSAL_STATUSES | {503}):
            problems.append(f"unexpected guard status {out.status}")
        if guarded and out.status in (400, 413, 415, 422) and not from_app and out.app_calls:
            problems.append("a refused request reached the app")
        if guarded and req.disconnect_after is not None and req.disconnect_after < len(req.chunks):
            if out.app_calls:
                problems.append("the app was called although the client left before the body was complete")
            if out.status is not None:
                problems.append(f"a response ({out.status}) was sent to a client that had gone")
        if req.valid:
            if out.status != 200:
                problems.append(f"valid application answered {out.status}: {out.body[:300]!r}")
            if not out.headers.get(b"mlguard-audit-id"):
                problems.append("valid application answered without MLGuard-Audit-Id")
        for call in out.app_calls:
            if guarded and (hits := find_planted(call["body"], NEVER_TO_APP)):
                st.planted_hits += len(hits)
                problems.append(f"the wrapped app received planted values {hits}")
        banned = NEVER_TO_APP if from_app else NEVER_LOGGED
        if admin and out.status == 200:
            # By design the fairness report and metrics (admin token) name the groups they measure, i.e. the
            # protected attributes' values (capped in number and length by the window); nothing else may show.
            banned = [v for v in banned if v not in PROTECTED.values()]
        if hits := find_planted(out.body, banned):
            st.planted_hits += len(hits)
            problems.append(f"planted values {hits} in the response body")
        if hits := find_planted(b"".join(v for v in out.headers.values()), NEVER_LOGGED):
            st.planted_hits += len(hits)
            problems.append(f"planted values {hits} in response headers")
        for text in self.logs.take():
            if hits := find_planted(text, NEVER_LOGGED):
                st.planted_hits += len(hits)
                problems.append(f"planted values {hits} in a log record: {text[:200]}")
            if "stage failed" in text:
                st.stage_failures += 1
                problems.append(f"a stage failed: {text[:300]}")
        if problems:
            sent = [c["body"][:600] for c in out.app_calls]
            raise AssertionError(f"[{req.kind}] {req.method} {req.path} status={out.status}: "
                                 + "; ".join(problems) + f"\nrequest body: {req.body[:600]!r}\napp received: {sent!r}")

    def files_hits(self) -> dict[str, list[str]]:
        """Planted values found in the bytes of any file under the work directory (db, -wal, -shm, witness...)."""
        found: dict[str, list[str]] = {}
        for path in sorted(self.work.rglob("*")):
            if path.is_file() and path.name != "mlguard.yaml":
                hits = find_planted(path.read_bytes(), NEVER_LOGGED)
                if hits:
                    found[path.name] = hits
        return found


def _guarded(req: FuzzRequest) -> bool:
    """Whether the guard must treat ``req`` as the guarded route's exchange, written independently of
    mlguard/routes.py: the method in any case (or a method-override header naming POST), and the path with
    repeated slashes, dot segments, ``;params`` and letter case ignored (README "Guard your own service")."""
    path = req.path.split("?", 1)[0]
    segments: list[str] = []
    for seg in path.split("/"):
        seg = seg.split(";", 1)[0]
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    overrides = {v.decode("latin-1").strip().upper() for k, v in req.headers
                 if k.lower() in (b"x-http-method-override", b"x-http-method", b"x-method-override")}
    method_ok = req.method.upper() == "POST" or "POST" in overrides
    return method_ok and "/" + "/".join(segments).casefold() == GUARDED_PATH
