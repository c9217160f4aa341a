"""BufferPool (``_pool``): the seed's pool.rs tests that apply to the Python API, lifecycle,
and the pool operations trim, scrub on return and allocation tracking."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref

import pytest

from iobuf import (
    BufferPool,
    BufferPoolConfig,
    Exhausted,
    IoBuf,
    IoBufMut,
    OutstandingBuffer,
    Oversized,
    PoolClosed,
    PoolError,
    cache_line_size,
    flush_thread_cache,
)

from .helpers import PAGE, allocated, available, class_stats, config, mapped


def test_size_class_rounds_up_to_the_next_power_of_two() -> None:
    """Requests map to the smallest class that fits; above max_size is None."""
    pool = BufferPool(config(PAGE, PAGE * 8, 10))
    assert pool.config.num_classes == 4
    assert pool.size_class(1) == PAGE
    assert pool.size_class(0) == PAGE
    assert pool.size_class(PAGE) == PAGE
    assert pool.size_class(PAGE + 1) == 2 * PAGE
    assert pool.size_class(PAGE * 2) == 2 * PAGE
    assert pool.size_class(PAGE * 4 + 1) == 8 * PAGE
    assert pool.size_class(PAGE * 8 - 1) == 8 * PAGE
    assert pool.size_class(PAGE * 8) == 8 * PAGE
    assert pool.size_class(PAGE * 8 + 1) is None


def test_allocated_buffer_is_empty_with_class_capacity_and_comes_back() -> None:
    """try_alloc gives len 0 and the class capacity; a dropped buffer is reused."""
    pool = BufferPool(config(PAGE, PAGE * 4, 2))
    buf = pool.try_alloc(PAGE)
    assert (len(buf), buf.capacity, buf.is_pooled) == (0, PAGE, True)
    address = buf.address
    del buf
    again = pool.try_alloc(PAGE)
    assert (len(again), again.capacity, again.address) == (0, PAGE, address)


def test_alloc_len_sets_the_readable_length() -> None:
    """alloc_len(100) has len 100; the caller fills it before reading."""
    pool = BufferPool(config(PAGE, PAGE * 4, 2))
    buf = pool.alloc_len(100)
    assert len(buf) == 100
    buf.as_memoryview()[:] = b"\xab" * 100
    assert buf.freeze() == b"\xab" * 100


def test_alloc_zeroed_sets_len_and_zeroes() -> None:
    """alloc_zeroed(100) is 100 zero bytes."""
    pool = BufferPool(config(PAGE, PAGE * 4, 2))
    buf = pool.alloc_zeroed(100)
    assert bytes(buf) == bytes(100)


def test_try_alloc_zeroed_is_pooled_and_zeroed() -> None:
    """try_alloc_zeroed(page) is a pooled page of zeros."""
    pool = BufferPool(config(PAGE, PAGE * 4, 2))
    buf = pool.try_alloc_zeroed(PAGE)
    assert buf.is_pooled
    assert bytes(buf) == bytes(PAGE)


def test_alloc_zeroed_falls_back_to_an_untracked_zeroed_buffer() -> None:
    """With the class exhausted, alloc_zeroed still returns zeros, untracked."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    held = pool.try_alloc(PAGE)
    buf = pool.alloc_zeroed(100)
    assert not buf.is_pooled
    assert bytes(buf) == bytes(100)
    assert buf.capacity == PAGE  # max(length, min_size)
    assert held.is_pooled


def test_alloc_zeroed_rezeroes_a_dirty_reused_buffer() -> None:
    """A reused buffer comes back zeroed on the requested range."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    first = pool.alloc_zeroed(PAGE)
    assert first.is_pooled and bytes(first) == bytes(PAGE)
    first.as_memoryview()[:] = b"\xab" * PAGE
    del first
    second = pool.alloc_zeroed(PAGE)
    assert second.is_pooled
    assert bytes(second) == bytes(PAGE)


def test_alloc_zeroed_zeroes_only_the_requested_range() -> None:
    """Bytes past length may hold an earlier user's data (the seed's contract)."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    first = pool.try_alloc(PAGE)
    first.put_slice(b"\xcd" * PAGE)
    del first
    second = pool.try_alloc_zeroed(10)
    assert bytes(second) == bytes(10)
    second.set_len(PAGE)
    assert bytes(second)[10:] == b"\xcd" * (PAGE - 10)


