"""``IoBufMut`` and ``IoBuf``: views over pooled, aligned or heap memory.

The safety rule, and how it holds by construction
-------------------------------------------------
A pooled buffer's memory may be handed out again only when nothing in the
process can still reach it. Three kinds of thing can reach it:

1. **Owners**: an ``IoBufMut`` that owns the buffer directly, or a
   :class:`_Lease` shared by every ``IoBuf`` (and at most one ``IoBufMut``) on
   it. ``IoBuf`` clones and slices share one lease, so CPython's reference count
   of the lease is the seed's ``Arc`` count.
2. **Exported views**: every memoryview given to user code over pooled memory
   (``as_memoryview``, ``chunk``, ``spare_capacity``) is a slice of
   ``memoryview(exporter)``, where the exporter is a ``ctypes`` array object of
   the class size laid over the buffer with ``from_address``. Slices, casts,
   numpy arrays and anything else built on such a view keep the exporter alive
   through the memoryview's managed buffer; the exporter dies exactly when the
   last of them goes. Each owner creates at most one exporter, lazily, and holds
   it, so a buffer that never exports a view pays nothing for this.
3. **Internal memoryviews** (``_mv``): never handed out; used only for
   temporaries inside one method call. On free-threaded builds they are never
   even sliced (see "Thread safety" below).

Release protocol: when the last owner goes (``__del__`` of the ``IoBufMut`` or
the lease), :func:`_release` runs. With no exporter the buffer goes straight
back to the class. With an exporter, the owner only *arms* it; the exporter's
``__del__`` gives the buffer back once its last view is gone, which is
immediately when no view is alive (the owner's reference was the last one).
The exporter holds the class and the internal view, never the owner, so no
reference cycle forms. In cyclic garbage the two finalizers may run in either
order; ``done`` marks an exporter finalized unarmed, and the owner then returns
the buffer itself: nothing outside the garbage cycle can reach it.

``try_into_mut`` recovers mutable ownership only if ``sys.getrefcount`` shows
the lease held by this one ``IoBuf`` and the exporter (if any) held by the
lease alone (each ``memoryview(exporter)`` call is one more reference, so live
view families are counted exactly). The baselines are calibrated at import
instead of hard-coded, so an interpreter that borrows references differently
cannot make the check unsafe, only recalibrate it.

Untracked memory (heap ``bytearray``, aligned blocks) is freed by CPython when
unreferenced, so it needs no exporter: its views are plain slices, and an owner
that ever exported one is marked with ``_EXPORTED`` so that ``try_into_mut``
conservatively refuses (it may refuse after the view died; never the reverse).

Other invariants: ``0 <= _start <= _end <= len(_mv)`` for both (the readable
bytes are ``_mv[_start:_end]``; an ``IoBufMut`` writes at ``_end``). Empty results (empty slice,
``split_to(0)``, ``copy_to_bytes(0)``) are detached: they hold no owner and pin
nothing. Freezing an empty buffer is not: the IoBuf takes the lease, as in the
seed, so ``try_into_mut`` can turn it back. An ``IoBufMut`` that was frozen or converted
is detached: capacity 0, not growable, so every write raises ``ValueError``.

Thread safety: one ``IoBufMut`` has one owner; do not use it from two threads
at once. An ``IoBuf`` may be read from any thread, the same object from several
at once; clones may be made and dropped concurrently (reference counts are
atomic on free-threaded builds). ``try_into_mut``/``copy_to_bytes``/
``advance``/``split_to`` change the ``IoBuf`` they are called on, so they must
not race other calls on that same object (as for any mutable Python object).
The buffer returns to the cache of the thread that runs the last owner's (or
the exporter's) finalizer: with a GIL, the thread that drops the last
reference; on free-threaded builds CPython may run it later in the thread that
created that object (biased reference counting). Either way exactly once.

What the free-threaded build (3.13t) relies on:

- **No internal memoryview is sliced there.** CPython 3.13t registers a slice
  on the parent's managed buffer with a non-atomic ``exports += 1``
  (python/cpython#155606), so threads slicing one memoryview release views
  still in use. Every memoryview stored as ``_mv``/``mv`` therefore spans all
  of a ``bytes`` object or a ``ctypes`` array (``_memory.shareable_view``;
  neither keeps an export count), and every read or untracked export makes a
  fresh view with :func:`_fresh_window` (``memoryview(mv.obj).cast("B")``).
  Pooled and aligned blocks are born that way; a heap buffer is converted when
  it is first shared (``_share``) or exported, before anything else can see
  it, which is why ``freeze``/``copy_to_bytes``/``split_filled`` take
  ``_mv`` from the lease ``_share`` returns. Writes (``mv[a:b] = src``) make
  no view of ``mv`` and stay as they are. GIL builds slice directly; the
  readers that differ are defined per build in the class bodies.
- **Arming**: the owner holds the exporter while it stores ``_armed`` in
  :func:`_release`, so the exporter's ``__del__`` (in any thread) runs after
  that store; the final reference-count decrement is an atomic
  read-modify-write on free-threaded builds, which orders the two.
- **First export**: under ``_export_lock`` with a re-check, so one lease never
  gets two exporters; reading ``exp`` without the lock is a single slot load.
- ``sys.getrefcount`` counts references whose release is still queued for
  merging (biased reference counting), so ``try_into_mut`` may refuse a little
  longer after a clone is dropped in another thread: conservative only.
"""

from __future__ import annotations

import builtins
import ctypes
import functools
import gc
import itertools
import operator
import os
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, SupportsIndex, TypeAlias

from ._errors import check_nonneg
from ._memory import FREE_THREADED, address_of, aligned_block, shareable_view

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable

    from typing_extensions import Buffer

    from ._pool import BufferPool
    from ._size_class import SizeClass

    BytesLike: TypeAlias = "Buffer | IoBuf | IoBufMut"

__all__ = [
    "PARKED",
    "IoBuf",
    "IoBufMut",
    "make_export_type",
    "settle_if_parked",
    "settle_parked",
    "take_last",
]

_getrefcount = sys.getrefcount
_get_ident = threading.get_ident
_new = object.__new__

# Marks an untracked owner that handed out at least one view.
_EXPORTED: Final = True
# The memory of a detached IoBufMut/IoBuf: nothing, and nothing to write into.
# Shared by every detached buffer in every thread, hence ctypes-backed on
# free-threaded builds like all memory several threads may view.
_DETACHED: Final = shareable_view(memoryview(bytearray(0))) if FREE_THREADED else memoryview(bytearray(0))
_NO_BYTES: Final = memoryview(b"")


def _fresh_window(mv: memoryview, start: int, end: int) -> memoryview:
    """``mv[start:end]`` as a view with its own managed buffer; ``mv`` may be in
    use in other threads. ``mv`` must span all of ``mv.obj``, a ``bytes`` or a
    ``ctypes`` array (see ``_memory.shareable_view``)."""
    return memoryview(mv.obj).cast("B")[start:end]


def _slice_window(mv: memoryview, start: int, end: int) -> memoryview:
    """``mv[start:end]``: with a GIL, slicing a memoryview other threads use is safe."""
    return mv[start:end]


