"""Vectored I/O helpers on real sockets and real files (on the project's disk)."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iobuf import (
    IOV_MAX,
    BufferPool,
    BufferPoolConfig,
    IoBuf,
    IoBufMut,
    IoBufs,
    pread_into_pool,
    pwrite_all,
    recv_exactly,
    recv_into_pool,
    send_all,
    write_all,
)

from .helpers import allocated


@pytest.fixture
def pool() -> BufferPool:
    return BufferPool(BufferPoolConfig.for_network().with_max_per_class(64))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


@pytest.fixture
def disk_file() -> Iterator[Path]:
    """A file in the repository's directory tree, so it is on the real disk (not tmpfs)."""
    here = Path(__file__).resolve().parent
    fd, name = tempfile.mkstemp(dir=here, prefix=".io-test-")
    os.close(fd)
    yield Path(name)
    Path(name).unlink(missing_ok=True)


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def drain(sock: socket.socket, n: int, out: list[bytes]) -> None:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    out.append(bytes(got))


def test_send_all_survives_partial_sends(pool: BufferPool, pair: tuple[socket.socket, socket.socket]) -> None:
    """8 MiB over a socketpair (far past its buffer) arrives whole, in order, from mixed chunks."""
    a, b = pair
    parts = [payload(1 << 20, s) for s in range(8)]
    chain = IoBufs()
    for i, p in enumerate(parts):
        if i % 2:
            buf = pool.alloc(len(p))
            buf.put_slice(p)
            chain.append(buf)
        else:
            chain.append(p)
    got: list[bytes] = []
    reader = threading.Thread(target=drain, args=(b, 8 << 20, got))
    reader.start()
    assert send_all(a, chain) == 8 << 20
    reader.join()
    assert got[0] == b"".join(parts)
    assert len(chain) == 8 << 20  # the caller's chain is not consumed


def test_more_chunks_than_iov_max(pool: BufferPool, pair: tuple[socket.socket, socket.socket]) -> None:
    """A chain of 3 x IOV_MAX small chunks is sent in several vectored calls, byte for byte."""
    a, b = pair
    pieces = [bytes([i % 256]) * 7 for i in range(3 * IOV_MAX)]
    got: list[bytes] = []
    reader = threading.Thread(target=drain, args=(b, 7 * len(pieces), got))
    reader.start()
    send_all(a, IoBufs(pieces))
    reader.join()
    assert got[0] == b"".join(pieces)


def test_recv_exactly_and_recv_into_pool(pool: BufferPool, pair: tuple[socket.socket, socket.socket]) -> None:
    """Reads land in pooled buffers and come back frozen, exactly what was read; EOF is reported."""
    a, b = pair
    a.sendall(b"hello world")
    head = recv_exactly(b, pool, 5)
    assert head == b"hello" and head.is_pooled and isinstance(head, IoBuf)
    rest = recv_into_pool(b, pool, 100)
    assert rest == b" world" and rest.is_pooled
    a.sendall(b"abc")
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError, match="3 of 10"):
        recv_exactly(b, pool, 10)
    assert len(recv_into_pool(b, pool, 10)) == 0
    del head, rest
    assert allocated(pool, 1024) == 0


def test_write_all_and_pwrite_all_on_a_real_file(pool: BufferPool, disk_file: Path) -> None:
    """writev appends the whole chain; pwritev writes at an offset without moving the position."""
    data = IoBufs([b"alpha-", IoBuf(b"beta-"), IoBufMut(b"gamma")])
    with open(disk_file, "r+b", buffering=0) as f:
        assert write_all(f, data) == 16
        assert f.tell() == 16
        assert pwrite_all(f.fileno(), b"XY", 6) == 2
        assert f.tell() == 16
        big = payload(3 << 20, 7)
        assert pwrite_all(f, IoBufs([big[:1000], big[1000:]]), 16) == len(big)
    content = disk_file.read_bytes()
    assert content[:16] == b"alpha-XYta-gamma"
    assert content[16:] == big


