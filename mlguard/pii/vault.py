"""The token vault: random tokens for identifiers, reversible only by the key holder.

Why random tokens and not a hash: HIPAA 164.514(c) forbids re-identification codes derived from the identifier.
The token is random; the vault keeps ``token -> AES-256-GCM(value)`` (key "pii.vault", the token bound as
associated data) in a SQLite file. To give the same value the same token (so joins still work) the vault also
keeps a keyed HMAC of the value ("pii.vault.index") as a lookup index; that index never leaves the vault and a
token cannot be recomputed from the value without the key. The file holds no value in clear.

Erasure (``mlguard audit shred``): the value key is one for the whole keyring, so unlike the audit trail the vault
cannot be crypto-shredded per subject; a subject's entries must be deleted. Each token is therefore linked
(table ``token_subjects``) to every subject it was issued or looked up for, by a keyed HMAC of the subject id
(keyring purpose "pii.vault.subject"). Why not the audit trail's pseudonym: the PII stage does not depend on the
audit stage, and a link table keyed by the pseudonym the audit store keeps in a clear column would let anyone
holding both files (no key needed) join a token to that subject's records. :meth:`Vault.forget` removes a
subject's links and deletes the entries no other subject still links to (a value two subjects share, say a
common phone number, stays for the other one); a token issued with no subject (``mlguard redact``) has no link
and is never deleted. Deleted rows are overwritten (``secure_delete``) and the WAL checkpointed, so the
ciphertext does not survive in free pages for whoever holds the keyring. Vault files from before the link table
get it on open (CREATE TABLE IF NOT EXISTS); their tokens simply have no link.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlguard.errors import PIIError

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tokens (
  token TEXT PRIMARY KEY,
  lookup BLOB NOT NULL UNIQUE,
  entity TEXT NOT NULL,
  ciphertext BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS token_subjects (
  subject BLOB NOT NULL,
  token TEXT NOT NULL,
  PRIMARY KEY (subject, token)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS token_subjects_token ON token_subjects (token)",
)


class _Keyring(Protocol):
    def secret(self, purpose: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What :meth:`Vault.forget` did: ``erased`` entries deleted; ``kept`` tokens of the subject that another
    subject still links to (the link removed, the entry kept for them); ``scrubbed`` False when the WAL could not
    be checkpointed (a reader held it for the whole busy timeout): old pages may remain until the next one."""

    erased: int
    kept: int
    scrubbed: bool = True