# Non-hot paths call _window; the hot readers (_read_view, __bytes__) are
# defined per build in the class bodies, so GIL builds pay no extra call.
_window = _fresh_window if FREE_THREADED else _slice_window


# Re-entrant: a signal handler may take a first view while this thread holds it.
_export_lock = threading.RLock()


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held the lock when it forked, or
    # been inside a collection (the child has none running).
    global _export_lock, _collecting  # noqa: PLW0603 - module state, reset once per fork
    _export_lock = threading.RLock()
    if _collector != _get_ident():
        # Another thread was collecting: the child has no collection running.
        # (A fork from a finalizer of this thread's collection goes on with it.)
        _collecting = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- Finalizers inside a garbage collection ------------------------------------
#
# A finalizer that runs because an object's reference count reached zero sees
# an object nothing can reach again. A finalizer that the cyclic collector runs
# does not: the collector calls the finalizers of *all* the garbage it found
# before freeing any of it, and any of them (a generator's ``finally``, a
# ``__del__`` that puts a frame on a retry queue, ``gc.DEBUG_SAVEALL``) may make
# the rest reachable again. An owner or exporter resurrected after giving its
# buffer back would alias memory the pool hands out again. So every finalizer
# that may give memory back (IoBufMut, _Lease, the exporter) checks
# ``_collecting`` first; while a collection runs it *parks* its object in
# ``_parked`` instead, which keeps the object (and so its memory) alive. When
# the collection ends, :func:`settle_parked` finishes the parked objects that
# nothing but ``_parked`` references any more (measured against a calibrated
# baseline, as ``try_into_mut`` does) and keeps the others parked until a
# later collection: they were resurrected, or are still held by garbage the
# collector kept. A resurrected owner therefore still owns its memory, and
# returns it after it is really gone (at the end of the next collection).
#
# ``_collecting`` is set and cleared by a ``gc.callbacks`` entry. Collections
# that run no callbacks (the final one at interpreter shutdown) finalize as
# before. Reference-count deaths of other threads during a collection park
# too; they are only delayed to its end. On free-threaded builds a count may
# still include releases queued for merging: a parked object then waits for a
# later collection, never the reverse.

_collecting = False
_collector = 0  # the ident of the thread running the current collection
_parked: list[Any] = []
#: The parked objects, for the pool's slow paths to test cheaply (``if PARKED:``).
PARKED: Final = _parked


def _refcounts(objs: list[Any]) -> list[int]:
    return [_getrefcount(obj) for obj in objs]


# What _refcounts says of an object that only the list it is given holds.
_PARKED_REFS: Final = _refcounts([object()])[0]


def take_last(source: list[Any], count: int, into: list[Any]) -> None:
    """Move up to ``count`` items from the end of ``source`` to ``into`` (last first),
    one atomic ``pop`` at a time.

    Any allocation may start a garbage collection whose finalizers push to or
    pop from ``source`` (a thread cache, ``_parked``); copying a slice and then
    deleting it would lose or duplicate what they moved in between. Here each
    item moves exactly once whatever they do; ``map`` calls ``pop`` from C, so
    no Python code runs between two moves.
    """
    try:
        into.extend(map(source.pop, itertools.repeat(-1, count)))
    except IndexError:  # a finalizer took items after ``count`` was read
        pass


def settle_parked() -> None:
    """Finish every parked object that nothing else references any more."""
    pending: list[Any] = []
    take_last(_parked, len(_parked), pending)
    try:
        while pending:
            counts = _refcounts(pending)
            done = [obj for obj, n in zip(pending, counts, strict=True) if n <= _PARKED_REFS]
            if not done:
                break
            pending = [obj for obj, n in zip(pending, counts, strict=True) if n > _PARKED_REFS]
            _finish_all(done)
            # ``done`` goes now, which may free the last hold on another parked
            # object (the exporter an IoBufMut or lease held): look again.
            del done
    finally:  # an exception from a signal handler must not lose what is pending
        _parked.extend(pending)


def settle_if_parked() -> None:
    """Settle now what is parked, if anything (one list check otherwise).

    A thread may park an object just after another thread's collection ended
    (it read the mark before the end, and appended after the settling); the
    object would then wait for the next collection. The pool's slow paths and
    ``stats()`` call this, so such a buffer is back before it is missed.
    Settling is safe at any time: an object only ``_parked`` references is
    reachable by nothing else.
    """
    if _parked:
        settle_parked()


def _finish_all(objs: list[Any]) -> None:
    finished = 0
    failed: list[Exception] = []
    try:
        for obj in objs:
            try:
                obj._finish()
            except Exception as exc:  # a bug: finish the others, then report it
                failed.append(exc)
            finished += 1
    finally:
        if finished < len(objs):  # interrupted: the rest stay parked (_finish is idempotent)
            _parked.extend(objs[finished:])
    if failed:
        raise failed[0]


def _on_collection(phase: str, info: dict[str, int]) -> None:
    global _collecting, _collector  # noqa: PLW0603 - the flag finalizers read
    if phase == "start":
        _collector = _get_ident()
        _collecting = True
    else:
        _collecting = False
        if _parked:
            settle_parked()


def _park(obj: Any) -> None:
    """Keep ``obj`` until a collection's end finds nothing else holding it."""
    _parked.append(obj)
    if _on_collection not in gc.callbacks:
        # Someone emptied gc.callbacks, maybe while a collection started, which
        # leaves the flag stuck and nothing settling: put the entry back and
        # collect (which does nothing inside a running collection).
        gc.callbacks.append(_on_collection)
        gc.collect()


gc.callbacks.append(_on_collection)


def _export_finish(self: Any) -> None:
    if self._armed:
        self._cls.give_back(self._mv)
    else:
        self._done = True


def _export_del(self: Any, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
    try:
        if _collecting:
            _park(self)
        else:
            _export_finish(self)
    except Exception:
        if not _finalizing():  # see IoBufMut._del_local
            raise


def make_export_type(size: int) -> Any:
    """The ctypes exporter type for buffers of ``size`` bytes (one per size class)."""
    return type(
        f"_PooledExport{size}",
        (ctypes.c_ubyte * size,),
        {"__slots__": ("_cls", "_mv", "_armed", "_done"), "__del__": _export_del, "_finish": _export_finish},
    )


def _new_export(cls: SizeClass, mv: memoryview) -> Any:
    exp = cls.export_type.from_address(cls.addresses[id(mv)])
    exp._cls = cls
    exp._mv = mv
    exp._armed = False
    exp._done = False
    return exp


def _release(cls: SizeClass, mv: memoryview, exp: Any) -> None:
    """The last owner of pooled ``mv`` is going: return it now or arm its exporter."""
    if exp is None or exp._done:
        cls.give_back(mv)
    else:
        exp._armed = True


def _as_bytes(data: object, name: str) -> memoryview:
    """A 1-D format-'B' memoryview of any bytes-like ``data`` (no copy when contiguous)."""
    if isinstance(data, (IoBuf, IoBufMut)):
        return data._read_view()
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(data).__name__}") from None
    if view.c_contiguous:
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    return memoryview(view.tobytes())  # strided: the bytes in order, copied


