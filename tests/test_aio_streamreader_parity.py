"""PooledReader against asyncio.StreamReader, differentially.

The same byte stream goes to a real ``asyncio.StreamReader`` and to a
``PooledReader`` over real socket pairs; the same reads must give the same
bytes, or the same exception type with the same ``consumed``, ``partial`` and
``expected``, and leave the same bytes behind (read to EOF afterwards).

StreamReader's limit checks depend on how much is buffered when a read looks,
so both readers hold the whole stream before the first read: the stream goes
to StreamReader in one ``sendall`` before its first receive (one receive takes
it all), and to PooledReader piece by piece, each piece received before the next
is sent, into receive buffers as small as 16 bytes, so the stream lies across
many buffers in different ways. ``read(n)`` is left out: PooledReader returns at
most the bytes of one receive buffer (zero-copy), StreamReader up to ``n`` of
everything buffered.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iobuf import BufferPool, BufferPoolConfig, PooledReader, PooledWriter, open_connection

SEPARATORS = (b"\n", b"--", b"xyz")
#: What readuntil accepts: the above, other bytes-like objects, and (Python 3.13+,
#: where StreamReader takes them) tuples of separators, overlapping ones included.
READUNTIL_SEPARATORS: tuple[Any, ...] = (
    *SEPARATORS,
    bytearray(b"--"),
    memoryview(b"xyz"),
    *([(b"\n", b"--"), (b"xyz", b"y", b"-"), (b"--", b"-")] if sys.version_info >= (3, 13) else []),
)
#: A read: ("readline", 0), ("readuntil", index into READUNTIL_SEPARATORS) or ("readexactly", n).
Op = tuple[str, int]
#: No read may wait longer than this: the whole stream and EOF are sent first.
READ_TIMEOUT = 5.0


def small_pool() -> BufferPool:
    """Classes from 16 bytes up, so a small chunk size spreads a stream over many buffers."""
    return BufferPool(
        BufferPoolConfig(min_size=16, max_size=4096, max_per_class=4096, thread_cache_capacity=0)
    )


async def apply(reader: Any, ops: list[Op]) -> list[object]:
    """Each read's result or exception (type and attributes), then the rest of the stream."""
    results: list[object] = []
    for name, arg in ops:
        try:
            if name == "readline":
                got = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            elif name == "readuntil":
                got = await asyncio.wait_for(reader.readuntil(READUNTIL_SEPARATORS[arg]), READ_TIMEOUT)
            else:
                got = await asyncio.wait_for(reader.readexactly(arg), READ_TIMEOUT)
        except asyncio.LimitOverrunError as e:
            results.append((type(e).__name__, e.consumed))
        except asyncio.IncompleteReadError as e:
            results.append((type(e).__name__, bytes(e.partial), e.expected))
        except ValueError as e:
            results.append((type(e).__name__,))
        else:
            results.append(bytes(got))
    results.append(("rest", bytes(await asyncio.wait_for(reader.read(), READ_TIMEOUT))))
    results.append(("at_eof", reader.at_eof()))
    return results


async def streamreader_outcome(stream: bytes, limit: int, ops: list[Op]) -> list[object]:
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=a, limit=limit)
    with b:
        b.sendall(stream)  # before the loop runs again: the first receive takes it all
        b.shutdown(socket.SHUT_WR)
        try:
            return await apply(reader, ops)
        finally:
            writer.close()
            await writer.wait_closed()


async def pooled_outcome(pieces: list[bytes], limit: int, chunk_size: int, ops: list[Op]) -> list[object]:
    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(
        lambda: PooledReader(small_pool(), chunk_size=chunk_size, high_water=1 << 30, limit=limit), sock=a
    )
    writer = PooledWriter(transport, reader)
    with b:
        try:
            sent = 0
            deadline = loop.time() + READ_TIMEOUT
            for piece in pieces:
                b.sendall(piece)
                sent += len(piece)
                while reader.buffered < sent:  # this piece lands before the next is sent
                    assert loop.time() < deadline, "the reader stopped receiving"
                    await asyncio.sleep(0)
            b.shutdown(socket.SHUT_WR)
            return await apply(reader, ops)
        finally:
            writer.close()
            await writer.wait_closed()


def cut(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)] or [b""]


async def compare(stream: bytes, pieces: list[bytes], limit: int, chunk_size: int, ops: list[Op]) -> None:
    expected = await streamreader_outcome(stream, limit, ops)
    got = await pooled_outcome(pieces, limit, chunk_size, ops)
    assert got == expected, (stream, pieces, limit, chunk_size, ops)


def boundary_cases() -> list[tuple[bytes, int, list[Op]]]:
    """Lines of limit-1 .. limit+2 bytes, complete, cut off at EOF, or ending in part
    of a separator, read with each separator, with readline, and mixed with readexactly."""
    cases = []
    for index, sep in enumerate(SEPARATORS):
        for limit in (1, 4, 8):
            for n in range(max(0, limit - 1), limit + 3):
                line = bytes(range(97, 97 + n))  # no separator byte inside
                streams = [line + sep + line[::-1] + sep + b"tail", line, line + sep[:-1]]
                for stream in streams:
                    for ops in (
                        [("readuntil", index)] * 3,
                        [("readline", 0)] * 3,
                        [("readuntil", index), ("readline", 0), ("readexactly", 3), ("readuntil", index)],
                        [("readexactly", n + 1), ("readuntil", index)],
                    ):
                        cases.append((stream, limit, ops))
    return cases


