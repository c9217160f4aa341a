# cython: freethreading_compatible=True
# cython: always_allow_keywords=True
"""The compiled core: ``IoBufMut``, ``IoBuf`` and the pool's size classes and
thread caches, in Cython pure-Python mode (C declarations in ``_core.pxd``).

Ownership (the safety rule holds by construction)
-------------------------------------------------
* An ``IoBufMut`` fresh from ``try_alloc`` owns its pooled memory directly
  (``raw``). Once the memory is shared (``freeze``, ``copy_to_bytes``,
  ``split_filled``) a refcounted :class:`Block` owns it, and the IoBufMut (at
  most one), every IoBuf on it and every Py_buffer exported by an IoBuf
  (``view.obj = block``) hold the Block. Untracked memory (heap, aligned,
  wrapped ``bytes``) is always held by a Block.
* Memory returns to the pool only in a deallocator (``IoBufMut`` holding
  ``raw``, or ``Block``): ``tp_dealloc`` runs when nothing references the
  object and cannot resurrect it. There is no ``__del__`` anywhere.
* ``IoBufMut`` exports itself (``view.obj = self``) and counts its exports:
  while one lives the IoBufMut lives, and any state change that lets go of
  the memory (freeze, release of a shared buffer, growth, a full
  ``copy_to_bytes``) first moves the memory into a Block kept in ``pins``
  until the last export is released.
* ``try_into_mut`` and ``release`` count owners as
  ``refcount(block) - exports(block)``: each owner and each live export of an
  IoBuf holds one reference; pins and IoBufMuts hold references too, so a
  live export of an IoBufMut makes the count refuse. Between the count and
  the act nothing allocates a Python object (no collection, no finalizer).

Pool state and thread caches
----------------------------
* ``PoolCore`` (the base class of the Python ``BufferPool``) holds a
  ``PoolState``: the size classes, the bounds and the closed flag. Buffers
  hold the Facet (thread cache) they were allocated through, which holds the
  PoolState, never the pool: dropping the pool closes it (its ``__del__``)
  with buffers outstanding.
* One process-wide TSS key points at the calling thread's ``ThreadCaches``
  (owned by the thread-state dict), a table of Facets indexed by the pool's
  slot number (a small integer unique among live PoolStates; a Facet holds its
  PoolState, so a slot is not reused while any thread holds a Facet of it).
  No key per pool: any number of pools may live at once.
* A thread that exits clears its thread-state dict: ``ThreadCaches`` flushes
  every Facet into the shared lists and marks the thread finishing
  (``IOB_FINISHING``): its later allocations and returns go to the shared
  lists directly. ``flush_thread_cache()`` flushes the caller's Facets.
* Closing frees the shared lists and the calling thread's Facet; the facet
  of a closed pool in another thread is freed by that thread's exit, its
  ``flush_thread_cache()``, or its next creation of a Facet (a sweep), and
  every return to a closed pool frees the memory.
* Size classes: a growable stack of free pointers behind a spin lock
  registered for ``pthread_atfork`` (prepare takes every lock, the child
  resets them), so a child never inherits a held lock.
"""
from __future__ import annotations

import cython
import threading as _threading
import time as _time

from iobuf._errors import Exhausted, Oversized, check_nonneg, check_size

_VIEWS_ALIVE = (
    "cannot release a pooled buffer while memoryviews (or arrays) of it are alive; release or drop them first"
)
_DETACHED_MSG = "this IoBufMut was frozen or converted and holds no memory"
_CACHES_KEY = "iobuf._core.thread_caches"



# --------------------------------------------------------------------------- size class


@cython.final
@cython.no_gc
@cython.cclass
class SizeClass:
    """One power-of-two class: its shared free list and creation counter."""

    def __cinit__(self, size: cython.Py_ssize_t, max_buffers: cython.Py_ssize_t, alignment: cython.size_t,
                  track: cython.bint):
        self.size = size
        self.max_buffers = max_buffers
        self.alignment = alignment
        self.origins = {} if track else None
        self.room = 0
        self.free_items = cython.NULL
        iob_register(cython.address(self.node))

    def __dealloc__(self):
        i: cython.Py_ssize_t
        iob_unregister(cython.address(self.node))
        for i in range(self.n_free):
            iob_mem_free(self.free_items[i], self.size)
        free(self.free_items)

    @property
    def created(self) -> int:
        return iob_read(cython.address(self._created))

    @property
    def exhausted(self) -> int:
        return iob_read(cython.address(self._exhausted))

    @property
    def global_free(self) -> int:
        return iob_read(cython.address(self.n_free))

    def __repr__(self) -> str:
        return (f"SizeClass(size={self.size}, max_buffers={self.max_buffers}, created={self.created}, "
                f"global_free={self.global_free}, exhausted={self.exhausted})")

    @cython.cfunc
    @cython.exceptval(check=False)
    def grow_room(self, need: cython.Py_ssize_t) -> cython.bint:
        """Under the lock: make room for ``need`` free pointers (no Python)."""
        cap: cython.Py_ssize_t
        p: cython.pp_void
        if need <= self.room:
            return True
        cap = self.room * 2 if self.room else 16
        if cap < need:
            cap = need
        p = cython.cast(cython.pp_void, realloc(self.free_items, cap * cython.sizeof(cython.p_void)))
        if p == cython.NULL:
            return False
        self.free_items = p
        self.room = cap
        return True

    @cython.cfunc
    @cython.exceptval(check=False)
    def create(self) -> cython.p_void:
        p: cython.p_void
        iob_lock(cython.address(self.node))
        if self.closed:
            iob_unlock(cython.address(self.node))
            return cython.NULL
        if self._created >= self.max_buffers:
            iob_write(cython.address(self._exhausted), self._exhausted + 1)
            iob_unlock(cython.address(self.node))
            return cython.NULL
        iob_write(cython.address(self._created), self._created + 1)
        iob_unlock(cython.address(self.node))
        p = iob_mem_alloc(self.size, self.alignment, 1)
        if p == cython.NULL:
            iob_lock(cython.address(self.node))
            iob_write(cython.address(self._created), self._created - 1)
            iob_unlock(cython.address(self.node))
        return p

    @cython.cfunc
    @cython.exceptval(check=False)
    def take(self) -> cython.p_void:
        p: cython.p_void = cython.NULL
        iob_lock(cython.address(self.node))
        if self.n_free:
            iob_write(cython.address(self.n_free), self.n_free - 1)
            p = self.free_items[self.n_free]
        iob_unlock(cython.address(self.node))
        return p

    @cython.cfunc
    @cython.exceptval(check=False)
    def take_batch(self, into: cython.pp_void, want: cython.Py_ssize_t) -> cython.Py_ssize_t:
        got: cython.Py_ssize_t = 0
        n: cython.Py_ssize_t
        iob_lock(cython.address(self.node))
        n = self.n_free
        while got < want and n:
            n -= 1
            into[got] = self.free_items[n]
            got += 1
        iob_write(cython.address(self.n_free), n)
        iob_unlock(cython.address(self.node))
        return got

    @cython.cfunc
    @cython.exceptval(check=False)
    def put(self, p: cython.p_void) -> cython.void:
        self.put_batch(cython.address(p), 1)

    @cython.cfunc
    @cython.exceptval(check=False)
    def put_batch(self, items: cython.pp_void, n: cython.Py_ssize_t) -> cython.void:
        i: cython.Py_ssize_t
        if n <= 0:
            return
        iob_lock(cython.address(self.node))
        if not self.closed and self.grow_room(self.n_free + n):
            for i in range(n):
                self.free_items[self.n_free + i] = items[i]
            iob_write(cython.address(self.n_free), self.n_free + n)
            iob_unlock(cython.address(self.node))
            return
        if not self.closed:  # no memory for the list: free them, and their creation slots
            iob_write(cython.address(self._created), self._created - n)
        iob_unlock(cython.address(self.node))
        # Freed, never parked; a closed class's ``created`` keeps counting them, as the pure core's does.
        for i in range(n):
            iob_mem_free(items[i], self.size)

    @cython.cfunc
    @cython.exceptval(check=False)
    def close(self) -> cython.void:
        items: cython.pp_void
        n: cython.Py_ssize_t
        i: cython.Py_ssize_t
        iob_lock(cython.address(self.node))
        self.closed = True
        items = self.free_items
        n = self.n_free
        self.free_items = cython.NULL
        self.room = 0
        iob_write(cython.address(self.n_free), 0)
        iob_unlock(cython.address(self.node))
        for i in range(n):
            iob_mem_free(items[i], self.size)
        free(items)

    @cython.cfunc
    @cython.exceptval(check=False)
    def trim(self, extra: cython.pp_void, n_extra: cython.Py_ssize_t, keep: cython.Py_ssize_t) -> cython.Py_ssize_t:
        """Free the shared buffers and ``extra`` (a thread cache's) beyond ``keep``; how
        many were freed, or -1 when it took nothing (closed, or out of memory): then
        ``extra`` is still the caller's."""
        doomed: cython.pp_void
        total: cython.Py_ssize_t
        nd: cython.Py_ssize_t = 0
        i: cython.Py_ssize_t
        iob_lock(cython.address(self.node))
        if self.closed:
            iob_unlock(cython.address(self.node))
            return -1
        total = self.n_free + n_extra
        doomed = cython.cast(cython.pp_void, malloc((total if total > 0 else 1) * cython.sizeof(cython.p_void)))
        if doomed == cython.NULL:
            iob_unlock(cython.address(self.node))
            return -1
        for i in range(n_extra):
            doomed[nd] = extra[n_extra - 1 - i]  # the most recent first, as take_last
            nd += 1
        for i in range(self.n_free):
            doomed[nd] = self.free_items[self.n_free - 1 - i]
            nd += 1
        iob_write(cython.address(self.n_free), 0)
        if keep > nd:
            keep = nd
        if keep and self.grow_room(keep):
            for i in range(keep):
                self.free_items[i] = doomed[i]
            iob_write(cython.address(self.n_free), keep)
        else:
            keep = 0
        iob_write(cython.address(self._created), self._created - (nd - keep))
        iob_unlock(cython.address(self.node))
        for i in range(keep, nd):
            iob_mem_free(doomed[i], self.size)
        free(doomed)
        return nd - keep

    @cython.cfunc
    def prefill(self) -> cython.void:
        p: cython.p_void
        while True:
            p = self.create()
            if p == cython.NULL:
                break
            self.put(p)
        # prefill counts nothing as exhausted
        self._exhausted = 0
        if self._created < self.max_buffers:
            raise MemoryError(f"cannot prefill {self.max_buffers} buffers of {self.size} bytes")