def _preview(view: memoryview) -> str:
    if len(view) <= 32:
        return repr(bytes(view))
    return repr(bytes(view[:32]))[:-1] + "...'"


class _Lease:
    """Shared ownership of one buffer by IoBufs (and at most one IoBufMut).

    ``cls`` is the size class for pooled memory and None for untracked memory;
    ``exp`` is the exporter (pooled), ``_EXPORTED`` (untracked, views handed
    out) or None; ``grow`` says whether an IoBufMut recovered from it may grow.
    """

    __slots__ = ("cls", "mv", "exp", "grow")

    def __init__(self, cls: SizeClass | None, mv: memoryview, exp: Any, grow: bool) -> None:
        self.cls = cls
        self.mv = mv
        self.exp = exp
        self.grow = grow

    def view(self, start: int, end: int) -> memoryview:
        cls = self.cls
        if cls is None:
            # Untracked memory; or pooled memory this lease gave up (try_into_mut,
            # release), whose ``mv`` is then _DETACHED: an empty view, never a
            # plain slice of memory the pool owns.
            self.exp = _EXPORTED
            return _window(self.mv, start, end)
        exp = self.exp
        if exp is None:
            exp = self._first_export(cls)
        return memoryview(exp).cast("B")[start:end]

    def _first_export(self, cls: SizeClass) -> Any:
        # IoBufs sharing this lease may live in several threads: two of them
        # must never both create an exporter (the lease would arm only one, and
        # the other's views would not pin the buffer). Once per lease, so a
        # global lock costs nothing that matters.
        with _export_lock:
            fresh = _new_export(cls, self.mv)
            # Check after creating: a handler re-entering for this very lease may
            # have installed one meanwhile; then ours is dropped unused.
            exp = self.exp
            if exp is None:
                exp = self.exp = fresh
            return exp

    def address(self) -> int:
        """The base address of the shared memory; 0 when it has none (a frozen empty heap buffer)."""
        cls = self.cls
        if cls is not None:
            return cls.addresses[id(self.mv)]
        size = len(self.mv)
        return address_of(_window(self.mv, 0, size)) if size else 0

    def _finish(self) -> None:
        cls = self.cls
        if cls is not None:
            self.cls = None  # idempotent
            _release(cls, self.mv, self.exp)

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # _finish inlined: this runs whenever the last IoBuf of a buffer goes.
        try:
            cls = self.cls
            if cls is None:
                return
            if _collecting:  # see "Finalizers inside a garbage collection"
                _park(self)
                return
            self.cls = None  # idempotent
            _release(cls, self.mv, self.exp)
        except Exception:
            if not _finalizing():  # see IoBufMut._del_local
                raise


_VIEWS_ALIVE: Final = (
    "cannot release a pooled buffer while memoryviews (or arrays) of it are alive; release or drop them first"
)


def _iobuf(mv: memoryview, start: int, end: int, own: _Lease | None) -> IoBuf:
    b = _new(IoBuf)
    b._mv = mv
    b._start = start
    b._end = end
    b._own = own
    return b


def _empty_iobuf() -> IoBuf:
    return _iobuf(_NO_BYTES, 0, 0, None)


def _untracked(mv: memoryview, length: int, grow: bool) -> IoBufMut:
    b = _new(IoBufMut)
    b._mv = mv
    b._start = 0
    b._end = length
    b._cls = None
    b._aux = None
    b._grow = grow
    return b


def _check_alignment(alignment: object) -> int:
    align = check_nonneg("alignment", alignment)
    if align == 0 or align & (align - 1):
        raise ValueError(f"alignment must be a power of two, got {align}")
    return align


class _Readable:  # noqa: PLW1641 - unhashable here; IoBuf (immutable) defines __hash__
    """What IoBufMut and IoBuf share: the readable bytes ``_mv[_start:_end]``
    and the seed's ``Buf`` reads over them (``len``, ``remaining``, ``advance``,
    ``bytes``, ``==``). Each subclass owns how the memory is held and exported."""

    __slots__ = ("_mv", "_start", "_end")

    _mv: memoryview
    _start: int
    _end: int

    def __len__(self) -> int:
        return self._end - self._start

    def __bool__(self) -> bool:
        return self._end > self._start

    def remaining(self) -> int:
        """Readable bytes (same as ``len``)."""
        return self._end - self._start

    def advance(self, n: int) -> None:
        """Consume ``n`` readable bytes from the front."""
        count = check_nonneg("n", n)
        if count > self._end - self._start:
            raise ValueError(f"cannot advance past end of buffer: advance({count}) with {len(self)} readable")
        self._start += count

    # The hot readers, per build (see "Thread safety" above).
    if FREE_THREADED:

        def _read_view(self) -> memoryview:
            """Internal: the readable bytes, for use within one call only."""
            return memoryview(self._mv.obj).cast("B")[self._start : self._end]

        def __bytes__(self) -> bytes:
            # No cast: bytes() copies any format, and "<B" is one fewer view.
            return bytes(memoryview(self._mv.obj)[self._start : self._end])

    else:

        def _read_view(self) -> memoryview:
            """Internal: the readable bytes, for use within one call only."""
            return self._mv[self._start : self._end]

        def __bytes__(self) -> bytes:
            return bytes(self._mv[self._start : self._end])

    def __eq__(self, other: object) -> bool:
        try:
            theirs = _as_bytes(other, "other")
        except TypeError:
            return NotImplemented
        return self._read_view() == theirs


