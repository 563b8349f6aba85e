"""Re-wrapping data keys under the active KEK, so an old KEK can be retired.

Why: ``mlguard keys rotate`` makes a new KEK active, but every data key made before stays wrapped under the KEK
of its day, so the keyring had to keep every KEK ever made, and a KEK thought exposed could never be taken out
of service (PCI DSS 3.6.1.3 and 3.7.5: keys retired at the end of their cryptoperiod or when their integrity is
weakened). Re-wrapping touches only the ``data_keys`` table: each data key is unwrapped with its old KEK and
wrapped again under the active one with the same associated data (its id and slot), so records, their chain and
their seals do not change and the log still verifies. Readers fetch a key's wrapping from the store when they
first need it, so processes that are running keep reading.

Order of a rotation: ``mlguard keys rotate``; restart every process that writes to the store (a running writer
keeps wrapping new keys under the KEK it loaded); ``mlguard audit rewrap``; then ``mlguard keys retire OLD``,
which refuses while any data key is still wrapped under OLD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlguard.audit.seal import wrap_aad
from mlguard.audit.store.base import AuditStore
from mlguard.keys import KeyProvider

BATCH = 1000


@dataclass(frozen=True, slots=True)
class RewrapResult:
    """What a rewrap did: keys moved to ``active``, and how many remain under other KEKs (0 unless keys were
    added under an old KEK meanwhile, by a writer not yet restarted)."""

    active: str
    rewrapped: int
    remaining: dict[str, int]


def rewrap(store: AuditStore, keys: KeyProvider, *, batch: int = BATCH,
           progress: Callable[[int], None] | None = None) -> RewrapResult:
    """Re-wrap every data key that is not under the active KEK, ``batch`` keys per transaction.

    A KEK missing from ``keys`` raises KeyringError (naming it) before anything of that batch is written; what
    earlier batches did stays done and a second run goes on from there."""
    active = keys.active_kek_id()
    old = sorted(k for k in store.data_key_counts() if k != active)
    done = 0
    after = ""
    while old:
        rows = store.data_keys_under(old, after, batch)
        if not rows:
            break
        updates = []
        for key_id, subject, domain, period, kek_id, wrapped in rows:
            aad = wrap_aad(key_id, subject, domain, period)
            new_kek, new_wrapped = keys.wrap(domain, keys.unwrap(kek_id, domain, wrapped, aad), aad)
            updates.append((key_id, kek_id, new_kek, new_wrapped))
        done += store.rewrap_data_keys(updates)
        after = rows[-1][0]
        if progress is not None:
            progress(len(rows))
    remaining = {k: n for k, n in store.data_key_counts().items() if k != active}
    return RewrapResult(active, done, remaining)
