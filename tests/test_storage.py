"""BlockFile on real files: O_DIRECT on the project's disk, buffered fallback elsewhere."""

from __future__ import annotations

import copy
import errno
import gc
import os
import pickle
import random
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iobuf import STAGE_BYTES, BlockFile, BufferPool, BufferPoolConfig, IoBuf, IoBufMut, IoBufs, page_size

from .helpers import allocated

PAGE = page_size()


@pytest.fixture
def pool() -> BufferPool:
    return BufferPool(BufferPoolConfig.for_storage())


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    """A fresh directory inside the repository, so files live on the project's real disk
    (a tmpfs /tmp refuses O_DIRECT); removed with all it holds after the test, whatever
    the test left there (.gitignore names the pattern in case a run is killed)."""
    here = Path(__file__).resolve().parent
    path = Path(tempfile.mkdtemp(dir=here, prefix=".storage-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def accepts_o_direct(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    os.close(fd)
    probe.unlink()
    return True


@pytest.fixture
def direct_dir(disk_dir: Path) -> Path:
    if not accepts_o_direct(disk_dir):
        pytest.skip(f"the filesystem under {disk_dir} refuses O_DIRECT")
    return disk_dir


@pytest.fixture
def ramfs_dir() -> Iterator[Path]:
    """A freshly mounted ramfs, a filesystem that refuses O_DIRECT (needs root)."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount/umount command")
    path = Path(tempfile.mkdtemp(prefix="iobuf-ramfs-"))
    done = subprocess.run(
        [mount, "-t", "ramfs", "ramfs", str(path)], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a ramfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run([umount, str(path)], check=True)
        path.rmdir()


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def whole_file(path: Path) -> bytes:
    return path.read_bytes()


# -- O_DIRECT on the project's disk ------------------------------------------------


def test_direct_round_trip_through_every_write_path(pool: BufferPool, direct_dir: Path) -> None:
    """With O_DIRECT, write_at takes a pooled aligned IoBuf as it is, bounces plain bytes larger than
    two stage buffers, an IoBufs of unaligned pieces and a memoryview one byte off alignment through
    pooled buffers, and the file then holds exactly those bytes in order; reads come back as
    page-aligned pooled buffers, and every read and bounce buffer is back in the pool afterwards (a
    leaked stage buffer fails the last check)."""
    path = direct_dir / "data"
    with BlockFile(path, pool, mode="w+") as f:
        assert f.direct and f.fallback_reason is None and f.block_size == PAGE
        # 1. A pooled, aligned buffer: goes to the kernel as it is.
        aligned = pool.alloc(4 * PAGE)
        aligned.put_slice(pattern(4 * PAGE, 1))
        first = aligned.freeze()
        assert f.write_at(0, first) == 4 * PAGE
        # 2. Plain bytes, larger than one bounce buffer: copied through pooled buffers.
        big = pattern(STAGE_BYTES * 2 + 3 * PAGE, 2)
        assert f.write_at(4 * PAGE, big) == len(big)
        # 3. A chain of unaligned pieces that add up to whole blocks.
        pieces: list[bytes | IoBuf | bytearray] = [
            b"a" * 100,
            IoBuf(b"b" * (PAGE - 100)),
            bytearray(b"c" * (2 * PAGE)),
        ]
        tail_at = 4 * PAGE + len(big)
        assert f.write_at(tail_at, IoBufs(pieces)) == 3 * PAGE
        # 4. A memoryview that starts one byte past an aligned address.
        odd = bytearray(PAGE + 1)
        odd[1:] = pattern(PAGE, 4)
        assert f.write_at(tail_at + 3 * PAGE, memoryview(odd)[1:]) == PAGE
        f.sync()
        expected = bytes(first) + big + b"a" * 100 + b"b" * (PAGE - 100) + b"c" * (2 * PAGE) + bytes(odd[1:])
        assert f.size() == len(expected)
        for start in range(0, len(expected), 3 * PAGE):
            got = f.read_at(start, 3 * PAGE)
            assert got == expected[start : start + 3 * PAGE]
            assert got.is_pooled and got.address % PAGE == 0
    assert whole_file(path) == expected
    del aligned, first, got
    assert allocated(pool, 4 * PAGE) == 0  # every read and bounce buffer went back


def test_direct_read_stops_at_end_of_file_even_mid_block(pool: BufferPool, direct_dir: Path) -> None:
    """An O_DIRECT read that asks for whole blocks past the end of a file whose size is not a block
    multiple returns exactly the bytes up to end of file (not the zero padding of the last block),
    and an empty result at or past the end."""
    path = direct_dir / "short"
    data = pattern(2 * PAGE + 123, 7)
    path.write_bytes(data)
    with BlockFile(path, pool, mode="r") as f:
        assert f.direct
        assert f.read_at(0, 4 * PAGE) == data
        assert f.read_at(2 * PAGE, PAGE) == data[2 * PAGE :]
        empty = f.read_at(4 * PAGE, PAGE)
        assert len(empty) == 0


def test_direct_rules_are_checked_before_any_system_call(pool: BufferPool, direct_dir: Path) -> None:
    """With O_DIRECT, an offset, length or truncate size that is not a block multiple raises ValueError
    naming it, and the file is left exactly as it was (no partial write reached the kernel)."""
    path = direct_dir / "rules"
    with BlockFile(path, pool, mode="w+") as f:
        f.write_at(0, b"z" * PAGE)
        with pytest.raises(ValueError, match="offset 1 is not a multiple"):
            f.write_at(1, b"z" * PAGE)
        with pytest.raises(ValueError, match="length 100 is not a multiple"):
            f.write_at(0, b"y" * 100)
        with pytest.raises(ValueError, match="offset 7 is not a multiple"):
            f.read_at(7, PAGE)
        with pytest.raises(ValueError, match="length 10 is not a multiple"):
            f.read_at(0, 10)
        with pytest.raises(ValueError, match="size 5 is not a multiple"):
            f.truncate(5)
        assert f.size() == PAGE
    assert whole_file(path) == b"z" * PAGE


def test_readinto_at_fills_whole_blocks_of_a_pooled_buffer(pool: BufferPool, direct_dir: Path) -> None:
    """readinto_at reads whole blocks into a pooled buffer at an offset; a buffer whose spare capacity
    does not start on a block boundary is refused with ValueError before reading, and keeps its
    bytes."""
    path = direct_dir / "into"
    data = pattern(3 * PAGE, 9)
    path.write_bytes(data)
    with BlockFile(path, pool, mode="r") as f:
        buf = pool.alloc(2 * PAGE)
        assert f.readinto_at(buf, PAGE) == 2 * PAGE
        assert buf == data[PAGE:]
        unaligned = IoBufMut.with_alignment(2 * PAGE, PAGE)
        unaligned.put_slice(b"x")
        with pytest.raises(ValueError, match="boundary"):
            f.readinto_at(unaligned, 0)
        assert unaligned == b"x"


def test_buffered_mode_accepts_any_offset_and_length(pool: BufferPool, disk_dir: Path) -> None:
    """direct=False gives a buffered file (block_size 1, the reason recorded) that writes, reads, reads
    into an IoBufMut and truncates at any offset and length, sparse gaps reading as zeros."""
    path = disk_dir / "buffered"
    with BlockFile(path, pool, mode="w+", direct=False) as f:
        assert not f.direct and f.block_size == 1
        assert f.fallback_reason == "direct=False was asked for"
        f.write_at(3, b"hello")
        f.write_at(100, IoBufs([b"wor", IoBuf(b"ld")]))
        assert f.read_at(3, 5) == b"hello"
        assert f.read_at(0, 200) == b"\0\0\0hello" + b"\0" * 92 + b"world"
        buf = IoBufMut.with_capacity(4)
        assert f.readinto_at(buf, 3) == 4
        assert buf == b"hell"
        f.truncate(8)
        assert f.size() == 8


# -- the fallback on filesystems that refuse O_DIRECT --------------------------------


def test_ramfs_refuses_o_direct_and_the_file_falls_back(pool: BufferPool, ramfs_dir: Path) -> None:
    """On ramfs, which refuses O_DIRECT, the default mode falls back to buffered I/O with the reason
    recorded and still round-trips unaligned data; direct=True there raises the kernel's EINVAL
    instead of falling back silently."""
    path = ramfs_dir / "data"
    with BlockFile(path, pool, mode="w+") as f:
        assert not f.direct
        assert f.fallback_reason is not None and "refused O_DIRECT" in f.fallback_reason
        data = pattern(3 * PAGE + 17, 11)
        assert f.write_at(5, data) == len(data)
        assert f.read_at(5, len(data)) == data
    with pytest.raises(OSError, match="Invalid argument") as info:
        BlockFile(path, pool, mode="r", direct=True)
    assert info.value.errno == errno.EINVAL


def test_proc_files_fall_back_to_buffered_reads(pool: BufferPool) -> None:
    """A /proc file (O_DIRECT refused with EINVAL) opens buffered, names EINVAL as the reason, and
    reads."""
    with BlockFile("/proc/self/status", pool) as f:
        assert not f.direct and "EINVAL" in (f.fallback_reason or "")
        assert bytes(f.read_at(0, 5)) == b"Name:"


def test_a_pool_not_aligned_to_pages_cannot_do_o_direct(disk_dir: Path) -> None:
    """A pool aligned to 64 bytes cannot give O_DIRECT block-aligned buffers: the file falls back to
    buffered mode naming the alignment, and direct=True is refused with ValueError."""
    small = BufferPool(BufferPoolConfig.for_network().with_alignment(64))
    path = disk_dir / "unaligned-pool"
    with BlockFile(path, small, mode="w+") as f:
        assert not f.direct
        assert "alignment (64)" in (f.fallback_reason or "")
    with pytest.raises(ValueError, match="direct=True is impossible"):
        BlockFile(path, small, mode="r", direct=True)


# -- threads, bad input, life cycle ------------------------------------------------------


def test_threads_read_disjoint_blocks_at_once(pool: BufferPool, disk_dir: Path) -> None:
    """Four threads read random blocks of one BlockFile at once and each gets the bytes at its own
    offset. Runs on GIL builds too: pread releases the GIL, so the reads really overlap there, and
    an implementation with a shared file position (seek then read) would return another thread's
    block."""
    path = disk_dir / "shared"
    blocks = 64
    data = pattern(blocks * PAGE, 13)
    path.write_bytes(data)
    failures: list[str] = []
    with BlockFile(path, pool, mode="r") as f:

        def reader(me: int) -> None:
            rng = random.Random(me)
            for _ in range(200):
                i = rng.randrange(blocks)
                if f.read_at(i * PAGE, PAGE) != data[i * PAGE : (i + 1) * PAGE]:
                    failures.append(f"thread {me} block {i}")

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_bad_arguments_raise_clear_errors(pool: BufferPool, disk_dir: Path) -> None:
    """Wrong pool, mode, direct, offset, length, buffer and data types raise TypeError/ValueError
    naming the argument; the OS's FileNotFoundError/FileExistsError come through; close() is
    idempotent and every method on a closed BlockFile raises ValueError saying so."""
    path = disk_dir / "bad"
    with pytest.raises(TypeError, match="pool must be a BufferPool"):
        BlockFile(path, object(), mode="w+")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        BlockFile(path, pool, mode="a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="direct must be"):
        BlockFile(path, pool, mode="w+", direct=1)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        BlockFile(disk_dir / "missing", pool, mode="r")
    f = BlockFile(path, pool, mode="w+")
    with pytest.raises(FileExistsError):
        BlockFile(path, pool, mode="x+")
    with pytest.raises(ValueError, match="offset must be >= 0"):
        f.read_at(-PAGE, PAGE)
    with pytest.raises(TypeError):
        f.read_at(0, "4096")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="buf must be an IoBufMut"):
        f.readinto_at(bytearray(PAGE), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        f.write_at(0, 12345)  # type: ignore[arg-type]
    f.close()
    f.close()
    assert f.closed and "closed" in repr(f)
    for call in (lambda: f.read_at(0, PAGE), lambda: f.write_at(0, b""), f.size, f.sync, f.fileno):
        with pytest.raises(ValueError, match="closed BlockFile"):
            call()


def test_repr_and_facts(pool: BufferPool, disk_dir: Path) -> None:
    """pool, path, fileno() and repr() report what the file was opened with (buffered, block_size=1)."""
    path = disk_dir / "facts"
    with BlockFile(path, pool, mode="w+", direct=False) as f:
        assert f.pool is pool and f.path == str(path) and f.fileno() >= 0
        assert repr(f) == f"BlockFile({str(path)!r}, mode='w+', buffered, block_size=1)"


# -- no copies of an open file; write_at borrows its argument --------------------------------


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, *(lambda f, p=p: pickle.dumps(f, protocol=p) for p in range(6))],
    ids=["copy", "deepcopy", *(f"pickle-{p}" for p in range(6))],
)
def test_blockfile_cannot_be_copied_or_pickled(pool: BufferPool, disk_dir: Path, duplicate: Any) -> None:
    """copy.copy, copy.deepcopy and pickle (every protocol) raise a TypeError that says so:
    a copy would share the fd and close it under the original when dropped."""
    path = disk_dir / "no-copies"
    with BlockFile(path, pool, mode="w+", direct=False) as f:
        with pytest.raises(TypeError, match=r"a BlockFile cannot be (copied|pickled)"):
            duplicate(f)
        gc.collect()
        f.write_at(0, b"still mine")  # the fd is still the original's, and open
        assert f.read_at(0, 10) == b"still mine"
    assert path.read_bytes() == b"still mine"


@pytest.mark.parametrize("direct", [False, None])
def test_write_at_borrows_its_argument(pool: BufferPool, disk_dir: Path, direct: bool | None) -> None:
    """write_at leaves a pooled IoBufMut (and an IoBufs) as they were, after a successful
    write and after a failed one (a read-only file: EBADF), buffered and (where the disk
    allows) direct."""
    path = disk_dir / "borrow"
    data = pattern(2 * PAGE, 21)
    buf = pool.alloc(2 * PAGE)
    buf.put_slice(data)
    chain = IoBufs([data[:100], IoBuf(data[100:])])
    with BlockFile(path, pool, mode="w+", direct=direct) as f:
        assert f.write_at(0, buf) == 2 * PAGE
        assert f.write_at(2 * PAGE, chain) == 2 * PAGE
    assert buf == data and buf.is_pooled and buf.capacity == 2 * PAGE
    assert chain == data and chain.chunk_count == 2
    assert path.read_bytes() == data + data
    with BlockFile(path, pool, mode="r", direct=direct) as f:
        with pytest.raises(OSError, match="Bad file descriptor"):
            f.write_at(0, buf)
        with pytest.raises(OSError, match="Bad file descriptor"):
            f.write_at(0, chain)
    assert buf == data and buf.is_pooled and buf.capacity == 2 * PAGE
    assert chain == data and chain.chunk_count == 2


def test_rejected_direct_write_at_changes_nothing(pool: BufferPool, direct_dir: Path) -> None:
    """Under O_DIRECT a misaligned length or offset is a ValueError, checked before the
    argument is touched: the caller's IoBufMut keeps its bytes, and the file is unchanged."""
    path = direct_dir / "rejected"
    with BlockFile(path, pool, mode="w+") as f:
        assert f.direct
        short = pool.alloc(PAGE)
        short.put_slice(b"not a whole block")
        with pytest.raises(ValueError, match="length 17 is not a multiple"):
            f.write_at(0, short)
        assert short == b"not a whole block" and short.is_pooled
        whole = pool.alloc(PAGE)
        whole.put_slice(pattern(PAGE, 22))
        with pytest.raises(ValueError, match="offset 512 is not a multiple"):
            f.write_at(512, whole)
        assert whole == pattern(PAGE, 22) and whole.is_pooled
        chain = IoBufs([b"a" * 10, b"b" * 20])
        with pytest.raises(ValueError, match="length 30 is not a multiple"):
            f.write_at(0, chain)
        assert chain == b"a" * 10 + b"b" * 20 and chain.chunk_count == 2
        assert f.size() == 0
        assert f.write_at(0, whole) == PAGE  # and the same buffer is still good to write
    assert path.read_bytes() == pattern(PAGE, 22)


def test_exclusive_create_on_a_filesystem_that_refuses_o_direct_falls_back(
    pool: BufferPool, ramfs_dir: Path
) -> None:
    """``mode="x+"``: the kernel creates the file before it refuses O_DIRECT, so the
    buffered retry used to fail with FileExistsError. It falls back and works; with
    ``direct=True`` it raises and leaves no file behind."""
    path = ramfs_dir / "new"
    with BlockFile(path, pool, mode="x+") as f:
        assert not f.direct and f.fallback_reason is not None
        assert f.write_at(0, b"abc") == 3
    assert path.read_bytes() == b"abc"
    other = ramfs_dir / "direct"
    with pytest.raises(OSError, match="Invalid argument"):
        BlockFile(other, pool, mode="x+", direct=True)
    assert not other.exists()
    with pytest.raises(FileExistsError):
        BlockFile(path, pool, mode="x+")  # exists: still refused, and kept
    assert path.read_bytes() == b"abc"


def test_reads_at_end_of_file_return_detached_empty_results(pool: BufferPool, disk_dir: Path) -> None:
    """An empty read (at or past the end, or ``n == 0``) pins no pooled buffer
    (an empty frozen pooled buffer kept it out of the pool: repeated reads past
    the end exhausted the class)."""
    path = disk_dir / "short"
    path.write_bytes(b"x" * PAGE)
    with BlockFile(path, pool, mode="r") as f:
        empties = [f.read_at(100 * PAGE, 8 << 20) for _ in range(3)] + [f.read_at(0, 0)]
        assert all(len(e) == 0 and not e.is_pooled for e in empties)
        assert allocated(pool, 8 << 20) == 0 and allocated(pool, PAGE) == 0


def test_a_blockfile_cannot_be_initialised_twice(pool: BufferPool, disk_dir: Path) -> None:
    """Calling ``__init__`` again on an open BlockFile would leak its descriptor: refused."""
    path = disk_dir / "once"
    with BlockFile(path, pool, mode="w+") as f:
        fd = f.fileno()
        with pytest.raises(TypeError, match="re-initialise"):
            f.__init__(path, pool, mode="w+")  # type: ignore[misc]
        assert f.fileno() == fd and os.fstat(fd)
