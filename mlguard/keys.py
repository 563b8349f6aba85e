"""The keyring: key-encryption keys (KEKs), HKDF secrets, the checkpoint signing key.

Why one keyring used by pii/ and audit/ alike, owned by neither: a pseudonym, a vault entry and a sealed audit
record must all be derivable from one protected file (or one environment value), rotated in one place.

What it holds (JSON, mode 0600; a keyring others can read is refused)::

    {"format": "mlguard-keyring/1",
     "root":    {"id": "root-...", "key": "<b64 32 bytes>"},               # HKDF secrets, never rotated
     "keks":    [{"id": "kek-...", "key": "<b64 32 bytes>", "created": "..."}],   # last one is active
     "signing": [{"id": "sig-...", "seed": "<b64 32 bytes>", "created": "..."}]}  # Ed25519, last is active

- ``secret(purpose)`` derives a stable 32-byte key per purpose (HKDF-SHA256 over the root), so HMAC
  pseudonyms stay stable across KEK rotation.
- Per-subject data keys are random; the audit store keeps them only *wrapped* (AES-256-GCM) under a KEK.
  Each key domain ("data", "protected") has its own wrapping key derived from the KEK, so protected
  attributes live in a separate key domain. Shredding a subject = deleting its wrapped data keys.
- Rotation (``mlguard keys rotate``) appends a new KEK and a new signing key; old ones stay for reading.

KeyProvider is the small interface the audit trail needs; a KMS or Vault transit backend implements the same
seven methods (wrap/unwrap via the KMS, sign via its asymmetric key) and is passed where a Keyring is.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlguard.errors import KeyringError
from mlguard.ids import random_bytes

if TYPE_CHECKING:
    from mlguard.stage import BuildContext

__all__ = ["ENV_VAR", "FORMAT", "KeyProvider", "Keyring", "keyring_for", "random_bytes"]

log = logging.getLogger("mlguard.keys")

FORMAT = "mlguard-keyring/1"
ENV_VAR = "MLGUARD_KEYRING"
DOMAINS = ("data", "protected")
_NONCE = 12


@runtime_checkable
class KeyProvider(Protocol):
    """What the audit trail needs from a key backend (local file, KMS, Vault transit).

    ``wrap``/``unwrap`` protect per-subject data keys (the provider never sees records); ``sign`` signs
    checkpoints; ``public_keys`` lets anyone verify them without any secret.
    """

    def secret(self, purpose: str) -> bytes: ...

    def active_kek_id(self) -> str: ...

    def wrap(self, domain: str, dek: bytes, aad: bytes) -> tuple[str, bytes]: ...

    def unwrap(self, kek_id: str, domain: str, wrapped: bytes, aad: bytes) -> bytes: ...

    def signing_key_id(self) -> str: ...

    def sign(self, data: bytes) -> tuple[str, bytes]: ...

    def public_keys(self) -> dict[str, bytes]: ...


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"keyring field {what} is not valid base64") from None
    if len(raw) != 32:
        raise KeyringError(f"keyring field {what} must hold 32 bytes")
    return raw


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mlguard", info=info).derive(key)


def _key_id(prefix: str, key: bytes) -> str:
    """A key id that names the key without revealing it (a hash prefix), stable across processes."""
    return f"{prefix}-{hashlib.sha256(b'mlguard.keyid.' + key).hexdigest()[:16]}"


class Keyring:
    """The local-file (or environment) KeyProvider. Build with ``load``, ``create`` or ``from_env``."""

    def __init__(self, doc: dict[str, Any], *, path: Path | None = None) -> None:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeyringError(f"not an mlguard keyring (expected format {FORMAT})")
        try:
            self._root = _unb64(doc["root"]["key"], "root.key")
            self._keks = {k["id"]: _unb64(k["key"], f"keks.{k['id']}") for k in doc["keks"]}
            self._signers = {s["id"]: Ed25519PrivateKey.from_private_bytes(_unb64(s["seed"], f"signing.{s['id']}"))
                             for s in doc["signing"]}
            self._active_kek = str(doc["keks"][-1]["id"])
            self._active_signer = str(doc["signing"][-1]["id"])
        except (KeyError, IndexError, TypeError):
            raise KeyringError("keyring is missing a root, a KEK or a signing key") from None
        self._doc = doc
        self.path = path
        self._secrets: dict[str, bytes] = {}
        self._wrappers: dict[tuple[str, str], AESGCM] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def new_document() -> dict[str, Any]:
        """A fresh keyring document with random keys."""
        root, kek, seed = os.urandom(32), os.urandom(32), os.urandom(32)
        return {"format": FORMAT, "root": {"id": _key_id("root", root), "key": _b64(root)},
                "keks": [{"id": _key_id("kek", kek), "key": _b64(kek), "created": _now()}],
                "signing": [{"id": _key_id("sig", seed), "seed": _b64(seed), "created": _now()}]}

    @classmethod
    def from_seed(cls, seed: bytes) -> Keyring:
        """A deterministic keyring from raw seed material (env MLGUARD_KEYRING, test vectors)."""
        if len(seed) < 32:
            raise KeyringError("keyring seed material must hold at least 32 bytes")
        root, kek, sig = (_hkdf(seed, b"mlguard.seed." + n) for n in (b"root", b"kek", b"sig"))
        return cls({"format": FORMAT, "root": {"id": _key_id("root", root), "key": _b64(root)},
                    "keks": [{"id": _key_id("kek", kek), "key": _b64(kek), "created": "seed"}],
                    "signing": [{"id": _key_id("sig", sig), "seed": _b64(sig), "created": "seed"}]})

    @classmethod
    def create(cls, path: str | Path) -> Keyring:
        """Create a new keyring file with mode 0600; refuse to overwrite an existing one (``_publish`` says how
        several workers starting together agree on one file)."""
        path = Path(path)
        doc = cls.new_document()
        _publish(path, doc)
        return cls(doc, path=path)

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write this keyring to the file ``path`` (mode 0600, published whole as ``create`` does); an existing
        file is refused unless ``overwrite``.

        Why: a keyring that came from the environment has no file to rewrite, so ``mlguard keys rotate --out``
        and ``keys retire --out`` write the changed keyring to a file the user names, to be moved into the
        variable (``base64 -w0 FILE``) and then deleted."""
        _publish(Path(path), self._doc, overwrite=overwrite)

    def env_value(self) -> str:
        """This keyring as env MLGUARD_KEYRING carries it (base64 of its JSON document): secret material, to be
        printed only when the user asks for it (``--print-env``)."""
        return _b64(json.dumps(self._doc, separators=(",", ":")).encode())

    @classmethod
    def load(cls, path: str | Path) -> Keyring:
        """Load a keyring file; refuse one that group or others may read or write."""
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyringError(_missing_file(path)) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(f"keyring {path} is accessible by group or others (mode "
                               f"{stat.S_IMODE(st.st_mode):o}); chmod 600 it")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise KeyringError(f"keyring {path} is unreadable or not JSON") from None
        return cls(doc, path=path)

    @classmethod
    def from_env(cls, value: str) -> Keyring:
        """From env MLGUARD_KEYRING: base64 of a keyring JSON document, or of >= 32 bytes of seed material."""
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"{ENV_VAR} is not valid base64: it carries the keyring file's bytes in base64 "
                               "(base64 -w0 mlguard.keyring), not a path nor the JSON itself") from None
        if raw[:1] == b"{":
            try:
                return cls(json.loads(raw))
            except ValueError:
                raise KeyringError(f"{ENV_VAR} holds invalid keyring JSON") from None
        return cls.from_seed(raw)

    # ------------------------------------------------------------------ rotation

    def rotate(self) -> tuple[str, str]:
        """Add a new active KEK and signing key, keep the old ones for reading; rewrite the file atomically."""
        self._require_file("rotated")
        self._replace(self.rotated()._doc)
        return self._active_kek, self._active_signer

    def rotated(self) -> Keyring:
        """This keyring plus a new active KEK and signing key, in memory only (root and old keys kept, so
        pseudonyms and older records still open): ``rotate`` writes it over the file; for a keyring from the
        environment, the CLI writes it where the user says (``Keyring.save``, ``env_value``)."""
        kek, seed = os.urandom(32), os.urandom(32)
        doc = self._copy()
        doc["keks"].append({"id": _key_id("kek", kek), "key": _b64(kek), "created": _now()})
        doc["signing"].append({"id": _key_id("sig", seed), "seed": _b64(seed), "created": _now()})
        return Keyring(doc)

    def check_retirable(self, kek_id: str) -> None:
        """Raise KeyringError unless ``kek_id`` is an old KEK of this keyring (the active one is never retired)."""
        if kek_id not in self._keks:
            raise KeyringError(f"keyring has no KEK {kek_id}")
        if kek_id == self._active_kek:
            raise KeyringError(f"{kek_id} is the active KEK; rotate first (mlguard keys rotate)")

    def retire(self, kek_id: str) -> None:
        """Remove an old KEK from the keyring file (atomically). The caller has checked that no data key is
        wrapped under it any more (``mlguard keys retire`` asks the stores)."""
        self._require_file("changed")
        self._replace(self.without_kek(kek_id)._doc)

    def without_kek(self, kek_id: str) -> Keyring:
        """This keyring without the old KEK ``kek_id`` (checked as ``check_retirable``), in memory only."""
        self.check_retirable(kek_id)
        doc = self._copy()
        doc["keks"] = [k for k in doc["keks"] if k["id"] != kek_id]
        return Keyring(doc)

    def _require_file(self, what: str) -> None:
        if self.path is None:
            raise KeyringError(f"a keyring from the environment cannot be {what} here (there is no file to "
                               "rewrite): write the new keyring elsewhere (mlguard keys rotate/retire --out FILE "
                               "or --print-env), then change the variable")

    def _copy(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(self._doc))
        return doc

    def _replace(self, doc: dict[str, Any]) -> None:
        """Write ``doc`` over the keyring file (mode 0600, fsync, rename) and reload from it."""
        assert self.path is not None  # _require_file checked
        tmp = self.path.with_name(self.path.name + ".tmp")
        _write_doc(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), doc)
        os.replace(tmp, self.path)
        self.__init__(doc, path=self.path)  # type: ignore[misc]

    # ------------------------------------------------------------------ KeyProvider

    def secret(self, purpose: str) -> bytes:
        """A stable 32-byte key for a named purpose ("pii.hmac", "audit.subject", ...), via HKDF."""
        key = self._secrets.get(purpose)
        if key is None:
            key = _hkdf(self._root, b"mlguard.secret." + purpose.encode())
            self._secrets[purpose] = key
        return key

    def active_kek_id(self) -> str:
        return self._active_kek

    def kek_ids(self) -> list[str]:
        return list(self._keks)

    def _wrapper(self, kek_id: str, domain: str) -> AESGCM:
        if domain not in DOMAINS:
            raise KeyringError(f"unknown key domain {domain!r}")
        with self._lock:
            aead = self._wrappers.get((kek_id, domain))
            if aead is None:
                kek = self._keks.get(kek_id)
                if kek is None:
                    raise KeyringError(f"keyring has no KEK {kek_id}")
                aead = AESGCM(_hkdf(kek, b"mlguard.kek.domain." + domain.encode()))
                self._wrappers[(kek_id, domain)] = aead
        return aead

    def wrap(self, domain: str, dek: bytes, aad: bytes) -> tuple[str, bytes]:
        """Wrap a data key under the active KEK of ``domain``; returns (kek_id, nonce || ciphertext)."""
        kek_id = self._active_kek
        nonce = random_bytes(_NONCE)  # one wrap per subject and day per KEK: random nonces are safe
        return kek_id, nonce + self._wrapper(kek_id, domain).encrypt(nonce, dek, aad)

    def unwrap(self, kek_id: str, domain: str, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._wrapper(kek_id, domain).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise KeyringError(f"data key does not unwrap under {kek_id} (wrong keyring?)") from None

    def signing_key_id(self) -> str:
        return self._active_signer

    def sign(self, data: bytes) -> tuple[str, bytes]:
        return self._active_signer, self._signers[self._active_signer].sign(data)

    def public_keys(self) -> dict[str, bytes]:
        return {kid: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for kid, k in self._signers.items()}

    def describe(self) -> dict[str, Any]:
        """Key ids only (never material): for `mlguard keys` output and the demo."""
        return {"path": str(self.path) if self.path else "env", "active_kek": self._active_kek,
                "keks": list(self._keks), "active_signing_key": self._active_signer,
                "signing_keys": {k: v.hex() for k, v in self.public_keys().items()}}


def keyring_for(ctx: BuildContext) -> Keyring:
    """The process's keyring, built once and cached in ``ctx.shared["keyring"]``.

    Env MLGUARD_KEYRING wins; else ``audit.keyring`` (relative to ``base_dir``), created 0600 when absent, with
    a WARNING naming the file and the variable (``open_or_create``).
    """
    cached = ctx.shared.get("keyring")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    env = os.environ.get(ENV_VAR)
    if env:
        ring = Keyring.from_env(env)
    else:
        path = ctx.config.audit.keyring
        if path is None:
            raise KeyringError(f"no keyring: set audit.keyring or env {ENV_VAR}")
        if not path.is_absolute() and ctx.config.base_dir is not None:
            path = ctx.config.base_dir / path
        ring = open_or_create(path)
    ctx.shared["keyring"] = ring
    return ring


_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})


