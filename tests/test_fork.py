"""Fork safety: a child made by ``os.fork()`` gets a working pool that never
touches the parent's buffers, whatever other threads, locks or collections were
doing at fork time. Spans every after-fork hook (``_pool``, ``_size_class``,
``_views``), so it is named for the property rather than one module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from iobuf import (
    IMPLEMENTATION,
    BufferPool,
    BufferPoolConfig,
    IoBufMut,
    _views,
    flush_thread_cache,
    page_size,
)
from iobuf._size_class import SizeClass

# Every test here runs on each hot path: the build's, then the facets (see conftest).
pytestmark = pytest.mark.usefixtures("hot_path")

MiB = 1 << 20


# -- fork -------------------------------------------------------------------------------------


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")


def in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; its return value is the child's exit status.

    A child that hangs (a deadlock) is killed by SIGALRM after 30 s, so the test
    fails instead of waiting forever.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            signal.alarm(30)
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_fork
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("size", [512, page_size(), MiB])  # bytearray- and mmap-backed blocks
def test_a_forked_child_reuses_buffers_without_touching_the_parents(size: int) -> None:
    """A forked child allocates the very buffer that was free in the parent (same address, no new one
    created) and writes into it, and the parent's copy still holds the parent's bytes: for
    bytearray-backed and mmap-backed blocks alike, so an anonymous mapping shared with the child
    (MAP_SHARED) fails here."""
    pool = BufferPool(BufferPoolConfig(min_size=512, max_size=MiB, max_per_class=4, alignment=512))
    buf = pool.alloc(size)
    buf.put_slice(b"parent data")
    address = buf.address
    del buf  # free in the parent's cache

    def child() -> int:
        mine = pool.alloc(size)  # the same free buffer, in the child's copy of the pool
        mine.put_slice(b"CHILD WROTE")
        ok = mine.address == address and pool.stats().for_size(mine.capacity).created == 1
        return 0 if ok else 3

    assert in_child(child) == 0
    again = pool.alloc(size)
    again.set_len(11)
    assert again.address == address
    assert again == b"parent data", f"{size}: the child's write reached the parent"


def _pool_locks(pool: BufferPool) -> dict[str, Any]:
    """Every Python lock a pool's operations take, by what it guards (the
    compiled core's own locks are C spin locks, reset by its at-fork handler:
    see the churn test below)."""
    locks = {"oversized counter": pool._oversized_count._lock, "close": pool._close_lock}
    if IMPLEMENTATION == "python":
        locks["creation"] = pool._classes[0].shared._lock
        locks["first export"] = _views._export_lock
    return locks


@needs_fork
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("which", ["creation", "oversized counter", "close", "first export"])
def test_a_lock_held_by_another_thread_at_fork_time_does_not_hang_the_child(which: str) -> None:
    """A forked child gets fresh copies of every lock the pool takes: one that
    another thread of the parent held at fork time (it never releases it in
    the child) must not hang creation, oversized requests, exports or close."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(8))
    locks = _pool_locks(pool)
    if which not in locks:
        pytest.skip(f"the {IMPLEMENTATION} core has no Python lock for {which}")
    lock = locks[which]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            release.wait()

    t = threading.Thread(target=hold)
    t.start()
    holding.wait()
    try:

        def child() -> int:
            bufs = [pool.alloc(1024) for _ in range(3)]  # creates buffers
            view = bufs[0].as_memoryview()  # the first export of a buffer
            big = pool.alloc(1 << 20)  # oversized: counted, then a fallback buffer
            ok = all(b.is_pooled for b in bufs) and not big.is_pooled and len(view) == 0
            ok = ok and pool.stats().oversized_total == 1
            pool.close()
            return 0 if ok else 3

        assert in_child(child) == 0
    finally:
        release.set()
        t.join()
    assert pool.alloc(1024).is_pooled  # the parent is unaffected


