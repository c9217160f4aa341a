"""Prometheus metrics of a pool, computed when scraped.

What it owns: a custom ``prometheus_client`` collector that reads a pool's
counters at scrape time. Because the numbers are read, not pushed, the
allocate/drop hot path does no metrics work at all; the counters it reads
(``created``, ``exhausted``, ``oversized``) change only on slow paths, under
their own locks.

Exposed (``<ns>_`` prefix only when a namespace is given):

- ``<ns>_buffer_pool_created{size_class}`` (gauge): buffers created per class.
- ``<ns>_buffer_pool_exhausted_total{size_class}`` (counter): refused requests.
- ``<ns>_buffer_pool_oversized_total`` (counter): requests above ``max_size``.

The collector holds the size classes and a counter cell, never the pool, so a
registry does not keep a pool alive; closing the pool unregisters it.

Thread safety: ``collect`` reads integers that other threads may be updating;
each read is a single attribute load, so a scrape sees each value whole (also
on free-threaded builds, where attribute loads are atomic); values of different
classes may come from slightly different moments. ``OversizedCounter.inc`` is
a read-modify-write, so it takes its lock on every build.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["OversizedCounter", "PoolCollector", "check_namespace"]

_NAMESPACE_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def check_namespace(namespace: object) -> str:
    """A valid metric-name prefix (or ``""``), else ``TypeError``/``ValueError``."""
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if namespace and not _NAMESPACE_RE.match(namespace):
        raise ValueError(f"namespace must be a valid Prometheus name prefix, got {namespace!r}")
    return namespace


class OversizedCounter:
    """Pool-wide count of oversized requests (a slow path, so a lock is fine)."""

    __slots__ = ("value", "_lock")

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.RLock()  # re-entrant: signal handlers may allocate

    def inc(self) -> None:
        with self._lock:
            self.value += 1

    def after_fork_in_child(self) -> None:
        """A new lock: another thread of the parent may have held this one at fork time."""
        self._lock = threading.RLock()


class ClassCounters(Protocol):
    """What the collector reads of one size class (either core's)."""

    @property
    def size(self) -> int: ...
    @property
    def created(self) -> int: ...
    @property
    def exhausted(self) -> int: ...


class PoolCollector(Collector):
    """Reads one pool's size classes and oversized counter at scrape time."""

    def __init__(self, namespace: str, classes: Sequence[ClassCounters], oversized: OversizedCounter) -> None:
        prefix = f"{namespace}_" if namespace else ""
        self._created = f"{prefix}buffer_pool_created"
        self._exhausted = f"{prefix}buffer_pool_exhausted_total"
        self._oversized_name = f"{prefix}buffer_pool_oversized_total"
        self._classes = tuple(classes)
        self._oversized = oversized

    def _families(self) -> tuple[GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                self._created, "Number of tracked buffers created for the pool", labels=["size_class"]
            ),
            CounterMetricFamily(
                self._exhausted,
                "Total number of failed allocations due to pool exhaustion",
                labels=["size_class"],
            ),
            CounterMetricFamily(
                self._oversized_name, "Total number of allocation requests exceeding max buffer size"
            ),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        created, exhausted, oversized = self._families()
        for cls in self._classes:
            label = [str(cls.size)]
            created.add_metric(label, cls.created)
            exhausted.add_metric(label, cls.exhausted)
        oversized.add_metric([], self._oversized.value)
        return iter((created, exhausted, oversized))
