"""Many threads x many random operations with canaries: no corruption, no lost buffers.

On a free-threaded build this runs 4 threads x 50,000 operations each (the
threads really run in parallel); with a GIL a smaller run keeps the suite fast.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
import traceback
from typing import Any

import pytest

from iobuf import BufferPool, BufferPoolConfig, Exhausted, IoBuf, IoBufMut, flush_thread_cache

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
THREADS = 4
OPS = 50_000 if FREE_THREADED else 20_000


def canary(owner: int, serial: int, size: int) -> bytes:
    """A pattern unique to one allocation, so any foreign write shows."""
    unit = owner.to_bytes(2, "little") + serial.to_bytes(6, "little")
    return (unit * (size // 8 + 1))[:size]


def run_stress(pool: BufferPool, threads: int, ops: int, seed: int) -> dict[str, Any]:
    inboxes: list[queue.SimpleQueue[tuple[object, bytes]]] = [queue.SimpleQueue() for _ in range(threads)]
    start = threading.Barrier(threads)
    failures: list[str] = []
    counts = [0] * threads

    def worker(me: int) -> None:
        rng = random.Random(seed * 1000 + me)
        held: list[tuple[object, bytes]] = []
        serial = 0
        start.wait()
        try:
            for _ in range(ops):
                counts[me] += 1
                op = rng.random()
                if op < 0.25 or not held:
                    size = rng.choice((40, 64, 100, 128, 200, 256))
                    try:
                        buf = pool.try_alloc(size) if rng.random() < 0.5 else pool.alloc(size)
                    except Exhausted:
                        continue
                    serial += 1
                    data = canary(me, serial, size)
                    buf.put_slice(data)
                    held.append((buf, data))
                elif op < 0.35:
                    i = rng.randrange(len(held))
                    obj, data = held[i]
                    if isinstance(obj, IoBufMut):
                        held[i] = (obj.freeze(), data)
                elif op < 0.45:
                    obj, data = rng.choice(held)
                    if isinstance(obj, IoBuf) and len(data) > 2:
                        a = rng.randrange(len(data) // 2)
                        held.append((obj.slice(a, len(data)), data[a:]))
                        held.append((obj.clone(), data))
                elif op < 0.52:
                    obj, data = rng.choice(held)
                    if isinstance(obj, (IoBuf, IoBufMut)):
                        held.append((obj.as_memoryview(), data))
                elif op < 0.60:
                    obj, data = held.pop(rng.randrange(len(held)))
                    inboxes[rng.randrange(threads)].put((obj, data))
                elif op < 0.80:
                    obj, data = rng.choice(held)
                    if bytes(obj) != data:  # type: ignore[call-overload]
                        failures.append(f"thread {me}: canary overwritten")
                else:
                    held.pop(rng.randrange(len(held)))
                while True:
                    try:
                        obj, data = inboxes[me].get_nowait()
                    except queue.Empty:
                        break
                    if bytes(obj) != data:  # type: ignore[call-overload]
                        failures.append(f"thread {me}: canary overwritten in transit")
                    held.append((obj, data))
                if len(held) > 12:
                    held.pop(0)
            for obj, data in held:
                if bytes(obj) != data:  # type: ignore[call-overload]
                    failures.append(f"thread {me}: canary overwritten at the end")
            held.clear()
        except BaseException as exc:
            failures.append(f"thread {me}: {exc!r} {traceback.format_exc()}")

    began = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for box in inboxes:  # items sent to a thread after it finished
        while True:
            try:
                obj, data = box.get_nowait()
            except queue.Empty:
                break
            if bytes(obj) != data:  # type: ignore[call-overload]
                failures.append("canary overwritten in a leftover inbox")
    return {"failures": failures, "ops": sum(counts), "seconds": time.perf_counter() - began}


@pytest.mark.usefixtures("contended")
@pytest.mark.parametrize("cache", [None, 0, 1, 4])
def test_threads_hammering_one_pool_never_corrupt_or_lose_buffers(cache: int | None) -> None:
    """THREADS x OPS random operations: every canary intact, and every buffer back at the end."""
    cfg = BufferPoolConfig(
        min_size=64,
        max_size=256,
        max_per_class=24,
        alignment=64,
        parallelism=THREADS,
        thread_cache_capacity=cache,
    )
    pool = BufferPool(cfg)
    report = run_stress(pool, THREADS, OPS, seed=cache or 7)
    assert report["failures"] == [], report["failures"][:5]
    assert report["ops"] == THREADS * OPS
    flush_thread_cache()
    for stats in pool.stats().classes:
        assert stats.created <= stats.max_buffers
        assert stats.global_free + stats.local_free == stats.created, stats
    print(f"{THREADS} threads x {OPS} ops (cache={cache}): {report['seconds']:.1f} s")
