"""Regressions from an adversarial review: ways a buffer could be stranded or handed out twice."""

from __future__ import annotations

import gc
import threading

import pytest

from iobuf import BufferPool, BufferPoolConfig, IoBuf, IoBufMut, flush_thread_cache


def network_pool(per_class: int = 8) -> BufferPool:
    return BufferPool(BufferPoolConfig.for_network().with_max_per_class(per_class))


def test_buffer_in_a_user_thread_local_is_not_stranded_at_thread_exit() -> None:
    """A buffer kept in the user's threading.local returns to the shared list when the thread ends."""
    pool = network_pool(8)
    tl = threading.local()

    def worker() -> None:
        tl.buf = pool.alloc(4096)  # the class cache exists before the user's local entry

    for _ in range(10):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    gc.collect()
    flush_thread_cache()
    stats = pool.stats().for_size(4096)
    assert stats.global_free + stats.local_free == stats.created
    assert pool.try_alloc(4096).is_pooled


def test_a_view_resurrected_by_a_generator_finally_keeps_its_bytes() -> None:
    """Cyclic garbage whose finalizer saves a view: the memory is not handed out again."""
    pool = network_pool(8)
    log: list[memoryview] = []

    def frames(buf: object) -> object:
        view = buf.as_memoryview()  # type: ignore[attr-defined]
        try:
            yield view[:4]
        finally:
            log.append(view)

    class Conn:
        pass

    conn = Conn()
    conn.me = conn  # type: ignore[attr-defined]
    buf = pool.alloc(4096)
    buf.put_slice(b"AAAA")
    conn.gen = frames(buf)  # type: ignore[attr-defined]
    next(conn.gen)  # type: ignore[attr-defined]
    del buf, conn
    gc.collect()
    assert bytes(log[0]) == b"AAAA"
    others = [pool.alloc(4096) for _ in range(3)]
    for other in others:
        other.put_slice(b"BBBB")
    assert bytes(log[0]) == b"AAAA"
    log.clear()
    del others
    assert pool.try_alloc(4096).is_pooled


def test_gc_debug_saveall_cannot_make_the_pool_reissue_saved_memory() -> None:
    """With gc.DEBUG_SAVEALL the garbage stays reachable, so its memory stays out of the pool."""
    pool = network_pool(8)

    class Node:
        pass

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        node = Node()
        node.me = node  # type: ignore[attr-defined]
        buf = pool.alloc(4096)
        buf.put_slice(b"A" * 8)
        node.view = buf.as_memoryview()  # type: ignore[attr-defined]
        del buf, node
        gc.collect()
        view = next(o for o in gc.garbage if type(o) is memoryview and len(o) == 8)
        fresh = [pool.alloc(4096) for _ in range(3)]
        for f in fresh:
            f.put_slice(b"B" * 8)
        assert bytes(view) == b"A" * 8
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.pure_core
def test_calling_del_twice_does_not_return_a_buffer_twice() -> None:
    """Explicit __del__ calls are idempotent; two live buffers never share memory."""
    pool = network_pool(8)
    a = pool.alloc(4096)
    a.__del__()
    a.__del__()
    b, c = pool.alloc(4096), pool.alloc(4096)
    assert len({a.address, b.address, c.address}) == 3


def test_reinitialising_a_buffer_is_refused() -> None:
    """__init__ on a live buffer would abandon its memory, so it raises TypeError."""
    pool = network_pool(8)
    buf = pool.alloc(4096)
    with pytest.raises(TypeError, match="re-initialise"):
        buf.__init__(b"hi")  # type: ignore[misc]
    assert buf.is_pooled


@pytest.mark.pure_core
def test_a_buffer_listed_twice_is_never_handed_out_twice() -> None:
    """If a bug ever returned one buffer while it was still owned, the allocation gate refuses it."""
    pool = BufferPool(BufferPoolConfig(min_size=64, max_size=64, max_per_class=2, thread_cache_capacity=2))
    cls = pool._classes[0]
    buf = pool.try_alloc(64)
    cls.give_back(buf._mv)  # the simulated bug: a return while `buf` still owns the memory
    fresh = pool.try_alloc(64)
    assert fresh.address != buf.address  # the listed buffer was set aside, a new one made
    assert len(cls.suspects) == 1
    buf._cls = None  # undo the simulated bug: `buf` no longer returns it
    del buf, fresh
    cls.reclaim_suspects()  # nothing references the set-aside buffer now
    flush_thread_cache()
    stats = pool.stats().classes[0]
    assert (stats.created, stats.global_free + stats.local_free) == (2, 2)
    assert cls.suspects == []


