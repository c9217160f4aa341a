# cython: freethreading_compatible=True
"""Spike: compiled core for iobuf in Cython pure-Python mode (declarations in core_c.pxd).

Ownership:
  * IoBufMut owns its memory directly (``raw``) from try_alloc until it is
    shared (freeze / first buffer export / split); then a refcounted ``Block``
    owns it and the IoBufMut, every IoBuf and every exported Py_buffer
    (``view.obj = block``) hold the Block.
  * Block.__dealloc__ (tp_dealloc: cannot be resurrected) and IoBufMut.__dealloc__
    (raw state) return memory to the *calling* thread's cache.
  * Block.exports counts live exports (incremented in the exporter's
    __getbuffer__, decremented by Block.__releasebuffer__), so
    ``refcount(block) - exports`` = number of owners (IoBuf/IoBufMut shares).
Thread caches: one Py_tss_t key per pool -> the thread's Facet (borrowed);
a _Guard in the thread-state dict owns the Facet and flushes it at thread exit.
"""
from __future__ import annotations

import cython



class PoolError(Exception):
    pass


class Oversized(PoolError):
    def __init__(self) -> None:
        super().__init__("requested capacity exceeds maximum buffer size")


class Exhausted(PoolError):
    def __init__(self) -> None:
        super().__init__("pool exhausted for required size class")


class PoolClosed(PoolError):
    def __init__(self) -> None:
        super().__init__("pool is closed")


# --------------------------------------------------------------------------- size class


@cython.final
@cython.cclass
class SizeClass:
    def __cinit__(self, size: cython.Py_ssize_t, max_buffers: cython.Py_ssize_t, alignment: cython.size_t):
        self.size = size
        self.max_buffers = max_buffers
        self.alignment = alignment
        self.free_items = cython.cast(cython.pp_void, calloc(max_buffers if max_buffers > 0 else 1, cython.sizeof(cython.p_void)))
        if self.free_items == cython.NULL:
            raise MemoryError()

    @cython.cfunc
    @cython.exceptval(check=False)
    def create(self) -> cython.p_void:
        p: cython.p_void = cython.NULL
        with self.lock:
            if self.closed or self.created >= self.max_buffers:
                self.exhausted += 1
                return cython.NULL
            self.created += 1
        if posix_memalign(cython.address(p), self.alignment, self.size) != 0:
            with self.lock:
                self.created -= 1
            return cython.NULL
        return p

    @cython.cfunc
    @cython.exceptval(check=False)
    def take(self) -> cython.p_void:
        p: cython.p_void = cython.NULL
        with self.lock:
            if self.n_free:
                self.n_free -= 1
                p = self.free_items[self.n_free]
        return p

    @cython.cfunc
    @cython.exceptval(check=False)
    def put(self, p: cython.p_void) -> cython.void:
        with self.lock:
            if not self.closed:
                self.free_items[self.n_free] = p
                self.n_free += 1
                return
            self.created -= 1
        free(p)

    @cython.cfunc
    @cython.exceptval(check=False)
    def drain(self) -> cython.void:
        i: cython.Py_ssize_t
        with self.lock:
            self.closed = True
            for i in range(self.n_free):
                free(self.free_items[i])
            self.created -= self.n_free
            self.n_free = 0

    def __dealloc__(self):
        i: cython.Py_ssize_t
        for i in range(self.n_free):
            free(self.free_items[i])
        free(self.free_items)

    @property
    def stats(self):
        return {"size": self.size, "created": self.created, "global_free": self.n_free, "exhausted": self.exhausted}


# --------------------------------------------------------------------------- pool


