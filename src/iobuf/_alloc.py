"""The pure-Python pool core: the allocation hot path and the pool-level
operations on the size classes (the base class of ``BufferPool``).

What it owns: the request-to-class mapping (``_min_size``, ``_max_size``,
``_min_shift``, ``_bypass_below``), the tuple of :class:`~iobuf._size_class.SizeClass`
and, per thread, that thread's facets of them (``_local``). ``BufferPool``
(``_pool``) owns everything else: the config, validation, the oversized
counter, metrics, the closed flag and the hooks this core calls on its slow
paths (``_bypass``, ``_oversized``, ``_exhausted``). The compiled core
(``iobuf._core.PoolCore``) offers the same methods; ``_impl`` picks one.

Invariants:
- Closing rewrites the size bounds to sentinels (``_core_close``) so that every
  request lands on a slow path whose hook sees ``BufferPool._closed``; the hot
  path carries no check of its own.
- Buffers reference their size class (or its facet), never the pool, so a pool
  can be dropped, and closed, with buffers outstanding.

Thread safety: see ``_size_class`` ("What relies on the GIL", "Facets").
Free-threaded builds allocate through the calling thread's facets of the
classes (``_try_alloc_facets``), kept in ``_local``, the pool's
``threading.local``: one tuple per thread, made by its first allocation and
stored in one step, whose death retires them. The allocation gate's
``sys.getrefcount`` sums the local and shared reference counts there, so it
stays exact (or conservative while a release is queued for merging).
"""

from __future__ import annotations

import ctypes
import sys
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._errors import Exhausted, Oversized, check_nonneg, check_size
from ._memory import FREE_THREADED
from ._size_class import FREE_REFS, LocalCache, RetireFacets, SizeClass, _thread_is_finishing
from ._views import IoBufMut, settle_if_parked

if TYPE_CHECKING:
    from ._config import BufferPoolConfig
    from ._errors import PoolClosed

__all__ = ["PoolCore"]

_new = object.__new__
_getrefcount = sys.getrefcount

_F = TypeVar("_F", bound=Callable[..., Any])


def _renamed(func: _F, name: str) -> _F:
    """``func`` (a function of a class body) as a new function object called
    ``name``: the same code, globals and defaults, with the function's and its
    code object's names replaced (a traceback shows the code object's). No
    wrapper, so a call costs what a call of ``func`` does."""
    original = cast("types.FunctionType", func)
    qualname = f"{original.__qualname__.rpartition('.')[0]}.{name}"
    code = original.__code__.replace(co_name=name, co_qualname=qualname)
    renamed = types.FunctionType(
        code, original.__globals__, name, original.__defaults__, original.__closure__
    )
    renamed.__qualname__ = qualname
    renamed.__doc__ = original.__doc__
    renamed.__annotations__ = original.__annotations__
    renamed.__kwdefaults__ = original.__kwdefaults__
    renamed.__module__ = original.__module__
    return cast("_F", renamed)


