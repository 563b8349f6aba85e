"""The sealed envelope: AES-256-GCM under a per-subject, per-day data key, bound to its place in the chain.

Layout of the sealed bytes (what the chain hashes, so verifying needs no key)::

    b"MGA1" | u32 len(header) | header | u8 n_parts | n x (u8 len(nonce) | nonce | u32 len(data) | data)

``header`` is canonical JSON {v, seq, prev, id, ts, kind, route, subj, kid, pkid}; it is the associated data
of every part, so a ciphertext moved to another sequence number, behind another previous hash or under
another key id fails to open. Part 0 is the record, part 1 (if any) the protected attributes, sealed under a
data key of the separate "protected" domain. Clear records (tombstones, gaps: no personal data) carry their
body with an empty nonce.

Nonces: a data key is only ever used by the writer that created it (restarts and other processes create
fresh keys instead of reusing stored ones), so its nonce is a 4-byte random prefix fixed per key followed by
an exact 8-byte use counter: never repeated. Keys retire at ``MAX_USES`` (2^28), far below 2^32. Data keys exist per
(subject pseudonym, domain, UTC day): shredding a subject deletes its keys; purging deletes the keys of every
day past the retention maximum.
"""

from __future__ import annotations

import itertools
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_str
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlguard.audit.record import Pending
from mlguard.errors import AuditError, IntegrityError
from mlguard.ids import random_bytes
from mlguard.keys import KeyProvider

MAGIC = b"MGA1"
VERSION = 1
MAX_USES = 1 << 28
MAX_SLOTS = 4096
"""Write-side data keys kept ready (subject, domain, day). Each holds an AESGCM context, about 3 KB: a bound of
100,000 let a service whose every request is a new applicant grow by 6 MB per 1,000 requests up to some 300 MB
(found by the end-to-end soak). A key forgotten is never reused: the next record of that subject and day gets a
fresh key (one more wrap and data-key row, what every new subject costs anyway)."""
MAX_READ_KEYS = 8192
"""Unwrapped data keys a reader keeps (about 3 KB each): an export over millions of subjects streams in bounded
memory; a key forgotten is fetched and unwrapped again if an older record needs it."""
NONCE = 12
_U32 = struct.Struct(">I")


class KeyTx(Protocol):
    """The part of a store write transaction that data keys need."""

    def key_generation(self) -> int: ...

    def insert_data_keys(self, rows: list[KeyRow]) -> None: ...


@dataclass(frozen=True, slots=True)
class Sealed:
    header: dict[str, Any]
    header_bytes: bytes
    parts: tuple[tuple[bytes, bytes], ...]  # (nonce, data)


