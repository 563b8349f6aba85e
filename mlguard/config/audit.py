"""Deployment settings of the audit stage (``audit:`` in mlguard.yaml). Owned by the audit area."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AuditSettings(BaseModel):
    """Where the audit trail lives, how durable an append is, and which keyring seals it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Write an audit record for every guarded exchange.")
    store: str = Field("sqlite:///./mlguard-audit.db", description="sqlite:///PATH or postgresql://... URL.")
    keyring: Path | None = Field(Path("./mlguard.keyring"), description="Keyring file (0600); created if absent.")
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

    def witness_path(self, base_dir: Path | None) -> Path | None:
        """The witness file, a relative path resolved against the config's directory (the stage and the CLI
        commands that append checkpoints read it the same way)."""
        w = self.witness
        return w if w is None or w.is_absolute() or base_dir is None else base_dir / w