def test_requests_below_pool_min_size_bypass_the_pool() -> None:
    """Below pool_min_size: untracked, aligned, capacity exactly max(n, 1)."""
    pool = BufferPool(
        BufferPoolConfig(pool_min_size=512, min_size=512, max_size=1024, max_per_class=2, alignment=128)
    )
    buf = pool.try_alloc(200)
    assert not buf.is_pooled
    assert buf.capacity == 200
    assert buf.address % 128 == 0
    zeroed = pool.try_alloc_zeroed(200)
    assert not zeroed.is_pooled
    assert bytes(zeroed) == bytes(200)
    tiny = pool.try_alloc(0)
    assert tiny.capacity == 1 and not tiny.is_pooled
    pooled = pool.try_alloc(512)
    assert pooled.is_pooled and pooled.capacity == 512
    assert class_stats(pool, 512).created == 1


def test_requests_get_the_class_that_fits() -> None:
    """page -> page, page+1 -> 2 pages, 3 pages -> 4 pages."""
    pool = BufferPool(config(PAGE, PAGE * 4, 10))
    assert pool.try_alloc(PAGE).capacity == PAGE
    assert pool.try_alloc(PAGE + 1).capacity == PAGE * 2
    assert pool.try_alloc(PAGE * 3).capacity == PAGE * 4


def test_prefill_creates_every_buffer_up_front() -> None:
    """With prefill, max_per_class allocations succeed at once and the next is exhausted."""
    pool = BufferPool(config(PAGE, PAGE, 5, prefill=True))
    assert class_stats(pool, PAGE).created == 5
    assert class_stats(pool, PAGE).global_free == 5
    bufs = [pool.try_alloc(PAGE) for _ in range(5)]
    assert class_stats(pool, PAGE).created == 5
    with pytest.raises(Exhausted):
        pool.try_alloc(PAGE)
    assert len({b.address for b in bufs}) == 5


def test_storage_preset_serves_its_largest_class() -> None:
    """for_storage() can hand out an 8 MiB page-aligned buffer."""
    pool = BufferPool(BufferPoolConfig.for_storage())
    buf = pool.try_alloc(8 * 1024 * 1024)
    assert buf.capacity == 8 * 1024 * 1024
    assert buf.address % PAGE == 0


def test_repr_and_config_accessor() -> None:
    """repr names the type and class count; config returns what was given."""
    cfg = config(PAGE, PAGE, 2)
    pool = BufferPool(cfg)
    text = repr(pool)
    assert "BufferPool" in text and "num_classes=1" in text and "open" in text
    assert pool.config is cfg
    pool.close()
    assert "closed" in repr(pool)


def test_default_config_is_the_network_preset() -> None:
    """BufferPool() uses for_network()."""
    assert BufferPool().config == BufferPoolConfig.for_network()


def test_freeze_keeps_the_buffer_until_the_iobuf_goes() -> None:
    """A frozen buffer stays allocated while its IoBuf lives and returns after."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 0)
    buf = pool.try_alloc(PAGE)
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (1, 0)
    frozen = buf.freeze()
    assert allocated(pool, PAGE) == 1
    del frozen
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_clones_and_slices_pin_the_buffer_but_empty_slices_do_not() -> None:
    """The buffer returns only when the last clone or non-empty slice goes."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\xaa" * 100)
    frozen = buf.freeze()
    clone = frozen.clone()
    part = frozen.slice(10, 40)
    empty = frozen.slice(10, 10)
    assert len(empty) == 0 and not empty.is_pooled
    del frozen
    assert allocated(pool, PAGE) == 1
    del part
    assert allocated(pool, PAGE) == 1
    del clone
    assert allocated(pool, PAGE) == 0
    del empty