def encode(header_bytes: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    out = [MAGIC, _U32.pack(len(header_bytes)), header_bytes, bytes([len(parts)])]
    for nonce, data in parts:
        out += [bytes([len(nonce)]), nonce, _U32.pack(len(data)), data]
    return b"".join(out)


def decode(blob: bytes) -> Sealed:
    """Parse sealed bytes; raise IntegrityError on any malformation (never trust a stored blob)."""
    try:
        if blob[:4] != MAGIC:
            raise ValueError("magic")
        (hlen,) = _U32.unpack_from(blob, 4)
        pos = 8 + hlen
        header_bytes = blob[8:pos]
        header = orjson.loads(header_bytes)  # strict UTF-8 and JSON; its errors are ValueErrors
        n = blob[pos]
        pos += 1
        parts = []
        for _ in range(n):
            nl = blob[pos]
            nonce = blob[pos + 1: pos + 1 + nl]
            pos += 1 + nl
            (dl,) = _U32.unpack_from(blob, pos)
            data = blob[pos + 4: pos + 4 + dl]
            if len(data) != dl or len(nonce) != nl:
                raise ValueError("short")
            parts.append((nonce, data))
            pos += 4 + dl
        if pos != len(blob) or not isinstance(header, dict):
            raise ValueError("trailing")
    except (ValueError, IndexError, struct.error) as exc:
        raise IntegrityError(f"sealed record is malformed ({exc})") from None
    return Sealed(header, header_bytes, tuple(parts))


KeyRow = tuple[str, str, str, str, str, bytes]
"""(key_id, subject, domain, period, kek_id, wrapped): one data-key row to insert."""

Fetch = Callable[[str], tuple[str, str, str, str, bytes] | None]
"""key_id -> (subject, domain, period, kek_id, wrapped), or None once shredded."""


def _s(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


def _header(seq: int, prev: bytes, item: Pending, kid: str | None, pkid: str | None) -> bytes:
    """The header's canonical JSON (sorted keys, no whitespace, UTF-8), written out directly from the text the
    Pending made on the caller's side: it is built once per record on the writer thread, where every
    microsecond is throughput. Equal to ``canonical(...)`` (tests/audit/test_seal.py checks it)."""
    return _header_q(seq, prev, item, _s(kid), _s(pkid))


def _header_q(seq: int, prev: bytes, item: Pending, kid_json: str, pkid_json: str) -> bytes:
    """``_header`` with the key ids already as JSON text (a write slot keeps its key id's text)."""
    a, b, d, e = item.header_parts
    return f'{a}{kid_json}{b}{pkid_json},"prev":"{prev.hex()}{d}{int(seq)}{e}{VERSION}}}'.encode()


def _time_ordered_id() -> str:
    """32 hex digits: microseconds since the epoch, then 64 random bits (time-ordered, unique, cheap)."""
    return f"{time.time_ns() // 1000:016x}{random_bytes(8).hex()}"


def wrap_aad(key_id: str, subject: str, domain: str, period: str) -> bytes:
    """The associated data a data key is wrapped with: its id and slot, so a wrapped key cannot be moved
    to another row (sealing, reading and ``mlguard audit rewrap`` all use it)."""
    return f"mlguard.dek|{key_id}|{subject}|{domain}|{period}".encode()


class Sealer:
    """Seals pending records inside a store's write transaction; caches unwrapped data keys by key id.

    ``new_key`` (data keys, nonce prefixes; key ids too when it is not the default) may be replaced by a
    deterministic source for test vectors only. Key ids are time-ordered (UUIDv7) by default: the store's
    ``data_keys`` primary key then grows at its end instead of dirtying a random B-tree page per new key, which
    measurably shortens every group commit.
    """

    def __init__(self, keys: KeyProvider, *, new_key: Callable[[int], bytes] = random_bytes,
                 new_key_id: Callable[[], str] | None = None) -> None:
        self.keys = keys
        self._new_key = new_key
        if new_key_id is None:
            new_key_id = _time_ordered_id if new_key is random_bytes else (lambda: uuid.UUID(bytes=new_key(16)).hex)
        self._new_key_id = new_key_id
        self._fast_random = new_key is random_bytes and new_key_id is _time_ordered_id
        self._aeads: dict[str, AESGCM] = {}
        self._lock = threading.Lock()
        # Write-side cache: (subject, domain, day, kek) -> [key_id, aead, uses, nonce prefix, key id as JSON
        # text]. Dropped whenever the store's key generation moves (a shred or purge anywhere), so no process
        # seals under a shredded key.
        self._slots: dict[tuple[str, str, str, str], list[Any]] = {}
        self._gen = -1
        # Bumped whenever the slots are dropped: a batch sealed ahead of its transaction (the writer's
        # pipeline) under an older epoch may name keys the store will never hold, and is sealed again.
        self.epoch = 0
        self.write_lock = threading.RLock()  # guards the write side: slots and their use counters

    def _write_key(self, new: list[KeyRow], subject: str, domain: str, period: str,
                   kek_id: str) -> list[Any]:
        """The write slot [key_id, aead, uses, nonce prefix, key id as JSON text] of a (subject, domain, day)
        under the active KEK.

        A process only ever seals under keys it created itself (a cache miss creates a new key, never reuses
        one from the store), so the per-key counter is exact: nonce = 4 random bytes fixed per key || 8-byte
        use counter (the deterministic construction of NIST SP 800-38D 8.2.1), unique until MAX_USES. The
        caller takes the nonce and counts the use (inlined in the sealing loop)."""
        slot = (subject, domain, period, kek_id)
        hit = self._slots.get(slot)
        if hit is None or hit[2] >= MAX_USES:
            if self._fast_random:  # one draw from the pool for the key id, the key and the nonce prefix
                r = random_bytes(44)
                key_id, dek, prefix = f"{time.time_ns() // 1000:016x}{r[:8].hex()}", r[8:40], r[40:]
            else:  # a deterministic source (test vectors): the order of draws the vectors were made with
                key_id = self._new_key_id()
                dek = self._new_key(32)
                prefix = b""
            kek_id, wrapped = self.keys.wrap(domain, dek, wrap_aad(key_id, subject, domain, period))
            new.append((key_id, subject, domain, period, kek_id, wrapped))  # inserted with the batch
            # Not put in the read cache (_aeads): a writer never opens what it sealed, and a long-running
            # server would otherwise keep every data key it ever made in memory.
            hit = [key_id, AESGCM(dek), 0, prefix or self._new_key(4), _json_str(key_id)]
            self._slots[slot] = hit
            if len(self._slots) > MAX_SLOTS:  # bound memory: forget the oldest quarter
                for k in list(itertools.islice(self._slots, MAX_SLOTS // 4)):
                    del self._slots[k]
        return hit

    def _unwrap(self, key_id: str, subject: str, domain: str, period: str, kek_id: str,
                wrapped: bytes) -> AESGCM:
        with self._lock:
            aead = self._aeads.get(key_id)
        if aead is None:
            aead = AESGCM(self.keys.unwrap(kek_id, domain, wrapped, wrap_aad(key_id, subject, domain, period)))
            with self._lock:
                self._aeads[key_id] = aead
                if len(self._aeads) > MAX_READ_KEYS:  # bound memory: forget the oldest quarter
                    for k in list(itertools.islice(self._aeads, MAX_READ_KEYS // 4)):
                        del self._aeads[k]
        return aead

    def prefetch(self, wanted: dict[str, str], fetch_many: Callable[[list[str]], dict[str, tuple[str, str, str,
                 str, bytes]]]) -> set[str]:
        """Unwrap, into the read cache, the keys of ``wanted`` (key id -> the domain its record names) that are
        not cached yet, fetched with one ``fetch_many`` call; returns the ids the store no longer has
        (shredded). A row whose domain differs is left out: opening its record fails as it would unfetched."""
        with self._lock:
            missing = [k for k in wanted if k not in self._aeads]
        if not missing:
            return set()
        rows = fetch_many(missing)
        for key_id, (subject, domain, period, kek_id, wrapped) in rows.items():
            if wanted.get(key_id) == domain:
                self._unwrap(key_id, subject, domain, period, kek_id, wrapped)
        return {k for k in missing if k not in rows}

    def seal_batch(self, tx: KeyTx, items: list[Pending], seq0: int, prev: bytes,
                   link: Callable[[bytes, bytes], bytes]) -> list[tuple[int, bytes, bytes]]:
        """Seal items as seq0+1.. chained from ``prev`` inside ``tx``; returns (seq, sealed, chain_hash) per
        item, and inserts the data keys it created into ``tx``."""
        with self.write_lock:
            out, new = self.seal_detached(items, seq0, prev, tx.key_generation(), link)
        if new:
            tx.insert_data_keys(new)
        return out

    def seal_detached(self, items: list[Pending], seq0: int, prev: bytes, gen: int,
                      link: Callable[[bytes, bytes], bytes]) -> tuple[list[tuple[int, bytes, bytes]], list[KeyRow]]:
        """Seal after head (``seq0``, ``prev``) at key generation ``gen``, both read in the caller's transaction;
        returns the sealed records and the data-key rows that must be inserted with them.

        Callers hold ``write_lock`` and insert the returned key rows in the same transaction as the records
        (``seal_batch`` does both)."""
        out: list[tuple[int, bytes, bytes]] = []
        if gen != self._gen:
            self._slots.clear()
            self._gen = gen
            self.epoch += 1
        seq = seq0
        new: list[KeyRow] = []
        header = _header_q
        write_key = self._write_key
        kek_id = self.keys.active_kek_id()
        slots = self._slots
        u32 = _U32.pack
        for item in items:
            seq += 1
            if item.clear:
                hb = header(seq, prev, item, "null", "null")
                sealed = encode(hb, [(b"", item.body)])
            else:
                subject = item.subject or ""
                period = item.ts[:10]  # one data key per subject and UTC day: purge granularity
                hit = slots.get((subject, "data", period, kek_id))
                if hit is None or hit[2] >= MAX_USES:
                    hit = write_key(new, subject, "data", period, kek_id)
                nonce = hit[3] + hit[2].to_bytes(8, "big")
                hit[2] += 1
                if item.protected is None:
                    hb = header(seq, prev, item, hit[4], "null")
                    ct = hit[1].encrypt(nonce, item.body, hb + b"|data")
                    sealed = b"".join((MAGIC, u32(len(hb)), hb, b"\x01\x0c", nonce, u32(len(ct)), ct))
                else:
                    phit = slots.get((subject, "protected", period, kek_id))
                    if phit is None or phit[2] >= MAX_USES:
                        phit = write_key(new, subject, "protected", period, kek_id)
                    pnonce = phit[3] + phit[2].to_bytes(8, "big")
                    phit[2] += 1
                    hb = header(seq, prev, item, hit[4], phit[4])
                    ct = hit[1].encrypt(nonce, item.body, hb + b"|data")
                    pct = phit[1].encrypt(pnonce, item.protected, hb + b"|protected")
                    # = encode(hb, [(nonce, ct), (pnonce, pct)]), inlined: two 12-byte nonces
                    sealed = b"".join((MAGIC, u32(len(hb)), hb, b"\x02\x0c", nonce, u32(len(ct)), ct,
                                       b"\x0c", pnonce, u32(len(pct)), pct))
            prev = link(prev, sealed)
            out.append((seq, sealed, prev))
        return out, new

    def open(self, sealed: Sealed, fetch: Fetch, *, cached: bool = True
             ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
        """Decrypt a sealed record: (body, protected, shredded). ``fetch(key_id)`` returns the wrapped key row
        (subject, domain, period, kek_id, wrapped) or None when it was shredded."""
        body, protected, shredded = self.open_raw(sealed, fetch, cached=cached)
        return (None if body is None else json.loads(body.decode("utf-8")),
                None if protected is None else json.loads(protected.decode("utf-8")), shredded)

    def open_raw(self, sealed: Sealed, fetch: Fetch, *, cached: bool = True
                 ) -> tuple[bytes | None, bytes | None, bool]:
        """Like ``open`` but returns the canonical JSON bytes. ``cached=False`` asks the store for every key
        (a long-lived reader must notice a shred done by another process)."""
        h = sealed.header
        if h.get("kid") is None:
            return sealed.parts[0][1], None, False
        body = self._open_part(sealed, 0, str(h["kid"]), "data", fetch, cached)
        if body is None:
            return None, None, True
        protected = None
        if h.get("pkid") is not None and len(sealed.parts) > 1:
            protected = self._open_part(sealed, 1, str(h["pkid"]), "protected", fetch, cached)
        return body, protected, False

    def _open_part(self, sealed: Sealed, i: int, key_id: str, domain: str, fetch: Fetch,
                   cached: bool) -> bytes | None:
        with self._lock:
            aead = self._aeads.get(key_id) if cached else None
        if aead is None:
            row = fetch(key_id)
            if row is None:
                return None
            subject, dom, period, kek_id, wrapped = row
            if dom != domain:
                raise AuditError("data key domain mismatch")
            aead = self._unwrap(key_id, subject, dom, period, kek_id, wrapped)
        nonce, data = sealed.parts[i]
        try:
            plain: bytes = aead.decrypt(nonce, data, sealed.header_bytes + (b"|data" if i == 0 else b"|protected"))
        except InvalidTag:
            raise IntegrityError("sealed record does not open (edited, or moved in the chain)",
                                 seq=sealed.header.get("seq")) from None
        return plain

    def drop_slots(self) -> None:
        """Forget every write-side key (after a rolled-back batch, whose new key rows were rolled back too)."""
        with self.write_lock:
            self._slots.clear()
            self._gen = -1
            self.epoch += 1

    def forget(self, key_ids: list[str]) -> None:
        """Drop cached keys after a shred, so this process cannot read what was shredded."""
        with self._lock:
            for k in key_ids:
                self._aeads.pop(k, None)
