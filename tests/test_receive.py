"""The receive path's building blocks and its memory behaviour over real sockets:
``IoBuf.find``, ``IoBuf.compact``, ``take_front``, small reads copied out,
adaptive receive buffers and an idle connection holding no large one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import iobuf
from iobuf import BufferPool, BufferPoolConfig, IoBuf, IoBufMut, PooledReader, PooledWriter
from iobuf._aio import DEFAULT_COPY_MAX, IDLE_KEEP_MAX, MIN_GUESS
from iobuf._impl import commit_received, reclaim_received, sendable, split_filled, take_front

from .helpers import class_stats


def network_pool() -> BufferPool:
    return BufferPool(BufferPoolConfig.for_network().with_max_per_class(256))


def in_use(pool: BufferPool) -> int:
    """Buffers of every class neither in the shared freelist nor this thread's cache."""
    return sum(c.created - c.global_free - c.local_free for c in pool.stats().classes)


def pooled(pool: BufferPool, data: bytes) -> IoBuf:
    """``data`` in a buffer of ``pool``."""
    buf = pool.alloc(len(data))
    buf.put_slice(data)
    return buf.freeze()


# -- IoBuf.find --------------------------------------------------------------------------

index = st.none() | st.integers(-40, 40)


@given(
    data=st.binary(max_size=32),
    lo=st.integers(0, 8),
    sub=st.binary(max_size=3) | st.integers(0, 255) | st.booleans(),
    start=index,
    end=index,
)
def test_find_matches_bytes_find(
    data: bytes, lo: int, sub: bytes | int, start: int | None, end: int | None
) -> None:
    """On a view that starts inside its memory, ``find`` gives ``bytes.find``'s answer
    for every needle (bytes or one byte as an int) and every start/end, negative and
    out of range included."""
    view = IoBuf(b"#" * lo + data)[lo:]
    assert view.find(sub, start, end) == data.find(sub, start, end)


def test_find_takes_any_bytes_like_needle_and_rejects_bad_ones() -> None:
    """Needles may be any bytes-like object; a non-bytes-like needle is a TypeError and an
    int outside range(256) a ValueError, as with ``bytes.find``."""
    buf = IoBuf(b"key: value\r\n")
    assert buf.find(bytearray(b"\r\n")) == 10
    assert buf.find(memoryview(b"value")) == 5
    assert buf.find(IoBuf(b": ")) == 3
    with pytest.raises(TypeError):
        buf.find("str")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="range"):
        buf.find(256)
    with pytest.raises(TypeError):
        buf.find(b":", "0")  # type: ignore[arg-type]


def test_find_searches_pooled_memory_in_place() -> None:
    """A pooled view is searched where it lies; the result counts from the view's start."""
    pool = network_pool()
    whole = pooled(pool, b"x" * 3000 + b"\n" + b"y" * 100)
    assert whole.find(b"\n") == 3000
    assert whole[2000:].find(b"\n") == 1000
    assert whole.find(b"x\ny") == 2999 and whole.find(b"yx") == -1


# -- IoBuf.compact -----------------------------------------------------------------------


def test_compact_copies_a_small_view_and_lets_the_big_buffer_go() -> None:
    """A small view of a pooled buffer compacts into right-sized heap memory; once the
    view is dropped the pooled buffer is back in the pool, with the copy still whole."""
    pool = network_pool()
    big = pooled(pool, bytes(range(256)) * 256)  # 64 KiB
    small = big[100:110].compact()
    del big
    gc.collect()
    assert in_use(pool) == 0
    assert small == bytes(range(100, 110)) and not small.is_pooled
    assert small.compact() is small  # already right-sized


def test_compact_keeps_a_view_that_spans_its_memory() -> None:
    """A view of all of its memory is returned as is; an empty view compacts to an empty one."""
    whole = IoBuf(b"exactly")
    assert whole.compact() is whole
    assert len(IoBuf(b"abc")[1:1].compact()) == 0


# -- take_front --------------------------------------------------------------------------


