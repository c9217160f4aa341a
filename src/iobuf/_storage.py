"""``BlockFile``: positional file I/O through pooled, page-aligned buffers.

What it owns: opening a file with ``O_DIRECT`` when the filesystem and the
pool allow it (falling back to ordinary buffered I/O, with the reason kept in
:attr:`BlockFile.fallback_reason`), and reading/writing at offsets through
buffers of one :class:`~iobuf.BufferPool`.

Invariants:
- ``direct`` never changes after opening. While it is true every offset and
  every length passed in is a multiple of :attr:`BlockFile.block_size`
  (checked before any system call, ``ValueError`` otherwise), and every buffer
  given to the kernel starts on a ``block_size`` boundary and spans whole
  blocks: pooled buffers of a page-aligned pool qualify as they are; any other
  data is first copied into such buffers ("bounce" copies, at most
  :data:`STAGE_BYTES` at a time).
- ``read_at`` returns fewer bytes than asked only at end of file; ``write_at``
  writes everything or raises ``OSError`` (partial writes are retried).
- ``write_at`` borrows its data, as the ``_io`` write helpers do: every
  argument (offset, type, ``O_DIRECT`` alignment) is checked first, and the
  caller's ``IoBufMut``/``IoBuf``/``IoBufs``/bytes-like is never consumed or
  changed, whether the call returns or raises.
- A ``BlockFile`` owns its fd: it cannot be copied or pickled (``TypeError``),
  since a copy would close the fd under the original when dropped (and the
  original would then write into whatever file next got that number).
- Reads land in buffers of the pool (``pool.alloc``: an exhausted or oversized
  request gets an untracked buffer with the pool's alignment, so ``O_DIRECT``
  rules still hold).

Thread safety: positional I/O has no shared file position, so any number of
threads may call ``read_at``/``write_at`` on one ``BlockFile`` at once
(overlapping writes race as they would with ``os.pwrite``). ``close`` must not
race other calls.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from ._chain import IoBufs
from ._errors import check_nonneg
from ._impl import IoBuf, IoBufMut
from ._io import _borrowed_views, _check_offset, _pwrite_views, _release_views, frozen_result
from ._memory import page_size
from ._pool import BufferPool

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from ._views import BytesLike

__all__ = ["STAGE_BYTES", "BlockFile"]

#: Largest bounce copy ``write_at`` makes at once for unaligned data under ``O_DIRECT``.
STAGE_BYTES: Final = 1 << 20

_MODES: Final = {
    "r": os.O_RDONLY,
    "r+": os.O_RDWR,
    "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL,
}
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
# errno values with which Linux filesystems refuse O_DIRECT at open().
_REFUSED: Final = (errno.EINVAL, errno.EOPNOTSUPP)


class BlockFile:
    """A file read and written at byte offsets through one pool's aligned buffers.

    ``mode`` is ``"r"`` (read only), ``"r+"`` (read and write an existing
    file), ``"w+"`` (create or truncate) or ``"x+"`` (create; the file must
    not exist). ``direct`` chooses ``O_DIRECT``: ``None`` (default) uses it
    when possible and falls back to buffered I/O otherwise, ``True`` requires
    it (``OSError`` if the filesystem refuses it, ``ValueError`` if the pool is
    not aligned for it), ``False`` never uses it. Whether it is in effect is
    :attr:`direct`; why not is :attr:`fallback_reason`.

    With ``O_DIRECT`` in effect, offsets and lengths must be multiples of
    :attr:`block_size` (the page size) and the pool's alignment must be at
    least that, as in ``BufferPoolConfig.for_storage()``.

    A page-aligned pool's buffers and whole blocks work either way:

    >>> import os, tempfile
    >>> from iobuf import BufferPool, BufferPoolConfig
    >>> pool = BufferPool(BufferPoolConfig.for_storage())  # page-aligned buffers
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with BlockFile(os.path.join(tmp, "data"), pool, mode="w+") as f:
    ...         buf = pool.alloc_zeroed(f.block_size)  # one aligned block
    ...         buf.as_memoryview()[:5] = b"hello"
    ...         f.write_at(0, buf) == f.block_size
    ...         block = f.read_at(0, f.block_size)  # offset and length in whole blocks
    ...         bytes(block[:5]), len(block) == f.block_size
    True
    (b'hello', True)
    >>> pool.close()
    """

    __slots__ = ("_fd", "_pool", "_direct", "_block", "_reason", "_path", "_mode")

    def __init__(
        self,
        path: str | os.PathLike[str],
        pool: BufferPool,
        *,
        mode: Literal["r", "r+", "w+", "x+"] = "r",
        direct: bool | None = None,
    ) -> None:
        if getattr(self, "_fd", -1) >= 0:
            raise TypeError("BlockFile.__init__ cannot re-initialise an open BlockFile")
        self._fd = -1
        if not isinstance(pool, BufferPool):
            raise TypeError(f"pool must be a BufferPool, not {type(pool).__name__}")
        if not isinstance(mode, str) or mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        if direct is not None and not isinstance(direct, bool):
            raise TypeError(f"direct must be True, False or None, not {type(direct).__name__}")
        self._path = os.fspath(path)
        self._pool = pool
        self._mode = mode
        block = page_size()
        reason = _why_not_direct(direct, pool, block)
        if direct is True and reason is not None:
            raise ValueError(f"direct=True is impossible: {reason}")
        flags = _MODES[mode] | getattr(os, "O_CLOEXEC", 0)
        fd = -1
        if reason is None:
            try:
                fd = os.open(self._path, flags | _O_DIRECT, 0o666)
            except OSError as exc:
                if mode == "x+" and exc.errno in _REFUSED:
                    # O_EXCL: the kernel created the file before it refused
                    # O_DIRECT (the file did not exist, or this would be EEXIST).
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._path)
                if direct is True or exc.errno not in _REFUSED:
                    raise
                reason = f"the filesystem refused O_DIRECT ({errno.errorcode.get(exc.errno, exc.errno)})"
        if fd < 0:
            fd = os.open(self._path, flags, 0o666)
        self._fd = fd
        self._reason = reason
        self._direct = reason is None
        self._block = block if self._direct else 1

    # -- facts ------------------------------------------------------------------

    @property
    def direct(self) -> bool:
        """Whether ``O_DIRECT`` is in effect (reads and writes bypass the page cache)."""
        return self._direct

    @property
    def fallback_reason(self) -> str | None:
        """Why buffered I/O is used instead of ``O_DIRECT``; None when it is direct."""
        return self._reason

    @property
    def block_size(self) -> int:
        """The unit offsets and lengths must be multiples of: the page size when
        direct, 1 otherwise."""
        return self._block

    @property
    def pool(self) -> BufferPool:
        return self._pool

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._checked_fd()

    def size(self) -> int:
        """The file's current size in bytes."""
        return os.fstat(self._checked_fd()).st_size

    # -- I/O ---------------------------------------------------------------------

    def read_at(self, offset: int, n: int) -> IoBuf:
        """Read ``n`` bytes at ``offset`` into one pooled buffer, frozen.

        Fewer bytes come back only at end of file (an empty IoBuf past it).
        """
        fd = self._checked_fd()
        position = _check_offset("offset", offset)
        want = check_nonneg("n", n)
        block = self._block
        if block > 1:
            self._check_aligned(position, want)
        buf = self._pool.alloc(max(want, block))
        got_total = 0
        while got_total < want:
            spare = buf.spare_capacity()
            try:
                got = os.preadv(fd, [spare[: want - got_total]], position)
            finally:
                spare.release()
            if got == 0:
                break
            buf.advance_mut(got)
            got_total += got
            position += got
            if got % block:  # a direct read ends mid-block only at end of file
                break
        return frozen_result(buf)

    def readinto_at(self, buf: IoBufMut, offset: int) -> int:
        """Fill ``buf``'s spare capacity from ``offset``; returns the bytes read (0 at end of file).

        Under ``O_DIRECT`` the spare capacity must start on a block boundary
        and a whole number of blocks are read (the remainder is left alone).
        """
        if not isinstance(buf, IoBufMut):
            raise TypeError(f"buf must be an IoBufMut, not {type(buf).__name__}")
        fd = self._checked_fd()
        position = _check_offset("offset", offset)
        block = self._block
        spare = buf.spare_capacity()
        try:
            want = len(spare)
            if block > 1:
                want -= want % block
                self._check_aligned(position, want)
                if (buf.address + len(buf)) % block:
                    raise ValueError(
                        f"the spare capacity of buf does not start on a {block}-byte boundary (O_DIRECT)"
                    )
            got_total = 0
            while got_total < want:
                got = os.preadv(fd, [spare[got_total:want]], position)
                if got == 0:
                    break
                got_total += got
                position += got
                if got % block:
                    break
        finally:
            spare.release()
        buf.advance_mut(got_total)
        return got_total

    def write_at(self, offset: int, data: IoBufs | BytesLike) -> int:
        """Write all of ``data`` at ``offset``; returns the number of bytes written.

        ``data`` is borrowed: it is left as it was, whether the call returns or
        raises (bad arguments, a misaligned offset or length under ``O_DIRECT``
        included, raise before anything is written). Under
        ``O_DIRECT``, chunks that are block-aligned memory (pooled buffers of a
        page-aligned pool) go to the kernel as they are; anything else is copied
        through pooled aligned buffers first.
        """
        fd = self._checked_fd()
        position = _check_offset("offset", offset)
        views = _borrowed_views(data)
        try:
            block = self._block
            if block > 1:
                total = sum(map(len, views))
                self._check_aligned(position, total)
                if views and not _in_whole_aligned_blocks(data, block):
                    return self._write_staged(fd, views, position, total)
            return _pwrite_views(fd, views, position)
        finally:
            _release_views(views)

    def _write_staged(self, fd: int, views: list[memoryview], position: int, total: int) -> int:
        """Copy ``views`` through one pooled aligned stage of whole blocks, writing it each time it fills."""
        stage = self._pool.alloc(min(total, STAGE_BYTES))
        room = min(stage.capacity, STAGE_BYTES)
        room -= room % self._block
        for view in views:
            start = 0
            while start < len(view):
                take = min(room - len(stage), len(view) - start)
                stage.put_slice(view[start : start + take])
                start += take
                if len(stage) == room:
                    position += _write_stage(fd, stage, position)
        if stage:  # whole blocks too: total and room are multiples of the block size
            _write_stage(fd, stage, position)
        return total

    def truncate(self, size: int) -> None:
        """Set the file's size (must be block-aligned under ``O_DIRECT``)."""
        fd = self._checked_fd()
        length = _check_offset("size", size)
        if self._block > 1 and length % self._block:
            raise ValueError(f"size {length} is not a multiple of the block size {self._block} (O_DIRECT)")
        os.ftruncate(fd, length)

    def sync(self) -> None:
        """``fsync`` the file (data and metadata)."""
        os.fsync(self._checked_fd())

    def close(self) -> None:
        """Close the file; further calls raise ``ValueError``. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    # -- helpers -------------------------------------------------------------------

    def _checked_fd(self) -> int:
        fd = self._fd
        if fd < 0:
            raise ValueError("I/O operation on a closed BlockFile")
        return fd

    def _check_aligned(self, offset: int, length: int) -> None:
        block = self._block
        if offset % block:
            raise ValueError(
                f"offset {offset} is not a multiple of the block size {block} (O_DIRECT); "
                "align it or open with direct=False"
            )
        if length % block:
            raise ValueError(
                f"length {length} is not a multiple of the block size {block} (O_DIRECT); "
                "pad it or open with direct=False"
            )

    # -- protocols -------------------------------------------------------------------

    def __copy__(self) -> NoReturn:
        raise TypeError("a BlockFile cannot be copied: the copy would share its fd; open the path again")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError("a BlockFile cannot be copied: the copy would share its fd; open the path again")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a BlockFile cannot be pickled: it owns an open fd; send the path and open it there")

    def __enter__(self) -> BlockFile:
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

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else ("direct" if self._direct else "buffered")
        return f"BlockFile({self._path!r}, mode={self._mode!r}, {state}, block_size={self._block})"


def _why_not_direct(direct: bool | None, pool: BufferPool, block: int) -> str | None:
    """None if O_DIRECT should be tried, else why it is not."""
    if direct is False:
        return "direct=False was asked for"
    if not _O_DIRECT:
        return "this platform has no O_DIRECT"
    if pool.config.alignment < block:
        return (
            f"the pool's alignment ({pool.config.alignment}) is below the block size ({block}); "
            "use BufferPoolConfig.for_storage() or with_alignment(page_size())"
        )
    return None


def _in_whole_aligned_blocks(data: IoBufs | BytesLike, block: int) -> bool:
    """True if every chunk of ``data`` starts on a ``block`` boundary and spans whole blocks.

    Only IoBuf/IoBufMut memory is looked at: other bytes-like objects (``bytes``
    is never page-aligned) are always staged.
    """
    if isinstance(data, IoBufs):
        chunks: Iterable[IoBuf | IoBufMut] = data._chunks
    elif isinstance(data, (IoBuf, IoBufMut)):
        chunks = (data,)
    else:
        return False
    return all(c.address % block == 0 and len(c) % block == 0 for c in chunks)


def _write_stage(fd: int, stage: IoBufMut, position: int) -> int:
    """Write all of ``stage`` at ``position`` and empty it; returns the bytes written."""
    view = stage.as_memoryview()
    try:
        done = _pwrite_views(fd, [view], position)
    finally:
        view.release()
    stage.clear()
    return done