# --------------------------------------------------------------------------- pool state


@cython.final
@cython.no_gc
@cython.cclass
class PoolState:
    """What buffers and thread caches of one pool share. Never holds the pool."""

    def __cinit__(self):
        self.min_size = -1
        self.max_size = -1
        self.closed = 1
        self.classes = ()
        self.has_slot = False

    def __dealloc__(self):
        if self.has_slot:
            iob_slot_put(self.slot)


# --------------------------------------------------------------------------- thread caches


@cython.final
@cython.no_gc
@cython.cclass
class Facet:
    """One thread's LIFO caches of every class of one pool. Touched only by its thread."""

    def __dealloc__(self):
        i: cython.int
        if self.st is not None and self.counts != cython.NULL:
            self.flush()
        if self.items != cython.NULL:
            for i in range(self.num_classes):
                free(self.items[i])
            free(self.items)
        free(self.counts)
        free(self.room)  # (all from iob_cl_alloc/iob_cl_realloc: plain free)

    @cython.cfunc
    @cython.exceptval(check=False)
    def refill(self, idx: cython.int) -> cython.p_void:
        cls: SizeClass = self.st.classes[idx]
        p: cython.p_void
        want: cython.Py_ssize_t
        got: cython.Py_ssize_t
        r: cython.Py_ssize_t
        base: cython.pp_void
        if self.cap < MIN_BATCH_CAPACITY:
            p = cls.take()
            if p != cython.NULL:
                return p
            return cls.create()
        want = self.cap // 2
        # Room for what the shared list holds now (a huge capacity must not
        # allocate its whole batch up front); another thread may add more
        # meanwhile, which then stays there.
        r = iob_read(cython.address(cls.n_free))
        if r > want:
            r = want
        if r < 16:
            r = want if want < 16 else 16
        if self.room[idx] < r:
            base = cython.cast(cython.pp_void, iob_cl_realloc(self.items[idx], self.counts[idx] * cython.sizeof(cython.p_void), r * cython.sizeof(cython.p_void)))
            if base == cython.NULL:
                p = cls.take()
                return p if p != cython.NULL else cls.create()
            self.items[idx] = base
            self.room[idx] = r
        if want > self.room[idx]:
            want = self.room[idx]
        base = self.items[idx]
        got = cls.take_batch(base, want)
        if got:
            # hand out the first taken, keep the rest (as the seed does)
            p = base[0]
            memmove(base, base + 1, (got - 1) * cython.sizeof(cython.p_void))
            self.counts[idx] = got - 1
            return p
        return cls.create()

    @cython.cfunc
    @cython.exceptval(check=False)
    def push_slow(self, idx: cython.int, p: cython.p_void) -> cython.void:
        """The cache has no free room: grow it up to ``cap``, else spill half (the seed's rule)."""
        cls: SizeClass = self.st.classes[idx]
        n: cython.Py_ssize_t = self.counts[idx]
        k: cython.Py_ssize_t
        r: cython.Py_ssize_t
        base: cython.pp_void
        if n < self.cap:
            r = self.room[idx] * 2 if self.room[idx] else 8
            if r > self.cap:
                r = self.cap
            base = cython.cast(cython.pp_void, iob_cl_realloc(self.items[idx], n * cython.sizeof(cython.p_void), r * cython.sizeof(cython.p_void)))
            if base != cython.NULL:
                self.items[idx] = base
                self.room[idx] = r
                base[n] = p
                self.counts[idx] = n + 1
                return
            cls.put(p)
            return
        if self.cap < MIN_BATCH_CAPACITY:
            cls.put(p)
            return
        k = self.cap // 2
        if k > n:
            k = n
        if k < 1:
            k = 1
        base = self.items[idx]
        cls.put_batch(base + (n - k), k)  # the most recent at the end, taken first
        n -= k
        base[n] = p
        self.counts[idx] = n + 1

    @cython.cfunc
    @cython.exceptval(check=False)
    def flush(self) -> cython.void:
        i: cython.int
        n: cython.Py_ssize_t
        cls: SizeClass
        for i in range(self.num_classes):
            n = self.counts[i]
            if n:
                self.counts[i] = 0
                cls = self.st.classes[i]
                cls.put_batch(self.items[i], n)


@cython.cfunc
def new_facet(st: PoolState, cap: cython.Py_ssize_t) -> Facet:
    f: Facet = Facet.__new__(Facet)
    k: cython.int = st.num_classes if st.num_classes > 0 else 1
    f.num_classes = st.num_classes
    f.cap = cap
    # Cache-line aligned and padded: what one thread writes on every call must
    # not share a line with another thread's (false sharing on free-threaded builds).
    f.items = cython.cast(cython.pointer(cython.pp_void), iob_cl_alloc(k * cython.sizeof(cython.pp_void)))
    f.counts = cython.cast(cython.pointer(cython.Py_ssize_t), iob_cl_alloc(k * cython.sizeof(cython.Py_ssize_t)))
    f.room = cython.cast(cython.pointer(cython.Py_ssize_t), iob_cl_alloc(k * cython.sizeof(cython.Py_ssize_t)))
    if f.items == cython.NULL or f.counts == cython.NULL or f.room == cython.NULL:
        raise MemoryError()
    f.st = st
    return f


@cython.final
@cython.no_gc
@cython.cclass
class ThreadCaches:
    """The calling thread's Facets, by pool slot. Lives in the thread-state dict;
    its death (the thread's exit) flushes them and marks the thread finishing."""

    def __dealloc__(self):
        i: cython.Py_ssize_t
        if iob_tss_get() == cython.cast(cython.p_void, self):
            iob_tss_set(IOB_FINISHING)
        for i in range(self.n):
            self.drop(i)
        free(self.facets)

    @cython.cfunc
    def set_facet(self, slot: cython.Py_ssize_t, f: Facet) -> cython.int:
        n: cython.Py_ssize_t
        p: cython.pointer(cython.pointer(PyObject))
        i: cython.Py_ssize_t
        if slot >= self.n:
            n = self.n * 2 if self.n else 8
            if n <= slot:
                n = slot + 1
            p = cython.cast(cython.pointer(cython.pointer(PyObject)),
                            realloc(self.facets, n * cython.sizeof(cython.pointer(PyObject))))
            if p == cython.NULL:
                raise MemoryError()
            for i in range(self.n, n):
                p[i] = cython.NULL
            self.facets = p
            self.n = n
        self.drop(slot)
        Py_INCREF(f)
        self.facets[slot] = cython.cast(cython.pointer(PyObject), f)
        return 0

    @cython.cfunc
    @cython.exceptval(check=False)
    def drop(self, slot: cython.Py_ssize_t) -> cython.void:
        """Flush and let go of the Facet in ``slot`` (if any)."""
        p: cython.pointer(PyObject)
        if slot >= self.n:
            return
        p = self.facets[slot]
        if p == cython.NULL:
            return
        self.facets[slot] = cython.NULL
        cython.cast(Facet, p).flush()
        Py_DECREF(cython.cast(object, p))

    @cython.cfunc
    @cython.exceptval(check=False)
    def sweep(self) -> cython.void:
        """Free this thread's Facets of closed pools."""
        i: cython.Py_ssize_t
        p: cython.pointer(PyObject)
        for i in range(self.n):
            p = self.facets[i]
            if p != cython.NULL and iob_get_flag(cython.address(cython.cast(Facet, p).st.closed)):
                self.drop(i)


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def facet_of(stp: cython.pointer(PyObject)) -> cython.pointer(PyObject):
    """The calling thread's Facet (borrowed) of the PoolState ``stp`` (borrowed, so
    that no shared reference count changes on the hot path), or NULL."""
    v: cython.p_void = iob_tss_get()
    slot: cython.Py_ssize_t = cython.cast(PoolState, stp).slot
    if v == cython.NULL or v == IOB_FINISHING:
        return cython.NULL
    if slot < cython.cast(ThreadCaches, v).n:
        return cython.cast(ThreadCaches, v).facets[slot]
    return cython.NULL