@needs_fork
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forking_while_another_thread_churns_the_pool_leaves_the_child_working() -> None:
    """Forks taken at random points of another thread's allocate/return/flush
    churn (so it may hold a size class's lock, or be mid-refill or mid-spill):
    every child allocates, creates, returns, trims and closes without hanging."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(64).with_thread_cache_capacity(8))
    started, stop = threading.Event(), threading.Event()

    def churn() -> None:
        started.set()
        while not stop.is_set():
            held = [pool.alloc(1024) for _ in range(12)]
            del held
            flush_thread_cache()

    def child() -> int:
        bufs = [pool.alloc(1024) for _ in range(20)] + [pool.alloc(4096)]
        ok = all(b.is_pooled for b in bufs)
        del bufs
        flush_thread_cache()
        pool.trim()
        pool.close()
        return 0 if ok else 3

    t = threading.Thread(target=churn)
    t.start()
    started.wait()
    try:
        assert [in_child(child) for _ in range(10)] == [0] * 10
    finally:
        stop.set()
        t.join()
    assert pool.alloc(1024).is_pooled


_FORK_IN_A_FINALIZER = """
import gc, os
from iobuf import BufferPool, BufferPoolConfig, Exhausted

pool = BufferPool(BufferPoolConfig(min_size=4096, max_size=4096, max_per_class=2))
saved = []

class Forker:
    child = False
    def __init__(self): self.me = self
    def __del__(self): Forker.child = os.fork() == 0

class Rescuer:
    def __init__(self, held): self.held = held; self.me = self
    def __del__(self): saved.append(self.held)

f = Forker()  # finalized first: the rest of the collection runs in both processes
buf = pool.try_alloc(4096); buf.put_slice(b"A" * 4096)
Rescuer(buf); del buf, f
gc.collect()
if not Forker.child:
    os.wait()  # one line at a time on the shared stdout
back = saved.pop()
view = back.as_memoryview(); del back
held = []
while True:
    try:
        other = pool.try_alloc(4096)
    except Exhausted:
        break
    other.put_slice(b"B" * 4096); held.append(other)
print("child" if Forker.child else "parent", len(held), bytes(view[:4]).decode(), flush=True)
if Forker.child:
    os._exit(0)
"""


@needs_fork
def test_a_fork_from_a_finalizer_inside_a_collection_keeps_the_safety_rule_in_the_child() -> None:
    """A finalizer may fork while the collector runs; the child goes on with that
    collection, so its remaining finalizers must still park (the at-fork hook used
    to clear the mark): a resurrected owner's buffer is not reissued in either process."""
    result = subprocess.run(
        [sys.executable, "-c", _FORK_IN_A_FINALIZER], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child 1 AAAA", "parent 1 AAAA"], result.stdout


@pytest.mark.pure_core
@needs_fork
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_retires_the_facets_of_the_parents_other_threads() -> None:
    """A thread of the child may get the ident of one of the parent's other
    threads: their facets (the free-threaded fast path) must not stay theirs."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(8))
    mine = pool._thread_facets()
    theirs: list[IoBufMut] = []
    their_facets: list[SizeClass] = []
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        their_facets.extend(pool._thread_facets())
        theirs.append(pool.try_alloc(1024))
        ready.set()
        done.wait()

    t = threading.Thread(target=hold)
    t.start()
    ready.wait()
    other = their_facets[0]
    try:

        def child() -> int:
            ok = other.owner == -1 and other.cache is None
            ok = ok and mine[0].owner == threading.get_ident() and mine[0].cache is not None
            # The buffer the parent's other thread held comes back to this thread.
            theirs.clear()
            bufs = [pool.try_alloc(1024) for _ in range(8)]  # all 8 buffers, none stranded
            ok = ok and all(b.is_pooled for b in bufs)
            return 0 if ok else 3

        assert in_child(child) == 0
        assert other.owner == t.ident  # the parent is unaffected
    finally:
        done.set()
        t.join()
    assert other.owner == -1  # retired when its thread exited
