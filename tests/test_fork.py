"""Operations: trim (with RSS), scrub on return, allocation tracking, fork safety."""

from __future__ import annotations

import gc
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
    OutstandingBuffer,
    PoolError,
    _views,
    flush_thread_cache,
    page_size,
)
from iobuf._size_class import SizeClass

from .helpers import allocated, available, class_stats

# Every test here runs on each hot path: the build's, then the facets (see conftest).
pytestmark = pytest.mark.usefixtures("hot_path")

MiB = 1 << 20


def rss() -> int:
    """Resident set size of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


# -- trim --------------------------------------------------------------------------------


def test_trim_gives_the_memory_of_a_burst_back_to_the_os() -> None:
    pool = BufferPool(BufferPoolConfig.for_storage().with_max_per_class(64))
    burst = [pool.alloc(MiB) for _ in range(64)]
    for buf in burst:
        buf.put_slice(b"\xa5" * MiB)  # touch every page
    del buf
    gc.collect()
    held = rss()
    burst.clear()  # all 64 back in the pool: still resident
    assert available(pool, MiB) == 64
    assert rss() > held - 16 * MiB
    freed = pool.trim()
    after = rss()
    assert freed == 64 * MiB
    assert held - after >= 48 * MiB, (held >> 20, after >> 20)  # most of the 64 MiB left the process
    stats = class_stats(pool, MiB)
    assert (stats.created, stats.global_free, stats.local_free) == (0, 0, 0)
    again = pool.alloc(MiB)  # the class creates buffers again
    assert again.is_pooled and again.capacity == MiB


def test_trim_keeps_buffers_in_use_and_honours_keep() -> None:
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(16).with_thread_cache_disabled())
    kept = pool.alloc(4096)
    kept.put_slice(b"in use")
    spare = [pool.alloc(4096) for _ in range(5)]
    spare.clear()
    assert pool.trim(keep=2) == 3 * 4096
    stats = class_stats(pool, 4096)
    assert (stats.created, stats.global_free) == (3, 2)
    assert kept == b"in use" and allocated(pool, 4096) == 1
    assert pool.trim() == 2 * 4096
    with pytest.raises(ValueError, match="keep must be >= 0"):
        pool.trim(-1)
    with pytest.raises(TypeError):
        pool.trim("all")  # type: ignore[arg-type]
    pool.close()
    assert pool.trim() == 0


def test_trim_keeps_warm_buffers_from_the_callers_cache_too() -> None:
    """``keep`` counts every free buffer the caller sees; the kept ones move to the shared list."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(16).with_thread_cache_capacity(4))
    spare = [pool.alloc(8192) for _ in range(6)]
    spare.clear()
    stats = class_stats(pool, 8192)
    assert (stats.local_free, stats.global_free) == (4, 2)
    assert pool.trim(keep=3) == 3 * 8192
    stats = class_stats(pool, 8192)
    assert (stats.created, stats.local_free, stats.global_free) == (3, 0, 3)
    assert pool.trim(keep=5) == 0  # fewer free than keep: nothing freed, nothing created
    assert class_stats(pool, 8192).created == 3


def test_trim_reaches_only_the_calling_threads_cache() -> None:
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(16).with_thread_cache_capacity(8))
    ready, done = threading.Event(), threading.Event()

    def worker() -> None:
        bufs = [pool.alloc(2048) for _ in range(3)]
        bufs.clear()  # three buffers in this thread's cache
        ready.set()
        done.wait()

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    mine = [pool.alloc(2048) for _ in range(2)]
    mine.clear()
    assert pool.trim() == 2 * 2048  # ours; the worker's three are out of reach
    assert class_stats(pool, 2048).created == 3
    done.set()
    t.join()  # the worker's cache flushes to the shared list as it exits
    assert pool.trim() == 3 * 2048
    assert class_stats(pool, 2048).created == 0


