"""Vectored I/O with iobuf buffers: complete writes and reads into pooled memory.

What it owns: moving the bytes of an ``IoBufs``/``IoBuf``/``IoBufMut``/bytes-like
to a socket (``sendmsg``) or a file descriptor (``writev``, ``pwritev`` at an
offset) *completely*, and reading from them into pooled buffers, returning
frozen ``IoBuf`` views of exactly what was read.

Invariants:
- A write call passes at most ``IOV_MAX`` buffers to the kernel at once and
  loops over partial writes until every byte is written (or an ``OSError``
  propagates; then the caller cannot know how much went out, as with
  ``socket.sendall``).
- The caller's objects are never consumed: writes walk a private clone.
- The memoryviews given to the kernel are exported views (they pin pooled
  memory for the duration of the call) and are released right after it.
- Reads return what was read (``b""``-like empty IoBuf at end of file); the
  ``*_exactly`` forms loop until ``n`` bytes or raise ``EOFError``.

Thread safety: as safe as the target (sockets and fds may be used from any
thread; interleaving two writers on one target interleaves their bytes).
Blocking only: for non-blocking sockets use the asyncio adapter (planned).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from ._chain import IoBufs
from ._errors import check_nonneg
from ._views import IoBuf

if TYPE_CHECKING:
    from ._pool import BufferPool
    from ._views import BytesLike

__all__ = [
    "IOV_MAX",
    "pread_into_pool",
    "pwrite_all",
    "recv_exactly",
    "recv_into_pool",
    "send_all",
    "write_all",
]


def _iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        value = -1
    # POSIX guarantees at least 16; Linux reports 1024.
    return value if value > 0 else 16


IOV_MAX = _iov_max()


def _as_chain(data: IoBufs | BytesLike) -> IoBufs:
    """A private chain over ``data`` (IoBufs are cloned, IoBufMut frozen, others wrapped)."""
    if isinstance(data, IoBufs):
        return data.clone()
    return IoBufs([data])


def _batch(chain: IoBufs) -> list[memoryview]:
    """Exported views of the first ``IOV_MAX`` chunks (the caller releases them)."""
    views = []
    for chunk in chain._chunks:
        views.append(chunk.as_memoryview())
        if len(views) == IOV_MAX:
            break
    return views


def _release(views: list[memoryview]) -> None:
    for v in views:
        v.release()


def _fd_of(target: object, name: str) -> int:
    if isinstance(target, int) and not isinstance(target, bool):
        if target < 0:
            raise ValueError(f"{name} must be a non-negative file descriptor, got {target}")
        return target
    fileno = getattr(target, "fileno", None)
    if fileno is None:
        raise TypeError(f"{name} must be a file descriptor or have fileno(), not {type(target).__name__}")
    fd = fileno()
    if not isinstance(fd, int):
        raise TypeError(f"{name}.fileno() must return an int")
    return fd


def send_all(sock: socket.socket, data: IoBufs | BytesLike) -> int:
    """Send every byte of ``data`` with ``sock.sendmsg``, looping over partial sends.

    Returns the number of bytes sent (``len(data)``).
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    chain = _as_chain(data)
    total = len(chain)
    while chain:
        views = _batch(chain)
        try:
            sent = sock.sendmsg(views)
        finally:
            _release(views)
        chain.advance(sent)
    return total


def write_all(fd: object, data: IoBufs | BytesLike) -> int:
    """Write every byte of ``data`` to a file descriptor with ``os.writev``.

    ``fd`` is an int or an object with ``fileno()``. Returns ``len(data)``.
    """
    fileno = _fd_of(fd, "fd")
    chain = _as_chain(data)
    total = len(chain)
    while chain:
        views = _batch(chain)
        try:
            written = os.writev(fileno, views)
        finally:
            _release(views)
        if written == 0:
            raise OSError("writev wrote 0 bytes")
        chain.advance(written)
    return total


def pwrite_all(fd: object, data: IoBufs | BytesLike, offset: int) -> int:
    """Write every byte of ``data`` at ``offset`` with ``os.pwritev`` (file position unchanged)."""
    fileno = _fd_of(fd, "fd")
    position = check_nonneg("offset", offset)
    chain = _as_chain(data)
    total = len(chain)
    while chain:
        views = _batch(chain)
        try:
            written = os.pwritev(fileno, views, position)
        finally:
            _release(views)
        if written == 0:
            raise OSError("pwritev wrote 0 bytes")
        chain.advance(written)
        position += written
    return total


def recv_into_pool(sock: socket.socket, pool: BufferPool, n: int) -> IoBuf:
    """One ``recv_into`` of up to ``n`` bytes into a pooled buffer; an empty IoBuf at EOF."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    want = check_nonneg("n", n)
    buf = pool.alloc(max(want, 1))
    if want:
        spare = buf.spare_capacity()
        try:
            got = sock.recv_into(spare, want)
        finally:
            spare.release()
        buf.advance_mut(got)
    return buf.freeze()


def recv_exactly(sock: socket.socket, pool: BufferPool, n: int) -> IoBuf:
    """Receive exactly ``n`` bytes into one pooled buffer; ``EOFError`` if the peer closes first."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    want = check_nonneg("n", n)
    buf = pool.alloc(max(want, 1))
    while len(buf) < want:
        spare = buf.spare_capacity()
        try:
            got = sock.recv_into(spare, want - len(buf))
        finally:
            spare.release()
        if got == 0:
            raise EOFError(f"connection closed after {len(buf)} of {want} bytes")
        buf.advance_mut(got)
    return buf.freeze()


def pread_into_pool(fd: object, pool: BufferPool, n: int, offset: int) -> IoBuf:
    """Read up to ``n`` bytes at ``offset`` with ``os.preadv`` into a pooled buffer.

    Loops over short reads until ``n`` bytes or end of file; returns what was read.
    """
    fileno = _fd_of(fd, "fd")
    want = check_nonneg("n", n)
    position = check_nonneg("offset", offset)
    buf = pool.alloc(max(want, 1))
    while len(buf) < want:
        spare = buf.spare_capacity()
        try:
            got = os.preadv(fileno, [spare[: want - len(buf)]], position)
        finally:
            spare.release()
        if got == 0:
            break
        buf.advance_mut(got)
        position += got
    return buf.freeze()
