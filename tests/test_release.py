"""Explicit release: ``release()`` and ``with``, for IoBufMut and IoBuf."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from iobuf import BufferPool, IoBuf, IoBufMut

from .helpers import PAGE, allocated, available, class_stats, config

pytestmark = pytest.mark.usefixtures("hot_path")


def pool_of(n: int = 2) -> BufferPool:
    """One page-sized class of ``n`` buffers, thread cache of 1."""
    return BufferPool(config(PAGE, PAGE, n, thread_cache_capacity=1))


def test_with_returns_the_buffer_to_this_threads_cache_at_exit() -> None:
    """``with pool.alloc(n) as buf`` gives the buffer back when the block ends,
    even though ``buf`` is still bound; the object is then empty and detached."""
    pool = pool_of()
    with pool.alloc(PAGE) as buf:
        buf.put_slice(b"abc")
        assert allocated(pool, PAGE) == 1
    assert (allocated(pool, PAGE), class_stats(pool, PAGE).local_free) == (0, 1)
    assert (len(buf), buf.capacity, buf.is_pooled) == (0, 0, False)
    with pytest.raises(ValueError, match="frozen or converted"):
        buf.put_slice(b"x")
    buf.release()  # a second release does nothing
    assert available(pool, PAGE) == 1


def test_release_refuses_while_a_view_is_alive_and_changes_nothing() -> None:
    """``BufferError`` while a memoryview or numpy array of the buffer lives; the
    buffer keeps its bytes and stays usable; once the views go, release works."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    buf.put_slice(b"abc")
    view = buf.as_memoryview()
    arr = np.frombuffer(buf.spare_capacity(), np.uint8)
    with pytest.raises(BufferError, match="memoryviews"):
        buf.release()
    assert buf == b"abc" and buf.is_pooled and allocated(pool, PAGE) == 1
    del view
    with pytest.raises(BufferError):
        buf.release()
    del arr
    buf.release()
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_release_of_a_frozen_buffer_waits_for_the_last_share() -> None:
    """An IoBuf's release lets go of its share only; the memory returns with the
    last share, and views of it keep their bytes until then."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    buf.put_slice(b"hello")
    a = buf.freeze()
    b = a.clone()
    view = a[1:3].as_memoryview()
    a.release()
    assert (len(a), a.is_pooled, allocated(pool, PAGE)) == (0, False, 1)
    with pytest.raises(BufferError):
        b.release()  # the last share, and a view is alive
    assert b == b"hello"
    assert bytes(view) == b"el"
    del view
    with b:
        pass
    assert (allocated(pool, PAGE), len(b)) == (0, 0)


def test_release_of_a_buffer_sharing_its_memory_keeps_the_split_off_part() -> None:
    """After a partial ``copy_to_bytes`` the IoBufMut shares its memory: its release
    lets go of its share and the IoBuf still reads its bytes."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    buf.put_slice(b"headbody")
    head = buf.copy_to_bytes(4)
    buf.release()
    assert (len(buf), buf.capacity) == (0, 0)
    assert head == b"head" and allocated(pool, PAGE) == 1
    head.release()
    assert allocated(pool, PAGE) == 0


def test_release_returns_a_buffer_held_by_a_reference_cycle_without_the_collector() -> None:
    """Deterministic return where reference counting cannot give one."""
    pool = pool_of()

    class Node:
        pass

    node = Node()
    node.me = node  # type: ignore[attr-defined]
    node.buf = pool.alloc(PAGE)  # type: ignore[attr-defined]
    gc.disable()
    try:
        node.buf.release()  # type: ignore[attr-defined]
        assert allocated(pool, PAGE) == 0
    finally:
        gc.enable()
    del node
    gc.collect()
    assert (allocated(pool, PAGE), available(pool, PAGE)) == (0, 1)


