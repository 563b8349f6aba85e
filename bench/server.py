"""Start and stop a uvicorn server in its own process, with the same settings for every side measured.

Settings (every side, every run): one worker, ``--loop asyncio --http h11`` (the pure-Python stack, so no side
benefits from an optional accelerator the other lacks), access log off, log level warning, bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

UVICORN_FLAGS = ["--workers", "1", "--no-access-log", "--log-level", "warning", "--loop", "asyncio", "--http", "h11"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server: its base URL, process id and the seconds from process start to the first answer."""

    base: str
    pid: int
    ready_s: float
    command: list[str]

    def rss_mb(self) -> float | None:
        """Resident set size of the server process now (``VmRSS`` in /proc, Linux only; None elsewhere)."""
        return self.memory_mb().get("VmRSS")

    def anon_mb(self) -> float | None:
        """The part of the RSS that is the process's own memory (``RssAnon``: heap, arrays, models loaded): the
        rest is mapped library files, clean pages shared by every worker, whose resident share depends on how
        the files sit in the page cache (higher right after they were installed). None off Linux."""
        return self.memory_mb().get("RssAnon")

    def memory_mb(self) -> dict[str, float]:
        """VmRSS, RssAnon, RssFile, RssShmem and VmHWM of the server process in MB (empty off Linux)."""
        return proc_memory(self.pid)


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile, RssShmem and VmHWM of ``pid`` in MB (/proc/<pid>/status; empty off Linux)."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def uvicorn_command(target: str, port: int, *, factory: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS]
    if factory:
        cmd.append("--factory")
    return cmd


@contextmanager
def serve(target: str, *, factory: bool = False, env: dict[str, str] | None = None, ready_path: str = "/health",
          timeout: float = 90.0) -> Iterator[Server]:
    """Run ``uvicorn target`` until the block ends; ready = the first 2xx answer on ``ready_path``.

    The readiness time is measured from just before the process is spawned to that first answer (polled every
    20 ms), so it includes interpreter start, imports, building the guard and the app's lifespan start-up.
    """
    port = free_port()
    cmd = uvicorn_command(target, port, factory=factory)
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
                time.sleep(0.02)
        yield Server(base, proc.pid, time.perf_counter() - started, cmd)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def uvicorn_server(target: str, *, factory: bool = False, env: dict[str, str] | None = None,
                   ready_path: str = "/health", timeout: float = 60.0) -> Iterator[tuple[str, float]]:
    """Yield (base url, seconds from process start to the first served request)."""
    with serve(target, factory=factory, env=env, ready_path=ready_path, timeout=timeout) as srv:
        yield srv.base, srv.ready_s
