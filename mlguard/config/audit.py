"""Deployment settings of the audit stage (``audit:`` in mlguard.yaml). Owned by the audit area."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def sqlite_store_problem(url: str) -> str | None:
    """Why a ``sqlite:///`` audit store URL cannot hold a trail, or None when it names a file.

    ``sqlite:///:memory:`` ended in a raw ``FileNotFoundError: ':memory:'`` (the store chmods the file it
    created) when the config was built in code, and in a file literally named ``:memory:`` beside a config file
    (a relative path, resolved against its directory): never an in-memory trail, and never a useful one. Every
    connection to ``:memory:`` is its own empty database, and the store opens one for the writer thread and one
    per reader thread; the records would vanish with the process, which is the opposite of an audit trail.
    Shared by the config check (``audit.store``) and :func:`mlguard.audit.store.base.open_store`."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    if path.rsplit("/", 1)[-1] == ":memory:":
        return ("an audit trail in memory (:memory:) would vanish with the process, and cannot be shared by the "
                "writer thread and the readers (each connection to :memory: is a new, empty database); give a "
                "file, and in tests one in a temporary directory: sqlite:///{tmp}/audit.db")
    if not path:
        return "sqlite:/// names no file; give its path, e.g. sqlite:///./mlguard-audit.db"
    return None


class AuditSettings(BaseModel):
    """Where the audit trail lives, how durable an append is, and which keyring seals it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True,
                          description="Write an audit record for every guarded exchange; false is refused "
                                      "under a policy that requires a trail (eu_ai_act, hipaa, pci_dss).")
    store: str = Field(default="sqlite:///./mlguard-audit.db", description="sqlite:///PATH or postgresql://... URL.")
    keyring: Path | None = Field(default=Path("./mlguard.keyring"),
                                 description="Keyring file (0600); created if absent (a WARNING says so); "
                                             "env MLGUARD_KEYRING wins.")
    durability: Literal["sync", "async"] = Field(
        default="sync", description="sync: committed before the response leaves; async: bounded queue."
    )
    witness: Path | None = Field(default=None, description="File that every signed checkpoint is also appended to.")
    checkpoint_every: int = Field(default=1000, gt=0, description="Sign a checkpoint every N records.")
    checkpoint_seconds: float = Field(default=60.0, gt=0, description="...and every T seconds, even when idle.")
    queue_size: int = Field(default=10_000, gt=0, description="Bound of the async queue (durability: async).")
    lock_timeout: float = Field(
        default=30.0, gt=0,
        description="Seconds a batch waits for the store's write lock held by someone else (another process, a "
                    "SQL session left open) before it fails: the waiting requests then get the policy's "
                    "failure_mode (fail_closed: 503) instead of waiting for ever. SQLite: the busy timeout; "
                    "PostgreSQL: lock_timeout on the writer's connection.",
    )

    write_timeout: float = Field(
        default=60.0, gt=0,
        description="Seconds a write transaction may stay in the store's hands before the store is declared "
                    "stalled (a server that accepts connections but never answers: stopped, hung storage, a "
                    "silent network path): that batch's requests get the policy's failure_mode (fail_closed: "
                    "503), as does every record while it stays stalled (listed in a gap record as "
                    "store_timeout), and health reports StoreTimeout. Must exceed lock_timeout (unset, it is "
                    "at least lock_timeout + 30), so that a lock wait is never cut short by it.",
    )

    @field_validator("store")
    @classmethod
    def _store_is_a_file(cls, v: str) -> str:
        """Refuse a SQLite URL that names no file (``:memory:``) at config check, before anything is built."""
        problem = sqlite_store_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

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
