"""Load generation for the benchmarks: wrk when installed, otherwise a bundled asyncio generator.

Both run in a separate process from the server, so the server's core is not shared with the client's Python.
Results are requests/s and latency percentiles in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadResult:
    tool: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


_WRK_LUA = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
-- one JSON line with the figures
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format("JSON {{\\"requests\\": %d, \\"errors\\": %d, \\"us\\": %d, " ..
    "\\"p50\\": %d, \\"p95\\": %d, \\"p99\\": %d}}\\n", summary.requests, errors, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def run_load(url: str, *, seconds: float, connections: int, method: str = "GET", body: bytes | None = None,
             prefer_wrk: bool = True) -> LoadResult:
    """Drive ``url`` for ``seconds`` with ``connections`` concurrent connections."""
    if prefer_wrk and shutil.which("wrk"):
        return _wrk(url, seconds, connections, method, body)
    return _python(url, seconds, connections, method, body)


def _wrk(url: str, seconds: float, connections: int, method: str, body: bytes | None) -> LoadResult:
    lua_body = "nil" if body is None else json.dumps(body.decode())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA.format(method=method, body=lua_body))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", f.name, url],
                         capture_output=True, text=True, check=True).stdout
    Path(f.name).unlink()
    m = re.search(r"JSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    d = json.loads(m.group(1))
    secs = d["us"] / 1e6
    return LoadResult("wrk", d["requests"], d["errors"], secs, d["requests"] / secs, d["p50"] / 1000,
                      d["p95"] / 1000, d["p99"] / 1000)


def _python(url: str, seconds: float, connections: int, method: str, body: bytes | None) -> LoadResult:
    cmd = [sys.executable, __file__, url, str(seconds), str(connections), method, (body or b"").decode()]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    return LoadResult("python-asyncio", **d)


async def _drive(url: str, seconds: float, connections: int, method: str, body: bytes | None) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                s = time.perf_counter()
                try:
                    r = await client.request(method, url, content=body,
                                             headers={"content-type": "application/json"})
                    if r.status_code >= 400:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append((time.perf_counter() - s) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(p * n))] if n else 0.0

    return {"requests": n, "errors": errors, "seconds": elapsed, "rps": n / elapsed, "p50_ms": pct(0.5),
            "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


if __name__ == "__main__":
    u, s, c, m, b = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    print(json.dumps(asyncio.run(_drive(u, s, c, m, b.encode() or None))))