@cython.cfunc
def facet_slow(st: PoolState) -> Facet:
    """The calling thread's first use of the pool: make its Facet (or a
    cache-less one while the thread exits)."""
    v: cython.p_void = iob_tss_get()
    tc: ThreadCaches
    f: Facet
    d: cython.pointer(PyObject)
    if v == IOB_FINISHING or not st.has_slot:
        return new_facet(st, 0)
    if v == cython.NULL:
        d = PyThreadState_GetDict()
        if d == cython.NULL:
            return new_facet(st, 0)
        tc = ThreadCaches.__new__(ThreadCaches)
        cython.cast(dict, d)[_CACHES_KEY] = tc
        iob_tss_set(cython.cast(cython.p_void, tc))
    else:
        tc = cython.cast(ThreadCaches, v)
    tc.sweep()
    f = new_facet(st, st.cap)
    tc.set_facet(st.slot, f)
    return f


@cython.cfunc
@cython.exceptval(check=False)
def on_return(st: PoolState, idx: cython.int, p: cython.p_void) -> cython.void:
    """Scrub and untrack a buffer coming back (scrubbing or tracking pools only)."""
    cls: SizeClass = st.classes[idx]
    if st.scrub:
        memset(p, 0, cls.size)
    if cls.origins is not None:
        try:
            cls.origins.pop(cython.cast(cython.size_t, p), None)
        except BaseException:
            pass


@cython.cfunc
@cython.exceptval(check=False)
def give_back(origin: Facet, idx: cython.int, p: cython.p_void) -> cython.void:
    """Return pooled ``p`` (nothing reaches it any more) to the calling thread's cache."""
    fp: cython.pointer(PyObject)
    f: Facet
    n: cython.Py_ssize_t
    if origin.st.slow_return:
        on_return(origin.st, idx, p)
    if iob_get_flag(cython.address(origin.st.closed)):
        cython.cast(SizeClass, origin.st.classes[idx]).put(p)  # closed: freed
        return
    fp = facet_of(cython.cast(cython.pointer(PyObject), origin.st))
    if fp != cython.NULL:
        f = cython.cast(Facet, fp)
        n = f.counts[idx]
        if n < f.room[idx]:
            f.items[idx][n] = p
            f.counts[idx] = n + 1
        else:
            f.push_slow(idx, p)
        return
    try:
        f = facet_slow(origin.st)
        n = f.counts[idx]
        if f.cap == 0:
            cython.cast(SizeClass, origin.st.classes[idx]).put(p)
        elif n < f.room[idx]:
            f.items[idx][n] = p
            f.counts[idx] = n + 1
        else:
            f.push_slow(idx, p)
        return
    except BaseException:
        pass
    cython.cast(SizeClass, origin.st.classes[idx]).put(p)


# --------------------------------------------------------------------------- pool core


@cython.cclass
class PoolCore:
    """The compiled part of ``BufferPool`` (its base class): size classes,
    thread caches and the allocation hot path. The subclass defines the hooks
    ``_bypass(capacity, length)``, ``_oversized()`` and ``_exhausted()``."""

    def __cinit__(self, *args, **kwargs):
        self.st = PoolState.__new__(PoolState)  # closed, bounds -1: every request takes a hook
        self._classes = ()

    def _core_init(self, config, cache_capacity) -> None:
        st: PoolState = PoolState.__new__(PoolState)
        cls: SizeClass
        sizes = tuple(config.class_sizes)
        track: cython.bint = bool(config.track_allocations)
        st.min_size = config.min_size
        st.max_size = config.max_size
        st.min_shift = iob_bitlen(st.min_size) - 1
        st.num_classes = len(sizes)
        st.cap = cache_capacity
        st.alignment = max(config.alignment, 1)
        st.scrub = bool(config.scrub_on_return)
        st.slow_return = st.scrub or track
        st.track = track
        st.classes = tuple([SizeClass(size, config.max_per_class, max(config.alignment, 1), track) for size in sizes])
        st.closed = 0
        if config.prefill:
            for cls in st.classes:
                cls.prefill()
        st.slot = iob_slot_take()
        st.has_slot = True
        old: PoolState = self.st
        self.st = st
        self._classes = st.classes
        self.bypass_below = config.pool_min_size
        if old is not None and old.has_slot:
            _close_state(old)

    def try_alloc(self, capacity) -> IoBufMut:
        """A pooled buffer with ``len == 0`` and ``capacity`` = the class size.

        Raises :class:`~iobuf.Oversized` above ``max_size`` and
        :class:`~iobuf.Exhausted` when the class is at ``max_per_class`` with
        nothing free. Requests below ``pool_min_size`` bypass the pool: an
        untracked aligned buffer of capacity ``max(capacity, 1)``.
        """
        return _request(self, capacity, False, False)

    def alloc(self, capacity) -> IoBufMut:
        """Like :meth:`try_alloc`, but an oversized request or an exhausted class
        gets an untracked aligned buffer of capacity ``max(capacity, min_size)``."""
        return _request(self, capacity, True, True)

    def alloc_len(self, length) -> IoBufMut:
        """:meth:`alloc` with ``len == length``; the bytes are unspecified (may be stale)."""
        m: IoBufMut = _request(self, length, True, True)
        n: cython.Py_ssize_t = _nonneg("n", length)
        if m is None:  # an overriding try_alloc (or _bypass) returned None: no fields to touch
            raise AttributeError("'NoneType' object has no attribute 'set_len'")
        if n > m._cap - m._lo:
            raise ValueError(f"set_len({n}) exceeds capacity({m._cap - m._lo})")
        m._hi = m._lo + n
        return m

    def try_alloc_zeroed(self, length) -> IoBufMut:
        """:meth:`try_alloc` with ``len == length`` and bytes ``[0, length)`` zeroed."""
        st: PoolState = self.st
        n: cython.long
        overflow: cython.int = 0
        idx: cython.int
        m: IoBufMut
        if type(length) is not int:
            length = check_size("length", length)
        n = PyLong_AsLongAndOverflow(length, cython.address(overflow))
        if overflow:
            if overflow > 0:
                raise self._oversized()
            return self._bypass(length, length)
        if n < self.bypass_below:
            return self._bypass(length, length)
        if st.track or _overrides_try_alloc(self):  # through the subclass's try_alloc (tracking)
            m = self.try_alloc(length)
            if n:  # an override may hand back None, or less room than asked: never zero past it
                if m is None:
                    raise AttributeError("'NoneType' object has no attribute 'set_len'")
                if n > m._cap - m._lo:
                    raise ValueError(f"set_len({n}) exceeds capacity({m._cap - m._lo})")
                memset(m.base + m._lo, 0, n)
                m._hi = m._lo + n
            return m
        if n <= st.min_size:
            idx = 0
        elif n > st.max_size:
            raise self._oversized()
        else:
            idx = iob_bitlen(n - 1) - st.min_shift
        m = _alloc(cython.cast(cython.pointer(PyObject), st), idx)
        if m is None:
            raise self._exhausted()
        if n:
            memset(m.base, 0, n)
            m._hi = n
        return m

    def alloc_zeroed(self, length) -> IoBufMut:
        """:meth:`try_alloc_zeroed`, falling back like :meth:`alloc` (untracked, zeroed)."""
        try:
            return self.try_alloc_zeroed(length)
        except (Oversized, Exhausted):
            buf = IoBufMut.zeroed_with_alignment(max(length, self.st.min_size), self.st.alignment)
            buf.truncate(length)
            return buf

    def _core_local_free(self) -> tuple:
        st: PoolState = self.st
        fp: cython.pointer(PyObject) = facet_of(cython.cast(cython.pointer(PyObject), st))
        i: cython.int
        if fp == cython.NULL:
            return (0,) * st.num_classes
        return tuple([cython.cast(Facet, fp).counts[i] for i in range(st.num_classes)])

    def _core_trim(self, keep) -> int:
        st: PoolState = self.st
        k: cython.Py_ssize_t = check_nonneg("keep", keep)  # a negative count would corrupt the free list
        fp: cython.pointer(PyObject)
        f: Facet = None
        i: cython.int
        n: cython.Py_ssize_t
        freed: cython.Py_ssize_t
        cls: SizeClass
        total = 0
        if iob_get_flag(cython.address(st.closed)):
            return 0
        fp = facet_of(cython.cast(cython.pointer(PyObject), st))
        if fp != cython.NULL:
            f = cython.cast(Facet, fp)
        for i in range(st.num_classes):
            cls = st.classes[i]
            if f is not None and f.counts[i]:
                n = f.counts[i]
                f.counts[i] = 0
                freed = cls.trim(f.items[i], n, k)
                if freed < 0:  # not taken (a close since the check above, or no memory): still cached
                    f.counts[i] = n
            else:
                freed = cls.trim(cython.NULL, 0, k)
            if freed > 0:
                total += freed * cls.size
        return total

    def _core_close(self) -> None:
        _close_state(self.st)

    def _core_track(self, buf, frames) -> None:
        m: IoBufMut = buf
        cls: SizeClass
        if m is None or m.raw == cython.NULL or m.origin is None:
            return
        cls = m.origin.st.classes[m.idx]
        if cls.origins is not None:
            cls.origins[cython.cast(cython.size_t, m.raw)] = (
                _time.monotonic(), _threading.current_thread().name, frames)

    def _core_origins(self) -> list:
        out = []
        cls: SizeClass
        for cls in self.st.classes:
            if cls.origins is not None:
                for address, rec in list(cls.origins.items()):
                    out.append((cls.size, address, rec[0], rec[1], rec[2]))
        return out


