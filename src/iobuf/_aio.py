"""asyncio streams that receive straight into pooled buffers.

What it owns: :class:`PooledReader`, an ``asyncio.BufferedProtocol`` whose
``get_buffer`` hands the event loop the spare capacity of a pooled buffer and
which serves the received bytes as :class:`~iobuf.IoBuf` objects
(``readexactly``, ``readuntil``, ``readline``, ``read``); :class:`PooledWriter`, which
writes IoBuf/IoBufs without copying them first; and the
:func:`open_connection`/:func:`start_server` helpers shaped like asyncio's.

Invariants:
- Received bytes live in the pooled buffer they were received into: each
  ``buffer_updated`` splits the new bytes off that buffer as an IoBuf sharing
  its memory (adjacent pieces of one buffer are merged).
- What a read returns never pins more than itself when it is small: a result
  of at most ``copy_max`` bytes is a copy in memory of its own size (cheap at
  that size, and an application that keeps many small values would otherwise
  keep whole receive buffers alive). A larger result received into one buffer
  is a view of it (zero-copy); one that straddles buffers is copied once, into
  a buffer of the same pool (or into ``bytes`` when it is larger than the
  pool's largest class). ``readexactly_chain`` always returns views.
- Receive buffers are sized adaptively (``buffer_updated``): the size doubles
  after a receive that filled it and halves after two receives in a row that
  used under a quarter, within ``[MIN_GUESS, chunk_size]``. A read that has
  consumed everything and waits lets go of a receive buffer larger than
  ``IDLE_KEEP_MAX``, so an idle connection holds at most a small one.
- While a ``readexactly(n)`` waits, the loop is offered a buffer big enough
  for what it still needs, so frames start on buffer boundaries whenever the
  reader keeps up. For ``n`` above ``copy_max`` (up to ``FRAME_MAX``) that
  buffer holds the whole frame, from the heap when the pool's classes are
  too small, and the frame's first bytes, if buffered, move into it: the
  frame comes back as one view, having copied at most what was buffered.
  (Frames that arrive before anyone reads them still straddle receive
  buffers and are copied once when read.)
- Flow control, two reasons to pause reading, each lifted independently:
  *high water* (more than ``high_water`` bytes received and not yet read;
  resumes once reads bring it below) and *starved* (the pool's class is
  exhausted; the loop gets one small heap buffer for the read already under
  way, then reading pauses and resumes as soon as the pool can serve a buffer
  again, checked on every read call and by a timer with backoff).
- Neither reason pauses a read that waits for more bytes than are buffered:
  a frame larger than ``high_water`` must still arrive, and the unread bytes
  may be the very ones that exhaust the pool, so a starved reader with a
  waiting read receives into heap buffers (``heap_fallbacks`` counts them; the
  pool counts each refusal in ``exhausted_total``). Exhaustion slows a reader
  but never stops one. Memory use is therefore bounded by the pool plus what
  waiting reads ask for, not by the peer.
- Once the connection is lost the reader takes no pool buffer again: the retry
  timer is cancelled and pause bookkeeping stops where there is no transport.
- Reads build their result before taking anything from the buffer, so a read
  that raises (a closed pool, cancellation) leaves the buffered bytes as they
  were. The exceptions that take bytes are StreamReader's own:
  ``IncompleteReadError`` at EOF takes them into its ``partial``, and an
  overlong ``readline`` drops the line.
- ``readuntil``/``readline`` follow ``asyncio.StreamReader`` step for step:
  ``limit`` excludes the separator, ``LimitOverrunError.consumed`` is where the
  separator starts, or how far the buffer was searched without finding one; an
  overlong ``readline`` raises ``ValueError``. Separators are any bytes-like
  object or (3.13's form, on every version) a tuple of them.
- A connection lost with an error is not an end of stream: as with
  ``StreamReader.set_exception``, every read raises that error first, even
  with bytes still buffered, and ``at_eof()`` stays false.
- A pool closed under a live connection: receive buffers come from the heap
  from then on (``get_buffer`` must not raise, or the loop aborts the
  transport and what is in flight is lost); reads that would copy into the
  pool raise ``PoolClosed`` and leave the buffered bytes in place.

Thread safety: like asyncio's streams, an object belongs to the event loop
that created it; call it only from that loop's thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
from asyncio import selector_events
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, cast

from ._chain import IoBufs, front_views
from ._errors import Exhausted, Oversized, PoolClosed, PoolError, check_nonneg, check_positive
from ._impl import (
    IoBuf,
    IoBufMut,
    _empty_iobuf,
    commit_received,
    reclaim_received,
    sendable,
    split_filled,
    take_front,
)
from ._pool import BufferPool

if TYPE_CHECKING:
    from ._views import BytesLike

__all__ = ["PooledReader", "PooledWriter", "open_connection", "start_server"]

#: The largest receive buffer, capped at the pool's largest class, unless a waiting
#: ``readexactly`` needs more (asyncio's own sockets receive at most 256 KiB at once).
DEFAULT_CHUNK: Final = 1 << 18
#: The first receive buffer's size; later ones adapt to what arrives (see ``buffer_updated``).
FIRST_GUESS: Final = 1 << 14
#: The smallest adaptive receive size, and the least spare room worth offering the loop.
MIN_GUESS: Final = 1 << 10
#: The largest receive buffer a reader keeps while it waits with nothing buffered.
IDLE_KEEP_MAX: Final = 1 << 12
#: Reads of at most this many bytes are copied out of the receive buffer (see ``copy_max``).
DEFAULT_COPY_MAX: Final = 1 << 16
#: The largest receive buffer sized for one waiting ``readexactly``.
FRAME_MAX: Final = 1 << 26
#: ``readuntil``'s default limit, as asyncio's streams.
DEFAULT_LIMIT: Final = 1 << 16
#: Retry delays (seconds) while starved: doubling from the first to the last.
_RETRY_FIRST: Final = 0.001
_RETRY_LAST: Final = 0.05
# asyncio.StreamReader.readuntil's messages (CPython 3.11).
_SEPARATOR_NOT_FOUND: Final = "Separator is not found, and chunk exceed the limit"
_SEPARATOR_TOO_FAR: Final = "Separator is found, but chunk is longer than limit"

ClientConnected = Callable[["PooledReader", "PooledWriter"], "Awaitable[None] | None"]

#: Whether asyncio's selector transport joins ``writelines``' pieces into one
#: copy (before 3.12; from 3.12 it sends them with ``sendmsg`` itself).
_JOINS: Final = sys.version_info < (3, 12)
#: The least bytes a ``writelines`` sends with its own ``sendmsg`` on 3.11 (less is
#: joined, as the transport does: a copy that small costs less than the call).
GATHER_MIN: Final = 1 << 13
#: The most pieces one ``sendmsg`` takes (more go through the transport).
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
#: asyncio's plain socket transport (typeshed does not declare the private class).
_SELECTOR_SOCKET: Final[type] = getattr(selector_events, "_SelectorSocketTransport")  # noqa: B009


class PooledReader(asyncio.BufferedProtocol):
    """The receiving side of a connection: an ``asyncio.BufferedProtocol`` and a stream reader.

    Use it through :func:`open_connection`/:func:`start_server`, or pass
    ``lambda: PooledReader(pool)`` to ``loop.create_connection``. Reads return
    :class:`~iobuf.IoBuf` objects: up to ``copy_max`` bytes (64 KiB) a copy
    of their own size, larger ones views of the receive buffer they arrived
    in (drop them, or keep ``view.compact()``, to give the buffer back).

    ``chunk_size`` is the largest receive buffer (256 KiB, capped at the
    pool's largest class); ``high_water`` the unread bytes above which reading
    pauses (``16 * chunk_size``); ``limit`` as ``asyncio.StreamReader``'s.
    """

    def __init__(
        self,
        pool: BufferPool,
        *,
        chunk_size: int | None = None,
        high_water: int | None = None,
        limit: int = DEFAULT_LIMIT,
        copy_max: int = DEFAULT_COPY_MAX,
        client_connected_cb: ClientConnected | None = None,
    ) -> None:
        if not isinstance(pool, BufferPool):
            raise TypeError(f"pool must be a BufferPool, not {type(pool).__name__}")
        self._pool = pool
        if chunk_size is None:
            chunk_size = min(DEFAULT_CHUNK, pool.config.max_size)
        self._chunk_size = check_positive("chunk_size", chunk_size)
        high = 16 * self._chunk_size if high_water is None else check_positive("high_water", high_water)
        self._high = high
        self._limit = check_positive("limit", limit)
        self._copy_max = check_nonneg("copy_max", copy_max)
        self._guess = min(FIRST_GUESS, self._chunk_size)  # the next receive buffer's size
        self._small_reads = 0  # receives in a row that used under a quarter of the guess
        self._min_spare = min(MIN_GUESS, self._chunk_size)  # less spare room: a fresh buffer
        self._chain = IoBufs()
        self._cur: IoBufMut | None = None
        self._cur_size = 0  # the receive buffer's whole capacity (_cur is what is left of it)
        self._want = 0  # bytes a waiting read needs buffered (0: none waiting)
        self._whole = False  # whether the waiting read wants them as one view (readexactly)
        self._waiter: asyncio.Future[None] | None = None
        # The loop, kept from connection_made: on 3.11 asyncio.get_running_loop()
        # makes a getpid() system call each time, once per wait on the hot path.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eof = False
        self._exc: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self._over_high = False
        self._starved = False
        self._paused = False
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = _RETRY_FIRST
        self._write_paused = False
        self._lost = False
        self._drain_waiters: deque[asyncio.Future[None]] = deque()
        self._closed: asyncio.Future[None] | None = None
        self._connected_cb = client_connected_cb
        self._task: asyncio.Task[None] | None = None
        self._copied = 0
        self._heap_fallbacks = 0

    # -- facts -------------------------------------------------------------------------

    @property
    def pool(self) -> BufferPool:
        return self._pool

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return len(self._chain)

    @property
    def copied_bytes(self) -> int:
        """Bytes copied because they straddled receive buffers: by reads, and
        into the buffer a waiting large ``readexactly`` receives its frame in.

        Not counted: reads of at most ``copy_max`` bytes from one receive
        buffer, which are copied out by design (so that they pin no receive buffer).
        """
        return self._copied

    @property
    def chunk_size(self) -> int:
        """The largest receive buffer (a waiting ``readexactly`` may get a larger one)."""
        return self._chunk_size

    @property
    def high_water(self) -> int:
        """Unread bytes above which reading pauses (unless a read waits for more)."""
        return self._high

    @property
    def copy_max(self) -> int:
        """Reads of at most this many bytes return a copy; larger ones return views."""
        return self._copy_max

    @property
    def heap_fallbacks(self) -> int:
        """Receive buffers that came from the heap because the pool's class was exhausted."""
        return self._heap_fallbacks

    @property
    def reading_paused(self) -> bool:
        """Whether this reader has paused the transport (high water or an exhausted pool)."""
        return self._paused

    @property
    def starved(self) -> bool:
        """Whether the pool had no buffer to receive into (and has not served one
        since); reading pauses for it unless a read waits for more than is buffered."""
        return self._starved

    def at_eof(self) -> bool:
        """True once the peer has closed its side and every byte has been read."""
        return self._eof and not self._chain

    def exception(self) -> BaseException | None:
        return self._exc

    # -- asyncio.BufferedProtocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        loop = self._loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        cb = self._connected_cb
        if cb is not None:
            result = cb(self, PooledWriter(transport, self))
            if asyncio.iscoroutine(result):
                task = self._task = loop.create_task(result)
                task.add_done_callback(lambda done: _handler_done(done, transport))

    def get_buffer(self, sizehint: int) -> memoryview:
        cur = self._cur
        spare = 0 if cur is None else cur.capacity - len(cur)
        if spare < self._min_spare and cur is not None and reclaim_received(cur):
            # Everything received into it was read and dropped (copied out, as small
            # reads are): the same buffer again, from its start, not a fresh one.
            spare = cur.capacity
        need = self._want - self._chain._len
        if self._whole and need > 0:
            # A waiting large readexactly keeps a buffer that holds the rest of its
            # frame, however little room that is; it takes a new one only if that
            # can hold the whole frame (else each receive would pin another buffer),
            # or when this one is full.
            fresh = spare < need and (
                (self._want <= FRAME_MAX and not self._starved) or spare < self._min_spare
            )
        else:
            fresh = spare < self._min_spare or (need > spare and not self._chain._len)
        if fresh:
            cur = self._fresh_buffer()
        assert cur is not None
        return cur.spare_capacity()

    def _fresh_buffer(self) -> IoBufMut:
        """A new receive buffer with room for what a waiting read still needs.

        A waiting ``readexactly`` of more than ``copy_max`` bytes whose rest
        does not fit the current buffer gets a buffer for the whole frame (at
        least the adaptive size, so the frames after it can share it), and the
        frame's buffered first bytes move into it: a copy of part of the frame
        now instead of all of it when it is read.
        """
        chain = self._chain
        want = self._want
        guess = self._guess
        if self._whole and chain._len < want <= FRAME_MAX:
            # One buffer for the whole frame: from the heap when the pool's
            # classes are too small for it (the compiled core callocs it, so
            # its pages cost memory only as bytes arrive; the pure core's
            # bytearray is zeroed, every page, up front).
            fresh = self._next_buffer(max(want, guess))
            if chain._len and fresh.capacity >= want:  # (not a starved reader's small stand-in)
                for view in front_views(chain._chunks, chain._len):
                    fresh.put_slice(view)
                self._copied += chain._len
                chain._chunks.clear()
                chain._chunks.append(split_filled(fresh))
        else:
            # Otherwise receive what the waiting read needs if the pool holds it
            # in one buffer; a larger frame arrives in chunks and is copied once.
            need = want - chain._len
            fresh = self._next_buffer(need if guess < need <= self._pool.config.max_size else guess)
        self._cur = fresh
        self._cur_size = fresh.capacity
        return fresh

    def buffer_updated(self, nbytes: int) -> None:
        cur = self._cur
        assert cur is not None
        chain = self._chain
        if commit_received(cur, nbytes, chain._chunks):
            self._cur = None
        chain._len += nbytes
        # Adaptive receive size (as Netty's adaptive allocator): double after a
        # receive that filled the guess, halve after two in a row that used
        # under a quarter of it.
        guess = self._guess
        if nbytes >= guess:
            self._guess = min(guess * 2, self._chunk_size)
            self._small_reads = 0
        elif nbytes * 4 < guess and guess > MIN_GUESS:
            self._small_reads += 1
            if self._small_reads == 2:
                self._guess = max(guess // 2, MIN_GUESS)
                self._small_reads = 0
        else:
            self._small_reads = 0
        if chain._len >= self._want:
            self._wake()
        if chain._len >= self._high or self._starved:
            self._update_pause()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the transport open for writing; the writer closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is None:
            self._eof = True
        else:  # as StreamReader.set_exception: every read raises it, none sees EOF
            self._exc = exc
        self._cur = None  # the unused tail of the receive buffer goes back
        self._cancel_retry()
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self._drain_waiters.clear()
        closed = self._closed
        if closed is not None and not closed.done():
            closed.set_result(None)
        self._transport = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- reading -------------------------------------------------------------------------

    async def readexactly(self, n: int) -> IoBuf:
        """Exactly ``n`` bytes as one IoBuf.

        Up to ``copy_max`` bytes: a copy in memory of their own size. Larger:
        a view of the receive buffer they arrived in, or, if they straddle
        receive buffers, a copy in one buffer of the pool. Raises
        ``asyncio.IncompleteReadError`` (with the bytes that did arrive) if the
        stream ends first.
        """
        if self._exc is None:  # fast path: the bytes are in the first receive buffer
            chain = self._chain
            out = take_front(chain._chunks, n, self._copy_max)
            if out is not None:
                chain._len -= n
                if self._paused:
                    self._update_pause()
                return out
        count = check_nonneg("n", n)
        self._raise_pending()  # first, even with the bytes buffered (as StreamReader)
        if self._chain._len < count:
            await self._fill(count, whole=count > self._copy_max)
        return self._take(count)

    async def readexactly_chain(self, n: int) -> IoBufs:
        """Exactly ``n`` bytes as an :class:`~iobuf.IoBufs` chain, never copying.

        For vectored writes of what was received; raises
        ``asyncio.IncompleteReadError`` like :meth:`readexactly`.
        """
        count = check_nonneg("n", n)
        self._raise_pending()
        if len(self._chain) < count:
            await self._fill(count)
        out = self._chain.split_to(count)
        self._consumed()
        return out

    async def read(self, n: int = -1) -> IoBuf:
        """Up to ``n`` bytes (at least one unless the stream ended; empty at EOF).

        Only from the first receive buffer: up to ``copy_max`` bytes a copy,
        more a view of it. ``n < 0`` reads until EOF: one receive buffer's
        bytes as a view of it (whatever their size), several copied into one
        buffer of the pool.
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        self._raise_pending()
        if n == 0:
            return _empty_iobuf()
        if n < 0:
            while not self._eof:
                await self._wait(len(self._chain) + 1)
            self._raise_pending()
            chain = self._chain
            if chain._len <= self._copy_max:  # small: a copy of its own size, as every read
                out = IoBuf(bytes(chain))
            else:
                out = chain.coalesce_with_pool(self._pool)  # first: it may raise (a closed pool)
            if chain.chunk_count > 1:
                self._copied += len(chain)
            chain.advance(len(chain))
            self._consumed()
            return out
        chain = self._chain
        if not chain._len:
            if not self._eof:
                await self._wait(1)
            if not chain._len:
                self._raise_pending()
                return _empty_iobuf()
        count = min(n, len(chain._chunks[0]))
        taken = take_front(chain._chunks, count, self._copy_max)
        assert taken is not None  # the first chunk holds count bytes
        chain._len -= count
        self._consumed()
        return taken

    async def readuntil(self, separator: bytes | tuple[bytes, ...] = b"\n") -> IoBuf:
        """The bytes up to and including ``separator``, as ``asyncio.StreamReader.readuntil``.

        ``separator`` is any bytes-like object, or (as on Python 3.13+) a tuple
        of them: then the read ends at the match that ends first. Raises
        ``asyncio.LimitOverrunError`` if more than ``limit`` bytes (not counting
        the separator) come before it, or arrive without one; the bytes stay
        buffered. Raises ``asyncio.IncompleteReadError`` at EOF, with the bytes
        that did arrive, taken from the buffer.
        """
        if type(separator) is bytes and separator:
            # Fast path: a separator in the first receive buffer is the first one.
            while self._exc is None:
                chunks = self._chain._chunks  # (read again after a wait: split_to replaces it)
                if chunks:
                    start = chunks[0].find(separator)
                    if 0 <= start <= self._limit:
                        return self._take_found(start + len(separator))
                    break
                if self._eof:
                    break
                await self._wait(1)
        finders = _separators(separator)
        self._raise_pending()
        min_len = finders[0][0]
        max_len = finders[-1][0]
        # StreamReader's loop step for step, so that its limit checks see the same
        # lengths: no separator starts before ``offset``.
        offset = 0
        while True:
            size = len(self._chain)
            if size - offset >= min_len:
                match_start = match_end = -1
                for seplen, finder in finders:
                    start = self._find(finder, seplen, offset)
                    if start >= 0 and (match_end < 0 or start + seplen < match_end):
                        match_start, match_end = start, start + seplen
                if match_end >= 0:
                    if match_start > self._limit:
                        raise asyncio.LimitOverrunError(_SEPARATOR_TOO_FAR, match_start)
                    return self._take(match_end)
                offset = max(0, size + 1 - max_len)
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(_SEPARATOR_NOT_FOUND, offset)
            if self._eof:
                self._raise_pending()
                partial = bytes(self._chain.split_to(size))
                self._consumed()
                raise asyncio.IncompleteReadError(partial, None)
            await self._wait(size + 1)

    async def readline(self) -> IoBuf:
        """:meth:`readuntil` with ``b"\\n"``, as ``asyncio.StreamReader.readline``.

        Returns what is left at EOF instead of raising. A line longer than
        ``limit`` raises ``ValueError`` and is dropped: through its newline, or
        everything buffered if none was found.
        """
        while self._exc is None:  # fast path: a newline in the first receive buffer
            chunks = self._chain._chunks  # (read again after a wait: split_to replaces it)
            if chunks:
                start = chunks[0].find(b"\n")
                if 0 <= start <= self._limit:
                    return self._take_found(start + 1)
                break
            if self._eof:
                break
            await self._wait(1)
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return IoBuf(e.partial)
        except asyncio.LimitOverrunError as e:
            chain = self._chain
            # A newline that was found starts at e.consumed; without one,
            # e.consumed is the whole buffer (the separator is one byte).
            chain.advance(min(e.consumed + 1, len(chain)))
            self._consumed()
            raise ValueError(e.args[0]) from e

    def __aiter__(self) -> PooledReader:
        return self

    async def __anext__(self) -> IoBuf:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- internals ----------------------------------------------------------------------

    def _find(self, finder: re.Pattern[bytes], seplen: int, offset: int) -> int:
        """The start index of the first separator (``seplen`` bytes) at or after
        ``offset``, or -1. Searches each receive buffer in place, and only from
        ``offset`` on: the cost is the bytes not yet searched, however much is
        buffered. A separator across chunk boundaries is found in ``tail`` (the
        ``seplen - 1`` bytes before the chunk) joined to the chunk's head."""
        base = 0  # where the current chunk starts in the chain
        tail = b""
        for chunk in self._chain._chunks:
            end = base + chunk._end - chunk._start
            if end > offset:
                view = chunk._read_view()
                if tail:
                    joined = tail + bytes(view[: seplen - 1])
                    match = finder.search(joined, max(0, offset - (base - len(tail))))
                    if match is not None and match.start() < len(tail):
                        return base - len(tail) + match.start()
                match = finder.search(view, max(0, offset - base))
                if match is not None:
                    return base + match.start()
            if seplen > 1 and end > offset - seplen:
                tail = (tail + bytes(chunk._read_view()[-(seplen - 1) :]))[-(seplen - 1) :]
            base = end
        return -1

    def _take_found(self, count: int) -> IoBuf:
        """The first ``count`` bytes, which the first receive buffer holds."""
        chain = self._chain
        out = take_front(chain._chunks, count, self._copy_max)
        assert out is not None
        chain._len -= count
        if self._paused:
            self._update_pause()
        return out

    def _take(self, count: int) -> IoBuf:
        """The first ``count <= buffered`` bytes as one IoBuf, taken from the buffer.

        Within one receive buffer: as ``take_front`` (a copy up to ``copy_max``
        bytes, else a view). Straddling buffers: copied, and taken only once the
        copy is made, so a failure leaves them buffered.
        """
        chain = self._chain
        out = take_front(chain._chunks, count, self._copy_max)
        if out is not None:
            chain._len -= count
        else:
            out = self._copy_front(count)
            chain._drop_front(count)
            self._copied += count
        if self._paused:
            self._update_pause()
        return out

    def _copy_front(self, count: int) -> IoBuf:
        """A copy of the first ``count`` buffered bytes, which straddle receive
        buffers: in one buffer of the pool when the copy is larger than
        ``copy_max`` and a class holds it, else on the heap; takes nothing from
        the reader.

        A copy too large for every class goes to the heap as ``bytes`` (one
        pass into memory the allocator reuses), not to ``pool.alloc``'s
        fallback, which maps fresh pages for every buffer: with frames of 1 MiB
        read after they arrived (uvloop receives ahead of the reading task),
        the kernel's page faults and zeroing cost more than the copy itself.
        """
        views = front_views(self._chain._chunks, count)
        if count <= self._copy_max or count > self._pool.config.max_size:
            return IoBuf(b"".join(views))
        out = self._pool.alloc(count)
        for view in views:
            out.put_slice(view)
        return out.freeze()

    async def _fill(self, count: int, *, whole: bool = False) -> None:
        while len(self._chain) < count:
            if self._eof:
                self._raise_pending()
                partial = bytes(self._chain.split_to(len(self._chain)))
                self._consumed()
                raise asyncio.IncompleteReadError(partial, count)
            await self._wait(count, whole=whole)

    async def _wait(self, count: int, *, whole: bool = False) -> None:
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting for data on this reader")
        self._raise_pending()
        if not self._chain._len and self._cur_size > IDLE_KEEP_MAX:
            # Everything received was read: let go of a large receive buffer, so
            # an idle connection holds at most a small one (which a connection of
            # small messages reuses instead of taking a fresh one per message).
            # (No local names it: this frame stays suspended while it waits.)
            self._cur = None
        waiter = self._waiter = (self._loop or self._running_loop()).create_future()
        self._want = count
        self._whole = whole
        if self._paused:
            self._update_pause()  # a read that waits for more is a reason to resume
        try:
            await waiter
        finally:
            self._waiter = None
            self._want = 0
            self._whole = False

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this reader belongs to (known once the connection is made)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _raise_pending(self) -> None:
        exc = self._exc
        if exc is not None:
            raise exc

    def _consumed(self) -> None:
        if self._paused:
            self._update_pause()

    def _next_buffer(self, size: int) -> IoBufMut:
        """A receive buffer of at least ``size`` bytes, from the heap when the pool
        cannot serve one; an exhausted class instead starves the reader and
        gets a heap buffer of at most ``chunk_size``."""
        try:
            fresh = self._pool.try_alloc(size)
        except (Oversized, PoolClosed):
            # Too big for the pool, or the pool closed under a live connection:
            # receive into the heap rather than fail the transport (get_buffer
            # must return a buffer, or the loop aborts the connection).
            return IoBufMut.with_capacity(size)
        except Exhausted:
            self._starved = True
            self._heap_fallbacks += 1
            if self._retry is None and self._transport is not None:
                # The receive may bring nothing (no data left, or EOF), and then no
                # buffer_updated re-checks the pool: the retry does.
                self._retry = self._running_loop().call_later(self._retry_delay, self._retry_now)
            return IoBufMut.with_capacity(min(size, self._chunk_size))
        if self._starved:  # a waiting read kept reading going; the pool serves again
            self._starved = False
            self._cancel_retry()
        return fresh

    def _update_pause(self) -> None:
        """Recompute both pause reasons and pause or resume the transport."""
        transport = self._transport
        if transport is None:
            return  # the connection is gone (or not made): take no pool buffer for it
        # Neither reason holds while a waiting read needs more than is buffered
        # (see the module notes: its progress may need buffers the pool lacks).
        size = len(self._chain)
        waiting = self._want > size
        self._over_high = not waiting and size >= self._high
        if self._starved and not waiting:
            try:
                fresh = self._pool.try_alloc(self._chunk_size)
            except PoolError:  # exhausted, or closed: stay starved (this may run after a read took its bytes)
                pass
            else:
                # The heap stand-in holds no unread bytes (each receive is split off).
                self._cur = fresh
                self._cur_size = fresh.capacity
                self._starved = False
                self._cancel_retry()
        should_pause = self._over_high or (self._starved and not waiting)
        if should_pause and not self._paused:
            self._paused = True
            transport.pause_reading()
        elif not should_pause and self._paused:
            self._paused = False
            transport.resume_reading()
        if should_pause and self._starved and self._retry is None:
            self._retry = self._running_loop().call_later(self._retry_delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._retry_delay = min(self._retry_delay * 2, _RETRY_LAST)
        self._update_pause()
        if not self._starved:
            self._retry_delay = _RETRY_FIRST

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._retry_delay = _RETRY_FIRST

    async def _drain_helper(self) -> None:
        self._raise_pending()
        transport = self._transport
        if transport is not None and transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run, as asyncio's StreamWriter does
        if self._lost:
            self._raise_pending()
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        waiter = self._running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def __repr__(self) -> str:
        state = []
        if self._eof:
            state.append("eof")
        if self._paused:
            state.append("starved" if self._starved else "paused")
        return f"PooledReader(buffered={len(self._chain)}{''.join(', ' + s for s in state)})"


def _separators(separator: object) -> list[tuple[int, re.Pattern[bytes]]]:
    """``(length, finder)`` per separator, shortest first, checked as StreamReader does."""
    items = separator if isinstance(separator, tuple) else (separator,)
    if not items:
        raise ValueError("separator should contain at least one element")
    found = []
    for item in items:
        try:
            sep = bytes(memoryview(item))
        except TypeError:
            raise TypeError(
                f"separator must be bytes-like or a tuple of them, not {type(item).__name__}"
            ) from None
        if not sep:
            raise ValueError("separator should be at least one byte long")
        found.append((len(sep), _finder(sep)))
    found.sort(key=lambda pair: pair[0])
    return found


@functools.lru_cache(maxsize=64)
def _finder(sep: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(sep))


def _gather_send(transport: Any, views: list[Any], total: int) -> None:
    """``transport.writelines(views)`` (``total`` bytes) without 3.11's join,
    which copies every piece once before the transport sends or keeps them.

    When the transport holds nothing unsent, the pieces go out in one
    ``sendmsg``; what the socket does not take, and everything while the
    transport holds unsent bytes, is written to the transport piece by piece:
    it appends each to what it holds (one copy, where join-then-append makes
    two), sending only when it held nothing.

    Only for 3.11's plain ``_SelectorSocketTransport`` (never TLS, whose
    transport is another type), through the private state its ``write``
    checks first: after ``write_eof``, during a ``sendfile`` or once the
    connection is lost, everything goes through ``writelines`` as before. An
    error from ``sendmsg`` also does, so the transport meets it and reports it
    as it reports its own.
    """
    if transport._eof or transport._empty_waiter is not None or transport._conn_lost or len(views) > _IOV_MAX:
        transport.writelines(views)
        return
    # Byte-format views, all made before anything is written: the transport
    # slices what it keeps by bytes sent, and a bad piece must send nothing.
    pieces = [view if type(view) is bytes else memoryview(view).cast("B") for view in views]
    if not transport._buffer:
        try:
            sent = transport._sock.sendmsg(pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            transport.writelines(pieces)
            return
        if sent == total:
            return
        while pieces and sent >= len(pieces[0]):
            sent -= len(pieces.pop(0))
        if pieces:
            pieces[0] = memoryview(pieces[0])[sent:]  # (a view: the transport copies what it keeps)
    write = transport.write
    for piece in pieces:
        write(piece)


def _handler_done(task: asyncio.Task[Any], transport: asyncio.Transport) -> None:
    """As asyncio's ``start_server`` (3.12+): a connection whose handler failed or was
    cancelled is closed, and the handler's exception goes to the loop's exception handler."""
    if not task.cancelled():
        exc = task.exception()
        if exc is None:
            return
        task.get_loop().call_exception_handler(
            {
                "message": "Unhandled exception in client_connected_cb",
                "exception": exc,
                "transport": transport,
            }
        )
    transport.close()


class PooledWriter:
    """The sending side: ``write`` and ``writelines`` take IoBuf, IoBufMut, IoBufs
    or any bytes-like object.

    Buffers go to the transport as views of their memory (an IoBuf that wraps
    a whole ``bytes`` object, as small reads return, as that object); nothing
    is copied on our side. What the transport does with them: asyncio's selector transport
    sends what it can at once and keeps the views of the rest (3.12+, which
    pin pooled memory until sent) or a copy of it (3.11). Several pieces (an
    IoBufs, ``writelines``) go out in one ``sendmsg``: the transport's own on
    3.12+ and uvloop; on 3.11, whose transport would first join them into one
    copy, this writer's when they add up to ``GATHER_MIN`` (8 KiB) or more
    (see :func:`_gather_send`).
    """

    __slots__ = ("_transport", "_protocol", "_gathers")

    def __init__(self, transport: asyncio.Transport, protocol: PooledReader) -> None:
        self._transport = transport
        self._protocol = protocol
        # Whether writes of several pieces, GATHER_MIN bytes or more, use _gather_send.
        self._gathers = _JOINS and type(transport) is _SELECTOR_SOCKET

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: IoBufs | BytesLike) -> None:
        if type(data) is bytes:
            self._transport.write(data)
        elif isinstance(data, IoBuf):
            self._transport.write(sendable(data))
        elif isinstance(data, IoBufs):
            views = [c.as_memoryview() for c in data._chunks]
            if self._gathers and len(data) >= GATHER_MIN:
                _gather_send(self._transport, views, len(data))
            else:
                self._transport.writelines(views)
        elif isinstance(data, IoBufMut):
            self._transport.write(data.as_memoryview())
        else:
            self._transport.write(data)  # type: ignore[arg-type]

    def writelines(self, data: Iterable[IoBufs | BytesLike]) -> None:
        """Write every item in order with one transport call, as ``StreamWriter.writelines``."""
        views: list[Any] = []
        for item in data:
            if type(item) is bytes:
                views.append(item)
            elif isinstance(item, IoBuf):
                views.append(sendable(item))
            elif isinstance(item, IoBufMut):
                views.append(item.as_memoryview())
            elif isinstance(item, IoBufs):
                views.extend(c.as_memoryview() for c in item._chunks)
            else:  # (as bytes, so that len counts bytes, not items)
                views.append(item if type(item) is bytearray else memoryview(item).cast("B"))
        if self._gathers:
            total = sum(map(len, views))
            if total >= GATHER_MIN:
                _gather_send(self._transport, views, total)
                return
        self._transport.writelines(views)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        protocol = self._protocol
        ready = protocol._exc is None and not protocol._write_paused and not protocol._lost
        if ready and not self._transport.is_closing():
            return  # nothing to wait for (what _drain_helper concludes, one call sooner)
        await protocol._drain_helper()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    async def wait_closed(self) -> None:
        closed = self._protocol._closed
        if closed is not None:
            await closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __repr__(self) -> str:
        return f"PooledWriter(transport={self._transport!r})"


async def open_connection(
    host: str | None = None,
    port: int | str | None = None,
    *,
    pool: BufferPool,
    chunk_size: int | None = None,
    high_water: int | None = None,
    limit: int = DEFAULT_LIMIT,
    copy_max: int = DEFAULT_COPY_MAX,
    **kwds: Any,
) -> tuple[PooledReader, PooledWriter]:
    """Like ``asyncio.open_connection``, receiving into ``pool``'s buffers."""
    # Any: typeshed's overloads insist on a str host, but sock=... takes None.
    loop: Any = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: PooledReader(
            pool, chunk_size=chunk_size, high_water=high_water, limit=limit, copy_max=copy_max
        ),
        host,
        port,
        **kwds,
    )
    return protocol, PooledWriter(transport, protocol)


async def start_server(
    client_connected_cb: ClientConnected,
    host: str | None = None,
    port: int | str | None = None,
    *,
    pool: BufferPool,
    chunk_size: int | None = None,
    high_water: int | None = None,
    limit: int = DEFAULT_LIMIT,
    copy_max: int = DEFAULT_COPY_MAX,
    **kwds: Any,
) -> asyncio.Server:
    """Like ``asyncio.start_server``: ``client_connected_cb(reader, writer)`` runs
    (as a task if it is a coroutine function) for each connection. As in asyncio
    3.12+, a task that raises is reported to the loop's exception handler, and a
    task that raises or is cancelled closes its connection."""
    loop: Any = asyncio.get_running_loop()
    return await loop.create_server(  # type: ignore[no-any-return]
        lambda: PooledReader(
            pool,
            chunk_size=chunk_size,
            high_water=high_water,
            limit=limit,
            copy_max=copy_max,
            client_connected_cb=client_connected_cb,
        ),
        host,
        port,
        **kwds,
    )