@pytest.mark.parametrize("chunk_size", [16, 1024])
def test_limits_and_eof_at_the_boundaries_match_streamreader(
    run: Callable[[Coroutine[Any, Any, None]], None], chunk_size: int
) -> None:
    """Every boundary case (limit +-1 with separators of one and several bytes, EOF
    mid-line and mid-separator) gives StreamReader's results, exceptions and
    leftover bytes, with the stream received whole and in 3-byte pieces."""

    async def main() -> None:
        for stream, limit, ops in boundary_cases():
            await compare(stream, [stream], limit, chunk_size, ops)
            await compare(stream, cut(stream, 3), limit, chunk_size, ops)

    run(main())


def test_limit_semantics_spelled_out(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    """The rules the differential tests enforce, stated once: ``limit`` excludes the
    separator; ``consumed`` is where the separator starts, or how far the buffer was
    searched without one; an overlong ``readline`` raises ValueError and drops the
    line, so the next ``readline`` gets the next line."""

    async def main() -> None:
        stream = b"12345678\n123456789\nnext\n" + b"z" * 20
        ops: list[Op] = [
            ("readline", 0),
            ("readuntil", 0),
            ("readline", 0),
            ("readline", 0),
            ("readuntil", 0),
        ]
        results = await pooled_outcome([stream], 8, 16, ops)
        assert results == [
            b"12345678\n",  # exactly limit bytes before the separator: accepted
            ("LimitOverrunError", 8 + 1),  # separator found at 9 > limit; the bytes stay
            ("ValueError",),  # the same line through readline: dropped
            b"next\n",
            ("LimitOverrunError", 20),  # no separator in 20 buffered bytes
            ("rest", b"z" * 20),
            ("at_eof", True),
        ]
        assert results == await streamreader_outcome(stream, 8, ops)
        sep_ops: list[Op] = [("readuntil", 2), ("readuntil", 2), ("readuntil", 2)]
        stream = b"abcdxyz" + b"abcdexy"
        results = await pooled_outcome([stream], 4, 16, sep_ops)
        assert results == [
            b"abcdxyz",
            ("LimitOverrunError", 5),  # 7 bytes, no "xyz": searched through 7 + 1 - 3
            ("LimitOverrunError", 5),
            ("rest", b"abcdexy"),
            ("at_eof", True),
        ]
        assert results == await streamreader_outcome(stream, 4, sep_ops)

    run(main())


tokens = st.sampled_from([b"a", b"bc", b"0123456789", b"\n", b"-", b"--", b"x", b"xy", b"xyz"])
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("readline"), st.just(0)),
        st.tuples(st.just("readuntil"), st.integers(0, len(READUNTIL_SEPARATORS) - 1)),
        st.tuples(st.just("readexactly"), st.integers(0, 40)),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(tokens, max_size=40).map(b"".join),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    limit=st.integers(1, 24),
    chunk_size=st.sampled_from([16, 32, 1024]),
    ops=ops_strategy,
)
def test_random_streams_and_reads_match_streamreader(
    stream: bytes, cuts: list[int], limit: int, chunk_size: int, ops: list[Op]
) -> None:
    """Random streams rich in separators and partial separators, cut into random
    pieces, read by random sequences of readline/readuntil/readexactly at random
    limits (separators of every accepted type): the same outcomes as StreamReader,
    read for read."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    pieces = [stream[i:j] for i, j in itertools.pairwise(bounds)]
    asyncio.run(compare(stream, pieces, limit, chunk_size, ops))


async def until(condition: Callable[[], bool], timeout: float = READ_TIMEOUT) -> None:
    """Poll ``condition`` every millisecond; fail the test if it is still false at ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.001)


def test_a_reset_connection_raises_before_buffered_bytes_as_in_streamreader(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    """A connection reset (RST) with bytes still buffered: as StreamReader, every
    read raises the error first (``read(0)`` and ``readexactly(0)`` too) and
    ``at_eof()`` stays false; the bytes are not served as if the stream had ended."""

    async def outcome(connect: Callable[[str, int], Coroutine[Any, Any, Any]]) -> list[object]:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)
            accepting = loop.create_task(loop.sock_accept(listener))
            reader, writer = await connect("127.0.0.1", listener.getsockname()[1])
            peer, _ = await accepting
        peer.setblocking(True)
        peer.sendall(b"line1\nline2\n")
        # Nothing in either reader signals these two states, so poll for them with a
        # deadline (the loop must run the receive and the RST's callbacks first).
        await until(
            lambda: (reader.buffered if isinstance(reader, PooledReader) else len(reader._buffer)) >= 12
        )
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # an RST, not a FIN
        await until(lambda: reader.exception() is not None)
        results: list[object] = []
        for call in (
            reader.readline,
            lambda: reader.readuntil(b"\n"),
            lambda: reader.readexactly(0),
            lambda: reader.read(0),
            reader.read,
        ):
            try:
                results.append(bytes(await asyncio.wait_for(call(), READ_TIMEOUT)))
            except Exception as e:  # the outcome is what is compared
                results.append(type(e).__name__)
        results.append(reader.at_eof())
        writer.close()
        return results

    async def pooled(host: str, port: int) -> Any:
        return await open_connection(host, port, pool=small_pool())

    async def main() -> None:
        expected = await outcome(asyncio.open_connection)
        assert expected == ["ConnectionResetError"] * 5 + [False]
        assert await outcome(pooled) == expected

    run(main())
