"""Evidence bundles: the sealed log, checkpoints and public keys in one file anyone can verify offline.

A bundle is a zip holding ``log.jsonl`` and ``README.txt``. ``log.jsonl`` lines, in order::

    {"t":"key","kid":...,"pub":<hex>}          Ed25519 public keys
    {"t":"head","seq":N,"hash":<hex>}           the store's head row when the bundle was made
    {"t":"rec","seq":N,"hash":<hex>,"sealed":<b64>}   every record, in seq order (still encrypted)
    {"t":"cp", ...checkpoint}                  every signed checkpoint

``mlguard audit verify --bundle FILE`` accepts the zip or a bare ``log.jsonl`` (the test vectors are bare).
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlguard.audit.store.base import AuditStore

README = """mlguard audit evidence bundle
=============================

log.jsonl holds the audit records exactly as stored: sealed (AES-256-GCM encrypted) bytes, base64, each
with its chain hash; the signed checkpoints; and the Ed25519 public keys that signed them.

Verify without any secret key:

    mlguard audit verify --bundle THIS_FILE.zip [--pubkey HEX]

Chain: hash_n = SHA256(0x01 || hash_{n-1} || SHA256(0x00 || sealed_n)), hash_0 = 32 zero bytes (RFC 6962
domain separation). A checkpoint signs b"mlguard.checkpoint.v1|" + canonical JSON of {seq, head, ts, kid}.
Pin the public key you obtained out of band with --pubkey: keys inside the bundle prove consistency only.
"""


@dataclass(frozen=True, slots=True)
class BundleRow:
    seq: int
    hash: bytes
    sealed: bytes


def write_bundle(store: AuditStore, out: Path, *, progress: Callable[[int], None] | None = None) -> int:
    """Stream the store into a bundle zip; returns the number of records."""
    n = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.txt", README)
        with zf.open("log.jsonl", "w") as raw:
            fh = io.TextIOWrapper(raw, encoding="ascii", newline="\n")
            for kid, pub in sorted(store.public_keys().items()):
                fh.write(_line({"t": "key", "kid": kid, "pub": pub.hex()}))
            seq, head = store.head()
            fh.write(_line({"t": "head", "seq": seq, "hash": head.hex()}))
            for row in store.iter_rows():
                fh.write(_line({"t": "rec", "seq": row.seq, "hash": row.hash.hex(),
                                "sealed": base64.b64encode(row.sealed).decode("ascii")}))
                n += 1
                if progress is not None:
                    progress(1)
            for cp in store.checkpoints():
                fh.write(_line({"t": "cp", **cp}))
            fh.flush()
            fh.detach()
    return n


def _line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


class Bundle:
    """A bundle opened for verification: keys, head and checkpoints in memory, records streamed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, bytes] = {}
        self.head: tuple[int, bytes] | None = None
        self.checkpoints: list[dict[str, Any]] = []
        self.count = 0
        for doc in self._docs():
            t = doc.get("t")
            if t == "key":
                self.keys[str(doc["kid"])] = bytes.fromhex(doc["pub"])
            elif t == "head":
                self.head = (int(doc["seq"]), bytes.fromhex(doc["hash"]))
            elif t == "cp":
                self.checkpoints.append({k: v for k, v in doc.items() if k != "t"})
            elif t == "rec":
                self.count += 1

    def _open(self) -> IO[str]:
        if zipfile.is_zipfile(self.path):
            zf = zipfile.ZipFile(self.path)
            return io.TextIOWrapper(zf.open("log.jsonl"), encoding="ascii")
        return self.path.open(encoding="ascii")

    def _docs(self) -> Iterator[dict[str, Any]]:
        with self._open() as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def rows(self) -> Iterator[BundleRow]:
        for doc in self._docs():
            if doc.get("t") == "rec":
                yield BundleRow(int(doc["seq"]), bytes.fromhex(doc["hash"]), base64.b64decode(doc["sealed"]))
