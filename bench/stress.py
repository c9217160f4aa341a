"""``python -m bench.stress``: many threads doing random work on one pool, checked.

Each worker thread runs a seeded stream of random operations on a shared
:class:`~iobuf.BufferPool`: every allocation variant, writing a canary pattern
unique to that allocation (owner thread and serial number), freeze, slice,
clone, ``copy_to_bytes``, ``try_into_mut`` (rewriting the bytes with a new
canary when it succeeds), exported memoryviews, hand-offs to another thread's
inbox, canary checks and random drops. A worker keeps at most a dozen objects,
so buffers keep cycling through the caches and the shared freelists.

What it reports, and what must hold:

* **corruptions**: a canary that read back different bytes (another owner
  wrote into memory this one still reached, or a buffer was handed out twice
  while live). Must be 0.
* **lost buffers**: after every thread has exited and everything was dropped,
  per class ``created - shared free - cached``. Must be 0.
* **over limit**: classes whose ``created`` passed ``max_per_class``. Must be 0.
* operations per second (all threads together), exhausted and untracked counts
  (an exhausted ``try_alloc`` is expected: the classes are kept small on purpose).

Usage::

    python -m bench.stress                          # 8 threads x 100,000 operations
    python -m bench.stress --threads 4 --ops 20000 --cache 0 --seed 3 --json

Run from the root of a clone with iobuf installed (see :mod:`bench`). Exit
status 0 when the three checks hold, 1 otherwise. The test suite uses
:func:`run_stress` with smaller runs (``tests/test_stress.py``); ``.ci/run``
runs the script briefly on every interpreter.
"""

from __future__ import annotations

import argparse
import gc
import json
import queue
import random
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field

from iobuf import BufferPool, BufferPoolConfig, Exhausted, IoBuf, IoBufMut, Oversized, flush_thread_cache

__all__ = ["StressReport", "canary", "main", "run_stress", "stress_config"]

# Objects a worker holds (IoBufMut, IoBuf or memoryview) and the bytes each must read.
_Held = tuple[object, bytes]
_MAX_HELD = 12


