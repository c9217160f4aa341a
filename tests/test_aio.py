"""The asyncio adapter over real loopback TCP and socket pairs, on asyncio's loop and uvloop.

No test waits by the clock for something to happen: each waits for an event that
the code under observation delivers (bytes received, a task suspended, a round
trip on another connection), with a timeout that only turns a hang into a
failure. The one exception is the reader's own retry of an exhausted pool, which
nothing observable marks: see :func:`poll_until` and :data:`RETRY_SPAN`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import os
import random
import socket
import ssl
import struct
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iobuf
from iobuf import BufferPool, BufferPoolConfig, IoBuf, IoBufMut, IoBufs, PooledReader, PooledWriter

from .helpers import allocated, class_stats

T = TypeVar("T")

#: Guards every wait against a hang; never what a test synchronises on.
TIMEOUT = 30.0
#: Longer than any delay after which a starved reader retries the pool on its own
#: (today a timer whose backoff stops at 50 ms). The loop runs timers in deadline
#: order, so once a sleep this long ends, every retry scheduled before it has run,
#: however loaded the machine: waiting this long bounds, it does not race.
RETRY_SPAN = 0.2


def network_pool(per_class: int = 64) -> BufferPool:
    """The network preset with ``per_class`` buffers per class."""
    return BufferPool(BufferPoolConfig.for_network().with_max_per_class(per_class))


def in_use(pool: BufferPool) -> int:
    """Buffers of every class neither in the shared freelist nor this thread's cache."""
    return sum(c.created - c.global_free - c.local_free for c in pool.stats().classes)


def tiny_pool(per_class: int) -> BufferPool:
    """One class of 1 KiB buffers, no thread cache: every buffer is either in use or free."""
    return BufferPool(
        BufferPoolConfig(min_size=1024, max_size=1024, max_per_class=per_class, thread_cache_capacity=0)
    )


class WatchedReader(PooledReader):
    """A PooledReader that wakes :meth:`wait_until` after every receive, EOF and
    connection loss, where the state the tests wait for (``buffered``,
    ``starved``, ``reading_paused``) changes without a read."""

    def __init__(self, pool: BufferPool, **kw: Any) -> None:
        super().__init__(pool, **kw)
        self._changed = asyncio.Event()

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self._changed.set()

    def eof_received(self) -> bool:
        keep_open = super().eof_received()
        self._changed.set()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked now and after each event above."""

        async def changes() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(changes(), TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"not within {TIMEOUT} s: {self!r}") from None


async def poll_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll for a condition that only the reader's own retry of the pool brings about
    (nothing observable marks that moment); the deadline turns a miss into a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.001)


async def started(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``coro`` as a task, returned once the task has run up to its first wait.

    The task sets ``running`` and goes on into ``coro`` in the same step, so by
    the time ``running`` wakes this coroutine the task is suspended in ``coro``
    (or finished: callers assert ``not task.done()`` where it must wait)."""
    running = asyncio.Event()

    async def body() -> T:
        running.set()
        return await coro

    task = asyncio.create_task(body())
    await asyncio.wait_for(running.wait(), TIMEOUT)
    return task


async def close(*writers: PooledWriter | asyncio.StreamWriter) -> None:
    """Close every writer, then wait until each connection is gone; if one does not
    go, abort them all before the timeout is raised (a transport still open when
    uvloop closes its loop can make ``loop.close()`` wait forever)."""
    for w in writers:
        w.close()
    try:
        for w in writers:
            try:
                await asyncio.wait_for(w.wait_closed(), TIMEOUT)
            except ConnectionError:
                pass
    except TimeoutError:
        for w in writers:
            w.transport.abort()
        raise


