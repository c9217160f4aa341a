"""The safety rule: pooled memory is reused only when nothing can reach it any more."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest

from iobuf import IMPLEMENTATION, BufferPool, Exhausted, IoBuf, IoBufMut

from .helpers import FREE_THREADED, PAGE, allocated, available, config

#: Where a collection can run inside an allocation made by the compiled core's C
#: code: on 3.11 an allocation collects at once; 3.12+ only schedules the
#: collection for the interpreter's next check between bytecodes, which C code
#: never reaches mid-operation, so these interleavings cannot happen there.
collects_inside_c_allocations = pytest.mark.skipif(
    IMPLEMENTATION == "compiled" and sys.version_info >= (3, 12),
    reason="3.12+ never collects inside the compiled core's C code (collections wait for the eval loop)",
)


def fill_every_free_buffer(pool: BufferPool, size: int, byte: int) -> list[int]:
    """Allocate until exhausted, writing ``byte`` everywhere; return the addresses seen."""
    held = []
    while True:
        try:
            buf = pool.try_alloc(size)
        except Exhausted:
            break
        buf.put_slice(bytes([byte]) * buf.capacity)
        held.append(buf)
    return [b.address for b in held]


def test_memoryview_outliving_every_iobuf_keeps_its_bytes() -> None:
    """A view held past the last IoBuf sees its bytes unchanged while the pool is reused."""
    pool = BufferPool(config(PAGE, PAGE, 4))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\x11" * PAGE)
    held_address = buf.address
    frozen = buf.freeze()
    view = frozen[100:200].as_memoryview()
    del frozen
    assert allocated(pool, PAGE) == 1  # the view alone keeps it out of the pool
    addresses = fill_every_free_buffer(pool, PAGE, 0xEE)
    assert held_address not in addresses
    assert len(addresses) == 3
    assert bytes(view) == b"\x11" * 100


def test_buffer_returns_as_soon_as_the_last_view_goes() -> None:
    """Dropping the outliving view puts the buffer back into this thread's cache."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    view = buf.as_memoryview()
    del buf
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (1, 0)
    sub = view[0:0]  # slices of the view pin the buffer too
    del view
    assert allocated(pool, PAGE) == 1
    del sub
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_numpy_array_outliving_every_iobuf_keeps_its_bytes() -> None:
    """A numpy array over an exported view pins the memory like the view itself."""
    pool = BufferPool(config(PAGE, PAGE, 3))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(bytes(range(256)) * (PAGE // 256))
    held_address = buf.address
    arr = np.frombuffer(buf.freeze().as_memoryview(), dtype=np.uint8).reshape(-1, 256)
    gc.collect()
    assert allocated(pool, PAGE) == 1
    addresses = fill_every_free_buffer(pool, PAGE, 0x00)
    assert held_address not in addresses
    assert (arr[:, :] == np.arange(256, dtype=np.uint8)).all()
    assert available(pool, PAGE) == 2  # the fillers are back, the array's buffer is not
    del arr
    assert available(pool, PAGE) == 3


def test_writable_numpy_view_of_spare_capacity_pins_the_buffer() -> None:
    """An array made from spare_capacity() keeps the buffer after the IoBufMut is gone."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    arr = np.asarray(buf.spare_capacity())
    del buf
    arr[:] = 7
    other = pool.try_alloc(PAGE)
    other.put_slice(b"\x00" * PAGE)
    assert (arr == 7).all()
    del arr
    assert available(pool, PAGE) == 1


def test_views_from_chunk_and_casts_pin_the_buffer() -> None:
    """chunk() views and their casts count as reaching the memory."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"\x01\x00\x00\x00" * 4)
    words = buf.chunk().cast("I")
    frozen = buf.freeze()
    chunk = frozen.chunk()
    del frozen
    del chunk
    assert allocated(pool, PAGE) == 1
    assert list(words) == [1, 1, 1, 1]
    del words
    assert allocated(pool, PAGE) == 0


def test_try_into_mut_refuses_while_a_view_or_array_lives() -> None:
    """A live exported view or numpy array makes the IoBuf not unique."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"abc")
    frozen = buf.freeze()
    view = frozen.as_memoryview()
    assert frozen.try_into_mut() is None
    arr = np.frombuffer(view, dtype=np.uint8)
    del view
    assert frozen.try_into_mut() is None
    assert frozen == b"abc" and frozen.is_pooled  # unchanged by the refusals
    del arr
    back = frozen.try_into_mut()
    assert back is not None and bytes(back) == b"abc"


def test_view_taken_before_freeze_still_pins_after_the_iobuf_goes() -> None:
    """The exporter follows ownership from IoBufMut to IoBuf and back."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.try_alloc(PAGE)
    early = buf.spare_capacity()
    buf.put_slice(b"x")
    frozen = buf.freeze()
    back = frozen.try_into_mut()
    assert back is None  # `early` still reaches the memory
    del frozen
    assert allocated(pool, PAGE) == 1
    del early
    assert allocated(pool, PAGE) == 0


def test_cyclic_garbage_returns_after_the_collector_runs() -> None:
    """Views and buffers caught in a reference cycle come back once gc runs."""
    pool = BufferPool(config(PAGE, PAGE, 2))

    class Node:
        pass

    node = Node()
    node.loop = node  # type: ignore[attr-defined]
    buf = pool.try_alloc(PAGE)
    node.view = buf.as_memoryview()  # type: ignore[attr-defined]
    node.buf = buf  # type: ignore[attr-defined]
    frozen_node = Node()
    frozen_node.loop = frozen_node  # type: ignore[attr-defined]
    other = pool.try_alloc(PAGE)
    other.put_slice(b"z")
    frozen_node.buf = other.freeze()  # type: ignore[attr-defined]
    frozen_node.view = frozen_node.buf.as_memoryview()  # type: ignore[attr-defined]
    del node, buf, frozen_node, other
    assert allocated(pool, PAGE) == 2
    gc.collect()
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 2)


def test_view_dropped_in_another_thread_returns_to_one_cache() -> None:
    """The thread that finalizes the last view gets the buffer in its cache, exactly once.

    With a GIL that is the thread that drops the view. Free-threaded CPython
    may defer the view's deallocation to the thread that created it (biased
    reference counting; here this thread), so the buffer lands there instead.
    """
    pool = BufferPool(config(PAGE, PAGE, 4, thread_cache_capacity=2))
    buf = pool.try_alloc(PAGE)
    address = buf.address
    box = [buf.as_memoryview()]
    del buf
    seen: list[int] = []

    def worker() -> None:
        box.clear()
        seen.append(pool.stats().classes[0].local_free)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    gc.collect()  # free-threaded: run a deallocation still deferred to this thread
    stats = pool.stats().classes[0]
    if FREE_THREADED:
        # In the worker's cache (flushed to the shared list when it exited) or in ours.
        assert seen in ([0], [1])
        assert (stats.global_free, stats.local_free) == (seen[0], 1 - seen[0])
    else:
        assert seen == [1]
        assert (stats.global_free, stats.local_free) == (1, 0)  # flushed on the worker's exit
    again = pool.try_alloc(PAGE)
    assert again.address == address
    assert pool.stats().classes[0].created == 1


@pytest.mark.usefixtures("contended")
def test_concurrent_writers_never_see_each_others_bytes() -> None:
    """Threads write owner canaries into pooled buffers and views; no canary is ever overwritten,
    and every buffer is free again at the end. Runs on GIL builds too: with a 1 us
    switch interval the threads interleave inside the pure-Python allocate and
    release paths, where handing one buffer to two owners would show as a foreign byte."""
    pool = BufferPool(config(256, 1024, 24, alignment=64, thread_cache_capacity=4))
    threads = 4
    start = threading.Barrier(threads)
    failures: list[str] = []

    def worker(me: int) -> None:
        start.wait()
        kept: list[tuple[bytes, object]] = []
        for i in range(1500):
            size = 256 << (i % 3)
            # A canary unique to this thread and allocation (mod 64), so reuse shows.
            pattern = bytes([me * 64 + i % 64])
            buf = pool.alloc(size)
            buf.put_slice(pattern * size)
            if i % 3 == 0:
                kept.append((pattern, buf.as_memoryview()))
                del buf
            elif i % 3 == 1:
                kept.append((pattern, buf.freeze()[: size // 2]))
            else:
                kept.append((pattern, buf))
            if len(kept) > 5:
                expected, old = kept.pop(0)
                data = bytes(old)  # type: ignore[call-overload]
                if data != expected * len(data):
                    failures.append(f"thread {me} saw a foreign byte")

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert failures == []
    for cls_stats in pool.stats().classes:
        assert cls_stats.created <= 24
        assert cls_stats.global_free + cls_stats.local_free == cls_stats.created


def test_copying_a_pooled_iobufmut_never_duplicates_ownership() -> None:
    """copy, deepcopy and pickle of an IoBufMut give independent heap buffers, never a second owner."""
    import copy
    import pickle

    pool = BufferPool(config(64, 64, 4, alignment=64, thread_cache_capacity=4))
    m = pool.try_alloc(64)
    m.put_slice(b"abc")
    copies = [copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m))]
    for c in copies:
        assert bytes(c) == b"abc" and not c.is_pooled and c.address != m.address
    del m, copies
    assert allocated(pool, 64) == 0 and available(pool, 64) == 1
    a, b = pool.try_alloc(64), pool.try_alloc(64)
    assert a.address != b.address


def test_iobuf_copies_share_safely_and_pickle_as_bytes() -> None:
    """copy.copy(IoBuf) shares the lease; pickling round-trips the content."""
    import copy
    import pickle

    pool = BufferPool(config(64, 64, 2, alignment=64))
    m = pool.try_alloc(64)
    m.put_slice(b"xyz")
    f = m.freeze()
    shallow = copy.copy(f)
    assert shallow.address == f.address and shallow.is_pooled
    assert pickle.loads(pickle.dumps(f)) == b"xyz"
    del f
    assert allocated(pool, 64) == 1
    del shallow
    assert allocated(pool, 64) == 0


def test_a_pool_cannot_be_copied_or_pickled() -> None:
    """Copies of a pool would share (and close) its classes, so they are refused."""
    import copy
    import pickle

    pool = BufferPool(config(64, 64, 2, alignment=64))
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be"):
            attempt(pool)
    assert pool.try_alloc(64).is_pooled


def test_clones_exporting_at_once_in_two_threads_share_one_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads making the first views of one lease at once get one exporter, so both views pin.

    The scheduling is scripted: creating an exporter waits (briefly) for the other
    thread to arrive too, which is the interleaving that would create two.
    """
    from iobuf import _views

    real = _views._new_export
    both_inside = threading.Barrier(2, timeout=0.5)

    def rendezvous(cls: object, mv: memoryview) -> object:
        try:
            both_inside.wait()
        except threading.BrokenBarrierError:
            pass  # the other thread could not get here: what the lock is for
        return real(cls, mv)  # type: ignore[arg-type]

    monkeypatch.setattr(_views, "_new_export", rendezvous)
    pool = BufferPool(config(64, 64, 4, alignment=64))
    buf = pool.try_alloc(64)
    buf.put_slice(b"A" * 64)
    frozen = buf.freeze()
    clones = [frozen.clone(), frozen.clone()]
    del frozen
    views: list[memoryview] = []

    def grab(i: int) -> None:
        views.append(clones[i].as_memoryview())

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(v.obj) for v in views}) == 1
    clones.clear()
    keep = views.pop()
    views.clear()
    assert allocated(pool, 64) == 1  # `keep` alone pins the buffer
    for _ in range(3):
        pool.try_alloc(64).put_slice(b"Z" * 64)
    assert bytes(keep) == b"A" * 64


class _Rescuer:
    """Cyclic garbage whose finalizer puts what it holds on a module-level retry list."""

    saved: list[object] = []  # noqa: RUF012 - the point is a place outside the cycle

    def __init__(self, held: object) -> None:
        self.held = held
        self.me = self

    def __del__(self) -> None:
        _Rescuer.saved.append(self.held)


def _resurrect(make: Callable[[], object]) -> object:
    """Make what ``make()`` returns reachable only from a reference cycle, collect
    the cycle, and return what its finalizer brought back to life."""
    _Rescuer.saved.clear()
    _Rescuer(make())
    gc.collect()
    return _Rescuer.saved.pop()


def _frozen(pool: BufferPool, byte: int) -> IoBuf:
    buf = pool.try_alloc(PAGE)
    buf.put_slice(bytes([byte]) * 16)
    return buf.freeze()


def _held(pool: BufferPool, kind: str) -> object:
    """A pooled buffer's only owner or view, of the given kind."""
    if kind == "iobufmut":
        mut = pool.try_alloc(PAGE)
        mut.put_slice(b"\x41" * 16)
        return mut
    frame = _frozen(pool, 0x41)
    if kind == "iobuf":
        return frame
    view = frame.as_memoryview()
    return view if kind == "memoryview" else view[2:10]


@pytest.mark.parametrize("kind", ["iobuf", "iobufmut", "memoryview", "slice-of-view"])
def test_resurrected_owner_or_view_never_aliases_a_reissued_buffer(kind: str, hot_path: str) -> None:
    """An IoBuf, IoBufMut or exported view brought back to life by another finalizer
    after its own finalizer ran still owns (or pins) its memory: the pool hands the
    buffer out again only after the resurrected object is really gone."""
    pool = BufferPool(config(PAGE, PAGE, 4))
    back = _resurrect(lambda: _held(pool, kind))
    # The resurrected object exports a view now, then goes; the view alone remains.
    view = back.as_memoryview() if isinstance(back, (IoBuf, IoBufMut)) else back
    assert isinstance(view, memoryview)
    expected = bytes(view)
    address = ctypes_address(view)
    del back
    gc.collect()
    addresses = fill_every_free_buffer(pool, PAGE, 0x42)
    assert address not in addresses
    assert len(addresses) == 3
    assert bytes(view) == expected
    del view, addresses
    gc.collect()
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 4)


def test_resurrected_iobuf_converted_to_mut_writes_only_its_own_memory() -> None:
    """``into_mut`` on a resurrected IoBuf gives a buffer nobody else is issued (its
    own, or a copy): writing through it changes no other live buffer (``try_into_mut``
    used to hand back the memory the pool had already issued again)."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    back = _resurrect(lambda: _frozen(pool, 0x41))
    gc.collect()
    assert isinstance(back, IoBuf)
    mut = back.into_mut()
    del back
    others = []
    while True:
        try:
            other = pool.try_alloc(PAGE)
        except Exhausted:
            break
        other.put_slice(b"\x42" * PAGE)
        others.append(other)
    # The pure core's into_mut copies (the parked lease counts as a holder) and
    # lets go of the lease, which the allocation slow path settles: both buffers
    # are issued. The compiled core converts in place (a deallocator cannot
    # resurrect, so nothing else reaches the memory): one is left to issue.
    assert len(others) == (1 if mut.is_pooled else 2)
    mut.as_memoryview()[:] = b"\x43" * len(mut)
    assert all(bytes(o) == b"\x42" * PAGE for o in others)
    del mut, others, other
    gc.collect()
    assert allocated(pool, PAGE) == 0


def test_debug_saveall_keeps_collected_buffers_out_of_the_pool() -> None:
    """With ``gc.DEBUG_SAVEALL`` the collector keeps its garbage in ``gc.garbage``:
    buffers owned by it stay out of use until that list lets go of them."""
    pool = BufferPool(config(PAGE, PAGE, 2))

    class Node:
        pass

    node = Node()
    node.me = node  # type: ignore[attr-defined]
    node.frame = _frozen(pool, 0x41)  # type: ignore[attr-defined]
    node.view = node.frame.as_memoryview()  # type: ignore[attr-defined]
    del node
    old = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
    finally:
        gc.set_debug(old)
    assert allocated(pool, PAGE) == 1
    saved = [o for o in gc.garbage if isinstance(o, memoryview)]
    assert saved and bytes(saved[0]) == b"\x41" * 16
    addresses = fill_every_free_buffer(pool, PAGE, 0x42)
    assert len(addresses) == 1
    assert bytes(saved[0]) == b"\x41" * 16
    del saved
    gc.garbage.clear()
    gc.collect()
    assert allocated(pool, PAGE) == 0


def ctypes_address(view: memoryview) -> int:
    """Base address of the page-aligned pooled buffer that ``view`` (read-only too) lies in."""
    address = int(np.frombuffer(view, np.uint8).ctypes.data)
    return address - address % PAGE


def test_a_collection_inside_try_into_mut_never_hands_over_memory_a_finalizer_cloned() -> None:
    """A collection may start at any allocation of ``try_into_mut``; a finalizer it
    runs may clone the very frame being converted (say, to keep it for an error
    report). Either the conversion sees that clone and refuses, or the clone comes
    after it and is empty; a clone's bytes never change under it."""
    kept: list[IoBuf] = []

    class Conn:
        def __init__(self, frame: IoBuf) -> None:
            self.frame = frame
            self.me = self

        def __del__(self) -> None:
            kept.append(self.frame.clone())

    for threshold in (1, 2, 3):
        pool = BufferPool(config(PAGE, PAGE, 1))
        for _ in range(10):
            buf = pool.try_alloc(PAGE)
            buf.put_slice(b"A" * PAGE)
            frame = buf.freeze()
            del buf
            gc.collect()
            Conn(frame)
            old = gc.get_threshold()
            gc.set_threshold(threshold)
            try:
                mut = frame.try_into_mut()
            finally:
                gc.set_threshold(*old)
            gc.collect()
            views = [c.as_memoryview() for c in kept]
            kept.clear()
            del mut, frame
            fill_every_free_buffer(pool, PAGE, 0x42)
            # A clone made after the conversion emptied the frame is empty (on 3.12+
            # the collection may run at a later call than the allocation that began it).
            assert all(bytes(v[:4]) in (b"AAAA", b"") for v in views)
            del views
            gc.collect()
        assert allocated(pool, PAGE) == 0


@pytest.mark.pure_core
def test_an_exception_inside_the_settling_of_parked_buffers_loses_none() -> None:
    """An exception from a signal handler (here: a profiler raising KeyboardInterrupt
    when the second parked buffer is being finished) leaves the rest parked; a
    later collection returns them. Nothing is lost."""
    import sys

    from iobuf import _views

    pool = BufferPool(config(PAGE, PAGE, 8))

    class Node:
        def __init__(self, buf: object) -> None:
            self.buf = buf
            self.me = self

    for _ in range(6):
        Node(pool.try_alloc(PAGE))
    calls = [0]

    def interrupt(frame: object, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is _views.IoBufMut._finish.__code__:  # type: ignore[attr-defined]
            calls[0] += 1
            if calls[0] == 2:
                sys.setprofile(None)
                raise KeyboardInterrupt

    unraisable: list[object] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    sys.setprofile(interrupt)
    try:
        gc.collect()
    finally:
        sys.setprofile(None)
        sys.unraisablehook = old_hook
    assert calls[0] == 2 and len(unraisable) == 1
    unraisable.clear()  # its traceback holds the settling frames
    assert len(_views._parked) == 5  # one finished; the interrupted one and four more parked
    gc.collect()
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 6)


def test_a_pool_keeps_working_after_someone_empties_gc_callbacks_mid_collection() -> None:
    """iobuf's ``gc.callbacks`` entry marks collections. If another callback empties
    the list as a collection starts, the mark would stay set and every drop would
    park forever (the pool ran dry after four cycles); the first park notices,
    puts the entry back and collects. That first buffer waits for the next collection."""
    pool = BufferPool(config(PAGE, PAGE, 4))
    saved = gc.callbacks[:]

    def empty_the_list(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc.callbacks.clear()

    gc.callbacks.append(empty_the_list)
    try:
        gc.collect()
        for _ in range(20):  # more cycles than buffers: each must come back
            buf = pool.try_alloc(PAGE)
            del buf
        assert allocated(pool, PAGE) <= 1
        gc.collect()
        assert allocated(pool, PAGE) == 0
    finally:
        gc.callbacks[:] = saved


def test_a_collection_inside_freeze_that_freezes_the_same_buffer_makes_one_owner() -> None:
    """A finalizer run by a collection that starts inside ``freeze()`` (it allocates
    the lease) may freeze the very same buffer: both results share one owner, so
    the buffer returns once (it returned twice, and the class ran dry)."""
    kept: list[IoBuf] = []

    class Conn:
        def __init__(self, buf: IoBufMut) -> None:
            self.buf = buf
            self.me = self

        def __del__(self) -> None:
            if len(self.buf):
                kept.append(self.buf.freeze())

    for threshold in (1, 2, 3, 4):
        pool = BufferPool(config(PAGE, PAGE, 2))
        for _ in range(10):
            buf = pool.try_alloc(PAGE)
            buf.put_slice(b"A" * 100)
            gc.collect()
            Conn(buf)
            old = gc.get_threshold()
            gc.set_threshold(threshold)
            try:
                frame = buf.freeze()
            finally:
                gc.set_threshold(*old)
            del buf
            gc.collect()
            views = [f.as_memoryview() for f in (frame, *kept)]
            kept.clear()
            del frame
            fill_every_free_buffer(pool, PAGE, 0x42)
            assert all(bytes(v[:1]) in (b"A", b"") for v in views)
            del views
            gc.collect()
            assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, pool.stats().classes[0].created)


@pytest.mark.pure_core
def test_a_clone_made_between_try_into_muts_count_and_its_transfer_makes_it_refuse() -> None:
    """``try_into_mut`` counts, moves ownership with plain stores, and counts again:
    a clone made right after the first count (where a finalizer or signal handler
    could run) is seen, everything is put back, and the conversion refuses."""
    import sys

    from iobuf import _views

    pool = BufferPool(config(PAGE, PAGE, 1))
    buf = pool.alloc(PAGE)
    buf.put_slice(b"frame")
    frame = buf.freeze()
    del buf
    clones: list[IoBuf] = []

    def hook(code_frame: object, event: str, arg: object) -> None:
        if event == "return" and code_frame.f_code is _views._view_refs.__code__ and not clones:  # type: ignore[attr-defined]
            clones.append(frame.clone())

    sys.setprofile(hook)
    try:
        mut = frame.try_into_mut()
    finally:
        sys.setprofile(None)
    assert mut is None
    assert frame == b"frame" and clones[0] == b"frame"
    clones.clear()
    again = frame.try_into_mut()
    assert again is not None and again == b"frame" and again.is_pooled


@pytest.mark.pure_core
def test_an_object_parked_after_the_collection_ended_is_settled_by_the_pool() -> None:
    """A thread can read "a collection is running", lose the CPU while the
    collection ends and settles, and park its dying buffer afterwards; nothing
    would settle it before the next collection. ``stats()`` and the allocation
    slow path settle what is parked, so the buffer is neither missed nor lost.
    (Simulated: park a dropped buffer by hand, with no collection running.)"""
    from iobuf import _views

    pool = BufferPool(config(PAGE, PAGE, 1))
    buf = pool.try_alloc(PAGE)
    _views._park(buf)  # what a late finalizer does; then its frame lets go
    del buf
    assert len(_views._parked) == 1
    assert allocated(pool, PAGE) == 0  # stats() settled it
    assert not _views._parked
    buf = pool.try_alloc(PAGE)
    _views._park(buf)
    del buf
    assert pool.try_alloc(PAGE).is_pooled  # the slow path settled it: not Exhausted


@collects_inside_c_allocations
@pytest.mark.parametrize("kind", ["IoBufMut", "IoBuf"])
def test_comparing_reads_the_buffer_only_after_converting_the_other_side(kind: str) -> None:
    """``==`` converts the other operand (allocating a memoryview, which may run a
    collection) and only then reads this buffer's address: a finalizer that grows
    or releases the buffer meanwhile cannot make the comparison read freed memory
    (the compiled core read the old address: a crash on a 64 MiB heap buffer)."""
    n = 64 << 20
    mut = IoBufMut.zeroed(n)
    buf: IoBuf | IoBufMut = mut.freeze() if kind == "IoBuf" else mut
    other = bytearray(n)

    class Mover:
        def __del__(self) -> None:
            if isinstance(buf, IoBufMut):
                buf.put_slice(b"x")  # grows: the old heap memory is freed
            else:
                buf.release()  # the last share: the memory is freed

    threshold = gc.get_threshold()
    gc.collect()
    gc.disable()
    try:
        mover = Mover()
        mover.cycle = mover  # type: ignore[attr-defined]
        del mover
        gc.set_threshold(1)
        gc.enable()
        equal = buf == other
    finally:
        gc.set_threshold(*threshold)
        gc.enable()
    gc.collect()
    assert len(buf) in (0, n + 1)
    assert not equal


@collects_inside_c_allocations
def test_a_finalizer_growing_the_buffer_during_its_growth_strands_no_view() -> None:
    """Growing a heap IoBufMut with views alive pins the old memory; if making
    the pin list runs a collection whose finalizer grows the same buffer and
    views it, both old memories stay pinned while their views live (the compiled
    core read its state before the list existed: one pin replaced the other, and
    the first view read freed memory, a crash on a 64 MiB buffer)."""
    n = 64 << 20
    buf = IoBufMut(bytes(n))
    first = buf.as_memoryview()
    held: list[memoryview] = []

    class Grower:
        def __del__(self) -> None:
            buf.put_slice(b"n" * 50)
            held.append(buf.as_memoryview())

    threshold = gc.get_threshold()
    gc.collect()
    gc.disable()
    try:
        grower = Grower()
        grower.cycle = grower  # type: ignore[attr-defined]
        del grower
        gc.set_threshold(1)
        gc.enable()
        buf.put_slice(b"z" * 100)
    finally:
        gc.set_threshold(*threshold)
        gc.enable()
    gc.collect()
    assert first[n - 1] == 0 and bytes(first[:4]) == bytes(4)
    assert bytes(buf.as_memoryview()[-100:]) == b"z" * 100
    for view in held:
        assert bytes(view[:4]) == bytes(4)


def test_indexing_reads_the_view_only_after_converting_the_key() -> None:
    """``b[lo:Idx()]`` and ``b[I(k)]`` run user code (``__index__``, an int
    subclass's comparisons) before the view is read: if that code releases the
    view, the result is empty or an IndexError, never bytes from outside the
    buffer (the compiled core used the length read before: 128 KiB from an
    8-byte static block, or a byte of it)."""
    n = 1 << 17
    pool = BufferPool(config(PAGE, n, 2))
    m = pool.alloc(n)
    m.put_slice(b"s" * n)
    buf = m.freeze()

    class Idx:
        def __index__(self) -> int:
            buf.release()
            return n

    part = buf[0 : Idx()]
    assert bytes(part) == b"" and not part.is_pooled

    m = pool.alloc(n)
    m.put_slice(b"s" * n)
    buf = m.freeze()

    class Key(int):
        def __lt__(self, other: object) -> bool:
            buf.release()
            return int(self) < other  # type: ignore[operator]

    try:
        got = buf[Key(n - 1)]
    except IndexError:
        got = None
    assert got in (None, ord("s"))


@pytest.mark.parametrize("move_on", ["release", "try_into_mut", "split_to", "drop"])
def test_numpy_frombuffer_of_an_iobuf_pins_the_buffer(move_on: str) -> None:
    """numpy.frombuffer keeps the exporter object and releases its view at once
    unless the exporter's type releases buffers itself; it then holds only the
    IoBuf. Releasing, converting or splitting that IoBuf must still leave the
    memory to the array (the compiled core's IoBuf had no bf_releasebuffer: the
    pool handed the array's memory out again and the array read its new bytes)."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    m = pool.alloc(PAGE)
    m.put_slice(b"A" * PAGE)
    buf = m.freeze()
    try:
        memoryview(buf).release()
    except TypeError:
        pytest.skip("this core's IoBuf is not a buffer on this Python (as_memoryview() instead)")
    array = np.frombuffer(buf, dtype=np.uint8)  # type: ignore[call-overload]
    if move_on == "release":
        with pytest.raises(BufferError):
            buf.release()
    elif move_on == "try_into_mut":
        assert buf.try_into_mut() is None
    elif move_on == "split_to":
        head = buf.split_to(PAGE)
        del head
    del buf
    gc.collect()
    with pytest.raises(Exhausted):
        pool.try_alloc(PAGE)
    assert array.tobytes() == b"A" * PAGE