@pytest.mark.pure_core
@pytest.mark.parametrize("frozen", [False, True])
def test_a_bug_on_the_return_path_is_reported_not_swallowed(
    frozen: bool, hot_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finalizer that fails outside interpreter teardown reports the error
    ("Exception ignored in ...") instead of silently leaking the buffer; a
    never-initialised buffer reports nothing (it owns nothing)."""
    import sys

    from iobuf import IoBufMut
    from iobuf._size_class import SizeClass

    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(4).with_thread_cache_disabled())
    buf = pool.try_alloc(4096)
    held = buf.freeze() if frozen else buf
    del buf

    def broken(*args: object) -> None:
        raise RuntimeError("return path bug")

    monkeypatch.setattr(SizeClass, "give_back", broken)
    monkeypatch.setattr(SizeClass, "give_back_full", broken)
    reported: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    del held
    IoBufMut.__new__(IoBufMut)  # dropped at once, never initialised
    assert [type(r.exc_value) for r in reported] == [RuntimeError]  # type: ignore[attr-defined]
    reported.clear()  # its traceback holds frames


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 1 << 20), (-64, 5), (-(1 << 40), 5), (3, 2), (0, -1), (6, 1 << 20)],
)
def test_an_out_of_range_window_never_reaches_outside_the_buffer(start: int, end: int) -> None:
    """IoBuf._start/_end are writable (IoBufs advances _start). A value outside the
    buffer is refused with ValueError or is harmless: reads, exports and into_mut
    never see or write bytes outside the memory (the compiled core once trusted
    them: bytes(b) read megabytes past the end, into_mut wrote there)."""
    pool = network_pool(4)
    m = pool.alloc(1024)
    m.put_slice(b"hello")
    for b in (m.freeze(), IoBuf(b"hello"), IoBuf(bytearray(b"hello"))):
        for name, value in (("_start", start), ("_end", end)):
            try:
                setattr(b, name, value)
            except ValueError:
                pass
        for got in (bytes(b), bytes(b.as_memoryview()), bytes(b.chunk())):
            assert len(got) <= 1024 and got in b"hello" + bytes(1019)
        for i in range(8):
            try:
                assert b[i] in b"hello\x00"
            except IndexError:
                pass
        c = b.clone()
        out = b.into_mut()
        assert len(out) <= out.capacity <= 1024
        try:
            out.put_slice(b"xyz")  # a fixed pooled buffer refuses or writes inside it
        except ValueError:
            pass
        assert bytes(c) in b"hello" + bytes(1019)


def test_trim_core_refuses_a_negative_keep() -> None:
    """BufferPool._core_trim (the core's trim, behind BufferPool.trim) refuses a
    negative ``keep`` with ValueError on both cores. The compiled core once
    stored it as the free list's length: the next allocation read a pointer
    before the list and crashed."""
    pool = network_pool(8)
    bufs = [pool.alloc(1024) for _ in range(4)]
    addresses = {b.address for b in bufs}
    del bufs
    with pytest.raises(ValueError, match="keep"):
        pool._core_trim(-3)
    again = [pool.try_alloc(1024) for _ in range(4)]
    assert {b.address for b in again} == addresses
    assert pool.trim(0) == 0  # all four are in use


@pytest.mark.parametrize("hand_back", ["heap", "smaller_class", "advanced"])
def test_zeroing_never_writes_past_what_an_overriding_try_alloc_returns(hand_back: str) -> None:
    """try_alloc_zeroed goes through a subclass's try_alloc (as the tracking pool's);
    if that returns less room than asked, ValueError (set_len's message), never a
    memset past the buffer (both cores once zeroed ``length`` bytes from its base:
    heap corruption, a crash). A cursor already advanced is honoured."""

    class Pool(BufferPool):
        def try_alloc(self, capacity):  # type: ignore[no-untyped-def]
            if hand_back == "heap":
                return IoBufMut.with_capacity(16)
            buf = super().try_alloc(1)
            if hand_back == "advanced":
                buf.put_slice(b"ab")
                buf.advance(2)
            return buf

    pool = Pool(BufferPoolConfig.for_network().with_max_per_class(4))
    with pytest.raises(ValueError, match="exceeds capacity"):
        pool.try_alloc_zeroed(1 << 17)
    small = pool.try_alloc_zeroed(10)
    assert bytes(small) == bytes(10)
    small.put_slice(b"x")
    assert bytes(small) == bytes(10) + b"x"


@pytest.mark.parametrize("method", ["alloc", "alloc_len", "try_alloc_zeroed", "alloc_zeroed"])
def test_an_overriding_try_alloc_returning_none_is_never_read_as_a_buffer(method: str) -> None:
    """A subclass's try_alloc that returns None: alloc passes it on, the methods
    that then set a length raise AttributeError (the pure core's set_len call),
    on both cores. The compiled core read and wrote None's memory as if it were
    an IoBufMut's fields (a capacity of garbage, then a write past None)."""

    class Pool(BufferPool):
        def try_alloc(self, capacity):  # type: ignore[no-untyped-def]
            return None

    pool = Pool(BufferPoolConfig.for_network().with_max_per_class(4))
    if method == "alloc":
        assert pool.alloc(10) is None
        return
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'set_len'"):
        getattr(pool, method)(10)
    try:
        pool._core_track(None, [])  # type: ignore[arg-type]  # the tracking hook: ignored, or refused, never read
    except AttributeError:
        pass
