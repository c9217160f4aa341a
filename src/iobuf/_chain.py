"""``IoBufs``: an ordered chain of immutable :class:`~iobuf.IoBuf` chunks.

What it owns: a ``collections.deque`` of ``IoBuf`` objects that belong to the
chain alone, plus a cached total length. Anything handed in is converted on the
way in, so no caller holds a reference to a stored chunk: an ``IoBuf`` is
cloned (its memory is shared, its cursor is not), an ``IoBufMut`` is frozen
(the chain takes its bytes over; the ``IoBufMut`` is left detached, even when it
was empty), and any other bytes-like object is wrapped (``bytes``, without
copying) or copied (everything mutable). Chunks leave the chain the same way:
:meth:`IoBufs.chunks` and iteration hand out clones. The chain moves the
cursors of its own chunks in place (``advance``, ``split_to``), which is why
they must stay private.

Invariants:
- No stored chunk is empty. Input that is empty is dropped, and a chunk that an
  operation drains is removed at once (which also releases its hold on pooled
  memory).
- ``len(chain)`` (the cached ``_len``) equals the sum of the chunk lengths, so
  ``chunk_count == 0`` exactly when ``len(chain) == 0``.
- Every method checks all of its arguments before it changes anything; an
  exception leaves the chain (and any ``IoBufMut`` argument) as it was.

Bytes move between chunks without copying wherever the result can be one view
(``split_to``, ``copy_to_bytes`` within the first chunk, ``coalesce`` of a
single chunk); only results that must be contiguous and span several chunks
are copied.

Thread safety: an ``IoBufs`` is a mutable container, like a ``list``; do not
mutate one from several threads at once, nor read it while another thread
mutates it. The ``IoBuf`` chunks it hands out are independent views that may be
shared with and dropped by any thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import check_nonneg
from ._impl import IoBuf, IoBufMut, _as_bytes, _empty_iobuf, _iobuf, _preview

if TYPE_CHECKING:
    from ._pool import BufferPool
    from ._views import BytesLike

    ChainInput = Iterable[BytesLike] | BytesLike

__all__ = ["IoBufs", "front_views"]

_ACCEPTED = "an IoBuf, IoBufMut or bytes-like object"


def _detached_copy(view: memoryview) -> IoBuf | None:
    """A new ``bytes``-backed IoBuf holding a copy of ``view`` (None when empty)."""
    if not view:
        return None
    data = bytes(view)
    return _iobuf(memoryview(data), 0, len(data), None)


def _convert(item: object, name: str) -> IoBuf | IoBufMut | None:
    """Check ``item`` and turn it into a chain-private IoBuf, without side effects.

    An ``IoBufMut`` is returned as is: freezing it is the caller's last step,
    taken only once every argument has been checked. None means "empty, drop".
    """
    if isinstance(item, IoBuf):
        return item.clone() if item._end > item._start else None
    if isinstance(item, IoBufMut):
        return item
    if type(item) is bytes:
        return _iobuf(memoryview(item), 0, len(item), None) if item else None
    return _detached_copy(_as_bytes(item, name))


def _settle(item: IoBuf | IoBufMut | None) -> IoBuf | None:
    """The stored form of a converted item: freezes an ``IoBufMut``; None when empty."""
    if isinstance(item, IoBufMut):
        frozen = item.freeze()
        return frozen if frozen._end > frozen._start else None
    return item


def front_views(chunks: Iterable[IoBuf], count: int) -> list[memoryview]:
    """Internal views of the first ``count`` bytes of ``chunks`` (which hold at
    least that many), for use within one call."""
    views: list[memoryview] = []
    for chunk in chunks:
        view = chunk._read_view()
        if len(view) >= count:
            views.append(view[:count])
            break
        views.append(view)
        count -= len(view)
    return views


def _same_bytes(ours: Iterable[memoryview], theirs: Iterable[memoryview]) -> bool:
    """True if two sequences of byte views hold the same bytes (empty views are skipped)."""
    left = filter(None, ours)
    right = filter(None, theirs)
    a = next(left, None)
    b = next(right, None)
    while a is not None and b is not None:
        n = min(len(a), len(b))
        if a[:n] != b[:n]:
            return False
        a = a[n:] or next(left, None)
        b = b[n:] or next(right, None)
    return a is None and b is None


class IoBufs:
    """A chain of immutable :class:`~iobuf.IoBuf` chunks, read as one byte stream.

    Built for vectored I/O: a message made of a header, a payload that lives
    in a pooled buffer and a trailer can be held, split and consumed without
    gluing the pieces together. ``IoBufs(iterable)`` takes IoBuf, IoBufMut
    (frozen) and bytes-like items; a single IoBuf, IoBufMut or bytes-like object
    is also accepted and becomes the only chunk. Empty pieces are dropped.

    >>> chain = IoBufs([b"head:", IoBuf(b"body"), bytearray(b":tail")])
    >>> len(chain), chain.chunk_count
    (14, 3)
    >>> bytes(chain.split_to(7)), bytes(chain)
    (b'head:bo', b'dy:tail')
    >>> chain.coalesce() == b"dy:tail"
    True

    ``copy.copy`` (= :meth:`clone`) shares the chunks' memory; ``copy.deepcopy``
    and pickling (every protocol) copy the bytes, keeping the chunk layout.
    """

    __slots__ = ("_chunks", "_len")

    _chunks: deque[IoBuf]
    _len: int

    def __init__(self, iterable: ChainInput = ()) -> None:
        if isinstance(iterable, (IoBuf, IoBufMut)):
            items: list[object] = [iterable]
        else:
            try:
                memoryview(iterable)  # type: ignore[arg-type]
            except TypeError:
                try:
                    source = iter(iterable)  # type: ignore[arg-type]
                except TypeError:
                    raise TypeError(
                        f"iterable must be an iterable of {_ACCEPTED}s (or one such object), "
                        f"not {type(iterable).__name__}"
                    ) from None
                items = list(source)
            else:
                items = [iterable]
        converted = [_convert(item, "iterable items") for item in items]
        chunks: deque[IoBuf] = deque()
        total = 0
        # An IoBufMut given twice is frozen once: later occurrences are clones
        # of that (freezing again would give an empty chunk and lose its bytes).
        frozen: dict[int, IoBuf | None] = {}
        for item in converted:
            if isinstance(item, IoBufMut):
                if id(item) in frozen:
                    first = frozen[id(item)]
                    chunk = None if first is None else first.clone()
                else:
                    chunk = frozen[id(item)] = _settle(item)
            else:
                chunk = item
            if chunk is not None:
                chunks.append(chunk)
                total += chunk._end - chunk._start
        self._chunks = chunks
        self._len = total

    # -- building --------------------------------------------------------------

    def append(self, buf: BytesLike) -> None:
        """Add ``buf`` at the end (an IoBufMut is frozen; empty input is ignored)."""
        chunk = _settle(_convert(buf, "buf"))
        if chunk is not None:
            self._chunks.append(chunk)
            self._len += chunk._end - chunk._start

    def prepend(self, buf: BytesLike) -> None:
        """Add ``buf`` at the front (an IoBufMut is frozen; empty input is ignored)."""
        chunk = _settle(_convert(buf, "buf"))
        if chunk is not None:
            self._chunks.appendleft(chunk)
            self._len += chunk._end - chunk._start

    def clone(self) -> IoBufs:
        """Another chain over the same chunks' memory, with its own cursors (no copy)."""
        out = _new_chain()
        out._chunks = deque(c.clone() for c in self._chunks)
        out._len = self._len
        return out

    __copy__ = clone

    def __deepcopy__(self, memo: dict[int, Any]) -> IoBufs:
        out = _new_chain()
        out._chunks = deque(IoBuf(bytes(c._read_view())) for c in self._chunks)
        out._len = self._len
        return out

    def __reduce__(self) -> tuple[type[IoBufs], tuple[list[bytes]]]:
        """Pickle (any protocol) as a copy of each chunk's bytes, like IoBuf and IoBufMut.

        The unpickled chain has the same bytes and chunk layout and holds no
        pooled memory (as :func:`copy.deepcopy` gives).
        """
        return (IoBufs, ([bytes(c._read_view()) for c in self._chunks],))

    # -- shape -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    @property
    def chunk_count(self) -> int:
        """Number of chunks (all non-empty): 0 exactly when the chain is empty."""
        return len(self._chunks)

    def chunks(self) -> list[IoBuf]:
        """The chunks in order, as clones: reading or advancing them leaves the chain alone."""
        return [c.clone() for c in self._chunks]

    def __iter__(self) -> Iterator[IoBuf]:
        """Iterate over clones of the chunks as they are now (see :meth:`chunks`)."""
        return iter(self.chunks())

    def as_single(self) -> IoBuf | None:
        """The whole content as one IoBuf if it is at most one chunk, else None.

        One chunk gives a clone of it (zero-copy); an empty chain gives an empty
        IoBuf (the empty chain counts as one empty piece, as in the seed); two or
        more chunks give None (use :meth:`coalesce` to join them).
        """
        chunks = self._chunks
        if not chunks:
            return _empty_iobuf()
        if len(chunks) == 1:
            return chunks[0].clone()
        return None

    # -- reading (the seed's Buf) ----------------------------------------------

    def remaining(self) -> int:
        """Readable bytes in all chunks (same as ``len``)."""
        return self._len

    def _drop_front(self, n: int) -> None:
        """Consume ``n <= len`` bytes from the front, removing drained chunks."""
        chunks = self._chunks
        self._len -= n
        while n:
            first = chunks[0]
            size = first._end - first._start
            if n < size:
                first._start += n
                return
            chunks.popleft()
            n -= size

    def advance(self, n: int) -> None:
        """Consume ``n`` bytes from the front, across chunk boundaries."""
        count = check_nonneg("n", n)
        if count > self._len:
            raise ValueError(f"cannot advance past end of buffer: advance({count}) with {self._len} readable")
        self._drop_front(count)

    def copy_to_bytes(self, n: int) -> IoBuf:
        """Take the first ``n`` bytes as one IoBuf, advancing the chain.

        Zero-copy when the first chunk holds all ``n`` bytes (the result shares
        its memory); otherwise the bytes are copied into a new ``bytes``-backed
        IoBuf. ``n == 0`` returns an empty detached IoBuf.
        """
        count = check_nonneg("n", n)
        if count > self._len:
            raise ValueError(f"copy_to_bytes: not enough data: {count} requested, {self._len} readable")
        if count == 0:
            return _empty_iobuf()
        chunks = self._chunks
        first = chunks[0]
        if count <= first._end - first._start:
            out = first.split_to(count)
            if first._end == first._start:
                chunks.popleft()
            self._len -= count
            return out
        data = b"".join(front_views(chunks, count))
        self._drop_front(count)
        return _iobuf(memoryview(data), 0, count, None)

    def split_to(self, at: int) -> IoBufs:
        """Remove and return the first ``at`` bytes as a new chain; this one keeps the rest.

        Whole chunks move without copying; a chunk that straddles ``at`` is split
        with :meth:`IoBuf.split_to` (both halves share its memory).
        """
        n = check_nonneg("at", at)
        total = self._len
        if n > total:
            raise ValueError(f"split_to out of bounds: {n} <= {total} does not hold")
        out = _new_chain()
        if n == total:
            out._chunks = self._chunks
            out._len = total
            self._chunks = deque()
            self._len = 0
            return out
        taken: deque[IoBuf] = deque()
        out._chunks = taken
        out._len = n
        if n == 0:
            return out
        chunks = self._chunks
        self._len = total - n
        while n:
            first = chunks[0]
            size = first._end - first._start
            if n < size:
                taken.append(first.split_to(n))
                break
            taken.append(chunks.popleft())
            n -= size
        return out

    # -- joining -----------------------------------------------------------------

    def coalesce(self) -> IoBuf:
        """The whole content as one IoBuf; the chain is left unchanged.

        A single chunk is returned zero-copy (a clone sharing its memory); an
        empty chain gives an empty IoBuf; several chunks are copied into one new
        ``bytes``-backed IoBuf.
        """
        single = self.as_single()
        if single is not None:
            return single
        data = b"".join(c._read_view() for c in self._chunks)
        return _iobuf(memoryview(data), 0, len(data), None)

    def coalesce_with_pool(self, pool: BufferPool) -> IoBuf:
        """Like :meth:`coalesce`, but several chunks are copied into ``pool.alloc(len)``.

        The result is pooled when the pool can serve the size (otherwise it is
        the pool's untracked fallback buffer). The chain is left unchanged.
        """
        from ._pool import BufferPool  # noqa: PLC0415 - _pool imports _views; keep imports acyclic

        if not isinstance(pool, BufferPool):
            raise TypeError(f"pool must be a BufferPool, not {type(pool).__name__}")
        single = self.as_single()
        if single is not None:
            return single
        buf = pool.alloc(self._len)
        for chunk in self._chunks:
            buf.put_slice(chunk._read_view())
        return buf.freeze()

    # -- Python protocols --------------------------------------------------------

    def __bytes__(self) -> bytes:
        return b"".join(c._read_view() for c in self._chunks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IoBufs):
            if other._len != self._len:
                return False
            theirs: Iterable[memoryview] = (c._read_view() for c in other._chunks)
        else:
            try:
                view = _as_bytes(other, "other")
            except TypeError:
                return NotImplemented
            if len(view) != self._len:
                return False
            theirs = (view,)
        return _same_bytes((c._read_view() for c in self._chunks), theirs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head: list[memoryview] = []
        need = 33  # one more than _preview shows, so it knows to add "..."
        for chunk in self._chunks:
            view = chunk._read_view()[:need]
            head.append(view)
            need -= len(view)
            if not need:
                break
        sizes = [c._end - c._start for c in self._chunks]
        shown = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
        return (
            f"IoBufs(len={self._len}, chunk_count={len(sizes)}, chunk_lens=[{shown}], "
            f"data={_preview(memoryview(b''.join(head)))})"
        )


def _new_chain() -> IoBufs:
    """An uninitialised IoBufs; the caller sets ``_chunks`` and ``_len``."""
    return object.__new__(IoBufs)
