"""The README's "Guard your own service" walkthrough, run as written.

Why: issue 7 asks that a new user can wrap their own service using only the README. This test reads the
service, the config and the shell commands out of the README (the blocks after ``<!-- walkthrough:NAME -->``),
writes them into an empty directory and runs them: ``mlguard config check``, the app ``mlguard serve`` builds
(the same factory, in-process), the curl request, ``mlguard audit verify`` and ``export``. If the README drifts
from what works, this fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.cli import main
from mlguard.serving import ENV_APP, ENV_CONFIG, create_app
from mlguard.testing import receive_body

README = Path(__file__).resolve().parents[2] / "README.md"
PLANTED = ("Maria Lopez", "212-555-0199", "Female")


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- walkthrough:" + re.escape(name) + r" -->\n```\w*\n(.*?)```", text, re.S)
    assert m, f"README has no walkthrough block {name!r}"
    return m.group(1)


def _commands(block: str) -> list[list[str]]:
    """Shell lines to argv lists; a quoted argument may span lines (as in the curl call)."""
    out: list[list[str]] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            argv = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        if argv:
            out.append(argv)
        pending = ""
    assert not pending, "unterminated command in the README block"
    return out


def _curl(argv: list[str]) -> tuple[str, dict[str, str], bytes]:
    url, headers, data = "", {}, b""
    it = iter(argv[1:])
    for arg in it:
        if arg == "-H":
            k, _, v = next(it).partition(":")
            headers[k.strip()] = v.strip()
        elif arg == "-d":
            data = next(it).encode()
        elif not arg.startswith("-"):
            url = arg
    return "/" + url.split("/", 1)[1], headers, data


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "service.py").write_text(_block("service.py"), encoding="utf-8")
    (tmp_path / "mlguard.yaml").write_text(_block("mlguard.yaml"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "service", raising=False)
    return tmp_path


@pytest.mark.anyio
async def test_the_readme_walkthrough_works_as_written(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    setup = _commands(_block("commands"))
    assert [c[:2] for c in setup] == [["mlguard", "config"], ["export", "MLGUARD_ADMIN_TOKEN=change-me"],
                                      ["mlguard", "serve"]]
    assert main(setup[0][1:]) == 0
    name, _, value = setup[1][1].partition("=")
    monkeypatch.setenv(name, value)
    serve = setup[2]
    config, target = serve[2], serve[3]
    assert main(["serve", "--help"]) == 0  # the options the README uses exist
    assert "--port" in capsys.readouterr().out

    # What `mlguard serve CONFIG MODULE:APP` runs in each worker: the factory, fed through the environment.
    monkeypatch.setenv(ENV_CONFIG, str((workdir / config).resolve()))
    monkeypatch.setenv(ENV_APP, target)
    guarded = create_app()
    received: list[bytes] = []
    user_app = guarded.app

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            body = await receive_body(receive)
            received.append(body)

            async def replay() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            await user_app(scope, replay, send)
            return
        await user_app(scope, receive, send)

    guarded.app = spy
    try:
        requests = _commands(_block("request"))
        assert requests[0][0] == "curl"
        path, headers, data = _curl(requests[0])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t") as client:
            resp = await client.post(path, headers=headers, content=data)
            assert resp.status_code == 200, resp.text
            doc = resp.json()
            assert resp.headers["mlguard-redactions"] == "3"  # what the README says
            assert resp.headers["mlguard-policy"] == "gdpr,ecoa"
            audit_id = resp.headers["mlguard-audit-id"]
            assert isinstance(doc["score"], float)
            assert doc["explanation"]["reasons"], "an unfavourable decision carries ecoa reasons"
            assert doc["approved"] is False
            scrape = await client.get("/mlguard/health")
            assert scrape.status_code == 200
    finally:
        await guarded.guard.aclose()

    assert len(received) == 1
    seen = json.loads(received[0])
    assert seen["applicant"]["name"].startswith("PERSON_")
    assert "sex" not in seen["applicant"]
    for value in PLANTED:
        assert value.encode() not in received[0]

    keyring = workdir / "mlguard.keyring"
    assert stat.S_IMODE(os.stat(keyring).st_mode) == 0o600
    assert (workdir / "mlguard-audit.db").exists()

    verify, export = requests[1], requests[2]
    assert verify[:3] == ["mlguard", "audit", "verify"] and export[:3] == ["mlguard", "audit", "export"]
    assert main(verify[1:]) == 0
    assert main(export[1:]) == 0
    out = workdir / export[export.index("--out") + 1]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["audit_id"] for line in lines] == [audit_id]
    for value in PLANTED[:2]:
        assert value not in lines[0]