class IoBufMut(_Readable):
    """A mutable byte buffer with one owner: pooled, aligned, or growable heap memory.

    Bytes ``[0, len)`` are readable; ``[len, capacity)`` is writable spare room.
    Append with :meth:`put_slice`, or fill :meth:`spare_capacity` (e.g. with
    ``sock.recv_into``) and commit with :meth:`advance_mut`. :meth:`freeze`
    turns it into an immutable, shareable :class:`IoBuf` without copying.

    A pooled buffer goes back to its pool when its last owner and its last
    exported memoryview are gone (see the module notes on the safety rule).

    >>> b = IoBufMut(b"hello")
    >>> b.put_slice(b", world")
    >>> bytes(b.freeze())
    b'hello, world'
    """

    # Ownership states (see the module notes):
    #   direct pooled: _cls is the SizeClass, _aux None or the exporter;
    #   shared:        _cls None, _aux the _Lease shared with IoBufs;
    #   untracked:     _cls None, _aux None or _EXPORTED.
    # PoolCore.try_alloc (_alloc) builds the direct pooled state inline (the hot path).
    __slots__ = ("_cls", "_aux", "_grow")

    _cls: SizeClass | None
    _aux: Any
    _grow: bool

    def __init__(self, data: BytesLike = b"") -> None:
        if getattr(self, "_cls", None) is not None or hasattr(self, "_mv"):
            raise TypeError("IoBufMut.__init__ cannot re-initialise an existing buffer")
        src = _as_bytes(data, "data")
        self._cls = None
        self._aux = None
        self._grow = True
        self._mv = memoryview(bytearray(src))
        self._start = 0
        self._end = len(src)

    # -- constructors --------------------------------------------------------

    @classmethod
    def with_capacity(cls, capacity: int) -> IoBufMut:
        """An empty growable heap buffer with room for ``capacity`` bytes."""
        n = check_nonneg("capacity", capacity)
        return _untracked(memoryview(bytearray(n)), 0, True)

    @classmethod
    def zeroed(cls, length: int) -> IoBufMut:
        """A growable heap buffer holding ``length`` zero bytes."""
        n = check_nonneg("length", length)
        return _untracked(memoryview(bytearray(n)), n, True)

    @classmethod
    def with_alignment(cls, capacity: int, alignment: int) -> IoBufMut:
        """An empty fixed-capacity untracked buffer whose base is a multiple of ``alignment``.

        ``capacity == 0`` gives an empty growable heap buffer, as in the seed.
        """
        n = check_nonneg("capacity", capacity)
        align = _check_alignment(alignment)
        if n == 0:
            return _untracked(memoryview(bytearray(0)), 0, True)
        return _untracked(aligned_block(n, align, pooled=False), 0, False)

    @classmethod
    def zeroed_with_alignment(cls, length: int, alignment: int) -> IoBufMut:
        """A fixed-capacity untracked aligned buffer of ``length`` zero bytes."""
        n = check_nonneg("length", length)
        align = _check_alignment(alignment)
        if n == 0:
            return _untracked(memoryview(bytearray(0)), 0, True)
        return _untracked(aligned_block(n, align, pooled=False), n, False)

    # -- size and identity ---------------------------------------------------

    @property
    def capacity(self) -> int:
        """Bytes this buffer can hold from its read cursor without growing."""
        return len(self._mv) - self._start

    @property
    def is_pooled(self) -> bool:
        """True only for memory tracked by a pool (it returns there when dropped)."""
        if self._cls is not None:
            return True
        aux = self._aux
        return type(aux) is _Lease and aux.cls is not None

    @property
    def address(self) -> int:
        """Address of the first readable byte (0 when the buffer has no memory).

        A pooled or aligned buffer's base is aligned to the pool's or the
        requested alignment (a heap buffer's is not); after :meth:`advance`
        the address moves with the read cursor.
        """
        mv = self._mv
        if len(mv) == 0:
            return 0
        cls = self._cls
        if cls is not None:
            return cls.addresses[id(mv)] + self._start
        aux = self._aux
        if type(aux) is _Lease:
            return aux.address() + self._start
        return address_of(mv) + self._start

    # -- internal views --------------------------------------------------------

    def _export(self, start: int, end: int) -> memoryview:
        """A writable view of ``_mv[start:end]`` that is safe to hand to user code."""
        cls = self._cls
        aux = self._aux
        if cls is not None:
            if aux is None:
                fresh = _new_export(cls, self._mv)
                # Making it allocates, which may run a collection whose
                # finalizers export from this very buffer: one exporter only.
                aux = self._aux
                if aux is None:
                    aux = self._aux = fresh
            return memoryview(aux).cast("B")[start:end]
        if type(aux) is _Lease:
            return aux.view(start, end)
        if FREE_THREADED and type(self._mv.obj) is bytearray:
            # The view may travel to other threads: it must not share ``_mv``'s
            # managed buffer or the bytearray's export count (see ``_memory``).
            self._mv = shareable_view(self._mv)
        self._aux = _EXPORTED
        return _window(self._mv, start, end)

    def _share(self) -> _Lease:
        """Move direct ownership into a lease this buffer shares with new IoBufs."""
        aux = self._aux
        if type(aux) is _Lease:
            return aux
        # Ownership moves in plain attribute stores, giving up before taking:
        # an exception (say from a signal handler) in between can at worst
        # leak the buffer, never leave two owners that both return it.
        if FREE_THREADED and self._cls is None and type(self._mv.obj) is bytearray:
            # Untracked heap memory about to be seen by IoBufs in other threads.
            self._mv = shareable_view(self._mv)
        lease = _Lease(None, self._mv, None, self._grow)
        # The calls above may have run a collection whose finalizers shared this
        # very buffer: read the ownership only now, and move it with no call in
        # between (see "Counting holders").
        aux = self._aux
        if aux.__class__ is _Lease:
            return aux
        cls = self._cls
        self._aux = lease
        self._cls = None
        lease.exp = aux
        lease.cls = cls
        return lease

    def _detach(self, growable: bool) -> None:
        """Drop this buffer's hold on its memory (returning pooled memory if owned)."""
        cls, mv, aux = self._cls, self._mv, self._aux
        self._cls = None
        self._aux = None
        self._start = 0
        self._end = 0
        self._grow = growable
        self._mv = memoryview(bytearray(0)) if growable else _DETACHED
        if cls is not None:
            _release(cls, mv, aux)

    def _reserve(self, extra: int) -> None:
        """Make room for ``extra`` more bytes, growing a heap buffer by reallocation."""
        needed = self._end + extra
        if needed <= len(self._mv):
            return
        if not self._grow:
            if self._mv is _DETACHED:
                raise ValueError("this IoBufMut was frozen or converted and holds no memory")
            raise ValueError(
                f"{extra} more bytes exceed the fixed capacity ({self.capacity}, {len(self)} used)"
            )
        readable = self._end - self._start
        new_cap = max(readable + extra, 2 * (len(self._mv) - self._start), 64)
        fresh = bytearray(new_cap)
        fresh[:readable] = self._read_view()
        # Views handed out earlier keep the old memory alive; they stop aliasing.
        self._aux = None
        self._mv = memoryview(fresh)
        self._start = 0
        self._end = readable

    # -- writing ---------------------------------------------------------------

    def put_slice(self, data: BytesLike) -> None:
        """Append ``data``. A fixed-capacity buffer raises ``ValueError`` and writes nothing
        if it does not fit; a heap buffer grows."""
        src = _as_bytes(data, "data")
        n = len(src)
        if not n:
            return
        self._reserve(n)
        end = self._end + n
        self._mv[self._end : end] = src
        self._end = end

    def spare_capacity(self) -> memoryview:
        """A writable memoryview of ``[len, capacity)``, e.g. for ``recv_into``/``readinto``.

        Commit what was written with :meth:`advance_mut`.
        """
        return self._export(self._end, len(self._mv))

    def advance_mut(self, n: int) -> None:
        """Mark ``n`` bytes written into :meth:`spare_capacity` as readable."""
        count = check_nonneg("n", n)
        if count > len(self._mv) - self._end:
            raise ValueError(
                f"cannot advance past end of buffer: advance_mut({count}) with "
                f"{len(self._mv) - self._end} bytes of spare capacity"
            )
        self._end += count

    def set_len(self, n: int) -> None:
        """Set the readable length to ``n`` (<= capacity); new bytes hold whatever was there."""
        length = check_nonneg("n", n)
        if length > len(self._mv) - self._start:
            raise ValueError(f"set_len({length}) exceeds capacity({len(self._mv) - self._start})")
        self._end = self._start + length

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` readable bytes (no-op if ``n >= len``)."""
        length = check_nonneg("n", n)
        if length < self._end - self._start:
            self._end = self._start + length

    def clear(self) -> None:
        """Drop every readable byte, keeping the capacity."""
        self._end = self._start

    # -- reading (the seed's Buf) ----------------------------------------------

    def chunk(self) -> memoryview:
        """The readable bytes as one writable memoryview (same as :meth:`as_memoryview`)."""
        return self._export(self._start, self._end)

    def as_memoryview(self) -> memoryview:
        """A writable memoryview of the readable bytes.

        For a pooled buffer the memory stays out of the pool while this view
        (or anything made from it, such as a numpy array) is alive.
        """
        return self._export(self._start, self._end)

    def copy_to_bytes(self, n: int) -> IoBuf:
        """Split off the first ``n`` readable bytes as an :class:`IoBuf`, without copying.

        A partial split shares the memory (it stays out of the pool while
        either side lives); taking everything moves ownership into the result
        and leaves this buffer as a new empty heap buffer. ``n == 0`` returns a
        detached empty IoBuf.
        """
        count = check_nonneg("n", n)
        readable = self._end - self._start
        if count > readable:
            raise ValueError(f"copy_to_bytes out of bounds: {count} > {readable} readable")
        if count == 0:
            return _empty_iobuf()
        start = self._start
        own = self._share()  # first: it may replace _mv (free-threaded builds)
        out = _iobuf(own.mv, start, start + count, own)
        if count == readable:
            self._detach(growable=True)
        else:
            self._start = start + count
        return out

    def freeze(self) -> IoBuf:
        """An immutable :class:`IoBuf` of the readable bytes, without copying.

        The IoBuf takes over the memory (even when empty, as in the seed, so an
        empty frozen pooled buffer can still be turned back with
        :meth:`IoBuf.try_into_mut`). This buffer is left empty and detached:
        writes to it raise ``ValueError``.

        Freezing does not revoke writable views taken earlier
        (:meth:`spare_capacity`, :meth:`as_memoryview`, ``memoryview(buf)``):
        bytes written through one still show in the IoBuf and change its hash,
        as with any memoryview of a ``bytearray``. Release such views before
        freezing when the IoBuf must not change.
        """
        own = self._share()  # first: it may replace _mv (free-threaded builds)
        out = _iobuf(own.mv, self._start, self._end, own)
        self._detach(growable=False)
        return out

    # -- explicit release --------------------------------------------------------

    def release(self) -> None:
        """Give the memory back now, in the calling thread, and leave this buffer
        empty and detached (like :meth:`freeze` does; writes then raise).

        A pooled buffer goes back to the calling thread's cache at once, even
        from a reference cycle or on a free-threaded build, where a plain drop
        may be finalized later or in another thread. For pooled memory it raises
        ``BufferError``, and changes nothing, while a memoryview or array of the
        buffer is alive (untracked memory is let go, and the view keeps it). If
        IoBufs share the memory (after :meth:`copy_to_bytes`), this buffer only
        lets go of its share: the memory returns with the last of them. A second
        call does nothing. ``with pool.alloc(n) as buf:`` releases on exit.
        """
        cls = self._cls
        if cls is not None:
            # Detach with plain stores first, then count (see "Counting holders").
            exp, mv, pos, end = self._aux, self._mv, self._start, self._end
            self._cls = None
            self._aux = None
            self._mv = _DETACHED
            self._start = 0
            self._end = 0
            if exp is not None and _exporter_refs(exp) > _EXPORTER_ALONE_LOCAL:
                self._mv, self._start, self._end, self._aux, self._cls = mv, pos, end, exp, cls
                raise BufferError(_VIEWS_ALIVE)
            if exp is not None:
                exp._done = True  # the exporter's finalizer has nothing left to do
            cls.give_back(mv)
        elif self._aux.__class__ is _Lease:
            if _lease_refs(self._aux) > _LEASE_BASELINE or self._aux.cls is None:
                self._detach(growable=False)  # other holders keep the memory
                return
            if _view_refs(self._aux) > _EXPORT_BASELINE:
                raise BufferError(_VIEWS_ALIVE)
            cls, mv = self._aux.cls, self._aux.mv
            self._aux.cls = None
            self._aux.mv = _DETACHED
            self._mv = _DETACHED
            self._start = 0
            self._end = 0
            self._grow = False
            if _lease_refs(self._aux) > _LEASE_BASELINE or _view_refs(self._aux) > _EXPORT_BASELINE:
                # A holder or a view appeared meanwhile: it keeps the memory.
                self._aux.cls = cls
                self._aux.mv = mv
                self._aux = None
                return
            exp = self._aux.exp
            self._aux = None
            if exp is not None:
                exp._done = True
            cls.give_back(mv)
        elif self._mv is not _DETACHED:
            self._detach(growable=False)

    def __enter__(self) -> IoBufMut:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- Python protocols ------------------------------------------------------

    __hash__ = None  # type: ignore[assignment]

    def __buffer__(self, flags: int) -> memoryview:
        """PEP 688 (Python >= 3.12): ``memoryview(b)``, ``sock.send(b)`` ... see the readable bytes.

        The view is writable and, like :meth:`as_memoryview`, keeps pooled
        memory out of the pool until it is released or dropped.
        """
        return self._export(self._start, self._end)

    def __release_buffer__(self, view: memoryview) -> None:
        view.release()

    def __copy__(self) -> IoBufMut:
        """A growable heap copy of the readable bytes: a pooled buffer has one owner."""
        return IoBufMut(self._read_view())

    def __deepcopy__(self, memo: dict[int, Any]) -> IoBufMut:
        return IoBufMut(self._read_view())

    def __reduce__(self) -> tuple[type[IoBufMut], tuple[bytes]]:
        return (IoBufMut, (bytes(self),))

    def __repr__(self) -> str:
        kind = "pooled" if self.is_pooled else ("heap" if self._grow else "fixed")
        return (
            f"IoBufMut(len={len(self)}, capacity={self.capacity}, {kind}, data={_preview(self._read_view())})"
        )

    # The drop hot path: push straight onto this thread's cache when the
    # buffer is directly owned, exported no view and the cache has room.
    # Free-threaded builds: ``_cls`` is the allocating thread's facet of the
    # class (see _size_class, "Facets"). Both versions are correct on both builds.
    def _del_facets(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        try:
            try:
                cls = self._cls
            except AttributeError:  # never initialised (its __init__ raised): owns nothing
                return
            if cls is None:
                return
            if _collecting:  # see "Finalizers inside a garbage collection"
                _park(self)
                return
            self._cls = None  # a second __del__ call must not return the buffer twice
            aux = self._aux
            if aux is None:
                # The facet's cache is this thread's if this thread owns the
                # facet; no object other threads use is touched on the way
                # (each would be a contended atomic reference count). The
                # cache is read first: a facet is retired by storing
                # ``owner`` before ``cache``.
                cache = cls.cache
                if cls.owner == _get_ident():
                    assert cache is not None
                    if len(cache) < cls.cache_capacity:
                        cache.append(self._mv)
                    else:
                        cls.give_back_full(cache, self._mv)
                else:  # another thread's facet, or a retired one
                    cls.give_back(self._mv)
            else:
                _release(cls, self._mv, aux)
        except Exception:
            if not _finalizing():  # see _del_local
                raise

    def _del_local(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # With a GIL the class's threading.local is cheaper than the facet's
        # owner check (a get_ident() call).
        try:
            try:
                cls = self._cls
            except AttributeError:  # never initialised (its __init__ raised): owns nothing
                return
            if cls is None:
                return
            if _collecting:  # see "Finalizers inside a garbage collection"
                _park(self)
                return
            self._cls = None  # a second __del__ call must not return the buffer twice
            aux = self._aux
            if aux is None:
                try:
                    cache = cls.local.cache
                except AttributeError:  # this thread's first return to the class
                    cls.give_back(self._mv)
                    return
                if len(cache) < cls.cache_capacity:
                    cache.append(self._mv)
                else:
                    cls.give_back_full(cache, self._mv)
            else:
                _release(cls, self._mv, aux)
        except Exception:
            # At interpreter teardown module state is already gone and there
            # is nothing to return to; anywhere else an exception here is a
            # bug, reported (as "Exception ignored in") instead of leaking silently.
            # (``_finalizing`` is a default argument: globals may be None then.)
            if not _finalizing():
                raise

    __del__ = _del_facets if FREE_THREADED else _del_local

    def _finish(self) -> None:
        """Return the buffer of a parked IoBufMut (see "Finalizers inside a garbage collection")."""
        cls = self._cls
        if cls is not None:
            self._cls = None
            _release(cls, self._mv, self._aux)


class IoBuf(_Readable):
    """An immutable view of bytes; cheap to clone and slice (neither copies).

    ``IoBuf(data)`` wraps ``bytes`` without copying and copies any other
    bytes-like object. Views of pooled memory keep it out of the pool until
    the last clone, slice and exported memoryview is gone.

    >>> b = IoBuf(b"header:payload")
    >>> head = b.split_to(7)
    >>> bytes(head), bytes(b), b[0:3] == b"pay"
    (b'header:', b'payload', True)
    """

    __slots__ = ("_own",)

    _own: _Lease | None

    def __init__(self, data: BytesLike = b"") -> None:
        if type(data) is not bytes:
            data = bytes(_as_bytes(data, "data"))
        self._mv = memoryview(data)
        self._start = 0
        self._end = len(data)
        self._own = None

    @classmethod
    def copy_from_slice(cls, data: BytesLike) -> IoBuf:
        """An IoBuf holding a copy of ``data`` (always copies, even ``bytes``)."""
        copied = bytes(_as_bytes(data, "data"))
        return _iobuf(memoryview(copied), 0, len(copied), None)

    # -- size and identity -----------------------------------------------------

    @property
    def is_pooled(self) -> bool:
        """True only for memory tracked by a pool."""
        own = self._own
        return own is not None and own.cls is not None

    @property
    def address(self) -> int:
        """Address of the first readable byte (0 for an empty, detached IoBuf)."""
        if self._end == self._start and self._own is None:
            return 0
        own = self._own
        if own is not None:
            return own.address() + self._start
        base = ctypes.cast(ctypes.c_char_p(self._mv.obj), ctypes.c_void_p).value  # type: ignore[arg-type]
        return (base or 0) + self._start

    # -- views -----------------------------------------------------------------

    def as_memoryview(self) -> memoryview:
        """A read-only memoryview of the bytes; it keeps pooled memory out of the pool."""
        own = self._own
        if own is None:
            return _window(self._mv, self._start, self._end)
        return own.view(self._start, self._end).toreadonly()

    def chunk(self) -> memoryview:
        """The readable bytes as one read-only memoryview (same as :meth:`as_memoryview`)."""
        return self.as_memoryview()

    def _set_detached(self) -> None:
        self._mv = _NO_BYTES
        self._start = 0
        self._end = 0
        self._own = None

    # -- zero-copy splitting ------------------------------------------------------

    def slice(self, start: int, stop: int) -> IoBuf:
        """The bytes ``[start, stop)`` of this view as a new IoBuf (no copy).

        Bounds are strict: ``0 <= start <= stop <= len`` or ``ValueError``.
        Use ``b[start:stop]`` for Python's clamping and negative indices.
        """
        a = check_nonneg("start", start)
        b = check_nonneg("stop", stop)
        length = self._end - self._start
        if a > b:
            raise ValueError(f"slice start must be <= stop, got {a} > {b}")
        if b > length:
            raise ValueError(f"slice out of bounds: stop {b} > len {length}")
        if a == b:
            return _empty_iobuf()
        return _iobuf(self._mv, self._start + a, self._start + b, self._own)

    def __getitem__(self, key: int | builtins.slice) -> Any:
        if isinstance(key, slice):
            a, b, step = key.indices(self._end - self._start)
            if step != 1:
                raise ValueError(f"IoBuf slices need step 1, got {step}")
            if b <= a:
                return _empty_iobuf()
            return _iobuf(self._mv, self._start + a, self._start + b, self._own)
        if isinstance(key, int) and not isinstance(key, bool):
            length = self._end - self._start
            i = key + length if key < 0 else key
            if not 0 <= i < length:
                raise IndexError(f"IoBuf index {key} out of range for length {length}")
            return self._mv[self._start + i]
        raise TypeError(f"IoBuf indices must be int or slice, not {type(key).__name__}")

    def split_to(self, at: int) -> IoBuf:
        """Remove and return the first ``at`` bytes; this view keeps the rest."""
        n = check_nonneg("at", at)
        length = self._end - self._start
        if n > length:
            raise ValueError(f"split_to out of bounds: {n} <= {length} does not hold")
        if n == 0:
            return _empty_iobuf()
        start = self._start
        out = _iobuf(self._mv, start, start + n, self._own)
        if n == length:
            self._set_detached()
        else:
            self._start = start + n
        return out

    def copy_to_bytes(self, n: int) -> IoBuf:
        """Take the first ``n`` bytes as an IoBuf (no copy), advancing this view.

        Taking everything moves ownership to the result (this view then pins
        nothing); ``n == 0`` returns a detached empty IoBuf and does not advance.
        """
        count = check_nonneg("n", n)
        length = self._end - self._start
        if count > length:
            raise ValueError(f"copy_to_bytes out of bounds: {count} > {length} readable")
        return self.split_to(count)

    def clone(self) -> IoBuf:
        """Another view of the same bytes with its own cursor (no copy)."""
        if self._end == self._start:
            return _empty_iobuf()
        return _iobuf(self._mv, self._start, self._end, self._own)

    __copy__ = clone

    def __buffer__(self, flags: int) -> memoryview:
        """PEP 688 (Python >= 3.12): a read-only view of the bytes that pins pooled memory."""
        return self.as_memoryview()

    def __release_buffer__(self, view: memoryview) -> None:
        view.release()

    def __deepcopy__(self, memo: dict[int, Any]) -> IoBuf:
        return IoBuf(bytes(self))

    def __reduce__(self) -> tuple[type[IoBuf], tuple[bytes]]:
        return (IoBuf, (bytes(self),))

    # -- explicit release ----------------------------------------------------------------

    def release(self) -> None:
        """Let go of this view's share of the memory now and leave it empty.

        When it is the last share of a pooled buffer, the buffer goes back to
        the calling thread's cache at once; then ``BufferError`` is raised, and
        nothing changes, while a memoryview or array of the memory is alive.
        Other clones and slices keep the memory (and views of it) valid. A
        second call does nothing. ``with frame:`` releases on exit.
        """
        if self._own is None:
            self._set_detached()
            return
        if _lease_refs(self._own) > _LEASE_BASELINE or self._own.cls is None:
            self._set_detached()  # other holders keep the memory
            return
        if _view_refs(self._own) > _EXPORT_BASELINE:
            raise BufferError(_VIEWS_ALIVE)
        # Empty the lease and this view with plain stores, then count again
        # (see "Counting holders").
        cls, mv = self._own.cls, self._own.mv
        self._own.cls = None
        self._own.mv = _DETACHED
        self._mv = _NO_BYTES
        self._start = 0
        self._end = 0
        if _lease_refs(self._own) > _LEASE_BASELINE or _view_refs(self._own) > _EXPORT_BASELINE:
            # A holder or a view appeared meanwhile: it keeps the memory.
            self._own.cls = cls
            self._own.mv = mv
            self._own = None
            return
        exp = self._own.exp
        self._own = None
        if exp is not None:
            exp._done = True
        cls.give_back(mv)

    def __enter__(self) -> IoBuf:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- back to mutable -------------------------------------------------------------

    def try_into_mut(self) -> IoBufMut | None:
        """An IoBufMut over the same memory, if this view is the only thing reaching it.

        Succeeds without copying only when no clone, slice, other IoBuf,
        IoBufMut, exported memoryview or array shares the memory; then this
        IoBuf is left empty and detached. Otherwise returns None and changes
        nothing. The result keeps the readable window; its capacity is the
        buffer size minus this view's offset. ``bytes``-backed views never
        convert (``bytes`` is immutable).
        """
        if self._own is None:
            return None
        b = _new(IoBufMut)  # first: see "Counting holders"
        if _lease_refs(self._own) > _LEASE_BASELINE or _view_refs(self._own) > _EXPORT_BASELINE:
            return None
        if self._own.exp is not None and self._own.cls is None:
            return None  # untracked memory that handed out views: refuse conservatively
        # Move everything with plain stores (no local bound to the lease: the
        # count below must see only this view's reference), then count again.
        cls, mv, start, end = self._own.cls, self._own.mv, self._start, self._end
        b._aux = self._own.exp
        b._grow = self._own.grow
        self._own.cls = None
        self._own.exp = None
        self._own.mv = _DETACHED  # an emptied lease exports nothing (see _Lease.view)
        self._mv = _NO_BYTES
        self._start = 0
        self._end = 0
        if _lease_refs(self._own) > _LEASE_BASELINE or (
            b._aux is not None and _exporter_refs(b._aux) > _EXPORTER_ALONE
        ):
            # A holder or a view appeared meanwhile: put everything back, refuse.
            self._own.cls = cls
            self._own.exp = b._aux
            self._own.mv = mv
            self._mv = mv
            self._start = start
            self._end = end
            b._aux = None
            return None
        b._mv = mv
        b._start = start
        b._end = end
        b._cls = cls
        self._own = None
        return b

    def into_mut(self) -> IoBufMut:
        """:meth:`try_into_mut`, or else a growable heap copy. This IoBuf is left empty."""
        out = self.try_into_mut()
        if out is None:
            out = IoBufMut(self._read_view())
            self._set_detached()
        return out

    def into_mut_with_pool(self, pool: BufferPool) -> IoBufMut:
        """:meth:`try_into_mut`, or else a copy into ``pool.alloc(len)``. This IoBuf is left empty."""
        from ._pool import BufferPool  # noqa: PLC0415 - _pool imports this module

        if not isinstance(pool, BufferPool):
            raise TypeError(f"pool must be a BufferPool, not {type(pool).__name__}")
        out = self.try_into_mut()
        if out is None:
            out = pool.alloc(len(self))
            out.put_slice(self._read_view())
            self._set_detached()
        return out

    # -- searching and compacting ---------------------------------------------------------

    def find(
        self, sub: BytesLike | int, start: SupportsIndex | None = None, end: SupportsIndex | None = None
    ) -> int:
        """The lowest index of ``sub`` in this view's bytes ``[start:end]``, or -1, as ``bytes.find``."""
        needle = _needle(sub)
        # Indices are converted before the window is read: __index__ may run
        # Python code that moves this view.
        a = 0 if start is None else operator.index(start)
        b = sys.maxsize if end is None else operator.index(end)
        base = self._start
        n = self._end - base
        # bytes.find's index rules: negatives count from the end; ``end`` is
        # clamped to the length, ``start`` is not (past the end: nothing found).
        b = n if b > n else max(b + n, 0) if b < 0 else b
        a = max(a + n, 0) if a < 0 else a
        if b - a < len(needle):
            return -1
        if not needle:
            return a
        finder = _finder(needle) if len(needle) <= 64 else re.compile(re.escape(needle))
        match = finder.search(_window(self._mv, base + a, base + b))
        return -1 if match is None else match.start() + a

    def compact(self) -> IoBuf:
        """These bytes in memory of exactly their size: ``self`` when the view
        already spans all of its memory, else a copy on the heap.

        Keep the result instead of a small view of a large buffer: the large
        buffer goes back to its pool once nothing else views it.

        >>> big = IoBuf(bytes(4096))
        >>> small = big[:10].compact()
        >>> len(small), small.compact() is small
        (10, True)
        """
        start, end = self._start, self._end
        if start == end:
            return _empty_iobuf()
        if start == 0 and end == self._mv.nbytes:
            return self
        data = bytes(_window(self._mv, start, end))
        return _iobuf(memoryview(data), 0, len(data), None)

    # -- Python protocols ---------------------------------------------------------------

    def __hash__(self) -> int:
        return hash(bytes(self))

    def __repr__(self) -> str:
        kind = "pooled" if self.is_pooled else "unpooled"
        return f"IoBuf(len={len(self)}, {kind}, data={_preview(self._read_view())})"


# Counting holders. ``try_into_mut`` and ``release`` count references with
# ``sys.getrefcount`` and act on the count. A garbage collection may run
# between the count and the act, and its finalizers may make a holder (a clone,
# a view) that the count did not see: on 3.11 at any allocation, on 3.12+ at
# any call or loop (a pending collection runs at the interpreter's eval
# breaker). So they allocate what they need first, act with plain attribute
# stores only (no call, hence no collection, in between), leaving the object
# they act on empty, and then count again: if a holder appeared, they put
# everything back. A finalizer that runs after the act finds nothing to reach.
# Each count is its own function returning a small int (cached, never
# allocated); each is called with the same reference shape it was calibrated
# with (a slot, ``holder._own``, or a local).


def _lease_refs(own: _Lease) -> int:
    """References to the lease ``own``: call it as ``_lease_refs(holder._own)`` (or
    ``holder._aux``) with no local bound to the lease; each IoBuf/IoBufMut
    sharing it adds one."""
    return _getrefcount(own)


def _view_refs(own: _Lease) -> int:
    """References to the exporter of ``own`` (0 if none), called like
    :func:`_lease_refs`; each live ``memoryview(exporter)`` family adds one."""
    exp = own.exp
    return 0 if exp is None else _getrefcount(exp)


def _exporter_refs(exp: Any) -> int:
    """Reference count of a directly owned buffer's exporter: call it as
    ``_exporter_refs(buf._aux)``; each live ``memoryview(exporter)`` family adds one."""
    return _getrefcount(exp)


def _calibrate() -> tuple[int, int, int]:
    """What :func:`_lease_refs`, :func:`_view_refs` and :func:`_exporter_refs`
    return when the holder's slot is the only reference to lease and exporter."""
    own = _Lease(None, _DETACHED, object(), False)
    buf = _iobuf(_DETACHED, 0, 0, own)
    del own
    lease_refs = _lease_refs(buf._own)  # type: ignore[arg-type]
    view_refs = _view_refs(buf._own)  # type: ignore[arg-type]
    buf._own.exp = None  # type: ignore[union-attr]
    mut = _untracked(_DETACHED, 0, False)
    mut._aux = object()
    alone = _exporter_refs(mut._aux)
    mut._aux = None
    return lease_refs, view_refs, alone


def _calibrate_local() -> int:
    """What :func:`_exporter_refs` returns for an exporter held by one local only."""
    exp = object()
    return _exporter_refs(exp)


_LEASE_BASELINE, _EXPORT_BASELINE, _EXPORTER_ALONE = _calibrate()
_EXPORTER_ALONE_LOCAL: Final = _calibrate_local()


# -- package-internal helpers for receive paths (asyncio adapter) ---------------


def split_filled(buf: IoBufMut) -> IoBuf:
    """Split ``buf``'s readable bytes off as an IoBuf sharing its memory; ``buf``
    keeps its spare capacity and stays writable past them.

    Unlike :meth:`IoBufMut.copy_to_bytes` this never detaches ``buf`` when it
    takes everything, so a receive loop can keep filling one pooled buffer.
    """
    start, end = buf._start, buf._end
    if start == end:
        return _empty_iobuf()
    own = buf._share()  # first: it may replace _mv (free-threaded builds)
    out = _iobuf(own.mv, start, end, own)
    buf._start = end
    return out


def commit_received(buf: IoBufMut, n: int, chunks: deque[IoBuf]) -> bool:
    """The receive path's commit: mark ``n`` bytes written into ``buf``'s spare
    capacity readable and split them off onto the end of ``chunks`` (a deque
    of IoBufs that only its owner holds) as a view sharing ``buf``'s memory,
    merged with the last chunk when it ends where they start. True when
    ``buf`` has no spare capacity left."""
    buf.advance_mut(n)
    if n:
        piece = split_filled(buf)
        joined = join_adjacent(chunks[-1], piece) if chunks else None
        if joined is not None:
            chunks[-1] = joined
        else:
            chunks.append(piece)
    return buf.capacity == buf._end - buf._start


def reclaim_received(buf: IoBufMut) -> bool:
    """The receive path's reuse of a drained buffer: when every byte committed
    to pooled ``buf`` was split off and nothing but ``buf`` reaches its memory
    (no IoBuf on its lease, no live view of its exporter), rewind ``buf`` so its
    whole capacity is spare again, and return True; else change nothing and
    return False. Counted as :meth:`IoBuf.try_into_mut` counts (see "Counting
    holders"): act with plain stores, count again, put back if a holder appeared."""
    if buf._start != buf._end or type(buf._aux) is not _Lease or buf._aux.cls is None:
        return False
    if _lease_refs(buf._aux) > _LEASE_BASELINE or _view_refs(buf._aux) > _EXPORT_BASELINE:
        return False
    end = buf._end
    buf._start = 0
    buf._end = 0
    if _lease_refs(buf._aux) > _LEASE_BASELINE or _view_refs(buf._aux) > _EXPORT_BASELINE:
        buf._start = end
        buf._end = end
        return False
    return True


def take_front(chunks: deque[IoBuf], n: int, copy_max: int) -> IoBuf | None:
    """The first ``n`` bytes of a chain's chunks (a deque of non-empty IoBufs),
    taken from it, when they lie in its first chunk: copied into a right-sized
    heap buffer when ``n <= copy_max`` (so what a caller keeps pins no
    receive buffer), else a view of the chunk. A drained chunk is removed.
    None, changing nothing, when the first chunk holds fewer than ``n`` bytes
    or ``n`` is not an int >= 0; the caller updates its cached length."""
    if type(n) is not int or n < 0:
        return None
    if n == 0:
        return _empty_iobuf()
    if not chunks:
        return None
    first = chunks[0]
    start = first._start
    avail = first._end - start
    if n > avail:
        return None
    if n <= copy_max:
        data = bytes(_window(first._mv, start, start + n))
        out = _iobuf(memoryview(data), 0, n, None)
    else:
        out = _iobuf(first._mv, start, start + n, first._own)
    if n == avail:
        chunks.popleft()
    else:
        first._start = start + n
    return out


def sendable(buf: IoBuf) -> bytes | memoryview:
    """What a transport is handed for ``buf``: the ``bytes`` object it wraps
    whole (no view to make, and bytes are what transports take fastest), else
    a read-only memoryview of its bytes (``b""`` when empty)."""
    if buf._start == buf._end:
        return b""
    if buf._own is None:
        obj = buf._mv.obj
        if type(obj) is bytes and buf._start == 0 and buf._end == len(obj):
            return obj
    return buf.as_memoryview()


def _needle(sub: object) -> bytes:
    """``find``'s ``sub`` as bytes: a bytes-like object, or an int in range(256) (as ``bytes.find``)."""
    if isinstance(sub, int):  # bools included, as bytes.find
        if not 0 <= sub < 256:
            raise ValueError("byte must be in range(0, 256)")
        return bytes((sub,))
    if type(sub) is bytes:
        return sub
    return bytes(_as_bytes(sub, "sub"))


@functools.lru_cache(maxsize=64)
def _finder(needle: bytes) -> re.Pattern[bytes]:
    """A compiled search for a short needle (separators), cached."""
    return re.compile(re.escape(needle))


def join_adjacent(first: IoBuf, second: IoBuf) -> IoBuf | None:
    """One IoBuf covering ``first`` then ``second`` if they are adjacent ranges of
    one shared buffer (as :func:`split_filled` produces), else None. No copy."""
    own = first._own
    if own is None or own is not second._own or first._end != second._start:
        return None
    return _iobuf(first._mv, first._start, second._end, own)
