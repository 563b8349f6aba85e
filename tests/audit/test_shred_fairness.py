"""GDPR erasure reaches the fairness window: `mlguard audit shred --config FILE --subject ID` erases the subject's
decisions from the shared fairness store (read from the config, as the token vault is), says so, and feedback on
an erased decision is refused (410 problem+json, no value echoed), in shared and per-worker mode.

Before: after a shred (exit 0) the subject's row in ``mlguard_fairness_decisions`` was still there, its groups
sealed under a keyring-wide key (so still readable) and counted in the shared window, and ``POST
/mlguard/feedback`` on the shredded decision answered 200 ``labelled: true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mlguard.cli import cli
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from tests.audit.conftest import tombstones
from tests.fairness.conftest import screening_app
from tests.pg import fresh_schema_url

pytestmark = pytest.mark.anyio

TOKEN_ENV = "MLGUARD_TEST_SHRED_FAIRNESS_TOKEN"
AUTH = {"authorization": "Bearer shred-fairness-token"}
ERASED = "CLM-7781"
KEPT = "CLM-1000"

CONFIG = """\
policies: [gdpr, eu_ai_act]
retention: {{max: P3Y}}
audit: {{store: "sqlite:///audit.db", keyring: mlguard.keyring, witness: witness.jsonl}}
admin: {{token_env: {token_env}}}
fairness:
  window_size: 1000
  evaluate_every: 1
  categories: {{sex: [Female, Male], nationality: [DE, FR, PL]}}
{shared}routes:
  - path: /screen
    subject: $.candidate.id
    scan_undeclared: false
    protected: {{sex: $.candidate.sex, nationality: $.candidate.nationality}}
    model: {{output: $.score, favorable: $.selected}}
"""


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, AUTH["authorization"].split()[1])
    monkeypatch.delenv("MLGUARD_KEYRING", raising=False)


def _config(tmp_path: Path, shared: str | None = None) -> Path:
    cfg = tmp_path / "mlguard.yaml"
    line = f'  shared_store: "{shared}"\n' if shared else ""
    cfg.write_text(CONFIG.format(token_env=TOKEN_ENV, shared=line))
    return cfg


def _guard(cfg: Path) -> tuple[Guard, httpx.AsyncClient]:
    guard = Guard(cfg, stages=["fairness", "audit"])
    app = GuardMiddleware(screening_app, guard=guard)
    return guard, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _decide(c: httpx.AsyncClient) -> dict[str, list[str]]:
    """Two decisions of the subject to erase (the only Polish applicant), three of another; audit ids by subject."""
    people = [(ERASED, "Female", "PL", 80), (ERASED, "Female", "PL", 20)] + [(KEPT, "Male", "DE", 70)] * 3
    ids: dict[str, list[str]] = {}
    for subject, sex, nationality, points in people:
        r = await c.post("/screen", json={"candidate": {"id": subject, "sex": sex, "nationality": nationality},
                                          "points": points})
        assert r.status_code == 200, r.text
        ids.setdefault(subject, []).append(r.headers["mlguard-audit-id"])
    return ids


def _shred(cfg: Path, *extra: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["audit", "shred", "--config", str(cfg), "--subject", ERASED,
                                   "--override-retention", *extra])
    return res.exit_code, res.output


async def _assert_refused(c: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await c.post("/mlguard/feedback", json=body, headers=AUTH)
    assert r.status_code == 410, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["title"] == "Decision erased" and "erased" in doc["detail"] and "fairness window" in doc["detail"]
    for value in body.values():  # neither the id nor the subject is echoed
        if isinstance(value, str):
            assert value not in r.text


async def test_per_worker_window_refuses_feedback_on_an_erased_decision(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    guard, c = _guard(cfg)
    try:
        async with c:
            ids = await _decide(c)
            window = guard.stages[0].routes[0].window
            before = {g.key: g.n for g in window.snapshot()}
            assert before["nationality=PL"] == 2
            # the shred runs while this worker serves (a per-worker window: nothing stored for it to erase)
            code, out = _shred(cfg)
            assert code == 0, out
            await _assert_refused(c, {"audit_id": ids[ERASED][0], "label": True})
            await _assert_refused(c, {"subject": ERASED, "label": False})  # by subject: its latest decision
            after = {g.key: g.n for g in window.snapshot()}
            assert "nationality=PL" not in after  # both erased decisions are out of the window now
            assert after["nationality=DE"] == before["nationality=DE"] == 3
            ok = await c.post("/mlguard/feedback", json={"audit_id": ids[KEPT][0], "label": True}, headers=AUTH)
            assert ok.status_code == 200 and ok.json()["labelled"] is True
    finally:
        await guard.aclose()
    assert "fairness windows are per worker" in out and "shredded subject" in out  # the shred said why


async def test_a_named_fairness_store_that_cannot_be_reached_is_an_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    guard, c = _guard(cfg)
    async with c:
        await _decide(c)
    await guard.aclose()
    secret = "s3cr3t-pw"
    code, out = _shred(cfg, "--fairness-store", f"postgresql://u:{secret}@127.0.0.1:1/nodb")
    assert code == 2 and "shared fairness store unavailable" in out and "--fairness-store" in out, out
    assert secret not in out
    assert tombstones(tmp_path) == []  # nothing was destroyed


# ---------------------------------------------------------------------------------------------- shared store

@pytest.fixture
def shared_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of this test (dropped afterwards)."""
    with fresh_schema_url("mlg_shred_fair") as url:
        yield url


