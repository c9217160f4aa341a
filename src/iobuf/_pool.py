"""``BufferPool``: maps requests to size classes and hands out ``IoBufMut`` buffers.

What it owns: the validated config, one :class:`~iobuf._size_class.SizeClass`
per power-of-two size, the oversized counter, and (optionally) the metrics
collector registered in a Prometheus registry.

Invariants:
- Buffers never reference the pool, only their size class, so dropping the
  last reference to a pool runs ``__del__`` → :meth:`BufferPool.close` even with
  buffers outstanding; those buffers stay valid and are freed when dropped.
- After ``close()`` every allocation raises :class:`~iobuf.PoolClosed`. Closing
  rewrites the size bounds to sentinels so that every request lands on a slow
  path that checks ``_closed``; the hot path carries no check of its own.
- Every error is raised before any state changes (``Exhausted`` and
  ``Oversized`` only bump their counters).

Thread safety: any thread may allocate; the per-request path reads immutable
fields and calls into the size class (see its notes). ``close()`` may race an
allocation in another thread; that allocation either fails or gets a buffer
that is freed (not reused) when dropped. On free-threaded builds this relies
on: ``_close_lock`` making ``close()`` run once; the sentinels and ``_closed``
being single attribute stores (atomic slot stores there), each of which alone
routes a request to a slow path that sees ``_closed``; and ``stats()`` reading
each counter with one attribute load (a snapshot may be a moment old, never
torn). The allocation gate's ``sys.getrefcount`` sums the local and shared
reference counts there, so it stays exact (or conservative while a release is
queued for merging).

Free-threaded builds allocate through the calling thread's facets of the
classes (``_try_alloc_facets``), kept in ``_local``, the pool's
``threading.local``: one tuple per thread, made by its first allocation and
stored in one step, whose death retires them (see ``_size_class``, "Facets").
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from ._config import BufferPoolConfig
from ._errors import Exhausted, Oversized, PoolClosed, PoolError, check_nonneg, check_size
from ._memory import FREE_THREADED
from ._metrics import OversizedCounter, PoolCollector, check_namespace
from ._size_class import FREE_REFS, LocalCache, RetireFacets, SizeClass, _thread_is_finishing
from ._views import IoBufMut, settle_if_parked

_new = object.__new__
_getrefcount = sys.getrefcount

__all__ = ["BufferPool", "OutstandingBuffer", "PoolStats", "SizeClassStats"]


@dataclass(frozen=True, slots=True)
class SizeClassStats:
    """A snapshot of one size class.

    ``global_free`` counts buffers in the shared freelist; ``local_free`` those
    in the *calling* thread's cache. ``created - global_free - local_free`` is
    what is in use or cached by other threads.
    """

    size: int
    max_buffers: int
    created: int
    global_free: int
    local_free: int
    thread_cache_capacity: int
    exhausted_total: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool: one :class:`SizeClassStats` per class, ascending."""

    classes: tuple[SizeClassStats, ...]
    oversized_total: int

    def for_size(self, size: int) -> SizeClassStats:
        """The stats of the class whose buffers are exactly ``size`` bytes."""
        for c in self.classes:
            if c.size == size:
                return c
        raise KeyError(f"no size class of {size} bytes")


@dataclass(frozen=True, slots=True)
class OutstandingBuffer:
    """One pooled buffer in use, from :meth:`BufferPool.outstanding`.

    ``age`` is in seconds; ``origin`` is the allocating call stack, innermost
    call last, formatted like a traceback.
    """

    size: int
    address: int
    age: float
    thread: str
    origin: str

    def __str__(self) -> str:
        return (
            f"{self.size}-byte buffer at {self.address:#x}, in use for {self.age:.1f} s, "
            f"allocated in thread {self.thread!r}:\n{self.origin}"
        )


