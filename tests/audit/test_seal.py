"""Sealing: canonical header, nonce uniqueness, associated data binding, malformed input."""

from __future__ import annotations

import pytest

from mlguard.audit.chain import GENESIS, link
from mlguard.audit.record import Pending, canonical
from mlguard.audit.seal import MAX_USES, Sealer, _header, decode, encode
from mlguard.errors import IntegrityError
from mlguard.keys import Keyring


class MemTx:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, str, str, bytes]] = {}

    def key_generation(self) -> int:
        return 0

    def insert_data_keys(self, rows: list[tuple[str, str, str, str, str, bytes]]) -> None:
        for key_id, subject, domain, period, kek_id, wrapped in rows:
            self.rows[key_id] = (subject, domain, period, kek_id, wrapped)


def items(n: int, subject: str | None = "s") -> list[Pending]:
    return [Pending(f"id-{i}", "2026-11-27T00:00:00.000000Z", "exchange", "/p", subject, canonical({"i": i}),
                    canonical({"sex": "F"})) for i in range(n)]


@pytest.mark.parametrize("text", ["plain", 'quo"te', "back\\slash", "ünïcode", "\u2028line", "ctl\x01"])
def test_header_is_canonical(text: str) -> None:
    p = Pending(text, text, "exchange", text, text, b"{}")
    ref = canonical({"v": 1, "seq": 7, "prev": GENESIS.hex(), "id": text, "ts": text, "kind": "exchange",
                     "route": text, "subj": text, "kid": None, "pkid": text})
    assert _header(7, GENESIS, p, None, text) == ref


def test_nonces_never_repeat_and_keys_separate(keyring: Keyring) -> None:
    tx, s = MemTx(), Sealer(keyring)
    out = s.seal_batch(tx, items(300), 0, GENESIS, link)  # type: ignore[arg-type]
    nonces = [n for _, blob, _ in out for n, _ in decode(blob).parts]
    assert len(nonces) == len(set(nonces)) == 600
    h = decode(out[0][1]).header
    assert tx.rows[h["kid"]][1] == "data" and tx.rows[h["pkid"]][1] == "protected"
    body, prot, shredded = s.open(decode(out[5][1]), tx.rows.get)
    assert body == {"i": 5} and prot == {"sex": "F"} and not shredded


def test_key_rotates_at_max_uses(keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlguard.audit.seal as seal

    monkeypatch.setattr(seal, "MAX_USES", 4)
    assert MAX_USES == 1 << 28
    tx, s = MemTx(), Sealer(keyring)
    out = s.seal_batch(tx, items(10), 0, GENESIS, link)  # type: ignore[arg-type]
    kids = [decode(b).header["kid"] for _, b, _ in out]
    assert len(set(kids)) == 3 and all(kids.count(k) <= 4 for k in kids)


def test_ciphertext_bound_to_its_place(keyring: Keyring) -> None:
    tx, s = MemTx(), Sealer(keyring)
    out = s.seal_batch(tx, items(2), 0, GENESIS, link)  # type: ignore[arg-type]
    one, two = decode(out[0][1]), decode(out[1][1])
    # the first record's ciphertext under the second record's header (other seq and prev): does not open
    moved = decode(encode(two.header_bytes, list(one.parts)))
    fresh = Sealer(keyring)
    with pytest.raises(IntegrityError):
        fresh.open(moved, tx.rows.get)


@pytest.mark.parametrize("blob", [b"", b"XXXX", b"MGA1\x00\x00\x00\x05{}", b"MGA1\x00\x00\x00\x02{}\x01\x0c"])
def test_malformed_is_integrity_error(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode(blob)


def test_write_side_key_cache_is_bounded_and_a_forgotten_key_is_never_reused(
        keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request a new subject (credit applicants): the cache of ready data keys stays bounded, and a subject
    whose key was forgotten gets a fresh key, its records all opening; no (key, nonce) pair repeats."""
    import mlguard.audit.seal as seal

    monkeypatch.setattr(seal, "MAX_SLOTS", 40)
    tx, s = MemTx(), Sealer(keyring)
    batch = [p for i in range(60) for p in items(1, subject=f"subject-{i}")]
    batch += items(2, subject="subject-0")  # its keys were forgotten by now
    out = s.seal_batch(tx, batch, 0, GENESIS, link)  # type: ignore[arg-type]
    assert len(s._slots) <= 40
    headers = [decode(b).header for _, b, _ in out]
    assert headers[-1]["kid"] != headers[0]["kid"] and headers[-1]["kid"] == headers[-2]["kid"]
    pairs = [(h["kid"], n) for h, (_, b, _) in zip(headers, out, strict=True) for n, _ in decode(b).parts[:1]]
    assert len(pairs) == len(set(pairs))
    for (_, blob, _), i in zip(out, [0] * 60 + [0, 1], strict=True):
        body, prot, shredded = s.open(decode(blob), tx.rows.get)
        assert body == {"i": i} and prot == {"sex": "F"} and not shredded
