"""The core's speed targets (issue 13), measured against their peers in one process.

``python -m bench --core`` times, interleaved in shuffled order over
``rounds`` rounds with gc disabled, the median ns per cycle (loop overhead
included on both sides of every ratio) of:

* allocate + drop on every class of ``for_storage()`` and ``for_network()``,
  against ``bytearray(4096)`` and ``numpy.empty(4096)`` (target: the worst
  class <= 0.6x and <= 0.7x), and at 1 MiB against ``bytearray(1 << 20)``
  (>= 150x faster);
* 4 KiB allocate + ``memoryview(buf)`` + one write + drop against the same with
  ``bytearray`` (<= 0.8x; the pure-Python core on 3.11 is no buffer, so there
  it takes ``as_memoryview()``);
* ``freeze()`` (allocate + freeze + drop, less allocate + drop), ``clone()``,
  a slice and ``split_to()`` of an IoBuf, each against ``mv[1:100]`` (<= 2x).

It measures whichever core is in use (``iobuf.IMPLEMENTATION``, printed); run
it with ``IOBUF_NO_EXTENSIONS=1`` for the pure-Python one.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from iobuf import IMPLEMENTATION, BufferPool, BufferPoolConfig

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is in the test and bench extras
    numpy = None  # type: ignore[assignment]

__all__ = ["TARGETS", "check_targets", "measure_targets"]

# (name, limit, True when the ratio must be at least the limit instead of at most)
TARGETS = (
    ("worst class alloc+drop / bytearray(4096)", 0.6, False),
    ("worst class alloc+drop / numpy.empty(4096)", 0.7, False),
    ("bytearray(1 MiB) / pooled 1 MiB alloc+drop", 150.0, True),
    ("4 KiB alloc+memoryview+write / bytearray", 0.8, False),
    ("freeze / mv[1:100]", 2.0, False),
    ("clone / mv[1:100]", 2.0, False),
    ("slice / mv[1:100]", 2.0, False),
    ("split_to / mv[1:100]", 2.0, False),
)


def _alloc_drop(alloc: Callable[[int], Any], size: int) -> Callable[[int], float]:
    def run(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            b = alloc(size)
            del b
        return (time.perf_counter_ns() - start) / n

    return run


def _alloc_cases(storage: BufferPool, network: BufferPool) -> dict[str, tuple[Callable[[int], float], int]]:
    """Each case: a function timing ``n`` cycles (ns per cycle), and by how much
    to divide ``n`` for it (the 1 MiB ``bytearray`` is slow)."""
    cases: dict[str, tuple[Callable[[int], float], int]] = {}

    for label, pool in (("storage", storage), ("network", network)):
        for size in pool.config.class_sizes:
            cases[f"alloc+drop {label} {size}"] = (_alloc_drop(pool.try_alloc, size), 1)
    cases["bytearray(4096)"] = (_alloc_drop(bytearray, 4096), 1)
    cases["bytearray(1 MiB)"] = (_alloc_drop(bytearray, 1 << 20), 20)
    if numpy is not None:
        empty, u8 = numpy.empty, numpy.uint8

        def numpy_empty(n: int) -> float:
            start = time.perf_counter_ns()
            for _ in range(n):
                b = empty(4096, u8)
                del b
            return (time.perf_counter_ns() - start) / n

        cases["numpy.empty(4096)"] = (numpy_empty, 1)

    try:
        memoryview(storage.alloc_len(1))  # type: ignore[arg-type, unused-ignore]
        pooled_view: Callable[[Any], memoryview] = memoryview
    except TypeError:  # the pure-Python core on 3.11: no buffer protocol
        pooled_view = _as_memoryview

    def write_one(
        alloc: Callable[[int], Any], view_of: Callable[[Any], memoryview]
    ) -> Callable[[int], float]:
        def run(n: int) -> float:
            start = time.perf_counter_ns()
            for _ in range(n):
                b = alloc(4096)
                m = view_of(b)
                m[0] = 1
                del m, b
            return (time.perf_counter_ns() - start) / n

        return run

    cases["4 KiB alloc+memoryview+write pooled"] = (write_one(storage.alloc_len, pooled_view), 1)
    cases["4 KiB alloc+memoryview+write bytearray"] = (write_one(bytearray, memoryview), 1)
    return cases


def _view_cases(storage: BufferPool) -> dict[str, tuple[Callable[[int], float], int]]:
    """freeze, clone, slice and split_to, and their peer ``mv[1:100]``."""
    cases: dict[str, tuple[Callable[[int], float], int]] = {}

    # The view operations, each in its own explicit loop like its peer's.
    mv = memoryview(bytearray(4096))
    alloc = storage.try_alloc
    frozen = storage.alloc_len(4096).freeze()

    def slice_mv(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            s = mv[1:100]
            del s
        return (time.perf_counter_ns() - start) / n

    def empty_loop(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            pass
        return (time.perf_counter_ns() - start) / n

    def alloc_freeze(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            f = alloc(4096).freeze()
            del f
        return (time.perf_counter_ns() - start) / n

    def clone(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            c = frozen.clone()
            del c
        return (time.perf_counter_ns() - start) / n

    def slice_iobuf(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            c = frozen[1:100]
            del c
        return (time.perf_counter_ns() - start) / n

    def split_run(n: int) -> float:
        big = storage.alloc_len(8 << 20).freeze()
        start = time.perf_counter_ns()
        for _ in range(n):
            c = big.split_to(1)
            del c
        return (time.perf_counter_ns() - start) / n

    cases["mv[1:100]"] = (slice_mv, 1)
    cases["empty loop"] = (empty_loop, 1)
    cases["alloc+freeze+drop"] = (alloc_freeze, 1)
    cases["alloc+drop 4096"] = (_alloc_drop(alloc, 4096), 1)
    cases["clone"] = (clone, 1)
    cases["slice"] = (slice_iobuf, 1)
    cases["split_to"] = (split_run, 1)
    return cases


def _as_memoryview(buf: Any) -> memoryview:
    """``as_memoryview()``, where the buffer protocol is not available."""
    return buf.as_memoryview()  # type: ignore[no-any-return]


def measure_targets(n: int = 100_000, rounds: int = 15) -> dict[str, Any]:
    """Median ns per cycle of every case, the target ratios, and the core measured."""
    storage = BufferPool(BufferPoolConfig.for_storage())
    network = BufferPool(BufferPoolConfig.for_network())
    cases = _alloc_cases(storage, network) | _view_cases(storage)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in names:  # warm up: caches filled, code paths taken once
            run, scale = cases[name]
            run(max(1, n // (10 * scale)))
        for _ in range(rounds):
            random.shuffle(names)
            for name in names:
                run, scale = cases[name]
                samples[name].append(run(max(1, n // scale)))
    finally:
        if was_enabled:
            gc.enable()
        storage.close()
        network.close()
    med = {name: statistics.median(v) for name, v in samples.items()}
    allocs = [k for k in med if k.startswith("alloc+drop storage") or k.startswith("alloc+drop network")]
    worst = max(allocs, key=med.__getitem__)
    base = med["mv[1:100]"]
    freeze = med["alloc+freeze+drop"] - med["alloc+drop 4096"] + med["empty loop"]
    ratios = {
        TARGETS[0][0]: med[worst] / med["bytearray(4096)"],
        TARGETS[2][0]: med["bytearray(1 MiB)"] / med["alloc+drop storage 1048576"],
        TARGETS[3][0]: med["4 KiB alloc+memoryview+write pooled"]
        / med["4 KiB alloc+memoryview+write bytearray"],
        TARGETS[4][0]: freeze / base,
        TARGETS[5][0]: med["clone"] / base,
        TARGETS[6][0]: med["slice"] / base,
        TARGETS[7][0]: med["split_to"] / base,
    }
    if "numpy.empty(4096)" in med:
        ratios[TARGETS[1][0]] = med[worst] / med["numpy.empty(4096)"]
    return {"implementation": IMPLEMENTATION, "worst_class": worst, "median_ns": med, "ratios": ratios}


def check_targets(result: dict[str, Any]) -> list[str]:
    """One line per target: the ratio measured, the limit, and whether it holds."""
    lines = [f"core: {result['implementation']}; worst class: {result['worst_class']}"]
    for name, limit, at_least in TARGETS:
        ratio = result["ratios"].get(name)
        if ratio is None:
            lines.append(f"  {name:46s}   (peer not installed)")
            continue
        ok = ratio >= limit if at_least else ratio <= limit
        sign = ">=" if at_least else "<="
        lines.append(f"  {name:46s} {ratio:8.2f}  target {sign} {limit:<5g} {'met' if ok else 'MISSED'}")
    return lines