Pair = tuple[WatchedReader, PooledWriter, asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def pooled_pair(pool: BufferPool, **kw: Any) -> AsyncIterator[Pair]:
    """A WatchedReader and its PooledWriter on one end of a loopback TCP connection,
    asyncio streams on the other. Both ends are closed on the way out, also when
    the test fails: with them open, uvloop's ``loop.close()`` was seen to hang
    after a failure instead of letting it be reported."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[tuple[WatchedReader, PooledWriter]] = loop.create_future()

    def on_client(reader: PooledReader, writer: PooledWriter) -> None:
        assert isinstance(reader, WatchedReader)
        accepted.set_result((reader, writer))

    server = await loop.create_server(
        lambda: WatchedReader(pool, client_connected_cb=on_client, **kw), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await asyncio.wait_for(accepted, TIMEOUT)
    server.close()
    try:
        yield reader, writer, peer_reader, peer_writer
    finally:
        await close(writer, peer_writer)


async def io_polls(count: int = 3) -> None:
    """Return after ``count`` round trips over a fresh socket pair.

    Each trip needs the loop to poll for I/O, and a poll serves every socket
    that is ready: a reader whose peer has bytes waiting would have received
    some in these polls unless its reading is paused."""
    a, b = socket.socketpair()
    a_reader, a_writer = await asyncio.open_connection(sock=a)
    b_reader, b_writer = await asyncio.open_connection(sock=b)
    try:
        for _ in range(count):
            a_writer.write(b"?")
            assert await asyncio.wait_for(b_reader.readexactly(1), TIMEOUT) == b"?"
            b_writer.write(b"!")
            assert await asyncio.wait_for(a_reader.readexactly(1), TIMEOUT) == b"!"
    finally:
        await close(a_writer, b_writer)


async def left_alone() -> None:
    """Let the loop do whatever a reader does on its own: poll for I/O (see
    :func:`io_polls`) and run the retries it scheduled (see :data:`RETRY_SPAN`;
    the sleep is the one kept: nothing observable marks a retry that changes nothing)."""
    await io_polls()
    await asyncio.sleep(RETRY_SPAN)


def frames(seed: int, count: int, largest: int) -> list[bytes]:
    """``count`` random frames of 1 to ``largest - 1`` bytes."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(1, largest)) for _ in range(count)]


# -- end to end --------------------------------------------------------------------------


def test_length_prefixed_echo_over_loopback(run: Callable[[Awaitable[Any]], Any]) -> None:
    """A length-prefixed echo through start_server/open_connection returns every frame
    intact (many straddle receive buffers, some exceed the pool's largest class), the
    server sees the client's EOF between frames, and every receive buffer goes back."""
    pool = network_pool()
    messages = frames(1, 300, 300_000)  # many straddle receive buffers, some exceed the pool

    async def serve(reader: PooledReader, writer: PooledWriter) -> None:
        while True:
            try:
                head = await reader.readexactly(4)
            except asyncio.IncompleteReadError as e:
                leftover = e.partial
                break
            body = await reader.readexactly(struct.unpack("!I", bytes(head))[0])
            writer.write(IoBufs([head, body]))
            await writer.drain()
        writer.close()
        assert leftover == b""  # the client's EOF came between messages

    async def main() -> list[bytes]:
        server = await iobuf.start_server(serve, "127.0.0.1", 0, pool=pool)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await iobuf.open_connection("127.0.0.1", port, pool=pool)

        async def send() -> None:
            for m in messages:
                writer.write(struct.pack("!I", len(m)) + m)
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        echoed = []
        try:
            for _ in messages:
                size = struct.unpack("!I", bytes(await reader.readexactly(4)))[0]
                echoed.append(bytes(await reader.readexactly(size)))
            await sender
            assert await reader.read() == b""  # the server closed after our EOF
        finally:
            sender.cancel()
            await close(writer)
            server.close()
            await server.wait_closed()
        return echoed

    assert run(main()) == messages
    gc.collect()
    assert in_use(pool) == 0  # every receive buffer went back


def test_frames_received_into_one_buffer_come_back_without_copying(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A frame that a waiting readexactly receives into one buffer is that pooled
    buffer itself; two frames that arrive together are adjacent slices of one buffer."""
    pool = network_pool()

    async def main() -> None:
        async with pooled_pair(pool, copy_max=0) as (reader, _, _, peer):  # views at every size
            waiting = await started(reader.readexactly(4096))
            assert not waiting.done()  # the read waits before the bytes arrive
            peer.write(b"x" * 4096)
            frame = await asyncio.wait_for(waiting, TIMEOUT)
            assert frame == b"x" * 4096
            assert frame.is_pooled  # the pooled receive buffer itself, not a copy
            # Two frames that arrive together: both are slices of one buffer.
            peer.write(b"a" * 1000 + b"b" * 1000)
            first = await reader.readexactly(1000)
            second = await reader.readexactly(1000)
            assert first == b"a" * 1000 and second == b"b" * 1000
            assert first.is_pooled and second.is_pooled
            assert second.address == first.address + 1000
            assert reader.copied_bytes == 0

    run(main())


def test_a_frame_straddling_two_receive_buffers_is_copied_once(run: Callable[[Awaitable[Any]], Any]) -> None:
    """3000 bytes received with nobody waiting fill a 2 KiB buffer and part of the
    next; readexactly(3000) copies them once, into a buffer of the pool."""
    pool = network_pool()

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=2048, copy_max=0) as (reader, _, _, peer):
            body = random.Random(4).randbytes(3000)
            peer.write(body)
            # Nobody waits: the bytes fill 2 KiB buffers as they come.
            await reader.wait_until(lambda: reader.buffered == 3000)
            frame = await reader.readexactly(3000)
            assert frame == body and frame.is_pooled  # copied into a 4 KiB buffer of the pool
            assert reader.copied_bytes == 3000

    run(main())


def test_a_straddling_frame_larger_than_every_class_is_copied_to_the_heap(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A frame received before anyone reads it, in pieces, and larger than the pool's
    largest class is copied once into heap memory (``bytes``), not into the pool's
    oversized fallback: the pool counts no oversized request, and the frame is intact,
    also when the pool was closed before the read (the copy takes nothing from it)."""
    pool = BufferPool(BufferPoolConfig(min_size=1024, max_size=4096, max_per_class=64))

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=4096, copy_max=1024) as (reader, _, _, peer):
            body = random.Random(5).randbytes(20_000)
            peer.write(body)
            await reader.wait_until(lambda: reader.buffered == len(body))
            frame = await reader.readexactly(len(body))
            assert frame == body and not frame.is_pooled
            assert reader.copied_bytes == len(body)
            assert pool.stats().oversized_total == 0
            # The copy needs no pool, so it is made even once the pool is closed.
            peer.write(body)
            await reader.wait_until(lambda: reader.buffered == len(body))
            pool.close()
            assert await reader.readexactly(len(body)) == body and reader.buffered == 0

    run(main())


def test_readexactly_chain_never_copies(run: Callable[[Awaitable[Any]], Any]) -> None:
    """readexactly_chain returns bytes spread over several receive buffers as a chain
    of those pooled buffers, copying nothing; at EOF it raises IncompleteReadError
    with the rest, and the reader is then at EOF."""
    pool = network_pool()

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=2048) as (reader, _, _, peer):
            assert reader.pool is pool and reader.transport is not None and reader.exception() is None
            body = random.Random(9).randbytes(5000)
            peer.write(body)
            await reader.wait_until(lambda: reader.buffered == 5000)
            chain = await reader.readexactly_chain(4500)
            assert chain.chunk_count >= 3 and all(c.is_pooled for c in chain.chunks())
            assert bytes(chain) == body[:4500] and reader.copied_bytes == 0
            peer.write_eof()
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly_chain(1000)
            assert info.value.partial == body[4500:]
            assert reader.at_eof()

    run(main())