# -- scrub on return ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["direct", "frozen", "exported view", "other thread"])
def test_scrubbing_zeroes_every_returned_buffer(how: str) -> None:
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(1).with_scrub_on_return(True))
    buf = pool.alloc(1000)
    buf.put_slice(b"secret" * 100)
    address = buf.address
    if how == "frozen":
        frozen = buf.freeze()
        del buf
        del frozen
    elif how == "exported view":
        view = buf.as_memoryview()
        del buf
        assert bytes(view[:6]) == b"secret"  # still readable while the view lives
        del view
    elif how == "other thread":
        t = threading.Thread(target=lambda b=[buf]: b.clear())
        del buf
        t.start()
        t.join()
    else:
        del buf
    gc.collect()
    again = pool.alloc(1000)  # max_per_class=1: the same buffer
    assert again.address == address
    again.set_len(1024)
    assert bytes(again) == bytes(1024)


def test_without_scrubbing_old_bytes_remain() -> None:
    """The control: the same steps without the option leave the data in place."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(1))
    buf = pool.alloc(1000)
    buf.put_slice(b"secret")
    del buf
    again = pool.alloc(1000)
    again.set_len(6)
    assert again == b"secret"


def test_scrubbing_pool_keeps_its_caches_and_counts() -> None:
    pool = BufferPool(
        BufferPoolConfig.for_network()
        .with_max_per_class(32)
        .with_thread_cache_capacity(4)
        .with_scrub_on_return(True)
    )
    bufs = [pool.alloc(1024) for _ in range(10)]
    bufs.clear()
    stats = class_stats(pool, 1024)
    assert stats.local_free == 4 and stats.global_free == 6 and stats.created == 10
    flush_thread_cache()
    assert class_stats(pool, 1024).global_free == 10


# -- allocation tracking ------------------------------------------------------------------


def allocate_for_a_while(pool: BufferPool) -> IoBufMut:
    return pool.alloc(3000)


def test_outstanding_lists_buffers_in_use_with_their_origin() -> None:
    pool = BufferPool(BufferPoolConfig.for_network().with_track_allocations(True))
    leaked = allocate_for_a_while(pool)
    short = pool.alloc(100)
    frozen = short.freeze()
    view = frozen.as_memoryview()
    del short, frozen
    in_thread: list[IoBufMut] = []
    t = threading.Thread(target=lambda: in_thread.append(pool.alloc(5000)), name="loader")
    t.start()
    t.join()
    report = pool.outstanding()
    assert [b.size for b in report] == [4096, 1024, 8192]  # oldest first
    first = report[0]
    assert isinstance(first, OutstandingBuffer) and first.address == leaked.address
    assert "allocate_for_a_while" in first.origin and "_pool.py" not in first.origin
    assert first.thread == "MainThread" and first.age >= report[-1].age >= 0
    assert report[2].thread == "loader"
    assert "4096-byte buffer at 0x" in str(first)
    del view  # the last view of the 1 KiB buffer: no longer outstanding
    in_thread.clear()
    assert [b.size for b in pool.outstanding()] == [4096]
    del leaked
    assert pool.outstanding() == []
    assert isinstance(pool, BufferPool) and repr(pool).startswith("BufferPool(open")


def test_outstanding_needs_tracking() -> None:
    pool = BufferPool(BufferPoolConfig.for_network())
    with pytest.raises(PoolError, match="allocation tracking is off"):
        pool.outstanding()


def test_tracking_survives_close_and_untracked_allocations() -> None:
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(1).with_track_allocations(True))
    held = pool.alloc(2048)
    fallback = pool.alloc(2048)  # exhausted: an untracked heap buffer, not reported
    assert not fallback.is_pooled
    assert len(pool.outstanding()) == 1
    pool.close()
    assert len(pool.outstanding()) == 1  # still in use after close
    del held
    assert pool.outstanding() == []


_NO_PYTHON_CALLER = """
import atexit
from iobuf import BufferPool, BufferPoolConfig

pool = BufferPool(BufferPoolConfig.for_network().with_track_allocations(True))
atexit.register(lambda: print("created", pool.stats().for_size(1024).created))  # runs last
atexit.register(pool.try_alloc, 1000)  # called from C, with no Python frame above it
atexit.register(pool.alloc, 1000)
"""


def test_a_tracking_pool_allocates_with_no_python_caller() -> None:
    """A tracking pool records an allocation made straight from C (an atexit hook,
    a thread entry point): there is no caller frame to skip, which used to raise
    ``ValueError: call stack is not deep enough``."""
    result = subprocess.run(
        [sys.executable, "-c", _NO_PYTHON_CALLER], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.stdout.split() == ["created", "1"]


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
