"""The PostgreSQL-shared window: two processes count into one window; labels join across processes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.pg import PG_URL, require_pg

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg() -> str:
    require_pg()
    return PG_URL


WRITER = """
import sys
from mlguard.fairness.shared_pg import SharedWindow
url, route, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
w = SharedWindow(url, route=route, attributes=["race", "sex"], size=10_000, bucket_seconds=3600,
                 secret=b"k" * 32)
for i in range(n):
    sex = "Female" if i % 2 else "Male"
    w.add({"sex": sex, "race": "Black" if tag == "a" else ["White"]}, pred=(i % 4 == 0), score=i / n,
          audit_id=f"{route}-{tag}-{i}")
# label a decision the OTHER process made (it may not exist yet: then nothing happens)
w.close()
print("ok")
"""


def _spawn(url: str, route: str, tag: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, url, route, tag, str(n)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_share_one_window(pg: str) -> None:
    from mlguard.fairness.shared_pg import SharedWindow

    route = f"/t-{uuid.uuid4().hex[:10]}"
    procs = [_spawn(pg, route, "a", 120), _spawn(pg, route, "b", 80)]
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    w = SharedWindow(pg, route=route, attributes=["race", "sex"], size=10_000, bucket_seconds=3600,
                     secret=b"k" * 32)
    try:
        snap = {g.key: g for g in w.snapshot(scores=True)}
        assert snap["race=Black"].n == 120 and snap["race=unknown"].n == 80  # a list: unexpected type
        assert snap["sex=Female"].n == 100 and snap["sex=Male"].n == 100
        assert snap["race=Black"].selected == 30
        assert snap["race=Black|sex=Male"].n == 60
        assert len(w) == 200
        assert snap["race=Black"].above_median is not None
        # feedback posted here joins a decision written by another process
        assert w.knows(f"{route}-b-0")
        assert w.set_label(f"{route}-b-0", True)
        assert w.set_label(f"{route}-b-0", False)  # relabel: counts move, not add
        assert not w.set_label(f"{route}-zz", True)
        g = {x.key: x for x in w.snapshot()}["race=unknown"]
        assert (g.labelled, g.fp, g.tp) == (1, 1, 0)
    finally:
        w.clear()
        assert len(w) == 0
        w.close()


def test_count_window_cuts_at_whole_buckets(pg: str) -> None:
    from mlguard.fairness.shared_pg import SharedWindow

    route = f"/t-{uuid.uuid4().hex[:10]}"
    clock = [1000.0]
    w = SharedWindow(pg, route=route, attributes=["sex"], size=10, bucket_seconds=10, clock=lambda: clock[0],
                     secret=b"k" * 32)
    try:
        for b in range(5):
            for i in range(6):
                w.add({"sex": "F"}, True, audit_id=f"{route}-{b}-{i}")
            clock[0] += 10
        assert len(w) == 12  # the newest two buckets of 6 reach size 10
        assert not w.knows(f"{route}-0-0")
    finally:
        w.clear()
        w.close()


@pytest.mark.anyio
async def test_stage_with_shared_store(pg: str, tmp_path: Any, token: str, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    from tests.fairness.conftest import build, client, make_config

    monkeypatch.delenv("MLGUARD_KEYRING", raising=False)
    cfg = make_config(tmp_path, shared_store=pg, bucket_seconds=3600)
    cfg["audit"] = {"keyring": str(tmp_path / "k.keyring")}  # the shared rows are sealed with a keyring secret
    guard, app, _ = build(cfg)
    st = guard.stages[0].routes[0]
    st.window.route = f"/t-{uuid.uuid4().hex[:10]}"  # isolate this test's rows
    try:
        async with client(app) as c:
            r = await c.post("/screen", json={"candidate": {"id": "x", "sex": "Female", "race": "Black"},
                                               "points": 70})
            assert r.headers["mlguard-fairness"] == "insufficient"
            fb = await c.post("/mlguard/feedback", json={"audit_id": r.headers["mlguard-audit-id"],
                                                         "label": True},
                              headers={"authorization": f"Bearer {token}"})
            assert fb.status_code == 200, fb.text
        g = {x.key: x for x in st.window.snapshot()}["sex=Female"]
        assert (g.n, g.tp) == (1, 1)
        import psycopg

        with psycopg.connect(pg) as conn:  # the per-decision row does not hold the categories in clear
            (sealed,) = conn.execute("SELECT groups FROM mlguard_fairness_decisions WHERE route = %s",
                                     (st.window.route,)).fetchone()
        assert b"Female" not in bytes(sealed) and b"Black" not in bytes(sealed)
    finally:
        st.window.clear()
        await guard.aclose()


def test_a_dropped_connection_is_replaced_at_the_next_call(pg: str) -> None:
    """The server restarting (here: a proxy dropping every connection and refusing new ones, then accepting
    again) fails the calls made meanwhile with FairnessError, and the window works again by itself as soon as the
    server answers: without a new connection every call after the outage failed until the guard restarted,
    and under fail_closed every request of the route was refused."""
    from urllib.parse import urlsplit, urlunsplit

    from mlguard.errors import FairnessError
    from mlguard.fairness.shared_pg import SharedWindow
    from tests.audit.test_pg_outage import CuttableProxy

    parts = urlsplit(pg)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{proxy.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    route = f"/outage-{uuid.uuid4().hex[:8]}"
    w = SharedWindow(url, route=route, attributes=["sex"], size=1000, bucket_seconds=3600, secret=b"k" * 32)
    try:
        w.add({"sex": "F"}, pred=True, audit_id=f"{route}-1")
        proxy.cut()
        with pytest.raises(FairnessError):
            w.add({"sex": "F"}, pred=True, audit_id=f"{route}-2")
        with pytest.raises(FairnessError):  # still down: the reconnection is refused, cleanly
            w.add({"sex": "F"}, pred=True, audit_id=f"{route}-3")
        proxy.restore()
        w.add({"sex": "M"}, pred=False, audit_id=f"{route}-4")
        counts = {g.key: g.n for g in w.snapshot()}
        assert counts == {"sex=F": 1, "sex=M": 1}
        assert w.knows(f"{route}-4") and not w.knows(f"{route}-2")
    finally:
        w.close()
        proxy.cut()