def _write_exclusive(path: Path, doc: dict[str, Any]) -> None:
    """Create ``path`` (mode 0600, refusing an existing one) and write ``doc`` into it: the fallback of
    ``Keyring.create`` where ``link`` is not supported. A worker that finds the file while it is being written
    reads it again until it parses (``_create_or_load``), so the one-step publication is not needed there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyringError(f"keyring {path} already exists; not overwritten") from None
    except OSError as exc:
        raise KeyringError(f"cannot create keyring {path} ({exc.strerror})") from None
    _write_doc(fd, doc)


def _write_doc(fd: int, doc: dict[str, Any]) -> None:
    """Write a keyring document to the open file ``fd`` and make it durable before anyone renames or reads it."""
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def open_or_create(path: Path) -> Keyring:
    """What a starting worker does with ``audit.keyring``: load it, or create it when absent (0600).

    Why the creation is logged (WARNING, once, by the worker that created it): the quickstart and the demo rely
    on it, but in production a keyring meant to come from env MLGUARD_KEYRING (unset, or set to an empty string
    by a secret that did not resolve) would otherwise be replaced, silently, by a new one that nobody backs up
    and that no other replica shares. The line names the file and the variable, never key material."""
    if path.exists():
        return Keyring.load(path)
    ring, created = _create_or_load(path)
    if created:
        state = "is set but empty" if ENV_VAR in os.environ else "is not set"
        log.warning("created a new keyring file %s (mode 0600): env %s %s and the keyring file (audit.keyring) "
                    "did not exist. Records are sealed under these new keys: back the file up, or, if the keys "
                    "were meant to come from the environment, stop, set %s and start again",
                    path, ENV_VAR, state, ENV_VAR)
    return ring


def _create_or_load(path: Path) -> tuple[Keyring, bool]:
    """Create the keyring (True); if another worker process created it first, load theirs (after it is written;
    False)."""
    try:
        return Keyring.create(path), True
    except KeyringError:
        if not path.exists():
            raise
    for _ in range(50):
        try:
            return Keyring.load(path), False
        except KeyringError:
            time.sleep(0.02)  # the other process may still be writing it
    return Keyring.load(path), False


def _missing_file(path: Path) -> str:
    """The error for a keyring file that does not exist. ``keys init`` is suggested only when env MLGUARD_KEYRING
    is not set: when it is, the user's keyring lives there, and a new file would be an unrelated keyring (records
    sealed under it unreadable with theirs, and the reverse)."""
    env = os.environ.get(ENV_VAR)
    if env is None:
        return f"keyring {path} does not exist (create it: mlguard keys init --out {path})"
    if not env.strip():
        return (f"keyring {path} does not exist, and env {ENV_VAR} is set but empty: put the keyring's base64 in "
                f"it (base64 -w0 KEYRING_FILE)")
    return (f"keyring {path} does not exist; env {ENV_VAR} is set, and commands read the keyring from it when "
            "no keyring file is named (leave out --keyring)")


def _publish(path: Path, doc: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write ``doc`` to ``path`` with mode 0600, the whole file at once; refuse an existing ``path`` unless
    ``overwrite`` (then it is replaced in one step).

    Why write a temporary file and ``link`` it into place: several worker processes may start together, and
    one that finds the file must never read it half written. ``link`` publishes the complete file in one
    step and fails if the name exists, so exactly one creator wins and nobody sees a partial keyring. Where
    the file system has no hard links, an exclusive create does (readers retry until the file parses).
    """
    if path.exists() and not overwrite:
        raise KeyringError(f"keyring {path} already exists; not overwritten")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{random_bytes(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyringError(f"cannot create keyring {path} ({exc.strerror})") from None
    try:
        _write_doc(fd, doc)
        try:
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
        except FileExistsError:
            raise KeyringError(f"keyring {path} already exists; not overwritten") from None
        except OSError as exc:
            if overwrite or exc.errno not in _NO_HARD_LINKS:
                raise KeyringError(f"cannot create keyring {path} ({exc.strerror})") from None
            _write_exclusive(path, doc)  # a file system without hard links (some network and FAT mounts)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the new name durable too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