def test_iobuf_copy_to_bytes_ownership() -> None:
    """Zero-length copies do not advance; partial copies pin; a full drain moves ownership."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\x42" * 100)
    src = buf.freeze()
    zero = src.copy_to_bytes(0)
    assert len(zero) == 0 and src.remaining() == 100 and not zero.is_pooled
    partial = src.copy_to_bytes(30)
    assert partial == b"\x42" * 30 and src.remaining() == 70
    rest = src.copy_to_bytes(70)
    assert rest == b"\x42" * 70 and src.remaining() == 0
    assert not src.is_pooled and rest.is_pooled
    empty = src.copy_to_bytes(0)
    assert len(empty) == 0 and not empty.is_pooled
    del src
    assert allocated(pool, PAGE) == 1
    del zero, partial
    assert allocated(pool, PAGE) == 1
    del rest
    assert allocated(pool, PAGE) == 0


def test_iobufmut_copy_to_bytes_ownership() -> None:
    """IoBufMut.copy_to_bytes mirrors the IoBuf ownership rules, without copying."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\x7e" * 100)
    zero = buf.copy_to_bytes(0)
    assert len(zero) == 0 and buf.remaining() == 100
    partial = buf.copy_to_bytes(30)
    assert partial == b"\x7e" * 30 and buf.remaining() == 70
    assert partial.address == buf.address - 30  # same memory, no copy
    rest = buf.copy_to_bytes(70)
    assert rest == b"\x7e" * 70 and buf.remaining() == 0
    assert not buf.is_pooled
    del buf
    assert allocated(pool, PAGE) == 1
    del zero, partial
    assert allocated(pool, PAGE) == 1
    del rest
    assert allocated(pool, PAGE) == 0


def test_iobufmut_after_full_drain_is_an_empty_growable_buffer() -> None:
    """As in the seed, a fully drained IoBufMut becomes an empty heap buffer that accepts writes."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"abc")
    taken = buf.copy_to_bytes(3)
    buf.put_slice(b"more than a page" * 400)
    assert len(buf) == 16 * 400 and taken == b"abc"


def test_converting_a_unique_partial_view_back_to_mut_keeps_the_pooled_memory() -> None:
    """IoBuf -> IoBufMut reuses pooled storage for a unique view that does not cover the buffer."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    assert allocated(pool, PAGE) == 1
    frozen = buf.freeze()
    back = frozen.into_mut()
    assert back.is_pooled
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (1, 0)
    del back
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_converting_a_unique_full_view_back_to_mut_keeps_data_and_memory() -> None:
    """A full, unique pooled IoBuf converts without copying, data intact."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\xee" * PAGE)
    address = buf.address
    frozen = buf.freeze()
    back = frozen.into_mut()
    assert len(back) == PAGE and bytes(back) == b"\xee" * PAGE
    assert back.address == address and back.capacity == PAGE
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (1, 0)
    assert len(frozen) == 0 and not frozen.is_pooled
    del back
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_try_into_mut_recycles_a_unique_full_view() -> None:
    """try_into_mut succeeds for the sole view, keeping len, data and capacity."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\xab" * PAGE)
    recycled = buf.freeze().try_into_mut()
    assert recycled is not None
    assert len(recycled) == PAGE and recycled.capacity == PAGE
    assert bytes(recycled) == b"\xab" * PAGE
    assert allocated(pool, PAGE) == 1
    del recycled
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_try_into_mut_succeeds_for_a_unique_slice_and_fails_while_shared() -> None:
    """A lone slice converts (capacity = size - offset); a cloned view does not and is unchanged."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\xcd" * PAGE)
    frozen = buf.freeze()
    sliced = frozen.slice(1, PAGE)
    del frozen
    recycled = sliced.try_into_mut()
    assert recycled is not None
    assert len(recycled) == PAGE - 1 and recycled.capacity == PAGE - 1
    assert bytes(recycled) == b"\xcd" * (PAGE - 1)
    del recycled
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)

    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\xef" * PAGE)
    frozen = buf.freeze()
    cloned = frozen.clone()
    assert frozen.try_into_mut() is None
    assert len(frozen) == PAGE and frozen.is_pooled
    del cloned, frozen
    assert allocated(pool, PAGE) == 0
    assert available(pool, PAGE) >= 1


def test_into_mut_with_pool_copies_into_the_pool_when_shared() -> None:
    """A shared view converts by copying into a pooled buffer of the given pool."""
    pool = BufferPool(config(PAGE, PAGE * 2, 4))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"xyz")
    frozen = buf.freeze()
    keep = frozen.clone()
    copied = frozen.into_mut_with_pool(pool)
    assert copied.is_pooled and bytes(copied) == b"xyz"
    assert copied.address != keep.address
    assert len(frozen) == 0
    with pytest.raises(TypeError, match="pool"):
        keep.into_mut_with_pool(object())  # type: ignore[arg-type]


def test_into_mut_copies_to_the_heap_when_shared() -> None:
    """into_mut of a shared view returns an unpooled heap copy."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"shared")
    frozen = buf.freeze()
    keep = frozen.clone()
    copied = frozen.into_mut()
    assert not copied.is_pooled and bytes(copied) == b"shared"
    assert keep == b"shared"


