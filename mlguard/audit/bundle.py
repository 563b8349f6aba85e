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
from mlguard.audit.verify import RowsEnded
from mlguard.errors import IntegrityError

README = """mlguard audit evidence bundle
=============================

log.jsonl holds the audit records exactly as stored (sealed bytes, base64, each with its chain hash), the
signed checkpoints (seq, chain head, signing time, key id, signature), the store's head (seq, hash) and the
Ed25519 public keys that signed the checkpoints. It holds no decryption key: the records' data keys stay in
the operator's audit store, wrapped under the operator's keyring.

Verify without any secret key:

    mlguard audit verify --bundle THIS_FILE.zip --pubkey HEX

Pin the public key you obtained from the operator out of band (`mlguard keys show` prints it; --pubkey may be
given more than once, e.g. after a key rotation). The keys inside the bundle prove consistency only: without
--pubkey whoever made the bundle can re-sign it with a key of his own. With a key pinned, records that no
checkpoint signed by it covers fail verification.

Chain: hash_n = SHA256(0x01 || hash_{n-1} || SHA256(0x00 || sealed_n)), hash_0 = 32 zero bytes (RFC 6962
domain separation). A checkpoint signs b"mlguard.checkpoint.v1|" + canonical JSON of {seq, head, ts, kid}.


What anyone holding this file can read, without any key
--------------------------------------------------------

A sealed record is b"MGA1" | u32 length | header | the record's parts. The header is plain JSON (covered by
the chain, and bound to every encrypted part as associated data), one per record:

    id      the audit id; for an exchange, the MLGuard-Audit-Id header the client received
    ts      when the record was made (UTC, to the microsecond)
    kind    exchange, or an event: oversight, feedback, explanation, admin_read, admin_denied, gap, tombstone
    route   the route template (e.g. /predict/{model}: no value from the path); null for events
    subj    the subject's pseudonym: an HMAC of the subject id under a secret of the operator's keyring, the
            same in every record of that subject (and in every bundle of this log); null when there is none
    kid     the id of the data key the record is sealed under: one key per subject and UTC day, so it groups
            a subject's records of a day too; null for a record in clear (gap, tombstone)
    pkid    the same for the protected attributes (sex, race, ... where the route declares them); null when
            the record carries none
    seq, prev, v    its place in the chain, the previous chain hash, the format version

From the headers alone anyone can count records per route, kind and day, see the time range and the rate,
see how many records each pseudonym has and when, which exchanges carry protected attributes, and how large
each sealed part is (an encrypted part is 16 bytes longer than its plaintext). Audit ids (UUIDv7) and key ids
begin with their creation time.

Records in clear (kid null) are readable whole:

    tombstone   an erasure (reason "erasure": the subject's pseudonym, the UTC days it had records on, how many
                data keys, token vault entries and fairness decisions were erased, whether a legal minimum
                retention was overridden) or a retention purge (reason "retention": the cut-off day, the rule,
                the number of data keys destroyed)
    gap         exchanges whose record could not be written: their audit ids, how many, why, and whether the
                client was served or refused

What stays sealed (AES-256-GCM; readable only with the operator's keyring and the data keys in the operator's
store): the rest of every record. For an exchange: HTTP method and status, latency, policies, model, the
(redacted) input, the output, the PII findings, the decision, the explanation and reason codes, the fairness
section, failures, and under a separate key the protected attributes; for an event other than a gap or a
tombstone, all of its data. A record whose subject was erased is sealed for good: its data keys are destroyed.

Linking: the pseudonym cannot be computed from a subject id without the keyring, but it is stable. Whoever
holds this file and one audit id (the MLGuard-Audit-Id a client received, which the client may show anyone)
finds that record's pseudonym and from it every other record of the same subject: their times, routes and
kinds, and a tombstone that says whether and on which days the subject's records were erased. The bundle is
pseudonymised personal data, not anonymous data: keep it as such.
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
    """A bundle opened for verification: keys, head and checkpoints in memory, records streamed.

    A line that is not a JSON object (a file cut in the middle of a line, a damaged byte) does not stop the
    opening: it is noted as ``damage`` (its line number, what is wrong, whether it is the torn last line) and
    ``rows`` raises RowsEnded when it gets there, so verify checks every record before it and reports the damage
    at the seq after the last good one. Why: a JSONDecodeError from the opening told the auditor neither where
    the file stopped being readable nor that its tail was simply cut off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, bytes] = {}
        self.head: tuple[int, bytes] | None = None
        self.checkpoints: list[dict[str, Any]] = []
        self.count = 0
        self.damage: RowsEnded | None = None
        damaged: tuple[int, str] | None = None
        torn = False
        for number, doc, why in self._docs():
            if doc is None:
                if damaged is None:  # torn: cut off mid-line, and (as found below) nothing follows it
                    damaged, torn = (number, why), why == "not JSON"
                else:
                    torn = False
                continue
            torn = False  # something readable follows the damaged line: it is not a torn tail
            t = doc.get("t")
            if t == "key":
                self.keys[str(doc["kid"])] = bytes.fromhex(doc["pub"])
            elif t == "head":
                self.head = (int(doc["seq"]), bytes.fromhex(doc["hash"]))
            elif t == "cp":
                self.checkpoints.append({k: v for k, v in doc.items() if k != "t"})
            elif t == "rec":
                self.count += 1
        if damaged is not None:
            self.damage = RowsEnded(damaged[0], damaged[1], torn=torn)

    def _open(self) -> IO[bytes]:
        if zipfile.is_zipfile(self.path):
            zf = zipfile.ZipFile(self.path)
            return zf.open("log.jsonl")
        fh = self.path.open("rb")
        if fh.read(4) == b"PK\x03\x04":  # a zip file zipfile cannot open: cut short, or damaged
            fh.close()
            raise IntegrityError(f"{self.path.name} is a zip file that cannot be opened (truncated or damaged): "
                                 "its log.jsonl cannot be read")
        fh.seek(0)
        return fh

    def _docs(self) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
        """(line number, the line's JSON object or None, what is wrong with it) for every non-blank line."""
        with self._open() as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    doc = json.loads(raw.decode("ascii"))
                except UnicodeDecodeError:
                    yield number, None, "not ASCII text"
                    continue
                except (ValueError, RecursionError):
                    yield number, None, "not JSON"
                    continue
                if isinstance(doc, dict):
                    yield number, doc, ""
                else:
                    yield number, None, "not a JSON object"

    def rows(self) -> Iterator[BundleRow]:
        """The records in file order; RowsEnded at the first damaged line (``damage``) or at a record line
        whose seq, hash or sealed bytes cannot be read."""
        for number, doc, _ in self._docs():
            if doc is None:
                if self.damage is not None and number == self.damage.line:
                    raise self.damage
                continue
            if doc.get("t") == "rec":
                try:
                    row = BundleRow(int(doc["seq"]), bytes.fromhex(doc["hash"]),
                                    base64.b64decode(doc["sealed"], validate=True))
                except (KeyError, TypeError, ValueError):
                    raise RowsEnded(number, "a record line whose seq, hash or sealed bytes cannot be read",
                                    torn=False) from None
                yield row
