"""The public names SPEC promises are exported, and nothing private leaks."""

from __future__ import annotations

import sys

import iobuf

SPEC_NAMES = {
    "BufferPool",
    "BufferPoolConfig",
    "IoBuf",
    "IoBufMut",
    "IoBufs",
    "PoolError",
    "Oversized",
    "Exhausted",
    "PoolStats",
    "SizeClassStats",
    "page_size",
    "cache_line_size",
    "flush_thread_cache",
    "IMPLEMENTATION",
    "PoolClosed",
}


def test_every_spec_name_is_exported() -> None:
    """``from iobuf import *`` binds every name SPEC promises, each to the very object
    its private module defines (a re-export, never a stand-in): a name left out of
    ``__all__``, or bound to a wrapper or an older object, fails here."""
    namespace: dict[str, object] = {}
    exec("from iobuf import *", namespace)  # noqa: S102 - a constant string: the star import under test
    assert set(iobuf.__all__) >= SPEC_NAMES
    for name in iobuf.__all__:
        obj = namespace[name]
        if callable(obj):  # classes and functions: defined in a private module
            home = sys.modules[obj.__module__]
            assert home.__name__.startswith("iobuf._"), (name, home)
            assert vars(home)[name] is obj, name
    assert namespace["IMPLEMENTATION"] in ("compiled", "python")
    for constant in ("IOV_MAX", "STAGE_BYTES"):
        value = namespace[constant]
        assert type(value) is int and value >= 1, (constant, value)


def test_all_lists_only_public_names() -> None:
    """__all__ has no private names and no duplicates; extras are deliberate."""
    assert len(iobuf.__all__) == len(set(iobuf.__all__))
    assert not any(n.startswith("_") for n in iobuf.__all__)
    io_helpers = {"IOV_MAX", "send_all", "write_all", "pwrite_all", "recv_into_pool", "recv_exactly"}
    storage = {"BlockFile", "STAGE_BYTES"}
    aio = {"PooledReader", "PooledWriter", "open_connection", "start_server"}
    ops = {"OutstandingBuffer"}
    assert set(iobuf.__all__) - SPEC_NAMES == {"pread_into_pool"} | io_helpers | storage | aio | ops
