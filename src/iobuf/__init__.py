"""iobuf: pooled, aligned, zero-copy I/O buffers for Python.

A port of the ``commonware_runtime`` buffer pool: power-of-two size classes,
a per-thread cache in front of a bounded shared freelist per class, mutable
:class:`IoBufMut` and immutable shareable :class:`IoBuf` views, and a safety
rule that never hands memory out again while anything can still reach it.

``IMPLEMENTATION`` names the core in use: ``"compiled"`` (the Cython
extension, when it was built) or ``"python"`` (the pure-Python reference
implementation; forced with ``IOBUF_NO_EXTENSIONS=1``).
"""

from ._aio import PooledReader, PooledWriter, open_connection, start_server
from ._chain import IoBufs
from ._config import BufferPoolConfig
from ._errors import Exhausted, Oversized, PoolClosed, PoolError
from ._impl import IMPLEMENTATION, IoBuf, IoBufMut, flush_thread_cache
from ._io import IOV_MAX, pread_into_pool, pwrite_all, recv_exactly, recv_into_pool, send_all, write_all
from ._memory import cache_line_size, page_size
from ._pool import BufferPool, OutstandingBuffer, PoolStats, SizeClassStats
from ._storage import STAGE_BYTES, BlockFile

__all__ = [
    "IMPLEMENTATION",
    "IOV_MAX",
    "STAGE_BYTES",
    "BlockFile",
    "BufferPool",
    "BufferPoolConfig",
    "Exhausted",
    "IoBuf",
    "IoBufMut",
    "IoBufs",
    "OutstandingBuffer",
    "Oversized",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PooledReader",
    "PooledWriter",
    "SizeClassStats",
    "cache_line_size",
    "flush_thread_cache",
    "open_connection",
    "page_size",
    "pread_into_pool",
    "pwrite_all",
    "recv_exactly",
    "recv_into_pool",
    "send_all",
    "start_server",
    "write_all",
]
