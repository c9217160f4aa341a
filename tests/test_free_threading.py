"""Reading shared buffers from many threads at once, and the memory that makes it safe.

CPython 3.13t's memoryview is not thread-safe (python/cpython#155606): slicing
one memoryview object from several threads corrupts its managed buffer's export
count and releases views still in use; ``bytearray`` counts its exports
non-atomically too. On free-threaded builds iobuf therefore keeps shared memory
behind ``ctypes`` arrays and reads it through a fresh view per call (see
``_memory`` and ``_views``). The concurrent readers can only fail without the
GIL, so they skip where it is on; the check of which memory is ctypes-backed
runs on every build.
"""

from __future__ import annotations

import ctypes
import threading
import traceback
from collections.abc import Callable

import pytest

from iobuf import BufferPool, BufferPoolConfig, IoBuf, IoBufMut
from iobuf._memory import aligned_block

from .helpers import FREE_THREADED, PAGE, without_gil

THREADS = 4
ROUNDS = 20_000  # runs only without the GIL, where a few thousand rounds show the bug


@pytest.mark.pure_core
def test_memory_other_threads_may_view_is_ctypes_backed_exactly_on_free_threaded_builds() -> None:
    """GIL builds keep the plain bytearray/mmap blocks (the allocation hot path is unchanged)."""
    pool = BufferPool(BufferPoolConfig(min_size=64, max_size=PAGE, max_per_class=4, alignment=64))
    small, page = pool.try_alloc(64), pool.try_alloc(PAGE)
    heap = IoBufMut(b"heap bytes")
    frozen_heap = IoBufMut(b"frozen heap").freeze()
    exported = IoBufMut(b"exported")
    view = exported.as_memoryview()
    for mv in (
        small._mv,
        page._mv,
        aligned_block(100, 64, pooled=False),
        aligned_block(2 * PAGE, 64, pooled=False),
    ):
        assert isinstance(mv.obj, ctypes.Array) is FREE_THREADED
    assert isinstance(frozen_heap._mv.obj, ctypes.Array) is FREE_THREADED
    assert isinstance(exported._mv.obj, ctypes.Array) is FREE_THREADED
    assert type(heap._mv.obj) is bytearray  # one owner, never seen by another thread
    view[0] = ord("E")
    assert bytes(exported) == b"Exported"
    assert bytes(frozen_heap) == b"frozen heap"


def _hammer(readers: list[Callable[[], None]]) -> list[str]:
    start = threading.Barrier(len(readers))
    failures: list[str] = []

    def run(read: Callable[[], None]) -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                read()
        except BaseException:
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=run, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


@without_gil
@pytest.mark.usefixtures("contended")
@pytest.mark.parametrize("kind", ["pooled", "pooled-page", "heap", "bytes", "split"])
def test_one_iobuf_read_from_many_threads_at_once(kind: str) -> None:
    """The same IoBuf object (and its clones) read concurrently: every read sees its bytes.

    Without fresh per-call views this fails on 3.13t within a few thousand
    rounds with "operation forbidden on released memoryview object". Skipped
    with the GIL: what it races (memoryview and bytearray export counts, in C)
    is atomic under the GIL, and the one Python-level check-then-act on the read
    path (the first exporter of a lease) is forced deterministically by
    ``test_safety``'s scripted two-thread test instead.
    """
    pool = BufferPool(BufferPoolConfig(min_size=64, max_size=PAGE, max_per_class=8, alignment=64))
    data = bytes(range(200))
    mut: IoBufMut | None = None
    if kind == "bytes":
        shared = IoBuf(data)
    elif kind == "heap":
        shared = IoBufMut(data).freeze()
    elif kind == "split":  # an IoBufMut keeps writing past the IoBuf it split off
        mut = pool.try_alloc(PAGE)
        mut.put_slice(data + b"tail")
        shared = mut.copy_to_bytes(len(data))
    else:
        buf = pool.try_alloc(PAGE if kind == "pooled-page" else 256)
        buf.put_slice(data)
        shared = buf.freeze()
    empty = IoBuf()
    detached = IoBufMut(b"x")
    detached.freeze()

    def read_whole() -> None:
        assert bytes(shared) == data
        assert shared == data
        assert bytes(empty) == b"" and bytes(detached) == b""

    def read_parts() -> None:
        part = shared.slice(10, 20)
        assert bytes(part) == data[10:20]
        assert bytes(shared.as_memoryview()[5:9]) == data[5:9]
        assert shared[3] == data[3]

    def read_clones() -> None:
        clone = shared.clone()
        assert bytes(clone[100:]) == data[100:]
        assert IoBufMut(clone) == data

    def write_owner() -> None:
        if mut is not None:  # writes beyond the shared bytes, reads its own
            if mut.capacity - len(mut) < 8:
                mut.clear()
            mut.put_slice(b"12345678")
            assert bytes(mut)[-8:] == b"12345678"
        else:
            read_whole()

    failures = _hammer([read_whole, read_parts, read_clones, write_owner])
    assert failures == [], failures[:2]
    assert bytes(shared) == data