def test_take_front_copies_small_reads_and_views_large_ones() -> None:
    """Up to ``copy_max`` bytes come back as a heap copy; more as a view of the same
    memory; a drained chunk leaves the deque; the rest of the chunk stays in place."""
    pool = network_pool()
    chunk = pooled(pool, bytes(range(200)))
    address = chunk.address
    chunks = deque([chunk])
    small = take_front(chunks, 10, 16)
    assert small == bytes(range(10)) and not small.is_pooled
    large = take_front(chunks, 100, 16)
    assert large is not None and large.is_pooled and large.address == address + 10
    assert large == bytes(range(10, 110))
    rest = take_front(chunks, 90, 1000)
    assert rest == bytes(range(110, 200)) and not chunks


def test_take_front_changes_nothing_when_it_cannot_serve() -> None:
    """More bytes than the first chunk holds (however many, past the C integer range
    too), a negative count or a non-int: None, and the chunks are as they were."""
    chunks = deque([IoBuf(b"abc"), IoBuf(b"def")])
    for n in (4, -1, 1.0, "2", True, 1 << 63, 1 << 64):
        assert take_front(chunks, n, 100) is None  # type: ignore[arg-type]
    assert [bytes(c) for c in chunks] == [b"abc", b"def"]
    assert take_front(deque(), 0, 0) == b""


def test_sendable_hands_over_a_whole_bytes_object_and_views_otherwise() -> None:
    """An IoBuf wrapping a whole ``bytes`` object (as small reads return) goes to a
    transport as that very object; a part of one, or pooled memory, as a read-only
    view of exactly its bytes."""
    data = b"hello, world"
    whole = IoBuf(data)
    assert sendable(whole) is data
    copied = take_front(deque([IoBuf(data)]), 5, 16)
    assert copied is not None and type(sendable(copied)) is bytes and sendable(copied) == b"hello"
    part = whole[7:]
    view = sendable(part)
    assert type(view) is memoryview and view.readonly and bytes(view) == b"world"
    pool = network_pool()
    in_pool = pooled(pool, data)
    view = sendable(in_pool)
    assert type(view) is memoryview and view.readonly and bytes(view) == data
    view.release()


def test_reclaim_rewinds_a_drained_buffer_only_when_nothing_else_reaches_it() -> None:
    """``reclaim_received`` makes a pooled receive buffer's whole capacity spare again
    once every byte committed to it was split off and dropped. While anything can
    still reach its memory (the chain's chunk, the chunk itself, a slice or clone
    of it, a memoryview or numpy array over it, the buffer's own exported spare
    room) it refuses, changes nothing, and the holder still reads its bytes. A heap
    buffer and a buffer with unread bytes are never rewound."""
    pool = network_pool()
    buf = pool.alloc(1024)
    capacity = len(buf.spare_capacity())

    def receive(data: bytes) -> deque[IoBuf]:
        chunks: deque[IoBuf] = deque()
        buf.spare_capacity()[: len(data)] = data
        commit_received(buf, len(data), chunks)
        return chunks

    chunks = receive(b"hello")
    assert not reclaim_received(buf)  # the chain holds the chunk
    chunks.clear()
    assert reclaim_received(buf) and len(buf.spare_capacity()) == capacity

    holders: list[tuple[Callable[[IoBuf], Any], bytes]] = [
        (lambda chunk: chunk, b"hello"),
        (lambda chunk: chunk[1:3], b"el"),
        (lambda chunk: chunk.clone(), b"hello"),
        (lambda chunk: chunk.as_memoryview(), b"hello"),
    ]
    with contextlib.suppress(ImportError):
        import numpy as np

        holders.append((lambda chunk: np.frombuffer(chunk.as_memoryview(), dtype=np.uint8), b"hello"))
    for hold, expected in holders:
        held = hold(receive(b"hello").popleft())
        assert not reclaim_received(buf)
        assert len(buf.spare_capacity()) == capacity - 5  # unchanged
        buf.spare_capacity()[:5] = b"XXXXX"  # the spare room is past the held bytes
        assert bytes(held) == expected
        del held
        assert reclaim_received(buf) and len(buf.spare_capacity()) == capacity

    exported = buf.spare_capacity()
    receive(b"hello").clear()
    assert not reclaim_received(buf)  # the buffer's own spare room is exported
    exported.release()
    assert reclaim_received(buf)
    buf.put_slice(b"unread")
    assert not reclaim_received(buf)  # readable bytes not split off
    heap = IoBufMut.with_capacity(1024)
    heap.put_slice(b"x")
    split_filled(heap)
    assert not reclaim_received(heap)


