"""Metrics of several worker processes answered as one: each worker spools its samples to a shared directory,
and the worker that takes a scrape merges every worker's file.

Why: with ``--workers N`` behind one port, a scrape reaches whichever worker accepted the connection. Each keeps
its own counters, so successive scrapes jump between the workers' values and Prometheus reads every drop as a
counter reset. prometheus_client's multiprocess mode covers only its own metric classes; the guard's
per-exchange metrics are plain integers on the event loop (mlguard/metrics.py), so the guard spools its own.

How: a worker writes a snapshot of its registry (every family, every sample) to ``<dir>/worker-<pid>.json``
about once a second, and again right before it answers a scrape. A daemon thread only asks the event loop to do
it: the metrics, and the stage state the gauges read, belong to the loop thread. The worker answering a scrape
merges every file: counters and histograms are summed over every worker that has written since the directory
was emptied (a worker that has ended keeps its counts, so a total never goes down while the service runs);
gauges are one series per live worker, with a ``worker`` label holding its PID (a queue depth or the time since
a checkpoint belongs to a process). At shutdown a worker writes its last counts and marks itself closed.

Live means: not closed, and the file written within ``LIVE_SECONDS`` (the ticker rewrites it every second, idle
or not). File age rather than a PID check, because workers in other containers sharing the directory have PIDs
this process cannot see. Files of ended workers (closed, or untouched for ``RETIRE_SECONDS``) are folded into
one ``retired.json`` under a file lock, so the directory does not grow with every worker ever started.

A file is written to a temporary name and renamed over the old one, so a reader never sees half a snapshot.
A snapshot holds the same families the token-protected endpoint renders: configured route paths, entity types,
reasons, class names, and fairness group names (protected-attribute categories, bounded by
``fairness.categories``/``max_categories``). So the directory is created for this user only (0700) and every
file is written 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("mlguard.metrics")

ENV_DIR = "MLGUARD_METRICS_DIR"
"""Where ``mlguard serve --workers N`` tells its workers to spool (a fresh directory it removes at exit), used
when the config's ``admin.metrics_dir`` is unset."""
INTERVAL = 1.0
"""Seconds between two snapshots of a worker (the staleness of another worker's figures in a scrape)."""
LIVE_SECONDS = 10.0
"""A worker whose file is older than this has no gauges in the answer (it has ended, or its loop is stuck)."""
RETIRE_SECONDS = 600.0
"""A worker file marked closed, or untouched this long, is folded into ``retired.json`` and removed, so a server
that replaces its workers (gunicorn ``--max-requests``) does not pile up one file per worker ever started."""
_SUMMED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
_PREFIX = "worker-"
_RETIRED = "retired.json"

Snapshot = list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]
"""(family name, type, help, [(sample name, labels, value)]) of every family of one registry."""


def snapshot(registry: Any) -> Snapshot:
    """Every family of a prometheus_client registry, as plain values."""
    return [(m.name, m.type, m.documentation, [(s.name, dict(s.labels), float(s.value)) for s in m.samples])
            for m in registry.collect()]