def test_read_readline_readuntil_and_iteration(run: Callable[[Awaitable[Any]], Any]) -> None:
    """readline, readuntil, read(n), read(0) and async iteration over lines, mixed on
    one stream, each take exactly their bytes; after EOF the reader is at EOF and
    reads return nothing."""

    async def main() -> None:
        async with pooled_pair(network_pool()) as (reader, _, _, peer):
            peer.write(b"one\ntwo\r\nthree--four")
            assert await reader.readline() == b"one\n"
            assert await reader.readuntil(b"\r\n") == b"two\r\n"
            assert await reader.readuntil(b"--") == b"three--"
            assert await reader.read(2) == b"fo"
            assert await reader.read(0) == b""
            peer.write(b"ur\nfive\nsix")
            peer.write_eof()
            lines = [bytes(line) async for line in reader]
            assert lines == [b"urur\n", b"five\n", b"six"]  # "ur" was left from "four"
            assert reader.at_eof()
            assert await reader.read(10) == b""

    run(main())


def test_read_all_and_incomplete_reads(run: Callable[[Awaitable[Any]], Any]) -> None:
    """At EOF: readexactly past the end raises IncompleteReadError with what arrived
    (and read() then returns nothing), read() returns everything (500 kB over many
    buffers), and readuntil without the separator raises with the bytes."""

    async def main() -> None:
        async with pooled_pair(network_pool()) as (reader, _, _, peer):
            peer.write(b"partial")
            peer.write_eof()
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(100)
            assert info.value.partial == b"partial" and info.value.expected == 100
            assert await reader.read(-1) == b""

        async with pooled_pair(network_pool()) as (reader, _, _, peer):
            body = random.Random(3).randbytes(500_000)
            peer.write(body)
            peer.write_eof()
            assert await reader.read(-1) == body

        async with pooled_pair(network_pool()) as (reader, _, _, peer):
            peer.write(b"no separator")
            peer.write_eof()
            with pytest.raises(asyncio.IncompleteReadError) as info2:
                await reader.readuntil(b"!")
            assert info2.value.partial == b"no separator"

    run(main())


def test_readuntil_limit(run: Callable[[Awaitable[Any]], Any]) -> None:
    """A separator beyond ``limit``, or none within it, raises LimitOverrunError and
    consumes nothing: the bytes can still be read."""

    async def main() -> None:
        async with pooled_pair(network_pool(), limit=16) as (reader, _, _, peer):
            peer.write(b"0123456789abcdefghij\n")
            with pytest.raises(asyncio.LimitOverrunError):
                await reader.readuntil(b"\n")
            # Nothing was consumed: the bytes can still be read.
            assert await reader.readexactly(21) == b"0123456789abcdefghij\n"
            peer.write(b"x" * 40)
            with pytest.raises(asyncio.LimitOverrunError):
                await reader.readuntil(b"\n")
            assert reader.buffered == 40

    run(main())


def test_a_read_that_raises_leaves_the_buffered_bytes(run: Callable[[Awaitable[Any]], Any]) -> None:
    """With the pool closed, reads of a frame straddling two receive buffers raise
    PoolClosed (they would copy into the pool) and take nothing: the bytes are
    all still there afterwards, in order."""
    pool = network_pool()
    body = random.Random(12).randbytes(2999).replace(b"\n", b"_") + b"\n"

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=2048, copy_max=0) as (reader, _, _, peer):
            peer.write(body)
            peer.write_eof()
            await reader.wait_until(lambda: reader.buffered == 3000)
            pool.close()
            with pytest.raises(iobuf.PoolClosed):
                await reader.readexactly(3000)
            assert reader.buffered == 3000
            with pytest.raises(iobuf.PoolClosed):
                await reader.readuntil(b"\n")
            assert reader.buffered == 3000
            with pytest.raises(iobuf.PoolClosed):
                await asyncio.wait_for(reader.read(), timeout=TIMEOUT)
            assert reader.buffered == 3000
            assert bytes(await reader.readexactly_chain(3000)) == body

    run(main())


