# cython: language_level=3
# Declarations for _core.py (Cython pure-Python mode). Everything C-level lives here.
cimport cython
from cpython.object cimport PyObject
from cpython.buffer cimport Py_buffer, PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_SIMPLE, PyObject_GetBuffer, PyBuffer_Release
from cpython.slice cimport PySlice_Unpack, PySlice_AdjustIndices
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy, memset, memmove, memcmp, memchr

cdef extern from "string.h" nogil:
    void *memmem(const void *haystack, size_t n, const void *needle, size_t m)

cdef extern from "stdlib.h" nogil:
    void free(void *p)
    void *malloc(size_t n)
    void *calloc(size_t n, size_t m)
    void *realloc(void *p, size_t n)

cdef extern from "Python.h":
    PyObject *PyThreadState_GetDict()
    object PyMemoryView_FromObject(object o)
    bint PySlice_Check(object o)
    long PyLong_AsLongAndOverflow(object o, int *overflow) except? -1
    void Py_INCREF(object o)
    void Py_DECREF(object o)
    Py_ssize_t PyNumber_AsSsize_t(object o, PyObject *exc) except? -1
    Py_ssize_t PY_SSIZE_T_MAX

# Small C helpers (see the module notes in _core.py).
cdef extern from *:
    """
    #include <sys/mman.h>
    #include <unistd.h>
    #include <pthread.h>
    #include <sched.h>
    #include <stdint.h>

    static inline Py_ssize_t iob_refcnt(PyObject *o) { return Py_REFCNT(o); }
    #ifdef Py_GIL_DISABLED
    static inline void iob_inc(Py_ssize_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }
    static inline void iob_dec(Py_ssize_t *p) { __atomic_fetch_sub(p, 1, __ATOMIC_RELEASE); }
    static inline Py_ssize_t iob_load(Py_ssize_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline Py_ssize_t iob_read(Py_ssize_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void iob_write(Py_ssize_t *p, Py_ssize_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    #else
    static inline void iob_inc(Py_ssize_t *p) { ++*p; }
    static inline void iob_dec(Py_ssize_t *p) { --*p; }
    static inline Py_ssize_t iob_load(Py_ssize_t *p) { return *p; }
    static inline Py_ssize_t iob_read(Py_ssize_t *p) { return *p; }
    static inline void iob_write(Py_ssize_t *p, Py_ssize_t v) { *p = v; }
    #endif
    static inline int iob_get_flag(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void iob_set_flag(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

    /* A tiny spin lock. No code holds one while calling into Python or while
       holding another one (except the at-fork handler, which takes them in
       list order), so with a GIL it is never contended, and without one its
       critical sections are a few stores long. A forked child resets it. */
    typedef struct iob_node { int lock; struct iob_node *prev, *next; } iob_node;
    static inline void iob_lock(iob_node *n) {
        while (__atomic_exchange_n(&n->lock, 1, __ATOMIC_ACQUIRE)) {
            while (__atomic_load_n(&n->lock, __ATOMIC_RELAXED)) sched_yield();
        }
    }
    static inline void iob_unlock(iob_node *n) { __atomic_store_n(&n->lock, 0, __ATOMIC_RELEASE); }

    /* Every size class's lock, for the at-fork handlers; and the slot numbers
       of live pools (index into each thread's table of caches). */
    static iob_node iob_reg = {0, &iob_reg, &iob_reg};
    static Py_ssize_t *iob_slots_free = NULL;
    static Py_ssize_t iob_slots_nfree = 0, iob_slots_cap = 0, iob_slots_next = 0;

    static void iob_register(iob_node *n) {
        iob_lock(&iob_reg);
        n->next = iob_reg.next; n->prev = &iob_reg;
        iob_reg.next->prev = n; iob_reg.next = n;
        iob_unlock(&iob_reg);
    }
    static void iob_unregister(iob_node *n) {
        if (!n->next) return;
        iob_lock(&iob_reg);
        n->prev->next = n->next; n->next->prev = n->prev;
        n->next = n->prev = NULL;
        iob_unlock(&iob_reg);
    }
    static Py_ssize_t iob_slot_take(void) {
        Py_ssize_t s;
        iob_lock(&iob_reg);
        s = iob_slots_nfree ? iob_slots_free[--iob_slots_nfree] : iob_slots_next++;
        iob_unlock(&iob_reg);
        return s;
    }
    static void iob_slot_put(Py_ssize_t s) {
        iob_lock(&iob_reg);
        if (iob_slots_nfree == iob_slots_cap) {
            Py_ssize_t cap = iob_slots_cap ? 2 * iob_slots_cap : 64;
            Py_ssize_t *p = (Py_ssize_t *)realloc(iob_slots_free, cap * sizeof(Py_ssize_t));
            if (p) { iob_slots_free = p; iob_slots_cap = cap; }
        }
        if (iob_slots_nfree < iob_slots_cap) iob_slots_free[iob_slots_nfree++] = s;
        iob_unlock(&iob_reg);
    }
    static void iob_prepare(void) {
        iob_node *n;
        iob_lock(&iob_reg);
        for (n = iob_reg.next; n != &iob_reg; n = n->next) iob_lock(n);
    }
    static void iob_parent(void) {
        iob_node *n;
        for (n = iob_reg.next; n != &iob_reg; n = n->next) iob_unlock(n);
        iob_unlock(&iob_reg);
    }
    static void iob_child(void) {
        iob_node *n;
        for (n = iob_reg.next; n != &iob_reg; n = n->next) n->lock = 0;
        iob_reg.lock = 0;
    }
    static int iob_atfork_done = 0;
    static int iob_install_atfork(void) {
        if (iob_atfork_done) return 0;
        iob_atfork_done = 1;
        return pthread_atfork(iob_prepare, iob_parent, iob_child);
    }

    /* One process-wide TSS key: each thread's table of caches (a ThreadCaches). */
    static Py_tss_t iob_key = Py_tss_NEEDS_INIT;
    #define IOB_FINISHING ((void *)1)  /* this thread's caches were retired (it is exiting) */
    static int iob_key_init(void) { return PyThread_tss_is_created(&iob_key) ? 0 : PyThread_tss_create(&iob_key); }
    static inline void *iob_tss_get(void) { return PyThread_tss_get(&iob_key); }
    static inline void iob_tss_set(void *v) { (void)PyThread_tss_set(&iob_key, v); }

    /* Memory. Pooled blocks of at least a page are anonymous private maps
       (zero-filled lazily, private to a forked child); smaller ones come from
       posix_memalign. */
    static char iob_empty_bytes[8];
    static size_t iob_page = 0;
    static inline size_t iob_pagesize(void) {
        if (!iob_page) { long p = sysconf(_SC_PAGESIZE); iob_page = (p > 0 && !(p & (p - 1))) ? (size_t)p : 4096; }
        return iob_page;
    }
    static inline size_t iob_round_page(size_t n) { size_t p = iob_pagesize(); return (n + p - 1) & ~(p - 1); }
    static void *iob_mem_alloc(size_t size, size_t align, int zero) {
        size_t page = iob_pagesize();
        if (size == 0) return iob_empty_bytes;
        if (size >= page) {
            size_t len = iob_round_page(size), extra = align > page ? align - page : 0;
            char *m;
            if (len < size || len + extra < len) return NULL;
            m = (char *)mmap(NULL, len + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == (char *)MAP_FAILED) return NULL;
            if (extra) {
                uintptr_t a = (uintptr_t)m, al = (a + align - 1) & ~(uintptr_t)(align - 1);
                size_t head = al - a, tail = extra - head;
                if (head) munmap(m, head);
                if (tail) munmap((char *)al + len, tail);
                m = (char *)al;
            }
            return m;
        } else {
            void *p = NULL;
            if (align < sizeof(void *)) align = sizeof(void *);
            if (posix_memalign(&p, align, size)) return NULL;
            if (zero) memset(p, 0, size);
            return p;
        }
    }
    static void iob_mem_free(void *p, size_t size) {
        if (size == 0 || p == (void *)iob_empty_bytes || p == NULL) return;
        if (size >= iob_pagesize()) munmap(p, iob_round_page(size)); else free(p);
    }
    static void *iob_heap_alloc(size_t size) { return size ? calloc(1, size) : (void *)iob_empty_bytes; }
    /* Untracked aligned blocks (fallbacks, bypasses, with_alignment) live as long
       as one buffer. Below IOB_MAP_MIN they come from malloc's heap, which reuses
       memory it already has, where a fresh map per block costs a page fault and a
       kernel zeroing per page (pool.alloc's 1 MiB fallback: 256 faults, 3x a
       bytearray); freed with free(). From IOB_MAP_MIN on (glibc's largest mmap
       threshold: it maps such sizes afresh anyway) they are maps, zero-filled
       lazily, so a huge buffer of which little is used costs little; freed with
       iob_mem_free. calloc only for pointer alignment, which every malloc gives
       for every size (16 is not promised for blocks under 16 bytes). */
    #define IOB_MAP_MIN ((size_t)32 << 20)
    static void *iob_heap_aligned(size_t size, size_t align) {
        void *p = NULL;
        if (size == 0) return iob_empty_bytes;
        if (size >= IOB_MAP_MIN) return iob_mem_alloc(size, align, 1);
        if (align <= sizeof(void *)) return calloc(1, size);
        if (posix_memalign(&p, align, size)) return NULL;
        memset(p, 0, size);
        return p;
    }
    static void iob_heap_free(void *p) { if (p && p != (void *)iob_empty_bytes) free(p); }
    static inline char *iob_empty(void) { return iob_empty_bytes; }

    /* Cython ignores "except -1" on these extern calls in pure mode: return NULL instead. */
    static PyObject *iob_getbuffer(PyObject *o, Py_buffer *v, int f) {
        if (PyObject_GetBuffer(o, v, f) < 0) return NULL;
        Py_RETURN_NONE;
    }
    static PyObject *iob_slice_unpack(PyObject *s, Py_ssize_t *a, Py_ssize_t *b, Py_ssize_t *c) {
        if (PySlice_Unpack(s, a, b, c) < 0) return NULL;
        Py_RETURN_NONE;
    }
    /* The shared empty Block: every new IoBuf points at it first. On free-threaded
       builds its reference count would be a counter all threads hit: make it immortal. */
    static void iob_immortalize(PyObject *o) {
    #if defined(Py_GIL_DISABLED) && defined(_Py_IMMORTAL_REFCNT_LOCAL)
        o->ob_ref_local = _Py_IMMORTAL_REFCNT_LOCAL;
    #else
        (void)o;
    #endif
    }
    /* Zeroed, 128-byte aligned, size rounded up to 128: a thread cache's arrays
       never share a cache line with another thread's data. */
    #define IOB_CL 128
    static void *iob_cl_alloc(size_t n) {
        void *p = NULL;
        n = (n + IOB_CL - 1) & ~(size_t)(IOB_CL - 1);
        if (!n) n = IOB_CL;
        if (posix_memalign(&p, IOB_CL, n)) return NULL;
        memset(p, 0, n);
        return p;
    }
    /* Grow to new_n bytes keeping the first old_n (NULL on failure, old kept). */
    static void *iob_cl_realloc(void *old, size_t old_n, size_t new_n) {
        void *p = iob_cl_alloc(new_n);
        if (!p) return NULL;
        if (old && old_n) memcpy(p, old, old_n < new_n ? old_n : new_n);
        free(old);
        return p;
    }
    static char iob_B[] = "B";
    static inline char *iob_fmt_B(void) { return iob_B; }
    static inline int iob_bitlen(size_t x) { return x ? (int)(8 * sizeof(size_t)) - __builtin_clzl(x) : 0; }
    """
    ctypedef struct iob_node:
        int lock
    Py_ssize_t iob_refcnt(PyObject *o)
    void iob_inc(Py_ssize_t *p) nogil
    void iob_dec(Py_ssize_t *p) nogil
    Py_ssize_t iob_load(Py_ssize_t *p) nogil
    Py_ssize_t iob_read(Py_ssize_t *p) nogil
    void iob_write(Py_ssize_t *p, Py_ssize_t v) nogil
    int iob_get_flag(int *p) nogil
    void iob_set_flag(int *p, int v) nogil
    void iob_lock(iob_node *n) nogil
    void iob_unlock(iob_node *n) nogil
    void iob_register(iob_node *n) nogil
    void iob_unregister(iob_node *n) nogil
    Py_ssize_t iob_slot_take() nogil
    void iob_slot_put(Py_ssize_t s) nogil
    int iob_install_atfork() nogil
    int iob_key_init()
    void *iob_tss_get() nogil
    void iob_tss_set(void *v) nogil
    void *IOB_FINISHING
    void *iob_mem_alloc(size_t size, size_t align, int zero) nogil
    void iob_mem_free(void *p, size_t size) nogil
    void *iob_heap_alloc(size_t size) nogil
    void iob_heap_free(void *p) nogil
    void *iob_heap_aligned(size_t size, size_t align) nogil
    size_t IOB_MAP_MIN
    char *iob_empty() nogil
    char *iob_fmt_B() nogil
    void iob_immortalize(PyObject *o)
    void *iob_cl_alloc(size_t n) nogil
    void *iob_cl_realloc(void *old, size_t old_n, size_t new_n) nogil
    object iob_getbuffer(object o, Py_buffer *v, int f)
    object iob_slice_unpack(object s, Py_ssize_t *a, Py_ssize_t *b, Py_ssize_t *c)
    int iob_bitlen(size_t x) nogil


