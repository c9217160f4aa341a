"""Choosing the core (``_impl``): the compiled one when it loads, pure Python when
``IOBUF_NO_EXTENSIONS`` is set or the compiled one cannot load."""

from __future__ import annotations

from pathlib import Path

import iobuf


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
