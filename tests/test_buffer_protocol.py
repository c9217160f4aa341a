"""IoBufMut and IoBuf are buffers (compiled core: every Python; pure Python: PEP 688, 3.12+),
and their views pin pooled memory."""

from __future__ import annotations

import io
import socket
import sys

import numpy as np
import pytest

from iobuf import IMPLEMENTATION, BufferPool, IoBuf, IoBufMut

from .helpers import allocated, config

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12) and IMPLEMENTATION == "python",
    reason="the pure-Python core is a buffer through PEP 688 (__buffer__, 3.12+); 3.11 uses as_memoryview()",
)


def pooled(data: bytes) -> tuple[BufferPool, IoBufMut]:
    pool = BufferPool(config(64, 64, 4, alignment=64))
    buf = pool.try_alloc(64)
    buf.put_slice(data)
    return pool, buf


def test_memoryview_of_iobufmut_is_writable_and_sees_readable_bytes() -> None:
    """memoryview(IoBufMut) exposes exactly the readable bytes, writable."""
    _, buf = pooled(b"hello")
    with memoryview(buf) as view:
        assert bytes(view) == b"hello" and not view.readonly
        view[0] = ord("J")
    assert bytes(buf) == b"Jello"


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


def test_buffer_protocol_views_pin_the_buffer() -> None:
    """A view or numpy array taken through __buffer__ keeps the memory out of the pool."""
    pool, buf = pooled(b"pinned")
    frozen = buf.freeze()
    arr = np.frombuffer(frozen, dtype=np.uint8)
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
