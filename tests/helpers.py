"""Pool builders and the seed's allocated/available counters, shared by the tests."""

from __future__ import annotations

import sys
import sysconfig

import pytest

from iobuf import BufferPool, BufferPoolConfig, SizeClassStats, page_size

PAGE = page_size()
# A free-threaded build: biased reference counting may run a finalizer in the
# thread that created the object rather than the one that dropped it.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
# Whether this process runs with the GIL: always before 3.13 (``sys._is_gil_enabled``
# is new there), and on a free-threaded build when it was switched back on (PYTHON_GIL=1).
if sys.version_info >= (3, 13):
    GIL_ENABLED = sys._is_gil_enabled()
else:
    GIL_ENABLED = True
#: For tests of races the GIL serialises: they cannot fail with it on, so they skip
#: (and are not counted as passing) there.
without_gil = pytest.mark.skipif(
    GIL_ENABLED, reason="the GIL serialises what this test races: it can only fail without the GIL"
)


def config(min_size: int, max_size: int, max_per_class: int, **kw: object) -> BufferPoolConfig:
    """The seed's ``test_config``: page alignment, parallelism 1, automatic thread cache."""
    kw.setdefault("alignment", PAGE)
    return BufferPoolConfig(
        min_size=min_size,
        max_size=max_size,
        max_per_class=max_per_class,
        **kw,  # type: ignore[arg-type]
    )


def class_stats(pool: BufferPool, size: int) -> SizeClassStats:
    """The stats of the class that serves ``size``."""
    cls_size = pool.size_class(size)
    assert cls_size is not None
    return pool.stats().for_size(cls_size)


def allocated(pool: BufferPool, size: int) -> int:
    """Buffers of ``size``'s class not free in the shared list or this thread's cache."""
    s = class_stats(pool, size)
    return s.created - s.global_free - s.local_free


def available(pool: BufferPool, size: int) -> int:
    """Free buffers of ``size``'s class this thread can see (shared + own cache)."""
    s = class_stats(pool, size)
    return s.global_free + s.local_free


def mapped(address: int) -> bool:
    """Whether ``address`` lies in memory mapped into this process. Pooled buffers
    of a page or more are anonymous mappings of their own in both cores, so one
    that was freed is unmapped (the kernel may have merged its mapping with a
    neighbour's while it lived, hence containment, not a mapping's start)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split(maxsplit=1)[0].split("-"))
            if start <= address < end:
                return True
    return False
