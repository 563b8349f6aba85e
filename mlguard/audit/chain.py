"""The hash chain and signed checkpoints.

Why RFC 6962 domain separation (0x00 for a leaf, 0x01 for a node): a leaf hash can never be passed off as an
interior hash. Each record's chain hash is ``H(0x01 || prev_chain || H(0x00 || sealed))`` starting from 32
zero bytes; it covers the *sealed* bytes, so anyone can verify without a decryption key. Every N records and
every T seconds a checkpoint {seq, head, ts, kid} is signed with Ed25519 and also appended to a witness file
outside the store: whoever holds an earlier checkpoint detects a rewritten or truncated log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mlguard.audit.record import canonical, iso
from mlguard.errors import AuditError, IntegrityError
from mlguard.keys import KeyProvider

LEAF = b"\x00"
NODE = b"\x01"
GENESIS = bytes(32)


def leaf_hash(sealed: bytes) -> bytes:
    return hashlib.sha256(LEAF + sealed).digest()


LEAF_STATE = hashlib.sha256(LEAF)
_sha256 = hashlib.sha256


def link(prev: bytes, sealed: bytes) -> bytes:
    """The chain hash of a record whose predecessor's chain hash is ``prev``. (The leaf hash starts from a
    copy of a state that has absorbed the 0x00 prefix: no copy of the 1.5 KB sealed bytes per record.)"""
    leaf = LEAF_STATE.copy()
    leaf.update(sealed)
    return _sha256(NODE + prev + leaf.digest()).digest()


def node(prev: bytes, leaf: bytes) -> bytes:
    """The chain hash from the previous chain hash and a record's leaf hash: ``link(prev, sealed)`` is
    ``node(prev, leaf_hash(sealed))`` (verifying in several processes hashes leaves apart from the chain)."""
    return _sha256(NODE + prev + leaf).digest()


def checkpoint_message(cp: dict[str, Any]) -> bytes:
    return b"mlguard.checkpoint.v1|" + canonical({k: cp[k] for k in ("seq", "head", "ts", "kid")})


def make_checkpoint(keys: KeyProvider, seq: int, head: bytes, ts: float | None = None) -> dict[str, Any]:
    cp: dict[str, Any] = {"seq": seq, "head": head.hex(), "ts": iso(time.time() if ts is None else ts),
                          "kid": keys.signing_key_id()}
    kid, sig = keys.sign(checkpoint_message(cp))
    cp["kid"] = kid
    cp["sig"] = base64.b64encode(sig).decode("ascii")
    return cp


def checkpoint_valid(cp: dict[str, Any], public_keys: dict[str, bytes]) -> bool:
    """True when ``cp`` is signed by one of ``public_keys`` (key id -> raw Ed25519 public key)."""
    try:
        pub = public_keys[str(cp["kid"])]
        Ed25519PublicKey.from_public_bytes(pub).verify(base64.b64decode(cp["sig"]), checkpoint_message(cp))
    except (KeyError, ValueError, TypeError, InvalidSignature):
        return False
    return True


class Witness:
    """Appends checkpoints to a JSONL file outside the store, fsynced; errors propagate (never swallowed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Create the file, empty, when it does not exist yet. Why: the first checkpoint may be a minute (or
        1,000 records) away, and a `mlguard audit verify --witness FILE` run meanwhile (a cron job right after a
        deploy) stopped with 'witness file does not exist' as if it were misconfigured."""
        with self._lock:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
            except OSError as exc:
                raise AuditError(f"cannot create the witness file ({exc.strerror})") from exc

    def append(self, cp: dict[str, Any]) -> None:
        line = json.dumps(cp, sort_keys=True, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, line.encode("ascii"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise AuditError(f"cannot append to the witness file ({exc.strerror})") from exc

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The witness's entries, in file order. A line that is not a checkpoint entry (a JSON object with an
        integer ``seq``) raises WitnessCorrupt naming the file and line: the witness is evidence, so a damaged
        or edited one is an integrity finding, never skipped (what was on that line may be the entry that
        would have shown a truncation). OSError (missing, unreadable) propagates for the caller to report."""
        out = []
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("ascii"))
            except UnicodeDecodeError:
                raise WitnessCorrupt(path, number, "not ASCII text") from None
            except (ValueError, RecursionError):  # (a line of ten thousand "[" nests too deep to parse)
                raise WitnessCorrupt(path, number, "not JSON") from None
            if not isinstance(entry, dict):
                raise WitnessCorrupt(path, number, "not a JSON object")
            if type(entry.get("seq")) is not int or entry["seq"] < 0:
                raise WitnessCorrupt(path, number, "no sequence number")
            out.append(entry)
        return out


class WitnessCorrupt(IntegrityError):
    """A witness file line that is not a checkpoint entry: the message names the file and the (1-based) line,
    never the line's content."""

    def __init__(self, path: Path, line: int, why: str) -> None:
        self.path = path
        self.line = line
        self.why = why
        super().__init__(f"witness file {path}, line {line}: {why}, not a checkpoint entry (the file was damaged "
                         "or edited)")