async def starve(pool: BufferPool, reader: WatchedReader, peer: asyncio.StreamWriter) -> list[IoBufMut]:
    """Take both buffers of a ``tiny_pool(2)``, send 100 bytes, and wait until the
    reader has received them; it is then starved and paused. Returns the held buffers."""
    held = [pool.try_alloc(1024), pool.try_alloc(1024)]  # the class is exhausted
    peer.write(b"s" * 100)
    await reader.wait_until(lambda: reader.buffered == 100)
    assert reader.starved and reader.reading_paused
    return held


def test_a_read_by_a_starved_reader_returns_its_bytes_after_the_pool_closed(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A starved reader asks the pool again after each read; with the pool closed
    that check fails, and the read still returns the bytes it took (it does not
    raise PoolClosed with them gone)."""
    pool = tiny_pool(2)

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=1024) as (reader, _, _, peer):
            held = await starve(pool, reader, peer)
            pool.close()
            assert await asyncio.wait_for(reader.read(100), timeout=TIMEOUT) == b"s" * 100
            assert reader.starved and reader.reading_paused  # a closed pool serves nothing
            del held

    run(main())


# -- flow control ---------------------------------------------------------------------


def test_high_water_pauses_reading_and_reads_resume_it(run: Callable[[Awaitable[Any]], Any]) -> None:
    """With nobody reading, the reader pauses the transport once ``high_water`` bytes
    are buffered (at most one receive buffer beyond the mark); reads bring it below
    the mark and resume reading, and every byte arrives."""
    pool = network_pool()
    body = random.Random(5).randbytes(4 << 20)

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=16384, high_water=65536) as (reader, _, _, peer):
            peer.write(body)
            drained = asyncio.create_task(peer.drain())
            await reader.wait_until(lambda: reader.reading_paused)
            assert not reader.starved
            # Paused at the mark: at most one receive buffer beyond it.
            assert 65536 <= reader.buffered <= 65536 + 16384
            got = bytearray()
            while len(got) < len(body):
                got += bytes(await asyncio.wait_for(reader.read(1 << 20), TIMEOUT))
            assert got == body
            assert not reader.reading_paused
            await asyncio.wait_for(drained, TIMEOUT)

    run(main())


def test_a_frame_larger_than_high_water_still_arrives(run: Callable[[Awaitable[Any]], Any]) -> None:
    """High water must not pause reading while a read waits for more than is buffered."""
    body = random.Random(10).randbytes(1 << 20)

    async def main() -> None:
        async with pooled_pair(network_pool(), chunk_size=16384, high_water=65536) as (reader, _, _, peer):
            peer.write(body)
            frame = await asyncio.wait_for(reader.readexactly(len(body)), timeout=TIMEOUT)
            assert frame == body
            # A request far beyond any buffer size waits for data without sizing a buffer by it.
            peer.write(b"tail")
            peer.write_eof()
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await asyncio.wait_for(reader.readexactly(sys.maxsize), timeout=TIMEOUT)
            assert info.value.partial == b"tail"

    run(main())


def test_an_exhausted_pool_pauses_reading_until_buffers_come_back(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A reader whose reads are all held on to stalls once the pool's 4 buffers are
    out: starved and paused, with at most the 4 pooled buffers and one heap stand-in
    received. It stays so (nothing more is received) while the loop polls for I/O and
    runs the reader's own retries, the peer still having a megabyte to send (see
    :func:`left_alone`: a reader that were not paused would have received in those
    polls), and reads that find the pool still empty leave it so. Once the buffers
    come back the reader, with no read waiting, receives again by itself; every
    byte arrives, and in the end the reader is no longer starved."""
    pool = BufferPool(BufferPoolConfig.for_network().with_max_per_class(4).with_thread_cache_disabled())
    chunk = 16384
    body = random.Random(6).randbytes(1 << 20)

    async def main() -> None:
        # copy_max=0: reads are views, so holding them holds receive buffers.
        async with pooled_pair(pool, chunk_size=chunk, high_water=1 << 30, copy_max=0) as (
            reader,
            _,
            _,
            peer,
        ):
            peer.write(body)
            held: list[IoBuf] = []
            got = bytearray()
            # Hold on to what was read: the reader can only stall once all 4 buffers are out.
            while not (reader.starved and reader.reading_paused):
                if reader.buffered:  # never wait in a read: a waiting read resumes a starved reader
                    held.append(await reader.read(1 << 20))
                    got += bytes(held[-1])
                else:
                    await reader.wait_until(lambda: reader.buffered > 0 or reader.reading_paused)
            assert allocated(pool, chunk) == 4
            # Bounded: the 4 pooled buffers plus one heap stand-in, nothing more.
            assert len(got) + reader.buffered <= 5 * chunk
            stalled_at = reader.buffered
            await left_alone()
            assert reader.starved and reader.reading_paused  # still paused,
            assert reader.buffered == stalled_at  # nothing received meanwhile,
            assert len(got) + reader.buffered <= 5 * chunk  # still bounded
            # Read what arrived, holding it: reads ask the pool again, which has nothing.
            while reader.buffered:
                held.append(await reader.read(1 << 20))
                got += bytes(held[-1])
            assert reader.starved and reader.reading_paused
            held.clear()  # every pooled buffer goes back
            assert allocated(pool, chunk) == 0
            # No read waits: receiving again is the reader noticing the pool by itself.
            await reader.wait_until(lambda: reader.buffered > 0)
            while len(got) < len(body):
                got += bytes(await asyncio.wait_for(reader.read(1 << 20), TIMEOUT))
            assert got == body
            # Starved again and again on the way (4 buffers, a megabyte); each time the
            # reader recovers, and after the last read it is left to do so on its own.
            await poll_until(lambda: not reader.starved)

    run(main())


def test_cancelling_a_waiting_read_loses_no_bytes(run: Callable[[Awaitable[Any]], Any]) -> None:
    """A readexactly that waits with 3 of its 10 bytes buffered and is cancelled
    takes nothing: the next readexactly gets all 10, in order."""

    async def main() -> None:
        async with pooled_pair(network_pool()) as (reader, _, _, peer):
            peer.write(b"abc")
            await reader.wait_until(lambda: reader.buffered == 3)
            task = await started(reader.readexactly(10))
            assert not task.done()  # waiting for the 7 bytes not sent yet
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert reader.buffered == 3
            peer.write(b"defghij")
            assert await asyncio.wait_for(reader.readexactly(10), TIMEOUT) == b"abcdefghij"

    run(main())


@pytest.mark.parametrize("first_read", ["readexactly", "readuntil", "read"])
def test_a_read_whose_own_unread_bytes_pin_the_pool_still_completes(
    run: Callable[[Awaitable[Any]], Any], first_read: str
) -> None:
    """Two 1 KiB buffers, a 4097-byte message: the unread bytes hold the whole class,
    so the read completes only if the reader receives the rest into heap buffers.
    The fallback is counted by the reader and by the pool's exhausted counter."""
    pool = tiny_pool(2)
    body = random.Random(11).randbytes(4096).replace(b"\n", b"_")

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=1024) as (reader, _, _, peer):
            peer.write(body + b"\n")
            peer.write_eof()
            if first_read == "readexactly":
                assert await asyncio.wait_for(reader.readexactly(4096), timeout=TIMEOUT) == body
                assert await asyncio.wait_for(reader.readuntil(b"\n"), timeout=TIMEOUT) == b"\n"
            elif first_read == "readuntil":
                assert await asyncio.wait_for(reader.readuntil(b"\n"), timeout=TIMEOUT) == body + b"\n"
            rest = body + b"\n" if first_read == "read" else b""
            assert await asyncio.wait_for(reader.read(), timeout=TIMEOUT) == rest
            assert reader.heap_fallbacks >= 1
            assert class_stats(pool, 1024).exhausted_total >= 1

    run(main())
    gc.collect()
    assert in_use(pool) == 0


