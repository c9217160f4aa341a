"""iobuf's benchmark harness and stress driver: tools of the repository, not of the package.

They live beside ``src/`` (as h11's ``bench/`` and CPython's ``Tools/`` do), so
the installed ``iobuf`` holds the library only. Run them from the root of a
clone, with iobuf installed (``./scripts/test`` or ``pip install -e '.[dev]'``)::

    python -m bench          # the benchmarks (bench/__main__.py lists the modes)
    python -m bench.stress   # many threads of random work on one pool, checked

They import iobuf as it is installed, like any user of it; the harness also
imports ``iobuf._demo_timing`` (the demo's in-process table) and
``iobuf._size_class.Shared`` (the freelist it measures). Nothing in ``src/``
imports this package.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT"]

# The directory holding this package. The harness starts its child processes
# (`-m bench ...`, `-c "from bench... import ..."`) with it as their working
# directory, which Python puts first on the child's sys.path: the child finds
# this very harness whatever the parent's working directory is.
ROOT = Path(__file__).resolve().parent.parent