@cython.final
@cython.cclass
class Pool:
    def __cinit__(self, min_size: cython.Py_ssize_t, max_size: cython.Py_ssize_t,
                  max_per_class: cython.Py_ssize_t, cache_capacity: cython.Py_ssize_t,
                  alignment: cython.Py_ssize_t = 4096):
        if min_size <= 0 or min_size & (min_size - 1) or max_size < min_size or max_size & (max_size - 1):
            raise ValueError("bad sizes")
        self.min_size = min_size
        self.max_size = max_size
        self.min_shift = iob_bitlen(min_size) - 1
        self.num_classes = iob_bitlen(max_size) - iob_bitlen(min_size) + 1
        self.cache_cap = cache_capacity
        self.classes = [SizeClass(min_size << i, max_per_class, max(alignment, cython.sizeof(cython.p_void)))
                        for i in range(self.num_classes)]
        self.key = PyThread_tss_alloc()
        if self.key == cython.NULL or PyThread_tss_create(self.key) != 0:
            raise MemoryError()

    def __dealloc__(self):
        # Only reachable once no Facet (thread cache) refers to the pool.
        if self.key != cython.NULL:
            PyThread_tss_free(self.key)

    def try_alloc(self, capacity) -> IoBufMut:
        if type(capacity) is not int:
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        return self.alloc(capacity)

    def alloc_len(self, length) -> IoBufMut:
        if type(length) is not int:
            raise TypeError(f"length must be an int, not {type(length).__name__}")
        m: IoBufMut = self.alloc(length)
        m._len = length
        return m

    @cython.cfunc
    @cython.inline
    def alloc(self, n: cython.Py_ssize_t) -> IoBufMut:
        idx: cython.int
        if n <= self.min_size:
            if n < 0:
                raise ValueError(f"capacity must be >= 0, got {n}")
            idx = 0
        elif n > self.max_size:
            raise Oversized()
        else:
            idx = iob_bitlen(n - 1) - self.min_shift
        v: cython.p_void = PyThread_tss_get(self.key)
        p: cython.p_void
        f: Facet
        if v == cython.NULL or v == IOB_FINISHING:
            if self.closed:
                raise PoolClosed()
            f = self.facet()
        else:
            f = cython.cast(Facet, v)
        n_: cython.Py_ssize_t = f.counts[idx]
        if n_:
            n_ -= 1
            f.counts[idx] = n_
            p = f.items[idx * f.cap + n_]
        else:
            if self.closed:
                raise PoolClosed()
            p = f.refill(idx)
            if p == cython.NULL:
                raise Exhausted()
        m: IoBufMut = IoBufMut.__new__(IoBufMut)
        m.base = cython.cast(cython.p_char, p)
        m.raw = m.base
        m._cap = self.min_size << idx
        m.origin = f
        m.idx = idx
        if self.eager_block:
            block_from_raw(m)
        return m

    @cython.cfunc
    def facet(self) -> Facet:
        """This thread's Facet, made on first use; None while the thread exits."""
        v: cython.p_void = PyThread_tss_get(self.key)
        if v == IOB_FINISHING:
            if self.shared_facet is None:  # cap 0: every operation goes to the shared lists
                self.shared_facet = Facet.__new__(Facet)
                self.shared_facet.pool = self
                self.shared_facet.num_classes = self.num_classes
                self.shared_facet.counts = cython.cast(cython.pointer(cython.Py_ssize_t), calloc(self.num_classes, cython.sizeof(cython.Py_ssize_t)))
            return self.shared_facet
        if v != cython.NULL:
            return cython.cast(Facet, v)
        return self.new_facet()

    @cython.cfunc
    def new_facet(self) -> Facet:
        f: Facet = Facet.__new__(Facet)
        f.pool = self
        f.cap = self.cache_cap
        f.num_classes = self.num_classes
        f.items = cython.cast(cython.pp_void, calloc(max(1, self.num_classes * self.cache_cap), cython.sizeof(cython.p_void)))
        f.counts = cython.cast(cython.pointer(cython.Py_ssize_t), calloc(self.num_classes, cython.sizeof(cython.Py_ssize_t)))
        if f.items == cython.NULL or f.counts == cython.NULL:
            raise MemoryError()
        g: _Guard = _Guard.__new__(_Guard)
        g.facet = f
        d: dict = cython.cast(dict, PyThreadState_GetDict())
        d[("iobuf-facet", id(self))] = g
        PyThread_tss_set(self.key, cython.cast(cython.p_void, f))
        return f

    def close(self) -> None:
        self.closed = True
        cls: SizeClass
        for cls in self.classes:
            cls.drain()
        self.flush_thread_cache()

    def flush_thread_cache(self) -> None:
        v: cython.p_void = PyThread_tss_get(self.key)
        if v != cython.NULL and v != IOB_FINISHING:
            cython.cast(Facet, v).flush()

    def stats(self):
        out = []
        i: cython.int
        v: cython.p_void = PyThread_tss_get(self.key)
        for i in range(self.num_classes):
            d = (self.classes[i]).stats
            d["local_free"] = cython.cast(Facet, v).counts[i] if (v != cython.NULL and v != IOB_FINISHING) else 0
            out.append(d)
        return out