async def _reply_lines(run_reader: Callable[[PooledReader], Awaitable[list[bytes]]]) -> list[bytes]:
    """What ``run_reader`` read from a socket pair fed one line per receive, with
    the reader waiting on an empty buffer before each (the path where a read
    finds nothing buffered and must wait, then takes the line in place)."""
    pool = network_pool()
    async with on_socketpair(pool) as (reader, peer):
        task = asyncio.ensure_future(run_reader(reader))

        async def reader_waits() -> None:
            while reader._waiter is None or reader._waiter.done():  # a read parked on an empty buffer
                await asyncio.sleep(0)
            assert not reader.buffered

        for i in range(5):
            await asyncio.wait_for(reader_waits(), 10)
            peer.send(b"line %d\r\n" % i)
        await asyncio.wait_for(reader_waits(), 10)
        peer.send(b"tail")
        peer.shutdown(socket.SHUT_WR)
        return await asyncio.wait_for(task, 10)


def test_line_reads_that_wait_on_an_empty_buffer_return_each_line(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """``readline`` and ``readuntil`` started with nothing buffered wait for the
    next receive, then return exactly one line; at EOF ``readline`` returns the
    unterminated rest and ``readuntil`` raises IncompleteReadError with it."""

    async def lines(reader: PooledReader) -> list[bytes]:
        got = [bytes(await reader.readline()) for _ in range(5)]
        got.append(bytes(await reader.readline()))
        return got

    async def until(reader: PooledReader) -> list[bytes]:
        got = [bytes(await reader.readuntil(b"\r\n")) for _ in range(5)]
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readuntil(b"\r\n")
        got.append(info.value.partial)
        return got

    want = [b"line %d\r\n" % i for i in range(5)] + [b"tail"]
    assert run(_reply_lines(lines)) == want
    assert run(_reply_lines(until)) == want


def test_a_waiting_line_read_sees_bytes_after_the_chain_is_replaced(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A ``readline``/``readuntil`` waiting on an empty buffer finds the line that
    arrives after another call (here ``readexactly_chain(0)``) replaced the
    chain's deque of chunks: it looks at the chain afresh after each wait instead
    of waiting on the old, now detached, deque until EOF."""

    async def main() -> None:
        async with on_socketpair(network_pool()) as (reader, peer):
            for read in (reader.readline, lambda: reader.readuntil(b"\n")):
                task = asyncio.ensure_future(read())
                while reader._waiter is None or reader._waiter.done():
                    await asyncio.sleep(0)
                assert len(await reader.readexactly_chain(0)) == 0
                peer.send(b"line\n")
                assert await asyncio.wait_for(task, 10) == b"line\n"

    run(main())


# -- over real sockets -------------------------------------------------------------------


async def pooled_pair(
    pool: BufferPool, **kw: Any
) -> tuple[PooledReader, PooledWriter, asyncio.StreamReader, asyncio.StreamWriter]:
    """A PooledReader/Writer on one end of a loopback TCP connection, asyncio streams on the other."""
    accepted: asyncio.Future[tuple[PooledReader, PooledWriter]] = asyncio.get_running_loop().create_future()
    server = await iobuf.start_server(
        lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0, pool=pool, **kw
    )
    port = server.sockets[0].getsockname()[1]
    peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await accepted
    server.close()
    return reader, writer, peer_reader, peer_writer


async def close(writer: PooledWriter, peer: asyncio.StreamWriter) -> None:
    writer.close()
    peer.close()
    await writer.wait_closed()


@contextlib.asynccontextmanager
async def on_socketpair(pool: BufferPool, **kw: Any) -> AsyncIterator[tuple[PooledReader, socket.socket]]:
    """A PooledReader on one end of a socket pair (its transport made by the running
    loop) and the other end, non-blocking; both are closed on the way out, even after
    a failure (an open transport would make uvloop's close wait)."""
    a, b = socket.socketpair()
    b.setblocking(False)
    transport, reader = await asyncio.get_running_loop().create_connection(
        lambda: PooledReader(pool, **kw), sock=a
    )
    try:
        yield reader, b
    finally:
        transport.close()
        b.close()


@pytest.mark.parametrize("copy_max", [DEFAULT_COPY_MAX, 0])
def test_kept_small_values_pin_no_receive_buffer(run: Callable[[Awaitable[Any]], Any], copy_max: int) -> None:
    """A server keeps 2,000 values of 100 bytes read with ``readexactly``, sent in one
    burst. With the default ``copy_max`` the values are copies and every receive
    buffer is back in the pool while they are kept; with ``copy_max=0`` they are
    views and pin receive buffers (which shows the check can fail)."""
    pool = network_pool()
    values = [bytes([i % 251]) * 100 for i in range(2000)]

    async def main() -> list[IoBuf]:
        reader, writer, _, peer = await pooled_pair(pool, copy_max=copy_max)
        peer.write(b"".join(values))
        kept = [await reader.readexactly(100) for _ in values]
        await close(writer, peer)
        return kept

    kept = run(main())
    gc.collect()
    assert kept == values
    if copy_max:
        assert in_use(pool) == 0
    else:
        assert in_use(pool) > 0
    del kept
    gc.collect()
    assert in_use(pool) == 0


def test_a_chain_taken_whole_is_not_extended_by_later_receives(run: Callable[[Awaitable[Any]], Any]) -> None:
    """``readexactly_chain`` of everything buffered hands over the chunks themselves;
    bytes received next into the same receive buffer (adjacent to the last chunk,
    which the compiled core's commit extends in place) must not grow what was
    handed over."""

    async def main() -> None:
        async def buffered(n: int) -> None:  # received, with no read waiting (none lets go of the buffer)
            while reader.buffered < n:
                await asyncio.sleep(0)

        async with on_socketpair(network_pool()) as (reader, peer):
            peer.send(b"abc")
            await asyncio.wait_for(buffered(3), 10)
            first = await reader.readexactly_chain(3)
            peer.send(b"def")
            await asyncio.wait_for(buffered(3), 10)
            (handed,) = first._chunks
            (chunk,) = reader._chain._chunks
            assert chunk.address == handed.address + 3  # the same receive buffer, adjacent
            assert bytes(first) == b"abc" and len(first) == 3
            assert await reader.readexactly(3) == b"def"

    run(main())


def test_read_to_eof_copies_a_small_rest_and_views_a_large_one(run: Callable[[Awaitable[Any]], Any]) -> None:
    """``read()`` (to EOF) follows the rule of every read: a rest of at most
    ``copy_max`` bytes comes back as a copy that pins no receive buffer, a larger
    one received into one buffer as a view of it."""

    async def main(size: int) -> IoBuf:
        async with on_socketpair(pool, copy_max=1000) as (reader, peer):
            peer.send(b"x" * size)
            peer.shutdown(socket.SHUT_WR)
            return await asyncio.wait_for(reader.read(), 10)

    pool = network_pool()
    small = run(main(5))
    assert small == b"xxxxx" and not small.is_pooled
    large = run(main(5000))
    assert large == b"x" * 5000 and large.is_pooled


def test_an_idle_connection_holds_no_large_receive_buffer(run: Callable[[Awaitable[Any]], Any]) -> None:
    """Request/response over one connection: while the reader waits for the next
    request, having read everything, it holds no receive buffer larger than
    ``IDLE_KEEP_MAX``: none while its receive size is still large, then at most
    one small one, which the next requests reuse (no buffer taken per request)."""
    pool = network_pool()
    small = pool.size_class(IDLE_KEEP_MAX)
    assert small is not None

    def large_in_use() -> int:
        return sum(c.created - c.global_free - c.local_free for c in pool.stats().classes if c.size > small)

    async def main() -> None:
        reader, writer, peer_reader, peer = await pooled_pair(pool)
        for i in range(20):
            peer.write(b"request %d\n" % i)
            assert await reader.readline() == b"request %d\n" % i
            waiting = asyncio.create_task(reader.readline())
            writer.write(b"ok\n")
            assert await peer_reader.readline() == b"ok\n"  # the reader's task has run to its wait
            assert large_in_use() == 0
            assert in_use(pool) <= 1
            if i == 0:
                assert in_use(pool) == 0  # the first receive buffer (16 KiB) went back
            peer.write(b"\n")
            assert await waiting == b"\n"
        # Small messages shrank the receive size to its least: one small buffer is
        # kept, and the later requests took no other.
        assert in_use(pool) == 1
        created = sum(c.created for c in pool.stats().classes)
        kept = reader._cur
        for i in range(50):
            peer.write(b"again %d\n" % i)
            assert await reader.readline() == b"again %d\n" % i
        assert sum(c.created for c in pool.stats().classes) == created
        assert reader._cur is kept  # each drained receive buffer was rewound, not replaced
        await close(writer, peer)

    run(main())


def test_values_kept_as_views_survive_the_reuse_of_their_receive_buffer(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """Requests one at a time, each a header line and a 100-byte value read as a view
    (``copy_max=10``) and kept: a receive buffer a kept value lives in is never
    rewound under it, so every value reads back intact after all the requests, and
    the buffers come back once the values are dropped."""
    pool = network_pool()
    values = [
        bytes([i % 251]) * 100 for i in range(200)
    ]  # (each may pin a buffer: fewer than the class holds)

    async def main() -> list[IoBuf]:
        reader, writer, peer_reader, peer = await pooled_pair(pool, copy_max=10)
        kept = []
        for value in values:
            peer.write(b"$100\n" + value)
            assert await reader.readline() == b"$100\n"
            kept.append(await reader.readexactly(100))
            writer.write(b"+\n")
            assert await peer_reader.readline() == b"+\n"
        await close(writer, peer)
        return kept

    kept = run(main())
    assert all(view.is_pooled for view in kept)
    assert kept == values
    del kept
    gc.collect()
    assert in_use(pool) == 0


def test_receive_buffers_grow_with_bulk_traffic_and_shrink_with_small(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """Receives start at 16 KiB. A 4 MiB stream read as fast as it comes reaches the
    pool's largest class (128 KiB); then one-line requests, one at a time, shrink the
    receive size to its least (1 KiB), and the reader receives them into a small
    buffer (no class above ``IDLE_KEEP_MAX`` in use)."""
    pool = network_pool()

    async def main() -> None:
        reader, writer, peer_reader, peer = await pooled_pair(pool)
        peer.write(bytes(4 << 20))
        left = 4 << 20
        while left:
            left -= len(await reader.read(left))
        assert class_stats(pool, 128 * 1024).created > 0
        for i in range(40):
            peer.write(b"ping %d\n" % i)
            await reader.readline()
            writer.write(b"pong\n")
            await peer_reader.readline()
        assert reader._guess == MIN_GUESS
        assert all(
            c.created == c.global_free + c.local_free for c in pool.stats().classes if c.size > IDLE_KEEP_MAX
        )
        await close(writer, peer)

    run(main())


def test_a_large_frame_whose_start_is_buffered_moves_into_one_buffer(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A ``readexactly`` of 300,000 bytes (more than the pool's largest class) waits with
    its first 100 bytes buffered. The next receive buffer holds the whole frame, the
    100 bytes move into it (counted in ``copied_bytes``), and the frame comes back as
    one view of it. The loop may ask for a buffer again after the frame is complete
    and before the read runs (uvloop receives several times per wakeup): it always
    gets room, never an empty buffer, and the next bytes stay in order."""
    pool = network_pool()
    frame = bytes(range(256)) * 1171 + b"abcd"  # 300,000 bytes

    def receive(reader: PooledReader, data: bytes) -> None:
        """What a transport does: fill the buffer it is given, report the count."""
        while data:
            view = reader.get_buffer(-1)
            assert len(view) > 0
            n = min(len(view), len(data), 65536)
            view[:n] = data[:n]
            reader.buffer_updated(n)
            data = data[n:]

    async def main() -> None:
        async with on_socketpair(pool) as (reader, _):
            receive(reader, frame[:100])
            waiting = asyncio.create_task(reader.readexactly(len(frame)))
            await asyncio.sleep(0)  # one loop pass: the read runs until it waits
            receive(reader, frame[100:] + b"next")
            assert len(reader.get_buffer(-1)) > 0
            got = await asyncio.wait_for(waiting, 10)
            assert got == frame and reader.copied_bytes == 100
            assert await reader.readexactly(4) == b"next"

    run(main())


def test_a_starved_receive_that_brings_nothing_still_recovers(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """The loop asks for a buffer while the pool is exhausted (the reader hands it a
    heap stand-in and is starved), and the receive then brings nothing: no data yet,
    so no ``buffer_updated`` follows. Once the pool serves again the reader notices by
    itself (its retry) and is no longer starved; the next bytes still arrive."""
    pool = BufferPool(
        BufferPoolConfig(min_size=1024, max_size=1024, max_per_class=1, thread_cache_capacity=0)
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with on_socketpair(pool, chunk_size=1024) as (reader, peer):
            held = pool.try_alloc(1024)  # the class is exhausted
            reader.get_buffer(-1)  # what the loop does before a receive that finds nothing
            assert reader.starved and reader.heap_fallbacks == 1
            del held
            deadline = loop.time() + 10
            while reader.starved and loop.time() < deadline:  # the retry is a timer: poll for its effect
                await asyncio.sleep(0.01)
            assert not reader.starved
            await loop.sock_sendall(peer, b"late\n")
            assert await asyncio.wait_for(reader.readline(), 10) == b"late\n"

    run(main())


async def trickle(reader: PooledReader, peer: socket.socket, data: bytes) -> None:
    """Send ``data`` one byte per receive: each byte is received before the next is sent."""
    loop = asyncio.get_running_loop()
    for byte in data:
        target = reader.buffered + 1
        await loop.sock_sendall(peer, bytes((byte,)))
        deadline = loop.time() + 10
        while reader.buffered < target and loop.time() < deadline:
            await asyncio.sleep(0)
        assert reader.buffered >= target


def test_a_frame_tail_received_byte_by_byte_is_not_copied_again(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A waiting 128 KiB readexactly gets a buffer of exactly that size (the pool's
    largest class); its last 200 bytes then arrive one receive each, with under 1 KiB
    of room left. The reader keeps the buffer that holds them: the frame is copied at
    most once (found in review: each receive moved the whole frame into a new buffer)."""
    pool = network_pool()
    n, k = 1 << 17, 200

    async def main() -> None:
        async with on_socketpair(pool) as (reader, peer):
            waiting = asyncio.create_task(reader.readexactly(n))
            await asyncio.sleep(0)  # one loop pass: the read runs until it waits
            await asyncio.get_running_loop().sock_sendall(peer, b"x" * (n - k))
            await trickle(reader, peer, b"y" * k)
            assert await asyncio.wait_for(waiting, 10) == b"x" * (n - k) + b"y" * k
            assert reader.copied_bytes <= n

    run(main())


def test_a_frame_too_large_for_one_buffer_does_not_take_one_per_receive(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    """A readexactly above FRAME_MAX (64 MiB) is received in ordinary buffers: 100
    one-byte receives share one, they do not each take a pool buffer (found in review)."""
    pool = network_pool()

    async def main() -> None:
        async with on_socketpair(pool) as (reader, peer):
            waiting = asyncio.create_task(reader.readexactly((1 << 26) + 1))
            await asyncio.sleep(0)
            await trickle(reader, peer, b"z" * 100)
            assert in_use(pool) <= 2
            waiting.cancel()

    run(main())
