"""Raw memory (``_memory``): page and cache-line sizes, and the ``ctypes``-backed
views that free-threaded builds share between threads. Aligned blocks are checked
where the pool hands them out (``test_pool.py``, alignment tests)."""

from __future__ import annotations

import ctypes
import gc

from iobuf import cache_line_size, page_size
from iobuf._memory import shareable_view
from iobuf._views import _fresh_window


def test_page_size_is_a_power_of_two_of_at_least_4096() -> None:
    """page_size() reports a usable page size."""
    size = page_size()
    assert size >= 4096
    assert size & (size - 1) == 0


def test_cache_line_size_is_a_power_of_two() -> None:
    """cache_line_size() is a power of two >= 32 (128 on x86_64/aarch64, as the seed)."""
    line = cache_line_size()
    assert line >= 32
    assert line & (line - 1) == 0


def test_shareable_view_is_the_same_memory_behind_a_ctypes_array() -> None:
    """shareable_view gives a writable 1-D byte view, backed by a ctypes array, of the very same
    memory: writes through either side show on the other, a fresh window of it reads the same bytes,
    and the array keeps the original bytearray alive after every other reference is gone."""
    raw = bytearray(b"0123456789")
    view = memoryview(raw)[2:8]
    shared = shareable_view(view)
    assert isinstance(shared.obj, ctypes.Array)
    assert (shared.format, shared.ndim, len(shared), shared.readonly) == ("B", 1, 6, False)
    assert bytes(shared) == b"234567"
    shared[0] = ord("x")  # writes reach the original memory, and back
    raw[7] = ord("y")
    assert bytes(raw) == b"01x3456y89"
    assert bytes(_fresh_window(shared, 0, 6)) == b"x3456y"
    del raw, view
    gc.collect()
    assert bytes(shared) == b"x3456y"  # the array keeps the bytearray alive
