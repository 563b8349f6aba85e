from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from mlguard.errors import KeyringError
from mlguard.keys import KeyProvider, Keyring


def test_create_is_0600_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ring = Keyring.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Keyring.load(path)
    assert again.secret("pii.hmac") == ring.secret("pii.hmac")
    assert len(ring.secret("pii.hmac")) == 32
    assert ring.secret("pii.hmac") != ring.secret("pii.vault")
    assert isinstance(ring, KeyProvider)


def test_refuses_open_permissions_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    Keyring.create(path)
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.create(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyringError, match="group or others"):
        Keyring.load(path)


def test_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"):
        Keyring.load(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_text("{}")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyringError, match="not an mlguard keyring"):
        Keyring.load(bad)


def test_rotation_keeps_secrets_and_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ring = Keyring.create(path)
    s1 = ring.secret("audit.subject")
    kek1 = ring.active_kek_id()
    kid, wrapped = ring.wrap("data", b"x" * 32, b"aad")
    new_kek, _new_sig = ring.rotate()
    assert new_kek != kek1 and ring.active_kek_id() == new_kek
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Keyring.load(path)
    assert loaded.secret("audit.subject") == s1  # pseudonyms survive rotation
    assert loaded.unwrap(kid, "data", wrapped, b"aad") == b"x" * 32
    assert set(loaded.public_keys()) == set(ring.public_keys()) and len(ring.public_keys()) == 2


def test_domains_are_separate_and_aad_bound(keyring: Keyring) -> None:
    kid, wrapped = keyring.wrap("data", b"k" * 32, b"a")
    with pytest.raises(KeyringError):
        keyring.unwrap(kid, "protected", wrapped, b"a")
    with pytest.raises(KeyringError):
        keyring.unwrap(kid, "data", wrapped, b"b")
    with pytest.raises(KeyringError):
        keyring.wrap("other", b"k" * 32, b"a")


def test_from_env_seed_and_document() -> None:
    seed = base64.b64encode(b"s" * 32).decode()
    a, b = Keyring.from_env(seed), Keyring.from_env(seed)
    assert a.secret("x") == b.secret("x") and a.active_kek_id() == b.active_kek_id()
    doc = base64.b64encode(json.dumps(Keyring.new_document()).encode()).decode()
    assert len(Keyring.from_env(doc).secret("x")) == 32
    with pytest.raises(KeyringError):
        Keyring.from_env("!!notbase64")
    with pytest.raises(KeyringError):
        Keyring.from_env(base64.b64encode(b"short").decode())
    with pytest.raises(KeyringError, match="cannot be rotated"):
        a.rotate()


def test_describe_has_no_material(tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "k")
    doc = json.loads((tmp_path / "k").read_text())
    text = json.dumps(ring.describe())
    assert doc["root"]["key"] not in text and doc["keks"][0]["key"] not in text


def _start_worker(path: str, barrier: object, out: object) -> None:
    """One worker process starting up: wait for the others, then take the keyring (create or load)."""
    from mlguard.keys import open_or_create

    barrier.wait()  # type: ignore[attr-defined]
    try:
        ring = open_or_create(Path(path))
        out.put((ring.active_kek_id(), ring.signing_key_id()))  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the test, which fails on it
        out.put(("error", type(exc).__name__))  # type: ignore[attr-defined]


def test_workers_starting_together_share_one_complete_keyring(tmp_path: Path) -> None:
    """N workers at first start: exactly one creates the keyring, every other loads that same, complete file
    (never a half-written one), and no temporary file is left behind."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    n = 6
    path = tmp_path / "ring.json"
    for _ in range(5):  # several rounds: the race is narrow
        if path.exists():
            path.unlink()
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_start_worker, args=(str(path), barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert all(r[0] != "error" for r in results), results
        assert len(set(results)) == 1  # one keyring for all
        assert set(results) == {(Keyring.load(path).active_kek_id(), Keyring.load(path).signing_key_id())}
        assert sorted(x.name for x in tmp_path.iterdir()) == ["ring.json"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_create_without_hard_links_falls_back_to_an_exclusive_create(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Some network and FAT mounts refuse link(): the keyring is then created with O_EXCL, still 0600, still
    never overwriting; any other error of link() is reported as before."""
    import errno

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "k.keyring"
    ring = Keyring.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.load(path).active_kek_id() == ring.active_kek_id()
    assert [p.name for p in tmp_path.iterdir()] == ["k.keyring"]  # the temporary file is gone
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.create(path)

    def denied(src: object, dst: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "link", denied)
    with pytest.raises(KeyringError, match="cannot create keyring"):
        Keyring.create(tmp_path / "other.keyring")
