"""``mlguard serve ... --workers 2``: two uvicorn worker processes, one audit log, and what the fairness window is.

The example credit-scoring service runs as a real subprocess (``python -m mlguard serve CONFIG
examples.credit_scoring.app:model_app --workers 2``) with every stage of its mlguard.yaml on (PII, inline
explanation, fairness, audit), the store, keyring and witness moved into tmp_path; audit durability sync (the
example's) and async.

Which worker served a request: nothing in a response names the process, and nothing should (a PID header would
only tell clients about the deployment). The test finds it from the outside instead: a keep-alive connection is
served by the one worker process that accepted it, so each client here holds exactly one connection, and the
server end of that TCP connection (``/proc/net/tcp``: local port = the server's, remote port = the client's) is
an inode found among the file descriptors of exactly one child process of ``mlguard serve``. Clients are
opened until each worker holds the same number of them; the load then runs on all of them at once, so the
number of requests each worker served is known exactly.

What is shown, on SQLite and on PostgreSQL:

* both worker processes served requests, and both wrote to the one log: after a clean shutdown (SIGTERM or
  SIGINT to ``mlguard serve``; each worker's lifespan shutdown drains its audit queue and signs a final
  checkpoint) the log holds exactly one ``exchange`` record per MLGuard-Audit-Id answered, none lost, none
  duplicated, in one chain (seq 1..N contiguous), ``mlguard audit verify --store URL --witness FILE`` exits 0,
  and the final checkpoint of each worker is in the store and in the shared witness file. The stop comes while
  every connection has a request in flight, so with async durability the last answers are still queued then.

What a user gets from the fairness window:

* default (``fairness.shared_store`` unset): each worker keeps its own window in its own memory. ``GET
  {admin prefix}/fairness`` answers from whichever worker took the connection, and its ``window`` counts only the
  decisions that worker made: here exactly the requests each worker served, and the two figures add up to the
  total. The status a worker reports (and the alert, and a ``block`` halt) is judged on its share of the traffic
  only; a disparity spread over the workers can stay under every worker's thresholds. Use one worker, or the
  shared store, when the status must cover all traffic.
* ``fairness.shared_store: postgresql://...``: the counts live in PostgreSQL and every worker reads the same sums;
  asked through a connection to each worker, ``window`` is the total of both workers' decisions.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlguard.audit.chain import Witness
from mlguard.audit.reader import AuditReader
from mlguard.audit.store.base import open_store
from mlguard.cli import main as mlguard_main
from mlguard.testing import free_port
from tests.pg import PG_URL, require_pg

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "credit_scoring"

# Which worker holds a connection is read from /proc (Linux); CI runs Linux.
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")

TOKEN = "e2e-workers-admin-token"
PER_WORKER = 4  # keep-alive connections held to each worker during the load
REQUESTS_PER_CONNECTION = 35  # 2 x 4 x 35 = 280 requests under load, plus the ones that placed the connections
# No periodic checkpoint (by count or by time) during the test: the only checkpoints are the final ones each
# worker signs when it closes, so they say which workers shut down cleanly. Periodic checkpoints of two writer
# processes interleaving are tested in tests/audit/test_multiprocess_checkpoints.py.
CHECKPOINT_EVERY = 1_000_000
CHECKPOINT_SECONDS = 3600
START_TIMEOUT = 90.0  # both workers build a guard (spaCy, shap) at once on a small shared machine


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the example model once into a temporary cache: the workers load it instead of both training it
    (and nothing is written into the repository)."""
    from examples.credit_scoring import model as model_mod

    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(model_mod.CACHE_ENV, str(path))
        model_mod.load_model()
    return path


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    lines = (EXAMPLE / "sample_requests.jsonl").read_text(encoding="utf-8").splitlines()
    return [line.encode() for line in lines if line.strip()]


@pytest.fixture
def pg_schemas() -> Iterator[tuple[str, str]]:
    """(audit store URL, fairness shared-store URL), each in a schema of its own, dropped afterwards.

    The audit store takes ``?schema=``; the shared fairness window uses the connection's search_path, set with
    the libpq ``options`` parameter, in a schema created here (so its tables, keyed by route ``/predict``, are
    this test's alone)."""
    require_pg()
    import psycopg

    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    audit_schema, fair_schema = f"mlg_e2e_audit_{tag}", f"mlg_e2e_fair_{tag}"
    sep = "&" if "?" in PG_URL else "?"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {fair_schema}")
    try:
        yield (f"{PG_URL}{sep}schema={audit_schema}", f"{PG_URL}{sep}options=-csearch_path%3D{fair_schema}")
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for schema in (audit_schema, fair_schema):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# ---------------------------------------------------------------------------------------------------- the server