cdef enum:
    MIN_BATCH_CAPACITY = 4
    KIND_NONE = 0     # Block kinds: what a Block frees when it dies
    KIND_HEAP = 1     # (calloc'd, or posix_memalign'd for an alignment malloc does not give)
    KIND_MAPPED = 2   # (iob_mem_alloc'd: an untracked block of IOB_MAP_MIN or more)


cdef class SizeClass:
    cdef iob_node node
    cdef readonly Py_ssize_t size
    cdef readonly Py_ssize_t max_buffers
    cdef Py_ssize_t _created
    cdef Py_ssize_t _exhausted
    cdef Py_ssize_t n_free
    cdef Py_ssize_t room
    cdef void **free_items
    cdef size_t alignment
    cdef bint closed
    cdef object origins
    cdef object __weakref__
    cdef void *create(self) noexcept
    cdef void *take(self) noexcept
    cdef Py_ssize_t take_batch(self, void **into, Py_ssize_t want) noexcept
    cdef void put(self, void *p) noexcept
    cdef void put_batch(self, void **items, Py_ssize_t n) noexcept
    cdef bint grow_room(self, Py_ssize_t need) noexcept
    cdef void close(self) noexcept
    cdef Py_ssize_t trim(self, void **extra, Py_ssize_t n_extra, Py_ssize_t keep) noexcept
    cdef void prefill(self)


