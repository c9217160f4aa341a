"""A short tour of iobuf: what ``python -m iobuf`` prints.

1. A :class:`BufferPool` for network I/O whose metrics go to a Prometheus registry.
2. Length-prefixed messages read from a socket straight into pooled buffers
   (``recv_into`` their spare capacity), frozen, then split into header and
   payload without copying a byte.
3. Reuse: the same traffic a second time creates no new buffers.
4. Limits: an oversized request and an exhausted size class; ``alloc`` falls
   back to untracked memory where ``try_alloc`` raises.
5. The safety rule: a buffer is not handed out again while a memoryview of it lives.
6. ``pool.stats()`` and the Prometheus metrics.
7. asyncio: an echo server and client over loopback TCP, both receiving into
   one page-aligned pool through :class:`PooledReader`.
8. Files: the same pool writes and reads a file with :class:`BlockFile`
   (``O_DIRECT`` where the filesystem takes it, buffered otherwise).
9. What allocate + drop costs next to ``bytearray``, measured in this process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time

from prometheus_client import CollectorRegistry, generate_latest

import iobuf
from iobuf import BlockFile, BufferPool, BufferPoolConfig, Exhausted, IoBuf, IoBufMut, IoBufs, Oversized
from iobuf._demo_timing import format_table, measure_cycles

HEADER = 4  # every message is a 4-byte big-endian payload length, then the payload
CHUNK = 4096  # at most this much per recv_into, so a big message takes several reads
PAYLOAD_SIZES = (5, 200, 1020, 1500, 9000)


def heading(title: str) -> None:
    print(f"\n== {title}")


def payload(size: int) -> bytes:
    """Deterministic bytes that differ per size, so a misplaced byte cannot go unnoticed."""
    return bytes((i * 31 + size) & 0xFF for i in range(size))


def recv_exact(sock: socket.socket, buf: IoBufMut, want: int) -> int:
    """Receive exactly ``want`` bytes into ``buf``; returns how many recv_into calls it took."""
    reads = 0
    while want:
        nread = sock.recv_into(buf.spare_capacity(), min(want, CHUNK))
        if nread == 0:
            raise ConnectionError("peer closed the socket mid-message")
        buf.advance_mut(nread)
        want -= nread
        reads += 1
    return reads


def recv_frame(pool: BufferPool, sock: socket.socket) -> tuple[IoBuf, int]:
    """One whole message (header + payload) in one pooled buffer, and the reads it took."""
    buf = pool.alloc(HEADER)  # the smallest class: small messages fit in it whole
    reads = recv_exact(sock, buf, HEADER)
    size = int.from_bytes(bytes(buf), "big")
    if HEADER + size > buf.capacity:  # too big: move the 4 header bytes to a larger class
        bigger = pool.alloc(HEADER + size)
        bigger.put_slice(buf)
        buf = bigger  # the small buffer goes back to the pool here
    reads += recv_exact(sock, buf, size)
    return buf.freeze(), reads


def exchange(pool: BufferPool, tx: socket.socket, rx: socket.socket, *, verbose: bool) -> list[IoBuf]:
    """Send every message (~12 KB, well within a socket buffer), then receive and check each."""
    for size in PAYLOAD_SIZES:
        tx.sendall(size.to_bytes(HEADER, "big") + payload(size))
    if verbose:
        print(f"{'payload':>7} {'class':>6} {'pooled':>6} {'reads':>5}  check")
    frames = []
    for size in PAYLOAD_SIZES:
        frozen, reads = recv_frame(pool, rx)
        header: IoBuf = frozen[0:HEADER]  # a view, not a copy
        body = frozen.clone()  # another view of the same bytes, with its own cursor
        body.split_to(HEADER)  # `body` keeps what follows the header; nothing moves
        intact = int.from_bytes(bytes(header), "big") == size and body == payload(size)
        zero_copy = body.address == frozen.address + HEADER  # the payload was never moved
        assert intact, f"message of {size} bytes did not round-trip"
        assert zero_copy, f"payload of {size} bytes is not where it was received"
        if verbose:
            cls = pool.size_class(len(frozen))
            check = "round-trip ok, zero-copy" if intact and zero_copy else "MISMATCH"
            print(f"{size:>7} {cls!s:>6} {frozen.is_pooled!s:>6} {reads:>5}  {check}")
        frames.append(frozen)
    return frames


def created(pool: BufferPool) -> dict[int, int]:
    return {c.size: c.created for c in pool.stats().classes if c.created}


def show_limits(pool: BufferPool) -> None:
    try:
        pool.try_alloc(10**9)
    except Oversized as exc:
        print(f"try_alloc(10**9)   -> Oversized: {exc}")
    big = pool.alloc(512 * 1024)
    print(f"alloc(512 KiB)     -> {big!r}, is_pooled={big.is_pooled} (still counted as oversized)")
    held = [pool.try_alloc(1024) for _ in range(pool.config.max_per_class)]
    try:
        pool.try_alloc(1024)
    except Exhausted as exc:
        print(f"holding all {len(held)} 1 KiB buffers, try_alloc(1024) -> Exhausted: {exc}")
    print(f"alloc(1024) falls back instead: is_pooled={pool.alloc(1024).is_pooled} (still counted)")


def show_safety_rule(pool: BufferPool) -> None:
    mut = pool.alloc(64)
    mut.put_slice(b"pinned by a memoryview")
    frozen = mut.freeze()
    view, addr = frozen.as_memoryview(), frozen.address
    del mut, frozen  # no IoBuf/IoBufMut reaches the buffer any more; only `view` does
    fresh = [pool.alloc(64) for _ in range(100)]
    for buf in fresh:
        buf.put_slice(b"\xee" * 64)
    assert addr not in {buf.address for buf in fresh}
    assert bytes(view) == b"pinned by a memoryview"
    print(f"after writing 100 fresh 1 KiB buffers the view still reads {bytes(view)!r}")
    del fresh
    before = pool.stats().for_size(1024)
    del view  # the last reference: only now does the buffer go back
    after = pool.stats().for_size(1024)
    print(f"del view: 1 KiB local_free {before.local_free} -> {after.local_free}, ", end="")
    print(f"global_free {before.global_free} -> {after.global_free}")
    print(f"the next alloc(64) gets that very buffer back: {pool.alloc(64).address == addr}")


def show_stats(pool: BufferPool, registry: CollectorRegistry) -> None:
    stats = pool.stats()
    print(f"{'size':>7} {'created':>8} {'global_free':>12} {'local_free':>11} {'exhausted':>10}")
    for c in stats.classes:
        if c.created:
            row = (c.size, c.created, c.global_free, c.local_free, c.exhausted_total)
            print("{:>7} {:>8} {:>12} {:>11} {:>10}".format(*row))
    print(f"oversized requests: {stats.oversized_total}\n")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("demo_"):
            print(line)


ECHO_FRAME = 128 * 1024  # above the readers' copy_max (64 KiB): frames come back as views
ECHO_FRAMES = 256  # 32 MiB each way
FILE_BLOCK = 1 << 20
FILE_BLOCKS = 16


async def echo_round_trip(pool: BufferPool) -> tuple[float, int]:
    """Echo ECHO_FRAMES length-prefixed frames; returns (seconds, bytes the client's reads copied)."""

    async def serve(reader: iobuf.PooledReader, writer: iobuf.PooledWriter) -> None:
        while True:
            try:
                head = await reader.readexactly(HEADER)
            except asyncio.IncompleteReadError:
                break
            body = await reader.readexactly(int.from_bytes(bytes(head), "big"))
            writer.write(IoBufs([head, body]))  # vectored, no copy on our side
            await writer.drain()
        writer.close()

    server = await iobuf.start_server(serve, "127.0.0.1", 0, pool=pool)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await iobuf.open_connection("127.0.0.1", port, pool=pool)
    frames = [payload(ECHO_FRAME - i) for i in range(4)]

    async def send() -> None:
        for i in range(ECHO_FRAMES):
            body = frames[i % 4]
            writer.write(len(body).to_bytes(HEADER, "big") + body)
            await writer.drain()
        writer.write_eof()

    start = time.perf_counter()
    sender = asyncio.create_task(send())
    for i in range(ECHO_FRAMES):
        size = int.from_bytes(bytes(await reader.readexactly(HEADER)), "big")
        body = await reader.readexactly(size)
        assert body == frames[i % 4], f"echoed frame {i} differs"
        assert body.is_pooled
    await sender
    seconds = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return seconds, reader.copied_bytes


def show_echo(pool: BufferPool) -> None:
    seconds, copied = asyncio.run(echo_round_trip(pool))
    mib = ECHO_FRAMES * ECHO_FRAME / (1 << 20)
    print(f"echoed {ECHO_FRAMES} frames of ~128 KiB ({mib:.0f} MiB each way) in {seconds:.2f} s, ", end="")
    print(f"{mib / seconds:.0f} MiB/s each way")
    print("  client and server share one event loop and one pool; every byte checked")
    share = copied / (ECHO_FRAMES * ECHO_FRAME)
    print(f"  every frame came back in a pooled buffer; {share:.0%} of the bytes were copied once", end="")
    print(" (frames straddling two receive buffers), the rest are views of where they arrived")


def show_file(pool: BufferPool) -> None:
    directory = tempfile.mkdtemp(prefix="iobuf-demo-")
    path = os.path.join(directory, "data")
    blocks = [payload(FILE_BLOCK + i)[:FILE_BLOCK] for i in range(FILE_BLOCKS)]
    try:
        with BlockFile(path, pool, mode="w+") as f:
            how = "O_DIRECT" if f.direct else f"buffered ({f.fallback_reason})"
            print(f"{path}: {how}")
            start = time.perf_counter()
            for i, data in enumerate(blocks):
                buf = pool.alloc(len(data))  # page-aligned: goes to the kernel as it is
                buf.put_slice(data)
                f.write_at(i * FILE_BLOCK, buf.freeze())
            f.sync()
            wrote = time.perf_counter() - start
            start = time.perf_counter()
            for i, data in enumerate(blocks):
                assert f.read_at(i * FILE_BLOCK, FILE_BLOCK) == data, f"block {i} differs"
            read = time.perf_counter() - start
        mib = FILE_BLOCKS * FILE_BLOCK / (1 << 20)
        print(f"wrote {mib:.0f} MiB in 1 MiB blocks at {mib / wrote:.0f} MiB/s (with fsync), ", end="")
        print(f"read it back at {mib / read:.0f} MiB/s; file round trip ok")
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(directory)


def main() -> int:
    registry = CollectorRegistry()
    print(f"iobuf core: {iobuf.IMPLEMENTATION}")
    with BufferPool(BufferPoolConfig.for_network(), registry=registry, namespace="demo") as pool:
        heading("1. A pool for network I/O (1 KiB .. 128 KiB power-of-two classes)")
        print(pool)
        tx, rx = socket.socketpair()
        with tx, rx:
            heading("2. Length-prefixed messages, received with recv_into into pooled buffers")
            frames = exchange(pool, tx, rx, verbose=True)
            first = created(pool)
            heading("3. Reuse: drop every buffer, then receive the same messages again")
            del frames  # every buffer goes back to the pool
            frames = exchange(pool, tx, rx, verbose=False)
            print(f"buffers created per class after round 1: {first}")
            print(f"buffers created per class after round 2: {created(pool)} (pooled memory reused)")
            assert created(pool) == first
            del frames
        heading("4. Limits: oversized requests and exhausted classes")
        show_limits(pool)
        heading("5. Safety rule: a live memoryview keeps its buffer out of the pool")
        show_safety_rule(pool)
        heading("6. pool.stats() (classes that created buffers) and Prometheus metrics")
        show_stats(pool, registry)
    with BufferPool(BufferPoolConfig.for_storage()) as io_pool:
        heading("7. asyncio echo over loopback TCP, receiving into a page-aligned pool")
        print(io_pool)
        show_echo(io_pool)
        heading("8. A file round trip through the same pool")
        show_file(io_pool)
        stats = io_pool.stats()
        used = {c.size: c.created for c in stats.classes if c.created}
        print(f"buffers created per class for sections 7 and 8: {used}")
    heading("9. Allocate + drop, side by side in this process (gc off; a clone's python -m bench for more)")
    print(format_table(measure_cycles(sizes=(4096, 65536, 1 << 20), repeats=3, target_ms=10.0)))
    heading("Done")
    print(pool)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
