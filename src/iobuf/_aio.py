"""asyncio streams that receive straight into pooled buffers.

What it owns: :class:`PooledReader`, an ``asyncio.BufferedProtocol`` whose
``get_buffer`` hands the event loop the spare capacity of a pooled buffer and
which serves the received bytes as :class:`~iobuf.IoBuf` views
(``readexactly``, ``readuntil``, ``read``); :class:`PooledWriter`, which
writes IoBuf/IoBufs without copying them first; and the
:func:`open_connection`/:func:`start_server` helpers shaped like asyncio's.

Invariants:
- Received bytes live in the pooled buffer they were received into: each
  ``buffer_updated`` splits the new bytes off that buffer as an IoBuf sharing
  its memory (adjacent pieces of one buffer are merged), so a frame that was
  received into one buffer comes back from ``readexactly`` zero-copy. A frame
  that straddles two buffers is copied once, into a buffer of the same pool.
- While a ``readexactly(n)`` waits, the loop is offered at most the missing
  bytes and a buffer big enough for them, so frames start on buffer
  boundaries whenever the reader keeps up.
- Flow control, two reasons to pause reading, each lifted independently:
  *high water* (more than ``high_water`` bytes received and not yet read;
  resumes once reads bring it below) and *starved* (the pool's class is
  exhausted; the loop gets one small heap buffer for the read already under
  way, then reading pauses and resumes as soon as the pool can serve a buffer
  again, checked on every read call and by a timer with backoff). Memory use
  is therefore bounded by the pool, not by the peer.
- Cancelling a waiting read loses nothing: bytes are only taken from the
  buffer after the wait completes.

Thread safety: like asyncio's streams, an object belongs to the event loop
that created it; call it only from that loop's thread.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, cast

from ._chain import IoBufs
from ._errors import Exhausted, Oversized, check_nonneg, check_positive
from ._pool import BufferPool
from ._views import IoBuf, IoBufMut, _empty_iobuf, join_adjacent, split_filled

if TYPE_CHECKING:
    from ._views import BytesLike

__all__ = ["PooledReader", "PooledWriter", "open_connection", "start_server"]

#: Receive buffer size, capped at the pool's largest class, unless a waiting
#: ``readexactly`` needs more (asyncio's own sockets receive at most 256 KiB at once).
DEFAULT_CHUNK: Final = 1 << 18
#: ``readuntil``'s default limit, as asyncio's streams.
DEFAULT_LIMIT: Final = 1 << 16
#: Retry delays (seconds) while starved: doubling from the first to the last.
_RETRY_FIRST: Final = 0.001
_RETRY_LAST: Final = 0.05

ClientConnected = Callable[["PooledReader", "PooledWriter"], "Awaitable[None] | None"]


class PooledReader(asyncio.BufferedProtocol):
    """The receiving side of a connection: an ``asyncio.BufferedProtocol`` and a stream reader.

    Use it through :func:`open_connection`/:func:`start_server`, or pass
    ``lambda: PooledReader(pool)`` to ``loop.create_connection``. Reads return
    :class:`~iobuf.IoBuf` views of pooled memory; drop them to give the memory
    back.
    """

    def __init__(
        self,
        pool: BufferPool,
        *,
        chunk_size: int | None = None,
        high_water: int | None = None,
        limit: int = DEFAULT_LIMIT,
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
        self._chain = IoBufs()
        self._cur: IoBufMut | None = None
        self._want = 0  # bytes a waiting read needs buffered (0: none waiting)
        self._waiter: asyncio.Future[None] | None = None
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
        """Bytes that reads had to copy because they straddled receive buffers
        (the rest were handed out as views of the buffers they arrived in)."""
        return self._copied

    @property
    def reading_paused(self) -> bool:
        """Whether this reader has paused the transport (high water or an exhausted pool)."""
        return self._paused

    @property
    def starved(self) -> bool:
        """Whether reading is paused because the pool had no buffer to receive into."""
        return self._starved

    def at_eof(self) -> bool:
        """True once the peer has closed its side and every byte has been read."""
        return self._eof and not self._chain

    def exception(self) -> BaseException | None:
        return self._exc

    # -- asyncio.BufferedProtocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        cb = self._connected_cb
        if cb is not None:
            result = cb(self, PooledWriter(transport, self))
            if asyncio.iscoroutine(result):
                self._task = loop.create_task(result)

    def get_buffer(self, sizehint: int) -> memoryview:
        cur = self._cur
        spare = 0 if cur is None else cur.capacity - len(cur)
        if spare == 0 or (self._want - len(self._chain) > spare and not self._chain):
            cur = self._fresh_buffer()
        assert cur is not None
        return cur.spare_capacity()

    def _fresh_buffer(self) -> IoBufMut:
        """A new receive buffer with room for what a waiting read still needs.

        (Moving a waiting frame's first bytes into the new buffer, so that the
        frame ends up in one piece, was tried: on the demo's echo it copied a
        third of the bytes instead of a quarter, so a straddling frame is
        copied once, when it is read.)
        """
        need = self._want - len(self._chain)
        # A frame the pool cannot hold in one buffer is received in chunks (and
        # copied once when read); never size a buffer by an unbounded request.
        size = need if self._chunk_size < need <= self._pool.config.max_size else self._chunk_size
        fresh = self._next_buffer(size)
        self._cur = fresh
        return fresh

    def buffer_updated(self, nbytes: int) -> None:
        cur = self._cur
        assert cur is not None
        cur.advance_mut(nbytes)
        piece = split_filled(cur)
        if cur.capacity == len(cur):
            self._cur = None
        chain = self._chain
        chunks = chain._chunks
        if chunks:
            joined = join_adjacent(chunks[-1], piece)
            if joined is not None:
                chunks[-1] = joined
            else:
                chunks.append(piece)
        else:
            chunks.append(piece)
        chain._len += nbytes
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
        if exc is not None:
            self._exc = exc
        self._eof = True
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

        Zero-copy when they were received into one buffer; otherwise copied
        once into a buffer of the pool. Raises ``asyncio.IncompleteReadError``
        (with the bytes that did arrive) if the stream ends first.
        """
        count = check_nonneg("n", n)
        if len(self._chain) < count:
            await self._fill(count)
        chain = self._chain
        first = chain._chunks[0] if chain._chunks else None
        if first is not None and len(first) >= count:
            out = chain.copy_to_bytes(count)
        elif count == 0:
            out = _empty_iobuf()
        else:
            out = chain.split_to(count).coalesce_with_pool(self._pool)
            self._copied += count
        self._consumed()
        return out

    async def readexactly_chain(self, n: int) -> IoBufs:
        """Exactly ``n`` bytes as an :class:`~iobuf.IoBufs` chain, never copying.

        For vectored writes of what was received; raises
        ``asyncio.IncompleteReadError`` like :meth:`readexactly`.
        """
        count = check_nonneg("n", n)
        if len(self._chain) < count:
            await self._fill(count)
        out = self._chain.split_to(count)
        self._consumed()
        return out

    async def read(self, n: int = -1) -> IoBuf:
        """Up to ``n`` bytes (at least one unless the stream ended; empty at EOF).

        ``n < 0`` reads until EOF. Zero-copy for bytes within one buffer.
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n == 0:
            return _empty_iobuf()
        if n < 0:
            while not self._eof:
                await self._wait(len(self._chain) + 1)
            self._raise_pending()
            rest = self._chain.split_to(len(self._chain))
            if rest.chunk_count > 1:
                self._copied += len(rest)
            out = rest.coalesce_with_pool(self._pool)
            self._consumed()
            return out
        if not self._chain:
            if not self._eof:
                await self._wait(1)
            if not self._chain:
                self._raise_pending()
                return _empty_iobuf()
        first = self._chain._chunks[0]
        out = self._chain.copy_to_bytes(min(n, len(first)))
        self._consumed()
        return out

    async def readuntil(self, separator: bytes = b"\n") -> IoBuf:
        """The bytes up to and including ``separator``.

        Raises ``asyncio.LimitOverrunError`` if ``limit`` bytes arrive without
        one (the bytes stay buffered) and ``asyncio.IncompleteReadError`` at
        EOF, like ``asyncio.StreamReader.readuntil``.
        """
        if not isinstance(separator, (bytes, bytearray)):
            raise TypeError(f"separator must be bytes, not {type(separator).__name__}")
        if not separator:
            raise ValueError("separator must not be empty")
        sep = bytes(separator)
        finder = re.compile(re.escape(sep))
        offset = 0
        while True:
            end = self._find(finder, offset)
            if end >= 0:
                if end > self._limit:
                    raise asyncio.LimitOverrunError("separator found, but the chunk exceeds the limit", end)
                return await self.readexactly(end)
            size = len(self._chain)
            offset = max(0, size - len(sep) + 1)
            if size > self._limit:
                raise asyncio.LimitOverrunError(
                    "separator not found and the buffer exceeds the limit", offset
                )
            if self._eof:
                self._raise_pending()
                partial = bytes(self._chain.split_to(size))
                self._consumed()
                raise asyncio.IncompleteReadError(partial, None)
            await self._wait(size + 1)

    async def readline(self) -> IoBuf:
        """:meth:`readuntil` with ``b"\\n"``, returning what is left at EOF instead of raising."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return IoBuf(e.partial)

    def __aiter__(self) -> PooledReader:
        return self

    async def __anext__(self) -> IoBuf:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- internals ----------------------------------------------------------------------

    def _find(self, finder: re.Pattern[bytes], offset: int) -> int:
        """The end index of the first separator at or after ``offset``, or -1."""
        chunks = self._chain._chunks
        if len(chunks) == 1:
            view = chunks[0].as_memoryview()
            try:
                match = finder.search(view, offset)
            finally:
                view.release()
        else:
            match = finder.search(b"".join(bytes(c) for c in chunks), offset)
        return -1 if match is None else match.end()

    async def _fill(self, count: int) -> None:
        while len(self._chain) < count:
            if self._eof:
                self._raise_pending()
                partial = bytes(self._chain.split_to(len(self._chain)))
                self._consumed()
                raise asyncio.IncompleteReadError(partial, count)
            await self._wait(count)

    async def _wait(self, count: int) -> None:
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting for data on this reader")
        self._raise_pending()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._want = count
        if self._paused:
            self._update_pause()  # a read that waits for more is a reason to resume
        try:
            await waiter
        finally:
            self._waiter = None
            self._want = 0

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
        """A receive buffer of at least ``size`` bytes; a heap buffer (and starvation)
        when the pool cannot serve one."""
        try:
            return self._pool.try_alloc(size)
        except Oversized:
            return IoBufMut.with_capacity(size)
        except Exhausted:
            self._starved = True
            return IoBufMut.with_capacity(min(size, self._chunk_size))

    def _update_pause(self) -> None:
        """Recompute both pause reasons and pause or resume the transport."""
        # High water holds unless a waiting read needs more than is buffered
        # (a frame larger than high_water must still arrive).
        size = len(self._chain)
        self._over_high = self._want <= size >= self._high
        if self._starved:
            try:
                fresh = self._pool.try_alloc(self._chunk_size)
            except Exhausted:
                pass
            else:
                # The heap stand-in holds no unread bytes (each receive is split off).
                self._cur = fresh
                self._starved = False
                self._cancel_retry()
        transport = self._transport
        if transport is None:
            return
        should_pause = self._over_high or self._starved
        if should_pause and not self._paused:
            self._paused = True
            transport.pause_reading()
        elif not should_pause and self._paused:
            self._paused = False
            transport.resume_reading()
        if self._starved and self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(self._retry_delay, self._retry_now)

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
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def __repr__(self) -> str:
        state = []
        if self._eof:
            state.append("eof")
        if self._paused:
            state.append("starved" if self._starved else "paused")
        return f"PooledReader(buffered={len(self._chain)}{''.join(', ' + s for s in state)})"


