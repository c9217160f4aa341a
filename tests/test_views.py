"""IoBufMut and IoBuf: construction, writing, reading, splitting, conversion, protocols."""

from __future__ import annotations

import array
import copy
import ctypes.util
import io
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from iobuf import IMPLEMENTATION, BufferPool, IoBuf, IoBufMut
from iobuf._memory import shareable_view
from iobuf._views import _fresh_window, _slice_window, _window

from .helpers import FREE_THREADED, PAGE, allocated, config


def test_heap_buffer_copies_and_grows() -> None:
    """IoBufMut(data) copies; put_slice past the capacity reallocates."""
    src = bytearray(b"abc")
    buf = IoBufMut(src)
    src[0] = ord("z")
    assert bytes(buf) == b"abc"
    buf.put_slice(b"d" * 1000)
    assert len(buf) == 1003 and buf.capacity >= 1003
    assert not buf.is_pooled


def test_constructors() -> None:
    """with_capacity, zeroed, with_alignment and zeroed_with_alignment give what they say."""
    assert (len(IoBufMut.with_capacity(10)), IoBufMut.with_capacity(10).capacity) == (0, 10)
    z = IoBufMut.zeroed(5)
    assert bytes(z) == bytes(5)
    a = IoBufMut.with_alignment(100, 64)
    assert (len(a), a.capacity, a.address % 64) == (0, 100, 0)
    za = IoBufMut.zeroed_with_alignment(3 * PAGE, PAGE)
    assert bytes(za) == bytes(3 * PAGE) and za.address % PAGE == 0 and za.capacity == 3 * PAGE
    assert IoBufMut.with_alignment(0, 64).capacity == 0
    assert len(IoBufMut.zeroed_with_alignment(0, 64)) == 0
    big = IoBufMut.with_alignment(100, 1 << 16)
    assert big.address % (1 << 16) == 0


@pytest.mark.parametrize("alignment", [8, 64, PAGE])
def test_untracked_aligned_buffers_are_zeroed_when_the_allocator_reuses_memory(alignment: int) -> None:
    """Untracked aligned blocks come from the heap, which hands freed memory out
    again: a block made right after a dirtied one of the same size is zeroed
    and aligned all the same, small or larger than the allocator's map threshold."""
    for size in (100, 3 * PAGE, 1 << 20):
        for _ in range(3):
            buf = IoBufMut.zeroed_with_alignment(size, alignment)
            assert buf.address % alignment == 0 and bytes(buf) == bytes(size)
            buf.as_memoryview()[:] = b"\xff" * size
            del buf


