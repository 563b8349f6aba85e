"""Several workers, one ``{prefix}/metrics``: each worker spools its samples to a shared directory and the one
that takes the scrape merges them (mlguard/metrics_spool.py).

What must hold: counters and histograms are the sums over every worker that has written (also one that has
ended: a total never goes down while the service runs); gauges are one series per live worker, labelled with
its PID, and leave the answer when the worker ends or marks itself closed; a file being rewritten or damaged is
skipped, never an error; the ticker keeps a worker's file fresh without any scrape. The other workers are
files written here the way a worker writes them (a separate process is what tests/e2e/test_workers.py runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlguard.metrics_spool import MetricsSpool, spool_dir
from tests.core.conftest import client
from tests.core.test_metrics import AUTH, OK, TOKEN, core_guard, parse, total, value

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGUARD_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("MLGUARD_METRICS_DIR", raising=False)


def _family_file(directory: Path, pid: int, *, requests: float, queue: float, bucket: float,
                 closed: bool = False) -> None:
    """A worker's file as MetricsSpool.write makes it: one counter, one gauge, one histogram."""
    doc = {"pid": pid, "closed": closed, "families": [
        ["mlguard_requests", "counter", "Guarded exchanges",
         [["mlguard_requests_total", {"route": "/predict", "outcome": "served"}, requests]]],
        ["mlguard_audit_queue_depth", "gauge", "Audit records queued", [["mlguard_audit_queue_depth", {}, queue]]],
        ["mlguard_overhead_seconds", "histogram", "Guard time",
         [["mlguard_overhead_seconds_bucket", {"route": "/predict", "le": "0.001"}, bucket],
          ["mlguard_overhead_seconds_bucket", {"route": "/predict", "le": "+Inf"}, bucket + 1],
          ["mlguard_overhead_seconds_count", {"route": "/predict"}, bucket + 1],
          ["mlguard_overhead_seconds_sum", {"route": "/predict"}, 0.5]]]]}
    (directory / f"worker-{pid}.json").write_text(json.dumps(doc))


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that is running for the test's duration (another 'worker')."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid() -> int:
    """The PID of a process that has ended (a worker that crashed or was replaced)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _guard_with_spool(tmp_path: Path) -> tuple[Any, Path]:
    spool = tmp_path / "metrics"
    mw, _ = core_guard(tmp_path, admin={"metrics_dir": str(spool)})
    return mw, spool


async def test_counters_summed_over_all_workers_gauges_per_live_worker(tmp_path: Path, live_pid: int,
                                                                       dead_pid: int) -> None:
    mw, spool = _guard_with_spool(tmp_path)
    async with client(mw) as c:
        for _ in range(3):
            assert (await c.post("/predict", json=OK)).status_code == 200
        _family_file(spool, live_pid, requests=10, queue=4, bucket=7)
        _family_file(spool, dead_pid, requests=100, queue=9, bucket=70)  # ended 30 s ago, without closing
        old = time.time() - 30
        os.utime(spool / f"worker-{dead_pid}.json", (old, old))
        _family_file(spool, 999_999_999, requests=1000, queue=5, bucket=700, closed=True)
        series = parse((await c.get("/mlguard/metrics", headers=AUTH)).text)
        again = parse((await c.get("/mlguard/metrics", headers=AUTH)).text)
    me = str(os.getpid())
    # this worker's 3 exchanges (its file written just before the merge) + the other three workers'
    assert total(series, "mlguard_requests_total", route="/predict", outcome="served") == 3 + 10 + 100 + 1000
    # histograms: every bucket summed (the other workers' 0.001 buckets; this worker's own come on top)
    assert total(series, "mlguard_overhead_seconds_count", route="/predict") == 3 + 8 + 71 + 701
    assert total(series, "mlguard_overhead_seconds_bucket", route="/predict", le="+Inf") == 3 + 8 + 71 + 701
    # gauges: one series per live worker (this one and the fresh one); the stale and the closed are gone
    # (this guard has no audit stage: its own gauge is the route's halted state)
    assert value(series, "mlguard_audit_queue_depth", worker=str(live_pid)) == 4.0
    workers = {dict(lab).get("worker") for (name, lab) in series if name == "mlguard_audit_queue_depth"}
    assert workers == {str(live_pid)}
    assert value(series, "mlguard_route_halted", route="/predict", worker=me) == 0.0
    assert not any(dict(lab).get("worker") in (str(dead_pid), "999999999") for (_, lab) in series)
    # the closed worker's file was folded into retired.json (its counts kept once, not twice)
    assert not (spool / "worker-999999999.json").exists() and (spool / "retired.json").exists()
    assert total(again, "mlguard_requests_total", outcome="served") == 3 + 10 + 100 + 1000


async def test_ended_workers_are_folded_into_one_file_and_counted_once(tmp_path: Path) -> None:
    """A server that replaces its workers (gunicorn --max-requests) leaves one file per worker ever started:
    closed ones, and ones untouched for RETIRE_SECONDS (a worker that died), are folded into retired.json at
    the next scrape; their counts stay in every later answer, exactly once."""
    from mlguard.metrics_spool import RETIRE_SECONDS

    mw, spool = _guard_with_spool(tmp_path)
    for n in range(20):
        _family_file(spool, 900_000_000 + n, requests=1, queue=1, bucket=1, closed=True)
    _family_file(spool, 800_000_000, requests=50, queue=2, bucket=5)  # died long ago, never closed
    long_ago = time.time() - RETIRE_SECONDS - 60
    os.utime(spool / "worker-800000000.json", (long_ago, long_ago))
    _family_file(spool, 700_000_000, requests=7, queue=3, bucket=1)  # died 30 s ago: not folded yet
    recent = time.time() - 30
    os.utime(spool / "worker-700000000.json", (recent, recent))
    async with client(mw) as c:
        answers = [parse((await c.get("/mlguard/metrics", headers=AUTH)).text) for _ in range(3)]
        _family_file(spool, 900_000_100, requests=4, queue=1, bucket=1, closed=True)  # one more ends
        answers.append(parse((await c.get("/mlguard/metrics", headers=AUTH)).text))
    left = {p.name for p in spool.glob("worker-*.json")}
    assert left == {"worker-700000000.json", f"worker-{os.getpid()}.json"}
    assert [total(a, "mlguard_requests_total", outcome="served") for a in answers] == [77, 77, 77, 81]
    assert [total(a, "mlguard_overhead_seconds_count", route="/predict") for a in answers] == [48, 48, 48, 50]


async def test_damaged_or_half_written_files_are_skipped(tmp_path: Path, live_pid: int) -> None:
    mw, spool = _guard_with_spool(tmp_path)
    async with client(mw) as c:
        assert (await c.post("/predict", json=OK)).status_code == 200
        _family_file(spool, live_pid, requests=10, queue=4, bucket=7)
        (spool / "worker-12345.json").write_bytes(b'{"pid": 12345, "closed": false, "famil')
        (spool / "worker-54321.json").write_text(json.dumps({"pid": "x", "families": 3}))
        (spool / ".worker-1.json.tmp").write_text("not read: a temporary name")
        resp = await c.get("/mlguard/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert total(parse(resp.text), "mlguard_requests_total", outcome="served") == 1 + 10


async def test_a_closed_worker_keeps_its_counts_and_drops_its_gauges(tmp_path: Path) -> None:
    """Worker A serves, shuts down (lifespan: close writes its last counts, marked closed); worker B, asked
    next, still counts A's exchanges but shows no gauge of A."""
    spool = tmp_path / "metrics"
    a, _ = core_guard(tmp_path / "a", admin={"metrics_dir": str(spool)})
    async with client(a) as c:
        for _ in range(2):
            assert (await c.post("/predict", json=OK)).status_code == 200
    a_metrics = a._metrics
    assert a_metrics.spool is not None
    a_metrics.close()
    doc = json.loads(a_metrics.spool.path.read_text())
    assert doc["closed"] is True
    # B: same directory, another PID (a file named as another process would name it)
    a_metrics.spool.path.rename(spool / "worker-999999998.json")
    doc["pid"] = 999_999_998
    (spool / "worker-999999998.json").write_text(json.dumps(doc))
    b, _ = core_guard(tmp_path / "b", admin={"metrics_dir": str(spool)})
    async with client(b) as c:
        assert (await c.post("/predict", json=OK)).status_code == 200
        series = parse((await c.get("/mlguard/metrics", headers=AUTH)).text)
    assert total(series, "mlguard_requests_total", outcome="served") == 3
    assert {dict(lab).get("worker") for (n, lab) in series if n == "mlguard_route_halted"} == {str(os.getpid())}


