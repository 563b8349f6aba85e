"""Decrypted export of the audit trail: JSONL, CSV or Parquet, streamed in constant memory.

Why streaming: a regulator's request may cover years of records; rows are read in pages from the store and
written as they are decrypted (Parquet in row groups of ``GROUP`` records), so memory does not grow with the log.
Nested fields are JSON text in CSV and Parquet; shredded records appear with ``shredded = true`` and no content.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from mlguard.audit import parallel
from mlguard.audit.reader import FIELDS, AuditReader
from mlguard.audit.store.base import open_store
from mlguard.files import open_private
from mlguard.keys import KeyProvider

Format = Literal["jsonl", "csv", "parquet"]
GROUP = 5000
_FLAGS = ("inspected", "app_called", "disconnected")
"""Booleans of an exchange record (Parquet: bool columns)."""
_SCALAR = {"audit_id", "seq", "ts", "ts_end", "route", "method", "status", "latency_ms", "subject", "kind", "shredded",
           "app_error", *_FLAGS}
COLUMNS = (*FIELDS, "ts_end", *_FLAGS, "app_error", "rejection", "outcome", "pii", "data")
"""Every member a record can have (record.py: from_exchange, event), so CSV and Parquet lose none of what JSONL
carries; nested ones as JSON text (tests/audit/test_cli.py compares the formats' fields)."""


def _flat(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: (rec.get(k) if k in _SCALAR else
                (None if rec.get(k) is None else json.dumps(rec.get(k), sort_keys=True, ensure_ascii=False)))
            for k in COLUMNS}


def export_store(url: str, keys: KeyProvider, out: Path, fmt: Format, *, since: str | None = None,
                 until: str | None = None, route: str | None = None, subject: str | None = None,
                 jobs: int | None = None, window: int = parallel.WINDOW,
                 progress: Callable[[int], None] | None = None) -> int:
    """Decrypt the store at ``url`` into ``out`` (what ``mlguard audit export`` runs); returns how many records.

    ``jobs`` worker processes (default: one per core) each decrypt a window of seqs with their own store
    connection and key cache; the windows come back in seq order, so the file is the one a single process
    writes (tests/audit/test_parallel.py compares them), and at most ``2 * jobs`` windows are in memory."""
    store = open_store(url, create=False)
    try:
        head = store.head()[0]
    finally:
        store.close()
    tasks = parallel.windows(head, window)
    n_jobs = parallel.default_jobs() if jobs is None else jobs
    state = {"keys": keys, "filters": (since, until, route, subject)}
    try:
        if fmt == "jsonl":
            texts = parallel.run_windows(_window_text, tasks, url=url, jobs=n_jobs, state=state)
            try:
                return _write_texts(texts, out, progress)
            finally:
                texts.close()
        rows = parallel.run_windows(_window_rows, tasks, url=url, jobs=n_jobs, state=state)
        try:
            return _write_rows((row for part in rows for row in part), out, fmt, progress)
        finally:
            rows.close()
    except BaseException:
        # a failed export (a keyring without the KEK, a store gone) leaves no file: an empty or cut one would
        # pass for the export of an empty or shorter log
        out.unlink(missing_ok=True)
        raise


def _worker_reader() -> tuple[AuditReader, tuple[str | None, str | None, str | None, str | None]]:
    """This worker's reader (its own store connection and key cache, made on its first window) and filters."""
    state = parallel.state()
    reader = state.get("reader")
    if not isinstance(reader, AuditReader):
        reader = state["reader"] = AuditReader(parallel.worker_store(), state["keys"])
    return reader, state["filters"]


def _window_text(window: tuple[int, int | None]) -> tuple[int, str]:
    """One window's records as JSON lines, decrypted in a worker and joined into one text (one string crosses
    the pipe and is written at once, instead of 4,096 of each), with how many there are."""
    reader, (since, until, route, subject) = _worker_reader()
    lines = list(reader.iter_jsonl(since, until, route, subject, since_seq=window[0], to_seq=window[1]))
    return len(lines), "".join(line + "\n" for line in lines)


def _write_texts(texts: Iterator[tuple[int, str]], out: Path, progress: Callable[[int], None] | None) -> int:
    """Write windows of JSON lines (``_window_text``) in order; returns how many records."""
    n = 0
    tick = _batched(progress)
    with open_private(out, "w", encoding="utf-8") as fh:
        for count, text in texts:
            fh.write(text)
            n += count
            tick(n)
    tick(n, final=True)
    return n


def _window_rows(window: tuple[int, int | None]) -> list[dict[str, Any]]:
    """One window's records as flat rows (CSV, Parquet: nested fields as JSON text), decrypted in a worker."""
    reader, (since, until, route, subject) = _worker_reader()
    return [_flat(rec) for rec in
            reader.iter_records(since, until, route, subject, since_seq=window[0], to_seq=window[1])]


def _write_rows(rows: Iterator[dict[str, Any]], out: Path, fmt: Format,
               progress: Callable[[int], None] | None = None) -> int:
    """Write flat rows (``_flat``, made in export_store's workers) as CSV or Parquet; returns how many."""
    tick = _batched(progress)
    if fmt == "csv":
        n = 0
        with open_private(out, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            w.writeheader()
            for row in rows:
                w.writerow(row)
                n += 1
                tick(n)
    else:
        n = _parquet(rows, out, tick)
    tick(n, final=True)
    return n


class _batched:
    """A progress callback called every 256 records (a bar's update costs more than writing a record)."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress = progress
        self.done = 0

    def __call__(self, n: int, *, final: bool = False) -> None:
        if self.progress is not None and (final or n - self.done >= 256):
            if n > self.done:
                self.progress(n - self.done)
            self.done = n


def _parquet(rows: Iterator[dict[str, Any]], out: Path, tick: _batched) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        from mlguard.errors import DependencyMissing

        raise DependencyMissing("pyarrow", "parquet") from None
    types = {"seq": pa.int64(), "status": pa.int64(), "latency_ms": pa.float64(), "shredded": pa.bool_(),
             **{flag: pa.bool_() for flag in _FLAGS}}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    n = 0
    with open_private(out, "wb") as sink, pq.ParquetWriter(sink, schema) as writer:
        buf: list[dict[str, Any]] = []
        for row in rows:
            if row["status"] is not None and not isinstance(row["status"], int):
                row["status"] = None
            buf.append(row)
            n += 1
            tick(n)
            if len(buf) >= GROUP:
                writer.write_table(pa.Table.from_pylist(buf, schema=schema))
                buf = []
        if buf or n == 0:
            writer.write_table(pa.Table.from_pylist(buf, schema=schema))
    return n


def subject_not_found_note(url: str, keys: KeyProvider, subject: str, *, since: str | None = None,
                           until: str | None = None, route: str | None = None) -> str:
    """What ``mlguard audit export --subject ID`` says on stderr when it exported nothing.

    Why: an export of 0 records answering a subject access request reads as "we hold nothing about you", and a
    mistyped id (another case, a space, the id of another system) gives exactly that. The note says the match is
    exact and, when the selection had a range, whether this subject has records outside it. It names no other
    subject (no "did you mean": that would show one person's id to whoever asks about another) and does not
    echo the id (stderr ends up in logs)."""
    from mlguard.audit.record import pseudonym

    ranged = [flag for flag, value in (("--since", since), ("--until", until), ("--route", route))
              if value is not None]
    where = f"in the selected range ({', '.join(ranged)})" if ranged else "in this store"
    note = f"note: no record of this subject {where}"
    if ranged:
        store = open_store(url, create=False)
        try:
            elsewhere = next(iter(store.iter_rows(subject=pseudonym(keys, subject))), None) is not None
        finally:
            store.close()
        note += ("; it has records outside that range" if elsewhere else
                 "; none outside it either")
    note += (". Subject ids match exactly (case-sensitive, every character) the value the service received in "
             "the request: check the id before answering that nothing is held")
    if subject != subject.strip():
        note += " (the id given begins or ends with whitespace, which is part of the match)"
    return note + "."