_CORE_TRY_ALLOC = PoolCore.try_alloc


@cython.cfunc
def _close_state(st: PoolState) -> cython.void:
    cls: SizeClass
    fp: cython.pointer(PyObject)
    v: cython.p_void
    iob_set_flag(cython.address(st.closed), 1)
    for cls in st.classes:
        cls.close()
    fp = facet_of(cython.cast(cython.pointer(PyObject), st))
    if fp != cython.NULL:
        v = iob_tss_get()
        cython.cast(ThreadCaches, v).drop(st.slot)


@cython.cfunc
def _fallback(core: PoolCore, exc, capacity) -> IoBufMut:
    """``alloc``'s answer to a refused request: PoolClosed propagates; Oversized
    and Exhausted (already counted by the hooks and classes) give an untracked
    aligned buffer of capacity ``max(capacity, min_size)``."""
    if isinstance(exc, (Oversized, Exhausted)):
        return IoBufMut.with_alignment(max(capacity, core.st.min_size), core.st.alignment)
    raise exc


@cython.cfunc
@cython.inline
def _overrides_try_alloc(core: PoolCore) -> cython.bint:
    """Whether ``type(core)`` overrides ``try_alloc`` (then alloc, alloc_len and
    the zeroed ones go through it); cached per type, one pointer compare."""
    t = type(core)
    if t is not core.seen_type:
        core.overrides = getattr(t, "try_alloc", None) is not _CORE_TRY_ALLOC
        core.seen_type = t
    return core.overrides


@cython.cfunc
def _request_tracked(core: PoolCore, capacity, fallback: cython.bint) -> IoBufMut:
    """``alloc`` on a pool whose class overrides ``try_alloc`` (the tracking pool
    records the origin there): through that method."""
    try:
        return core.try_alloc(capacity)
    except (Oversized, Exhausted):
        if not fallback:
            raise
    return IoBufMut.with_alignment(max(capacity, core.st.min_size), core.st.alignment)


@cython.cfunc
@cython.inline
def _request(core: PoolCore, capacity, fallback: cython.bint, dispatch: cython.bint) -> IoBufMut:
    n: cython.long
    overflow: cython.int = 0
    idx: cython.int
    m: IoBufMut
    if dispatch and (core.st.track or _overrides_try_alloc(core)):
        return _request_tracked(core, capacity, fallback)
    if type(capacity) is not int:
        capacity = check_size("capacity", capacity)
    n = PyLong_AsLongAndOverflow(capacity, cython.address(overflow))
    if overflow:
        if overflow > 0:
            if fallback:
                return _fallback(core, core._oversized(), capacity)
            raise core._oversized()
        return core._bypass(capacity, 0)
    if n <= core.st.min_size:
        if n < core.bypass_below:  # also every negative request
            return core._bypass(capacity, 0)
        idx = 0
    elif n > core.st.max_size:
        if fallback:
            return _fallback(core, core._oversized(), capacity)
        raise core._oversized()
    else:
        idx = iob_bitlen(n - 1) - core.st.min_shift
    m = _alloc(cython.cast(cython.pointer(PyObject), core.st), idx)
    if m is None:
        if fallback:
            return _fallback(core, core._exhausted(), capacity)
        raise core._exhausted()
    return m


@cython.cfunc
@cython.inline
def _alloc(stp: cython.pointer(PyObject), idx: cython.int) -> IoBufMut:
    """A pooled buffer of class ``idx`` of the PoolState ``stp`` (borrowed: no
    shared reference count changes here), or None if the class refuses (or the pool is closed)."""
    fp: cython.pointer(PyObject)
    f: Facet
    n: cython.Py_ssize_t
    p: cython.p_void
    m: IoBufMut
    if iob_get_flag(cython.address(cython.cast(PoolState, stp).closed)):
        return None
    fp = facet_of(stp)
    if fp == cython.NULL:
        f = facet_slow(cython.cast(PoolState, stp))
    else:
        f = cython.cast(Facet, fp)
    m = IoBufMut.__new__(IoBufMut)
    n = f.counts[idx]
    if n:
        n -= 1
        f.counts[idx] = n
        p = f.items[idx][n]
    else:
        p = f.refill(idx)
        if p == cython.NULL:
            return None
    m.base = cython.cast(cython.p_char, p)
    m.raw = m.base
    m._cap = cython.cast(PoolState, stp).min_size << idx
    m.origin = f
    m.idx = idx
    m.made = True
    return m


def flush_thread_cache() -> None:
    """Move every buffer cached by the calling thread (all pools) to the shared freelists.

    Threads do this by themselves when they exit; call it before a thread goes
    idle for long so other threads can reuse what it holds.
    """
    v: cython.p_void = iob_tss_get()
    tc: ThreadCaches
    i: cython.Py_ssize_t
    p: cython.pointer(PyObject)
    if v == cython.NULL or v == IOB_FINISHING:
        return
    tc = cython.cast(ThreadCaches, v)
    for i in range(tc.n):
        p = tc.facets[i]
        if p != cython.NULL:
            if iob_get_flag(cython.address(cython.cast(Facet, p).st.closed)):
                tc.drop(i)
            else:
                cython.cast(Facet, p).flush()


# --------------------------------------------------------------------------- memory owner


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class Block:
    """Owns one buffer's memory, shared by IoBufs (and exports). Frees or returns it in tp_dealloc."""

    def __getbuffer__(self, buffer: cython.pointer(Py_buffer), flags: cython.int):
        raise BufferError("internal object")

    def __releasebuffer__(self, buffer: cython.pointer(Py_buffer)):
        iob_dec(cython.address(self.exports))

    def __dealloc__(self):
        if self.origin is not None:
            give_back(self.origin, self.idx, self.ptr)
        elif self.kind == KIND_HEAP:
            iob_heap_free(self.ptr)
        elif self.kind == KIND_MAPPED:
            iob_mem_free(self.ptr, self.size)
        if self.has_pybuf:
            self.has_pybuf = False
            PyBuffer_Release(cython.address(self.pybuf))


_EMPTY = Block.__new__(Block)
_EMPTY.ptr = iob_empty()
iob_immortalize(cython.cast(cython.pointer(PyObject), _EMPTY))


@cython.cfunc
def heap_block(n: cython.Py_ssize_t) -> Block:
    b: Block = Block.__new__(Block)
    b.ptr = cython.cast(cython.p_char, iob_heap_alloc(n))
    if b.ptr == cython.NULL:
        raise MemoryError(f"cannot allocate {n} bytes")
    b.size = n
    b.kind = KIND_HEAP
    b.lease = True
    b.grow = True
    return b


@cython.cfunc
def aligned_block(n: cython.Py_ssize_t, align: cython.Py_ssize_t) -> Block:
    b: Block = Block.__new__(Block)
    b.ptr = cython.cast(cython.p_char, iob_heap_aligned(n, align))
    if b.ptr == cython.NULL:
        raise MemoryError(f"cannot allocate {n} bytes aligned to {align}")
    b.size = n
    b.kind = KIND_MAPPED if cython.cast(cython.size_t, n) >= IOB_MAP_MIN else KIND_HEAP
    b.lease = True
    return b


@cython.cfunc
def bytes_block(data: bytes) -> Block:
    b: Block = Block.__new__(Block)
    b.keep = data
    b.ptr = PyBytes_AS_STRING(data)
    b.size = PyBytes_GET_SIZE(data)
    return b


@cython.cfunc
def view_block(obj) -> Block:
    b: Block = Block.__new__(Block)
    iob_getbuffer(obj, cython.address(b.pybuf), PyBUF_SIMPLE)
    b.has_pybuf = True
    b.ptr = cython.cast(cython.p_char, b.pybuf.buf)
    b.size = b.pybuf.len
    return b


@cython.cfunc
def block_from_raw(m: IoBufMut) -> Block:
    b: Block = Block.__new__(Block)
    b.ptr = m.raw
    b.size = m._cap
    b.origin = m.origin
    b.idx = m.idx
    b.lease = True
    m.raw = cython.NULL  # ownership moves (nothing can fail from here)
    m.origin = None
    m.blk = b
    return b


@cython.cfunc
@cython.exceptval(check=False)
def _return_block_now(blk: Block) -> cython.void:
    origin: Facet = blk.origin
    p: cython.p_char = blk.ptr
    blk.origin = None  # the block's tp_dealloc has nothing left to return
    blk.ptr = iob_empty()
    blk.size = 0
    give_back(origin, blk.idx, p)


@cython.cfunc
@cython.exceptval(check=False)
def _fill(buffer: cython.pointer(Py_buffer), flags: cython.int, obj, p: cython.p_char,
          n: cython.Py_ssize_t, readonly: cython.bint) -> cython.int:
    buffer.buf = p
    buffer.len = n
    buffer.obj = obj
    buffer.readonly = readonly
    buffer.itemsize = 1
    buffer.ndim = 1
    buffer.format = cython.NULL
    if (flags & PyBUF_FORMAT) == PyBUF_FORMAT:
        buffer.format = iob_fmt_B()
    buffer.shape = cython.address(buffer.len) if (flags & PyBUF_ND) == PyBUF_ND else cython.NULL
    buffer.strides = cython.address(buffer.itemsize) if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else cython.NULL
    buffer.suboffsets = cython.NULL
    buffer.internal = cython.NULL
    return 0


