"""One size class: its shared freelist, creation limit, and per-thread caches.

Design (the seed's two-level allocator)
---------------------------------------
Each class keeps free buffers in two places:

1. **Per-thread caches**: a ``threading.local`` per class, so several pools (or
   classes) never share a cache. Each thread's entry is a :class:`LocalCache`,
   a plain list used as a LIFO stack of at most ``thread_cache_capacity`` buffers.
   Only its own thread touches it, so the hot path (``take`` on a hit,
   ``give_back`` with room) is a list ``pop``/``append`` and takes no lock.
   ``PoolCore.try_alloc`` (``_alloc``) and ``IoBufMut.__del__`` inline the cache hit;
   everything else goes through the methods here.
2. **The shared freelist**: ``stripes``, a power-of-two number of lists.
   A thread starts at its home stripe (a per-thread id) and probes the others.
   ``list.append``/``list.pop``/``list.extend`` are each atomic on GIL builds
   and hold the list's per-object lock on free-threaded builds, so the freelist
   needs no lock of its own. Batch moves are a sequence of such atomic steps;
   a concurrent thread may interleave, which changes who gets which buffer but
   never duplicates or loses one.

Refill and spill follow the seed exactly: a miss with capacity >= 4 takes up to
``capacity // 2`` from the shared list (the first goes to the caller); a full
cache with capacity >= 4 spills its most recent ``max(1, min(len, cap // 2))``
entries in one batch and keeps the incoming buffer; smaller caches take or send
one buffer at a time. Capacity 0 means every operation goes to the shared list.

Invariants
----------
- A buffer (its memoryview ``mv``) is in exactly one place: in use (owned by
  an IoBufMut, a lease or an exporter, see ``_views``), in one thread's cache,
  or in one stripe. ``created == in use + cached (all threads) + shared``.
- ``created <= max_per_class``; it changes only under ``_lock`` (it grows when
  a buffer is made and falls when ``trim`` frees one).
- Any allocation may start a garbage collection, whose finalizers return
  buffers into (or, allocating, take them from) this thread's cache at that
  moment. So a list finalizers can reach (a cache, ``suspects``) is changed
  only by single list calls or :func:`~iobuf._views.take_last`, never by
  copying a slice and deleting it afterwards.
- A buffer returned after ``close()`` is dropped (its memory freed by CPython
  once unreferenced), never parked again. Closing sets ``cache_capacity`` to
  -1 so the return hot path falls into :meth:`SizeClass.give_back_full`,
  which sees ``closed`` and drops the buffer; the hot path carries no extra
  check for it.
- A thread's cache empties into the shared list when the thread exits (the
  thread's ``threading.local`` dict dies, running ``LocalCache.__del__``) or on
  :func:`flush_thread_cache`.

What relies on the GIL: nothing for correctness; per structure, on
free-threaded builds (3.13t, where the suite and the 4 x 50,000-operation
stress test run in CI):

- ``LocalCache``: touched only by its own thread (reached through the class's
  ``threading.local``, or its facet's ``cache``), so it needs nothing.
- ``Shared.stripes`` and ``suspects``: single ``list`` calls, each holding the
  list's per-object lock; a probe that loses a race sees ``IndexError``.
- ``created`` (the ``max_per_class`` limit) and ``exhausted``: read-modify-write
  only under ``_lock`` (re-entrant: signal handlers may allocate). Readers
  (``stats``, metrics) load each whole ``int`` without the lock.
- ``addresses``: single dict operations, thread-safe on both builds.
- ``closed`` and ``cache_capacity``: single attribute stores (atomic slot
  stores on free-threaded builds) read without a lock: a return racing
  ``close()`` can park one buffer in a closed class, where it is never handed
  out and is freed with the class.
- ``_live_classes``: a set of self-removing weak references (one atomic set
  call each); ``_thread_ids``: a duplicate id from racing ``next()`` only
  shares a home stripe.
- Which thread's cache receives a returned buffer: the one running the
  finalizer that returns it. Free-threaded CPython may defer the deallocation
  of an object dropped by a thread that did not create it to the creating
  thread (biased reference counting), so the buffer may land there instead of
  in the dropping thread's cache; it still lands in exactly one place (the
  shared list if that thread is exiting, see :func:`_thread_is_finishing`).
- Blocks come from ``_memory.aligned_block``, which on free-threaded builds
  puts them behind a ``ctypes`` array so that ``_views`` never has to slice a
  memoryview another thread may use (python/cpython#155606).
- Facets: see next.

Facets (the free-threaded hot path)
-----------------------------------
On a free-threaded build a thread changes the reference count of an object it
did not create with an atomic operation on a shared field; two threads doing
that to one object at once bounce its cache line between cores. The GIL
build's allocate/drop path touches the class and its ``threading.local`` on
every call from every thread (``buf._cls = cls``, ``cls.local.cache``,
``cls.cache_capacity``), which held two threads near the speed of one
(measured figures: docs/performance.md). So on
free-threaded builds (``PoolCore._try_alloc_facets`` and
``IoBufMut._del_facets``; GIL builds keep ``_try_alloc_local`` and
``_del_local``, cheaper there) each thread allocates through its own *facet*
of each class: a ``SizeClass`` that thread made (:meth:`SizeClass.facet`), so
its reference count is that thread's own. A facet shares the class's state
objects themselves (``shared``, ``local``, ``addresses``, ``suspects``,
``origins``, ...: ``_FACET_SHARES``) and has its own:

- ``cache``: the thread's :class:`LocalCache` of the class, the very object in
  ``local``, so ``trim()``, ``close()``, :func:`flush_thread_cache` and the
  thread's exit see what the facet path parked;
- ``owner``: the thread's ident, or -1 once retired;
- ``cache_capacity``: the class's, which is -1 from the start for scrubbing
  or tracking classes (every return takes the slow path, as for the class)
  and which ``close()`` sets to -1 on every facet too, through the class's
  ``facets``;
- ``primary``: the class, so a buffer keeps it alive as before.

The class's own ``cache``/``owner`` are None/-1 (it is nobody's facet), and
its ``facets`` is a set of weak references to its facets that remove
themselves. A pool keeps each thread's facets in its ``threading.local``: one
tuple, the facets and then a :class:`RetireFacets`. A buffer's ``_cls`` is
the facet that allocated it; its drop appends to ``cache`` only when
``owner`` is the dropping thread's ident, and otherwise (another thread's
facet, or a retired one) calls ``give_back``, which finds the dropping
thread's cache through ``local`` as on GIL builds.

Retiring (:func:`retire_facet`: ``owner = -1``, then ``cache = None``)
happens when the pool's ``threading.local`` entry of the thread dies
(``RetireFacets.__del__``): at the thread's exit, in that thread, before its
ident can be reused; or when the pool dies, from whichever thread drops it.
In a forked child, :meth:`SizeClass.after_fork_in_child` retires the facets
of the parent's other threads, whose idents the child's threads may get. A
thread makes no facets once it is finishing (:func:`_thread_is_finishing`):
an allocation from its teardown (a finalizer in its own ``threading.local``)
would otherwise make facets whose retirement never runs, parking buffers in a
cache nobody flushes under an ident a later thread may get; it takes the
GIL-build path instead.

What each relies on, on free-threaded builds:

- ``owner`` and ``cache``: single slot stores and loads. Only the owning
  thread passes the owner check: no other live thread has its ident, and a
  thread that reuses an ident starts after the old thread's exit retired its
  facets. The drop loads ``cache`` before ``owner`` and retiring stores them
  in the other order, so a passing check never finds ``cache`` None; if the
  pool's death retires a facet while its own thread drops a buffer, that
  thread appends to a cache that is still its own (``local`` holds it).
- ``cache_capacity`` of facets: as for the class (see ``closed`` above). A
  facet made while the class closes registers in ``facets`` and copies the
  class's limit under the class's lock, under which ``close()`` stores -1 in
  the class and then in every facet it finds: either way it ends at -1.
- ``facets``: ``set.add``, ``set.discard`` (weak reference callbacks, from
  any thread) and ``list(set)`` are each atomic.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._memory import address_of, aligned_block
from ._views import PARKED, make_export_type, settle_if_parked, settle_parked, take_last

__all__ = ["LocalCache", "RetireFacets", "SizeClass", "flush_thread_cache"]

# Below this capacity a thread cache moves one buffer at a time: batching a
# half of 1-3 entries would not amortise anything (the seed's MIN_TLS_BATCH_CAPACITY).
MIN_BATCH_CAPACITY = 4

# Every live class, so flush_thread_cache() can reach the caller's caches: a
# plain set of weak references that remove themselves (``set.add``,
# ``set.discard`` and ``list(set)`` are each atomic on both builds). Not a
# WeakSet: its iteration guard is a check-then-act that a class dying in
# another thread could slip through ("set changed size during iteration").
_live_classes: set[weakref.ref[SizeClass]] = set()
# Home stripes are only a starting hint, so a duplicate id (possible if two
# threads race next() on a free-threaded build) is harmless; no lock, because
# this runs on return paths that finalizers and signal handlers reach.
_thread_ids = itertools.count()
_getrefcount = sys.getrefcount
_get_ident = threading.get_ident
_new_object = object.__new__


def _calibrate_free_refs() -> int:
    """What ``sys.getrefcount`` says of a buffer just popped into a local, and held by nothing else."""
    cache = [memoryview(b"")]
    mv = cache.pop()
    return _getrefcount(mv)


# Every path that hands a buffer out checks it against this right after the pop
# (same code shape): more references mean something still reaches the memory
# (a resurrected view, a debugging gc.garbage, a duplicated return...), and the
# buffer is set aside instead of being handed out.
FREE_REFS = _calibrate_free_refs()


def _stripe_count(capacity: int, parallelism: int) -> int:
    """Stripes of the shared freelist: next_pow2(parallelism), capped by capacity.

    The cap (the largest power of two <= capacity) keeps every stripe able to
    hold a buffer. Unlike the seed's 64-bit bitmap words, a list stripe has no
    size limit, so there is no extra ``ceil(capacity / 64)`` term.
    """
    target = 1 << (parallelism - 1).bit_length()
    max_stripes = 1 << (capacity.bit_length() - 1)
    return min(target, max_stripes)


class LocalCache(list[memoryview]):
    """One thread's LIFO cache of free buffers for one class.

    Holds the class's :class:`Shared` (not the class itself, which would form a
    cycle through the class's ``threading.local``) so that it can empty itself
    into the shared freelist when its thread exits.
    """

    __slots__ = ("shared", "home")

    def __init__(self, shared: Shared, home: int) -> None:
        super().__init__()
        self.shared = shared
        self.home = home

    def flush(self) -> None:
        """Move every cached buffer to the shared freelist."""
        while self:  # a finalizer run by a collection may have pushed more meanwhile
            batch: list[memoryview] = []
            take_last(self, len(self), batch)
            batch.reverse()
            self.shared.put_batch(batch, self.home)

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        try:
            self.flush()
        except Exception:
            if not _finalizing():  # at teardown the module state is gone: nothing to flush to
                raise


class Shared:
    """The shared, striped freelist and the creation counter of one class."""

    __slots__ = ("stripes", "mask", "closed", "max_buffers", "created", "exhausted", "_lock")

    def __init__(self, max_buffers: int, parallelism: int) -> None:
        n = _stripe_count(max_buffers, parallelism)
        self.stripes: list[list[memoryview]] = [[] for _ in range(n)]
        self.mask = n - 1
        self.closed = False
        self.max_buffers = max_buffers
        self.created = 0
        self.exhausted = 0
        # Re-entrant: a signal handler may allocate while this thread holds it.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return sum(len(s) for s in self.stripes)

    def put(self, mv: memoryview, home: int) -> None:
        if self.closed:
            return
        self.stripes[home & self.mask].append(mv)

    def put_batch(self, batch: list[memoryview], home: int) -> None:
        if self.closed:
            return
        self.stripes[home & self.mask].extend(batch)

    def take(self, home: int) -> memoryview | None:
        stripes = self.stripes
        mask = self.mask
        for i in range(mask + 1):
            stripe = stripes[(home + i) & mask]
            if stripe:
                try:
                    return stripe.pop()
                except IndexError:  # another thread emptied it first
                    continue
        return None

    def take_batch(self, count: int, home: int, into: list[memoryview]) -> None:
        """Append up to ``count`` buffers to ``into``, probing from ``home``."""
        stripes = self.stripes
        mask = self.mask
        for i in range(mask + 1):
            stripe = stripes[(home + i) & mask]
            while stripe and len(into) < count:
                try:
                    into.append(stripe.pop())
                except IndexError:
                    break
            if len(into) >= count:
                return

    def reserve(self) -> bool:
        """Claim one creation slot; False (and count it) if the class is full."""
        with self._lock:
            if self.created < self.max_buffers:
                self.created += 1
                return True
            self.exhausted += 1
            return False

    def unreserve(self, count: int = 1) -> None:
        with self._lock:
            self.created -= count

    def drain(self) -> list[memoryview]:
        """Remove and return every parked buffer."""
        drained: list[memoryview] = []
        for stripe in self.stripes:
            while stripe:
                try:
                    drained.append(stripe.pop())
                except IndexError:
                    break
        return drained


def _new_home() -> int:
    return next(_thread_ids)


def _thread_is_finishing() -> bool:
    """True while a thread started by ``threading`` is tearing down its state.

    ``threading`` forgets a thread (``_active``) before CPython clears the
    thread's locals; a buffer returned from that teardown (say, held in the
    user's own ``threading.local``) must not start a cache nobody will flush.
    """
    active = getattr(threading, "_active", None)
    return active is not None and threading.get_ident() not in active


class SizeClass:
    """A power-of-two size class. Buffers in use hold it, so it can outlive its pool."""

    __slots__ = (
        "size",
        "alignment",
        "cache_capacity",
        "thread_cache_capacity",
        "scrub",
        "origins",
        "shared",
        "local",
        "export_type",
        "addresses",
        "suspects",
        "cache",
        "owner",
        "facets",
        "primary",
        "__weakref__",
    )

    def __init__(
        self,
        *,
        size: int,
        alignment: int,
        max_buffers: int,
        parallelism: int,
        cache_capacity: int,
        prefill: bool,
        scrub: bool = False,
        track: bool = False,
    ) -> None:
        self.size = size
        self.alignment = alignment
        # Two limits on a thread's cache. ``thread_cache_capacity`` is the
        # configured size (resolve_thread_cache_capacity()): how many buffers a
        # cache holds, and what refill and spill batch by. ``cache_capacity`` is
        # what the inlined return path (IoBufMut.__del__, give_back) compares
        # ``len(cache)`` against: the same number, or -1 (never room) when every
        # return must take give_back_full: scrubbing, tracking, or a closed class.
        self.thread_cache_capacity = cache_capacity
        self.cache_capacity = -1 if scrub or track else cache_capacity
        self.scrub = scrub
        # base address -> (monotonic time, thread name, stack) of each tracked buffer in use
        self.origins: dict[int, tuple[float, str, Any]] | None = {} if track else None
        self.shared = Shared(max_buffers, parallelism)
        self.local = threading.local()
        self.export_type: Any = make_export_type(size)
        # id(mv) -> base address, for exporters and ``address``; entries live
        # exactly as long as the buffer is tracked by this class.
        self.addresses: dict[int, int] = {}
        # Buffers something still referenced when they were about to be handed out.
        self.suspects: list[memoryview] = []
        # The class itself is no thread's facet: its drops always take give_back.
        self.cache: LocalCache | None = None
        self.owner = -1
        # Weak references to this class's per-thread facets (see facet()).
        self.facets: set[weakref.ref[SizeClass]] = set()
        self.primary: SizeClass | None = None  # a facet's: the class it is a facet of
        _live_classes.add(weakref.ref(self, _live_classes.discard))
        if prefill:
            shared = self.shared
            blocks = [self._new_block() for _ in range(max_buffers)]
            shared.created = max_buffers
            for i, mv in enumerate(blocks):
                shared.stripes[i & shared.mask].append(mv)

    # What stats() and the metrics collector read (the compiled core's classes offer the same).
    @property
    def max_buffers(self) -> int:
        return self.shared.max_buffers

    @property
    def created(self) -> int:
        return self.shared.created

    @property
    def exhausted(self) -> int:
        return self.shared.exhausted

    @property
    def global_free(self) -> int:
        return len(self.shared)

    def facet(self) -> SizeClass:
        """A new facet of this class for the calling thread (see "Facets" above)."""
        f: SizeClass = _new_object(SizeClass)
        for name in _FACET_SHARES:
            setattr(f, name, getattr(self, name))
        f.primary = self  # buffers keep the class itself alive, as before
        f.owner = -1
        try:
            f.cache = self.local.cache
        except AttributeError:
            f.cache = self.init_cache()
        # Under the lock close() stores its -1s under: this facet either is in
        # close()'s snapshot of ``facets`` or reads the class's -1 here.
        with self.shared._lock:
            self.facets.add(weakref.ref(f, self.facets.discard))
            f.cache_capacity = self.cache_capacity
        f.owner = _get_ident()
        return f

    def _new_block(self) -> memoryview:
        mv = aligned_block(self.size, self.alignment, pooled=True)
        self.addresses[id(mv)] = address_of(mv)
        return mv

    # -- returning (the allocation hit is inlined in PoolCore.try_alloc) -------

    def give_back(self, mv: memoryview) -> None:
        """Return a buffer nothing reaches any more to the calling thread's cache."""
        try:
            cache: LocalCache = self.local.cache
        except AttributeError:
            if _thread_is_finishing():
                if self.cache_capacity < 0:
                    self._on_return(mv)
                self.shared.put(mv, 0)
                return
            cache = self.init_cache()
        if len(cache) < self.cache_capacity:
            cache.append(mv)
        else:
            self.give_back_full(cache, mv)

    # -- slow paths ----------------------------------------------------------

    def init_cache(self) -> LocalCache:
        cache = LocalCache(self.shared, _new_home())
        self.local.cache = cache
        return cache

    def refill(self, cache: LocalCache) -> memoryview | None:
        if PARKED:  # (settle_if_parked inlined: every miss comes here)
            settle_parked()
            if cache:  # settling returned buffers to this very cache
                return cache.pop()
        if self.suspects:
            self.reclaim_suspects()
        shared = self.shared
        capacity = self.thread_cache_capacity
        if capacity < MIN_BATCH_CAPACITY:
            mv = shared.take(cache.home)
        else:
            batch: list[memoryview] = []
            shared.take_batch(capacity // 2, cache.home, batch)
            if batch:
                mv = batch[0]
                cache.extend(batch[1:])
            else:
                mv = None
        if mv is None:
            return self._create()
        return mv

    def _create(self) -> memoryview | None:
        shared = self.shared
        if shared.closed or not shared.reserve():
            return None
        try:
            return self._new_block()
        except BaseException:
            shared.unreserve()
            raise

    def set_aside(self, mv: memoryview, cache: LocalCache) -> memoryview | None:
        """``mv`` is still referenced elsewhere: keep it out of use, return one that is free."""
        self.suspects.append(mv)
        del mv
        while True:
            candidate = cache.pop() if cache else self.refill(cache)
            if candidate is None or _getrefcount(candidate) <= FREE_REFS:
                return candidate
            self.suspects.append(candidate)

    def reclaim_suspects(self) -> None:
        """Park every set-aside buffer that nothing references any more."""
        suspects = self.suspects
        still: list[memoryview] = []
        for _ in range(len(suspects)):
            try:
                mv = suspects.pop()
            except IndexError:
                break
            if _getrefcount(mv) <= FREE_REFS:
                self.shared.put(mv, 0)
            else:
                still.append(mv)
        suspects.extend(still)

    def give_back_full(self, cache: LocalCache, mv: memoryview) -> None:
        """Return ``mv`` when the inlined path found no room: the cache is full,
        the class closed, or returns are scrubbed/tracked. Park, spill or drop."""
        if self.cache_capacity < 0:
            self._on_return(mv)
        shared = self.shared
        if shared.closed:
            self.addresses.pop(id(mv), None)
            return
        capacity = self.thread_cache_capacity
        if len(cache) < capacity:  # only when scrubbing/tracking sent us here
            cache.append(mv)
            return
        if capacity < MIN_BATCH_CAPACITY:
            shared.put(mv, cache.home)
            return
        spill = max(1, min(len(cache), capacity // 2))
        batch: list[memoryview] = []
        take_last(cache, spill, batch)
        batch.reverse()  # the most recent at the end, taken first
        shared.put_batch(batch, cache.home)
        cache.append(mv)

    def _on_return(self, mv: memoryview) -> None:
        """Scrub and untrack a buffer that is coming back (or being dropped)."""
        address = self.addresses.get(id(mv))
        if address is None:
            return
        if self.scrub:
            ctypes.memset(address, 0, self.size)
        origins = self.origins
        if origins is not None:
            origins.pop(address, None)

    def track(self, mv: memoryview, stack: Any) -> None:
        """Record where the buffer ``mv`` was just handed out (tracking pools only)."""
        origins = self.origins
        if origins is not None:
            origins[self.addresses[id(mv)]] = (time.monotonic(), threading.current_thread().name, stack)

    # -- pool-level operations -----------------------------------------------

    def trim(self, keep: int) -> int:
        """Free the free buffers this thread can see (its cache and the shared
        list) beyond ``keep``, which stay in the shared list; returns how many
        were freed (their creation slots too)."""
        shared = self.shared
        if shared.closed:
            return 0
        settle_if_parked()
        if self.suspects:
            self.reclaim_suspects()
        doomed: list[memoryview] = []
        cache: LocalCache | None = getattr(self.local, "cache", None)
        if cache:
            take_last(cache, len(cache), doomed)
        doomed += shared.drain()
        if keep:
            shared.put_batch(doomed[:keep], 0)
            doomed = doomed[keep:]
        for mv in doomed:
            self.addresses.pop(id(mv), None)
        shared.unreserve(len(doomed))
        # The memory goes back to the OS when ``doomed`` (the last reference) goes.
        return len(doomed)

    def after_fork_in_child(self) -> None:
        """New locks: another thread of the parent may have held them at fork time.
        Retire the facets of the parent's other threads: a thread of the child
        may get one of their idents."""
        self.shared._lock = threading.RLock()
        me = _get_ident()
        for ref in list(self.facets):
            f = ref()
            if f is not None and f.owner != me:
                retire_facet(f)

    def local_len(self) -> int:
        cache: LocalCache | None = getattr(self.local, "cache", None)
        return 0 if cache is None else len(cache)

    def flush_local(self) -> None:
        cache: LocalCache | None = getattr(self.local, "cache", None)
        if cache is not None:
            cache.flush()

    def close(self) -> None:
        """Refuse further parking, free the shared free buffers and the caller's cache."""
        shared = self.shared
        shared.closed = True
        with shared._lock:  # see facet()
            self.cache_capacity = -1
            for ref in list(self.facets):
                f = ref()
                if f is not None:
                    f.cache_capacity = -1
        cache: LocalCache | None = getattr(self.local, "cache", None)
        dropped = shared.drain()
        take_last(self.suspects, len(self.suspects), dropped)
        if cache is not None:
            take_last(cache, len(cache), dropped)
        for mv in dropped:
            self.addresses.pop(id(mv), None)


# What a facet copies from its class at creation (the same objects, so shared
# state stays shared); ``cache``, ``owner``, ``primary`` and ``cache_capacity``
# are its own.
_FACET_SHARES = tuple(
    name
    for name in SizeClass.__slots__
    if name not in {"cache", "owner", "primary", "cache_capacity", "__weakref__"}
)


def retire_facet(f: SizeClass) -> None:
    """Take a facet off the fast path for good: its drops go through give_back."""
    f.owner = -1  # before the cache: IoBufMut.__del__ reads them in the other order
    f.cache = None


class RetireFacets:
    """Kept with one thread's facets of a pool's classes, as the last item of
    the tuple in the pool's ``threading.local``: when that dies (the thread
    exits, or the pool goes) the facets are retired, so a drop never takes the
    fast path into a cache nobody flushes (a new thread may reuse the ident),
    and the facets let go of the thread's caches (each flushes itself when its
    last holder goes). One tuple, stored in one step: a signal handler that
    allocates while the first allocation builds it at worst retires its own."""

    __slots__ = ("facets",)

    def __init__(self, facets: tuple[SizeClass, ...]) -> None:
        self.facets = facets

    def __del__(self) -> None:
        # retire_facet inlined: at interpreter exit this module's globals may
        # already be gone (None) when a thread's locals are cleared.
        for f in self.facets:
            f.owner = -1
            f.cache = None


def _after_fork_in_child() -> None:
    for ref in list(_live_classes):
        cls = ref()
        if cls is not None:
            cls.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_thread_cache() -> None:
    """Move every buffer cached by the calling thread (all pools) to the shared freelists.

    Threads do this by themselves when they exit; call it before a thread goes
    idle for long so other threads can reuse what it holds.
    """
    settle_if_parked()
    for ref in list(_live_classes):
        cls = ref()
        if cls is not None:
            cls.flush_local()
