"""What the operations features cost: scrubbing, allocation tracking, trim.

``python -m bench --ops`` runs, in one process with gc disabled while
timing, allocate+drop cycles on four pools built from the same
``for_storage()`` config (page-aligned, so every size class is mmap-backed):

* ``default``: the plain pool;
* ``default-b``: a second plain pool, timed the same way, so the table shows
  how far two identical pools differ on this machine (the noise floor);
* ``scrub``: ``scrub_on_return=True`` (every returned buffer is zeroed);
* ``track``: ``track_allocations=True`` (every allocation records its stack);

and ``bytearray(n)`` as the peer. The pools are interleaved per repeat, in a
shuffled order each time, so a noisy moment or the previous variant's
after-effects (freeing an 8 MiB ``bytearray`` unmaps it) hit all alike; the figures are
medians. Then a trim run: RSS
(``VmRSS``) before a burst, while the burst is held, after it is dropped (the
pool keeps the buffers) and after :meth:`~iobuf.BufferPool.trim`.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from iobuf import BufferPool, BufferPoolConfig

SIZES = (4096, 65536, 1 << 20, 8 << 20)
VARIANTS = ("default", "default-b", "scrub", "track")


def _cycle_ns(alloc: Callable[[int], object], size: int, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        b = alloc(size)
        del b
    return (time.perf_counter_ns() - start) / n


def _iterations(size: int, target_ms: float) -> int:
    # A rough per-cycle guess so each sample takes about target_ms.
    guess_ns = 600 + size * 0.02
    return max(20, int(target_ms * 1e6 / guess_ns))


def measure_costs(
    sizes: tuple[int, ...] = SIZES, repeats: int = 7, target_ms: float = 20.0
) -> list[dict[str, Any]]:
    """Median ns per allocate+drop for each variant and ``bytearray``, per size."""
    base = BufferPoolConfig.for_storage().with_max_per_class(16)
    pools = {
        "default": BufferPool(base),
        "default-b": BufferPool(base),
        "scrub": BufferPool(base.with_scrub_on_return(True)),
        "track": BufferPool(base.with_track_allocations(True)),
    }
    allocs: dict[str, Callable[[int], object]] = {k: p.try_alloc for k, p in pools.items()}
    allocs["bytearray"] = bytearray
    rows = []
    order = random.Random(1)  # noqa: S311 - a reproducible order
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for size in sizes:
            n = _iterations(size, target_ms)
            samples: dict[str, list[float]] = {k: [] for k in allocs}
            for alloc in allocs.values():  # warm: first allocations create the buffers
                _cycle_ns(alloc, size, 5)
            names = list(allocs)
            for _ in range(repeats):
                order.shuffle(names)  # who runs after whom changes too (bytearray's munmap)
                for name in names:
                    samples[name].append(_cycle_ns(allocs[name], size, n))
            med = {k: statistics.median(v) for k, v in samples.items()}
            rows.append({"size": size, "iterations": n, "median_ns": med, "samples_ns": samples})
    finally:
        if was_enabled:
            gc.enable()
        for p in pools.values():
            p.close()
    return rows


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def measure_trim(burst_bytes: int = 256 << 20, size: int = 1 << 20) -> dict[str, int]:
    """RSS around a burst of ``burst_bytes`` in ``size``-byte buffers, then trim()."""
    count = burst_bytes // size
    if count < 1:
        raise ValueError(f"burst_bytes ({burst_bytes}) must hold at least one {size}-byte buffer")
    pool = BufferPool(BufferPoolConfig.for_storage().with_max_per_class(count))
    gc.collect()
    out = {"before": rss_bytes()}
    held = [pool.try_alloc(size) for _ in range(count)]
    for b in held:
        b.put_slice(b"\x01" * size)  # touch every page: RSS counts what was written
    out["held"] = rss_bytes()
    del b  # the loop variable holds the last buffer
    held.clear()
    out["dropped"] = rss_bytes()
    out["trim_returned"] = pool.trim()
    out["after_trim"] = rss_bytes()
    pool.close()
    return out


def render(rows: list[dict[str, Any]], trim: dict[str, int] | None) -> str:
    lines = [
        "allocate+drop, median ns (for_storage pools; ratios are the pool's time / default's)",
        "",
        "| size | bytearray | default | default-b | scrub | track |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["median_ns"]
        d = m["default"]
        cells = [f"{m['bytearray']:,.0f}", f"{d:,.0f}"]
        cells += [f"{m[k]:,.0f} ({m[k] / d:.2f}x)" for k in ("default-b", "scrub", "track")]
        lines.append(f"| {r['size']:,} | " + " | ".join(cells) + " |")
    if trim:
        mib = 1 << 20
        lines += [
            "",
            "trim: RSS in MiB",
            f"before burst {trim['before'] / mib:.0f}, burst held {trim['held'] / mib:.0f}, "
            f"dropped (pooled) {trim['dropped'] / mib:.0f}, after trim() {trim['after_trim'] / mib:.0f} "
            f"(trim() reported {trim['trim_returned'] / mib:.0f} MiB freed)",
        ]
    return "\n".join(lines)