# --------------------------------------------------------------------------- helpers


@cython.cfunc
def _nonneg(name: str, value) -> cython.Py_ssize_t:
    """``check_nonneg`` with an int fast path."""
    overflow: cython.int = 0
    v: cython.long
    if type(value) is int:
        v = PyLong_AsLongAndOverflow(value, cython.address(overflow))
        if not overflow and v >= 0:
            return v
    return check_nonneg(name, value)


def _check_alignment(alignment) -> int:
    align = check_nonneg("alignment", alignment)
    if align == 0 or align & (align - 1):
        raise ValueError(f"alignment must be a power of two, got {align}")
    return align


def _as_bytes(data, name):
    """A 1-D format-'B' memoryview of any bytes-like ``data`` (no copy when contiguous)."""
    if isinstance(data, (IoBuf, IoBufMut)):
        return data._read_view()
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(data).__name__}") from None
    if view.c_contiguous:
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    return memoryview(view.tobytes())  # strided: the bytes in order, copied


def _needle(sub) -> bytes:
    """``find``'s ``sub`` as bytes: a bytes-like object, or an int in range(256) (as ``bytes.find``)."""
    if isinstance(sub, int):  # bools included, as bytes.find
        if not 0 <= sub < 256:
            raise ValueError("byte must be in range(0, 256)")
        return bytes((sub,))
    if type(sub) is bytes:
        return sub
    return bytes(_as_bytes(sub, "sub"))


def _preview(view) -> str:
    if len(view) <= 32:
        return repr(bytes(view))
    r = repr(bytes(view[:32]))
    return r[: len(r) - 1] + "...'"


@cython.cfunc
def _equal(mine, other):
    """``__eq__`` of the readable bytes of ``mine`` (an IoBuf or IoBufMut) against
    ``other`` (NotImplemented for non-bytes-like)."""
    view: Py_buffer
    p: cython.p_char
    n: cython.Py_ssize_t
    try:
        theirs = _as_bytes(other, "other")
    except TypeError:
        return NotImplemented
    # Only now read where our bytes are: converting ``other`` allocates, and a
    # collection's finalizers may have grown, released or frozen ``mine`` meanwhile.
    if type(mine) is IoBuf:
        p = cython.cast(IoBuf, mine).base + cython.cast(IoBuf, mine)._lo
        n = cython.cast(IoBuf, mine)._hi - cython.cast(IoBuf, mine)._lo
    else:
        p = cython.cast(IoBufMut, mine).base + cython.cast(IoBufMut, mine)._lo
        n = cython.cast(IoBufMut, mine)._hi - cython.cast(IoBufMut, mine)._lo
    iob_getbuffer(theirs, cython.address(view), PyBUF_SIMPLE)
    try:
        return view.len == n and (n == 0 or memcmp(p, view.buf, n) == 0)
    finally:
        PyBuffer_Release(cython.address(view))


@cython.cfunc
def _get_src(data, view: cython.pointer(Py_buffer)) -> cython.int:
    """A simple buffer of bytes-like ``data`` in ``view`` (``_as_bytes`` rules and messages).
    Our own buffers are read as ``_read_view`` reads them: not counted as handed-out views."""
    if type(data) is IoBuf:
        cython.cast(IoBuf, data).quiet = True
        try:
            iob_getbuffer(data, view, PyBUF_SIMPLE)
        finally:
            cython.cast(IoBuf, data).quiet = False
        return 0
    if type(data) is IoBufMut:
        cython.cast(IoBufMut, data).quiet = True
        try:
            iob_getbuffer(data, view, PyBUF_SIMPLE)
        finally:
            cython.cast(IoBufMut, data).quiet = False
        return 0
    try:
        iob_getbuffer(data, view, PyBUF_SIMPLE)
        return 0
    except Exception:
        pass
    src = _as_bytes(data, "data")
    iob_getbuffer(src, view, PyBUF_SIMPLE)
    return 0


# --------------------------------------------------------------------------- IoBufMut


@cython.cfunc
def new_mut() -> IoBufMut:
    m: IoBufMut = IoBufMut.__new__(IoBufMut)
    m.made = True
    return m


