"""Raw memory: page and cache-line sizes, aligned blocks, and buffer addresses.

What it owns: how a block of bytes with a given base alignment is obtained.
Every block is exposed as a writable, 1-D, format ``"B"`` memoryview of exactly
the requested size whose first byte sits at a multiple of the alignment. The
memoryview keeps its backing object alive, and that object (an anonymous
``mmap`` or a ``bytearray``) is freed by CPython when the last reference to it
goes; nothing here frees memory explicitly, so a block can never be freed while
anything still references it.

Pooled blocks of at least one page use anonymous ``mmap`` (page-aligned by
the kernel, zero-filled lazily, returned to the OS when unmapped). The mapping
is ``MAP_PRIVATE``: Python's default for anonymous maps is ``MAP_SHARED``, with
which a child process made by ``os.fork()`` writes into the very pages of the
parent's buffers (a free buffer reused in both processes corrupts both);
private pages are copied on write instead. Smaller pooled blocks, and
untracked blocks (fallbacks, bypasses, ``with_alignment``) under
``MAP_MIN``, use an over-allocated ``bytearray`` trimmed to an aligned
window: an untracked block lives as long as one buffer, and a fresh map for
each would cost a page fault and a kernel zeroing per page where the
allocator reuses memory it already has. From ``MAP_MIN`` on (glibc's largest
mmap threshold: malloc maps such sizes afresh anyway) untracked blocks are
maps too, whose pages cost nothing until touched, where a ``bytearray`` would
zero every page up front. Both are zero-filled when new, which
``IoBufMut.zeroed_with_alignment`` (and so ``alloc_zeroed``'s untracked
fallback) relies on; pooled buffers are re-zeroed on each ``alloc_zeroed``,
fresh or not.

On free-threaded builds (``FREE_THREADED``) every block is instead a view of a
``ctypes`` array laid over that window (:func:`shareable_view`). The reason is
CPython 3.13t's memoryview (python/cpython#155606): slicing a memoryview adds a
view to its managed buffer with a non-atomic ``exports += 1``, and ``bytearray``
(and ``mmap``) count their own exports non-atomically too, so two threads making
or dropping views of one memoryview or one ``bytearray`` corrupt those counts (a
view is released while still in use, or a ``bytearray`` dies "with exported
buffers"). A ``ctypes`` array keeps no export count, so ``memoryview(mv.obj)``
gives each caller a view with its own managed buffer: ``_views`` reads shared
memory that way on free-threaded builds and never slices a memoryview that
another thread may use.

Thread safety: stateless apart from constants computed at import; safe from
any thread on GIL and free-threaded builds.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sysconfig
from typing import Final

__all__ = [
    "FREE_THREADED",
    "MAP_MIN",
    "address_of",
    "aligned_block",
    "cache_line_size",
    "page_size",
    "shareable_view",
]

# A free-threaded (PEP 703) build, whether or not the GIL happens to be enabled
# at run time (it can be switched on after import, so the build decides).
FREE_THREADED: Final = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _detect_page_size() -> int:
    try:
        size = os.sysconf("SC_PAGESIZE")
    except (AttributeError, ValueError, OSError):
        size = mmap.PAGESIZE
    return size if size > 0 and size & (size - 1) == 0 else 4096


_PAGE_SIZE = _detect_page_size()
# Anonymous (fileno -1 adds MAP_ANONYMOUS) and private: see the module notes on fork.
_MAP_FLAGS: Final = mmap.MAP_PRIVATE
#: The least size of an untracked block that is mapped rather than taken from the heap.
MAP_MIN: Final = 32 << 20

# The seed uses crossbeam's CachePadded alignment: 128 bytes on x86_64,
# aarch64 and powerpc64 (adjacent-line prefetch pairs lines), 256 on s390x,
# 32 on 32-bit arm/mips/riscv, 64 elsewhere.
_CACHE_LINE_BY_MACHINE = {
    "x86_64": 128,
    "amd64": 128,
    "aarch64": 128,
    "arm64": 128,
    "ppc64": 128,
    "ppc64le": 128,
    "s390x": 256,
}


def page_size() -> int:
    """The operating system's memory page size in bytes (a power of two, usually 4096)."""
    return _PAGE_SIZE


def cache_line_size() -> int:
    """The cache-line padding the seed uses for this CPU (128 on x86_64 and aarch64)."""
    machine = platform.machine().lower()
    if machine in _CACHE_LINE_BY_MACHINE:
        return _CACHE_LINE_BY_MACHINE[machine]
    if machine.startswith(("arm", "mips", "riscv32")):
        return 32
    return 64


def address_of(view: memoryview) -> int:
    """Address of the first byte of a writable, C-contiguous memoryview."""
    if len(view) == 0:
        raise ValueError("an empty memoryview has no address")
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def shareable_view(view: memoryview) -> memoryview:
    """All of writable ``view``'s memory as a format-``"B"`` view of a ``ctypes`` array.

    The array keeps ``view``'s exporter alive and is the result's ``obj``, so
    ``memoryview(result.obj).cast("B")`` is a fresh view of exactly the same
    bytes that touches no counter another thread may be updating.
    """
    return memoryview((ctypes.c_ubyte * len(view)).from_buffer(view)).cast("B")


def aligned_block(size: int, alignment: int, *, pooled: bool) -> memoryview:
    """A new zero-filled block of ``size`` bytes whose base is a multiple of ``alignment``.

    ``size`` must be >= 1 and ``alignment`` a power of two (callers validate).
    ``pooled``: whether a pool keeps the block (mapped if a page or more, see
    the module notes) or it serves one untracked buffer (from the heap below
    ``MAP_MIN``).
    """
    if size >= (_PAGE_SIZE if pooled else MAP_MIN):
        # mmap is page-aligned; larger alignments over-map and trim.
        extra = alignment - _PAGE_SIZE if alignment > _PAGE_SIZE else 0
        try:
            raw: mmap.mmap | bytearray = mmap.mmap(-1, size + extra, flags=_MAP_FLAGS)
        except (OSError, OverflowError) as exc:  # ENOMEM, or a size mmap cannot express
            raise MemoryError(f"cannot map {size + extra} bytes: {exc}") from exc
    else:
        extra = alignment - 1
        try:
            raw = bytearray(size + extra)
        except OverflowError as exc:  # a size no bytearray can hold
            raise MemoryError(f"cannot allocate {size + extra} bytes: {exc}") from exc
    whole = memoryview(raw)
    offset = 0
    if alignment > 1:
        offset = -address_of(whole) % alignment
    block = whole[offset : offset + size]
    return shareable_view(block) if FREE_THREADED else block