class BufferPool:
    """A thread-safe pool of reusable, aligned buffers in power-of-two size classes.

    >>> from iobuf import BufferPool, BufferPoolConfig
    >>> with BufferPool(BufferPoolConfig.for_network()) as pool:
    ...     buf = pool.alloc(1500)
    ...     buf.capacity, buf.is_pooled
    (2048, True)

    ``registry=`` (a ``prometheus_client.CollectorRegistry``) publishes the
    pool's metrics under ``namespace``.
    """

    __slots__ = (
        "_config",
        "_classes",
        "_first",
        "_min_size",
        "_max_size",
        "_min_shift",
        "_bypass_below",
        "_alignment",
        "_cache_capacity",
        "_closed",
        "_oversized_count",
        "_registry",
        "_collector",
        "_close_lock",
        "_local",
        "__weakref__",
    )

    def __init__(
        self,
        config: BufferPoolConfig | None = None,
        *,
        registry: Any = None,
        namespace: str = "",
    ) -> None:
        self._closed = True  # until fully built, so __del__ of a failed build does nothing
        # Per thread: ``facets``, that thread's facet of every class and then
        # their RetireFacets (free-threaded hot path; see _size_class, "Facets").
        self._local = threading.local()
        self._close_lock = threading.Lock()
        if config is None:
            config = BufferPoolConfig.for_network()
        elif not isinstance(config, BufferPoolConfig):
            raise TypeError(f"config must be a BufferPoolConfig, not {type(config).__name__}")
        config.validate()
        namespace = check_namespace(namespace)
        if registry is not None and not (
            callable(getattr(registry, "register", None)) and callable(getattr(registry, "unregister", None))
        ):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}"
            )
        cache_capacity = config.resolve_thread_cache_capacity()
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
        oversized = OversizedCounter()
        collector = None
        if registry is not None:
            collector = PoolCollector(namespace, classes, oversized)
            registry.register(collector)  # a name clash raises ValueError here
        self._config = config
        self._classes = classes
        self._first = classes[0]
        self._min_size = config.min_size
        self._max_size = config.max_size
        self._min_shift = config.min_size.bit_length() - 1
        self._bypass_below = config.pool_min_size
        self._alignment = config.alignment
        self._cache_capacity = cache_capacity
        self._oversized_count = oversized
        self._registry = registry
        self._collector = collector
        self._closed = False
        if config.track_allocations:
            # Same layout, one overridden method: the untracked hot path carries no flag check.
            self.__class__ = _TrackingPool
        _live_pools.add(weakref.ref(self, _live_pools.discard))

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
        buf._pos = 0
        buf._len = 0
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
        buf._pos = 0
        buf._len = 0
        buf._cls = cls
        buf._aux = None
        buf._grow = False
        return buf

    # What ``pool.try_alloc`` is on this build (both are correct on both; tests
    # run the free-threaded one on GIL builds too).
    try_alloc = _try_alloc_facets if FREE_THREADED else _try_alloc_local

    def alloc(self, capacity: int) -> IoBufMut:
        """Like :meth:`try_alloc`, but an oversized request or an exhausted class
        gets an untracked aligned buffer of capacity ``max(capacity, min_size)``."""
        try:
            return self.try_alloc(capacity)
        except (Oversized, Exhausted):
            return IoBufMut.with_alignment(max(capacity, self._config.min_size), self._alignment)

    def alloc_len(self, length: int) -> IoBufMut:
        """:meth:`alloc` with ``len == length``; the bytes are unspecified (may be stale)."""
        buf = self.alloc(length)
        buf.set_len(length)
        return buf

    def try_alloc_zeroed(self, length: int) -> IoBufMut:
        """:meth:`try_alloc` with ``len == length`` and bytes ``[0, length)`` zeroed."""
        if type(length) is not int:
            length = check_size("length", length)
        if length < self._bypass_below:
            return self._bypass(length, length)
        buf = self.try_alloc(length)
        if length:
            cls = buf._cls
            assert cls is not None
            ctypes.memset(cls.addresses[id(buf._mv)], 0, length)
            buf._len = length
        return buf

    def alloc_zeroed(self, length: int) -> IoBufMut:
        """:meth:`try_alloc_zeroed`, falling back like :meth:`alloc` (untracked, zeroed)."""
        try:
            return self.try_alloc_zeroed(length)
        except (Oversized, Exhausted):
            buf = IoBufMut.zeroed_with_alignment(max(length, self._config.min_size), self._alignment)
            buf.truncate(length)
            return buf

    def size_class(self, capacity: int) -> int | None:
        """The buffer size that serves a request of ``capacity`` bytes, or None if oversized."""
        n = check_size("capacity", capacity)
        if n < 0:
            raise ValueError(f"capacity must be >= 0, got {n}")
        config = self._config
        if n > config.max_size:
            return None
        if n <= config.min_size:
            return config.min_size
        return 1 << (n - 1).bit_length()

    # -- slow paths ------------------------------------------------------------

    def _thread_facets(self) -> tuple[SizeClass, ...]:
        """The calling thread's first allocation: make its facet of every class."""
        facets = tuple(cls.facet() for cls in self._classes)
        self._local.facets = (*facets, RetireFacets(facets))
        return facets

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed()

    def _bypass(self, capacity: int, length: int) -> IoBufMut:
        self._check_open()
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        buf = IoBufMut.zeroed_with_alignment(max(capacity, 1), self._alignment)
        buf.truncate(length)
        return buf

    def _oversized(self) -> PoolClosed | Oversized:
        if self._closed:
            return PoolClosed()
        self._oversized_count.inc()
        return Oversized()

    def _take_slow(self, cls: SizeClass, mv: memoryview | None, cache: LocalCache) -> memoryview:
        if mv is not None:
            mv = cls.set_aside(mv, cache)
        if mv is None:
            raise self._exhausted()
        return mv

    def _exhausted(self) -> PoolClosed | Exhausted:
        # The size class counted it (under its lock) when creation was refused.
        return PoolClosed() if self._closed else Exhausted()

    # -- memory and leaks -----------------------------------------------------------

    def trim(self, keep: int = 0) -> int:
        """Give free buffers' memory back to the operating system; returns the bytes freed.

        Per class, takes the free buffers in the shared freelist and in the
        *calling* thread's cache (other threads' caches are theirs: call this
        from each, or :func:`flush_thread_cache` there first), keeps ``keep``
        of them in the shared freelist and frees the rest. Buffers in use are
        untouched; the class may create new ones again up to
        ``max_per_class``. A no-op on a closed pool.
        """
        count = check_nonneg("keep", keep)
        return sum(cls.trim(count) * cls.size for cls in self._classes)

    def outstanding(self) -> list[OutstandingBuffer]:
        """The pooled buffers in use right now, oldest first, with where each
        was allocated. Needs ``track_allocations=True`` in the config."""
        if not self._config.track_allocations:
            raise PoolError(
                "allocation tracking is off; build the pool with "
                "BufferPoolConfig(..., track_allocations=True) or .with_track_allocations(True)"
            )
        now = time.monotonic()
        found = []
        for cls in self._classes:
            assert cls.origins is not None
            for address, (when, thread, stack) in list(cls.origins.items()):
                found.append(
                    OutstandingBuffer(
                        size=cls.size,
                        address=address,
                        age=now - when,
                        thread=thread,
                        origin="".join(traceback.StackSummary.from_list(stack).format()),
                    )
                )
        found.sort(key=lambda b: -b.age)
        return found

    # -- introspection -----------------------------------------------------------

    @property
    def config(self) -> BufferPoolConfig:
        """The (validated, immutable) configuration."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def stats(self) -> PoolStats:
        """A snapshot of every class; never blocks allocation."""
        settle_if_parked()  # what a finalizer parked late is back before it is counted
        classes = tuple(
            SizeClassStats(
                size=cls.size,
                max_buffers=cls.shared.max_buffers,
                created=cls.shared.created,
                global_free=len(cls.shared),
                local_free=cls.local_len(),
                thread_cache_capacity=self._cache_capacity,
                exhausted_total=cls.shared.exhausted,
            )
            for cls in self._classes
        )
        return PoolStats(classes=classes, oversized_total=self._oversized_count.value)

    def __repr__(self) -> str:
        c = self._config
        state = "closed" if self._closed else "open"
        return (
            f"BufferPool({state}, num_classes={len(self._classes)}, sizes={c.min_size}..{c.max_size}, "
            f"max_per_class={c.max_per_class}, alignment={c.alignment}, "
            f"thread_cache_capacity={self._cache_capacity})"
        )

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Stop handing out buffers and free every free buffer the pool and the
        calling thread's cache hold. Buffers in use stay valid; each is freed, not
        reused, when its last view goes. Idempotent."""
        with self._close_lock:  # two threads closing at once must not unregister twice
            if self._closed:
                return
            self._closed = True
        # Sentinels route every request to a slow path that raises PoolClosed.
        self._min_size = -1
        self._max_size = -1
        self._bypass_below = 0
        for cls in self._classes:
            cls.close()
        collector, self._collector = self._collector, None
        if collector is not None:
            self._registry.unregister(collector)

    def __copy__(self) -> BufferPool:
        raise TypeError("a BufferPool cannot be copied; share the object itself")

    def __deepcopy__(self, memo: dict[int, Any]) -> BufferPool:
        raise TypeError("a BufferPool cannot be copied; share the object itself")

    def __reduce__(self) -> Any:
        raise TypeError("a BufferPool cannot be pickled; build one per process from its config")

    def __enter__(self) -> BufferPool:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class _TrackingPool(BufferPool):
    """A BufferPool that records each pooled allocation's origin (``track_allocations``)."""

    __slots__ = ()

    def try_alloc(self, capacity: int) -> IoBufMut:
        buf = BufferPool.try_alloc(self, capacity)
        cls = buf._cls
        if cls is not None:
            cls.track(buf._mv, _caller_frames())
        return buf


def _caller_frames() -> list[tuple[str, int, str, None]]:
    """The allocating call stack, innermost last, without iobuf's own frames
    (try_alloc, alloc, ...): raw tuples, formatted only when reported. Walking
    frames directly costs a fraction of ``traceback.extract_stack``, which
    reads every source line."""
    # Our own frames are skipped below, so start at the nearest one: an
    # allocation called straight from C (a thread's entry point, an atexit
    # hook) has no caller frame at all.
    f: FrameType | None = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        f = f.f_back
    frames: list[tuple[str, int, str, None]] = []
    while f is not None and len(frames) < _TRACK_DEPTH:
        frames.append((f.f_code.co_filename, f.f_lineno, f.f_code.co_name, None))
        f = f.f_back
    frames.reverse()
    return frames


# Stack frames kept per tracked allocation, and the frames that are ours.
_TRACK_DEPTH = 8
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Every live pool, so a forked child can replace locks another thread held.
_live_pools: set[weakref.ref[BufferPool]] = set()


def _after_fork_in_child() -> None:
    # Every lock a pool owns (its classes renew theirs in _size_class).
    for ref in list(_live_pools):
        pool = ref()
        if pool is not None:
            pool._close_lock = threading.Lock()
            pool._oversized_count.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
