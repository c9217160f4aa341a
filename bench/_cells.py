"""One benchmark cell: an approach, a size, a touch mode and a threading pattern.

A cell runs in its own process (``python -m bench --cell JSON``), so no
allocator state leaks between cells. Inside it: the garbage collector is off,
an iteration count is calibrated to about ``target_ms`` per repeat, and each
repeat's wall time per iteration is reported in nanoseconds.

Approaches (``APPROACHES``), each a factory ``(size, threads) -> (alloc, view)``:
``alloc()`` returns a fresh buffer object, dropped at the end of the step;
``view(obj)`` gives something writable for ``touch=True`` steps.

Threading patterns follow the seed's harness: ``single``; ``lockstep`` (all
threads step with no delay, maximum contention); ``staggered`` (after each
step a thread spins ``((i + 1) * (tid * 7 + 1)) & 0xF`` empty loop turns).
For several threads the time is wall clock from a common start barrier to the
last join, divided by the per-thread iteration count.
"""

from __future__ import annotations

import functools
import gc
import mmap
import threading
import time
from collections.abc import Callable
from typing import Any

from iobuf import BufferPool, BufferPoolConfig, IoBufMut, page_size
from iobuf._demo_timing import freelist_floor

__all__ = ["APPROACHES", "available_approaches", "calibrated_samples", "freelist_floor", "run_cell"]

PAGE = page_size()
Factory = Callable[[int, int], tuple[Callable[[], Any], Callable[[Any], Any]]]


def _alignment(size: int) -> int:
    """Pools and direct buffers are page-aligned from one page up (storage), else 64 (network)."""
    return PAGE if size >= PAGE else 64


