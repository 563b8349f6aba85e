"""Smoke form of the end-to-end benchmark (bench/e2e.py --quick): the whole path works, no timing asserted.

What this proves, in CI's time budget: every server of the benchmark starts under uvicorn (bare, each guard
layer, the naive baseline), serves the example's valid requests under concurrent load with zero non-2xx
answers, the guarded ones carry MLGuard-Audit-Id (and the unguarded ones do not, so the header is the guard's),
and the markdown section renders every row and every target and lands between the docs markers without touching
the rest of the file. The figures themselves belong to ``make bench``, never to a test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.e2e import BEGIN, END, ROWS, SERVERS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "BENCHMARKS.md"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("e2e")
    docs = tmp / "BENCHMARKS.md"
    shutil.copy(DOCS, docs)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e.py"), "--quick", "--json", str(tmp / "e2e.json"),
         "--markdown", str(tmp / "e2e.md"), "--write-docs", "--docs", str(docs)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, f"e2e --quick failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return {"json": json.loads((tmp / "e2e.json").read_text()), "markdown": (tmp / "e2e.md").read_text(),
            "docs": docs.read_text(), "stdout": out.stdout}


def test_every_row_served_with_only_2xx(quick_run: dict[str, Any]) -> None:
    rows = {r["key"]: r for r in quick_run["json"]["rows"]}
    assert set(rows) == {r.key for r in ROWS}
    for key, row in rows.items():
        assert row["runs"], f"{key}: no run"
        for run in row["runs"]:
            assert run["requests"] > 0, f"{key}: no request completed"
            assert run["non_2xx"] == 0, f"{key}: {run['non_2xx']} non-2xx answers"
            assert run["errors"] == 0, f"{key}: {run['errors']} errors"
            assert run["ready_s"] > 0
            if sys.platform.startswith("linux"):
                assert run["rss_mb"] and run["rss_mb"] > 10, f"{key}: RSS not read"
                assert run["anon_mb"] and 10 < run["anon_mb"] < run["rss_mb"], f"{key}: RssAnon not read"
        assert row["probe_statuses"] and set(row["probe_statuses"]) == {200}, f"{key}: {row['probe_statuses']}"


def test_guarded_answers_carry_the_audit_id_and_others_do_not(quick_run: dict[str, Any]) -> None:
    for row in quick_run["json"]["rows"]:
        guarded = SERVERS[row["server"]].guarded
        assert row["probe_audit_ids"] == [guarded] * len(row["probe_audit_ids"]), row["key"]


def test_naive_baseline_served_the_note_requests(quick_run: dict[str, Any]) -> None:
    rows = {r["key"]: r for r in quick_run["json"]["rows"]}
    assert rows["naive_note"]["body"] == "note"
    assert rows["naive_note"]["runs"][0]["requests"] > 0
    assert SERVERS[rows["naive_note"]["server"]].naive


def test_markdown_has_every_row_and_target(quick_run: dict[str, Any]) -> None:
    md = quick_run["markdown"]
    table = [line for line in md.splitlines() if line.startswith("| ")]
    for row in ROWS:
        assert any(line.startswith(f"| {row.label} |") for line in table), row.label
    targets = {t["what"] for t in quick_run["json"]["targets"]}
    assert len(targets) == 5
    for what in targets:
        assert any(line.startswith(f"| {what} |") and ("met" in line or "missed" in line) for line in table), what
    assert "Machine:" in md and "bench/e2e.py --quick" in md


def test_docs_section_replaced_between_markers_only(quick_run: dict[str, Any]) -> None:
    before, docs = DOCS.read_text(), quick_run["docs"]
    head, tail = before.split(BEGIN)[0], before.split(END)[1]
    assert docs.startswith(head + BEGIN) and docs.endswith(END + tail)
    section = docs.split(BEGIN)[1].split(END)[0]
    assert section.strip() == quick_run["markdown"].strip()