def test_exhaustion_and_recovery() -> None:
    """An exhausted class serves again once a buffer comes back."""
    pool = BufferPool(config(PAGE, PAGE, 3))
    b1, b2, b3 = (pool.try_alloc(PAGE) for _ in range(3))
    with pytest.raises(Exhausted):
        pool.try_alloc(PAGE)
    del b1
    b4 = pool.try_alloc(PAGE)
    with pytest.raises(Exhausted):
        pool.try_alloc(PAGE)
    del b2, b3, b4
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 3)
    b5 = pool.try_alloc(PAGE)
    assert available(pool, PAGE) == 2
    assert class_stats(pool, PAGE).exhausted_total == 2
    del b5


def test_try_alloc_raises_oversized_and_exhausted() -> None:
    """The two refusals of try_alloc, each counted."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    with pytest.raises(Oversized):
        pool.try_alloc(PAGE * 10)
    held = [pool.try_alloc(PAGE), pool.try_alloc(PAGE)]
    with pytest.raises(Exhausted):
        pool.try_alloc(PAGE)
    stats = pool.stats()
    assert stats.oversized_total == 1
    assert stats.classes[0].exhausted_total == 1
    assert len(held) == 2


def test_try_alloc_zeroed_raises_the_same_errors() -> None:
    """try_alloc_zeroed refuses like try_alloc."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    with pytest.raises(Oversized):
        pool.try_alloc_zeroed(PAGE * 10)
    held = [pool.try_alloc_zeroed(PAGE), pool.try_alloc_zeroed(PAGE)]
    with pytest.raises(Exhausted):
        pool.try_alloc_zeroed(PAGE)
    assert len(held) == 2


def test_fallback_buffers_are_aligned_untracked_and_leave_counts_alone() -> None:
    """alloc() falls back to aligned untracked memory without touching the pool's counts."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    b1, b2 = pool.try_alloc(PAGE), pool.try_alloc(PAGE)
    exhausted = pool.alloc(PAGE)
    oversized = pool.alloc(PAGE * 10)
    for fb in (exhausted, oversized):
        assert not fb.is_pooled
        assert fb.address % PAGE == 0
    assert oversized.capacity == PAGE * 10
    assert allocated(pool, PAGE) == 2
    del exhausted, oversized
    assert allocated(pool, PAGE) == 2
    del b1, b2
    assert allocated(pool, PAGE) == 0


def test_is_pooled_only_for_tracked_memory() -> None:
    """Pool buffers are pooled; heap, fallback and copied buffers are not."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    assert pool.try_alloc(PAGE).is_pooled
    assert not IoBufMut.with_capacity(100).is_pooled
    assert pool.try_alloc(PAGE).freeze().is_pooled  # an empty frozen buffer keeps its memory
    full = pool.try_alloc(PAGE)
    full.put_slice(b"x")
    assert full.freeze().is_pooled
    assert not pool.alloc(PAGE * 10).freeze().is_pooled
    assert not IoBuf.copy_from_slice(b"hello").is_pooled