class PooledWriter:
    """The sending side: ``write`` takes IoBuf, IoBufMut, IoBufs or any bytes-like object.

    IoBuf and IoBufs go to the transport as views of their memory (no copy
    on our side; asyncio on 3.11 copies what it cannot send at once, 3.12+
    keeps the views, which pin pooled memory until sent).
    """

    __slots__ = ("_transport", "_protocol")

    def __init__(self, transport: asyncio.Transport, protocol: PooledReader) -> None:
        self._transport = transport
        self._protocol = protocol

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: IoBufs | BytesLike) -> None:
        if isinstance(data, IoBuf):
            self._transport.write(data.as_memoryview())
        elif isinstance(data, IoBufs):
            self._transport.writelines([c.as_memoryview() for c in data._chunks])
        elif isinstance(data, IoBufMut):
            self._transport.write(data.as_memoryview())
        else:
            self._transport.write(data)  # type: ignore[arg-type]

    def writelines(self, data: list[IoBuf] | list[bytes]) -> None:
        for item in data:
            self.write(item)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._protocol._drain_helper()

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
    **kwds: Any,
) -> tuple[PooledReader, PooledWriter]:
    """Like ``asyncio.open_connection``, receiving into ``pool``'s buffers."""
    # Any: typeshed's overloads insist on a str host, but sock=... takes None.
    loop: Any = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: PooledReader(pool, chunk_size=chunk_size, high_water=high_water, limit=limit),
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
    **kwds: Any,
) -> asyncio.Server:
    """Like ``asyncio.start_server``: ``client_connected_cb(reader, writer)`` runs
    (as a task if it is a coroutine function) for each connection."""
    loop: Any = asyncio.get_running_loop()
    return await loop.create_server(  # type: ignore[no-any-return]
        lambda: PooledReader(
            pool,
            chunk_size=chunk_size,
            high_water=high_water,
            limit=limit,
            client_connected_cb=client_connected_cb,
        ),
        host,
        port,
        **kwds,
    )
