"""Audit stores behind one contract (base.AuditStore): SQLite (default) and PostgreSQL."""

from __future__ import annotations

from mlguard.audit.store.base import AuditStore, RecordRow, open_store

__all__ = ["AuditStore", "RecordRow", "open_store"]
