"""Vectored I/O with iobuf buffers: complete writes and reads into pooled memory.

What it owns: moving the bytes of an ``IoBufs``/``IoBuf``/``IoBufMut``/bytes-like
to a socket (``sendmsg``) or a file descriptor (``writev``, ``pwritev`` at an
offset) *completely*, and reading from them into pooled buffers, returning
frozen ``IoBuf`` views of exactly what was read.

Invariants:
- Every argument is checked before any system call and before the data is
  looked at: ``fd`` (an int-like in ``0..2**31-1``, or an object whose
  ``fileno()`` returns one), then ``offset`` (``0..`` the largest ``off_t``),
  then the data's type. Wrong types are ``TypeError``, bad values
  ``ValueError``, each naming the parameter and the value (never an
  ``OverflowError`` from ``os``).
- The write helpers *borrow* their data: they never consume, advance, freeze or
  resize it. After the call, returned or raised, an ``IoBufMut``, ``IoBuf``,
  ``IoBufs`` or bytes-like argument has the same length and bytes as before
  and is still the caller's to use (an ``IoBufMut`` stays writable and pooled).
  They read through views: pooled memory through exported views (which pin
  it: it cannot go back to the pool while the kernel may read it, whatever
  another thread does with the owner), untracked memory through internal
  views (any view keeps it alive; an exported one would only make a later
  ``try_into_mut`` refuse). All are released before the helper returns.
- A write call passes at most ``IOV_MAX`` buffers to the kernel at once and
  loops over partial writes until every byte is written (or an ``OSError``
  propagates; then the caller cannot know how much went out, as with
  ``socket.sendall``).
- Reads return what was read (``b""``-like empty IoBuf at end of file); the
  ``*_exactly`` forms loop until ``n`` bytes or raise ``EOFError``.

Thread safety: as safe as the target (sockets and fds may be used from any
thread; interleaving two writers on one target interleaves their bytes). The
data must not be mutated by another thread during a write (as for any
``sendall``); pooled memory stays pinned even then.
Blocking only: for non-blocking sockets use the asyncio adapter (``_aio``).
"""

from __future__ import annotations

import operator
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ._chain import IoBufs
from ._errors import check_nonneg, check_size
from ._impl import IoBuf, IoBufMut, _as_bytes
from ._pool import BufferPool

if TYPE_CHECKING:
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

# os.* take an fd as a C int: file descriptors are 0..INT_MAX.
_FD_MAX: Final = 2**31 - 1
# CPython is built with large-file support on Linux and macOS: off_t is 64-bit.
_OFF_T_MAX: Final = 2**63 - 1


# -- argument checks -----------------------------------------------------------------


def _check_fd_number(name: str, value: object) -> int:
    """``value`` as an fd: int-like (``operator.index``, not ``bool``) in ``0.._FD_MAX``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a file descriptor (an int), not bool ({value!r})")
    try:
        fd = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a file descriptor (an int), not {type(value).__name__}") from None
    if not 0 <= fd <= _FD_MAX:
        raise ValueError(f"{name} must be a file descriptor in 0..{_FD_MAX}, got {fd}")
    return fd


def _fd_of(target: object, name: str) -> int:
    """The fd of ``target``: an int-like fd, or an object with ``fileno()`` returning one."""
    if isinstance(target, bool) or hasattr(target, "__index__"):
        return _check_fd_number(name, target)
    fileno = getattr(target, "fileno", None)
    if fileno is None:
        raise TypeError(f"{name} must be a file descriptor or have fileno(), not {type(target).__name__}")
    return _check_fd_number(f"{name}.fileno()", fileno())


def _check_offset(name: str, value: object) -> int:
    """A file offset: an ``int`` in ``0.._OFF_T_MAX``, else ``TypeError``/``ValueError`` naming ``name``."""
    offset = check_size(name, value)
    if offset < 0:
        raise ValueError(f"{name} must be >= 0, got {offset}")
    if offset > _OFF_T_MAX:
        raise ValueError(f"{name} must be <= {_OFF_T_MAX} (the largest off_t), got {offset}")
    return offset


def _check_pool(pool: object) -> None:
    """``TypeError`` naming ``pool`` unless it is a :class:`~iobuf.BufferPool`."""
    if not isinstance(pool, BufferPool):
        raise TypeError(f"pool must be a BufferPool, not {type(pool).__name__}")


# -- borrowing views ---------------------------------------------------------------------


def _view_of(buf: IoBuf | IoBufMut) -> memoryview:
    """A view of ``buf``'s readable bytes that leaves ``buf`` as it is (see the module doc)."""
    return buf.as_memoryview() if buf.is_pooled else buf._read_view()


