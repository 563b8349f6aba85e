"""A small Prometheus helper: one registry per Guard, rendered at ``GET {admin prefix}/metrics``.

Why one registry per Guard and not prometheus_client's global one: several guards live in one process in tests
and in apps that wrap more than one service; a global registry would refuse the second set of metric names.
Why collectors rather than gauges set per request: a stage hands over a function that reads its current state at
scrape time, so the request path pays nothing for metrics.

prometheus_client is imported lazily (only when a stage registers metrics or the endpoint is scraped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

SHARED_KEY = "metrics_registry"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]
"""(labels, value) of one series."""


class _Collector:
    """Adapts a ``() -> iterable of (name, help, samples)`` function to prometheus_client's collector API."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, list[Sample]]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for name, help_text, samples in self._read():
            labels = sorted({k for lab, _ in samples for k in lab})
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


def register_gauges(shared: dict[str, Any], read: Callable[[], Iterable[tuple[str, str, list[Sample]]]]) -> None:
    """Register a function whose gauge families are read at every scrape."""
    registry_for(shared).register(_Collector(read))


def render(shared: dict[str, Any]) -> bytes:
    """The exposition text of every registered family."""
    from prometheus_client import generate_latest

    data: bytes = generate_latest(registry_for(shared))
    return data


__all__ = ["CONTENT_TYPE", "Sample", "register_gauges", "registry_for", "render"]