#: jemalloc's shared library, for LD_PRELOAD (None where it is not installed).
JEMALLOC = ctypes.util.find_library("jemalloc")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from Linux's /proc")
@pytest.mark.parametrize("alignment", [1, 64, PAGE])
def test_a_huge_untracked_buffer_costs_memory_only_where_it_is_written(alignment: int) -> None:
    """From ``MAP_MIN`` (32 MiB) on, untracked blocks are maps whose pages cost
    nothing until touched: 64 MiB zeroed, aligned and read at a few places
    raises RSS by a few pages, not by 64 MiB (a heap block would be zeroed, every
    page, up front)."""
    size = 64 << 20
    before = _rss_bytes()
    buf = IoBufMut.zeroed_with_alignment(size, alignment)
    view = buf.as_memoryview()
    assert buf.address % alignment == 0 and view[0] == view[size // 2] == view[size - 1] == 0
    assert _rss_bytes() - before < 8 << 20
    del view, buf


@pytest.mark.skipif(
    JEMALLOC is None, reason="needs jemalloc (Debian's libjemalloc2, which redis-tools brings)"
)
def test_small_aligned_buffers_are_aligned_under_an_allocator_that_aligns_small_blocks_less() -> None:
    """jemalloc aligns blocks of 8 bytes or less to 8, where glibc always gives 16:
    buffers of 1-16 bytes asked for 16- and 32-byte alignment are aligned anyway
    (in a child process with jemalloc preloaded, on the core this run uses)."""
    assert JEMALLOC is not None
    code = (
        "from iobuf import IoBufMut\n"
        "bad = [(n, a) for _ in range(50) for n in range(1, 17) for a in (16, 32)\n"
        "       if IoBufMut.with_alignment(n, a).address % a]\n"
        "print(len(bad))\n"
    )
    # After whatever is preloaded already (the AddressSanitizer run's libasan must stay first).
    env = dict(os.environ, LD_PRELOAD=f"{os.environ.get('LD_PRELOAD', '')} {JEMALLOC}".strip())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_fixed_buffer_refuses_a_write_that_does_not_fit_and_writes_nothing() -> None:
    """put_slice past a fixed capacity raises ValueError and leaves the buffer as it was."""
    buf = IoBufMut.with_alignment(8, 8)
    buf.put_slice(b"12345")
    with pytest.raises(ValueError, match="fixed capacity"):
        buf.put_slice(b"6789")
    assert bytes(buf) == b"12345"
    buf.put_slice(b"678")
    assert bytes(buf) == b"12345678"


def test_spare_capacity_and_advance_mut() -> None:
    """Writing into spare_capacity() and committing with advance_mut appends."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    buf = pool.try_alloc(10)
    buf.put_slice(b"ab")
    spare = buf.spare_capacity()
    assert len(spare) == PAGE - 2
    spare[:3] = b"cde"
    buf.advance_mut(3)
    assert bytes(buf) == b"abcde"
    with pytest.raises(ValueError, match="past end"):
        buf.advance_mut(PAGE)


def test_set_len_truncate_clear() -> None:
    """set_len up to capacity, truncate never grows, clear keeps capacity."""
    buf = IoBufMut.zeroed_with_alignment(16, 8)
    buf.truncate(20)
    assert len(buf) == 16
    buf.truncate(4)
    assert len(buf) == 4
    buf.set_len(16)
    assert len(buf) == 16
    with pytest.raises(ValueError, match=r"set_len\(17\) exceeds capacity\(16\)"):
        buf.set_len(17)
    buf.clear()
    assert (len(buf), buf.capacity) == (0, 16)


def test_advance_moves_the_cursor_and_shrinks_capacity() -> None:
    """After advance the readable window and capacity start later; alignment moves too."""
    buf = IoBufMut.with_alignment(PAGE, PAGE)
    buf.put_slice(b"helloworld")
    buf.advance(5)
    assert bytes(buf) == b"world" and buf.capacity == PAGE - 5
    assert buf.address % PAGE == 5
    buf.put_slice(b"!")
    assert bytes(buf) == b"world!"
    with pytest.raises(ValueError, match="past end"):
        buf.advance(7)
    buf.clear()
    assert buf.freeze() == b""


def test_interleaved_advance_and_write() -> None:
    """Consuming then appending keeps the unread tail and the new bytes."""
    buf = IoBufMut.with_alignment(64, 64)
    buf.put_slice(b"hello")
    buf.advance(2)
    buf.put_slice(b"world")
    assert bytes(buf) == b"lloworld"


def test_freeze_after_partial_advance_keeps_the_suffix() -> None:
    """freeze covers only the readable window."""
    buf = IoBufMut(b"0123456789")
    buf.advance(4)
    assert bytes(buf.freeze()) == b"456789"


def test_frozen_iobufmut_is_detached_and_refuses_writes() -> None:
    """After freeze: len 0, capacity 0, not pooled, and writes raise ValueError."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"data")
    frozen = buf.freeze()
    assert (len(buf), buf.capacity, buf.is_pooled) == (0, 0, False)
    with pytest.raises(ValueError, match="frozen or converted"):
        buf.put_slice(b"x")
    assert len(buf.spare_capacity()) == 0
    assert frozen == b"data"


def test_iobuf_wraps_bytes_without_copying_and_copies_everything_else() -> None:
    """IoBuf(bytes) shares the object; other bytes-likes are copied."""
    data = b"x" * 100
    wrapped = IoBuf(data)
    assert wrapped.as_memoryview().obj is data
    ba = bytearray(b"abc")
    copied = IoBuf(ba)
    ba[0] = ord("z")
    assert copied == b"abc"
    assert IoBuf.copy_from_slice(data).as_memoryview().obj is not data
    assert IoBuf(array.array("H", [1, 2])) == array.array("H", [1, 2]).tobytes()
    assert len(IoBuf()) == 0


def test_iobuf_indexing_and_python_slicing() -> None:
    """b[i] is an int, b[a:b] follows Python's clamping, step must be 1."""
    b = IoBuf(b"abcdef")
    assert b[0] == ord("a") and b[-1] == ord("f")
    assert b[1:3] == b"bc" and b[-2:] == b"ef" and b[4:100] == b"ef"
    assert len(b[5:2]) == 0
    with pytest.raises(IndexError):
        b[6]
    with pytest.raises(ValueError, match="step 1"):
        b[::2]
    with pytest.raises(TypeError, match="int or slice"):
        b["x"]  # type: ignore[index]


def test_slice_bounds_are_strict() -> None:
    """slice() rejects start > stop and stop > len with ValueError."""
    b = IoBuf(b"abcdef")
    assert b.slice(1, 4) == b"bcd"
    with pytest.raises(ValueError, match="start must be <= stop"):
        b.slice(4, 1)
    with pytest.raises(ValueError, match="out of bounds"):
        b.slice(0, 7)


def test_split_to() -> None:
    """split_to returns the prefix; 0 gives a detached empty view, len moves everything."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    buf = pool.try_alloc(PAGE)
    buf.put_slice(b"headerbody")
    b = buf.freeze()
    empty = b.split_to(0)
    assert len(empty) == 0 and not empty.is_pooled
    head = b.split_to(6)
    assert head == b"header" and b == b"body" and head.is_pooled and b.is_pooled
    with pytest.raises(ValueError, match="split_to out of bounds"):
        b.split_to(5)
    rest = b.split_to(4)
    assert rest == b"body" and rest.is_pooled
    assert len(b) == 0 and not b.is_pooled


def test_clone_shares_memory_with_its_own_cursor() -> None:
    """clone()/copy.copy share the bytes; advancing one leaves the other."""
    b = IoBuf(b"abcdef")
    c = b.clone()
    d = copy.copy(b)
    c.advance(2)
    assert (bytes(b), bytes(c), bytes(d)) == (b"abcdef", b"cdef", b"abcdef")
    assert c.address == b.address + 2
    deep = copy.deepcopy(b)
    assert deep == b and deep.address != b.address


def test_remaining_chunk_advance_copy_to_bytes_match_bytes_semantics() -> None:
    """The seed's Buf trait on IoBuf behaves like slicing bytes."""
    b = IoBuf(b"0123456789")
    assert b.remaining() == 10 and bytes(b.chunk()) == b"0123456789"
    b.advance(3)
    assert bytes(b.chunk()) == b"3456789"
    assert b.copy_to_bytes(2) == b"34" and b == b"56789"
    with pytest.raises(ValueError, match="copy_to_bytes out of bounds"):
        b.copy_to_bytes(6)
    with pytest.raises(ValueError, match="past end"):
        b.advance(6)


def test_equality_and_hashing() -> None:
    """== compares content with bytes-likes and both view types; IoBuf hashes like bytes."""
    b = IoBuf(b"abc")
    m = IoBufMut(b"abc")
    assert b == b"abc" and b == bytearray(b"abc") and b == memoryview(b"abc")
    assert b == m and m == b and m == IoBufMut(b"abc")
    assert b != b"abd" and m != b"ab"
    assert (b == "abc") is False
    assert hash(b) == hash(b"abc")
    assert {b: 1}[IoBuf(b"abc")] == 1
    with pytest.raises(TypeError):
        hash(m)


def test_memoryviews_are_writable_for_iobufmut_and_read_only_for_iobuf() -> None:
    """as_memoryview of a mutable buffer writes through; an IoBuf's view is read-only."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    m = pool.try_alloc(PAGE)
    m.put_slice(b"abc")
    view = m.as_memoryview()
    assert not view.readonly and view.format == "B"
    view[0] = ord("X")
    assert bytes(m) == b"Xbc"
    frozen = m.freeze()
    ro = frozen.as_memoryview()
    assert ro.readonly and bytes(ro) == b"Xbc"
    with pytest.raises(TypeError):
        ro[0] = 1
    heap = IoBuf(b"xyz").as_memoryview()
    assert heap.readonly


def test_reprs_are_informative() -> None:
    """repr shows length, capacity, kind and a data preview."""
    pool = BufferPool(config(PAGE, PAGE, 1))
    m = pool.try_alloc(PAGE)
    m.put_slice(b"hi")
    assert repr(m) == f"IoBufMut(len=2, capacity={PAGE}, pooled, data=b'hi')"
    assert repr(m.freeze()) == "IoBuf(len=2, pooled, data=b'hi')"
    long = IoBuf(b"a" * 100)
    assert "..." in repr(long) and "len=100" in repr(long)
    assert "heap" in repr(IoBufMut()) and "fixed" in repr(IoBufMut.with_alignment(4, 4))


def test_address_is_zero_only_without_memory() -> None:
    """Empty detached views report address 0; real ones report their first readable byte."""
    assert IoBuf().address == 0
    assert IoBufMut.with_capacity(0).address == 0
    b = IoBuf(b"abc")
    assert b.address != 0 and b[1:].address == b.address + 1
    m = IoBufMut(b"abc")
    assert m.freeze().address != 0


def test_untracked_conversion_refuses_after_a_view_was_exported() -> None:
    """Untracked memory converts while unique, and refuses (conservatively) once views went out."""
    m = IoBufMut.with_alignment(64, 64)
    m.put_slice(b"abc")
    f = m.freeze()
    back = f.try_into_mut()
    assert back is not None and bytes(back) == b"abc" and back.capacity == 64
    view = back.as_memoryview()
    f2 = back.freeze()
    assert f2.try_into_mut() is None
    del view
    assert f2.try_into_mut() is None  # conservative: untracked memory is not exporter-counted
    assert bytes(f2.into_mut()) == b"abc"


def test_bytes_backed_iobuf_never_converts_in_place() -> None:
    """bytes is immutable, so try_into_mut refuses and into_mut copies."""
    b = IoBuf(b"abc")
    assert b.try_into_mut() is None
    m = b.into_mut()
    m.put_slice(b"d")
    assert bytes(m) == b"abcd" and len(b) == 0


def test_growable_buffer_recovered_from_iobuf_keeps_growing() -> None:
    """A frozen heap buffer converted back is growable again."""
    f = IoBufMut(b"abc").freeze()
    m = f.try_into_mut()
    assert m is not None
    m.put_slice(b"x" * 500)
    assert len(m) == 503


def test_heap_growth_after_partial_copy_leaves_shared_bytes_alone() -> None:
    """A split-off IoBuf keeps its bytes when the heap buffer behind it reallocates."""
    m = IoBufMut(b"abcdef")
    head = m.copy_to_bytes(3)
    m.put_slice(b"g" * 1000)
    assert head == b"abc" and bytes(m)[:4] == b"defg"


def _frozen_twice() -> IoBuf:
    buf = IoBufMut(b"x")
    buf.freeze()
    return buf.freeze()


@pytest.mark.parametrize(
    "make",
    [
        lambda: IoBufMut().freeze(),
        lambda: IoBufMut.with_capacity(0).freeze(),
        lambda: IoBufMut.zeroed(0).freeze(),
        lambda: IoBufMut.with_alignment(0, 64).freeze(),
        lambda: IoBufMut.zeroed_with_alignment(0, 64).freeze(),
        _frozen_twice,
    ],
    ids=["new", "with_capacity", "zeroed", "with_alignment", "zeroed_with_alignment", "second-freeze"],
)
def test_empty_frozen_buffers_report_address_zero(make: Callable[[], IoBuf]) -> None:
    """Freezing a buffer that has no memory gives an IoBuf whose ``address`` is 0,
    like every other empty view without memory (it raised ``ValueError``)."""
    frozen = make()
    assert (len(frozen), frozen.address) == (0, 0)
    assert frozen.clone().address == 0


def test_a_writable_view_taken_before_freeze_still_writes_the_frozen_bytes() -> None:
    """Documented choice: ``freeze()`` does not revoke writable views taken earlier,
    so bytes written through one show in the IoBuf (and its hash), as with a
    ``bytearray``'s memoryview; views taken from the IoBuf are read-only."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    buf = pool.alloc(PAGE)
    buf.put_slice(b"abc")
    early = buf.as_memoryview()
    frozen = buf.freeze()
    before = hash(frozen)
    early[0] = ord("z")
    assert frozen == b"zbc" and hash(frozen) != before
    assert frozen.as_memoryview().readonly


# -- the buffer protocol: memoryview(), sockets and files take the buffers directly ----------

#: The compiled core is a buffer on every Python; the pure-Python one through PEP 688 (3.12+).
is_a_buffer = pytest.mark.skipif(
    sys.version_info < (3, 12) and IMPLEMENTATION == "python",
    reason="the pure-Python core is a buffer through PEP 688 (__buffer__, 3.12+); 3.11 uses as_memoryview()",
)


def pooled(data: bytes) -> tuple[BufferPool, IoBufMut]:
    pool = BufferPool(config(64, 64, 4, alignment=64))
    buf = pool.try_alloc(64)
    buf.put_slice(data)
    return pool, buf


@is_a_buffer
def test_memoryview_of_iobufmut_is_writable_and_sees_readable_bytes() -> None:
    """memoryview(IoBufMut) exposes exactly the readable bytes, writable."""
    _, buf = pooled(b"hello")
    with memoryview(buf) as view:
        assert bytes(view) == b"hello" and not view.readonly
        view[0] = ord("J")
    assert bytes(buf) == b"Jello"


@is_a_buffer
def test_memoryview_of_iobuf_is_read_only() -> None:
    """memoryview(IoBuf) is read-only; a consumer that needs a writable buffer refuses it."""
    _, buf = pooled(b"frozen")
    frozen = buf.freeze()
    with memoryview(frozen) as view:
        assert view.readonly and bytes(view) == b"frozen"
    heap = IoBuf(b"heap bytes")
    assert bytes(memoryview(heap)) == b"heap bytes"
    with pytest.raises(TypeError, match="read-write"):
        io.BytesIO(b"").readinto(frozen)  # readinto asks for a writable buffer


@is_a_buffer
def test_buffer_protocol_views_pin_the_buffer() -> None:
    """A view or numpy array taken through __buffer__ keeps the memory out of the pool."""
    pool, buf = pooled(b"pinned")
    frozen = buf.freeze()
    arr = np.frombuffer(frozen, dtype=np.uint8)  # type: ignore[call-overload]  # IoBuf: a buffer at run time
    view = memoryview(frozen)
    del frozen
    assert allocated(pool, 64) == 1
    for _ in range(3):
        pool.try_alloc(64).put_slice(b"Z" * 64)
    assert bytes(arr) == b"pinned" and bytes(view) == b"pinned"
    del arr
    assert allocated(pool, 64) == 1
    view.release()
    assert allocated(pool, 64) == 0


@is_a_buffer
def test_sockets_and_files_accept_iobufs_directly() -> None:
    """sock.send, recv_into a view, and file.write take IoBuf/IoBufMut without as_memoryview()."""
    pool, buf = pooled(b"over the wire")
    a, b = socket.socketpair()
    with a, b:
        a.sendall(buf.freeze())
        target = pool.try_alloc(64)
        n = b.recv_into(target.spare_capacity())
        target.advance_mut(n)
        assert bytes(target) == b"over the wire"
    sink = io.BytesIO()
    sink.write(IoBufMut(b"file data"))
    assert sink.getvalue() == b"file data"


def test_windows_agree_on_every_kind_of_memory() -> None:
    """_fresh_window (a new view per call, for free-threaded builds) and _slice_window (a slice, for
    GIL builds) read the same bytes of the same object for bytes, ctypes-backed and empty memory at
    every kind of bound, and _window is the one the build needs."""
    for mv in (memoryview(b"abcdef"), shareable_view(memoryview(bytearray(b"abcdef"))), memoryview(b"")):
        n = len(mv)
        for a, b in ((0, n), (1, max(1, n - 1)), (n, n)):
            fresh = _fresh_window(mv, a, b)
            assert bytes(fresh) == bytes(_slice_window(mv, a, b)) == bytes(mv)[a:b]
            assert (fresh.format, fresh.ndim) == ("B", 1)
            assert fresh.obj is mv.obj
    assert _window is (_fresh_window if FREE_THREADED else _slice_window)
