"""Load generation for the benchmarks: wrk when installed, otherwise a bundled asyncio generator.

Both run in a separate process from the server, so the server's core is not shared with the client's Python.
Results are requests/s and latency percentiles in milliseconds.

Why the bundled generator speaks HTTP/1.1 over raw asyncio streams rather than through an HTTP client library:
the client shares the machine with the server (2 cores here), and every microsecond of client CPU is taken from
the side being measured. A pre-built request and a minimal response parser (status line, Content-Length or
chunked) cost a few tens of microseconds a request; httpx costs several hundred, enough to cap the bare app.

Several bodies may be given: each connection cycles through them (starting at a different offset), so caches
keyed on the request content see realistic traffic rather than one request replayed.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit


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
    #: Responses whose status was not 2xx (wrk: status >= 400). Included in ``errors``.
    non_2xx: int = 0


# wrk reads the bodies from a file, one JSON document a line (Lua 5.1 has no \u escapes, so bodies are not
# inlined as string literals), and each thread cycles through them.
_WRK_LUA = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{}}
local path = "{bodies_path}"
if path ~= "" then
  for line in io.lines(path) do bodies[#bodies + 1] = line end
end
local i = 0
request = function()
  if #bodies == 0 then return wrk.format() end
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
-- one JSON line with the figures
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format("JSON {{\\"requests\\": %d, \\"errors\\": %d, \\"status\\": %d, \\"us\\": %d, " ..
    "\\"p50\\": %d, \\"p95\\": %d, \\"p99\\": %d}}\\n", summary.requests, errors, e.status, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def run_load(url: str, *, seconds: float, connections: int, method: str = "GET", body: bytes | None = None,
             bodies: list[bytes] | None = None, prefer_wrk: bool = True) -> LoadResult:
    """Drive ``url`` for ``seconds`` with ``connections`` concurrent connections.

    ``body`` sends one body every time; ``bodies`` cycles through several (one JSON document each, no newline).
    """
    all_bodies = list(bodies) if bodies else ([body] if body is not None else [])
    if prefer_wrk and shutil.which("wrk"):
        return _wrk(url, seconds, connections, method, all_bodies)
    return _python(url, seconds, connections, method, all_bodies)


def _wrk(url: str, seconds: float, connections: int, method: str, bodies: list[bytes]) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="mlguard-wrk-") as tmp:
        bodies_path = ""
        if bodies:
            bodies_path = str(Path(tmp) / "bodies.jsonl")
            Path(bodies_path).write_bytes(b"\n".join(bodies) + b"\n")
        script = Path(tmp) / "load.lua"
        script.write_text(_WRK_LUA.format(method=method, bodies_path=bodies_path))
        # --timeout: wrk's default (2 s) would count slow answers of the naive baseline as errors and drop them
        # from the percentiles; the whole run is bounded by the subprocess timeout instead.
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
                              "-s", str(script), url], capture_output=True, text=True, check=True,
                             timeout=seconds + 120).stdout
    m = re.search(r"JSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    d = json.loads(m.group(1))
    secs = d["us"] / 1e6
    return LoadResult("wrk", d["requests"], d["errors"], secs, d["requests"] / secs, d["p50"] / 1000,
                      d["p95"] / 1000, d["p99"] / 1000, non_2xx=d["status"])


def _python(url: str, seconds: float, connections: int, method: str, bodies: list[bytes]) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="mlguard-load-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"url": url, "seconds": seconds, "connections": connections, "method": method,
                                    "bodies": [b.decode() for b in bodies]}))
        out = subprocess.run([sys.executable, __file__, str(spec)], capture_output=True, text=True, check=True,
                             timeout=seconds + 120).stdout
    return LoadResult(**json.loads(out))


def request_bytes(method: str, host: str, path: str, body: bytes | None) -> bytes:
    """One raw HTTP/1.1 request, built ahead of the load loop so the loop only writes bytes."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mlguard-bench\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, whether the server will close the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def _drive(url: str, seconds: float, connections: int, method: str, bodies: list[bytes]) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    requests = [request_bytes(method, parts.netloc, path, b) for b in bodies] or [
        request_bytes(method, parts.netloc, path, None)]
    latencies: list[float] = []
    counts = {"errors": 0, "non_2xx": 0}
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        i = offset
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    counts["errors"] += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            req = requests[i % len(requests)]
            i += connections
            s = time.perf_counter()
            try:
                writer.write(req)
                status, close = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
                counts["errors"] += 1
                writer.close()
                writer = None
                continue
            latencies.append((time.perf_counter() - s) * 1000)
            if not 200 <= status < 300:
                counts["non_2xx"] += 1
                counts["errors"] += 1
            if close:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(p * n))] if n else 0.0

    result = LoadResult("python-asyncio", n, counts["errors"], elapsed, n / elapsed, pct(0.5), pct(0.95),
                        pct(0.99), non_2xx=counts["non_2xx"])
    return asdict(result)


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(_drive(spec["url"], spec["seconds"], spec["connections"], spec["method"],
                                        [b.encode() for b in spec["bodies"]]))))
