"""kill -9 of the SERVING process under load (uvicorn + GuardMiddleware, audit in sync mode).

Every request whose 2xx answer reached the client has its record (found by its MLGuard-Audit-Id with
AuditReader and the keyring); after each restart the server takes requests again and the log verifies. Then a
torn tail (the WAL cut short after a kill, losing committed records) is detected by verify through the witness,
never silently accepted. 3 rounds by default; MLGUARD_CRASH_ROUNDS=20 for the full form.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import yaml

from mlguard.audit.chain import Witness
from mlguard.audit.reader import AuditReader
from mlguard.audit.store.base import open_store
from mlguard.audit.verify import verify_log
from mlguard.keys import Keyring

ROUNDS = int(os.environ.get("MLGUARD_CRASH_ROUNDS", "3"))
ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import json, sys
    import uvicorn
    from mlguard.middleware import GuardMiddleware

    async def model(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        out = json.dumps({"score": 0.7, "approved": True}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    app = GuardMiddleware(model, config=sys.argv[1])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", lifespan="off",
                access_log=False)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(d: Path) -> Path:
    Keyring.create(d / "k.keyring")
    cfg = {"policies": ["base"], "admin": {"enabled": False},
           "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring", "witness": "./witness.jsonl",
                     "durability": "sync", "checkpoint_every": 40},
           "routes": [{"path": "/p", "subject": "$.id", "protected": {"sex": "$.sex"},
                       "model": {"output": "$.score", "favorable": "$.approved"}}]}
    path = d / "mlguard.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


async def _load(port: int, acked: list[str], stop: asyncio.Event, tag: str) -> None:
    """16 concurrent clients; an audit id counts as acknowledged only once its 2xx response was read."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        async def one(k: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    r = await client.post("/p", json={"id": f"{tag}-{k}-{i}", "sex": "F", "x": i})
                except httpx.HTTPError:
                    return  # the server is gone
                if 200 <= r.status_code < 300:
                    acked.append(r.headers["mlguard-audit-id"])
                i += 1

        await asyncio.gather(*(one(k) for k in range(16)))


def _wait_up(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def _round(cfg: Path, acked: list[str], rnd: int) -> int:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(cfg), str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_up(port, proc, time.monotonic() + 30)
        before = len(acked)

        async def drive() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(_load(port, acked, stop, f"r{rnd}"))
            deadline = time.monotonic() + 20
            while len(acked) - before < 150 + 37 * (rnd % 5) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # mid-load: requests are in flight
            proc.wait()
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.wait_for(task, 10)

        asyncio.run(drive())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    return len(acked) - before


def _verify(d: Path) -> dict[str, object]:
    store = open_store(f"sqlite:///{d / 'audit.db'}")
    try:
        res = verify_log(store.iter_rows(), head=store.head(), checkpoints=store.checkpoints(),
                         public_keys=store.public_keys(), witness=Witness.read(d / "witness.jsonl"))
    finally:
        store.close()
    return res.as_dict()


def test_kill_9_of_the_server_keeps_every_answered_record(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path)
    acked: list[str] = []
    for rnd in range(ROUNDS):
        got = _round(cfg, acked, rnd)
        assert got >= 150, f"round {rnd}: only {got} answers before the kill"
        if rnd == ROUNDS - 1:  # keep the files exactly as the kill left them (WAL included) for the torn tail
            torn = tmp_path / "torn"
            torn.mkdir()
            for name in ("audit.db", "audit.db-wal", "witness.jsonl"):
                if (tmp_path / name).exists():
                    shutil.copy(tmp_path / name, torn / name)
        res = _verify(tmp_path)  # after every kill, before the restart: intact
        assert res["ok"], res
    assert len(set(acked)) == len(acked)
    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
    missing = []
    for aid in acked:
        rec = reader.get(aid)
        if rec is None:
            missing.append(aid)
        else:
            assert rec["status"] == 200 and rec["protected"] == {"sex": "F"}, rec["audit_id"]
    reader.store.close()
    assert not missing, f"{len(missing)} of {len(acked)} answered requests have no record"

    # A torn tail: after a kill, the WAL loses its last committed frames (a disk that lied about fsync, or a
    # restored older copy). The log then ends before checkpoints the witness holds: verify must say so.
    wal = torn / "audit.db-wal"
    assert wal.exists() and wal.stat().st_size > 64 * 1024, "expected the records in the WAL"
    with wal.open("r+b") as fh:
        fh.truncate(wal.stat().st_size // 2)
    res = _verify(torn)
    assert not res["ok"], "a torn tail was silently accepted"
    assert "truncat" in str(res["problem"]).lower() or "witness" in str(res["problem"]).lower(), res
