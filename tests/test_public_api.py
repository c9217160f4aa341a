"""The public names SPEC promises are exported, and nothing private leaks."""

from __future__ import annotations

from pathlib import Path

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
