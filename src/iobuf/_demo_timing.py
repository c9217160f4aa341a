"""The demo's in-process, side-by-side timing of one allocate-and-drop cycle.

Section 9 of the demo (``python -m iobuf``) and the harness's ``--inline``
mode (``python -m bench --inline``, from a clone of the repository) time, in
one process and interleaved so that machine noise hits every approach alike:

- ``pooled``: ``pool.try_alloc(n)`` from a prefilled one-class pool, dropped at once;
- ``freelist``: the pure-Python floor, a bare unsafe freelist of preallocated
  ``bytearray`` objects handed out through a ``__slots__`` wrapper whose
  ``__del__`` pushes the buffer back (no safety rule, no classes, no stats);
- ``bytearray``: ``bytearray(n)``, a fresh zero-filled allocation.

Method: the garbage collector is disabled while timing; each approach runs a
calibrated number of cycles (about ``target_ms`` per repeat); repeats rotate
through the approaches; the median of the repeats is reported with its spread
(max/min). Absolute times on a shared machine are noisy; compare ratios from
the same run. The full harness (a fresh process per cell, every peer, touch
and thread modes) lives in the repository's ``bench/``, not in this package;
see ``docs/performance.md``. It imports :func:`freelist_floor` from here (the
demo depends on nothing of the harness).

Single-threaded and for the demo only: nothing in the library imports this module.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._config import BufferPoolConfig
from ._pool import BufferPool

__all__ = ["CycleResult", "format_table", "freelist_floor", "measure_cycles"]


class _FloorHandle:
    """The pure-Python floor's handle: owns a preallocated bytearray until dropped."""

    __slots__ = ("data", "home")
    data: bytearray
    home: list[bytearray]

    def __del__(self) -> None:
        self.home.append(self.data)


def freelist_floor(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """``(alloc, view)`` of the floor: ``4 * threads`` preallocated bytearrays of ``size``
    bytes; ``alloc()`` pops one into a handle that pushes it back when dropped. No lock of
    its own: ``list.pop`` and ``list.append`` are thread-safe (under the GIL, and by the
    list's own lock on free-threaded builds), and each thread holds one handle at a time."""
    free = [bytearray(size) for _ in range(4 * threads)]
    new = object.__new__

    def alloc() -> _FloorHandle:
        handle = new(_FloorHandle)
        handle.data = free.pop()
        handle.home = free
        return handle

    def view(handle: _FloorHandle) -> bytearray:
        return handle.data

    return alloc, view


def _loop(alloc: Callable[[], object], n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        alloc()
    return time.perf_counter_ns() - start


@dataclass(frozen=True)
class CycleResult:
    """Median ns per allocate-and-drop cycle of one approach at one size."""

    approach: str
    size: int
    median_ns: float
    spread: float  # slowest repeat / fastest repeat


def measure_cycles(
    sizes: Sequence[int] = (4096, 65536, 1 << 20), repeats: int = 5, target_ms: float = 20.0
) -> list[CycleResult]:
    """Time every approach at every size, interleaved; see the module notes."""
    results: list[CycleResult] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for size in sizes:
            pool = BufferPool(BufferPoolConfig(min_size=size, max_size=size, max_per_class=4, prefill=True))
            approaches: dict[str, Callable[[], object]] = {
                "pooled": functools.partial(pool.try_alloc, size),
                "freelist": freelist_floor(size, 1)[0],
                "bytearray": functools.partial(bytearray, size),
            }
            counts = {}
            for name, fn in approaches.items():
                n = 64
                while (elapsed := _loop(fn, n)) < target_ms * 1e6 / 8:
                    n *= 2
                counts[name] = max(1, int(n * target_ms * 1e6 / max(elapsed, 1)))
            samples: dict[str, list[float]] = {name: [] for name in approaches}
            for _ in range(repeats):
                for name, fn in approaches.items():
                    samples[name].append(_loop(fn, counts[name]) / counts[name])
            for name, values in samples.items():
                results.append(CycleResult(name, size, statistics.median(values), max(values) / min(values)))
            pool.close()
    finally:
        if gc_was_enabled:
            gc.enable()
    return results


def _size_label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1 << 10:
        return f"{size >> 10} KiB"
    return f"{size} B"


def format_table(results: Sequence[CycleResult]) -> str:
    """A text table: ns per cycle (spread) and each approach's ratio to ``pooled``."""
    sizes = sorted({r.size for r in results})
    names = list(dict.fromkeys(r.approach for r in results))
    by_key = {(r.approach, r.size): r for r in results}
    header = f"{'approach':<10}" + "".join(f"{_size_label(s):>22}" for s in sizes)
    lines = [header]
    for name in names:
        cells = []
        for s in sizes:
            r = by_key[(name, s)]
            ratio = r.median_ns / by_key[("pooled", s)].median_ns
            cells.append(f"{r.median_ns:>9,.0f} ns {ratio:>5.2f}x ±{r.spread - 1:>4.0%}")
        lines.append(f"{name:<10}" + "".join(f"{c:>22}" for c in cells))
    lines.append("(median ns per allocate+drop; Nx = time relative to pooled; ± = max/min - 1)")
    return "\n".join(lines)
