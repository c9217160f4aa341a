"""Every public callable, fed hypothesis-generated arguments of every type and range.

Only ``TypeError``, ``ValueError`` or a ``PoolError`` may come out (nothing
else: no ``OverflowError``, ``AttributeError``, ``SystemError``, crash or
hang), and the pool must work normally afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iobuf
from iobuf import BlockFile, BufferPool, BufferPoolConfig, IoBuf, IoBufMut, IoBufs, PoolError

from .strategies import mistaken_arguments

ALLOWED = (TypeError, ValueError, PoolError)
SETTINGS = settings(
    max_examples=150 if os.environ.get("CI") else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


ARG_LISTS = mistaken_arguments()


def small_pool() -> BufferPool:
    return BufferPool(BufferPoolConfig(min_size=64, max_size=4096, max_per_class=4, alignment=64))


def still_works(pool: BufferPool) -> None:
    """The pool hands out a buffer, holds bytes in it and accounts for it."""
    buf = pool.alloc(100)
    buf.put_slice(b"still fine")
    frozen = buf.freeze()
    assert frozen == b"still fine"
    for c in pool.stats().classes:
        assert 0 <= c.global_free <= c.created <= c.max_buffers


def call_checked(fn: Callable[..., Any], args: list[Any]) -> None:
    try:
        fn(*args)
    except ALLOWED:
        pass
    except IndexError:
        # Indexing out of range raises IndexError, as for bytes; nothing else may.
        if getattr(fn, "__name__", "") != "__getitem__":
            raise


# -- targets: (name, factory returning a callable bound to fresh objects) ------------------


def pool_methods(pool: BufferPool) -> dict[str, Callable[..., Any]]:
    return {
        name: getattr(pool, name)
        for name in (
            "try_alloc",
            "alloc",
            "alloc_len",
            "try_alloc_zeroed",
            "alloc_zeroed",
            "size_class",
            "trim",
            "outstanding",
        )
    }


def mut_methods(buf: IoBufMut) -> dict[str, Callable[..., Any]]:
    names = ("put_slice", "advance_mut", "set_len", "truncate", "advance", "copy_to_bytes", "__eq__")
    return {name: getattr(buf, name) for name in names}


def iobuf_methods(buf: IoBuf) -> dict[str, Callable[..., Any]]:
    names = ("slice", "split_to", "advance", "copy_to_bytes", "into_mut_with_pool", "__getitem__", "__eq__")
    return {name: getattr(buf, name) for name in names}


def chain_methods(chain: IoBufs) -> dict[str, Callable[..., Any]]:
    names = ("append", "prepend", "advance", "copy_to_bytes", "split_to", "coalesce_with_pool", "__eq__")
    return {name: getattr(chain, name) for name in names}


CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "BufferPool": BufferPool,
    "BufferPoolConfig": BufferPoolConfig,
    "IoBufMut": IoBufMut,
    "IoBufMut.with_capacity": IoBufMut.with_capacity,
    "IoBufMut.zeroed": IoBufMut.zeroed,
    "IoBufMut.with_alignment": IoBufMut.with_alignment,
    "IoBufMut.zeroed_with_alignment": IoBufMut.zeroed_with_alignment,
    "IoBuf": IoBuf,
    "IoBuf.copy_from_slice": IoBuf.copy_from_slice,
    "IoBufs": IoBufs,
    "PooledReader": iobuf.PooledReader,
    "page_size": iobuf.page_size,
    "cache_line_size": iobuf.cache_line_size,
    "flush_thread_cache": iobuf.flush_thread_cache,
}

CONFIG_BUILDERS = [
    "with_pool_min_size",
    "with_min_size",
    "with_max_size",
    "with_max_per_class",
    "with_parallelism",
    "with_thread_cache_capacity",
    "with_prefill",
    "with_alignment",
    "with_budget_bytes",
    "with_scrub_on_return",
    "with_track_allocations",
]


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@SETTINGS
@given(args=ARG_LISTS)
def test_constructors(name: str, args: list[Any]) -> None:
    """Every public constructor and module-level function, given any mistaken arguments, raises only
    TypeError, ValueError or a PoolError (never OverflowError, AttributeError, SystemError or a
    crash), and a pool made beforehand still works afterwards."""
    pool = small_pool()
    # Huge sizes are valid requests for a heap buffer; keep them from allocating gigabytes.
    if name.startswith("IoBufMut.") and args and isinstance(args[0], int) and args[0] > 1 << 20:
        args[0] = 1 << 20
    call_checked(CONSTRUCTORS[name], args)
    still_works(pool)


@pytest.mark.parametrize("name", CONFIG_BUILDERS)
@SETTINGS
@given(args=ARG_LISTS)
def test_config_builders_then_validate(name: str, args: list[Any]) -> None:
    """Each ``with_*`` builder, then ``validate()`` and a pool built from the result:
    only TypeError/ValueError come out; a builder that accepts its arguments returns
    a new config and leaves the one it was called on unchanged, and a config that
    validates makes a pool that hands out buffers."""
    base = BufferPoolConfig.for_network()

    def build(*a: Any) -> None:
        cfg = getattr(base, name)(*a)
        assert isinstance(cfg, BufferPoolConfig) and cfg is not base
        cfg.validate()
        if cfg.max_size <= 1 << 20 and cfg.max_per_class <= 64:
            with BufferPool(cfg) as pool:
                still_works(pool)

    call_checked(build, args)
    assert base == BufferPoolConfig.for_network()


@pytest.mark.parametrize("name", sorted(pool_methods(small_pool())))
@SETTINGS
@given(args=ARG_LISTS)
def test_pool_methods(name: str, args: list[Any]) -> None:
    """Each BufferPool method, given any mistaken arguments, raises only TypeError, ValueError or a
    PoolError, and the pool still hands out, fills and accounts for a buffer afterwards."""
    pool = small_pool()
    if args and isinstance(args[0], int) and args[0] > 1 << 20:
        args[0] = 1 << 20  # an oversized fallback of up to 1 MiB, not of 2**63 bytes
    call_checked(pool_methods(pool)[name], args)
    still_works(pool)


@pytest.mark.parametrize("name", sorted(mut_methods(IoBufMut())))
@pytest.mark.parametrize("kind", ["pooled", "heap"])
@SETTINGS
@given(args=ARG_LISTS, content=st.binary(max_size=100))
def test_iobufmut_methods(name: str, kind: str, args: list[Any], content: bytes) -> None:
    """Each IoBufMut method, on a pooled and on a heap buffer holding random bytes, given any mistaken
    arguments, raises only the allowed errors (IndexError only from indexing), leaves the length
    within the capacity, and the pool still works once the buffer is dropped."""
    pool = small_pool()
    buf = pool.alloc(128) if kind == "pooled" else IoBufMut()
    buf.put_slice(content)
    call_checked(mut_methods(buf)[name], args)
    assert 0 <= len(buf) <= buf.capacity or buf.capacity == 0
    del buf
    still_works(pool)


@pytest.mark.parametrize("name", sorted(iobuf_methods(IoBuf(b""))))
@SETTINGS
@given(args=ARG_LISTS, content=st.binary(max_size=100))
def test_iobuf_methods(name: str, args: list[Any], content: bytes) -> None:
    """Each IoBuf method, given any mistaken arguments, raises only the allowed errors (IndexError only
    from indexing), a clone taken before still reads the original bytes (a failing call changed
    nothing it shares), and the pool still works afterwards."""
    pool = small_pool()
    mut = pool.alloc(128)
    mut.put_slice(content)
    frozen = mut.freeze()
    keep = frozen.clone()
    call_checked(iobuf_methods(frozen)[name], args)
    assert keep == content  # a failed call changed nothing a clone can see
    del frozen, keep, mut
    still_works(pool)


@pytest.mark.parametrize("name", sorted(chain_methods(IoBufs())))
@SETTINGS
@given(args=ARG_LISTS, pieces=st.lists(st.binary(max_size=40), max_size=4))
def test_chain_methods(name: str, args: list[Any], pieces: list[bytes]) -> None:
    """Each IoBufs method, on a chain of random pieces, given any mistaken arguments, raises only the
    allowed errors and leaves the chain canonical (no empty chunk)."""
    pool = small_pool()
    chain = IoBufs(pieces)
    call_checked(chain_methods(chain)[name], args)
    assert all(len(c) for c in chain.chunks())  # still canonical
    still_works(pool)


# -- I/O entry points: real sockets and files; fds stay fixed, everything else is swept ----


@pytest.fixture
def io_targets() -> Iterator[tuple[socket.socket, socket.socket, int, Path]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    here = Path(__file__).resolve().parent
    fd, name = tempfile.mkstemp(dir=here, prefix=".sweep-")
    try:
        yield a, b, fd, Path(name)
    finally:
        a.close()
        b.close()
        os.close(fd)
        Path(name).unlink()


IO_CALLS = ["send_all", "write_all", "pwrite_all", "recv_into_pool", "recv_exactly", "pread_into_pool"]


@pytest.mark.parametrize("name", IO_CALLS)
@SETTINGS
@given(args=ARG_LISTS)
def test_io_helpers(
    io_targets: tuple[socket.socket, socket.socket, int, Path], name: str, args: list[Any]
) -> None:
    """Each vectored I/O helper, on a real non-blocking socket pair and a real file, given any mistaken
    arguments, raises only the allowed errors (or BlockingIOError/EOFError for a socket with nothing
    to read or a short file), and the pool still works afterwards."""
    a, b, fd, _ = io_targets
    pool = small_pool()
    # Huge counts are valid requests for a buffer that size; keep them from allocating gigabytes.
    args = [min(x, 1 << 20) if type(x) is int and x > 0 else x for x in args]
    fn = getattr(iobuf, name)
    target: Any = a if name.startswith(("send", "recv")) else fd
    with_pool = name in ("recv_into_pool", "recv_exactly", "pread_into_pool")
    try:
        fn(target, pool, *args) if with_pool else fn(target, *args)
    except (*ALLOWED, BlockingIOError, EOFError):
        pass  # non-blocking sockets with nothing to read, or a file shorter than asked
    while True:  # empty the peer so the next example starts clean
        try:
            if not b.recv(1 << 16):
                break
        except BlockingIOError:
            break
    still_works(pool)


BLOCKFILE_CALLS = ["read_at", "readinto_at", "write_at", "truncate"]


@pytest.mark.parametrize("name", BLOCKFILE_CALLS)
@pytest.mark.parametrize("direct", [None, False])
@SETTINGS
@given(args=ARG_LISTS)
def test_blockfile_methods(
    io_targets: tuple[socket.socket, socket.socket, int, Path],
    name: str,
    direct: bool | None,
    args: list[Any],
) -> None:
    """Each BlockFile method, buffered and in the default mode, given any mistaken arguments, raises
    only the allowed errors (IndexError never), and the pool still works afterwards."""
    _, _, _, path = io_targets
    pool = BufferPool(BufferPoolConfig.for_storage().with_max_size(1 << 20))
    capped = [
        min(x, 1 << 20) if isinstance(x, int) and not isinstance(x, bool) and x > 0 else x for x in args
    ]
    with BlockFile(path, pool, mode="r+", direct=direct) as f:
        call_checked(getattr(f, name), capped)
    still_works(pool)


@SETTINGS
@given(args=ARG_LISTS)
def test_blockfile_constructor(
    io_targets: tuple[socket.socket, socket.socket, int, Path], args: list[Any]
) -> None:
    """BlockFile given any mistaken mode and direct arguments raises only the allowed errors or the
    OS's own OSError, and the pool still works afterwards."""
    _, _, _, path = io_targets
    pool = small_pool()

    def make(*a: Any) -> None:
        BlockFile(path, pool, *a).close()

    try:
        call_checked(make, args)
    except OSError:
        pass  # e.g. mode "x+" on an existing file: the OS's answer, not ours
    still_works(pool)


@pytest.mark.parametrize("name", ["readexactly", "readexactly_chain", "read", "readuntil"])
@SETTINGS
@given(args=ARG_LISTS)
def test_reader_methods(name: str, args: list[Any]) -> None:
    """Each PooledReader read, on a connection with 44 bytes then EOF, given any mistaken arguments,
    raises only the allowed errors or asyncio's IncompleteReadError/LimitOverrunError within 5 s (no
    hang), keeps its transport, and the pool still works afterwards."""
    pool = small_pool()

    async def main() -> None:
        a, b = socket.socketpair()
        _, reader = await asyncio.get_running_loop().create_connection(
            lambda: iobuf.PooledReader(pool), sock=a
        )
        with b:
            b.sendall(b"0123456789\n" * 4)
            b.shutdown(socket.SHUT_WR)
            try:
                await asyncio.wait_for(getattr(reader, name)(*args), timeout=5)
            except (*ALLOWED, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
        assert reader.transport is not None
        reader.transport.close()
        await asyncio.sleep(0)

    asyncio.run(main())
    still_works(pool)