def test_readers_sharing_an_exhausted_class_all_finish_their_frames(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """Eight connections, eight 1 KiB buffers, a 4 KiB frame each sent in two parts:
    the first halves pin every buffer (all received before the second halves are
    sent), and every waiting read still completes."""
    pool = tiny_pool(8)
    bodies = [random.Random(i).randbytes(4096) for i in range(8)]

    async def first_half(reader: WatchedReader) -> None:
        await reader.wait_until(lambda: reader.buffered == 2048)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            pairs = [await stack.enter_async_context(pooled_pair(pool, chunk_size=1024)) for _ in bodies]
            reads = [asyncio.create_task(reader.readexactly(4096)) for reader, _, _, _ in pairs]
            for (_, _, _, peer), body in zip(pairs, bodies, strict=True):
                peer.write(body[:2048])
            await asyncio.gather(*(first_half(reader) for reader, _, _, _ in pairs))
            assert allocated(pool, 1024) == 8  # the first halves pin every buffer
            for (_, _, _, peer), body in zip(pairs, bodies, strict=True):
                peer.write(body[2048:])
            got = await asyncio.wait_for(asyncio.gather(*reads), timeout=TIMEOUT)
            assert got == bodies
            assert sum(reader.heap_fallbacks for reader, _, _, _ in pairs) >= 1

    run(main())


def test_a_lost_connection_takes_no_pool_buffer(run: Callable[[Awaitable[Any]], Any]) -> None:
    """A starved reader whose connection is gone never takes a buffer from the pool,
    neither when reads resume it nor from its retry timer, however long it lives.
    "However long" is :func:`left_alone`: every retry the reader scheduled has had
    its turn (timers run in deadline order), before and after the reads."""
    pool = tiny_pool(2)

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=1024) as (reader, writer, _, peer):
            held = await starve(pool, reader, peer)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)  # connection_lost ran
            held.clear()  # the buffers are free again
            await left_alone()
            assert allocated(pool, 1024) == 0
            assert await asyncio.wait_for(reader.read(), timeout=TIMEOUT) == b"s" * 100
            assert await reader.read(10) == b""
            await left_alone()
            assert allocated(pool, 1024) == 0  # the reader is alive and holds none

    run(main())