def _pooled(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    pool = BufferPool(
        BufferPoolConfig(
            min_size=size,
            max_size=size,
            max_per_class=4 * threads,
            parallelism=threads,
            prefill=True,
            alignment=_alignment(size),
        )
    )
    return functools.partial(pool.try_alloc, size), IoBufMut.spare_capacity


def _direct(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    return functools.partial(IoBufMut.with_alignment, size, _alignment(size)), IoBufMut.spare_capacity


def _same(obj: Any) -> Any:
    return obj


def _bytes_view(obj: Any) -> memoryview:
    return memoryview(obj).cast("B")


def _bytearray(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    return functools.partial(bytearray, size), _same


def _mmap(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    return functools.partial(mmap.mmap, -1, size), _same


def _numpy(zeros: bool) -> Factory:
    def factory(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        import numpy as np  # noqa: PLC0415 - optional peer, imported only in its own cells

        make = np.zeros if zeros else np.empty
        return functools.partial(make, size, np.uint8), memoryview

    return factory


def _ctypes(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    import ctypes  # noqa: PLC0415 - keep cell processes lean

    return functools.partial(ctypes.create_string_buffer, size), _bytes_view


def _pyarrow(backend: str) -> Factory:
    def factory(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        import pyarrow as pa  # noqa: PLC0415 - optional peer, imported only in its own cells

        pool = getattr(pa, f"{backend}_memory_pool")()
        return functools.partial(pa.allocate_buffer, size, memory_pool=pool), _bytes_view

    return factory


def _reuse_one(size: int, threads: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    local = threading.local()

    def alloc() -> bytearray:
        try:
            return local.buf  # type: ignore[no-any-return]
        except AttributeError:  # once per thread
            local.buf = bytearray(size)
            return local.buf  # type: ignore[no-any-return]

    return alloc, _same


APPROACHES: dict[str, Factory] = {
    "pooled": _pooled,
    "direct": _direct,
    "freelist_floor": freelist_floor,
    "reuse_one": _reuse_one,
    "bytearray": _bytearray,
    "numpy_empty": _numpy(zeros=False),
    "numpy_zeros": _numpy(zeros=True),
    "mmap": _mmap,
    "ctypes": _ctypes,
    "pyarrow_system": _pyarrow("system"),
    "pyarrow_jemalloc": _pyarrow("jemalloc"),
    "pyarrow_mimalloc": _pyarrow("mimalloc"),
}


def available_approaches() -> list[str]:
    """Approaches whose optional dependencies import here."""
    names = []
    for name in APPROACHES:
        try:
            if name.startswith("numpy"):
                import numpy  # noqa: F401, PLC0415
            elif name.startswith("pyarrow"):
                import pyarrow as pa  # noqa: PLC0415

                getattr(pa, f"{name.split('_', 1)[1]}_memory_pool")()
        except Exception:  # noqa: S112 - missing optional peer: skip it
            continue
        names.append(name)
    return names


def _touch_plan(size: int) -> list[tuple[int, bytes]]:
    """Per in-page offset: the stepped-slice start and the bytes that cover it."""
    span = min(PAGE, size)
    plan = []
    for offset in range(0, span, 128):
        count = len(range(offset, size, PAGE))
        plan.append((offset, b"\x01" * count))
    return plan


def _make_step(
    alloc: Callable[[], Any], view: Callable[[Any], Any], size: int, touch: bool
) -> Callable[[int], None]:
    if not touch:

        def step(i: int) -> None:
            alloc()

        return step
    plan = _touch_plan(size)
    nplan = len(plan)
    last = size - 1

    def touch_step(i: int) -> None:
        buf = alloc()
        target = view(buf)
        offset, ones = plan[i % nplan]
        target[offset::PAGE] = ones  # one byte per page, moving within the page
        target[last] = 1

    return touch_step


def _spin(i: int, tid: int) -> None:
    for _ in range(((i + 1) * (tid * 7 + 1)) & 0xF):
        pass


def _run_threads(makers: list[Callable[[], Callable[[int], None]]], n: int, staggered: bool) -> float:
    """Wall-clock ns per iteration with every thread doing ``n`` steps.

    Each thread builds its step with its maker, in that thread, before the
    start barrier: see :func:`_own_copy`.
    """
    start = threading.Barrier(len(makers) + 1)
    errors: list[BaseException] = []

    def worker(tid: int, make: Callable[[], Callable[[int], None]]) -> None:
        try:
            step = make()
            start.wait()
            if staggered:
                for i in range(n):
                    step(i)
                    _spin(i, tid)
            else:
                for i in range(n):
                    step(i)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=worker, args=(t, m)) for t, m in enumerate(makers)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass  # a worker failed before the start: its error is raised below
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    elapsed = time.perf_counter_ns() - t0
    if errors:
        raise errors[0]
    return elapsed / n


def _run_single(step: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter_ns()
    for i in range(n):
        step(i)
    return (time.perf_counter_ns() - t0) / n


def _own_copy(alloc: Callable[[], Any]) -> Callable[[], Any]:
    """``alloc`` rebuilt from objects the calling thread creates (call it in the thread that steps).

    On free-threaded builds an object's reference count is cheap only for the
    thread that created it; any other thread changes it with atomics, and two
    threads doing so bounce its cache line. Objects the main thread built for
    both workers side by side (the partials, the step closures) even share
    cache lines while being distinct. So each thread gets its own partial and,
    for int arguments, its own int: the size of a real call site is either a
    literal (immortal on 3.13t) or computed in the calling thread, never one
    parsed object shared by all threads.
    """
    if isinstance(alloc, functools.partial):
        args = tuple(int(str(a)) if type(a) is int else a for a in alloc.args)
        return functools.partial(alloc.func, *args, **alloc.keywords)
    return alloc


def step_makers(
    alloc: Callable[[], Any], view: Callable[[Any], Any], size: int, touch: bool, threads: int
) -> list[Callable[[], Callable[[int], None]]]:
    """One maker per thread; each builds that thread's step where it is called."""
    return [lambda: _make_step(_own_copy(alloc), view, size, touch) for _ in range(threads)]


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one allocation cell in this process and return its samples."""
    size = int(spec["size"])
    threads = int(spec.get("threads", 1))
    pattern = spec.get("pattern", "single")
    target_ns = float(spec.get("target_ms", 40.0)) * 1e6
    repeats = int(spec.get("repeats", 5))
    alloc, view = APPROACHES[spec["approach"]](size, threads)
    makers = step_makers(alloc, view, size, bool(spec["touch"]), threads)
    single = makers[0]() if threads == 1 else None

    def run(n: int) -> float:
        if single is not None:
            return _run_single(single, n)
        return _run_threads(makers, n, pattern == "staggered")

    n, samples = calibrated_samples(run, target_ns, repeats)
    return {**spec, "iterations": n, "samples_ns": samples}


def calibrated_samples(
    run: Callable[[int], float], target_ns: float, repeats: int
) -> tuple[int, list[float]]:
    """With gc off: find n so ``run(n)`` takes about ``target_ns``, then time ``repeats`` runs.

    ``run(n)`` does n steps and returns ns per step.
    """
    gc.collect()
    gc.disable()
    try:
        n = 8
        while (per := run(n)) * n < target_ns / 8 and n < 1 << 26:
            n *= 2
        n = max(8, int(target_ns / max(per, 1.0)))
        return n, [run(n) for _ in range(repeats)]
    finally:
        gc.enable()