def _config(tmp: Path, store: str, shared_fairness: str | None, durability: str) -> Path:
    """The example's mlguard.yaml with the audit trail (store, keyring, witness) in ``tmp``; the model's
    background data, relative in the example, made absolute (relative paths resolve against the config file)."""
    cfg: dict[str, Any] = yaml.safe_load((EXAMPLE / "mlguard.yaml").read_text(encoding="utf-8"))
    # Nothing is created here: the two workers starting together create the keyring (one wins, the other loads
    # the complete file), the log and the witness.
    cfg["audit"] = {**cfg["audit"], "store": store, "keyring": str(tmp / "mlguard.keyring"),
                    "witness": str(tmp / "witness.jsonl"), "checkpoint_every": CHECKPOINT_EVERY,
                    "checkpoint_seconds": CHECKPOINT_SECONDS, "durability": durability}
    for route in cfg["routes"]:
        model = route.get("model") or {}
        if "background" in model:
            model["background"] = str((EXAMPLE / model["background"]).resolve())
    if shared_fairness is not None:
        cfg["fairness"] = {**cfg.get("fairness", {}), "shared_store": shared_fairness, "bucket_seconds": 3600}
    path = tmp / "mlguard.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    stopping: bool = False  # the stop signal was sent

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]


def _start(config: Path, tmp: Path, model_cache: Path) -> Server:
    port = free_port()
    log = tmp / "server.log"
    env = {**os.environ, "MLGUARD_ADMIN_TOKEN": TOKEN, "MLGUARD_EXAMPLE_CACHE": str(model_cache)}
    env.pop("MLGUARD_KEYRING", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlguard", "serve", str(config), "examples.credit_scoring.app:model_app",
             "--workers", "2", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, port, log)


def _stop(server: Server, sig: signal.Signals) -> int:
    """Stop as a process manager would: one signal to ``mlguard serve``; uvicorn's supervisor passes SIGTERM to
    each worker, whose lifespan shutdown closes the guard (drains the audit queue, signs a final checkpoint)."""
    if server.proc.poll() is None and not server.stopping:
        server.proc.send_signal(sig)
        server.stopping = True
    try:
        return server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise AssertionError("mlguard serve did not stop within 60 s of " + sig.name) from None


# ---------------------------------------------------------------------------------------------------- which worker


def _children(parent: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out.append(int(entry))
    return out


def _server_socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server end of the loopback TCP connection from ``client_port`` to ``server_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], int(cols[9])
            ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
            if inode and ports == (server_port, client_port):  # inode 0: TIME_WAIT, no socket any more
                return inode
    return None