class Vault:
    """A SQLite-backed token vault; thread-safe, one connection guarded by a lock.

    ``create=False`` refuses a file that does not exist (the erasure command must not shred against an empty
    vault it has just made at a mistyped path)."""

    def __init__(self, path: str | Path, keyring: _Keyring, *, create: bool = True) -> None:
        self.path = str(path)
        self._enc_key = keyring.secret("pii.vault")
        self._index_key = hmac.new(self._enc_key, b"pii.vault.index", hashlib.sha256).digest()
        self._subject_key = keyring.secret("pii.vault.subject")
        if self.path != ":memory:":
            if not create and not Path(self.path).is_file():
                raise PIIError(f"token vault {self.path} does not exist")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if not Path(self.path).exists():
                Path(self.path).touch(mode=0o600)
        self._lock = threading.Lock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        """One connection per process (a forked ``mlguard redact --workers`` child opens its own)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA secure_delete=ON")  # an erased entry's bytes are overwritten, not left free
            for statement in _SCHEMA:
                conn.execute(statement)
        except sqlite3.Error as exc:
            raise PIIError(f"token vault unavailable ({type(exc).__name__})") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _link(self, subject: str) -> bytes:
        return hmac.new(self._subject_key, subject.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def token_for(self, entity: str, value: str, subject: str | None = None) -> str:
        """The token of ``value`` (an existing one, or a new random one stored encrypted), linked to ``subject``
        (the request's subject id, when its route names one) so that erasing the subject erases it."""
        lookup = hmac.new(self._index_key, entity.encode() + b"\0" + value.encode("utf-8", "surrogatepass"),
                          hashlib.sha256).digest()
        link = self._link(subject) if subject is not None else None
        with self._lock:
            db = self._connect()
            try:
                row = db.execute("SELECT token FROM tokens WHERE lookup = ?", (lookup,)).fetchone()
                if row is not None and (link is None or db.execute(
                        "SELECT 1 FROM token_subjects WHERE subject = ? AND token = ?", (link, row[0])).fetchone()):
                    return str(row[0])  # the common case, read only
                # A new token, or a new link: under the write lock, so the token and its link commit together (a
                # token stored without its link would survive the subject's erasure) and a concurrent erasure or
                # another process storing the same value is seen.
                db.execute("BEGIN IMMEDIATE")
                try:
                    token = self._stored(db, lookup, entity, value)
                    if link is not None:
                        db.execute("INSERT OR IGNORE INTO token_subjects(subject, token) VALUES (?, ?)",
                                   (link, token))
                    db.execute("COMMIT")
                finally:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise PIIError(f"token vault write failed ({type(exc).__name__})") from None
        return token

    def _stored(self, db: sqlite3.Connection, lookup: bytes, entity: str, value: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        row = db.execute("SELECT token FROM tokens WHERE lookup = ?", (lookup,)).fetchone()
        if row is not None:
            return str(row[0])
        token = f"tok_{secrets.token_urlsafe(16)}"
        nonce = os.urandom(12)
        ct = AESGCM(self._enc_key).encrypt(nonce, value.encode("utf-8", "surrogatepass"), token.encode())
        db.execute("INSERT INTO tokens(token, lookup, entity, ciphertext) VALUES (?, ?, ?, ?)",
                   (token, lookup, entity, nonce + ct))
        return token

    def reveal(self, token: str) -> tuple[str, str] | None:
        """(entity, value) for a token, for the key holder; None when unknown."""
        with self._lock:
            row = self._connect().execute("SELECT entity, ciphertext FROM tokens WHERE token = ?", (token,)).fetchone()
        if row is None:
            return None
        return str(row[0]), self._decrypt(token, bytes(row[1]))

    def _decrypt(self, token: str, blob: bytes) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            value = AESGCM(self._enc_key).decrypt(blob[:12], blob[12:], token.encode())
        except InvalidTag:
            raise PIIError("token vault entry cannot be decrypted with this key") from None
        return value.decode("utf-8", "surrogatepass")

    def check_key(self) -> None:
        """Raise PIIError unless this keyring decrypts the vault's entries (an empty vault passes)."""
        with self._lock:
            try:
                self._check_key(self._connect())
            except sqlite3.Error as exc:
                raise PIIError(f"token vault unreadable ({type(exc).__name__})") from None

    def _check_key(self, db: sqlite3.Connection) -> None:
        sample = db.execute("SELECT token, ciphertext FROM tokens LIMIT 1").fetchone()
        if sample is not None:
            self._decrypt(str(sample[0]), bytes(sample[1]))

    def forget(self, subject: str) -> Forgotten:
        """Erase ``subject`` from the vault: its links, and the entries no other subject links to.

        Refused (PIIError) when the vault's entries were written under another keyring: its subject links would
        not match, and the erasure would find nothing while the entries stay."""
        link = self._link(subject)
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    self._check_key(db)
                    erased = db.execute(
                        "DELETE FROM tokens WHERE token IN (SELECT token FROM token_subjects WHERE subject = ?) "
                        "AND NOT EXISTS (SELECT 1 FROM token_subjects o WHERE o.token = tokens.token "
                        "AND o.subject <> ?)", (link, link)).rowcount
                    unlinked = db.execute("DELETE FROM token_subjects WHERE subject = ?", (link,)).rowcount
                    db.execute("COMMIT")
                finally:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise PIIError(f"token vault erasure failed ({type(exc).__name__})") from None
        return Forgotten(erased=erased, kept=unlinked - erased, scrubbed=busy is None or busy[0] == 0)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
