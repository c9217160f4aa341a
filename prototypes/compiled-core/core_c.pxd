# cython: language_level=3
# Declarations for core.py (Cython pure-Python mode). Everything C-level lives here.
cimport cython
from cpython.object cimport PyObject
from cpython.buffer cimport Py_buffer, PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from cpython.pythread cimport (PyThread_tss_alloc, PyThread_tss_free,
                               PyThread_tss_create, PyThread_tss_get, PyThread_tss_set)
from libc.string cimport memcpy, memset

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)
    void free(void *p)
    void *malloc(size_t n)
    void *calloc(size_t n, size_t m)

cdef extern from "Python.h":
    PyObject *PyThreadState_GetDict()
    object PyMemoryView_FromObject(object o)
    object PyBytes_FromStringAndSize(char *s, Py_ssize_t n)
    int PyObject_GetBuffer(object o, Py_buffer *view, int flags) except -1
    void PyBuffer_Release(Py_buffer *view)
    int PySlice_Unpack(object s, Py_ssize_t *start, Py_ssize_t *stop, Py_ssize_t *step) except -1
    Py_ssize_t PySlice_AdjustIndices(Py_ssize_t length, Py_ssize_t *start, Py_ssize_t *stop, Py_ssize_t step)
    bint PySlice_Check(object o)

# Small C helpers: refcount of a borrowed object, export counters (atomic only
# where there is no GIL), and the bit length used for class lookup.
cdef extern from *:
    """
    static inline Py_ssize_t iob_refcnt(PyObject *o) { return Py_REFCNT(o); }
    #ifdef Py_GIL_DISABLED
    static inline void iob_inc(Py_ssize_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }
    static inline void iob_dec(Py_ssize_t *p) { __atomic_fetch_sub(p, 1, __ATOMIC_RELAXED); }
    static inline Py_ssize_t iob_load(Py_ssize_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    #else
    static inline void iob_inc(Py_ssize_t *p) { ++*p; }
    static inline void iob_dec(Py_ssize_t *p) { --*p; }
    static inline Py_ssize_t iob_load(Py_ssize_t *p) { return *p; }
    #endif
    #define IOB_FINISHING ((void *)1)  /* tss value: this thread's cache was retired */
    static char iob_B[] = "B";
    static inline char *iob_fmt_B(void) { return iob_B; }
    static inline int iob_bitlen(size_t x) { return x ? (int)(8 * sizeof(size_t)) - __builtin_clzl(x) : 0; }
    """
    Py_ssize_t iob_refcnt(PyObject *o)
    void iob_inc(Py_ssize_t *p) nogil
    void iob_dec(Py_ssize_t *p) nogil
    Py_ssize_t iob_load(Py_ssize_t *p) nogil
    int iob_bitlen(size_t x) nogil
    char *iob_fmt_B() nogil
    void *IOB_FINISHING


cdef class SizeClass:
    cdef Py_ssize_t size
    cdef Py_ssize_t max_buffers
    cdef Py_ssize_t created
    cdef Py_ssize_t n_free
    cdef Py_ssize_t exhausted
    cdef void **free_items
    cdef cython.pymutex lock
    cdef size_t alignment
    cdef bint closed
    cdef void *create(self) noexcept
    cdef void *take(self) noexcept
    cdef void put(self, void *p) noexcept
    cdef void drain(self) noexcept


cdef class Pool:
    cdef Py_tss_t *key
    cdef Py_ssize_t min_size
    cdef Py_ssize_t max_size
    cdef int min_shift
    cdef int num_classes
    cdef Py_ssize_t cache_cap
    cdef public bint eager_block
    cdef bint closed
    cdef list classes
    cdef Facet shared_facet
    cdef Facet facet(self)
    cdef IoBufMut alloc(self, Py_ssize_t n)
    cdef Facet new_facet(self)


cdef class Facet:
    cdef Pool pool
    cdef void **items
    cdef Py_ssize_t *counts
    cdef Py_ssize_t cap
    cdef int num_classes
    cdef bint retired
    cdef void *refill(self, int idx) noexcept
    cdef void push(self, int idx, void *p) noexcept
    cdef void spill(self, int idx, void *p) noexcept
    cdef void flush(self) noexcept


cdef class _Guard:
    cdef Facet facet


cdef class Block:
    cdef char *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t exports
    cdef Facet origin
    cdef int idx
    cdef object keep


cdef class IoBufMut:
    cdef char *base
    cdef char *raw
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef Facet origin
    cdef int idx
    cdef Block blk
    cdef bint spare
    cdef Py_ssize_t _exports
    cdef Block pin
    cdef Block share(self)
    cdef void detach(self) noexcept


cdef class IoBuf:
    cdef Block blk
    cdef char *base
    cdef public Py_ssize_t _start
    cdef public Py_ssize_t _end


cdef void give_back(Facet origin, int idx, void *p) noexcept
cdef IoBuf new_iobuf(Block blk, Py_ssize_t start, Py_ssize_t end)
cdef Block block_from_raw(IoBufMut m)
cdef Block _EMPTY