@cython.cfunc
def mut_over(blk: Block, length: cython.Py_ssize_t) -> IoBufMut:
    m: IoBufMut = new_mut()
    m.blk = blk
    m.base = blk.ptr
    m._cap = blk.size
    m._hi = length
    m.grow = blk.grow
    return m


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class IoBufMut:
    """A mutable byte buffer with one owner: pooled, aligned, or growable heap memory."""

    def __cinit__(self):
        self.base = iob_empty()

    def __init__(self, data=b"") -> None:
        view: Py_buffer
        if self.made:
            raise TypeError("IoBufMut.__init__ cannot re-initialise an existing buffer")
        _get_src(data, cython.address(view))
        try:
            blk: Block = heap_block(view.len)
            memcpy(blk.ptr, view.buf, view.len)
        finally:
            PyBuffer_Release(cython.address(view))
        self.blk = blk
        self.base = blk.ptr
        self._cap = blk.size
        self._hi = blk.size
        self.grow = True
        self.made = True

    def __dealloc__(self):
        if self.raw != cython.NULL:
            give_back(self.origin, self.idx, self.raw)

    # -- constructors --------------------------------------------------------

    @classmethod
    def with_capacity(cls, capacity) -> IoBufMut:
        """An empty growable heap buffer with room for ``capacity`` bytes."""
        n: cython.Py_ssize_t = _nonneg("capacity", capacity)
        return mut_over(heap_block(n), 0)

    @classmethod
    def zeroed(cls, length) -> IoBufMut:
        """A growable heap buffer holding ``length`` zero bytes."""
        n: cython.Py_ssize_t = _nonneg("length", length)
        return mut_over(heap_block(n), n)

    @classmethod
    def with_alignment(cls, capacity, alignment) -> IoBufMut:
        """An empty fixed-capacity untracked buffer whose base is a multiple of ``alignment``.

        ``capacity == 0`` gives an empty growable heap buffer, as in the seed.
        """
        n: cython.Py_ssize_t = _nonneg("capacity", capacity)
        align: cython.Py_ssize_t = _check_alignment(alignment)
        if n == 0:
            return mut_over(heap_block(0), 0)
        return mut_over(aligned_block(n, align), 0)

    @classmethod
    def zeroed_with_alignment(cls, length, alignment) -> IoBufMut:
        """A fixed-capacity untracked aligned buffer of ``length`` zero bytes."""
        n: cython.Py_ssize_t = _nonneg("length", length)
        align: cython.Py_ssize_t = _check_alignment(alignment)
        if n == 0:
            return mut_over(heap_block(0), 0)
        return mut_over(aligned_block(n, align), n)

    # -- size and identity ---------------------------------------------------

    def __len__(self) -> cython.Py_ssize_t:
        return self._hi - self._lo

    def __bool__(self) -> bool:
        return self._hi > self._lo

    @property
    def capacity(self) -> int:
        """Bytes this buffer can hold from its read cursor without growing."""
        return self._cap - self._lo

    @property
    def is_pooled(self) -> bool:
        """True only for memory tracked by a pool (it returns there when dropped)."""
        return self.raw != cython.NULL or (self.blk is not None and self.blk.origin is not None)

    @property
    def address(self) -> int:
        """Address of the first readable byte (0 when the buffer has no memory)."""
        if self._cap == 0:
            return 0
        return cython.cast(cython.size_t, self.base + self._lo)

    # -- ownership -------------------------------------------------------------

    @cython.cfunc
    def share(self) -> Block:
        if self.exported and self.blk is not None:
            self.blk.exported = True
        if self.blk is None:
            if self.raw != cython.NULL:
                return block_from_raw(self)
            b: Block = Block.__new__(Block)  # detached: an empty lease
            b.ptr = iob_empty()
            b.lease = True
            self.blk = b
            self.base = b.ptr
        return self.blk

    @cython.cfunc
    def ready_pins(self) -> cython.int:
        """Before a change that may pin the memory: make the pins list first.
        Making it may run a collection whose finalizers use this very buffer
        (grow it, export it), so it must not come between reading the state
        and acting on it; appending to it later runs no Python code."""
        fresh: list
        if self.pins is None and iob_load(cython.address(self._exports)):
            fresh = []
            if self.pins is None:
                self.pins = fresh
        return 0

    @cython.cfunc
    def pin(self) -> cython.int:
        """Keep ``blk`` alive until the last export goes (after ``ready_pins``)."""
        if self.pins is None:
            self.pins = [self.blk]
        else:
            self.pins.append(self.blk)
        return 0

    @cython.cfunc
    def detach(self, growable: cython.bint) -> cython.int:
        """Let go of the memory (returning owned pooled memory); live exports keep it."""
        fresh: Block = heap_block(0) if growable else None
        raw: cython.p_void
        if iob_load(cython.address(self._exports)):
            self.ready_pins()
        if iob_load(cython.address(self._exports)):
            if self.raw != cython.NULL:
                block_from_raw(self)
            if self.blk is not None:
                self.pin()
        raw = self.raw
        origin: Facet = self.origin
        self.exported = False
        self.raw = cython.NULL
        self.origin = None
        self._lo = 0
        self._hi = 0
        self.grow = growable
        old: Block = self.blk
        self.blk = fresh
        if fresh is not None:
            self.base = fresh.ptr
        else:
            self.base = iob_empty()
        self._cap = 0
        if raw != cython.NULL:
            give_back(origin, self.idx, raw)
        old = None  # may return a sole-owned pooled block
        return 0

    @cython.cfunc
    def reserve(self, extra: cython.Py_ssize_t) -> cython.int:
        """Make room for ``extra`` more bytes, growing a heap buffer by reallocation."""
        readable: cython.Py_ssize_t
        new_cap: cython.Py_ssize_t
        nb: Block
        if extra <= self._cap - self._hi:
            return 0
        if not self.grow:
            if self.raw == cython.NULL and self.blk is None:
                raise ValueError(_DETACHED_MSG)
            raise ValueError(
                f"{extra} more bytes exceed the fixed capacity ({self._cap - self._lo}, {self._hi - self._lo} used)"
            )
        self.ready_pins()
        readable = self._hi - self._lo
        new_cap = max(readable + extra, 2 * (self._cap - self._lo), 64)
        nb = heap_block(new_cap)
        memcpy(nb.ptr, self.base + self._lo, readable)
        # Views handed out earlier keep the old memory alive; they stop aliasing.
        if iob_load(cython.address(self._exports)) and self.blk is not None:
            self.pin()
        self.blk = nb
        self.exported = False
        self.base = nb.ptr
        self._cap = new_cap
        self._lo = 0
        self._hi = readable
        return 0

    @property
    def _grow(self) -> bool:
        """Internal: whether a write past the capacity reallocates (heap memory)."""
        return self.grow

    def _read_view(self) -> memoryview:
        """Internal: the readable bytes, for use within one call only."""
        self.quiet = True
        try:
            return PyMemoryView_FromObject(self)
        finally:
            self.quiet = False

    # -- writing ---------------------------------------------------------------

    def put_slice(self, data) -> None:
        """Append ``data``. A fixed-capacity buffer raises ``ValueError`` and writes nothing
        if it does not fit; a heap buffer grows."""
        view: Py_buffer
        _get_src(data, cython.address(view))
        try:
            if view.len:
                self.reserve(view.len)
                memmove(self.base + self._hi, view.buf, view.len)
                self._hi += view.len
        finally:
            PyBuffer_Release(cython.address(view))

    def spare_capacity(self) -> memoryview:
        """A writable memoryview of ``[len, capacity)``, e.g. for ``recv_into``/``readinto``."""
        self.spare = True
        try:
            return PyMemoryView_FromObject(self)
        finally:
            self.spare = False

    def advance_mut(self, n) -> None:
        """Mark ``n`` bytes written into :meth:`spare_capacity` as readable."""
        count: cython.Py_ssize_t = _nonneg("n", n)
        if count > self._cap - self._hi:
            raise ValueError(
                f"cannot advance past end of buffer: advance_mut({count}) with "
                f"{self._cap - self._hi} bytes of spare capacity"
            )
        self._hi += count

    def set_len(self, n) -> None:
        """Set the readable length to ``n`` (<= capacity); new bytes hold whatever was there."""
        length: cython.Py_ssize_t = _nonneg("n", n)
        if length > self._cap - self._lo:
            raise ValueError(f"set_len({length}) exceeds capacity({self._cap - self._lo})")
        self._hi = self._lo + length

    def truncate(self, n) -> None:
        """Keep only the first ``n`` readable bytes (no-op if ``n >= len``)."""
        length: cython.Py_ssize_t = _nonneg("n", n)
        if length < self._hi - self._lo:
            self._hi = self._lo + length

    def clear(self) -> None:
        """Drop every readable byte, keeping the capacity."""
        self._hi = self._lo

    # -- reading -----------------------------------------------------------------

    def remaining(self) -> int:
        """Readable bytes (same as ``len``)."""
        return self._hi - self._lo

    def chunk(self) -> memoryview:
        """The readable bytes as one writable memoryview (same as :meth:`as_memoryview`)."""
        return PyMemoryView_FromObject(self)

    def as_memoryview(self) -> memoryview:
        """A writable memoryview of the readable bytes; it keeps pooled memory out of the pool."""
        return PyMemoryView_FromObject(self)

    def advance(self, n) -> None:
        """Consume ``n`` readable bytes from the front."""
        count: cython.Py_ssize_t = _nonneg("n", n)
        if count > self._hi - self._lo:
            raise ValueError(
                f"cannot advance past end of buffer: advance({count}) with {self._hi - self._lo} readable")
        self._lo += count

    def copy_to_bytes(self, n) -> IoBuf:
        """Split off the first ``n`` readable bytes as an :class:`IoBuf`, without copying."""
        count: cython.Py_ssize_t = _nonneg("n", n)
        readable: cython.Py_ssize_t = self._hi - self._lo
        start: cython.Py_ssize_t = self._lo
        if count > readable:
            raise ValueError(f"copy_to_bytes out of bounds: {count} > {readable} readable")
        if count == 0:
            return new_iobuf(_EMPTY, 0, 0)
        blk: Block = self.share()
        out: IoBuf = new_iobuf(blk, start, start + count)
        if count == readable:
            self.detach(True)
        else:
            self._lo = start + count
        return out

    def freeze(self) -> IoBuf:
        """An immutable :class:`IoBuf` of the readable bytes, without copying.

        This buffer is left empty and detached: writes to it raise ``ValueError``.
        """
        blk: Block = self.share()
        out: IoBuf = IoBuf.__new__(IoBuf)  # keeps the memory even when empty (as the seed)
        out.blk = blk
        out.base = blk.ptr
        out._lo = self._lo
        out._hi = self._hi
        blk.grow = self.grow
        self.detach(False)
        return out

    # -- explicit release --------------------------------------------------------

    def release(self) -> None:
        """Give the memory back now, in the calling thread, and leave this buffer
        empty and detached. For pooled memory, ``BufferError`` (nothing changes)
        while a memoryview or array of it is alive; memory shared with IoBufs,
        or untracked, is only let go of (its holders and views keep it)."""
        p: cython.p_void
        ex: cython.Py_ssize_t
        if self.raw != cython.NULL:
            if iob_load(cython.address(self._exports)):
                raise BufferError(_VIEWS_ALIVE)
            self.detach(False)
        elif self.blk is not None and self.blk.origin is not None:
            ex = iob_load(cython.address(self.blk.exports))
            if iob_refcnt(cython.cast(cython.pointer(PyObject), self.blk)) - ex > 1:
                self.detach(False)  # other holders keep the memory
                return
            if ex or iob_load(cython.address(self._exports)):
                raise BufferError(_VIEWS_ALIVE)
            _return_block_now(self.blk)
            self.detach(False)
        elif self.raw != cython.NULL or self.blk is not None:
            self.detach(False)

    def __enter__(self) -> IoBufMut:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    # -- Python protocols ------------------------------------------------------

    def __getbuffer__(self, buffer: cython.pointer(Py_buffer), flags: cython.int):
        # The IoBufMut is its own exporter: its memory cannot go while it lives,
        # and it lives while any view does (see the module notes).
        if self.spare:
            _fill(buffer, flags, self, self.base + self._hi, self._cap - self._hi, False)
        else:
            _fill(buffer, flags, self, self.base + self._lo, self._hi - self._lo, False)
        iob_inc(cython.address(self._exports))
        if self.raw == cython.NULL and not self.quiet:
            self.exported = True  # untracked memory: try_into_mut refuses it from now on

    def __releasebuffer__(self, buffer: cython.pointer(Py_buffer)):
        iob_dec(cython.address(self._exports))
        if self.pins is not None and iob_load(cython.address(self._exports)) == 0:
            self.pins = None  # the memory they kept is unreachable now

    def __bytes__(self) -> bytes:
        return PyBytes_FromStringAndSize(self.base + self._lo, self._hi - self._lo)

    def __eq__(self, other) -> bool:
        return _equal(self, other)

    def __ne__(self, other) -> bool:
        r = _equal(self, other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __copy__(self) -> IoBufMut:
        """A growable heap copy of the readable bytes: a pooled buffer has one owner."""
        return IoBufMut(self._read_view())

    def __deepcopy__(self, memo) -> IoBufMut:
        return IoBufMut(self._read_view())

    def __reduce__(self):
        return (IoBufMut, (bytes(self),))

    def __repr__(self) -> str:
        kind = "pooled" if self.is_pooled else ("heap" if self.grow else "fixed")
        return (
            f"IoBufMut(len={len(self)}, capacity={self.capacity}, {kind}, data={_preview(self._read_view())})"
        )


# --------------------------------------------------------------------------- IoBuf


@cython.cfunc
@cython.inline
def new_iobuf(blk: Block, start: cython.Py_ssize_t, end: cython.Py_ssize_t) -> IoBuf:
    o: IoBuf = IoBuf.__new__(IoBuf)
    if start == end:
        blk = _EMPTY
        start = end = 0
    o.blk = blk
    o.base = blk.ptr
    o._lo = start
    o._hi = end
    return o


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class IoBuf:
    """An immutable view of bytes; cheap to clone and slice (neither copies)."""

    def __cinit__(self):
        self.blk = _EMPTY
        self.base = _EMPTY.ptr

    def __init__(self, data=b"") -> None:
        if type(data) is not bytes:
            data = bytes(_as_bytes(data, "data"))
        blk: Block = bytes_block(data)
        self.blk = blk
        self.base = blk.ptr
        self._lo = 0
        self._hi = blk.size

    @classmethod
    def copy_from_slice(cls, data) -> IoBuf:
        """An IoBuf holding a copy of ``data`` (always copies, even ``bytes``)."""
        copied = bytes(_as_bytes(data, "data"))
        blk: Block = bytes_block(copied)
        o: IoBuf = IoBuf.__new__(IoBuf)
        o.blk = blk
        o.base = blk.ptr
        o._hi = blk.size
        return o

    # -- size and identity -----------------------------------------------------

    def __len__(self) -> cython.Py_ssize_t:
        return self._hi - self._lo

    def __bool__(self) -> bool:
        return self._hi > self._lo

    # The window [_start, _end) of the memory; package-internal and writable
    # (``_chain`` advances ``_start``). Every read and write trusts it, so a value
    # that would reach outside the memory is refused, never stored.
    @property
    def _start(self) -> int:
        return self._lo

    @_start.setter
    def _start(self, value: cython.Py_ssize_t) -> None:
        if value < 0 or value > self._hi:
            raise ValueError(f"_start must be in [0, {self._hi}], got {value}")
        self._lo = value

    @property
    def _end(self) -> int:
        return self._hi

    @_end.setter
    def _end(self, value: cython.Py_ssize_t) -> None:
        if value < self._lo or value > self.blk.size:
            raise ValueError(f"_end must be in [{self._lo}, {self.blk.size}], got {value}")
        self._hi = value

    @property
    def is_pooled(self) -> bool:
        """True only for memory tracked by a pool."""
        return self.blk.origin is not None

    @property
    def address(self) -> int:
        """Address of the first readable byte (0 for an empty, detached IoBuf)."""
        if self.blk.size == 0 or (self._hi == self._lo and not self.blk.lease):
            return 0
        return cython.cast(cython.size_t, self.base + self._lo)

    # -- views -----------------------------------------------------------------

    def _read_view(self) -> memoryview:
        self.quiet = True
        try:
            return PyMemoryView_FromObject(self)
        finally:
            self.quiet = False

    def as_memoryview(self) -> memoryview:
        """A read-only memoryview of the bytes; it keeps pooled memory out of the pool."""
        keep = self.blk.keep
        if keep is not None and type(keep) is bytes:  # a view of the wrapped bytes object itself
            return PyMemoryView_FromObject(keep)[self._lo:self._hi]
        return PyMemoryView_FromObject(self)

    def chunk(self) -> memoryview:
        """The readable bytes as one read-only memoryview (same as :meth:`as_memoryview`)."""
        return PyMemoryView_FromObject(self)

    def remaining(self) -> int:
        """Readable bytes (same as ``len``)."""
        return self._hi - self._lo

    def advance(self, n) -> None:
        """Consume ``n`` bytes from the front."""
        count: cython.Py_ssize_t = _nonneg("n", n)
        if count > self._hi - self._lo:
            raise ValueError(
                f"cannot advance past end of buffer: advance({count}) with {self._hi - self._lo} readable")
        self._lo += count

    @cython.cfunc
    @cython.exceptval(check=False)
    def _set_detached(self) -> cython.void:
        self.blk = _EMPTY
        self.base = _EMPTY.ptr
        self._lo = 0
        self._hi = 0

    # -- zero-copy splitting ------------------------------------------------------

    def slice(self, start, stop) -> IoBuf:
        """The bytes ``[start, stop)`` of this view as a new IoBuf (no copy)."""
        a: cython.Py_ssize_t = _nonneg("start", start)
        b: cython.Py_ssize_t = _nonneg("stop", stop)
        length: cython.Py_ssize_t = self._hi - self._lo
        if a > b:
            raise ValueError(f"slice start must be <= stop, got {a} > {b}")
        if b > length:
            raise ValueError(f"slice out of bounds: stop {b} > len {length}")
        return new_iobuf(self.blk, self._lo + a, self._lo + b)

    def __getitem__(self, key):
        start: cython.Py_ssize_t
        stop: cython.Py_ssize_t
        step: cython.Py_ssize_t
        n: cython.Py_ssize_t
        i: cython.long
        overflow: cython.int = 0
        # The length is read only after the key is converted: a slice's
        # __index__ (or an int subclass's operators) may run Python code that
        # advances or releases this view.
        if PySlice_Check(key):
            iob_slice_unpack(key, cython.address(start), cython.address(stop), cython.address(step))
            n = self._hi - self._lo
            PySlice_AdjustIndices(n, cython.address(start), cython.address(stop), step)
            if step != 1:
                raise ValueError(f"IoBuf slices need step 1, got {step}")
            if stop <= start:
                return new_iobuf(_EMPTY, 0, 0)
            return new_iobuf(self.blk, self._lo + start, self._lo + stop)
        if isinstance(key, int) and not isinstance(key, bool):
            i = PyLong_AsLongAndOverflow(key, cython.address(overflow))  # no Python code for an int
            n = self._hi - self._lo
            if i < 0:
                i += n
            if overflow or not 0 <= i < n:
                raise IndexError(f"IoBuf index {key} out of range for length {n}")
            return cython.cast(cython.uchar, self.base[self._lo + i])
        raise TypeError(f"IoBuf indices must be int or slice, not {type(key).__name__}")

    def split_to(self, at) -> IoBuf:
        """Remove and return the first ``at`` bytes; this view keeps the rest."""
        n: cython.Py_ssize_t = _nonneg("at", at)
        length: cython.Py_ssize_t = self._hi - self._lo
        start: cython.Py_ssize_t = self._lo
        if n > length:
            raise ValueError(f"split_to out of bounds: {n} <= {length} does not hold")
        if n == 0:
            return new_iobuf(_EMPTY, 0, 0)
        out: IoBuf = new_iobuf(self.blk, start, start + n)
        if n == length:
            self._set_detached()
        else:
            self._lo = start + n
        return out

    def copy_to_bytes(self, n) -> IoBuf:
        """Take the first ``n`` bytes as an IoBuf (no copy), advancing this view."""
        count: cython.Py_ssize_t = _nonneg("n", n)
        length: cython.Py_ssize_t = self._hi - self._lo
        if count > length:
            raise ValueError(f"copy_to_bytes out of bounds: {count} > {length} readable")
        return self.split_to(count)

    def clone(self) -> IoBuf:
        """Another view of the same bytes with its own cursor (no copy)."""
        return new_iobuf(self.blk, self._lo, self._hi)

    def __copy__(self) -> IoBuf:
        return new_iobuf(self.blk, self._lo, self._hi)

    def __deepcopy__(self, memo) -> IoBuf:
        return IoBuf(bytes(self))

    def __reduce__(self):
        return (IoBuf, (bytes(self),))

    # -- explicit release ----------------------------------------------------------------

    def release(self) -> None:
        """Let go of this view's share of the memory now and leave it empty.

        When it is the last share of a pooled buffer, the buffer goes back to
        the calling thread's cache at once; ``BufferError`` (nothing changes)
        while a memoryview or array of the memory is alive.
        """
        ex: cython.Py_ssize_t
        if self.blk.origin is not None:
            ex = iob_load(cython.address(self.blk.exports))
            if iob_refcnt(cython.cast(cython.pointer(PyObject), self.blk)) - ex <= 1:
                if ex:
                    raise BufferError(_VIEWS_ALIVE)
                _return_block_now(self.blk)
        self._set_detached()

    def __enter__(self) -> IoBuf:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    # -- back to mutable -------------------------------------------------------------

    def try_into_mut(self):
        """An IoBufMut over the same memory, if this view is the only thing reaching it; else None."""
        if not self.blk.lease or (self.blk.exported and self.blk.origin is None):
            return None  # bytes-backed; or untracked memory that handed out views (conservative)
        m: IoBufMut = new_mut()  # allocate before counting
        if iob_refcnt(cython.cast(cython.pointer(PyObject), self.blk)) != 1:
            return None  # another owner, a pin or a live export
        if self.blk.origin is not None:
            m.raw = self.blk.ptr
            m.base = m.raw
            m._cap = self.blk.size
            m.origin = self.blk.origin
            m.idx = self.blk.idx
            self.blk.origin = None
            self.blk.ptr = iob_empty()
            self.blk.size = 0
        else:
            m.blk = self.blk
            m.base = self.blk.ptr
            m._cap = self.blk.size
            m.grow = self.blk.grow
        m._lo = self._lo
        m._hi = self._hi
        self._set_detached()
        return m

    def into_mut(self) -> IoBufMut:
        """:meth:`try_into_mut`, or else a growable heap copy. This IoBuf is left empty."""
        out = self.try_into_mut()
        if out is None:
            out = IoBufMut(self._read_view())
            self._set_detached()
        return out

    def into_mut_with_pool(self, pool) -> IoBufMut:
        """:meth:`try_into_mut`, or else a copy into ``pool.alloc(len)``. This IoBuf is left empty."""
        from iobuf._pool import BufferPool

        if not isinstance(pool, BufferPool):
            raise TypeError(f"pool must be a BufferPool, not {type(pool).__name__}")
        out = self.try_into_mut()
        if out is None:
            out = pool.alloc(len(self))
            out.put_slice(self._read_view())
            self._set_detached()
        return out

    # -- Python protocols ---------------------------------------------------------------

    def __getbuffer__(self, buffer: cython.pointer(Py_buffer), flags: cython.int):
        if (flags & PyBUF_WRITABLE) == PyBUF_WRITABLE:
            raise BufferError("Object is not writable.")
        _fill(buffer, flags, self.blk, self.base + self._lo, self._hi - self._lo, True)
        iob_inc(cython.address(self.blk.exports))
        if not self.quiet and self.blk.lease and self.blk.origin is None:
            self.blk.exported = True  # untracked memory: try_into_mut refuses it from now on

    def __releasebuffer__(self, buffer: cython.pointer(Py_buffer)):
        # Never called: an export's ``obj`` is the Block, whose release counts it.
        # Defining it tells consumers that hold the exporter instead of the view
        # (numpy.frombuffer keeps ``obj`` and releases the view at once unless the
        # type has bf_releasebuffer) to keep a memoryview, i.e. a counted export:
        # else the array pins nothing once this IoBuf is released or moved on.
        pass

    def find(self, sub, start=None, end=None) -> int:
        """The lowest index of ``sub`` in this view's bytes ``[start:end]``, or -1, as ``bytes.find``."""
        needle: bytes = _needle(sub)
        # Indices are converted before the window is read: __index__ may run
        # Python code that moves this view.
        a: cython.Py_ssize_t = 0 if start is None else PyNumber_AsSsize_t(start, cython.NULL)
        b: cython.Py_ssize_t = PY_SSIZE_T_MAX if end is None else PyNumber_AsSsize_t(end, cython.NULL)
        lo: cython.Py_ssize_t = self._lo
        n: cython.Py_ssize_t = self._hi - lo
        # bytes.find's index rules: negatives count from the end; ``end`` is
        # clamped to the length, ``start`` is not (past the end: nothing found).
        if b > n:
            b = n
        elif b < 0:
            b = max(b + n, 0)
        if a < 0:
            a = max(a + n, 0)
        m: cython.Py_ssize_t = PyBytes_GET_SIZE(needle)
        if b - a < m:
            return -1
        if m == 0:
            return a
        p: cython.p_char = self.base + lo
        hit: cython.p_void
        if m == 1:
            hit = memchr(p + a, cython.cast(cython.uchar, PyBytes_AS_STRING(needle)[0]), b - a)
        else:
            hit = memmem(p + a, b - a, PyBytes_AS_STRING(needle), m)
        if hit == cython.NULL:
            return -1
        return cython.cast(cython.p_char, hit) - p

    def compact(self) -> IoBuf:
        """These bytes in memory of exactly their size: ``self`` when the view
        already spans all of its memory, else a copy on the heap.

        Keep the result instead of a small view of a large buffer: the large
        buffer goes back to its pool once nothing else views it.
        """
        n: cython.Py_ssize_t = self._hi - self._lo
        if n == 0:
            return new_iobuf(_EMPTY, 0, 0)
        if self._lo == 0 and self._hi == self.blk.size:
            return self
        return new_iobuf(bytes_block(PyBytes_FromStringAndSize(self.base + self._lo, n)), 0, n)

    def __bytes__(self) -> bytes:
        return PyBytes_FromStringAndSize(self.base + self._lo, self._hi - self._lo)

    def __eq__(self, other) -> bool:
        return _equal(self, other)

    def __ne__(self, other) -> bool:
        r = _equal(self, other)
        return r if r is NotImplemented else not r

    def __hash__(self) -> int:
        return hash(bytes(self))

    def __repr__(self) -> str:
        kind = "pooled" if self.is_pooled else "unpooled"
        return f"IoBuf(len={len(self)}, {kind}, data={_preview(self._read_view())})"


# --------------------------------------------------------------------------- package-internal helpers


def _iobuf(mv, start, end, own=None) -> IoBuf:
    """An IoBuf over ``mv[start:end]`` of plain memory (``own`` must be None)."""
    if own is not None:
        raise TypeError("the compiled core's _iobuf takes no owner")
    blk: Block = bytes_block(mv) if type(mv) is bytes else view_block(mv)
    s: cython.Py_ssize_t = start
    e: cython.Py_ssize_t = end
    if s < 0 or e < s or e > blk.size:
        raise ValueError(f"_iobuf window [{s}, {e}) out of range for {blk.size} bytes")
    o: IoBuf = IoBuf.__new__(IoBuf)
    o.blk = blk
    o.base = blk.ptr
    o._lo = s
    o._hi = e
    return o


def _empty_iobuf() -> IoBuf:
    return new_iobuf(_EMPTY, 0, 0)


def split_filled(buf: IoBufMut) -> IoBuf:
    """Split ``buf``'s readable bytes off as an IoBuf sharing its memory; ``buf``
    keeps its spare capacity and stays writable past them."""
    start: cython.Py_ssize_t = buf._lo
    end: cython.Py_ssize_t = buf._hi
    if start == end:
        return new_iobuf(_EMPTY, 0, 0)
    blk: Block = buf.share()
    out: IoBuf = new_iobuf(blk, start, end)
    buf._lo = end
    return out


def commit_received(buf: IoBufMut, n, chunks) -> bool:
    """The receive path's commit: mark ``n`` bytes written into ``buf``'s spare
    capacity readable and split them off onto the end of ``chunks`` (a deque
    of IoBufs that only its owner holds) as a view sharing ``buf``'s memory,
    extending the last chunk in place when it ends where they start. True
    when ``buf`` has no spare capacity left."""
    count: cython.Py_ssize_t = _nonneg("n", n)
    if count > buf._cap - buf._hi:
        raise ValueError(  # as advance_mut's (the pure core's commit is advance_mut)
            f"cannot advance past end of buffer: advance_mut({count}) with "
            f"{buf._cap - buf._hi} bytes of spare capacity"
        )
    if count:
        buf._hi += count
        blk: Block = buf.share()
        start: cython.Py_ssize_t = buf._lo
        end: cython.Py_ssize_t = buf._hi
        last: IoBuf
        if chunks:
            last = chunks[len(chunks) - 1]  # (wraparound is off: no negative indices)
            if last.blk is blk and blk.lease and last._hi == start:
                last._hi = end
                buf._lo = end
                return buf._hi == buf._cap
        chunks.append(new_iobuf(blk, start, end))
        buf._lo = end
    return buf._hi == buf._cap


def reclaim_received(buf: IoBufMut) -> bool:
    """The receive path's reuse of a drained buffer: when every byte committed
    to pooled ``buf`` was split off and nothing but ``buf`` reaches its memory
    (no IoBuf on it, no live export of it or of one), rewind ``buf`` so its
    whole capacity is spare again, and return True; else change nothing and
    return False. Between the count and the stores nothing allocates."""
    if buf.blk is None or buf._lo != buf._hi or buf.blk.origin is None:
        return False
    if iob_refcnt(cython.cast(cython.pointer(PyObject), buf.blk)) != 1:
        return False  # an IoBuf on the memory, a live export of one, or a pin
    if iob_load(cython.address(buf._exports)):
        return False  # a live export of buf itself (its spare room, say)
    buf._lo = 0
    buf._hi = 0
    return True


def take_front(chunks, n, copy_max: cython.Py_ssize_t):
    """The first ``n`` bytes of a chain's chunks (a deque of non-empty IoBufs),
    taken from it, when they lie in its first chunk: copied into a right-sized
    heap buffer when ``n <= copy_max`` (so what a caller keeps pins no
    receive buffer), else a view of the chunk. A drained chunk is removed.
    None, changing nothing, when the first chunk holds fewer than ``n`` bytes
    or ``n`` is not an int >= 0; the caller updates its cached length."""
    count: cython.Py_ssize_t
    if type(n) is not int or n < 0 or n > PY_SSIZE_T_MAX:
        return None
    count = n
    if count == 0:
        return new_iobuf(_EMPTY, 0, 0)
    if not chunks:
        return None
    first: IoBuf = chunks[0]
    start: cython.Py_ssize_t = first._lo
    avail: cython.Py_ssize_t = first._hi - start
    if count > avail:
        return None
    out: IoBuf
    if count <= copy_max:
        out = new_iobuf(bytes_block(PyBytes_FromStringAndSize(first.base + start, count)), 0, count)
    else:
        out = new_iobuf(first.blk, start, start + count)
    if count == avail:
        chunks.popleft()
    else:
        first._lo = start + count
    return out


def sendable(buf: IoBuf):
    """What a transport is handed for ``buf``: the ``bytes`` object it wraps
    whole (no view to make, and bytes are what transports take fastest), else
    a read-only memoryview of its bytes (``b""`` when empty, as on the pure core)."""
    if buf._hi == buf._lo:
        return b""
    keep = buf.blk.keep
    if type(keep) is bytes and buf._lo == 0 and buf._hi == PyBytes_GET_SIZE(keep):
        return keep
    return buf.as_memoryview()


def join_adjacent(first: IoBuf, second: IoBuf):
    """One IoBuf covering ``first`` then ``second`` if they are adjacent ranges of
    one shared buffer (as :func:`split_filled` produces), else None. No copy."""
    if not first.blk.lease or first.blk is not second.blk or first._hi != second._lo:
        return None
    return new_iobuf(first.blk, first._lo, second._hi)


if iob_key_init() != 0:
    raise MemoryError("iobuf._core: cannot create its thread-local key")
if iob_install_atfork() != 0:
    raise OSError("iobuf._core: pthread_atfork failed")