def _rows(url: str, audit_ids: list[str]) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM mlguard_fairness_decisions WHERE audit_id = ANY(%s)",
                                (audit_ids,)).fetchone()[0])


def _counts(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT grp, sum(n) FROM mlguard_fairness_counts GROUP BY grp").fetchall()
    return {str(g): int(n) for g, n in rows}


@pytest.mark.postgres
async def test_shred_erases_the_subjects_shared_fairness_decisions(tmp_path: Path, shared_url: str) -> None:
    cfg = _config(tmp_path, shared_url)
    guard, c = _guard(cfg)
    async with c:
        ids = await _decide(c)
    await guard.aclose()
    assert _rows(shared_url, ids[ERASED]) == 2 and _rows(shared_url, ids[KEPT]) == 3
    assert _counts(shared_url)["nationality=PL"] == 2

    code, out = _shred(cfg)
    assert code == 0, out
    assert _rows(shared_url, ids[ERASED]) == 0  # the rows tying the audit ids to the person's groups are gone
    assert "2 fairness window decisions erased" in out and "tombstone appended" in out  # and it says so
    assert _rows(shared_url, ids[KEPT]) == 3  # another subject's stay
    counts = _counts(shared_url)
    assert "nationality=PL" not in counts and "nationality=PL|sex=Female" not in counts  # no longer counted
    assert counts["nationality=DE"] == 3 and counts["sex=Male"] == 3
    assert [t["data"]["fairness_decisions_erased"] for t in tombstones(tmp_path)] == [2]

    # a worker started after the shred: feedback on the erased decision is refused, on the other one joined
    guard, c = _guard(cfg)
    try:
        async with c:
            await _assert_refused(c, {"audit_id": ids[ERASED][1], "label": True})
            ok = await c.post("/mlguard/feedback", json={"audit_id": ids[KEPT][0], "label": True}, headers=AUTH)
            assert ok.status_code == 200 and ok.json()["labelled"] is True
    finally:
        await guard.aclose()

    code, out = _shred(cfg)  # again: already shredded, nothing left to erase, no second tombstone
    assert code == 0 and "already shredded" in out and "0 fairness window decisions erased" in out, out
    assert len(tombstones(tmp_path)) == 1


@pytest.mark.postgres
async def test_a_shred_run_without_the_store_can_be_completed_later(tmp_path: Path, shared_url: str) -> None:
    """The walkthrough's state: a subject shredded before shred reached the fairness store (here: named no
    store). Shredding again with the config erases what was left and says so."""
    cfg = _config(tmp_path, shared_url)
    guard, c = _guard(cfg)
    async with c:
        ids = await _decide(c)
    await guard.aclose()
    res = CliRunner().invoke(cli, ["audit", "shred", "--store", f"sqlite:///{tmp_path / 'audit.db'}",
                                   "--keyring", str(tmp_path / "mlguard.keyring"), "--policy", "gdpr",
                                   "--subject", ERASED, "--override-retention"])
    assert res.exit_code == 0, res.output
    assert _rows(shared_url, ids[ERASED]) == 2

    code, out = _shred(cfg)
    assert code == 0, out
    assert _rows(shared_url, ids[ERASED]) == 0 and _rows(shared_url, ids[KEPT]) == 3
    assert "already shredded" in out and "2 fairness window decisions erased" in out, out
    assert "no fairness store given" in res.output  # the first run said what it had not erased