def _worker_of(server: Server, client_port: int) -> int:
    """The PID of the child process of ``mlguard serve`` that holds the server end of this connection."""
    inode = _server_socket_inode(server.port, client_port)
    assert inode is not None, f"no server-side socket for client port {client_port}"
    target = f"socket:[{inode}]"
    owners = []
    for pid in _children(server.proc.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    owners.append(pid)
                    break
            except OSError:
                continue
    assert len(owners) == 1, f"connection from port {client_port} held by {owners}"
    return owners[0]


# ---------------------------------------------------------------------------------------------------- the load


@dataclass
class Run:
    """What the clients saw."""

    ids: list[str] = field(default_factory=list)  # MLGuard-Audit-Id of every 2xx answer
    served: collections.Counter[int] = field(default_factory=collections.Counter)  # worker PID -> requests
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    fairness: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # worker PID -> GET /fairness
    # requests each worker had served when the fairness state was read (before the stop)
    served_before_stop: collections.Counter[int] = field(default_factory=collections.Counter)
    metrics: dict[int, str] = field(default_factory=dict)  # worker PID -> GET /metrics through it


HEADERS = {"content-type": "application/json"}


def _count(run: Run, r: httpx.Response, pid: int) -> None:
    run.statuses[r.status_code] += 1
    if 200 <= r.status_code < 300:
        run.ids.append(r.headers["mlguard-audit-id"])
        run.served[pid] += 1


async def _place(server: Server, bodies: list[bytes], run: Run, pinned: dict[int, list[httpx.AsyncClient]],
                 per_worker: int) -> None:
    """Open clients until each of the two workers holds ``per_worker`` of them (into ``pinned``, by PID). Each
    client holds one keep-alive connection to whichever worker accepted it. A worker still building its guard
    accepts nothing yet, so this also waits until both serve."""
    base = f"http://127.0.0.1:{server.port}"
    deadline = time.monotonic() + START_TIMEOUT
    k = 0
    while not (len(pinned) == 2 and all(len(v) >= per_worker for v in pinned.values())):
        if server.proc.poll() is not None:
            raise AssertionError(f"mlguard serve exited with {server.proc.returncode}:\n{server.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"workers holding connections: { {p: len(v) for p, v in pinned.items()} } "
                                 f"after {START_TIMEOUT} s:\n{server.output()}")
        client = httpx.AsyncClient(base_url=base, timeout=60.0,
                                   limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        try:
            r = await client.post("/predict", content=bodies[k % len(bodies)], headers=HEADERS)
        except httpx.TransportError:  # not listening yet
            await client.aclose()
            await asyncio.sleep(0.2)
            continue
        k += 1
        port = int(r.extensions["network_stream"].get_extra_info("client_addr")[1])
        pid = _worker_of(server, port)
        _count(run, r, pid)
        if len(pinned.get(pid, ())) < per_worker:
            pinned.setdefault(pid, []).append(client)
        else:
            await client.aclose()  # that worker holds enough; its answer is counted all the same


async def _drive(server: Server, bodies: list[bytes], sig: signal.Signals) -> Run:
    run = Run()
    pinned: dict[int, list[httpx.AsyncClient]] = {}
    try:
        await _place(server, bodies, run, pinned, PER_WORKER)

        async def one(client: httpx.AsyncClient, pid: int, start: int) -> None:
            for i in range(REQUESTS_PER_CONNECTION):
                body = bodies[(start + i) % len(bodies)]
                _count(run, await client.post("/predict", content=body, headers=HEADERS), pid)

        jobs = [one(c, pid, 17 * n) for n, (pid, c) in enumerate((p, c) for p, cs in pinned.items() for c in cs)]
        await asyncio.gather(*jobs)

        # The fairness state as each worker sees it, asked on a connection held to that worker (twice: the
        # answer is the same both times, nothing else is running).
        auth = {"authorization": f"Bearer {TOKEN}"}
        for pid, clients in pinned.items():
            for c in clients[:2]:
                r = await c.get("/mlguard/fairness", headers=auth)
                assert r.status_code == 200, r.text
                run.fairness.setdefault(pid, []).append(r.json())
        run.served_before_stop = collections.Counter(run.served)

        # The metrics, asked through a connection to each worker once every worker's spool file is fresh
        # (written about once a second): each answer covers both workers.
        await asyncio.sleep(2.5)
        for pid, clients in pinned.items():
            r = await clients[0].get("/mlguard/metrics", headers=auth)
            assert r.status_code == 200, r.text
            run.metrics[pid] = r.text

        # Stop under load: the signal goes out while every connection has a request in flight. Each worker
        # finishes the requests it holds, closes its connections, then (lifespan shutdown) drains its audit
        # queue: with async durability the last answers are still queued when the stop begins.
        await _stop_under_load(server, sig, pinned, run, bodies)
    finally:
        for c in [c for cs in pinned.values() for c in cs]:
            await c.aclose()
    return run


async def _stop_under_load(server: Server, sig: signal.Signals, pinned: dict[int, list[httpx.AsyncClient]],
                           run: Run, bodies: list[bytes]) -> None:
    answered = 0

    async def one(client: httpx.AsyncClient, pid: int, start: int) -> None:
        nonlocal answered
        for i in range(500):  # bounded: a server that ignored the signal fails the test, it does not hang it
            try:
                r = await client.post("/predict", content=bodies[(start + i) % len(bodies)], headers=HEADERS)
            except httpx.TransportError:  # the worker closed this connection: stopped
                return
            _count(run, r, pid)
            answered += 1
            if answered == 5 * PER_WORKER and not server.stopping:
                server.proc.send_signal(sig)
                server.stopping = True

    await asyncio.gather(*(one(c, pid, 31 * n) for n, (pid, c) in
                           enumerate((p, c) for p, cs in pinned.items() for c in cs)))
    assert server.stopping


def _window(doc: dict[str, Any]) -> int:
    routes = [r for r in doc["routes"].values() if r["path"] == "/predict"]
    assert len(routes) == 1, doc
    return int(routes[0]["window"])


# ---------------------------------------------------------------------------------------------------- the log


def _check_log(store_url: str, witness: Path, run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = mlguard_main(["audit", "verify", "--store", store_url, "--witness", str(witness), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out

    store = open_store(store_url)
    try:
        rows = list(store.iter_rows())
        head = store.head()
        checkpoints = store.checkpoints()
    finally:
        store.close()
    seqs = [r.seq for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), "one chain: seq 1..N contiguous"
    assert head[0] == len(rows)
    kinds = collections.Counter(r.kind for r in rows)
    assert set(kinds) == {"exchange"}, kinds  # no gap record: nothing was lost on the way
    per_id = collections.Counter(r.audit_id for r in rows)
    assert max(per_id.values()) == 1, "an audit id written twice"
    answered = collections.Counter(run.ids)
    assert max(answered.values()) == 1, "an audit id answered twice"
    lost = set(answered) - set(per_id)
    assert not lost, f"{len(lost)} of {len(answered)} answered ids have no record"
    # A request a worker completed while its connection was being closed at the stop has a record and no
    # answer the client read: at most one per connection, none before the stop.
    unanswered = set(per_id) - set(answered)
    assert len(unanswered) <= 2 * PER_WORKER, f"{len(unanswered)} records nobody was answered for"

    # Each worker signed a final checkpoint when its lifespan shutdown closed the guard, after its queue was
    # drained; the one that stopped last signed the whole log. Both are in the store and in the one witness file
    # both workers append to, and verify (above) checked each against the chain at its seq.
    assert len(checkpoints) == 2, checkpoints
    assert max(cp["seq"] for cp in checkpoints) == head[0]
    witnessed = Witness.read(witness)
    key = lambda cp: json.dumps(cp, sort_keys=True)  # noqa: E731
    assert sorted(map(key, witnessed)) == sorted(map(key, checkpoints))


def _check_records(store_url: str, keyring: Path, run: Run) -> None:
    """Every record opens with the keyring: the data keys either worker created are in the store."""
    reader = AuditReader(store_url, keyring)
    try:
        opened = {rec["audit_id"]: rec for rec in reader.iter_records()}
    finally:
        reader.close()
    assert set(opened) == set(run.ids)
    assert all(rec["status"] == 200 and rec["route"] == "/predict" for rec in opened.values())


def _check_served(run: Run) -> None:
    assert set(run.statuses) == {200}, run.statuses
    assert len(run.served) == 2, run.served
    assert all(n >= PER_WORKER * REQUESTS_PER_CONNECTION for n in run.served.values()), run.served
    assert sum(run.served.values()) == len(run.ids)


def _check_metrics(run: Run) -> None:
    """``mlguard serve --workers 2`` spools metrics: whichever worker answers the scrape, the request counter is
    the total over both workers, and each worker's gauges come with its PID."""
    from prometheus_client.parser import text_string_to_metric_families

    assert set(run.metrics) == set(run.served_before_stop)
    for pid, text in run.metrics.items():
        served = 0.0
        workers: set[str] = set()
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                if smp.name == "mlguard_requests_total" and smp.labels.get("outcome") == "served":
                    served += smp.value
                if smp.name == "mlguard_audit_queue_depth":
                    workers.add(smp.labels["worker"])
        assert served == run.served_before_stop.total(), (pid, served, run.served_before_stop)
        assert workers == {str(p) for p in run.served_before_stop}, (pid, workers)


def _serve_and_drive(tmp_path: Path, model_cache: Path, bodies: list[bytes], store: str, fairness: str | None,
                     durability: str, sig: signal.Signals) -> Run:
    """Start two workers, drive the load, stop them with ``sig``; the server exited cleanly and served only 200s."""
    server = _start(_config(tmp_path, store, fairness, durability), tmp_path, model_cache)
    try:
        run = asyncio.run(_drive(server, bodies, sig))
    finally:
        code = _stop(server, sig)
    assert code == 0, server.output()
    assert "Traceback" not in server.output(), server.output()
    _check_served(run)
    _check_metrics(run)
    return run


# ---------------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_two_workers_sqlite_one_log_per_process_fairness(
        tmp_path: Path, model_cache: Path, bodies: list[bytes], capsys: pytest.CaptureFixture[str],
        durability: str) -> None:
    """SQLite log shared by two workers, sync durability (the example's) and async (two pipelined writers whose
    batches, sealed ahead, are re-sealed when the other process moved the head; nothing answered may be lost at
    shutdown); fairness in its default mode: one window per worker."""
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    run = _serve_and_drive(tmp_path, model_cache, bodies, store, None, durability, signal.SIGTERM)

    # Each worker's window holds the decisions that worker made, no more: the windows are per process.
    for pid, docs in run.fairness.items():
        assert [_window(d) for d in docs] == [run.served_before_stop[pid]] * len(docs), run.served_before_stop
    assert sum(_window(docs[0]) for docs in run.fairness.values()) == run.served_before_stop.total()

    _check_log(store, tmp_path / "witness.jsonl", run, capsys)
    _check_records(store, tmp_path / "mlguard.keyring", run)


@pytest.mark.postgres
def test_two_workers_postgres_one_log_shared_fairness(
        tmp_path: Path, model_cache: Path, bodies: list[bytes], pg_schemas: tuple[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """PostgreSQL log shared by two workers (sync durability, as in the example; two pipelined writers on one
    PostgreSQL log are covered by tests/audit/test_pipeline.py); fairness window shared through PostgreSQL."""
    store, fairness = pg_schemas
    run = _serve_and_drive(tmp_path, model_cache, bodies, store, fairness, "sync", signal.SIGINT)

    # Asked through a connection to each worker, the window counts the decisions of BOTH workers.
    for pid, docs in run.fairness.items():
        total = run.served_before_stop.total()
        assert [_window(d) for d in docs] == [total] * len(docs), (pid, run.served_before_stop)
    reports = [d["routes"] for docs in run.fairness.values() for d in docs]
    assert all(r == reports[0] for r in reports), "every worker reports the same shared state"

    _check_log(store, tmp_path / "witness.jsonl", run, capsys)
    _check_records(store, tmp_path / "mlguard.keyring", run)


def test_a_stop_through_one_worker_stops_both(tmp_path: Path, model_cache: Path, bodies: list[bytes],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Human oversight (EU AI Act Art 14) with two workers: ``POST {prefix}/routes/0/stop`` sent to one worker
    stops the route in the other too (it reads the shared state from the audit store every second), and a resume
    sent to the other worker resumes both. Both actions are audited; the log verifies."""
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    server = _start(_config(tmp_path, store, None, "sync"), tmp_path, model_cache)
    auth = {"authorization": f"Bearer {TOKEN}"}

    async def until(client: httpx.AsyncClient, status: int) -> int:
        deadline = time.monotonic() + 20.0  # generous: the refresh is every second, the machine may be busy
        while True:
            r = await client.post("/predict", content=bodies[0], headers=HEADERS)
            if r.status_code == status or time.monotonic() > deadline:
                return r.status_code
            await asyncio.sleep(0.2)

    async def scenario() -> tuple[list[int], list[int]]:
        pinned: dict[int, list[httpx.AsyncClient]] = {}
        try:
            await _place(server, bodies, Run(), pinned, 1)
            (a,), (b,) = pinned.values()
            stop = await a.post("/mlguard/routes/0/stop", headers=auth)
            stopped = [stop.status_code, (await a.post("/predict", content=bodies[0], headers=HEADERS)).status_code,
                       await until(b, 503)]
            resume = await b.post("/mlguard/routes/0/resume", headers=auth)
            resumed = [resume.status_code,
                       (await b.post("/predict", content=bodies[0], headers=HEADERS)).status_code,
                       await until(a, 200)]
            return stopped, resumed
        finally:
            for c in [c for cs in pinned.values() for c in cs]:
                await c.aclose()

    try:
        stopped, resumed = asyncio.run(scenario())
    finally:
        code = _stop(server, signal.SIGTERM)
    assert code == 0, server.output()
    assert stopped == [200, 503, 503], stopped  # the stop: this worker at once, the other one too
    assert resumed == [200, 200, 200], resumed
    capsys.readouterr()
    assert mlguard_main(["audit", "verify", "--store", store, "--witness", str(tmp_path / "witness.jsonl")]) == 0
    st = open_store(store)
    try:
        kinds = collections.Counter(r.kind for r in st.iter_rows())
    finally:
        st.close()
    assert kinds["oversight"] == 2, kinds  # the stop and the resume, each audited by the worker that took it
