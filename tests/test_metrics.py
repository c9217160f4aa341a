"""Prometheus metrics read back from a real CollectorRegistry."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from iobuf import BufferPool, Exhausted, Oversized

from .helpers import PAGE, config


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or None)


def test_created_exhausted_and_oversized_are_counted(registry: CollectorRegistry) -> None:
    """Each metric moves exactly when its event happens."""
    pool = BufferPool(config(PAGE, PAGE * 2, 2), registry=registry, namespace="net")
    small = str(PAGE)
    assert value(registry, "net_buffer_pool_created", size_class=small) == 0
    held = [pool.try_alloc(PAGE), pool.try_alloc(PAGE)]
    assert value(registry, "net_buffer_pool_created", size_class=small) == 2
    assert value(registry, "net_buffer_pool_created", size_class=str(2 * PAGE)) == 0
    with pytest.raises(Exhausted):
        pool.try_alloc(PAGE)
    pool.alloc(PAGE)  # the fallback counts as exhausted too
    assert value(registry, "net_buffer_pool_exhausted_total", size_class=small) == 2
    with pytest.raises(Oversized):
        pool.try_alloc(PAGE * 4)
    assert value(registry, "net_buffer_pool_oversized_total") == 1
    held.clear()
    again = pool.try_alloc(PAGE)  # reuse does not create
    assert value(registry, "net_buffer_pool_created", size_class=small) == 2
    del again


def test_prefilled_pool_reports_every_buffer_created(registry: CollectorRegistry) -> None:
    """With prefill, created equals max_per_class from the start."""
    BufferPool(config(PAGE, PAGE, 3, prefill=True), registry=registry).close()
    pool = BufferPool(config(PAGE, PAGE, 3, prefill=True), registry=registry)
    assert value(registry, "buffer_pool_created", size_class=str(PAGE)) == 3
    assert pool.stats().classes[0].created == 3


def test_exposition_text_has_the_seed_names(registry: CollectorRegistry) -> None:
    """The text format carries the three metric families, with no prefix when namespace is empty."""
    pool = BufferPool(config(PAGE, PAGE, 1), registry=registry)
    held = pool.try_alloc(PAGE)
    text = generate_latest(registry).decode()
    assert "# TYPE buffer_pool_created gauge" in text
    assert f'buffer_pool_created{{size_class="{PAGE}"}} 1.0' in text
    assert f'buffer_pool_exhausted_total{{size_class="{PAGE}"}} 0.0' in text
    assert "buffer_pool_oversized_total 0.0" in text
    assert held.is_pooled


def test_two_namespaces_share_a_registry_and_a_clash_raises(registry: CollectorRegistry) -> None:
    """Different namespaces coexist; the same one twice is a ValueError that leaves no trace."""
    a = BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="a")
    b = BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="b")
    with pytest.raises(ValueError, match="Duplicated"):
        BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="a")
    a.try_alloc(PAGE)
    assert value(registry, "a_buffer_pool_created", size_class=str(PAGE)) == 1
    assert value(registry, "b_buffer_pool_created", size_class=str(PAGE)) == 0
    del b


def test_closing_or_dropping_a_pool_unregisters_its_metrics(registry: CollectorRegistry) -> None:
    """The namespace becomes free again, and the registry does not keep the pool alive."""
    pool = BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="x")
    pool.close()
    assert value(registry, "x_buffer_pool_oversized_total") is None
    pool = BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="x")
    del pool
    gc.collect()
    BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="x")


def test_bad_registry_and_namespace_are_rejected() -> None:
    """A registry must be a registry; a namespace must be a valid name prefix."""
    with pytest.raises(TypeError, match="registry"):
        BufferPool(config(PAGE, PAGE, 1), registry=object())
    with pytest.raises(TypeError, match="namespace"):
        BufferPool(config(PAGE, PAGE, 1), namespace=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        BufferPool(config(PAGE, PAGE, 1), namespace="bad name")


@pytest.mark.usefixtures("contended")
def test_closing_from_many_threads_at_once_unregisters_once(registry: CollectorRegistry) -> None:
    """Concurrent close() calls are safe: one does the work, the rest return, and the
    metrics are unregistered once. Runs on GIL builds too (1 us switch interval):
    close() is Python code, and without its lock a thread switch between the closed
    check and the unregistering would make a second thread unregister again (a
    KeyError from the registry)."""
    import threading

    pool = BufferPool(config(PAGE, PAGE, 1), registry=registry, namespace="c")
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def closer() -> None:
        start.wait()
        try:
            pool.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=closer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert value(registry, "c_buffer_pool_oversized_total") is None
