"""The audit stage: seals and appends one record per guarded exchange, in ``finish``.

Durability ``sync``: finish() awaits the group commit, so the record is durable before the response leaves.
``async``: the record is queued (bounded); a full queue raises AuditUnavailable, and the policy's
failure_mode decides (fail_closed: 503; fail_open: served). Either way a record that could not be written is
listed by audit id in a gap record (with why, and whether the client was served or refused), so every audit id
the guard handed out leads to a record or to a gap record.
At start-up the stage refuses a keyring that shares no key with a store that already holds records
(``check_keyring_fits``); ``{admin}/health`` reads the writer's failing-store flag through
``ctx.shared["health_checks"]``.
Other stages append events (oversight, feedback) through ``ctx.shared["audit_events"].append_event``.
Reading a record through the admin API is itself recorded, with whether it was found, before anything is
disclosed (PCI DSS 10.2.1.3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mlguard.audit.reader import AuditReader
from mlguard.audit.record import KINDS, Pending, event, from_exchange
from mlguard.audit.store.base import AuditStore, open_store
from mlguard.audit.writer import AuditWriter, Unrecorded
from mlguard.errors import AuditError, KeyringError, MLGuardError
from mlguard.ids import audit_target, is_audit_id, uuid7
from mlguard.keys import ENV_VAR, KeyProvider, Keyring, keyring_for
from mlguard.metrics import register_gauges, single
from mlguard.stage import AdminRequest, AdminResponse, AdminRoute, BaseStage, BuildContext

if TYPE_CHECKING:
    from mlguard.exchange import Exchange
    from mlguard.metrics import Family

log = logging.getLogger("mlguard.audit.stage")

def resolve_store_url(url: str, base_dir: Path | None) -> str:
    """Make a relative ``sqlite:///`` path relative to the config's directory."""
    if url.startswith("sqlite:///") and base_dir is not None:
        path = Path(url[len("sqlite:///"):])
        if not path.is_absolute():
            return "sqlite:///" + str(base_dir / path)
    return url