# -- writing ---------------------------------------------------------------------------


def test_writer_sends_every_kind_of_buffer(run: Callable[[Awaitable[Any]], Any]) -> None:
    """write and writelines take IoBuf, IoBufs, IoBufMut and bytes-like objects, in
    order, and drain waits while the transport's buffer is over its mark."""
    pool = network_pool()

    async def main() -> bytes:
        async with pooled_pair(pool) as (_, writer, peer_reader, _):
            pooled = pool.alloc(5000)
            pooled.put_slice(b"p" * 5000)
            writer.write(pooled.freeze())
            writer.write(IoBufs([b"chain-", IoBuf(b"of-"), bytearray(b"three")]))
            writer.write(IoBufMut(b"|mut|"))
            writer.writelines([b"a", IoBuf(b"b"), IoBufs([b"cd", b"e"]), IoBufMut(b"f"), IoBufs()])
            writer.write(memoryview(b"view"))
            # Far more than the socket buffers hold, while the peer is not reading.
            big = random.Random(8).randbytes(8 << 20)
            writer.write(big)
            drain = await started(writer.drain())
            assert not drain.done()  # the transport's buffer is over its mark
            received = await asyncio.wait_for(
                peer_reader.readexactly(5000 + 14 + 5 + 6 + 4 + len(big)), TIMEOUT
            )
            await asyncio.wait_for(drain, TIMEOUT)
            assert writer.can_write_eof()
            writer.write_eof()
            assert await asyncio.wait_for(peer_reader.read(), TIMEOUT) == b""
            assert writer.get_extra_info("peername") is not None and "PooledWriter" in repr(writer)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
            assert writer.is_closing()
            with pytest.raises(ConnectionResetError):
                await writer.drain()
        assert received[5029:] == big
        return received[:5029]

    assert run(main()) == b"p" * 5000 + b"chain-of-three|mut|abcdefview"