async def test_the_ticker_keeps_the_file_fresh_without_a_scrape(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from mlguard.metrics import register_gauges, single

    reg = CollectorRegistry(auto_describe=False)
    state = {"n": 0.0}
    shared: dict[str, Any] = {"metrics_registry": reg}
    register_gauges(shared, lambda: [("mlguard_test_gauge", "a test gauge", single(state["n"]))])
    spool = MetricsSpool(tmp_path / "m", reg, interval=0.05)
    spool.bind(asyncio.get_running_loop())

    def written() -> float:
        doc = json.loads(spool.path.read_text())
        return float(doc["families"][0][3][0][2])

    assert written() == 0.0  # bind writes at once
    state["n"] = 7.0
    for _ in range(100):
        await asyncio.sleep(0.02)  # the ticker asks this loop to write
        if written() == 7.0:
            break
    assert written() == 7.0
    spool.close()
    assert json.loads(spool.path.read_text())["closed"] is True


async def test_one_worker_without_a_directory_answers_from_its_own_registry(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLGUARD_METRICS_DIR", raising=False)
    mw, _ = core_guard(tmp_path)
    assert mw._metrics.spool is None
    async with client(mw) as c:
        assert (await c.post("/predict", json=OK)).status_code == 200
        series = parse((await c.get("/mlguard/metrics", headers=AUTH)).text)
    assert total(series, "mlguard_requests_total", outcome="served") == 1
    assert not any("worker" in dict(lab) for (_, lab) in series)


def test_directory_from_config_relative_to_it_or_from_the_environment(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLGUARD_METRICS_DIR", raising=False)
    assert spool_dir(None, tmp_path) is None
    assert spool_dir("m", tmp_path) == tmp_path / "m"
    assert spool_dir(str(tmp_path / "abs"), Path("/elsewhere")) == tmp_path / "abs"
    monkeypatch.setenv("MLGUARD_METRICS_DIR", str(tmp_path / "env"))
    assert spool_dir(None, tmp_path) == tmp_path / "env"
    assert spool_dir("m", tmp_path) == tmp_path / "m"  # the config wins


def test_without_an_asyncio_loop_the_exchanges_write_the_file(tmp_path: Path) -> None:
    """Under another event loop (trio) there is no ticker: each exchange writes once the snapshot is older than
    the interval."""
    from prometheus_client import CollectorRegistry

    from mlguard.metrics import register_gauges, single

    reg = CollectorRegistry(auto_describe=False)
    state = {"n": 1.0}
    register_gauges({"metrics_registry": reg}, lambda: [("mlguard_test_gauge", "a test gauge", single(state["n"]))])
    spool = MetricsSpool(tmp_path / "m", reg, interval=0.2)
    spool.bind(None)
    assert spool.bound and spool._thread is None  # no ticker thread

    def written() -> float:
        return float(json.loads(spool.path.read_text())["families"][0][3][0][2])

    assert written() == 1.0
    state["n"] = 2.0
    spool.tick_inline()  # within the interval: not rewritten
    assert written() == 1.0
    time.sleep(0.25)
    spool.tick_inline()
    assert written() == 2.0


def test_a_directory_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    from mlguard.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(ConfigError) as err:
        core_guard(tmp_path, admin={"metrics_dir": str(blocker / "metrics")})
    assert "admin.metrics_dir" in str(err.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_spool_built_before_a_fork_writes_under_the_child_pid(tmp_path: Path) -> None:
    """A server that imports the app and then forks its workers: each worker writes its own file."""
    from prometheus_client import CollectorRegistry

    spool = MetricsSpool(tmp_path / "m", CollectorRegistry(auto_describe=False))
    pid = os.fork()
    if pid == 0:  # the child writes, then leaves without running the parent's cleanup
        spool.write()
        os._exit(0 if spool.path.name == f"worker-{os.getpid()}.json" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / "m" / f"worker-{pid}.json").exists()
    assert spool.pid == os.getpid()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
async def test_the_spool_is_readable_by_this_user_only(tmp_path: Path) -> None:
    """Snapshots hold what the token-protected endpoint shows (fairness group names among them)."""
    mw, spool = _guard_with_spool(tmp_path)
    async with client(mw) as c:
        assert (await c.post("/predict", json=OK)).status_code == 200
        assert (await c.get("/mlguard/metrics", headers=AUTH)).status_code == 200
    assert spool.stat().st_mode & 0o777 == 0o700
    files = list(spool.glob("*.json"))
    assert files and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
