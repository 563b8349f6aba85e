"""The token vault: random tokens for identifiers, reversible only by the key holder.

Why random tokens and not a hash: HIPAA 164.514(c) forbids re-identification codes derived from the identifier.
The token is random; the vault keeps ``token -> AES-256-GCM(value)`` (key "pii.vault", the token bound as
associated data) in a SQLite file. To give the same value the same token (so joins still work) the vault also
keeps a keyed HMAC of the value ("pii.vault.index") as a lookup index; that index never leaves the vault and a
token cannot be recomputed from the value without the key. The file holds no value in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from mlguard.errors import PIIError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
  token TEXT PRIMARY KEY,
  lookup BLOB NOT NULL UNIQUE,
  entity TEXT NOT NULL,
  ciphertext BLOB NOT NULL
)
"""


class _Keyring(Protocol):
    def secret(self, purpose: str) -> bytes: ...


class Vault:
    """A SQLite-backed token vault; thread-safe, one connection guarded by a lock."""

    def __init__(self, path: str | Path, keyring: _Keyring) -> None:
        self.path = str(path)
        self._enc_key = keyring.secret("pii.vault")
        self._index_key = hmac.new(self._enc_key, b"pii.vault.index", hashlib.sha256).digest()
        if self.path != ":memory:":
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
            conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise PIIError(f"token vault unavailable ({type(exc).__name__})") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def token_for(self, entity: str, value: str) -> str:
        """The token of ``value`` (an existing one, or a new random one stored encrypted)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        lookup = hmac.new(self._index_key, entity.encode() + b"\0" + value.encode("utf-8", "surrogatepass"),
                          hashlib.sha256).digest()
        with self._lock:
            db = self._connect()
            try:
                row = db.execute("SELECT token FROM tokens WHERE lookup = ?", (lookup,)).fetchone()
                if row is not None:
                    return str(row[0])
                token = f"tok_{secrets.token_urlsafe(16)}"
                nonce = os.urandom(12)
                ct = AESGCM(self._enc_key).encrypt(nonce, value.encode("utf-8", "surrogatepass"), token.encode())
                db.execute("INSERT INTO tokens(token, lookup, entity, ciphertext) VALUES (?, ?, ?, ?)",
                           (token, lookup, entity, nonce + ct))
            except sqlite3.IntegrityError:
                # Another process stored the same value first: use its token.
                row = db.execute("SELECT token FROM tokens WHERE lookup = ?", (lookup,)).fetchone()
                if row is None:
                    raise PIIError("token vault write failed (IntegrityError)") from None
                return str(row[0])
            except sqlite3.Error as exc:
                raise PIIError(f"token vault write failed ({type(exc).__name__})") from None
        return token

    def reveal(self, token: str) -> tuple[str, str] | None:
        """(entity, value) for a token, for the key holder; None when unknown."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        with self._lock:
            row = self._connect().execute("SELECT entity, ciphertext FROM tokens WHERE token = ?", (token,)).fetchone()
        if row is None:
            return None
        blob = bytes(row[1])
        try:
            value = AESGCM(self._enc_key).decrypt(blob[:12], blob[12:], token.encode())
        except InvalidTag:
            raise PIIError("token vault entry cannot be decrypted with this key") from None
        return str(row[0]), value.decode("utf-8", "surrogatepass")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