# --------------------------------------------------------------------------- thread caches


@cython.final
@cython.no_gc
@cython.cclass
class Facet:
    """One thread's LIFO caches for every class of one pool. Touched only by its thread."""

    @cython.cfunc
    @cython.exceptval(check=False)
    def refill(self, idx: cython.int) -> cython.p_void:
        cls: SizeClass = self.pool.classes[idx]
        p: cython.p_void = cython.NULL
        want: cython.Py_ssize_t
        got: cython.Py_ssize_t = 0
        base: cython.pp_void = self.items + idx * self.cap
        if self.cap >= 4:
            want = self.cap // 2
            with cls.lock:
                while got < want and cls.n_free:
                    cls.n_free -= 1
                    base[got] = cls.free_items[cls.n_free]
                    got += 1
            if got:
                # hand out the first taken, keep the rest (as the seed does)
                p = base[0]
                base[0] = base[got - 1]
                self.counts[idx] = got - 1
                return p
        else:
            p = cls.take()
            if p != cython.NULL:
                return p
        return cls.create()

    @cython.cfunc
    @cython.exceptval(check=False)
    def push(self, idx: cython.int, p: cython.p_void) -> cython.void:
        n: cython.Py_ssize_t = self.counts[idx]
        if n < self.cap:
            self.items[idx * self.cap + n] = p
            self.counts[idx] = n + 1
        else:
            self.spill(idx, p)

    @cython.cfunc
    @cython.exceptval(check=False)
    def spill(self, idx: cython.int, p: cython.p_void) -> cython.void:
        cls: SizeClass = self.pool.classes[idx]
        k: cython.Py_ssize_t
        n: cython.Py_ssize_t = self.counts[idx]
        base: cython.pp_void = self.items + idx * self.cap
        if self.cap < 4:
            cls.put(p)
            return
        k = max(1, self.cap // 2)
        with cls.lock:
            if not cls.closed:
                while k:
                    n -= 1
                    k -= 1
                    cls.free_items[cls.n_free] = base[n]
                    cls.n_free += 1
            else:
                while k:
                    n -= 1
                    k -= 1
                    free(base[n])
                    cls.created -= 1
        self.counts[idx] = n
        base[n] = p
        self.counts[idx] = n + 1

    @cython.cfunc
    @cython.exceptval(check=False)
    def flush(self) -> cython.void:
        i: cython.int
        j: cython.Py_ssize_t
        cls: SizeClass
        for i in range(self.num_classes):
            cls = self.pool.classes[i]
            for j in range(self.counts[i]):
                cls.put(self.items[i * self.cap + j])
            self.counts[i] = 0

    def __dealloc__(self):
        free(self.items)
        free(self.counts)


@cython.final
@cython.no_gc
@cython.cclass
class _Guard:
    """Lives in the thread-state dict: at thread exit it retires the thread's Facet."""

    def __dealloc__(self):
        f: Facet = self.facet
        if f is None:
            return
        f.flush()
        f.retired = True
        if PyThread_tss_get(f.pool.key) == cython.cast(cython.p_void, f):
            PyThread_tss_set(f.pool.key, IOB_FINISHING)


@cython.cfunc
@cython.exceptval(check=False)
def give_back(origin: Facet, idx: cython.int, p: cython.p_void) -> cython.void:
    """Return ``p`` to the calling thread's cache of its class."""
    pool: Pool = origin.pool
    v: cython.p_void = PyThread_tss_get(pool.key)
    f: Facet
    if v == cython.NULL or v == IOB_FINISHING or pool.closed:
        if v == cython.NULL and not pool.closed:
            try:
                f = pool.new_facet()
                f.push(idx, p)
                return
            except BaseException:
                pass
        (cython.cast(SizeClass, pool.classes[idx])).put(p)
        return
    f = cython.cast(Facet, v)
    n: cython.Py_ssize_t = f.counts[idx]
    if n < f.cap:
        f.items[idx * f.cap + n] = p
        f.counts[idx] = n + 1
    else:
        f.spill(idx, p)


# --------------------------------------------------------------------------- memory owner


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class Block:
    """Owns one buffer's memory; shared by IoBufs (and exports). Returns it in tp_dealloc."""

    def __getbuffer__(self, buffer: cython.pointer(Py_buffer), flags: cython.int):
        raise BufferError("internal object")

    def __releasebuffer__(self, buffer: cython.pointer(Py_buffer)):
        iob_dec(cython.address(self.exports))

    def __dealloc__(self):
        if self.origin is not None:
            give_back(self.origin, self.idx, self.ptr)


_EMPTY = Block.__new__(Block)
_EMPTY.keep = b"\0"
_EMPTY.ptr = _EMPTY.keep


@cython.cfunc
def block_from_raw(m: IoBufMut) -> Block:
    b: Block = Block.__new__(Block)
    b.ptr = m.raw
    b.size = m._cap
    b.origin = m.origin
    b.idx = m.idx
    m.raw = cython.NULL  # ownership moved (give up before anything can fail: nothing can)
    m.origin = None
    m.blk = b
    return b


@cython.cfunc
def _fill_self(buffer: cython.pointer(Py_buffer), flags: cython.int, obj: IoBufMut, p: cython.p_char,
               n: cython.Py_ssize_t) -> cython.int:
    buffer.buf = p
    buffer.len = n
    buffer.obj = obj
    buffer.readonly = 0
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


@cython.cfunc
def _fill(buffer: cython.pointer(Py_buffer), flags: cython.int, blk: Block, p: cython.p_char,
          n: cython.Py_ssize_t, readonly: cython.bint) -> cython.int:
    if readonly and (flags & PyBUF_WRITABLE) == PyBUF_WRITABLE:
        raise BufferError("IoBuf is read-only")
    buffer.buf = p
    buffer.len = n
    buffer.obj = blk
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
    iob_inc(cython.address(blk.exports))
    return 0


# --------------------------------------------------------------------------- IoBufMut


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class IoBufMut:
    def __cinit__(self):
        self.base = _EMPTY.ptr

    def __dealloc__(self):
        if self.raw != cython.NULL:
            give_back(self.origin, self.idx, self.raw)

    def __len__(self) -> cython.Py_ssize_t:
        return self._len - self._pos

    @property
    def capacity(self) -> cython.Py_ssize_t:
        return self._cap - self._pos

    @property
    def is_pooled(self) -> bool:
        return self.raw != cython.NULL or (self.blk is not None and self.blk.origin is not None)

    @property
    def address(self) -> int:
        return cython.cast(cython.size_t, self.base + self._pos)

    @cython.cfunc
    def share(self) -> Block:
        if self.blk is None:
            if self.raw != cython.NULL:
                return block_from_raw(self)
            self.blk = _EMPTY
        return self.blk

    @cython.cfunc
    @cython.exceptval(check=False)
    def detach(self) -> cython.void:
        self.base = _EMPTY.ptr
        self._pos = self._len = self._cap = 0
        if iob_load(cython.address(self._exports)):
            self.pin = self.blk  # views of this object still reach the memory
        self.blk = None

    def put_slice(self, data) -> None:
        view: Py_buffer
        PyObject_GetBuffer(data, cython.address(view), 0)
        try:
            if view.len > self._cap - self._len:
                raise ValueError("put_slice past capacity")
            memcpy(self.base + self._len, view.buf, view.len)
            self._len += view.len
        finally:
            PyBuffer_Release(cython.address(view))

    def spare_capacity(self) -> memoryview:
        self.spare = True
        try:
            return PyMemoryView_FromObject(self)
        finally:
            self.spare = False

    def as_memoryview(self) -> memoryview:
        return PyMemoryView_FromObject(self)

    def advance_mut(self, n: cython.Py_ssize_t) -> None:
        if n < 0 or n > self._cap - self._len:
            raise ValueError(f"advance_mut({n}) past capacity")
        self._len += n

    def set_len(self, n: cython.Py_ssize_t) -> None:
        if n < 0 or n > self._cap - self._pos:
            raise ValueError(f"set_len({n}) past capacity")
        self._len = self._pos + n

    def freeze(self) -> IoBuf:
        blk: Block = self.share()
        off: cython.Py_ssize_t = self.base - blk.ptr
        out: IoBuf = IoBuf.__new__(IoBuf)  # keeps the memory even when empty (as the seed)
        out.blk = blk
        out.base = blk.ptr
        out._start = off + self._pos
        out._end = off + self._len
        self.detach()
        return out

    def release(self) -> None:
        if iob_load(cython.address(self._exports)) and (self.raw != cython.NULL or self.blk is not None):
            raise BufferError("cannot release a pooled buffer while memoryviews of it are alive")
        if self.raw != cython.NULL:
            p: cython.p_void = self.raw
            self.raw = cython.NULL
            give_back(self.origin, self.idx, p)
            self.origin = None
        elif self.blk is not None and self.blk.origin is not None:
            # owners = refs - exports; we are the last owner when that is 1
            ex: cython.Py_ssize_t = iob_load(cython.address(self.blk.exports))
            if iob_refcnt(cython.cast(cython.pointer(PyObject), self.blk)) - ex <= 1:
                if ex:
                    raise BufferError("cannot release a pooled buffer while memoryviews of it are alive")
                _return_block_now(self.blk)
        self.detach()

    def __getbuffer__(self, buffer: cython.pointer(Py_buffer), flags: cython.int):
        # Design C: the IoBufMut is its own exporter (view.obj = self, the
        # default); its memory cannot go while it lives, and it lives while
        # any view does. No Block is made for a plain export.
        if self.spare:
            _fill_self(buffer, flags, self, self.base + self._len, self._cap - self._len)
        else:
            _fill_self(buffer, flags, self, self.base + self._pos, self._len - self._pos)
        iob_inc(cython.address(self._exports))

    def __releasebuffer__(self, buffer: cython.pointer(Py_buffer)):
        iob_dec(cython.address(self._exports))
        if self.pin is not None and iob_load(cython.address(self._exports)) == 0:
            self.pin = None  # frozen/released while views lived: they are gone now

    def __bytes__(self) -> bytes:
        return PyBytes_FromStringAndSize(self.base + self._pos, self._len - self._pos)


@cython.cfunc
@cython.exceptval(check=False)
def _return_block_now(blk: Block) -> cython.void:
    origin: Facet = blk.origin
    blk.origin = None  # the block's tp_dealloc has nothing left to return
    give_back(origin, blk.idx, blk.ptr)
    blk.ptr = _EMPTY.ptr
    blk.size = 0


# --------------------------------------------------------------------------- IoBuf


@cython.cfunc
def new_iobuf(blk: Block, start: cython.Py_ssize_t, end: cython.Py_ssize_t) -> IoBuf:
    o: IoBuf = IoBuf.__new__(IoBuf)
    if start == end:
        blk = _EMPTY
        start = end = 0
    o.blk = blk
    o.base = blk.ptr
    o._start = start
    o._end = end
    return o


@cython.final
@cython.no_gc
@cython.freelist(64)
@cython.cclass
class IoBuf:
    def __cinit__(self):
        self.blk = _EMPTY
        self.base = _EMPTY.ptr

    def __len__(self) -> cython.Py_ssize_t:
        return self._end - self._start

    @property
    def is_pooled(self) -> bool:
        return self.blk.origin is not None

    @property
    def _own(self):
        """What _chain/_aio compare by identity (the lease in the pure-Python core)."""
        return None if self.blk is _EMPTY else self.blk

    def __getbuffer__(self, buffer: cython.pointer(Py_buffer), flags: cython.int):
        _fill(buffer, flags, self.blk, self.base + self._start, self._end - self._start, True)

    def __bytes__(self) -> bytes:
        return PyBytes_FromStringAndSize(self.base + self._start, self._end - self._start)

    def clone(self) -> IoBuf:
        o: IoBuf = IoBuf.__new__(IoBuf)
        o.blk = self.blk
        o.base = self.base
        o._start = self._start
        o._end = self._end
        return o

    def __copy__(self) -> IoBuf:
        return self.clone()

    def __getitem__(self, key):
        start: cython.Py_ssize_t
        stop: cython.Py_ssize_t
        step: cython.Py_ssize_t
        n: cython.Py_ssize_t = self._end - self._start
        i: cython.Py_ssize_t
        if PySlice_Check(key):
            PySlice_Unpack(key, cython.address(start), cython.address(stop), cython.address(step))
            if step != 1:
                raise ValueError("IoBuf slices must have step 1")
            PySlice_AdjustIndices(n, cython.address(start), cython.address(stop), step)
            if stop < start:
                stop = start
            return new_iobuf(self.blk, self._start + start, self._start + stop)
        i = key
        if i < 0:
            i += n
        if i < 0 or i >= n:
            raise IndexError("IoBuf index out of range")
        return cython.cast(cython.uchar, self.base[self._start + i])

    def slice(self, start: cython.Py_ssize_t, stop: cython.Py_ssize_t) -> IoBuf:
        if start < 0 or stop < start or stop > self._end - self._start:
            raise ValueError(f"slice({start}, {stop}) out of range")
        return new_iobuf(self.blk, self._start + start, self._start + stop)

    def split_to(self, at: cython.Py_ssize_t) -> IoBuf:
        if at < 0 or at > self._end - self._start:
            raise ValueError(f"split_to({at}) out of range")
        out: IoBuf = new_iobuf(self.blk, self._start, self._start + at)
        self._start += at
        return out

    def try_into_mut(self):
        if self.blk.origin is None:
            return None
        m: IoBufMut = IoBufMut.__new__(IoBufMut)  # allocate before counting
        # sole holder: only self.blk refers to the block (exports hold it too)
        if iob_refcnt(cython.cast(cython.pointer(PyObject), self.blk)) != 1:
            return None
        m.blk = self.blk
        m.base = self.blk.ptr + self._start
        m._pos = 0
        m._len = self._end - self._start
        m._cap = self.blk.size - self._start
        self.blk = _EMPTY
        self.base = _EMPTY.ptr
        self._start = self._end = 0
        return m

    def release(self) -> None:
        if self.blk.origin is not None:
            ex: cython.Py_ssize_t = iob_load(cython.address(self.blk.exports))
            if iob_refcnt(cython.cast(cython.pointer(PyObject), self.blk)) - ex <= 1:
                if ex:
                    raise BufferError("cannot release a pooled buffer while memoryviews of it are alive")
                _return_block_now(self.blk)
        self.blk = _EMPTY
        self.base = _EMPTY.ptr
        self._start = self._end = 0


def split_filled(buf: IoBufMut) -> IoBuf:
    """_views.split_filled: the readable bytes as an IoBuf; buf keeps its spare room."""
    if buf._pos == buf._len:
        return new_iobuf(_EMPTY, 0, 0)
    blk: Block = buf.share()
    off: cython.Py_ssize_t = buf.base - blk.ptr
    out: IoBuf = new_iobuf(blk, off + buf._pos, off + buf._len)
    buf._pos = buf._len
    return out


def join_adjacent(first: IoBuf, second: IoBuf):
    if first.blk is _EMPTY or first.blk is not second.blk or first._end != second._start:
        return None
    return new_iobuf(first.blk, first._start, second._end)