async def append_durably(writer: AuditWriter, item: Pending) -> int:
    """Queue ``item`` and wait for its COMMIT: on asyncio without any thread hop per request (the writer wakes
    the loop once per batch); on other event loops through a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fut = writer.submit(item)
        return await anyio.to_thread.run_sync(fut.result) if fut is not None else 0
    return await writer.submit_async(item)


def check_keyring_fits(store: AuditStore, keys: KeyProvider) -> None:
    """Refuse (KeyringError) a keyring that shares no key with a store that already holds records.

    Why: a keyring unrelated to the log (a stale ``MLGUARD_KEYRING``, another deployment's file) would start
    without a word and seal new records under a KEK, and sign checkpoints with a key, that nobody else has: the
    log's own keyring then fails to export them, long after the fact. Shared means a signing key whose public
    key the store holds (same id, same bytes), or a KEK that wraps one of the store's data keys. A rotated
    keyring passes (rotation adds a KEK and a signing key and keeps the old ones; signing keys are never
    removed), and so does one whose old KEKs were retired: retiring requires that no data key is left under
    them (``audit rewrap`` moved them under a KEK the keyring holds), and the old signing keys stay. The small
    public key table is compared first; the data keys (a grouped read of their table) only when it matches
    nothing. An empty log (no record yet) takes any keyring; a log with no keys to compare is let through.
    The message names key ids (hashes, never material) and what to do.
    """
    if store.head()[0] == 0:
        return
    ours = keys.public_keys()
    theirs = store.public_keys()
    if any(theirs.get(kid) == pub for kid, pub in ours.items()):
        return
    our_keks = keys.kek_ids() if isinstance(keys, Keyring) else [keys.active_kek_id()]
    their_keks = store.data_key_counts()
    if any(k in their_keks for k in our_keks) or (not theirs and not their_keks):
        return
    source = f"env {ENV_VAR}" if not isinstance(keys, Keyring) or keys.path is None else str(keys.path)
    raise KeyringError(
        f"the keyring ({source}) shares no key with the audit store's existing log: the keyring holds KEKs "
        f"{_ids(our_keks)} and signing keys {_ids(ours)}; the log's data keys are wrapped under KEKs "
        f"{_ids(their_keks)} and its checkpoints are signed by {_ids(theirs)}. Start with the keyring that wrote "
        f"this log (audit.keyring, or env {ENV_VAR}), or point audit.store at a new store for this keyring")


def _ids(ids: Any, most: int = 5) -> str:
    """Key ids for a message, sorted, at most ``most`` of them (a much-rotated keyring holds many)."""
    names = sorted(str(i) for i in ids)
    if not names:
        return "(none)"
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class AuditStage(BaseStage):
    name = "audit"

    def __init__(self, ctx: BuildContext, store: AuditStore | None = None) -> None:
        settings = ctx.config.audit
        base = ctx.config.base_dir
        self.keys = keyring_for(ctx)
        self.store = store or open_store(resolve_store_url(settings.store, base), lock_timeout=settings.lock_timeout)
        try:
            check_keyring_fits(self.store, self.keys)  # before the writer adds this keyring's public keys
        except BaseException:
            if store is None:
                self.store.close()
            raise
        witness = settings.witness_path(base)
        self.durability = settings.durability
        self.writer = AuditWriter(self.store, self.keys, checkpoint_every=settings.checkpoint_every,
                                  checkpoint_seconds=settings.checkpoint_seconds, witness=witness,
                                  queue_size=settings.queue_size, pipeline=self.durability == "async",
                                  write_timeout=settings.write_timeout)
        self.writer.start()
        self.reader = AuditReader(self.store, self.keys, cache_keys=False)
        ctx.shared["audit_events"] = self
        ctx.shared["audit_store"] = self.store  # the Guard shares human-oversight stops through it (oversight.py)
        register_gauges(ctx.shared, self._gauges)
        ctx.shared.setdefault("health_checks", {})[self.name] = self.writer.health

    def _gauges(self) -> list[Family]:
        """Scrape-time metrics read from the writer (no lock: ints and a deque length read across threads)."""
        w = self.writer
        stats = w.stats
        return [
            ("mlguard_audit_queue_depth", "Audit records queued, not yet committed", single(float(w.depth))),
            ("mlguard_audit_seconds_since_checkpoint",
             "Seconds since this process last wrote a signed checkpoint (since start before the first)",
             single(w.seconds_since_checkpoint)),
            ("mlguard_audit_records_total", "Audit records committed by this process",
             single(float(stats["records"])), "counter"),
            ("mlguard_audit_checkpoints_total", "Signed checkpoints written by this process",
             single(float(stats["checkpoints"])), "counter"),
            ("mlguard_audit_gaps_total",
             "Exchanges not recorded, served (fail_open, async) or refused (fail_closed), listed in gap records",
             single(float(stats["gaps"])), "counter"),
            ("mlguard_audit_errors_total", "Audit writer errors (store or housekeeping failures)",
             single(float(stats["errors"])), "counter"),
        ]

    async def finish(self, ex: Exchange) -> None:
        """Write (sync) or queue (async) the exchange's record. When that fails, note the audit id for a gap
        record before raising (the policy's failure_mode then serves or refuses), under fail_closed as under
        fail_open. Why both: the exchange happened either way (under fail_closed the app has usually run, the
        record being written last) and its 503 carries the audit id, which must lead somewhere.

        The reason comes from the writer (``queue_full``, ``store_error``); ``writer_error`` when the writer
        failed unexpectedly and cannot say whether the record was written; ``record_error`` when the record
        could not even be built. ``refused``: the client gets no response of the app's (fail_closed, or the
        exchange was refused or rejected before). A response streamed through (``ex.passed_through``) is the
        client's whatever the failure mode, so its gap says served.
        """
        try:
            pending = from_exchange(ex, self.keys)
        except Exception:
            self._note_gap(ex, "record_error")
            raise
        try:
            if self.durability == "sync":
                await append_durably(self.writer, pending)
            else:
                self.writer.submit(pending, wait=False)
        except Exception as exc:
            self._note_gap(ex, exc.reason if isinstance(exc, Unrecorded) else "writer_error")
            raise

    def _note_gap(self, ex: Exchange, reason: str) -> None:
        fail_open = getattr(ex.route.policy, "failure_mode", "fail_closed") == "fail_open"
        refused = not ex.passed_through and (not fail_open or ex.rejection is not None or ex.decision.refused)
        self.writer.note_gap(ex.audit_id, reason, refused=refused)

    async def append_event(self, kind: str, data: dict[str, Any]) -> str:
        """Append an event record (durably, whatever the durability setting); returns its audit id."""
        if kind not in KINDS or kind in ("exchange", "gap", "tombstone"):
            raise AuditError(f"unknown event kind {kind!r}")
        audit_id = str(uuid7())
        await append_durably(self.writer, event(audit_id, time.time(), kind, data))
        return audit_id

    def admin_routes(self) -> list[AdminRoute]:
        return [AdminRoute("GET", "/audit/records/{audit_id}", self._get_record)]

    async def _get_record(self, req: AdminRequest) -> AdminResponse:
        """Read the record, append the ``admin_read`` event saying whether it was found, then answer.

        Why read before the event: so the trail says what each read disclosed (``found``: true for the 200, false
        for the 404), not only that one was asked for. Reading into memory discloses nothing; the answer waits
        for the durable event, and when that append fails the answer is 503 with nothing of the record, not even
        whether it exists. A read that itself fails is still recorded (``found: null``) when the trail takes it.
        A target that is not an audit id is answered 404 unread and recorded by its length only (see below).
        """
        audit_id = req.query.get("audit_id", "")
        data: dict[str, Any] = {"endpoint": "/audit/records", "target": audit_id}
        unavailable = AdminResponse(503, json.dumps({"detail": "audit trail unavailable"}).encode())
        if not is_audit_id(audit_id):
            # Not an audit id: nothing is read and the trail gets its length only, never the string
            # (mlguard.ids.audit_target); the read is still recorded before the 404, as any other.
            data["target"] = audit_target(audit_id)
            try:
                read_id = await self.append_event("admin_read", {**data, "found": False})
            except MLGuardError as exc:
                log.error("audited read failed", extra={"error": type(exc).__name__})
                return unavailable
            return AdminResponse(404, json.dumps({"detail": "no such audit record", "read_id": read_id}).encode())
        try:
            record = await anyio.to_thread.run_sync(self.reader.get, audit_id)
        except MLGuardError as exc:
            log.error("audited read failed", extra={"error": type(exc).__name__})
            try:
                await self.append_event("admin_read", {**data, "found": None, "error": type(exc).__name__})
            except MLGuardError as append_exc:
                log.error("audit event for a failed read not recorded", extra={"error": type(append_exc).__name__})
            return unavailable
        try:
            read_id = await self.append_event("admin_read", {**data, "found": record is not None})
        except MLGuardError as exc:
            log.error("audited read failed", extra={"error": type(exc).__name__})
            return unavailable
        if record is None:
            return AdminResponse(404, json.dumps({"detail": "no such audit record", "read_id": read_id}).encode())
        return AdminResponse(200, json.dumps({"record": record, "read_id": read_id}, default=str).encode())

    def describe(self) -> dict[str, Any]:
        return {"store": self.store.url.split(":", 1)[0], "durability": self.durability,
                "kek": self.keys.active_kek_id(), "signing_key": self.keys.signing_key_id()}

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.writer.close)
        self.store.close()


def create(ctx: BuildContext) -> AuditStage | None:
    """The audit stage, or None when ``audit.enabled`` is false."""
    if not ctx.config.audit.enabled:
        return None
    return AuditStage(ctx)