class MetricsSpool:
    """This process's file in the shared directory, the ticker that keeps it fresh, and the merge of all files."""

    def __init__(self, directory: Path, registry: Any, *, interval: float = INTERVAL) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.registry = registry
        self.interval = interval
        self.pid = os.getpid()
        self.path = directory / f"{_PREFIX}{self.pid}.json"
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bound = False
        self._written = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    # ------------------------------------------------------------------ this worker's file

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start the ticker on the event loop that owns the metrics (lifespan startup, or the first exchange).
        Without an asyncio loop (trio) there is no ticker: ``tick_inline`` writes from the exchanges instead."""
        if self.bound:
            return
        self.bound = True
        self._loop = loop
        self.write()
        if loop is not None:
            self._thread = threading.Thread(target=self._tick, name="mlguard-metrics-spool", daemon=True)
            self._thread.start()

    def tick_inline(self) -> None:
        """Without a ticker: write when the last snapshot is older than the interval (called per exchange)."""
        if self._loop is None and time.monotonic() - self._written >= self.interval:
            self.write()

    def _tick(self) -> None:
        loop = self._loop
        while not self._stop.wait(self.interval):
            if loop is None or loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(self.write)

    def write(self, *, closed: bool = False) -> None:
        """Write this worker's snapshot (event loop thread). A failure is logged once and never raised: metrics
        must not break the service."""
        try:
            pid = os.getpid()
            if pid != self.pid:  # built before a fork (a server that imports the app, then forks workers)
                self.pid, self.path = pid, self.directory / f"{_PREFIX}{pid}.json"
            doc = {"pid": self.pid, "closed": closed, "families": snapshot(self.registry)}
            _write_private(self.path, orjson.dumps(doc))
            self._written = time.monotonic()
        except Exception as exc:
            if not self._failed:
                self._failed = True
                log.error("metrics snapshot not written", extra={"error": type(exc).__name__})

    def close(self) -> None:
        """Stop the ticker and write the last counts, marked closed (their gauges leave the merge)."""
        self._stop.set()
        if self.bound or self.path.exists():
            self.write(closed=True)

    # ------------------------------------------------------------------ the merge

    def collect(self) -> Iterator[Any]:
        """Every worker's families merged (prometheus_client's collector protocol); this worker's file is
        written first, so its own figures are exact."""
        from prometheus_client.core import Metric

        self.write()
        self._retire()
        now = time.time()
        merged: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
        for _, pid, closed, mtime, families in _read_all(self.directory):
            live = not closed and (pid == self.pid or now - mtime < LIVE_SECONDS)
            for name, typ, help_text, samples in families:
                kind, _, series = merged.setdefault(name, (typ, help_text, {}))
                if kind != typ:
                    continue  # one version of a family's type (a worker from another release): first wins
                if kind in _SUMMED:
                    _sum_into(series, samples)
                elif live:
                    for sname, labels, value in samples:
                        series[(sname, tuple(sorted({**labels, "worker": str(pid)}.items())))] = value
        for name in sorted(merged):
            typ, help_text, series = merged[name]
            metric = Metric(name, help_text, typ)
            for (sname, label_items), value in series.items():
                metric.add_sample(sname, dict(label_items), value)
            yield metric

    def _retire(self) -> None:
        """Fold the counts of ended workers (file closed, or untouched for RETIRE_SECONDS) into ``retired.json``
        and remove their files, under an exclusive lock so that two workers answering scrapes at once never
        fold the same file twice. Where file locks are not available (Windows) nothing is folded."""
        try:
            import fcntl
        except ImportError:
            return
        try:
            with open(self.directory / ".lock", "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                now = time.time()
                retired: list[Snapshot] = []
                ended: list[tuple[Path, Snapshot]] = []
                for path, pid, closed, mtime, families in _read_all(self.directory):
                    if path.name == _RETIRED:
                        retired.append(families)
                    elif pid != self.pid and (closed or now - mtime > RETIRE_SECONDS):
                        ended.append((path, families))
                if not ended:
                    return
                totals: dict[tuple[str, str, str], dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
                for families in [*retired, *(f for _, f in ended)]:
                    for name, typ, help_text, samples in families:
                        if typ in _SUMMED:
                            _sum_into(totals.setdefault((name, typ, help_text), {}), samples)
                doc = {"pid": 0, "closed": True, "families": [
                    (name, typ, help_text, [(sname, dict(lab), value) for (sname, lab), value in series.items()])
                    for (name, typ, help_text), series in totals.items()]}
                _write_private(self.directory / _RETIRED, orjson.dumps(doc))
                for path, _ in ended:  # only after the totals holding them are in place
                    path.unlink(missing_ok=True)
        except Exception as exc:  # the merge still counts every file; folding is tidying, never an error
            if not self._failed:
                self._failed = True
                log.error("metrics of ended workers not folded", extra={"error": type(exc).__name__})

    def describe(self) -> list[Any]:
        return []


def _read_all(directory: Path) -> Iterable[tuple[Path, int, bool, float, Snapshot]]:
    """(path, pid, closed, mtime, families) of every readable worker file and of ``retired.json``; a file that
    cannot be read is left out (a worker is rewriting it: the rename makes that a moment, and the next scrape
    has it)."""
    for path in [*sorted(directory.glob(f"{_PREFIX}*.json")), directory / _RETIRED]:
        try:
            raw = path.read_bytes()
            mtime = path.stat().st_mtime
            doc = orjson.loads(raw)
            families = [(str(n), str(t), str(h), [(str(s), {str(k): str(v) for k, v in lab.items()}, float(x))
                                                  for s, lab, x in samples]) for n, t, h, samples in doc["families"]]
            yield path, int(doc["pid"]), bool(doc["closed"]), mtime, families
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name readable by this user only, then rename it over ``path``. Only this
    user: the samples are what the token-protected endpoint shows, fairness group names among them."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _sum_into(series: dict[tuple[str, tuple[tuple[str, str], ...]], float],
              samples: list[tuple[str, dict[str, str], float]]) -> None:
    """Add counter or histogram samples to ``series``, keyed by sample name and sorted labels."""
    for sname, labels, value in samples:
        key = (sname, tuple(sorted(labels.items())))
        series[key] = series.get(key, 0.0) + value


def spool_dir(configured: str | None, base_dir: Path | None) -> Path | None:
    """The spool directory: ``admin.metrics_dir`` (relative to the config's directory), else MLGUARD_METRICS_DIR,
    else None (one worker: its registry is the answer)."""
    raw = configured or os.environ.get(ENV_DIR) or None
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None and configured:
        path = base_dir / path
    return path