def canary(owner: int, serial: int, size: int) -> bytes:
    """``size`` bytes unique to one allocation: any foreign write changes them."""
    unit = owner.to_bytes(2, "little") + serial.to_bytes(6, "little")
    return (unit * (size // 8 + 1))[:size]


@dataclass
class StressReport:
    """The outcome of one :func:`run_stress` run."""

    threads: int
    ops: int
    seconds: float
    corruptions: int = 0
    lost_buffers: int = 0
    over_limit: int = 0
    exhausted: int = 0
    untracked: int = 0
    handoffs: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """No corruption, no lost buffer, no class over its limit, no unexpected error."""
        return not (self.corruptions or self.lost_buffers or self.over_limit or self.errors)

    def summary(self) -> str:
        return (
            f"{self.threads} threads x {self.ops // max(self.threads, 1):,} ops: "
            f"{self.ops_per_second:,.0f} ops/s ({self.seconds:.2f} s); "
            f"corruptions {self.corruptions}, lost buffers {self.lost_buffers}, "
            f"over limit {self.over_limit}, errors {len(self.errors)}; "
            f"exhausted {self.exhausted}, untracked {self.untracked}, hand-offs {self.handoffs}"
        )


def stress_config(threads: int, cache: int | None = None) -> BufferPoolConfig:
    """Four small classes (64..512 bytes) with few buffers each, so they run dry and refill."""
    return BufferPoolConfig(
        min_size=64,
        max_size=512,
        max_per_class=max(8, 8 * threads),
        alignment=64,
        parallelism=threads,
        thread_cache_capacity=cache,
    )


class _Worker:
    """One thread's operation stream (all state is this thread's, except the inboxes)."""

    def __init__(self, me: int, pool: BufferPool, inboxes: list[queue.SimpleQueue[_Held]], seed: int) -> None:
        self.me = me
        self.pool = pool
        self.inboxes = inboxes
        self.rng = random.Random(seed * 7919 + me)  # noqa: S311 - a reproducible workload
        self.held: list[_Held] = []
        self.serial = 0
        self.corruptions: list[str] = []
        self.exhausted = 0
        self.untracked = 0
        self.handoffs = 0
        self.done = 0
        self.max_size = pool.config.max_size
        # Cumulative probabilities above the 25% that allocates.
        self.menu = (
            (0.33, self.freeze),
            (0.41, self.slice_and_clone),
            (0.45, self.split_front),
            (0.49, self.into_mut),
            (0.54, self.export),
            (0.62, self.hand_off),
            (0.82, self.verify),
            (0.99, self.drop),
            (1.01, self.drop_all),
        )

    def check(self, obj: object, data: bytes, where: str) -> None:
        if bytes(obj) != data:  # type: ignore[call-overload]
            self.corruptions.append(f"thread {self.me}: canary differs ({where})")

    def fresh(self, size: int) -> bytes:
        self.serial += 1
        return canary(self.me, self.serial, size)

    def allocate(self) -> None:
        rng, pool = self.rng, self.pool
        size = rng.choice((1, 40, 64, 100, 128, 200, 256, 300, 512))
        if rng.random() < 0.03:
            size = self.max_size + rng.randrange(1, 200)  # oversized: untracked
        how = rng.randrange(5)
        try:
            if how == 0:
                buf = pool.try_alloc(size)
            elif how == 1:
                buf = pool.alloc(size)
            elif how == 2:
                buf = pool.alloc_len(size)  # length set, contents whatever was there
                buf.set_len(0)
            else:
                buf = pool.try_alloc_zeroed(size) if how == 3 else pool.alloc_zeroed(size)
                if bytes(buf) != bytes(size):
                    self.corruptions.append(f"thread {self.me}: a zeroed allocation was not zero")
                buf.set_len(0)
        except Exhausted:
            self.exhausted += 1
            return
        except Oversized:  # try_alloc* above max_size: expected, nothing to hold
            return
        if not buf.is_pooled:
            self.untracked += 1
        data = self.fresh(size)
        buf.put_slice(data)
        self.held.append((buf, data))

    # -- operations (each picks its own target among the held objects) ---------

    def freeze(self) -> None:
        i = self.rng.randrange(len(self.held))
        obj, data = self.held[i]
        if type(obj) is IoBufMut:
            self.held[i] = (obj.freeze(), data)

    def slice_and_clone(self) -> None:
        obj, data = self.rng.choice(self.held)
        if type(obj) is IoBuf and len(data) > 2:
            a = self.rng.randrange(len(data) // 2)
            b = self.rng.randrange(a, len(data) + 1)
            self.held.append((obj.slice(a, b), data[a:b]))
            self.held.append((obj.clone(), data))

    def split_front(self) -> None:
        """copy_to_bytes: the front comes off as its own view, the rest advances."""
        i = self.rng.randrange(len(self.held))
        obj, data = self.held[i]
        if type(obj) is IoBuf and data:
            n = self.rng.randrange(len(data) + 1)
            front = obj.copy_to_bytes(n)
            self.held[i] = (obj, data[n:])
            self.held.append((front, data[:n]))

    def into_mut(self) -> None:
        """try_into_mut; when this was the only reference, rewrite the bytes."""
        i = self.rng.randrange(len(self.held))
        obj, data = self.held[i]
        if type(obj) is not IoBuf:
            return
        del self.held[i]
        m = obj.try_into_mut()
        del obj
        if m is None:
            return  # shared: dropped here, others still hold it
        self.check(m, data, "after try_into_mut")
        new = self.fresh(len(data))
        with m.as_memoryview() as view:
            view[:] = new
        self.held.append((m, new))

    def export(self) -> None:
        obj, data = self.rng.choice(self.held)
        if type(obj) is IoBuf or type(obj) is IoBufMut:
            self.held.append((obj.as_memoryview(), data))

    def hand_off(self) -> None:
        """To a random thread's inbox (maybe this one's)."""
        obj, data = self.held.pop(self.rng.randrange(len(self.held)))
        self.inboxes[self.rng.randrange(len(self.inboxes))].put((obj, data))
        self.handoffs += 1

    def verify(self) -> None:
        obj, data = self.rng.choice(self.held)
        self.check(obj, data, "held")

    def drop(self) -> None:
        self.held.pop(self.rng.randrange(len(self.held)))

    def drop_all(self) -> None:
        self.held.clear()

    def step(self) -> None:
        op = self.rng.random()
        if op < 0.25 or not self.held:
            self.allocate()
        else:
            for limit, action in self.menu:
                if op < limit:
                    action()
                    break
        self.receive()
        if len(self.held) > _MAX_HELD:
            self.held.pop(0)

    def receive(self) -> None:
        inbox = self.inboxes[self.me]
        while True:
            try:
                obj, data = inbox.get_nowait()
            except queue.Empty:
                return
            self.check(obj, data, "received from another thread")
            self.held.append((obj, data))

    def run(self, ops: int, start: threading.Barrier, errors: list[str]) -> None:
        try:
            start.wait()
            for _ in range(ops):
                self.step()
                self.done += 1
            for obj, data in self.held:
                self.check(obj, data, "at the end")
            self.held.clear()
        except BaseException as exc:  # reported, never silently lost
            errors.append(f"thread {self.me}: {exc!r}\n{traceback.format_exc()}")
            self.held.clear()


def run_stress(pool: BufferPool, threads: int, ops: int, seed: int = 0) -> StressReport:
    """Run ``threads`` workers x ``ops`` operations on ``pool`` and check the outcome.

    Call it with no other users of ``pool``: the lost-buffer count assumes
    everything the workers allocated is dropped by the end.
    """
    if threads < 1 or ops < 0:
        raise ValueError(f"need threads >= 1 and ops >= 0, got {threads} and {ops}")
    inboxes: list[queue.SimpleQueue[_Held]] = [queue.SimpleQueue() for _ in range(threads)]
    workers = [_Worker(n, pool, inboxes, seed) for n in range(threads)]
    start = threading.Barrier(threads)
    errors: list[str] = []
    ts = [threading.Thread(target=w.run, args=(ops, start, errors), name=f"stress-{w.me}") for w in workers]
    began = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = time.perf_counter() - began
    corruptions: list[str] = []
    for box in inboxes:  # sent to a thread after it had finished
        while True:
            try:
                obj, data = box.get_nowait()
            except queue.Empty:
                break
            if bytes(obj) != data:  # type: ignore[call-overload]
                corruptions.append("canary differs (left in an inbox)")
            del obj
    exhausted = sum(w.exhausted for w in workers)
    untracked = sum(w.untracked for w in workers)
    handoffs = sum(w.handoffs for w in workers)
    for w in workers:
        corruptions += w.corruptions
    del workers
    gc.collect()  # free-threaded builds may defer a dropped buffer's release
    flush_thread_cache()
    lost = over = 0
    for c in pool.stats().classes:
        lost += c.created - c.global_free - c.local_free
        over += c.created > c.max_buffers
    report = StressReport(
        threads=threads,
        ops=ops * threads,
        seconds=seconds,
        corruptions=len(corruptions),
        lost_buffers=lost,
        over_limit=over,
        exhausted=exhausted,
        untracked=untracked,
        handoffs=handoffs,
        errors=errors + corruptions[:5],
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ops", type=int, default=100_000, help="operations per thread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=int, default=None, help="thread_cache_capacity (default: derived)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.ops < 0:
        parser.error("--threads must be >= 1 and --ops >= 0")
    pool = BufferPool(stress_config(args.threads, args.cache))
    report = run_stress(pool, args.threads, args.ops, args.seed)
    if args.json:
        print(json.dumps(asdict(report) | {"ops_per_second": report.ops_per_second, "ok": report.ok}))
    else:
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        print(f"python {sys.version.split()[0]}{'' if gil else ' (free-threaded)'}: {report.summary()}")
        for line in report.errors[:5]:
            print(line, file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
