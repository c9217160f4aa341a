"""The shared-freelist microbenchmark: iobuf's striped lists vs a locked list vs SimpleQueue.

As in the seed's ``freelist`` bench: ``slots`` entries are parked; each worker
holds ``batch`` of them; one step puts all it holds back and then takes until
it holds ``batch`` again (retrying when another thread got there first), so
occupancy stays constant. Batch 1 uses the single put/take operations.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from iobuf._size_class import Shared  # the pool's own striped freelist, measured as it is

from ._cells import calibrated_samples

__all__ = ["FREELISTS", "run_freelist_cell"]

Ops = tuple[Callable[[list[Any], int], None], Callable[[int, int, list[Any]], None]]


def _iobuf(slots: int, threads: int, entries: list[Any]) -> Ops:
    shared = Shared(slots, threads)
    shared.put_batch(entries, 0)

    def put(batch: list[Any], home: int) -> None:
        if len(batch) == 1:
            shared.put(batch[0], home)
        else:
            shared.put_batch(batch, home)

    def take(count: int, home: int, into: list[Any]) -> None:
        if count == 1:
            item = shared.take(home)
            if item is not None:
                into.append(item)
        else:
            shared.take_batch(count, home, into)

    return put, take


def _locked_list(slots: int, threads: int, entries: list[Any]) -> Ops:
    items = list(entries)
    lock = threading.Lock()

    def put(batch: list[Any], home: int) -> None:
        with lock:
            items.extend(batch)

    def take(count: int, home: int, into: list[Any]) -> None:
        with lock:
            got = items[-count:]
            del items[-count:]
        into.extend(got)

    return put, take


def _simple_queue(slots: int, threads: int, entries: list[Any]) -> Ops:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for e in entries:
        q.put(e)
    get = q.get_nowait
    empty = queue.Empty

    def put(batch: list[Any], home: int) -> None:
        for e in batch:
            q.put(e)

    def take(count: int, home: int, into: list[Any]) -> None:
        for _ in range(count):
            try:
                into.append(get())
            except empty:
                return

    return put, take


FREELISTS: dict[str, Callable[[int, int, list[Any]], Ops]] = {
    "iobuf_shared": _iobuf,
    "locked_list": _locked_list,
    "simple_queue": _simple_queue,
}


def run_freelist_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one freelist cell in this process and return its samples (ns per step)."""
    slots = int(spec.get("slots", 64))
    batch = int(spec["batch"])
    threads = int(spec.get("threads", 1))
    target_ns = float(spec.get("target_ms", 40.0)) * 1e6
    repeats = int(spec.get("repeats", 5))
    put, take = FREELISTS[spec["impl"]](slots, threads, [bytearray(256) for _ in range(slots)])
    held: list[list[Any]] = [[] for _ in range(threads)]
    for tid in range(threads):
        while len(held[tid]) < batch:
            take(batch - len(held[tid]), tid, held[tid])

    def steps(tid: int, n: int) -> None:
        mine = held[tid]
        for _ in range(n):
            put(mine, tid)
            mine.clear()
            while len(mine) < batch:
                take(batch - len(mine), tid, mine)

    def run(n: int) -> float:
        if threads == 1:
            t0 = time.perf_counter_ns()
            steps(0, n)
            return (time.perf_counter_ns() - t0) / n
        start = threading.Barrier(threads + 1)

        def worker(tid: int) -> None:
            start.wait()
            steps(tid, n)

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        start.wait()
        t0 = time.perf_counter_ns()
        for t in ts:
            t.join()
        return (time.perf_counter_ns() - t0) / n

    n, samples = calibrated_samples(run, target_ns, repeats)
    return {**spec, "iterations": n, "samples_ns": samples}