def test_writelines_keeps_order_through_partial_sends(run: Callable[[Awaitable[Any]], Any]) -> None:
    """writelines and write, mixed, with pieces larger than the socket takes at once
    (so some go out in part and the rest waits in the transport): the peer
    receives every byte in the order written, whatever the item's kind, a
    4-byte-item array (sliced by bytes, not items) included."""
    pool = network_pool()
    rng = random.Random(14)

    def array4(data: bytes) -> array.array[int]:
        return array.array("i", data[: len(data) // 4 * 4])

    async def main() -> None:
        async with pooled_pair(pool) as (_, writer, peer_reader, _):
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            sent: list[bytes] = []
            for i in range(40):
                pieces = [
                    rng.randbytes(rng.choice((1, 700, 30_000, 150_000))) for _ in range(rng.randrange(1, 5))
                ]
                items: list[Any] = [
                    (IoBuf, bytes, bytearray, memoryview, array4, IoBufs)[j % 6](piece)
                    for j, piece in enumerate(pieces)
                ]
                if i % 3:
                    writer.writelines(items)
                else:
                    for item in items:
                        writer.write(item)
                sent += [bytes(item) for item in items]
                if i % 10 == 9:  # the peer catches up now and then: the transport empties
                    expected = b"".join(sent)
                    got = await asyncio.wait_for(peer_reader.readexactly(len(expected)), TIMEOUT)
                    assert got == expected
                    sent.clear()
            await asyncio.wait_for(writer.drain(), TIMEOUT)

    run(main())


def test_writelines_after_write_eof_raises_as_the_transport_does(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A writelines after write_eof, small or large, raises the transport's RuntimeError
    and sends nothing."""

    async def main() -> None:
        async with pooled_pair(network_pool()) as (_, writer, peer_reader, _):
            writer.writelines([b"last", IoBuf(b" words")])
            writer.write_eof()
            with pytest.raises(RuntimeError):
                writer.writelines([b"more", IoBuf(b"!")])
            with pytest.raises(RuntimeError):
                writer.writelines([b"more", IoBuf(bytes(1 << 16))])
            assert await asyncio.wait_for(peer_reader.read(), TIMEOUT) == b"last words"

    run(main())


@contextlib.asynccontextmanager
async def writer_on_socketpair() -> AsyncIterator[tuple[PooledWriter, socket.socket]]:
    """A PooledWriter on one end of a socket pair (its transport made by the running
    loop) and the other end, blocking, for the test to read or close."""
    a, b = socket.socketpair()
    transport, protocol = await asyncio.get_running_loop().create_connection(
        lambda: PooledReader(network_pool()), sock=a
    )
    try:
        yield PooledWriter(transport, protocol), b
    finally:
        transport.abort()
        b.close()


def test_writelines_into_a_full_socket_keeps_everything_in_order(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A large writelines while the socket's send buffer is full (filled behind the
    transport's back, so the transport itself holds nothing): nothing goes out at
    once, everything waits in the transport, and the peer reads the filler, then
    every piece, in order."""

    async def main() -> None:
        async with writer_on_socketpair() as (writer, peer):
            filler = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
            filler.setblocking(False)
            stuffed = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    stuffed += filler.send(b"f" * 65536)
            filler.close()
            pieces: list[Any] = [b"head", IoBuf(bytes(range(256)) * 64), bytearray(b"tail")]
            writer.writelines(pieces)
            assert writer.transport.get_write_buffer_size() == 4 + 16384 + 4
            expected = b"f" * stuffed + b"head" + bytes(range(256)) * 64 + b"tail"
            received = bytearray()

            def read_all() -> None:
                while len(received) < len(expected):
                    received.extend(peer.recv(1 << 20))

            reading = asyncio.get_running_loop().run_in_executor(None, read_all)
            await asyncio.wait_for(writer.drain(), TIMEOUT)
            await asyncio.wait_for(reading, TIMEOUT)
            assert received == expected

    run(main())


def test_writelines_to_a_closed_peer_fails_as_a_write_does(run: Callable[[Awaitable[Any]], Any]) -> None:
    """A large writelines after the peer closed its socket: the error reaches the
    transport as it would from its own write (the connection is lost, drain raises)."""

    async def main() -> None:
        async with writer_on_socketpair() as (writer, peer):
            peer.close()
            writer.writelines([b"head", IoBuf(bytes(1 << 16))])
            assert writer.is_closing()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(writer.drain(), TIMEOUT)

    run(main())


def test_writelines_joins_nothing_on_the_selector_transport() -> None:
    """On asyncio's own socket transport, writelines sends large pieces without first
    joining them (3.11's transport would copy them all into one bytes object): the
    memory it allocates is at most what the socket did not take."""
    big = random.Random(3).randbytes(1 << 20)

    async def main() -> tuple[int, int]:
        async with pooled_pair(network_pool()) as (_, writer, peer_reader, _):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            tracemalloc.start()
            try:
                writer.writelines([b"head", memoryview(big), IoBuf(b"tail")])
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            unsent = writer.transport.get_write_buffer_size()
            got = await asyncio.wait_for(peer_reader.readexactly(len(big) + 8), TIMEOUT)
            assert got == b"head" + big + b"tail"
            return peak, unsent

    peak, unsent = asyncio.run(main())
    assert peak <= unsent + (64 << 10), (peak, unsent)


def test_tls_connections_receive_and_send_through_the_tls_transport(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A TLS server on ``start_server`` (a self-signed certificate from tests/): frames
    arrive decrypted, and replies written with ``writelines`` (large enough that on a
    plain 3.11 socket the writer would send them itself) go through the TLS
    transport, so the client decrypts every byte in order."""
    certfile = str(Path(__file__).with_name("keycert.pem"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certfile)
    client_ctx = ssl.create_default_context(cafile=certfile)
    frames_in = frames(21, 20, 200_000)

    async def echo(reader: PooledReader, writer: PooledWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client's close
            while True:
                header = await reader.readexactly(4)
                frame = await reader.readexactly(int.from_bytes(bytes(header), "big"))
                writer.writelines([b"<", header, frame, IoBufs([b">"])])
                await writer.drain()
        writer.close()

    async def main() -> list[bytes]:
        server = await iobuf.start_server(echo, "127.0.0.1", 0, pool=network_pool(), ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        echoed = []
        for frame in frames_in:
            writer.write(len(frame).to_bytes(4, "big") + frame)
            reply = await asyncio.wait_for(reader.readexactly(len(frame) + 6), TIMEOUT)
            assert reply[:5] == b"<" + len(frame).to_bytes(4, "big") and reply[-1:] == b">"
            echoed.append(reply[5:-1])
        writer.close()
        server.close()
        await server.wait_closed()
        return echoed

    assert run(main()) == frames_in


def test_a_reset_connection_raises_in_readers_and_drain(run: Callable[[Awaitable[Any]], Any]) -> None:
    """A peer that resets the connection (RST) makes a waiting read raise (reset, or
    incomplete if the loss is seen as an end of stream) and drain raise a ConnectionError."""

    async def main() -> None:
        async with pooled_pair(network_pool()) as (reader, writer, _, peer):
            sock = peer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()  # an RST, not a FIN
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(10), TIMEOUT)
            with pytest.raises(ConnectionError):
                await writer.drain()

    run(main())


def test_a_failing_handler_is_reported_and_its_connection_closed(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """As asyncio's start_server (3.12+): an exception from the handler goes to the
    loop's exception handler and the connection is closed, so the client sees EOF."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))

        async def handler(reader: PooledReader, writer: PooledWriter) -> None:
            await reader.readexactly(5)
            raise ValueError("handler failed")

        server = await iobuf.start_server(handler, "127.0.0.1", 0, pool=network_pool())
        port = server.sockets[0].getsockname()[1]
        peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            peer_writer.write(b"hello")
            assert await asyncio.wait_for(peer_reader.read(), timeout=TIMEOUT) == b""
            errors = [c["exception"] for c in reported if "exception" in c]
            assert len(errors) == 1 and isinstance(errors[0], ValueError)
        finally:
            await close(peer_writer)
            server.close()
            await server.wait_closed()

    run(main())


# -- behaves like asyncio.StreamReader -------------------------------------------------

Op = tuple[str, int]
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("readexactly"), st.integers(0, 3000)),
        st.tuples(st.just("read"), st.integers(-1, 3000)),
        st.tuples(st.just("readuntil"), st.integers(0, 2)),
        st.tuples(st.just("readline"), st.just(0)),
    ),
    max_size=12,
)
SEPARATORS = [b"\n", b"--", b"xyz"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.binary(max_size=2000).map(lambda b: b.replace(b"\0", b"\n")), max_size=8),
    ops=ops_strategy,
)
def test_same_results_as_streamreader(pieces: list[bytes], ops: list[Op]) -> None:
    """Both readers get the same bytes on real socket pairs; every read gives the same result."""

    async def outcome(kind: str) -> list[object]:
        a, b = socket.socketpair()
        reader: Any
        writer: PooledWriter | asyncio.StreamWriter
        if kind == "iobuf":
            transport, reader = await asyncio.get_running_loop().create_connection(
                lambda: PooledReader(network_pool(), chunk_size=1024), sock=a
            )
            writer = PooledWriter(transport, reader)
        else:
            reader, writer = await asyncio.open_connection(sock=a)
        with b:
            for piece in pieces:
                b.sendall(piece)
            b.shutdown(socket.SHUT_WR)
            results: list[object] = []
            for name, arg in ops:
                try:
                    if name == "readuntil":
                        got = await reader.readuntil(SEPARATORS[arg])
                    elif name == "readline":
                        got = await reader.readline()
                    else:
                        got = await getattr(reader, name)(arg)
                    results.append(bytes(got))
                except asyncio.IncompleteReadError as e:
                    results.append(("incomplete", bytes(e.partial), e.expected))
        await close(writer)  # connection_lost has run before the loop closes
        return results

    assert asyncio.run(outcome("iobuf")) == asyncio.run(outcome("streamreader"))


