"""``mlguard serve`` wraps an existing ASGI app, unchanged, under uvicorn; config errors exit 1 naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlguard.cli import main
from mlguard.testing import free_port

APP = '''
import json

from mlguard.testing import receive_body

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await receive_body(receive)
    out = json.dumps({"score": 0.9, "approved": True, "echo": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
'''


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_serve_wraps_an_unchanged_app(tmp_path: Path, root_path: str) -> None:
    """And behind a proxy that strips a prefix (--root-path: uvicorn puts it back in the scope's path)."""
    (tmp_path / "plainapp.py").write_text(APP)
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(json.dumps({
        "policies": ["ecoa"],
        "audit": {"enabled": False},
        "explain": {"enabled": False},
        "fairness": {"enabled": False},
        "routes": [{"path": "/predict", "protected": {"sex": "$.sex"}, "scan_undeclared": False}],
    }))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    extra = ["--root-path", root_path] if root_path else []
    proc = subprocess.Popen([sys.executable, "-m", "mlguard", "serve", str(cfg), "plainapp:app", "--port", str(port),
                             *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                resp = httpx.post(f"http://127.0.0.1:{port}/predict", json={"sex": "F", "x": 1}, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        other = httpx.post(f"http://127.0.0.1:{port}/other", content=b"raw", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert resp.status_code == 200
    assert resp.headers["mlguard-audit-id"]
    assert json.loads(resp.json()["echo"]) == {"x": 1}  # ecoa: the protected attribute never reached the app
    assert other.json()["echo"] == "raw" and "mlguard-audit-id" not in other.headers


def test_serve_config_error_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("routes:\n  - path: /p\n    methds: [POST]\n")
    assert main(["serve", str(cfg), "x:app"]) == 1  # the file is invalid: as `config check` says it
    err = capsys.readouterr().err
    assert str(cfg) in err and "routes.0.methds" in err


def test_serve_bad_app_name_is_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("routes: []\n")
    assert main(["serve", str(cfg), "no_colon"]) == 2
    assert main(["serve", str(cfg), "nonexistent_module_xyz:app"]) == 2


def test_a_worker_that_cannot_build_its_guard_stops_the_server(tmp_path: Path) -> None:
    """With several workers, uvicorn starts a worker that exited again at once, for ever: a keyring readable by
    others (found only when a worker builds its guard) looped with a traceback every few seconds. The first
    failing worker now stops the server, which exits 1 (as for an invalid config) with the error, said once as a
    JSON log line (a JSON pipeline keeps only those) and once in plain words."""
    (tmp_path / "plainapp.py").write_text(APP)
    keyring = tmp_path / "k.keyring"
    assert main(["keys", "init", "--out", str(keyring)]) == 0
    keyring.chmod(0o644)
    cfg = tmp_path / "mlguard.yaml"
    cfg.write_text(json.dumps({"policies": ["base"], "audit": {"store": "sqlite:///./a.db", "keyring": "./k.keyring"},
                               "explain": {"enabled": False}, "fairness": {"enabled": False},
                               "routes": [{"path": "/predict", "scan_undeclared": False}]}))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "mlguard", "serve", str(cfg), "plainapp:app", "--port",
                           str(free_port()), "--workers", "2"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=150)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "error: a worker could not start: KeyringError:" in out and "chmod 600" in out
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(d["level"] == "ERROR" and d["logger"] == "mlguard.serve" and "KeyringError" in d["message"]
               for d in logged), out[-3000:]
    assert out.count("KeyringError: keyring") <= 4  # each of the two workers at most once, serve's two lines
    assert "Traceback" not in out  # a worker's raw traceback ignored --log-format json
