"""At start-up the audit stage refuses a keyring that shares no key with a store already holding records (it
would seal and sign what the log's own keyring can never read), naming key ids and what to do; the log's own
keyring, a rotated one and one whose old KEK was retired (after a rewrap) still start."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlguard.audit.reader import AuditReader
from mlguard.audit.rekey import rewrap
from mlguard.audit.store.base import open_store
from mlguard.audit.verify import verify_log
from mlguard.errors import KeyringError
from mlguard.keys import ENV_VAR, Keyring
from mlguard.middleware import GuardMiddleware
from mlguard.runtime import Guard
from mlguard.testing import json_app

model_app = json_app(lambda doc: {"score": 0.7})


def config(tmp_path: Path) -> dict[str, Any]:
    return {"policies": ["base"], "base_dir": str(tmp_path),
            "audit": {"store": "sqlite:///./audit.db", "keyring": "./k.keyring"},
            "routes": [{"path": "/predict", "subject": "$.id", "model": {"output": "$.score"}}]}


async def serve_one(tmp_path: Path, subject: str) -> str:
    """Start the guard, answer one guarded request (recorded), stop; the request's audit id."""
    guard = Guard(config(tmp_path), stages=["audit"])
    app = GuardMiddleware(model_app, guard=guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/predict", json={"id": subject})
    await guard.aclose()
    assert r.status_code == 200
    return r.headers["mlguard-audit-id"]


def readable_and_intact(tmp_path: Path, ids: list[str]) -> None:
    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "k.keyring")
    try:
        assert all(reader.get(a) is not None for a in ids)
        s = reader.store
        assert verify_log(s.iter_rows(), head=s.head(), checkpoints=s.checkpoints(), public_keys=s.public_keys()).ok
    finally:
        reader.store.close()


def env_value(doc: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.anyio
async def test_unrelated_keyring_is_refused_with_key_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await serve_one(tmp_path, "a")
    ours = Keyring.load(tmp_path / "k.keyring").describe()
    other = Keyring.new_document()
    monkeypatch.setenv(ENV_VAR, env_value(other))
    with pytest.raises(KeyringError) as info:
        Guard(config(tmp_path), stages=["audit"])
    msg = str(info.value)
    assert ours["active_kek"] in msg and ours["active_signing_key"] in msg  # what the log was written with
    assert other["keks"][0]["id"] in msg and other["signing"][0]["id"] in msg  # what was offered
    assert "keyring that wrote this log" in msg and "new store" in msg and ENV_VAR in msg
    secrets = [other["root"]["key"], other["keks"][0]["key"], other["signing"][0]["seed"],
               *(k["key"] for k in json.loads((tmp_path / "k.keyring").read_text())["keks"])]
    assert not any(s in msg for s in secrets)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:  # nothing of the refused keyring reached the store
        assert set(store.public_keys()) == set(ours["signing_keys"])
    finally:
        store.close()
    monkeypatch.delenv(ENV_VAR)
    second = await serve_one(tmp_path, "b")  # the log's own keyring starts (and the refused one left no trace)
    readable_and_intact(tmp_path, [first, second])


@pytest.mark.anyio
async def test_any_keyring_starts_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(config(tmp_path), stages=["audit"])  # creates the store, writes no record
    await guard.aclose()
    monkeypatch.setenv(ENV_VAR, env_value(Keyring.new_document()))
    guard = Guard(config(tmp_path), stages=["audit"])
    await guard.aclose()


@pytest.mark.anyio
async def test_rotated_keyring_starts(tmp_path: Path) -> None:
    first = await serve_one(tmp_path, "a")
    Keyring.load(tmp_path / "k.keyring").rotate()
    second = await serve_one(tmp_path, "b")
    readable_and_intact(tmp_path, [first, second])


@pytest.mark.anyio
@pytest.mark.parametrize("restart_before_rewrap", [True, False])
async def test_keyring_with_retired_kek_starts(tmp_path: Path, restart_before_rewrap: bool) -> None:
    """The documented order: rotate, restart the writers, rewrap, retire the old KEK. The store then holds
    no data key under a KEK the keyring lacks, and the old signing key's public key, which the keyring keeps.
    Also when no writer ran between the rotation and the retirement (the store has never seen the new keys)."""
    ids = [await serve_one(tmp_path, "a")]
    ring = Keyring.load(tmp_path / "k.keyring")
    old_kek = ring.active_kek_id()
    ring.rotate()
    if restart_before_rewrap:
        ids.append(await serve_one(tmp_path, "b"))
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        assert rewrap(store, ring).remaining == {}
    finally:
        store.close()
    ring.retire(old_kek)
    assert old_kek not in Keyring.load(tmp_path / "k.keyring").kek_ids()
    ids.append(await serve_one(tmp_path, "c"))
    readable_and_intact(tmp_path, ids)


@pytest.mark.anyio
async def test_keyring_sharing_only_a_kek_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared KEK (the store's data keys are wrapped under it) is enough, even with a signing key the store
    has not seen: the keyring can read what the log holds."""
    first = await serve_one(tmp_path, "a")
    doc = json.loads((tmp_path / "k.keyring").read_text())
    doc["signing"] = Keyring.new_document()["signing"]
    monkeypatch.setenv(ENV_VAR, env_value(doc))
    second = await serve_one(tmp_path, "b")
    monkeypatch.delenv(ENV_VAR)
    reader = AuditReader(f"sqlite:///{tmp_path / 'audit.db'}", Keyring(doc))
    try:
        assert reader.get(first) is not None and reader.get(second) is not None
    finally:
        reader.store.close()