def test_buffers_are_aligned_to_the_configured_alignment() -> None:
    """Storage buffers are page-aligned; network buffers cache-line aligned when asked."""
    storage = BufferPool(BufferPoolConfig.for_storage().with_max_per_class(4))
    assert storage.try_alloc(100).address % PAGE == 0
    line = cache_line_size()
    network = BufferPool(BufferPoolConfig.for_network().with_alignment(line).with_max_per_class(4))
    bufs = [network.try_alloc(n) for n in (100, 1024, 5000, 100_000)]
    assert all(b.address % line == 0 for b in bufs)


@pytest.mark.parametrize("alignment", [1, 2, 64, 256, 4096, 8192, 65536])
def test_any_power_of_two_alignment_holds_for_every_class(alignment: int) -> None:
    """Base addresses are multiples of the alignment, small and large classes alike."""
    pool = BufferPool(
        BufferPoolConfig(
            min_size=max(alignment, 64), max_size=max(alignment, 64) * 4, max_per_class=3, alignment=alignment
        )
    )
    bufs = [pool.try_alloc(size) for size in pool.config.class_sizes for _ in range(3)]
    assert all(b.address % alignment == 0 for b in bufs)
    assert len({b.address for b in bufs}) == len(bufs)


def test_buffers_outlive_a_dropped_pool() -> None:
    """Dropping the pool leaves outstanding buffers usable; dropping them is safe."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(bytes(100))
    frozen = buf.freeze()
    pool_ref = weakref.ref(pool)
    del pool
    assert pool_ref() is None
    assert len(frozen) == 100 and frozen == bytes(100)
    del frozen


def test_close_frees_shared_buffers_and_refuses_allocation() -> None:
    """After close(): the free lists are empty, allocations raise PoolClosed, held buffers work."""
    pool = BufferPool(config(PAGE, PAGE, 3))
    b1, b2, b3 = (pool.try_alloc(PAGE) for _ in range(3))
    b3.put_slice(b"still here")
    del b1, b2  # one lands in the thread cache, one in the shared list
    assert available(pool, PAGE) == 2
    pool.close()
    assert available(pool, PAGE) == 0
    assert class_stats(pool, PAGE).created == 3
    for call in (pool.try_alloc, pool.alloc, pool.alloc_len, pool.alloc_zeroed, pool.try_alloc_zeroed):
        with pytest.raises(PoolClosed):
            call(PAGE)
        with pytest.raises(PoolClosed):
            call(-1)
    assert bytes(b3) == b"still here"
    del b3
    assert available(pool, PAGE) == 0  # freed, not reused
    pool.close()  # idempotent


def test_a_buffer_returned_after_close_is_not_reused() -> None:
    """Memory that comes back to a closed pool is dropped (nothing keeps it)."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    buf = pool.try_alloc(PAGE)
    address = buf.address
    assert mapped(address)  # the pooled memory is a mapping of its own
    pool.close()
    del buf
    gc.collect()
    assert not mapped(address)


def test_context_manager_closes() -> None:
    """A with block closes the pool on exit and refuses to reopen it."""
    with BufferPool(config(PAGE, PAGE, 1)) as pool:
        assert pool.try_alloc(PAGE).is_pooled
    assert pool.closed
    with pytest.raises(PoolClosed), pool:
        pass


def test_dropping_the_pool_frees_its_free_buffers() -> None:
    """The shared free buffers of a pool nobody references are freed."""
    pool = BufferPool(config(PAGE, PAGE, 1, thread_cache_capacity=0))
    buf = pool.try_alloc(PAGE)
    address = buf.address
    del buf
    assert mapped(address)  # free in the pool, not freed
    del pool
    gc.collect()
    assert not mapped(address)


# Pool operations: trim, scrub on return, allocation tracking; each runs on every hot path
# (the build's, then the facets: see conftest).

