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

from mlguard.audit.reader import FIELDS

Format = Literal["jsonl", "csv", "parquet"]
GROUP = 5000
_SCALAR = {"audit_id", "seq", "ts", "route", "method", "status", "latency_ms", "subject", "kind", "shredded"}
COLUMNS = (*FIELDS, "data")


def _flat(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: (rec.get(k) if k in _SCALAR else
                (None if rec.get(k) is None else json.dumps(rec.get(k), sort_keys=True, ensure_ascii=False)))
            for k in COLUMNS}


def write_jsonl_lines(lines: Iterator[str], out: Path, progress: Callable[[int], None] | None = None) -> int:
    """Write ready JSON lines (``AuditReader.iter_jsonl``), the fast JSONL path; returns how many."""
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
            n += 1
            if progress is not None and n % 256 == 0:
                progress(256)
    if progress is not None:
        progress(n % 256)
    return n


def write_export(records: Iterator[dict[str, Any]], out: Path, fmt: Format,
                 progress: Callable[[int], None] | None = None) -> int:
    """Write ``records`` to ``out``; returns how many."""
    n = 0
    tick = progress or (lambda _: None)
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                n += 1
                tick(1)
    elif fmt == "csv":
        with out.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            w.writeheader()
            for rec in records:
                w.writerow(_flat(rec))
                n += 1
                tick(1)
    else:
        n = _parquet(records, out, tick)
    return n


def _parquet(records: Iterator[dict[str, Any]], out: Path, tick: Callable[[int], None]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        from mlguard.errors import DependencyMissing

        raise DependencyMissing("pyarrow", "parquet") from None
    types = {"seq": pa.int64(), "status": pa.int64(), "latency_ms": pa.float64(), "shredded": pa.bool_()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    n = 0
    with pq.ParquetWriter(out, schema) as writer:
        buf: list[dict[str, Any]] = []
        for rec in records:
            row = _flat(rec)
            if row["status"] is not None and not isinstance(row["status"], int):
                row["status"] = None
            buf.append(row)
            n += 1
            tick(1)
            if len(buf) >= GROUP:
                writer.write_table(pa.Table.from_pylist(buf, schema=schema))
                buf = []
        if buf or n == 0:
            writer.write_table(pa.Table.from_pylist(buf, schema=schema))
    return n