def test_pread_into_pool_reads_exactly_or_to_eof(pool: BufferPool, disk_file: Path) -> None:
    """preadv fills a pooled buffer at an offset; past EOF returns what exists."""
    disk_file.write_bytes(payload(200_000, 3))
    fd = os.open(disk_file, os.O_RDONLY)
    try:
        mid = pread_into_pool(fd, pool, 50_000, 100_000)
        assert mid == payload(200_000, 3)[100_000:150_000] and mid.is_pooled
        tail = pread_into_pool(fd, pool, 1000, 199_500)
        assert tail == payload(200_000, 3)[199_500:]
        assert len(pread_into_pool(fd, pool, 10, 300_000)) == 0
    finally:
        os.close(fd)


def test_kernel_views_are_released_after_each_call(pool: BufferPool, disk_file: Path) -> None:
    """Writing a pooled chunk pins it only during the call: afterwards it converts back to mutable."""
    buf = pool.alloc(1024)
    buf.put_slice(b"z" * 1024)
    frozen = buf.freeze()
    with open(disk_file, "wb", buffering=0) as f:
        write_all(f, frozen)
    back = frozen.try_into_mut()
    assert back is not None and back.is_pooled


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p, s: send_all("not a socket", b"x"), TypeError),  # type: ignore[arg-type]
        (lambda p, s: write_all(-1, b"x"), ValueError),
        (lambda p, s: write_all(3.5, b"x"), TypeError),
        (lambda p, s: write_all(1, 42), TypeError),  # type: ignore[arg-type]
        (lambda p, s: pwrite_all(1, b"x", -1), ValueError),
        (lambda p, s: recv_exactly(s, p, -1), ValueError),
        (lambda p, s: recv_into_pool(None, p, 1), TypeError),  # type: ignore[arg-type]
        (lambda p, s: pread_into_pool(0, p, 1, True), TypeError),
    ],
)
def test_bad_arguments(
    pool: BufferPool, pair: tuple[socket.socket, socket.socket], call: object, error: type[Exception]
) -> None:
    """Wrong types and values are TypeError/ValueError before any I/O happens."""
    with pytest.raises(error):
        call(pool, pair[0])  # type: ignore[operator]


# -- borrowing: the write helpers never consume or change their arguments ------------------


def closed_fd(path: Path) -> int:
    """The number of an fd that was open on ``path`` and is closed now."""
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    return fd


