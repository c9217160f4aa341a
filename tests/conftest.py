"""Fixtures shared by every test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from iobuf import flush_thread_cache


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
