"""Prometheus metrics of the guard itself: one registry per Guard, rendered at ``GET {admin prefix}/metrics``.

Why one registry per Guard and not prometheus_client's global one: several guards live in one process in tests
and in apps that wrap more than one service; a global registry would refuse the second set of metric names.

Two kinds of metric, chosen by what the request path may pay:

* per exchange, :class:`GuardMetrics` records once, after the exchange has ended (``observe``, called by the
  middleware in a ``finally``): the request counter, the latency histograms, refusals, redactions and stage
  failures. Everything it reads is already on the Exchange; the series are plain integers in dictionaries
  (event loop thread only, no locks), so a request costs a few microseconds, and rendering happens at scrape.
* state, read at scrape time: a stage hands over a function (``register_gauges``) that reads its current state
  (queue depths, the last checkpoint, the fairness status), so the request path pays nothing for those.

Labels never carry an input value: ``route`` is the configured route path (never the raw request path, so the
number of series stays bounded), entity types and operators come from the configuration, reasons are the
problem types the guard answers with, error labels are exception class names.

prometheus_client is imported lazily (when a guard is wrapped by the middleware or a stage registers metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from mlguard.errors import ConfigError
from mlguard.metrics_spool import MetricsSpool, spool_dir

if TYPE_CHECKING:
    from mlguard.exchange import Exchange
    from mlguard.runtime import Guard

SHARED_KEY = "metrics_registry"
GUARD_METRICS_KEY = "guard_metrics"
SPOOL_KEY = "metrics_spool"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
"""Seconds. Stage hooks run from tens of microseconds (declared-field PII) to hundreds of milliseconds (a slow
explainer, NER on a long note): the buckets span both, four per decade below 10 ms where the targets live."""

Sample = tuple[dict[str, str], float]
"""(labels, value) of one series."""

Kind = Literal["gauge", "counter"]
Family = tuple[str, str, list[Sample]] | tuple[str, str, list[Sample], Kind]
"""(name, help, samples) or (name, help, samples, kind); kind defaults to gauge. A counter's name ends in
``_total`` (prometheus_client adds the suffix back when it renders)."""

log = logging.getLogger("mlguard.metrics")


class _Collector:
    """Adapts a ``() -> iterable of families`` function to prometheus_client's collector API."""

    def __init__(self, read: Callable[[], Iterable[Family]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for family in self._read():
            name, help_text, samples = family[0], family[1], family[2]
            kind = family[3] if len(family) > 3 else "gauge"
            labels = sorted({k for lab, _ in samples for k in lab})
            fam: Any
            if kind == "counter":
                fam = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)
            else:
                fam = GaugeMetricFamily(name, help_text, labels=labels)
            for lab, value in samples:
                fam.add_metric([lab.get(k, "") for k in labels], value)
            yield fam

    def describe(self) -> list[Any]:
        return []  # names are dynamic; registering must not call collect() at start-up


def registry_for(shared: dict[str, Any]) -> Any:
    """The Guard's registry (a ``prometheus_client.CollectorRegistry``), created on first use."""
    reg = shared.get(SHARED_KEY)
    if reg is None:
        from prometheus_client import CollectorRegistry

        reg = shared[SHARED_KEY] = CollectorRegistry(auto_describe=False)
    return reg


def register_gauges(shared: dict[str, Any], read: Callable[[], Iterable[Family]]) -> None:
    """Register a function whose families (gauges, or counters kept by the stage) are read at every scrape."""
    registry_for(shared).register(_Collector(read))


def render(shared: dict[str, Any]) -> bytes:
    """The exposition text of every registered family; with several workers spooling (``admin.metrics_dir``,
    mlguard/metrics_spool.py), every worker's families merged."""
    from prometheus_client import generate_latest

    spool = shared.get(SPOOL_KEY)
    data: bytes = generate_latest(spool if spool is not None else registry_for(shared))
    return data


def single(value: float) -> list[Sample]:
    """The one unlabelled sample of a family."""
    return [({}, float(value))]


def status_class(status: int | None) -> str:
    """``2xx`` .. ``5xx``; ``none`` when no response was started (the app returned without one, or the guard
    itself failed before deciding)."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


def outcome_of(ex: Exchange, escaped: BaseException | None) -> tuple[str, str | None]:
    """(outcome, refusal reason) of an ended exchange.

    ``served``: the app's response was sent (whatever its status); ``rejected``: the guard refused the input
    (413/415/400/422) before the app; ``refused``: a policy decision refused it (503: stage failed under
    fail_closed, route halted, fairness block); ``disconnected``: the client left before its body was read;
    ``app_error``: the wrapped app raised; ``cancelled``: the exchange was cancelled (server shutdown, client
    gone while the app ran); ``failed``: an exception of the guard itself escaped (a bug; the server logs it).
    """
    if ex.rejection is not None:
        return "rejected", ex.rejection.type_suffix
    if ex.disconnected:
        return "disconnected", None
    if ex.decision.refused:
        return "refused", ex.decision.reason.replace("_", "-")
    if escaped is not None:
        import anyio

        if isinstance(escaped, anyio.get_cancelled_exc_class()):
            return "cancelled", None
        if ex.app_error is not None:
            return "app_error", None
        return "failed", None
    if ex.app_error is not None:
        return "app_error", None
    return "served", None


class _Histogram:
    """Bucket counts and sum of one labelled series; ``observe`` is a bisect and two additions.

    Why not prometheus_client's Histogram: it takes a lock per bucket and per sum on every observation, and a
    guarded request makes a dozen observations; these run on the event loop thread only (the middleware calls
    ``observe`` there, the scrape reads there too), so plain integers are exact and several times cheaper.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


_HISTOGRAMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mlguard_request_duration_seconds", "Time of a guarded exchange, the wrapped app included", ("route",)),
    ("mlguard_overhead_seconds", "Time the guard added to an exchange (the exchange minus the wrapped app)",
     ("route",)),
    ("mlguard_stage_duration_seconds", "Time spent in one stage hook", ("stage", "phase")),
)
_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mlguard_requests_total", "Guarded exchanges by route, method, outcome and status class",
     ("route", "method", "outcome", "status_class")),
    ("mlguard_refusals_total", "Exchanges the guard refused, by route and reason (the problem type the client got)",
     ("route", "reason")),
    ("mlguard_redactions_total", "PII findings acted on, by route, entity type and operator",
     ("route", "entity", "operator")),
    ("mlguard_stage_failures_total", "Stage hooks that raised, by stage, phase and error class",
     ("stage", "phase", "error")),
)