# -- bad input ---------------------------------------------------------------------------


def test_bad_arguments() -> None:
    """Bad constructor arguments, a negative or non-int size, an empty or str
    separator raise at once; a second read while one waits raises RuntimeError
    and leaves the first one waiting."""
    pool = network_pool()
    with pytest.raises(TypeError, match="pool must be a BufferPool"):
        PooledReader(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        PooledReader(pool, chunk_size=0)
    with pytest.raises(ValueError, match="high_water"):
        PooledReader(pool, high_water=-1)

    async def main() -> None:
        async with pooled_pair(pool) as (reader, _, _, peer):
            with pytest.raises(ValueError, match="n must be >= 0"):
                await reader.readexactly(-1)
            with pytest.raises(TypeError):
                await reader.readexactly("3")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await reader.read(1.5)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="separator"):
                await reader.readuntil(b"")
            with pytest.raises(TypeError, match="separator"):
                await reader.readuntil("\n")  # type: ignore[arg-type]
            first = await started(reader.readexactly(5))
            assert not first.done()
            with pytest.raises(RuntimeError, match="already waiting"):
                await reader.readexactly(5)
            peer.write(b"12345")
            assert await asyncio.wait_for(first, TIMEOUT) == b"12345"
            assert "PooledReader(buffered=0" in repr(reader)

    asyncio.run(main())


def test_a_pool_closed_under_a_live_connection_keeps_receiving(run: Callable[[Awaitable[Any]], Any]) -> None:
    """Closing the pool while a connection is open does not abort it: receive
    buffers come from the heap from then on, so no byte in flight is lost (the
    loop used to fail the transport when get_buffer raised PoolClosed)."""
    pool = tiny_pool(4)
    data = random.Random(5).randbytes(20000)

    async def main() -> None:
        async with pooled_pair(pool, chunk_size=1024) as (reader, _, _, peer):
            peer.write(data[:1500])
            first = await asyncio.wait_for(reader.readexactly(100), timeout=TIMEOUT)
            pool.close()
            peer.write(data[1500:])
            peer.write_eof()
            got = bytearray(first)
            while len(got) < len(data):
                size = min(1000, len(data) - len(got))
                got += bytes(await asyncio.wait_for(reader.readexactly_chain(size), TIMEOUT))
            assert bytes(got) == data
            assert await asyncio.wait_for(reader.read(), timeout=TIMEOUT) == b""

    run(main())


@given(
    pieces=st.lists(st.text("xyz-\nabcdefg", min_size=1, max_size=5).map(str.encode), min_size=1),
    sep=st.sampled_from([b"\n", b"--", b"xyz", b"abcdefg"]),
    offset=st.integers(0, 40),
)
def test_separator_search_spans_any_number_of_chunks(pieces: list[bytes], sep: bytes, offset: int) -> None:
    """The in-place, chunk-by-chunk separator search finds what a search of the
    joined bytes finds, from any offset, with separators split over one, two or
    more chunks (each chunk here is its own object, never joined)."""
    import re

    reader = PooledReader(BufferPool(BufferPoolConfig.for_network()))
    reader._chain = IoBufs(IoBuf(p) for p in pieces)
    assert reader._chain.chunk_count == len(pieces)
    data = b"".join(pieces)
    assert reader._find(re.compile(re.escape(sep)), len(sep), offset) == data.find(sep, offset)
