"""UUIDv7 audit ids (RFC 9562): time-ordered, so records sort by creation and index well.

Also the process's pooled CSPRNG (``random_bytes``): it lives here, at the bottom of the dependency graph, so the
Exchange can make ids without importing the keyring (and its cryptography imports).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from typing import Any

__all__ = ["audit_target", "is_audit_id", "random_bytes", "uuid7"]


class _RandomPool:
    """OS randomness drawn 64 KiB at a time.

    Why: a getrandom call costs about 15 us in sandboxed kernels, and the guard needs fresh random bytes per
    request (audit ids) and per subject (data keys, nonce prefixes). The pool is in process memory, like the keys
    it makes; it is refilled from ``os.urandom``, and a forked child starts with an empty pool (never replaying
    its parent's bytes).
    """

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._buf, self._pos = b"", 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf = os.urandom(max(self._size, n))
                self._pos = 0
            out = self._buf[self._pos:self._pos + n]
            self._pos += n
            return out


random_bytes = _RandomPool()
"""Cryptographically strong random bytes (os.urandom, pooled)."""

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_RAND_MASK = (1 << 62) - 1
_VERSION_BITS = 0x7 << 76 | 0b10 << 62


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter (monotonic within a millisecond), then random."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        counter = _counter
    rand = int.from_bytes(random_bytes(8), "big") & _RAND_MASK
    return uuid.UUID(int=(ms & ((1 << 48) - 1)) << 80 | _VERSION_BITS | counter << 64 | rand)


_AUDIT_ID = re.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_audit_id(text: str) -> bool:
    """Whether ``text`` is an audit id as the guard writes it (a UUID, :func:`uuid7`), either case."""
    return _AUDIT_ID.fullmatch(text) is not None


def audit_target(text: str) -> str | dict[str, Any]:
    """What an ``admin_read`` event records of the id an admin read asked for: the id itself, or, when it is no
    audit id, its length only. Why: what is typed there may be anything, an e-mail address or a name pasted by
    mistake (a security review found one kept, sealed, in the trail); the string is never kept."""
    return text if is_audit_id(text) else {"not_an_audit_id": True, "length": len(text)}