class GuardMetrics:
    """The per-exchange metrics of one Guard; get it with :meth:`of` (one per Guard, shared by middlewares)."""

    def __init__(self, guard: Guard) -> None:
        from mlguard.stage import BaseStage

        self.duration: dict[tuple[str, ...], _Histogram] = {}
        self.overhead: dict[tuple[str, ...], _Histogram] = {}
        self.stage: dict[tuple[str, ...], _Histogram] = {}
        self.requests: dict[tuple[str, ...], int] = {}
        self.refusals: dict[tuple[str, ...], int] = {}
        self.redactions: dict[tuple[str, ...], int] = {}
        self.failures: dict[tuple[str, ...], int] = {}
        self._warned = False
        # Hooks a stage inherits from BaseStage do nothing: their (tiny) timings are not worth a series each.
        self._untimed = frozenset(f"{s.name}.{phase}" for s in guard.stages
                                  for phase in ("before_app", "after_app", "finish")
                                  if getattr(type(s), phase, None) is getattr(BaseStage, phase))
        routes = list(guard.table.routes)

        def state() -> list[Family]:
            return [("mlguard_route_halted", "1 when decisions on the route are stopped (human oversight or "
                     "fairness block), else 0",
                     [({"route": r.path}, 1.0 if guard.is_halted(r) else 0.0) for r in routes])]

        registry_for(guard.context.shared).register(self)
        register_gauges(guard.context.shared, state)
        self.spool: MetricsSpool | None = None
        directory = spool_dir(guard.config.admin.metrics_dir, guard.config.base_dir)
        if directory is not None:
            try:
                self.spool = MetricsSpool(directory, registry_for(guard.context.shared))
            except OSError as exc:
                raise ConfigError(f"cannot create the metrics directory {directory} "
                                  f"({exc.strerror or type(exc).__name__})", field="admin.metrics_dir") from None
            guard.context.shared[SPOOL_KEY] = self.spool

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start spooling (several workers) on the event loop that owns these metrics."""
        if self.spool is not None:
            self.spool.bind(loop)

    def close(self) -> None:
        """At shutdown: the spool's last counts (several workers); nothing otherwise."""
        if self.spool is not None:
            self.spool.close()

    @classmethod
    def of(cls, guard: Guard) -> GuardMetrics:
        """The guard's metrics, created once (several middlewares may wrap one guard)."""
        shared = guard.context.shared
        metrics = shared.get(GUARD_METRICS_KEY)
        if metrics is None:
            metrics = shared[GUARD_METRICS_KEY] = cls(guard)
        assert isinstance(metrics, GuardMetrics)
        return metrics

    def observe(self, ex: Exchange, app_seconds: float, escaped: BaseException | None = None) -> None:
        """Record one ended exchange. Never raises: metrics must not break a request."""
        try:
            self._observe(ex, app_seconds, escaped)
        except Exception as exc:  # pragma: no cover - a defect here is logged once, never raised
            if not self._warned:
                self._warned = True
                log.error("metrics not recorded", extra={"error": type(exc).__name__})

    def _observe(self, ex: Exchange, app_seconds: float, escaped: BaseException | None) -> None:
        elapsed = time.perf_counter() - ex.started
        spool = self.spool
        if spool is not None:
            if not spool.bound:  # no lifespan startup came: bind on the first exchange
                spool.bind(running_asyncio_loop())
            spool.tick_inline()
        route = ex.route.path
        outcome, reason = outcome_of(ex, escaped)
        _inc(self.requests, (route, ex.method, outcome, status_class(ex.status)))
        key = (route,)
        _hist(self.duration, key).observe(elapsed)
        _hist(self.overhead, key).observe(max(0.0, elapsed - app_seconds))
        untimed = self._untimed
        for name, ms in ex.timings_ms.items():
            if name not in untimed:
                stage, _, phase = name.partition(".")
                _hist(self.stage, (stage, phase)).observe(ms / 1000.0)
        if reason is not None:
            _inc(self.refusals, (route, reason))
        for f in ex.findings:
            _inc(self.redactions, (route, f.entity, f.operator))
        for failure in ex.failures:
            _inc(self.failures, (failure.stage, failure.phase, failure.error))

    # prometheus_client's collector protocol: called by the registry at scrape time
    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
        for (name, help_text, labels), series in zip(_HISTOGRAMS, (self.duration, self.overhead, self.stage),
                                                     strict=True):
            hfam = HistogramMetricFamily(name, help_text, labels=list(labels))
            for values, h in sorted(series.items()):
                cumulative, running = [], 0
                for bound, n in zip(bounds, h.counts, strict=True):
                    running += n
                    cumulative.append((bound, float(running)))
                hfam.add_metric(list(values), cumulative, h.total)
            yield hfam
        for (name, help_text, labels), counts in zip(_COUNTERS, (self.requests, self.refusals, self.redactions,
                                                                  self.failures), strict=True):
            cfam = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=list(labels))
            for values, n in sorted(counts.items()):
                cfam.add_metric(list(values), float(n))
            yield cfam

    def describe(self) -> list[Any]:
        return []


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; None under another event loop (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _inc(counts: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
    counts[key] = counts.get(key, 0) + 1


def _hist(series: dict[tuple[str, ...], _Histogram], key: tuple[str, ...]) -> _Histogram:
    h = series.get(key)
    if h is None:
        h = series[key] = _Histogram()
    return h


__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Family", "GuardMetrics", "Sample", "outcome_of", "register_gauges",
           "registry_for", "render", "running_asyncio_loop", "single", "status_class"]
