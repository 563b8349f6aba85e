"""Start and stop a uvicorn server in its own process, with the same settings for every side measured."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_server(target: str, *, factory: bool = False, env: dict[str, str] | None = None,
                   ready_path: str = "/health", timeout: float = 60.0) -> Iterator[tuple[str, float]]:
    """Yield (base url, seconds from process start to the first served request)."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--no-access-log", "--log-level", "warning", "--loop", "asyncio", "--http", "h11"]
    if factory:
        cmd.append("--factory")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server {target} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(base + ready_path, timeout=1):
                    break
            except OSError:
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"server {target} not ready in {timeout} s") from None
                time.sleep(0.05)
        yield base, time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
