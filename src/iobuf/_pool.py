"""``BufferPool``: the public pool, over the pool core ``_impl`` selected.

What it owns: the validated config, the oversized counter, the closed flag,
(optionally) the metrics collector registered in a Prometheus registry, and
the slow-path decisions the core calls back into (``_bypass``, ``_oversized``,
``_exhausted``). Its base class, the core's ``PoolCore`` (``_alloc`` in pure
Python, ``_core`` compiled), owns the size classes, the thread caches and the
allocation methods (``try_alloc``, ``alloc``, ``alloc_len`` and the zeroed
ones).

Invariants:
- Buffers never reference the pool, only their size class, so dropping the
  last reference to a pool runs ``__del__`` → :meth:`BufferPool.close` even with
  buffers outstanding; those buffers stay valid and are freed when dropped.
- After ``close()`` every allocation raises :class:`~iobuf.PoolClosed`:
  ``_closed`` is set first, then the core routes every request to a hook, and
  every hook checks ``_closed``.
- Every error is raised before any state changes (``Exhausted`` and
  ``Oversized`` only bump their counters).

Thread safety: any thread may allocate (see the core). ``close()`` may race an
allocation in another thread; that allocation either fails or gets a buffer
that is freed (not reused) when dropped. On free-threaded builds this relies
on ``_close_lock`` making ``close()`` run once, ``_closed`` being a single
attribute store, and ``stats()`` reading each counter with one load (a
snapshot may be a moment old, never torn).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from ._config import BufferPoolConfig
from ._errors import Exhausted, Oversized, PoolClosed, PoolError, check_nonneg, check_size
from ._impl import IoBufMut, PoolCore
from ._metrics import OversizedCounter, PoolCollector, check_namespace

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


class BufferPool(PoolCore):
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
        "_cache_capacity",
        "_closed",
        "_oversized_count",
        "_registry",
        "_collector",
        "_close_lock",
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
        self._core_init(config, cache_capacity)
        oversized = OversizedCounter()
        collector = None
        if registry is not None:
            collector = PoolCollector(namespace, self._classes, oversized)
            registry.register(collector)  # a name clash raises ValueError here
        self._config = config
        self._cache_capacity = cache_capacity
        self._oversized_count = oversized
        self._registry = registry
        self._collector = collector
        self._closed = False
        if config.track_allocations:
            # Same layout, one overridden method: the untracked hot path carries no flag check.
            self.__class__ = _TrackingPool
        _live_pools.add(weakref.ref(self, _live_pools.discard))

    # -- allocation (try_alloc, alloc, alloc_len and the zeroed ones are the core's) --

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

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed()

    def _bypass(self, capacity: int, length: int) -> IoBufMut:
        self._check_open()
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        buf = IoBufMut.zeroed_with_alignment(max(capacity, 1), self._config.alignment)
        buf.truncate(length)
        return buf

    def _oversized(self) -> PoolClosed | Oversized:
        if self._closed:
            return PoolClosed()
        self._oversized_count.inc()
        return Oversized()

    def _exhausted(self) -> PoolClosed | Exhausted:
        # The size class counted it (under its lock) when creation was refused.
        return PoolClosed() if self._closed else Exhausted()

    # -- memory and leaks -----------------------------------------------------------

    def trim(self, keep: int = 0) -> int:
        """Free the pool's free buffers beyond ``keep`` per class; returns the bytes freed.

        Per class, takes the free buffers in the shared freelist and in the
        *calling* thread's cache (other threads' caches are theirs: call this
        from each, or :func:`flush_thread_cache` there first), keeps ``keep``
        of them in the shared freelist and frees the rest. Buffers in use are
        untouched; the class may create new ones again up to
        ``max_per_class``. Buffers of a page or more are unmapped, so their
        memory goes back to the operating system at once. A no-op on a closed
        pool.
        """
        return self._core_trim(check_nonneg("keep", keep))

    def outstanding(self) -> list[OutstandingBuffer]:
        """The pooled buffers in use right now, oldest first, with where each
        was allocated. Needs ``track_allocations=True`` in the config."""
        if not self._config.track_allocations:
            raise PoolError(
                "allocation tracking is off; build the pool with "
                "BufferPoolConfig(..., track_allocations=True) or .with_track_allocations(True)"
            )
        now = time.monotonic()
        found = [
            OutstandingBuffer(
                size=size,
                address=address,
                age=now - when,
                thread=thread,
                origin="".join(traceback.StackSummary.from_list(frames).format()),
            )
            for size, address, when, thread, frames in self._core_origins()
        ]
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
        local = self._core_local_free()
        classes = tuple(
            SizeClassStats(
                size=cls.size,
                max_buffers=cls.max_buffers,
                created=cls.created,
                global_free=cls.global_free,
                local_free=local_free,
                thread_cache_capacity=self._cache_capacity,
                exhausted_total=cls.exhausted,
            )
            for cls, local_free in zip(self._classes, local, strict=True)
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
        self._core_close()
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

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        try:
            if not getattr(self, "_closed", True):  # neither closed nor half-built (__init__ raised)
                self.close()
        except Exception:
            if not _finalizing():  # at teardown module state may be gone; elsewhere it is a bug
                raise


class _TrackingPool(BufferPool):
    """A BufferPool that records each pooled allocation's origin (``track_allocations``)."""

    __slots__ = ()

    def try_alloc(self, capacity: int) -> IoBufMut:
        buf = BufferPool.try_alloc(self, capacity)
        if buf.is_pooled:
            self._core_track(buf, _caller_frames())
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
