"""The public names SPEC promises are exported, and nothing private leaks."""

from __future__ import annotations

import pickle
import pydoc
import traceback
from pathlib import Path

import pytest

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
    """from iobuf import <name> works for every name in SPEC."""
    assert set(iobuf.__all__) >= SPEC_NAMES
    for name in iobuf.__all__:
        assert getattr(iobuf, name) is not None


def test_all_lists_only_public_names() -> None:
    """__all__ has no private names and no duplicates; extras are deliberate."""
    assert len(iobuf.__all__) == len(set(iobuf.__all__))
    assert not any(n.startswith("_") for n in iobuf.__all__)
    io_helpers = {"IOV_MAX", "send_all", "write_all", "pwrite_all", "recv_into_pool", "recv_exactly"}
    storage = {"BlockFile", "STAGE_BYTES"}
    aio = {"PooledReader", "PooledWriter", "open_connection", "start_server"}
    ops = {"OutstandingBuffer"}
    assert set(iobuf.__all__) - SPEC_NAMES == {"pread_into_pool"} | io_helpers | storage | aio | ops


def test_implementation_names_the_core_in_use() -> None:
    """``IMPLEMENTATION`` names the core serving the buffers: the compiled one
    unless ``IOBUF_NO_EXTENSIONS`` is set (or it was not built)."""
    import importlib.machinery
    import importlib.util
    import os

    spec = importlib.util.find_spec("iobuf._core")
    built = spec is not None and str(spec.origin).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    compiled = built and not os.environ.get("IOBUF_NO_EXTENSIONS")
    assert ("compiled" if compiled else "python") == iobuf.IMPLEMENTATION
    module = "iobuf._core" if compiled else "iobuf._views"
    assert iobuf.IoBufMut.__module__ == iobuf.IoBuf.__module__ == module


def test_a_core_that_does_not_load_falls_back_to_pure_python_with_a_warning(tmp_path: Path) -> None:
    """A compiled core that is there but cannot load (built for another
    interpreter, or damaged) makes iobuf warn and serve pure Python instead of
    failing to import; the Cython source alone (an editable install whose build
    failed) is never imported as Python."""
    import importlib.machinery
    import os
    import shutil
    import subprocess
    import sys

    package = tmp_path / "iobuf"
    shutil.copytree(
        Path(iobuf.__file__).parent, package, ignore=shutil.ignore_patterns("_core.*", "__pycache__")
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("IOBUF_NO_EXTENSIONS", None)

    def implementation() -> tuple[str, str]:
        done = subprocess.run(
            [sys.executable, "-W", "always", "-c", "import iobuf; print(iobuf.IMPLEMENTATION)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip(), done.stderr

    damaged = package / f"_core{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    damaged.write_bytes(b"not a shared object")
    name, warned = implementation()
    assert name == "python"
    assert "the compiled core does not load" in warned
    damaged.unlink()
    (package / "_core.py").write_text("raise AssertionError('the Cython source was run as Python')\n")
    assert implementation() == ("python", "")


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
    assert f"class {error.__name__}(" in pydoc.render_doc(error, renderer=pydoc.plaintext)
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
    assert pydoc.render_doc(method, renderer=pydoc.plaintext).splitlines()[2].startswith("try_alloc(")
    with (
        iobuf.BufferPool(iobuf.BufferPoolConfig.for_network()) as pool,
        pytest.raises(iobuf.Oversized) as raised,
    ):
        pool.try_alloc(1 << 30)
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert any(name.endswith("try_alloc") for name in frames), frames
    assert not any(name.endswith(("_try_alloc_local", "_try_alloc_facets")) for name in frames), frames
