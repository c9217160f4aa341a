"""Which core serves the buffers and the pool: compiled or pure Python.

The compiled core (``iobuf._core``, Cython, built by the normal install when a
compiler is present) is used when it imports; ``IOBUF_NO_EXTENSIONS=1`` (any
non-empty value, the aio-libs convention) forces the pure-Python reference
implementation (``_views``, ``_size_class``, ``_alloc``). Both provide the same
names with the same behaviour; every other module imports them from here and
nowhere else, so the choice is made once, at import.

The contract each core keeps (beyond the public API in SPEC):

- ``IoBuf._start``/``_end`` (ints ``_chain`` may advance) and
  ``_read_view()`` on both buffer types (a memoryview of the readable bytes);
- ``_iobuf(mv, start, end, None)``, ``_empty_iobuf()``, ``split_filled``,
  ``join_adjacent``, ``_as_bytes``, ``_preview``, ``flush_thread_cache``;
- the receive path's steps, ``commit_received`` (a receive onto a chain's
  chunks), ``take_front`` (a read off them, copied up to ``copy_max``) and
  ``reclaim_received`` (a drained buffer rewound for reuse when nothing else
  reaches it), and ``sendable`` (what a writer hands a transport for an IoBuf);
- ``PoolCore``, the base class of ``BufferPool``: ``_core_init``, the
  allocation methods (``try_alloc``, ``alloc``, ``alloc_len``,
  ``try_alloc_zeroed``, ``alloc_zeroed``; a subclass overriding ``try_alloc``,
  as the tracking pool does, is called by the others), ``_classes`` (objects with ``size``,
  ``max_buffers``, ``created``, ``exhausted``, ``global_free``; the metrics
  collector holds them, so they never keep the pool alive),
  ``_core_local_free``, ``_core_trim``, ``_core_close``, ``_core_track``,
  ``_core_origins``; it calls back ``_bypass``, ``_oversized`` and
  ``_exhausted`` on its slow paths.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import warnings
from typing import TYPE_CHECKING, Final

__all__ = [
    "IMPLEMENTATION",
    "IoBuf",
    "IoBufMut",
    "PoolCore",
    "_as_bytes",
    "_empty_iobuf",
    "_iobuf",
    "_preview",
    "commit_received",
    "flush_thread_cache",
    "join_adjacent",
    "reclaim_received",
    "sendable",
    "split_filled",
    "take_front",
]


def _compiled_core_built() -> bool:
    """Whether the extension was built (an editable install also has the
    Cython source ``_core.py`` importable, which must never be run as Python)."""
    spec = importlib.util.find_spec(f"{__package__}._core")
    return spec is not None and str(spec.origin).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


if TYPE_CHECKING or os.environ.get("IOBUF_NO_EXTENSIONS") or not _compiled_core_built():
    _compiled = False
else:
    try:
        importlib.import_module(f"{__package__}._core")
    except ImportError as exc:  # built but unloadable (e.g. for another interpreter)
        warnings.warn(f"iobuf: the compiled core does not load ({exc}); using pure Python", stacklevel=2)
        _compiled = False
    else:
        _compiled = True

if TYPE_CHECKING or not _compiled:
    from ._alloc import PoolCore
    from ._size_class import flush_thread_cache
    from ._views import (
        IoBuf,
        IoBufMut,
        _as_bytes,
        _empty_iobuf,
        _iobuf,
        _preview,
        commit_received,
        join_adjacent,
        reclaim_received,
        sendable,
        split_filled,
        take_front,
    )
else:
    from ._core import (  # type: ignore[no-redef]
        IoBuf,
        IoBufMut,
        PoolCore,
        _as_bytes,
        _empty_iobuf,
        _iobuf,
        _preview,
        commit_received,
        flush_thread_cache,
        join_adjacent,
        reclaim_received,
        sendable,
        split_filled,
        take_front,
    )

IMPLEMENTATION: Final[str] = "compiled" if _compiled else "python"
