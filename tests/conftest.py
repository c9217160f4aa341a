"""Fixtures shared by every test module (the file-to-module map is in tests/README.md)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator
from types import ModuleType
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from iobuf import IMPLEMENTATION, flush_thread_cache

T = TypeVar("T")

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extras
    uvloop = None

#: The event loops the asyncio tests run on: asyncio's own, and uvloop where installed.
LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop not installed")),
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the pure-Python core's internal checks when the compiled core serves
    (CI runs the suite once per core; the public behaviour is checked on both)."""
    if IMPLEMENTATION != "compiled":
        return
    skip = pytest.mark.skip(reason="checks the pure-Python core's internals; the compiled core is in use")
    for item in items:
        if item.get_closest_marker("pure_core") is not None:
            item.add_marker(skip)


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Runs a coroutine on a fresh loop of the parametrized kind."""
    if request.param == "uvloop":
        assert uvloop is not None
        runner: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
        return runner
    return asyncio.run


@pytest.fixture(autouse=True)
def _clean_thread_cache() -> Iterator[None]:
    """Each test starts and ends with an empty cache in the main thread."""
    flush_thread_cache()
    yield
    flush_thread_cache()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry, so tests never share metric names."""
    return CollectorRegistry()


@pytest.fixture
def contended() -> Iterator[None]:
    """Switch GIL holders every microsecond so threads really interleave (no effect without a GIL)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(params=["build", "facets"])
def hot_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each allocate/drop hot path: the build's own, then the free-threaded one
    (per-thread facets of the size classes) even on a GIL build. Both are
    correct on both builds; each build uses one (``BufferPool.try_alloc``)."""
    if request.param == "facets":
        if IMPLEMENTATION == "compiled":
            pytest.skip("the compiled core has one hot path")
        from iobuf import BufferPool, IoBufMut

        monkeypatch.setattr(BufferPool, "try_alloc", BufferPool._try_alloc_facets)
        monkeypatch.setattr(IoBufMut, "__del__", IoBufMut._del_facets)
    return str(request.param)
