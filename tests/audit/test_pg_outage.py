"""PostgreSQL STOPPED mid-load, not just one killed connection: fail_closed answers 503 without PII, and the
guard recovers by itself once the database is back.

Stopping the shared cluster would break every other test running beside this one, so the store talks to
PostgreSQL through a TCP proxy on 127.0.0.1 that this test owns. Cutting the proxy closes every open
connection and refuses new ones (what clients see when the server stops); restoring it listens again on the
same port (the server is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.keys import Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard

PLANTED = {"name": "Ottoline Wexcombe", "id": "SUBJ-PG-OUTAGE-5521", "sex": "Plantedfemale"}


class CuttableProxy:
    """A TCP proxy 127.0.0.1:<port> -> target, with cut() (drop all, refuse new) and restore(); freeze() holds
    whatever either side sends, acknowledged and never delivered, until thaw() (a server alive on the network
    that does not answer: stopped with SIGSTOP, or hung)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.restore()

    def restore(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def cut(self) -> None:
        if self._listener is not None:
            # new connections are refused; shutdown first: a close alone leaves the socket listening while the
            # accept thread is blocked on it
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:  # open connections drop
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


async def model_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"score":0.7,"approved":true}'})


def fail_closed_guard(tmp_path: Path, url: str, *, audit: dict[str, Any] | None = None, **config: Any) -> Guard:
    """A guard with only the audit stage, sync durability on ``url``, its route fail_closed."""
    Keyring.create(tmp_path / "k.keyring")
    cfg = {"policies": ["base"], "base_dir": str(tmp_path),
           "audit": {"store": url, "keyring": "./k.keyring", "durability": "sync", **(audit or {})},
           "routes": [{"path": "/p", "subject": "$.id", "protected": {"sex": "$.sex"},
                       "pii": {"$.name": "PERSON"}, "model": {"output": "$.score"}}], **config}
    guard = Guard(cfg, stages=["audit"])
    route = guard.table.routes[0]
    route.policy = route.policy.model_copy(update={"failure_mode": "fail_closed"})
    return guard


def body(i: int) -> dict[str, Any]:
    return {"id": PLANTED["id"], "name": PLANTED["name"], "sex": PLANTED["sex"], "i": i}


@pytest.mark.postgres
@pytest.mark.anyio
async def test_postgres_stopped_mid_load_then_back(tmp_path: Path, proxied_url: tuple[str, CuttableProxy],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mlguard")
    url, proxy = proxied_url
    guard = fail_closed_guard(tmp_path, url, admin={"enabled": False})
    app = GuardMiddleware(model_app, guard=guard)
    statuses: dict[str, list[int]] = {"before": [], "during": [], "after": []}
    ok_ids: list[str] = []
    phase = "before"
    refused: list[httpx.Response] = []

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        async def worker(k: int, stop: asyncio.Event) -> None:
            i = 0
            while not stop.is_set():
                r = await client.post("/p", json=body(k * 100_000 + i))
                statuses[phase].append(r.status_code)
                if r.status_code == 200:
                    ok_ids.append(r.headers["mlguard-audit-id"])
                elif len(refused) < 50:
                    refused.append(r)
                i += 1
                await asyncio.sleep(0.002)

        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker(k, stop)) for k in range(8)]
        await asyncio.sleep(0.4)
        phase = "during"
        proxy.cut()  # PostgreSQL "stops" with requests in flight
        await asyncio.sleep(1.0)
        phase = "after"
        proxy.restore()  # and comes back on the same address
        recovered = False
        for _ in range(200):
            await asyncio.sleep(0.05)
            if statuses["after"][-8:].count(200) == 8:
                recovered = True
                break
        stop.set()
        await asyncio.gather(*tasks)
    await guard.aclose()

    assert statuses["before"] and set(statuses["before"]) == {200}, statuses["before"]
    assert 503 in statuses["during"], "no request was refused while PostgreSQL was down"
    assert set(statuses["during"]) <= {200, 503}
    assert recovered, f"the guard did not recover by itself: last statuses {statuses['after'][-10:]}"
    for r in refused:
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
        assert not any(v in r.text for v in PLANTED.values())
    assert not any(v in caplog.text for v in PLANTED.values())

    reader = AuditReader(url, tmp_path / "k.keyring")
    try:
        missing = [a for a in ok_ids if reader.get(a) is None]
    finally:
        reader.store.close()
    assert not missing, f"{len(missing)} answered requests have no record"


@pytest.mark.postgres
@pytest.mark.anyio
async def test_postgres_that_stops_answering_is_bounded_then_back(tmp_path: Path,
                                                                  proxied_url: tuple[str, CuttableProxy],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The server stays on the network but answers nothing (no reset, so TCP keepalives never fire): the request
    whose batch is in its hands is answered 503 after audit.write_timeout, the next ones at once, health says
    StoreTimeout; once it answers again the guard serves again by itself (tests/audit/test_write_timeout.py
    checks the gap records on SQLite)."""
    caplog.set_level(logging.DEBUG, logger="mlguard")
    url, proxy = proxied_url
    guard = fail_closed_guard(tmp_path, url, audit={"lock_timeout": 0.5, "write_timeout": 1.0})
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/p", json=body(0))).status_code == 200
        proxy.freeze()
        t0 = time.monotonic()
        stuck = await asyncio.wait_for(client.post("/p", json=body(1)), 15)
        assert stuck.status_code == 503 and 1.0 <= time.monotonic() - t0 < 10
        t1 = time.monotonic()
        at_once = await client.post("/p", json=body(2))
        assert at_once.status_code == 503 and time.monotonic() - t1 < 0.5
        health = await client.get("/mlguard/health")
        assert health.status_code == 503 and health.json()["failing"]["audit"]["error"] == "StoreTimeout"
        for r in (stuck, at_once):
            assert r.headers["content-type"].startswith("application/problem+json")
            assert not any(v in r.text for v in PLANTED.values())
        proxy.thaw()
        served = None
        for _ in range(200):
            await asyncio.sleep(0.05)
            served = await client.post("/p", json=body(3))
            if served.status_code == 200:
                break
        assert served is not None and served.status_code == 200, "the guard did not recover by itself"
    await guard.aclose()
    assert not any(v in caplog.text for v in PLANTED.values())
