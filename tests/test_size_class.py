"""Thread caches and the shared freelist: the seed's two-level allocator, with real threads."""

from __future__ import annotations

import gc
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import cast

import pytest

from iobuf import IMPLEMENTATION, BufferPool, Exhausted, IoBuf, IoBufMut, flush_thread_cache
from iobuf._size_class import _FACET_SHARES, RetireFacets, SizeClass

from .helpers import FREE_THREADED, PAGE, allocated, available, class_stats, config, mapped

# Every test here runs on each hot path: the build's, then the facets (see conftest).
pytestmark = pytest.mark.usefixtures("hot_path")


def shared_len(pool: BufferPool, size: int) -> int:
    """Buffers parked in the shared freelist of ``size``'s class."""
    return class_stats(pool, size).global_free


def local_len(pool: BufferPool, size: int) -> int:
    """Buffers in the calling thread's cache for ``size``'s class."""
    return class_stats(pool, size).local_free


def run_in_thread(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a fresh thread, join it, and re-raise what it raised."""
    result: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return result[0] if result else None


@pytest.mark.pure_core
def test_stripe_count_follows_parallelism_capped_by_capacity() -> None:
    """64 slots x 16 threads -> 16 stripes; 12 x 9 -> 8; disabling caches keeps striping."""

    def stripes(pool: BufferPool) -> int:
        return pool._classes[0].shared.mask + 1

    assert stripes(BufferPool(config(PAGE, PAGE, 64, parallelism=16))) == 16
    assert stripes(BufferPool(config(PAGE, PAGE, 12, parallelism=9))) == 8
    assert stripes(BufferPool(config(PAGE, PAGE, 64, parallelism=16).with_thread_cache_disabled())) == 16
    assert stripes(BufferPool(config(PAGE, PAGE, 64, parallelism=8).with_thread_cache_capacity(7))) == 8
    for capacity, parallelism, expected in [(1, 1, 1), (2, 2, 2), (3, 4, 2), (4, 4, 4), (16, 8, 8)]:
        pool = BufferPool(config(PAGE, PAGE, capacity, parallelism=parallelism))
        assert stripes(pool) == expected, (capacity, parallelism)


def test_disabled_cache_sends_every_return_to_the_shared_list() -> None:
    """With caching off nothing stays in the thread; the return is visible to all."""
    pool = BufferPool(config(PAGE, PAGE, 2).with_thread_cache_disabled())
    assert class_stats(pool, PAGE).thread_cache_capacity == 0
    buf = pool.try_alloc(PAGE)
    del buf
    assert (local_len(pool, PAGE), shared_len(pool, PAGE)) == (0, 1)


def test_automatic_cache_off_keeps_returns_from_other_threads_visible() -> None:
    """When the auto cache resolves to 0, a worker's returns are reusable while it still runs."""
    pool = BufferPool(config(PAGE, PAGE, 2, parallelism=8))
    assert class_stats(pool, PAGE).thread_cache_capacity == 0
    handoff: queue.Queue[list[object]] = queue.Queue()
    returned = threading.Event()
    release = threading.Event()
    handoff.put([pool.try_alloc(PAGE), pool.try_alloc(PAGE)])

    def worker() -> None:
        bufs = handoff.get()
        bufs.clear()  # both buffers are dropped in this thread
        returned.set()
        release.wait()

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert returned.wait(10)
        first = pool.try_alloc(PAGE)
        second = pool.try_alloc(PAGE)
        assert first.is_pooled and second.is_pooled
    finally:
        release.set()
        t.join()


def test_flush_moves_every_cached_buffer_to_the_shared_lists() -> None:
    """flush_thread_cache() empties the caller's caches of every class."""
    pool = BufferPool(config(PAGE, PAGE * 2, 8).with_thread_cache_capacity(4))
    small, large = pool.try_alloc(PAGE), pool.try_alloc(PAGE + 1)
    del small, large
    assert (local_len(pool, PAGE), local_len(pool, PAGE + 1)) == (1, 1)
    assert (shared_len(pool, PAGE), shared_len(pool, PAGE + 1)) == (0, 0)
    flush_thread_cache()
    assert (local_len(pool, PAGE), local_len(pool, PAGE + 1)) == (0, 0)
    assert (shared_len(pool, PAGE), shared_len(pool, PAGE + 1)) == (1, 1)


def test_full_small_cache_sends_the_incoming_buffer_to_the_shared_list() -> None:
    """Capacity 1: the first return stays local, the second goes to the shared list."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    t1, t2 = pool.try_alloc(PAGE), pool.try_alloc(PAGE)
    del t1
    assert (shared_len(pool, PAGE), local_len(pool, PAGE)) == (0, 1)
    del t2
    assert (shared_len(pool, PAGE), local_len(pool, PAGE)) == (1, 1)
    assert available(pool, PAGE) == 2


def test_small_cache_overflow_keeps_the_hot_buffer_local() -> None:
    """Reuse order after an overflow: the cached buffer first, then the shared one."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    t1, t2 = pool.try_alloc(PAGE), pool.try_alloc(PAGE)
    a1, a2 = t1.address, t2.address
    del t1, t2
    reused_local = pool.try_alloc(PAGE)
    reused_shared = pool.try_alloc(PAGE)
    assert (reused_local.address, reused_shared.address) == (a1, a2)


def test_large_cache_spills_half_and_refills_half() -> None:
    """Capacity >= 4: overflow spills cap/2 in one batch; a miss refills cap/2 - 1."""
    pool = BufferPool(config(PAGE, PAGE, 16).with_thread_cache_capacity(8))
    cap = 8
    bufs = [pool.try_alloc(PAGE) for _ in range(cap + 1)]
    bufs.clear()
    assert local_len(pool, PAGE) == cap // 2 + 1
    assert shared_len(pool, PAGE) == cap // 2
    reused = [pool.try_alloc(PAGE) for _ in range(cap // 2 + 1)]
    assert (local_len(pool, PAGE), shared_len(pool, PAGE)) == (0, cap // 2)
    refilled = pool.try_alloc(PAGE)
    assert (local_len(pool, PAGE), shared_len(pool, PAGE)) == (cap // 2 - 1, 0)
    assert len({b.address for b in [*reused, refilled]}) == cap // 2 + 2


def test_refill_stops_when_the_shared_list_runs_empty() -> None:
    """A batch refill with one shared buffer hands it out and caches nothing."""
    pool = BufferPool(config(PAGE, PAGE, 8).with_thread_cache_capacity(4))
    buf = pool.try_alloc(PAGE)
    del buf
    flush_thread_cache()
    assert shared_len(pool, PAGE) == 1
    again = pool.try_alloc(PAGE)
    assert (local_len(pool, PAGE), shared_len(pool, PAGE)) == (0, 0)
    assert class_stats(pool, PAGE).created == 1
    del again


@pytest.mark.pure_core
def test_shared_list_returns_each_buffer_once() -> None:
    """Two parked buffers come out once each, with their own memory; then the list is empty."""
    pool = BufferPool(config(64, 64, 2, alignment=64, thread_cache_capacity=1))
    shared = pool._classes[0].shared
    a, b = pool.try_alloc(64), pool.try_alloc(64)
    addresses = {a.address, b.address}
    del a, b
    flush_thread_cache()
    taken = [shared.take(0), shared.take(0)]
    assert shared.take(0) is None
    cls = pool._classes[0]
    assert {cls.addresses[id(mv)] for mv in taken if mv is not None} == addresses
    for mv in taken:
        assert mv is not None
        shared.put(mv, 0)


def test_outstanding_buffers_keep_their_size_class_alive() -> None:
    """A buffer holds its class (not the pool); the class goes when the last buffer does."""
    pool = BufferPool(config(64, 64, 2, alignment=64))
    buf = pool.try_alloc(64)
    cls_ref = weakref.ref(pool._classes[0])
    del pool
    gc.collect()
    assert cls_ref() is not None
    del buf
    flush_thread_cache()
    gc.collect()
    assert cls_ref() is None


@pytest.mark.usefixtures("contended")
def test_many_threads_allocate_freeze_clone_and_drop() -> None:
    """10 threads x 1000 rounds of alloc/freeze/clone/drop: nothing raises, at most
    max_per_class buffers are created, and all are free again once the threads exit.
    Runs on GIL builds too: with a 1 us switch interval a thread switch lands inside
    the pure-Python cache and shared-list code, which is where a lost or doubled
    buffer would come from."""
    pool = BufferPool(config(PAGE, PAGE, 100))
    start = threading.Barrier(10)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            for _ in range(1000):
                frozen = pool.try_alloc(PAGE).freeze()
                clones = [frozen.clone() for _ in range(5)]
                del frozen
                clones.clear()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = class_stats(pool, PAGE)
    assert 1 <= stats.created <= 100
    # Every worker exited, so its cache flushed: every buffer is free again.
    assert stats.global_free + stats.local_free == stats.created
    assert pool.try_alloc(PAGE).is_pooled


def test_buffers_return_to_the_cache_of_the_thread_that_finalizes_them() -> None:
    """50 buffers frozen here and dropped in another thread: each returns to exactly one cache.

    With a GIL the dropping thread runs the last owner's finalizer, so all 50
    land in its cache. Free-threaded CPython (biased reference counting) hands
    the deallocation of an object dropped by a thread that did not create it
    back to its creator (here, this thread) to run at its next check, or runs
    it in whichever thread collects garbage first: each buffer then lands in
    the receiver's cache or in this one. On both builds none is lost and none
    is free twice: the 50 are all free again and are reused without creating more.
    """
    pool = BufferPool(config(PAGE, PAGE, 100))
    inbox: queue.Queue[IoBuf | None] = queue.Queue()
    for _ in range(50):
        inbox.put(pool.try_alloc(PAGE).freeze())
    inbox.put(None)

    def receiver() -> tuple[int, int]:
        while (item := inbox.get()) is not None:
            del item
        return local_len(pool, PAGE), shared_len(pool, PAGE)

    in_receiver_cache, shared_then = cast(tuple[int, int], run_in_thread(receiver))
    gc.collect()  # free-threaded: run any deallocation still deferred to this thread
    stats = class_stats(pool, PAGE)
    assert stats.created == 50
    assert shared_then == 0  # nothing overflowed: every return was to a cache
    if FREE_THREADED:
        assert 0 <= in_receiver_cache <= 50
        # The receiver's share went to the shared list when it exited; the rest is here.
        assert stats.global_free == in_receiver_cache
        assert stats.local_free == 50 - in_receiver_cache
    else:
        assert in_receiver_cache == 50
        assert (stats.global_free, stats.local_free) == (50, 0)  # flushed on the receiver's exit
    reused = [pool.try_alloc(PAGE) for _ in range(50)]
    assert len({b.address for b in reused}) == 50
    assert class_stats(pool, PAGE).created == 50


def test_thread_exit_flushes_its_cache() -> None:
    """A buffer cached by a thread is in the shared list once the thread has exited."""
    pool = BufferPool(config(PAGE, PAGE, 1, thread_cache_capacity=1))

    def worker() -> None:
        buf = pool.try_alloc(PAGE)
        del buf
        assert local_len(pool, PAGE) == 1

    run_in_thread(worker)
    assert (shared_len(pool, PAGE), local_len(pool, PAGE)) == (1, 0)
    assert pool.try_alloc(PAGE).is_pooled


def test_two_pools_in_one_thread_never_share_a_cache() -> None:
    """Equal class sizes in two pools keep separate caches and separate memory."""
    p1 = BufferPool(config(PAGE, PAGE, 2))
    p2 = BufferPool(config(PAGE, PAGE, 2))
    b1 = p1.try_alloc(PAGE)
    a1 = b1.address
    del b1
    b2 = p2.try_alloc(PAGE)
    assert b2.address != a1
    assert (local_len(p1, PAGE), local_len(p2, PAGE)) == (1, 0)
    assert class_stats(p2, PAGE).created == 1


def test_close_clears_the_calling_threads_cache_only() -> None:
    """close() frees the caller's cached buffers; another thread's cache flushes on its exit."""
    pool = BufferPool(config(PAGE, PAGE, 4).with_thread_cache_capacity(2))
    parked = threading.Event()
    closed = threading.Event()
    memory: list[int] = []

    def worker() -> None:
        buf = pool.try_alloc(PAGE)
        memory.append(buf.address)
        del buf
        parked.set()
        closed.wait()

    t = threading.Thread(target=worker)
    t.start()
    assert parked.wait(10)
    mine = pool.try_alloc(PAGE)
    del mine
    assert local_len(pool, PAGE) == 1
    pool.close()
    assert local_len(pool, PAGE) == 0
    assert mapped(memory[0])  # still cached by the live worker
    closed.set()
    t.join()
    gc.collect()
    assert not mapped(memory[0])  # flushed into a closed class: freed
    assert allocated(pool, PAGE) == class_stats(pool, PAGE).created


@pytest.mark.usefixtures("contended")
@pytest.mark.parametrize("capacity", [0, 1, 3, 4, 9])
def test_counts_add_up_after_worker_threads_exit(capacity: int) -> None:
    """created == shared + cached for every cache size once all threads have gone.
    Runs on GIL builds too: spills and refills are several steps each, which the
    1 us switch interval splits between threads; a buffer lost or counted twice
    there breaks the equation."""
    pool = BufferPool(config(PAGE, PAGE, 32, thread_cache_capacity=capacity))
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for i in range(200):
            held = [pool.try_alloc(PAGE) for _ in range(i % 5 + 1)]
            held.clear()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = class_stats(pool, PAGE)
    # Once, in a full CI run on 3.13 (facets path, capacity 9), 5 of 10 buffers
    # were missing right after the joins; 52 reruns did not reproduce it. Until
    # that is explained, a late thread teardown gets 2 s; a buffer that never
    # comes back still fails.
    deadline = time.monotonic() + 2.0
    while stats.global_free + stats.local_free != stats.created and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = class_stats(pool, PAGE)
    assert stats.global_free + stats.local_free == stats.created
    assert stats.created <= 32


# -- facets (the free-threaded hot path; see _size_class, "Facets") ------------------------


def facets_of(pool: BufferPool) -> tuple[SizeClass, ...]:
    """The calling thread's facets of ``pool``'s classes (made if missing)."""
    try:
        kept = pool._local.facets
    except AttributeError:
        return pool._thread_facets()
    assert isinstance(kept[-1], RetireFacets)
    return tuple(kept[:-1])


@pytest.mark.pure_core
def test_a_facet_shares_its_class_and_retires_with_its_thread() -> None:
    """A facet shares all the class's state objects and its thread's cache;
    the thread's exit retires it: no fast path, no cache held."""
    pool = BufferPool(config(64, 128, 4, alignment=64).with_scrub_on_return(True))
    got: list[SizeClass] = []

    def worker() -> None:
        facets = facets_of(pool)
        assert facets_of(pool) == facets  # made once per thread
        for f, cls in zip(facets, pool._classes, strict=True):
            assert f is not cls and f.primary is cls and cls.primary is None
            for name in _FACET_SHARES:
                assert getattr(f, name) is getattr(cls, name), name
            assert f.owner == threading.get_ident() and f.cache is cls.local.cache
            assert f.cache_capacity == cls.cache_capacity == -1  # scrubbing: always the slow path
        got.extend(facets)

    run_in_thread(worker)
    assert len(got) == 2
    for f in got:
        assert f.owner == -1 and f.cache is None
    # A buffer of a retired facet still finds the dropping thread's cache.
    mv = got[0]._create()
    assert mv is not None
    got[0].give_back(mv)
    assert local_len(pool, 64) == 1
    pool.close()


@pytest.mark.pure_core
def test_a_second_set_of_facets_retires_the_first() -> None:
    """What a signal handler allocating during the thread's first allocation
    would do: the tuple it stored is replaced, and its facets retire."""
    pool = BufferPool(config(64, 64, 4, alignment=64))
    first = pool._thread_facets()
    second = pool._thread_facets()
    assert first[0].owner == -1 and first[0].cache is None
    assert second[0].owner == threading.get_ident() and facets_of(pool) == second


@pytest.mark.pure_core
def test_the_pools_death_retires_every_threads_facets() -> None:
    """Dropping the last reference to a pool retires the calling thread's facets (owner -1, no cache)
    and closes the classes' shared lists, so a facet kept alive elsewhere can neither cache buffers
    of a dead pool nor hand them out."""
    pool = BufferPool(config(64, 64, 4, alignment=64))
    facets = facets_of(pool)
    cls = pool._classes[0]
    del pool
    gc.collect()
    assert facets[0].owner == -1 and facets[0].cache is None
    assert cls.shared.closed


@pytest.mark.pure_core
def test_close_reaches_every_facet() -> None:
    """close() sets the cache capacity of every thread's facets to -1, including those of a thread that
    is alive and idle at the time, so no thread keeps caching returns into a closed class."""
    pool = BufferPool(config(64, 64, 4, alignment=64))
    facets = facets_of(pool)
    assert facets[0].cache_capacity == pool._classes[0].cache_capacity > 0
    in_thread: list[SizeClass] = []
    ready, go = threading.Event(), threading.Event()

    def worker() -> None:
        in_thread.extend(facets_of(pool))
        ready.set()
        go.wait()

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    pool.close()
    assert facets[0].cache_capacity == -1 and in_thread[0].cache_capacity == -1
    go.set()
    t.join()
    del pool._local.facets  # what the thread's exit does
    assert facets[0].owner == -1 and facets[0].cache is None
    in_thread.clear()
    del facets
    gc.collect()
    assert not pool._classes[0].facets  # weak references that remove themselves


@pytest.mark.pure_core
@pytest.mark.usefixtures("contended")
def test_facets_made_while_the_class_closes_end_closed() -> None:
    """close() racing threads' first allocations: every facet ends at -1 (a facet that
    copied the class's limit after close() stored -1 would cache returns into a closed
    class). Runs on GIL builds too: making a facet and closing are Python code, so a
    thread switch can fall between a facet's registration and its copy of the limit."""

    def worker(pool: BufferPool, start: threading.Barrier, made: list[SizeClass]) -> None:
        start.wait()
        made.extend(facets_of(pool))

    for _ in range(20):
        pool = BufferPool(config(64, 64, 64, alignment=64))
        made: list[SizeClass] = []
        start = threading.Barrier(5)
        threads = [threading.Thread(target=worker, args=(pool, start, made)) for _ in range(4)]
        for t in threads:
            t.start()
        start.wait()
        pool.close()
        for t in threads:
            t.join()
        assert [f.cache_capacity for f in made] == [-1] * 4


@pytest.mark.pure_core
@pytest.mark.parametrize("how", ["allocating thread", "other thread", "ident reuse"])
def test_a_buffer_lands_in_exactly_one_place_whoever_drops_it(how: str) -> None:
    """A facet-path buffer dropped by the thread that allocated it, by another thread, or by a new
    thread that reuses the dead allocator's ident ends up free in exactly one place (the shared list
    or this thread's cache), never stranded in a dead thread's cache nor counted twice."""
    pool = BufferPool(config(64, 64, 8, alignment=64))
    box: queue.Queue[IoBufMut] = queue.Queue()
    idents: list[int] = []

    def allocate() -> None:
        idents.append(threading.get_ident())
        box.put(pool.try_alloc(64))

    def take_and_drop() -> None:
        box.get()

    if how == "allocating thread":

        def both() -> None:
            allocate()
            take_and_drop()

        run_in_thread(both)
    elif how == "other thread":
        allocate()  # the main thread's facet, dropped in a worker
        run_in_thread(take_and_drop)
    else:
        run_in_thread(allocate)
        buf = box.get()
        assert buf._cls is not None and buf._cls.owner == -1  # the allocator has exited
        held = [buf]
        del buf

        def drop_if_reused() -> bool:
            if threading.get_ident() != idents[0]:
                return False
            held.clear()  # dropped by a thread with the dead allocator's ident
            return True

        # Threads until one gets the dead allocator's ident (glibc reuses them).
        if not any(run_in_thread(drop_if_reused) for _ in range(50)):
            pytest.skip("no thread reused the ident")
    gc.collect()
    # Every buffer is free in exactly one place: the shared list (exited threads)
    # or this thread's cache; none is stranded in a dead thread's cache.
    stats = class_stats(pool, 64)
    assert stats.created == 1 and stats.global_free + stats.local_free == 1


def test_trim_frees_what_the_facet_path_cached() -> None:
    """trim() frees the buffers the calling thread's cache holds, and their creation slots."""
    pool = BufferPool(config(64, 64, 8, alignment=64))
    bufs = [pool.try_alloc(64) for _ in range(4)]
    bufs.clear()
    assert local_len(pool, 64) == 4
    assert pool.trim() == 4 * 64
    stats = class_stats(pool, 64)
    assert (stats.created, stats.global_free, stats.local_free) == (0, 0, 0)
    if IMPLEMENTATION == "python":
        assert facets_of(pool)[0].cache == []


@pytest.mark.usefixtures("contended")
def test_under_threads() -> None:
    """Four threads alternate allocations of two classes, a request that rounds up,
    writes, freezes and drops, 2,000 rounds each: nothing raises and, once they have
    exited, every created buffer is free again in each class. Runs on GIL builds too
    (with a 1 us switch interval): refills and spills move buffers in several steps
    and the creation count is a read-modify-write under a lock, so a thread switch
    between bytecodes loses or duplicates a buffer if either is wrong, and the final
    count shows it."""
    pool = BufferPool(config(64, 128, 16, alignment=64))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(2000):
                a = pool.try_alloc(64 if i % 2 else 128)
                b = pool.try_alloc(100)
                del a
                b.put_slice(b"x")
                frozen = b.freeze()
                del frozen
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    gc.collect()
    for size in (64, 128):
        stats = class_stats(pool, size)
        assert stats.global_free + stats.local_free == stats.created


@pytest.mark.pure_core
def test_after_fork_the_child_retires_other_threads_facets() -> None:
    """CPython usually clears the parent's other threads in the child (which
    retires their facets); the class's after-fork hook does it regardless."""
    pool = BufferPool(config(64, 64, 4, alignment=64))
    mine = facets_of(pool)[0]
    theirs: list[SizeClass] = []
    ready, done = threading.Event(), threading.Event()

    def worker() -> None:
        theirs.extend(facets_of(pool))
        ready.set()
        done.wait()

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    try:
        pool._classes[0].after_fork_in_child()  # what the child runs
        assert theirs[0].owner == -1 and theirs[0].cache is None
        assert mine.owner == threading.get_ident() and mine.cache is not None
    finally:
        done.set()
        t.join()


@pytest.mark.parametrize("order", ["pool_first", "finalizer_first"])
def test_allocating_in_a_threads_teardown_loses_nothing(order: str) -> None:
    """A finalizer in the thread's own threading.local allocates while the thread
    tears down (its pool facets already retired). Nothing may be parked in a cache
    nobody flushes, even when a later thread gets the dead thread's ident."""
    pool = BufferPool(config(PAGE, PAGE, 64, thread_cache_capacity=8))
    user_local = threading.local()
    escaped: list[IoBufMut] = []

    class Goodbye:
        def __del__(self) -> None:
            b = pool.try_alloc(PAGE)  # say, a last message
            del b
            escaped.append(pool.try_alloc(PAGE))  # and one handed to another thread

    def worker() -> None:
        if order == "pool_first":
            b = pool.try_alloc(PAGE)
            del b
            user_local.goodbye = Goodbye()
        else:
            user_local.goodbye = Goodbye()
            b = pool.try_alloc(PAGE)
            del b

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    gc.collect()
    assert len(escaped) == 1
    # Drop the escaped buffer in a thread with the dead thread's ident when we get one.
    for _ in range(50):
        x = threading.Thread(target=escaped.clear)
        x.start()
        x.join()
        if not escaped:
            break
    escaped.clear()
    gc.collect()
    flush_thread_cache()
    stats = class_stats(pool, PAGE)
    assert stats.created == stats.global_free + stats.local_free, stats
    if IMPLEMENTATION == "python":  # the pure core's facets of the dead thread are retired
        assert all(f.owner != t.ident for ref in list(pool._classes[0].facets) if (f := ref()) is not None)


class _Garbage:
    """A reference cycle that owns one pooled buffer until the collector frees it."""

    def __init__(self, buf: object) -> None:
        self.buf = buf
        self.me = self


def _distinct_buffers(pool: BufferPool) -> int:
    """Allocate until exhausted; how many distinct buffers the class handed out."""
    held = []
    while True:
        try:
            held.append(pool.try_alloc(PAGE))
        except Exhausted:
            break
    return len({b.address for b in held})


def _collect_inside(pool: BufferPool, operation: str, garbage: int, spacers: int, threshold: int) -> None:
    """Leave ``garbage`` buffers in reference cycles and the cache full (or half
    full), then run ``operation`` with the collector's threshold at ``threshold``
    after ``spacers`` allocations, so that a collection (whose finalizers return
    the garbage's buffers into the cache) starts at one of its allocations."""
    capacity = pool.config.resolve_thread_cache_capacity()
    bufs = [pool.try_alloc(PAGE) for _ in range(pool.config.max_per_class)]
    gc.collect()
    for _ in range(garbage):
        _Garbage(bufs.pop())
    last = bufs.pop()
    for _ in range(capacity if operation == "spill" else capacity // 2):
        bufs.pop()
    spacer: list[list[object]] = [[] for _ in range(spacers)]
    old = gc.get_threshold()
    gc.set_threshold(threshold)
    try:
        del last  # into a full cache: spills half
        if operation == "flush":
            flush_thread_cache()
        elif operation == "trim":
            pool.trim(keep=pool.config.max_per_class)
    finally:
        gc.set_threshold(*old)
    del bufs, spacer


@pytest.mark.skipif(
    FREE_THREADED,
    reason="a free-threaded build starts a collection only at the eval breaker, never inside "
    "a list operation, and each one scans the whole heap: this sweep of hundreds of "
    "collections takes many minutes there",
)
@pytest.mark.parametrize("operation", ["spill", "flush", "trim"])
def test_a_collection_inside_the_cache_code_loses_and_duplicates_nothing(operation: str) -> None:
    """A garbage collection that starts while the cache code copies or empties a
    cache (any allocation can start one) runs finalizers that return buffers into
    that very cache; every buffer must still end up in exactly one place.
    (``flush`` lost or duplicated buffers here: ``batch = self[:]`` then ``del self[:]``.)"""
    for spacers in range(8):
        for threshold in range(1, 8):
            pool = BufferPool(config(PAGE, PAGE, 16, thread_cache_capacity=8))
            _collect_inside(pool, operation, 3, spacers, threshold)
            gc.collect()
            stats = class_stats(pool, PAGE)
            outcome = (stats.created - stats.global_free - stats.local_free, _distinct_buffers(pool))
            assert outcome == (0, 16), (spacers, threshold)
            pool.close()
