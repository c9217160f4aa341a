"""The public names SPEC promises are exported, and nothing private leaks."""

from __future__ import annotations

import pickle
import pydoc
import sys
import traceback

import pytest

import iobuf

#: pydoc's plain-text renderer (``pydoc.plaintext``, which typeshed does not list).
PLAIN_TEXT: pydoc.TextDoc = pydoc.plaintext  # type: ignore[attr-defined]

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
    errors = {"PoolError", "Oversized", "Exhausted", "PoolClosed"}  # they say __module__ = "iobuf"
    for name in iobuf.__all__:
        obj = namespace[name]
        if callable(obj):  # classes and functions: defined in a private module
            home = sys.modules["iobuf._errors" if name in errors else obj.__module__]
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


@pytest.mark.parametrize("error", [iobuf.PoolError, iobuf.Oversized, iobuf.Exhausted, iobuf.PoolClosed])
def test_exceptions_go_by_their_public_name(error: type[iobuf.PoolError]) -> None:
    """The exceptions print as ``iobuf.<Name>`` (traceback, ``help``), not by the
    private module that defines them, and still pickle to the same class and message."""
    assert error.__module__ == "iobuf"
    assert getattr(iobuf, error.__name__) is error
    exc = error("why")
    assert repr(exc) == f"{error.__name__}('why')"
    shown = traceback.format_exception(exc)
    assert shown[-1] == f"iobuf.{error.__name__}: why\n"
    assert f"class {error.__name__}(" in pydoc.render_doc(error, renderer=PLAIN_TEXT)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is error
    assert str(back) == "why"
    default = pickle.loads(pickle.dumps(error()))
    assert str(default) == str(error())


def test_try_alloc_goes_by_its_public_name() -> None:
    """``BufferPool.try_alloc`` (on the pure core, one of two per-build
    functions) shows its public name in ``help()`` and in tracebacks."""
    method = iobuf.BufferPool.try_alloc
    assert method.__name__ == "try_alloc"
    assert method.__qualname__.endswith(".try_alloc")
    assert pydoc.render_doc(method, renderer=PLAIN_TEXT).splitlines()[2].startswith("try_alloc(")
    with (
        iobuf.BufferPool(iobuf.BufferPoolConfig.for_network()) as pool,
        pytest.raises(iobuf.Oversized) as raised,
    ):
        pool.try_alloc(1 << 30)
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert any(name.endswith("try_alloc") for name in frames), frames
    assert not any(name.endswith(("_try_alloc_local", "_try_alloc_facets")) for name in frames), frames