cdef class PoolState:
    cdef Py_ssize_t min_size
    cdef Py_ssize_t max_size
    cdef int min_shift
    cdef int num_classes
    cdef Py_ssize_t cap
    cdef Py_ssize_t alignment
    cdef int closed
    cdef bint scrub
    cdef bint slow_return
    cdef bint track
    cdef Py_ssize_t slot
    cdef bint has_slot
    cdef tuple classes


cdef class Facet:
    cdef PoolState st
    cdef void ***items
    cdef Py_ssize_t *counts
    cdef Py_ssize_t *room
    cdef Py_ssize_t cap
    cdef int num_classes
    cdef void *refill(self, int idx) noexcept
    cdef void push_slow(self, int idx, void *p) noexcept
    cdef void flush(self) noexcept


cdef class ThreadCaches:
    cdef PyObject **facets
    cdef Py_ssize_t n
    cdef int set_facet(self, Py_ssize_t slot, Facet f)
    cdef void drop(self, Py_ssize_t slot) noexcept
    cdef void sweep(self) noexcept


cdef class PoolCore:
    cdef PoolState st
    cdef Py_ssize_t bypass_below
    cdef readonly tuple _classes
    cdef object seen_type
    cdef bint overrides


cdef class Block:
    cdef char *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t exports
    cdef Facet origin
    cdef int idx
    cdef int kind
    cdef bint lease
    cdef bint grow
    cdef bint has_pybuf
    cdef bint exported
    cdef Py_buffer pybuf
    cdef object keep


cdef class IoBufMut:
    cdef char *base
    cdef char *raw
    # The readable window [_lo, _hi) of the memory at base (as IoBuf's); _cap its end.
    cdef Py_ssize_t _lo
    cdef Py_ssize_t _hi
    cdef Py_ssize_t _cap
    cdef Facet origin
    cdef int idx
    cdef Block blk
    cdef bint grow
    cdef bint spare
    cdef bint made
    cdef bint quiet
    cdef bint exported
    cdef Py_ssize_t _exports
    cdef list pins
    cdef Block share(self)
    cdef int ready_pins(self)
    cdef int pin(self)
    cdef int detach(self, bint growable)
    cdef int reserve(self, Py_ssize_t extra)


cdef class IoBuf:
    cdef Block blk
    cdef char *base
    cdef Py_ssize_t _lo
    cdef Py_ssize_t _hi
    cdef bint quiet
    cdef void _set_detached(self) noexcept


cdef Block _EMPTY