class PoolCore:
    """The allocation hot path and class-level operations of a ``BufferPool``."""

    __slots__ = (
        "_classes",
        "_first",
        "_min_size",
        "_max_size",
        "_min_shift",
        "_bypass_below",
        "_fallback_min",
        "_alignment",
        "_local",
    )

    _classes: tuple[SizeClass, ...]

    if TYPE_CHECKING:
        # Hooks BufferPool defines: the slow paths' decisions that need its state.
        def _bypass(self, capacity: int, length: int) -> IoBufMut: ...
        def _oversized(self) -> PoolClosed | Oversized: ...
        def _exhausted(self) -> PoolClosed | Exhausted: ...

    def _core_init(self, config: BufferPoolConfig, cache_capacity: int) -> None:
        """Build (and with ``prefill`` fill) one size class per configured size."""
        # Per thread: ``facets``, that thread's facet of every class and then
        # their RetireFacets (free-threaded hot path; see _size_class, "Facets").
        self._local = threading.local()
        classes = tuple(
            SizeClass(
                size=size,
                alignment=config.alignment,
                max_buffers=config.max_per_class,
                parallelism=config.parallelism,
                cache_capacity=cache_capacity,
                prefill=config.prefill,
                scrub=config.scrub_on_return,
                track=config.track_allocations,
            )
            for size in config.class_sizes
        )
        self._classes = classes
        self._first = classes[0]
        self._min_size = config.min_size
        self._max_size = config.max_size
        self._min_shift = config.min_size.bit_length() - 1
        self._bypass_below = config.pool_min_size
        self._fallback_min = config.min_size  # _min_size becomes a sentinel on close
        self._alignment = config.alignment

    # -- allocation ------------------------------------------------------------

    # The allocation hot path, per build like IoBufMut.__del__: free-threaded
    # builds go through the calling thread's facet of the class, so that nothing
    # on the way is an object other threads use (see _size_class, "Facets");
    # GIL builds keep the class's threading.local, which is cheaper there.
    def _try_alloc_facets(self, capacity: int) -> IoBufMut:
        """A pooled buffer with ``len == 0`` and ``capacity`` = the class size.

        Raises :class:`~iobuf.Oversized` above ``max_size`` and
        :class:`~iobuf.Exhausted` when the class is at ``max_per_class`` with
        nothing free. Requests below ``pool_min_size`` bypass the pool: an
        untracked aligned buffer of capacity ``max(capacity, 1)``.
        """
        if capacity.__class__ is not int:
            capacity = check_size("capacity", capacity)
        if capacity <= self._min_size:
            if capacity < self._bypass_below:  # also every negative request
                return self._bypass(capacity, 0)
            index = 0
        elif capacity > self._max_size:
            raise self._oversized()
        else:
            index = (capacity - 1).bit_length() - self._min_shift
        # This thread's facet of the class, then pop its cache, else take the slow road.
        try:
            cls = self._local.facets[index]
        except AttributeError:
            if _thread_is_finishing():
                # Teardown (a finalizer in the thread's own locals): its facets
                # are retired, and new ones would never be; the plain path copes.
                return self._try_alloc_local(capacity)
            cls = self._thread_facets()[index]
        cache = cls.cache
        assert cache is not None
        mv = cache.pop() if cache else cls.refill(cache)
        # Exhausted, or still reachable from somewhere (never hand that out).
        if mv is None or _getrefcount(mv) > FREE_REFS:
            mv = self._take_slow(cls, mv, cache)
        buf = _new(IoBufMut)
        buf._mv = mv
        buf._start = 0
        buf._end = 0
        buf._cls = cls
        buf._aux = None
        buf._grow = False
        return buf

    def _try_alloc_local(self, capacity: int) -> IoBufMut:
        """A pooled buffer with ``len == 0`` and ``capacity`` = the class size.

        Raises :class:`~iobuf.Oversized` above ``max_size`` and
        :class:`~iobuf.Exhausted` when the class is at ``max_per_class`` with
        nothing free. Requests below ``pool_min_size`` bypass the pool: an
        untracked aligned buffer of capacity ``max(capacity, 1)``.
        """
        if capacity.__class__ is not int:
            capacity = check_size("capacity", capacity)
        if capacity <= self._min_size:
            if capacity < self._bypass_below:  # also every negative request
                return self._bypass(capacity, 0)
            cls = self._first
        elif capacity > self._max_size:
            raise self._oversized()
        else:
            cls = self._classes[(capacity - 1).bit_length() - self._min_shift]
        # The allocation hot path: pop this thread's cache, else take the slow road.
        try:
            cache = cls.local.cache
        except AttributeError:
            cache = cls.init_cache()
        mv = cache.pop() if cache else cls.refill(cache)
        # Exhausted, or still reachable from somewhere (never hand that out).
        if mv is None or _getrefcount(mv) > FREE_REFS:
            mv = self._take_slow(cls, mv, cache)
        buf = _new(IoBufMut)
        buf._mv = mv
        buf._start = 0
        buf._end = 0
        buf._cls = cls
        buf._aux = None
        buf._grow = False
        return buf

    # What ``pool.try_alloc`` is on this build (both are correct on both; tests
    # run the free-threaded one on GIL builds too), under its public name so
    # that tracebacks and help() say ``try_alloc``.
    try_alloc = _renamed(_try_alloc_facets if FREE_THREADED else _try_alloc_local, "try_alloc")

    def try_alloc_zeroed(self, length: int) -> IoBufMut:
        """:meth:`try_alloc` with ``len == length`` and bytes ``[0, length)`` zeroed."""
        if type(length) is not int:
            length = check_size("length", length)
        if length < self._bypass_below:
            return self._bypass(length, length)
        buf = self.try_alloc(length)
        if length:  # an override may hand back less room, or other memory: never zero past it
            buf.set_len(length)
            cls = buf._cls
            if cls is not None and buf._start == 0:
                ctypes.memset(cls.addresses[id(buf._mv)], 0, length)
            else:
                buf._mv[buf._start : buf._end] = bytes(length)
        return buf

    def alloc(self, capacity: int) -> IoBufMut:
        """Like :meth:`try_alloc`, but an oversized request or an exhausted class
        gets an untracked aligned buffer of capacity ``max(capacity, min_size)``."""
        try:
            return self.try_alloc(capacity)
        except (Oversized, Exhausted):
            return IoBufMut.with_alignment(max(capacity, self._fallback_min), self._alignment)

    def alloc_len(self, length: int) -> IoBufMut:
        """:meth:`alloc` with ``len == length``; the bytes are unspecified (may be stale)."""
        buf = self.alloc(length)
        buf.set_len(length)
        return buf

    def alloc_zeroed(self, length: int) -> IoBufMut:
        """:meth:`try_alloc_zeroed`, falling back like :meth:`alloc` (untracked, zeroed)."""
        try:
            return self.try_alloc_zeroed(length)
        except (Oversized, Exhausted):
            buf = IoBufMut.zeroed_with_alignment(max(length, self._fallback_min), self._alignment)
            buf.truncate(length)
            return buf

    # -- slow paths --------------------------------------------------------------

    def _thread_facets(self) -> tuple[SizeClass, ...]:
        """The calling thread's first allocation: make its facet of every class."""
        facets = tuple(cls.facet() for cls in self._classes)
        self._local.facets = (*facets, RetireFacets(facets))
        return facets

    def _take_slow(self, cls: SizeClass, mv: memoryview | None, cache: LocalCache) -> memoryview:
        if mv is not None:
            mv = cls.set_aside(mv, cache)
        if mv is None:
            raise self._exhausted()
        return mv

    # -- pool-level operations ---------------------------------------------------

    def _core_local_free(self) -> tuple[int, ...]:
        """Per class, the buffers in the calling thread's cache."""
        settle_if_parked()  # what a finalizer parked late is back before it is counted
        return tuple(cls.local_len() for cls in self._classes)

    def _core_trim(self, keep: int) -> int:
        """See ``BufferPool.trim``; returns the bytes freed."""
        keep = check_nonneg("keep", keep)
        return sum(cls.trim(keep) * cls.size for cls in self._classes)

    def _core_close(self) -> None:
        """Route every request to a slow path (whose hook raises PoolClosed) and
        close the classes: free buffers are dropped, returns are freed."""
        self._min_size = -1
        self._max_size = -1
        self._bypass_below = 0
        for cls in self._classes:
            cls.close()

    def _core_track(self, buf: IoBufMut, frames: Any) -> None:
        """Record where the pooled ``buf`` was just allocated (tracking pools)."""
        cls = buf._cls
        if cls is not None:
            cls.track(buf._mv, frames)

    def _core_origins(self) -> list[tuple[int, int, float, str, Any]]:
        """``(size, address, when, thread, frames)`` of every tracked buffer in use."""
        found = []
        for cls in self._classes:
            assert cls.origins is not None
            for address, (when, thread, frames) in list(cls.origins.items()):
                found.append((cls.size, address, when, thread, frames))
        return found
