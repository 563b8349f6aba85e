"""Deployment settings of the audit stage (``audit:`` in mlguard.yaml). Owned by the audit area."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AuditSettings(BaseModel):
    """Where the audit trail lives, how durable an append is, and which keyring seals it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Write an audit record for every guarded exchange; false is refused "
                                            "under a policy that requires a trail (eu_ai_act, hipaa, pci_dss).")
    store: str = Field("sqlite:///./mlguard-audit.db", description="sqlite:///PATH or postgresql://... URL.")
    keyring: Path | None = Field(Path("./mlguard.keyring"),
                                 description="Keyring file (0600); created if absent (a WARNING says so); "
                                             "env MLGUARD_KEYRING wins.")
    durability: Literal["sync", "async"] = Field(
        "sync", description="sync: committed before the response leaves; async: bounded queue."
    )
    witness: Path | None = Field(None, description="File that every signed checkpoint is also appended to.")
    checkpoint_every: int = Field(1000, gt=0, description="Sign a checkpoint every N records.")
    checkpoint_seconds: float = Field(60.0, gt=0, description="...and every T seconds, even when idle.")
    queue_size: int = Field(10_000, gt=0, description="Bound of the async queue (durability: async).")
    lock_timeout: float = Field(
        30.0, gt=0,
        description="Seconds a batch waits for the store's write lock held by someone else (another process, a "
                    "SQL session left open) before it fails: the waiting requests then get the policy's "
                    "failure_mode (fail_closed: 503) instead of waiting for ever. SQLite: the busy timeout; "
                    "PostgreSQL: lock_timeout on the writer's connection.",
    )

    write_timeout: float = Field(
        60.0, gt=0,
        description="Seconds a write transaction may stay in the store's hands before the store is declared "
                    "stalled (a server that accepts connections but never answers: stopped, hung storage, a "
                    "silent network path): that batch's requests get the policy's failure_mode (fail_closed: "
                    "503), as does every record while it stays stalled (listed in a gap record as "
                    "store_timeout), and health reports StoreTimeout. Must exceed lock_timeout (unset, it is "
                    "at least lock_timeout + 30), so that a lock wait is never cut short by it.",
    )

    @model_validator(mode="after")
    def _write_timeout_after_lock_timeout(self) -> AuditSettings:
        """Keep ``write_timeout`` above ``lock_timeout``: an unset one follows a raised lock timeout up (30 s
        more), a set one at or below it is refused (a batch waiting its allowed time for the lock would be
        declared stalled)."""
        if self.write_timeout > self.lock_timeout:
            return self
        if "write_timeout" not in self.model_fields_set:
            self.write_timeout = self.lock_timeout + 30.0
            return self
        raise ValueError(f"audit.write_timeout ({self.write_timeout:g} s) must exceed audit.lock_timeout "
                         f"({self.lock_timeout:g} s): a batch may wait that long for the write lock")

    def witness_path(self, base_dir: Path | None) -> Path | None:
        """The witness file, a relative path resolved against the config's directory (the stage and the CLI
        commands that append checkpoints read it the same way)."""
        w = self.witness
        return w if w is None or w.is_absolute() or base_dir is None else base_dir / w