def test_release_gives_the_buffer_to_the_calling_threads_cache() -> None:
    """A buffer allocated in one thread and released in another lands in the
    releasing thread's cache, right away."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    seen: list[int] = []
    ready = threading.Event()

    def worker() -> None:
        buf.release()
        seen.append(class_stats(pool, PAGE).local_free)
        ready.set()

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    t.join()
    assert seen == [1]
    assert class_stats(pool, PAGE).local_free == 0


def test_release_after_close_frees_instead_of_parking() -> None:
    """A buffer released after its pool closed is freed, not parked."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    pool.close()
    buf.release()
    assert class_stats(pool, PAGE).global_free == class_stats(pool, PAGE).local_free == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: IoBufMut(b"heap"),
        lambda: IoBufMut.with_alignment(64, 64),
        lambda: IoBuf(b"bytes"),
        lambda: IoBufMut(b"frozen").freeze(),
    ],
    ids=["heap", "aligned", "bytes", "frozen-heap"],
)
def test_release_of_untracked_memory_detaches_and_views_stay_valid(make: object) -> None:
    """Untracked memory is freed by CPython when unreferenced: release only
    detaches, and a view taken before keeps its bytes."""
    obj = make()  # type: ignore[operator]
    obj_bytes = bytes(obj)
    view = obj.as_memoryview()
    obj.release()
    assert len(obj) == 0 and not obj.is_pooled
    assert bytes(view) == obj_bytes
    obj.release()


def test_scrubbing_pool_scrubs_a_released_buffer() -> None:
    """Release takes the same return path as a drop: scrubbing and tracking apply."""
    pool = BufferPool(config(PAGE, PAGE, 1).with_scrub_on_return(True).with_track_allocations(True))
    buf = pool.alloc(PAGE)
    buf.put_slice(b"secret")
    assert len(pool.outstanding()) == 1
    buf.release()
    assert pool.outstanding() == []
    again = pool.alloc(PAGE)
    again.set_len(6)
    assert again == bytes(6)


def _after_first_count(action: Callable[[], object]) -> Callable[[], None]:
    """Run ``action`` once, right after the first ``_view_refs`` count returns: the
    moment a finalizer or signal handler could run between a count and the act."""
    from iobuf import _views

    done: list[object] = []

    def hook(frame: Any, event: str, arg: object) -> None:
        if event == "return" and frame.f_code is _views._view_refs.__code__ and not done:
            done.append(action())

    def install() -> None:
        sys.setprofile(hook)

    return install


def _profiled(install: Callable[[], None], call: Callable[[], object]) -> object:
    install()
    try:
        return call()
    finally:
        sys.setprofile(None)


@pytest.mark.pure_core
def test_a_clone_made_during_an_iobufs_release_keeps_the_memory() -> None:
    """A holder that appears between release's count and its act (a finalizer
    cloning the frame) is seen by the recount: the memory stays with it, unchanged."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    buf.put_slice(b"frame")
    frame = buf.freeze()
    clones: list[IoBuf] = []
    _profiled(_after_first_count(lambda: clones.append(frame.clone())), frame.release)
    assert len(frame) == 0 and clones[0] == b"frame"
    assert allocated(pool, PAGE) == 1
    others = [pool.try_alloc(PAGE)]
    others[0].put_slice(b"X" * PAGE)
    assert clones[0] == b"frame"
    clones.clear()
    del others
    assert allocated(pool, PAGE) == 0


@pytest.mark.pure_core
def test_a_view_made_during_a_shared_buffers_release_keeps_the_memory() -> None:
    """A view exported between release's count and its act keeps the memory:
    the recount sees it and the buffer returns only when the view goes."""
    pool = pool_of()
    buf = pool.alloc(PAGE)
    buf.put_slice(b"headbody")
    head = buf.copy_to_bytes(4)  # now the buffer is shared through a lease ...
    del head  # ... which the IoBufMut alone holds
    views: list[memoryview] = []
    _profiled(_after_first_count(lambda: views.append(buf.as_memoryview())), buf.release)
    assert len(buf) == 0 and bytes(views[0]) == b"body"
    assert allocated(pool, PAGE) == 1
    views.clear()
    assert allocated(pool, PAGE) == 0