MiB = 1 << 20


def rss() -> int:
    """Resident set size of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


# -- trim --------------------------------------------------------------------------------


@pytest.mark.usefixtures("hot_path")
def test_trim_gives_the_memory_of_a_burst_back_to_the_os() -> None:
    """After a burst of 64 one-MiB buffers comes back to the pool, the memory stays resident until
    trim(), which frees all 64 MiB of it (RSS drops by at least 48 MiB), resets the class's counts
    to zero, and leaves a class that creates buffers again."""
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


@pytest.mark.usefixtures("hot_path")
def test_trim_keeps_buffers_in_use_and_honours_keep() -> None:
    """trim(keep=2) frees only free buffers beyond the two kept, never one in use (its bytes stay), and
    returns the bytes freed; a negative or non-int keep is refused; after close() trim frees
    nothing."""
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


@pytest.mark.usefixtures("hot_path")
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


@pytest.mark.usefixtures("hot_path")
def test_trim_reaches_only_the_calling_threads_cache() -> None:
    """trim() frees what the shared list and the calling thread's cache hold, not another live thread's
    cache (which it cannot reach safely); once that thread exits, its flushed buffers are trimmable."""
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


@pytest.mark.usefixtures("hot_path")
@pytest.mark.parametrize("how", ["direct", "frozen", "exported view", "other thread"])
def test_scrubbing_zeroes_every_returned_buffer(how: str) -> None:
    """With scrub_on_return, a buffer that comes back directly, through its last IoBuf, through its
    last exported view, or from another thread is all zeros when handed out again (the same
    address), so no bytes leak to the next user."""
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


@pytest.mark.usefixtures("hot_path")
def test_without_scrubbing_old_bytes_remain() -> None:
    """The control: the same steps without the option leave the data in place."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(1))
    buf = pool.alloc(1000)
    buf.put_slice(b"secret")
    del buf
    again = pool.alloc(1000)
    again.set_len(6)
    assert again == b"secret"


@pytest.mark.usefixtures("hot_path")
def test_scrubbing_pool_keeps_its_caches_and_counts() -> None:
    """A scrubbing pool still parks returns in the thread cache up to its capacity (4) and the rest on
    the shared list, with created matching, and a flush moves them all to the shared list."""
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


@pytest.mark.usefixtures("hot_path")
def test_outstanding_lists_buffers_in_use_with_their_origin() -> None:
    """With tracking, outstanding() lists the pooled buffers in use oldest first, each with its size,
    address, the caller that allocated it (not a frame inside iobuf), the allocating thread's name
    and its age; a buffer kept alive only by a memoryview is still listed until the view goes, and
    nothing is listed once all are dropped."""
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
    # No frame of the library itself (this file is test_pool.py, hence the directory).
    assert "allocate_for_a_while" in first.origin and "iobuf/_pool.py" not in first.origin
    assert first.thread == "MainThread" and first.age >= report[-1].age >= 0
    assert report[2].thread == "loader"
    assert "4096-byte buffer at 0x" in str(first)
    del view  # the last view of the 1 KiB buffer: no longer outstanding
    in_thread.clear()
    assert [b.size for b in pool.outstanding()] == [4096]
    del leaked
    assert pool.outstanding() == []
    assert isinstance(pool, BufferPool) and repr(pool).startswith("BufferPool(open")


@pytest.mark.usefixtures("hot_path")
def test_outstanding_needs_tracking() -> None:
    """outstanding() on a pool without allocation tracking raises PoolError saying tracking is off,
    rather than returning an empty (misleading) list."""
    pool = BufferPool(BufferPoolConfig.for_network())
    with pytest.raises(PoolError, match="allocation tracking is off"):
        pool.outstanding()


@pytest.mark.usefixtures("hot_path")
def test_tracking_survives_close_and_untracked_allocations() -> None:
    """An exhausted alloc's untracked fallback is not listed by outstanding(); a tracked buffer stays
    listed after close() while it is still in use, and goes when dropped."""
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


@pytest.mark.usefixtures("hot_path")
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