def _borrowed_views(data: IoBufs | BytesLike) -> list[memoryview]:
    """Views of ``data``'s bytes in order, none empty; the caller releases them.

    ``TypeError`` (naming ``data``) if it is not an IoBufs or bytes-like object.
    """
    if isinstance(data, IoBufs):
        return [_view_of(chunk) for chunk in data._chunks]
    view = _view_of(data) if isinstance(data, (IoBuf, IoBufMut)) else _as_bytes(data, "data")
    if view:
        return [view]
    view.release()
    return []


def _release_views(views: list[memoryview]) -> None:
    """Release every view in ``views``."""
    for view in views:
        view.release()


def _write_views(views: list[memoryview], write: Callable[[list[memoryview], int], int], call: str) -> int:
    """Hand ``views`` to ``write(batch, done)`` until every byte is written; returns the total.

    ``batch`` is at most ``IOV_MAX`` views, the first one starting where the
    last partial write stopped; ``done`` counts the bytes written so far.
    """
    total = 0
    for view in views:
        total += len(view)
    done = 0
    first = 0  # the first view not completely written
    skip = 0  # bytes of views[first] already written
    count = len(views)
    while first < count:
        batch = views[first : first + IOV_MAX]
        if skip:
            head = batch[0] = batch[0][skip:]
            try:
                written = write(batch, done)
            finally:
                head.release()
        else:
            written = write(batch, done)
        if written <= 0:
            raise OSError(f"{call} wrote 0 bytes")
        done += written
        written += skip
        while first < count and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        skip = written
    return total


def frozen_result(buf: IoBufMut) -> IoBuf:
    """What a read returns: ``buf`` frozen, or, if nothing was read, an empty
    detached IoBuf, with ``buf`` given back at once (an empty frozen pooled
    buffer would keep the buffer out of the pool for as long as it lives)."""
    if not buf:
        buf.release()
        return IoBuf()
    return buf.freeze()


# -- writes --------------------------------------------------------------------------------


def send_all(sock: socket.socket, data: IoBufs | BytesLike) -> int:
    """Send every byte of ``data`` with ``sock.sendmsg``, looping over partial sends.

    Returns the number of bytes sent (``len(data)``). ``data`` is borrowed: it is
    left as it was, whether the call returns or raises.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    views = _borrowed_views(data)
    try:
        return _write_views(views, lambda batch, done: sock.sendmsg(batch), "sendmsg")
    finally:
        _release_views(views)


def write_all(fd: object, data: IoBufs | BytesLike) -> int:
    """Write every byte of ``data`` to a file descriptor with ``os.writev``.

    ``fd`` is an int or an object with ``fileno()``. Returns ``len(data)``.
    ``data`` is borrowed: it is left as it was, whether the call returns or raises.
    """
    fileno = _fd_of(fd, "fd")
    views = _borrowed_views(data)
    try:
        return _write_views(views, lambda batch, done: os.writev(fileno, batch), "writev")
    finally:
        _release_views(views)


def _pwrite_views(fd: int, views: list[memoryview], offset: int) -> int:
    """Write all of ``views`` at ``offset`` with ``os.pwritev`` (checked arguments; views not released)."""
    return _write_views(views, lambda batch, done: os.pwritev(fd, batch, offset + done), "pwritev")


def pwrite_all(fd: object, data: IoBufs | BytesLike, offset: int) -> int:
    """Write every byte of ``data`` at ``offset`` with ``os.pwritev`` (file position unchanged).

    Returns ``len(data)``. ``data`` is borrowed: it is left as it was, whether
    the call returns or raises.
    """
    fileno = _fd_of(fd, "fd")
    position = _check_offset("offset", offset)
    views = _borrowed_views(data)
    try:
        return _pwrite_views(fileno, views, position)
    finally:
        _release_views(views)


# -- reads -----------------------------------------------------------------------------------


def recv_into_pool(sock: socket.socket, pool: BufferPool, n: int) -> IoBuf:
    """One ``recv_into`` of up to ``n`` bytes into a pooled buffer; an empty IoBuf at EOF."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    _check_pool(pool)
    want = check_nonneg("n", n)
    buf = pool.alloc(max(want, 1))
    if want:
        spare = buf.spare_capacity()
        try:
            got = sock.recv_into(spare, want)
        finally:
            spare.release()
        buf.advance_mut(got)
    return frozen_result(buf)


def recv_exactly(sock: socket.socket, pool: BufferPool, n: int) -> IoBuf:
    """Receive exactly ``n`` bytes into one pooled buffer; ``EOFError`` if the peer closes first."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    _check_pool(pool)
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
    return frozen_result(buf)


def pread_into_pool(fd: object, pool: BufferPool, n: int, offset: int) -> IoBuf:
    """Read up to ``n`` bytes at ``offset`` with ``os.preadv`` into a pooled buffer.

    Loops over short reads until ``n`` bytes or end of file; returns what was read.
    """
    fileno = _fd_of(fd, "fd")
    _check_pool(pool)
    want = check_nonneg("n", n)
    position = _check_offset("offset", offset)
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
    return frozen_result(buf)