def argument_of(kind: str, pool: BufferPool, data: bytes) -> IoBufMut | IoBuf | IoBufs | bytearray:
    """``data`` as each kind of argument the write helpers take."""
    if kind == "pooled IoBufMut":
        buf = pool.alloc(len(data))
        buf.put_slice(data)
        return buf
    if kind == "heap IoBufMut":
        return IoBufMut(data)
    if kind == "pooled IoBuf":
        buf = pool.alloc(len(data))
        buf.put_slice(data)
        return buf.freeze()
    if kind == "IoBufs":
        half = pool.alloc(len(data))
        half.put_slice(data[: len(data) // 2])
        return IoBufs([half, data[len(data) // 2 :]])
    return bytearray(data)


KINDS = ["pooled IoBufMut", "heap IoBufMut", "pooled IoBuf", "IoBufs", "bytearray"]


def shape(arg: object) -> tuple[object, ...]:
    """What must not change: type, length, bytes, chunk layout, and for IoBufMut capacity and pooling."""
    if isinstance(arg, IoBufs):
        return (IoBufs, len(arg), bytes(arg), [len(c) for c in arg.chunks()])
    if isinstance(arg, IoBufMut):
        return (IoBufMut, len(arg), bytes(arg), arg.capacity, arg.is_pooled)
    assert isinstance(arg, (IoBuf, bytearray))
    return (type(arg), len(arg), bytes(arg))


@pytest.mark.parametrize("kind", KINDS)
def test_send_all_borrows_its_argument(
    kind: str, pool: BufferPool, pair: tuple[socket.socket, socket.socket]
) -> None:
    """send_all leaves the caller's object as it was, after a successful send and after a
    failed one (closed socket -> EBADF); the bytes sent are the argument's."""
    a, b = pair
    data = payload(3000, 1)
    arg = argument_of(kind, pool, data)
    before = shape(arg)
    assert send_all(a, arg) == len(data)
    assert b.recv(len(data), socket.MSG_WAITALL) == data
    assert shape(arg) == before
    dead = socket.socket()
    dead.close()
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        send_all(dead, arg)
    assert info.value.errno == errno.EBADF
    assert shape(arg) == before
    assert send_all(a, arg) == len(data)  # still usable: the same bytes go out again
    assert b.recv(len(data), socket.MSG_WAITALL) == data


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("helper", ["write_all", "pwrite_all"])
def test_fd_write_helpers_borrow_their_argument(
    kind: str, helper: str, pool: BufferPool, disk_file: Path
) -> None:
    """write_all/pwrite_all leave the caller's object as it was, after a successful write and
    after failed ones (a closed fd and a read-only fd -> EBADF)."""
    data = payload(5000, 2)
    arg = argument_of(kind, pool, data)
    before = shape(arg)

    def write(fd: int) -> int:
        return write_all(fd, arg) if helper == "write_all" else pwrite_all(fd, arg, 0)

    fd = os.open(disk_file, os.O_WRONLY)
    try:
        assert write(fd) == len(data)
    finally:
        os.close(fd)
    assert disk_file.read_bytes() == data
    assert shape(arg) == before
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        write(closed_fd(disk_file))
    assert info.value.errno == errno.EBADF
    assert shape(arg) == before
    read_only = os.open(disk_file, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            write(read_only)
    finally:
        os.close(read_only)
    assert shape(arg) == before


def test_borrowed_pooled_buffer_stays_the_callers(pool: BufferPool, disk_file: Path) -> None:
    """After a write the caller's pooled IoBufMut can still be appended to, is still pooled,
    and goes back to the pool when the caller drops it (the helper kept nothing)."""
    buf = pool.alloc(1024)
    buf.put_slice(b"head")
    with open(disk_file, "wb", buffering=0) as f:
        write_all(f, buf)
        buf.put_slice(b"-tail")
        write_all(f, buf)
    assert disk_file.read_bytes() == b"headhead-tail"
    assert buf.is_pooled and buf == b"head-tail"
    del buf
    assert allocated(pool, 1024) == 0


def test_partial_sends_resume_mid_chunk_across_iov_max_batches(
    pool: BufferPool, pair: tuple[socket.socket, socket.socket]
) -> None:
    """3 x IOV_MAX chunks of 1000 bytes (far past the socket buffer) arrive whole and in order:
    sends stop mid-chunk and the next batch resumes there."""
    a, b = pair
    pieces = [payload(1000, i) for i in range(3 * IOV_MAX)]
    chain = IoBufs(pieces)
    got: list[bytes] = []
    reader = threading.Thread(target=drain, args=(b, 1000 * len(pieces), got))
    reader.start()
    assert send_all(a, chain) == 1000 * len(pieces)
    reader.join()
    assert got[0] == b"".join(pieces)
    assert chain.chunk_count == len(pieces)


@pytest.mark.parametrize("kind", ["memoryview", "numpy", "reversed"])
def test_strided_byte_buffers_are_written_in_order(kind: str) -> None:
    """A non-contiguous 1-D byte buffer (a strided memoryview or numpy view) is
    written byte for byte in order (it raised BufferError)."""
    import numpy as np

    base = bytes(range(200))
    if kind == "memoryview":
        data: object = memoryview(base)[::2]
    elif kind == "numpy":
        data = np.frombuffer(base, np.uint8)[::2]
    else:
        data = np.frombuffer(base, np.uint8)[::-1]
    expected = bytes(memoryview(data))  # type: ignore[arg-type]
    r, w = os.pipe()
    try:
        assert write_all(w, data) == len(expected)  # type: ignore[arg-type]
        assert os.read(r, 1000) == expected
    finally:
        os.close(r)
        os.close(w)
