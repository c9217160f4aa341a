"""End-to-end throughput: a loopback TCP stream and a file read, side by side with peers.

Loopback: a sender process writes ``total`` bytes as fast as it can; this
process receives them as ``frame``-byte frames with one receiver at a time:

- ``iobuf``: :func:`iobuf.start_server`, ``await reader.readexactly(frame)``;
- ``streamreader``: ``asyncio.start_server``, ``await reader.readexactly(frame)``;
- the same two on uvloop when it is installed (``iobuf+uvloop``, ``streamreader+uvloop``).

Each receiver only checks each frame's length (the same work for both). File:
one file of ``total`` bytes on the disk of the working directory, read front
to back in ``block``-byte reads by ``BlockFile`` (O_DIRECT and buffered),
``f.read(n)`` on an unbuffered file, and ``f.readinto`` a fresh ``bytearray``
per block. Buffered readers see the page cache (the file was just written or
read); O_DIRECT reads the device every time. Rounds interleave the
approaches, and the median of the rounds is reported.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import iobuf

from . import ROOT

MiB = 1 << 20


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loopback_receivers() -> list[str]:
    names = ["iobuf", "streamreader"]
    if uvloop_available():
        names += ["iobuf+uvloop", "streamreader+uvloop"]
    return names


# -- loopback ------------------------------------------------------------------------


def _send(port: int, total: int) -> None:  # pragma: no cover - runs in the sender process
    """The sender process: connect and write ``total`` bytes of a fixed pattern."""
    block = bytes(range(256)) * (MiB // 256)
    view = memoryview(block)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        left = total
        while left:
            n = min(left, MiB)
            sock.sendall(view[:n])
            left -= n


async def _receive(kind: str, total: int, frame: int, pool: iobuf.BufferPool) -> float:
    """Seconds from the first accepted connection to ``total`` received bytes."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    frames = total // frame

    async def receive(reader: Any, writer: Any) -> None:
        """The same handler for both: PooledReader/Writer and StreamReader/Writer."""
        start = time.perf_counter()
        try:
            for _ in range(frames):
                data = await reader.readexactly(frame)
                if len(data) != frame:
                    raise AssertionError("short frame")
        except Exception as exc:  # report it instead of leaving the measurement waiting
            done.set_exception(exc)
        else:
            done.set_result(time.perf_counter() - start)
        writer.close()

    server: asyncio.Server
    if kind.startswith("iobuf"):
        server = await iobuf.start_server(receive, "127.0.0.1", 0, pool=pool)
    else:
        server = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = subprocess.Popen(  # noqa: S603 - our own interpreter and a fixed command
        [sys.executable, "-c", f"from bench._e2e import _send; _send({port}, {total})"],
        cwd=ROOT,  # where this harness is importable from (see bench.ROOT)
    )
    try:
        return await asyncio.wait_for(done, timeout=300)
    finally:
        server.close()
        await server.wait_closed()
        if sender.wait(timeout=60) != 0:
            raise RuntimeError(f"sender exited with {sender.returncode}")


def measure_loopback(kind: str, total: int, frame: int) -> float:
    """Throughput of one receiver in MiB/s (one fresh event loop per measurement)."""
    pool = iobuf.BufferPool(iobuf.BufferPoolConfig.for_network())
    runner: Callable[[Any], float]
    if kind.endswith("+uvloop"):
        uvloop = importlib.import_module("uvloop")

        def runner(coro: Any) -> float:
            return uvloop.run(coro)  # type: ignore[no-any-return]
    else:
        runner = asyncio.run
    try:
        seconds = runner(_receive(kind, total, frame, pool))
    finally:
        pool.close()
    return total / MiB / seconds


# -- file reads ----------------------------------------------------------------------


def make_file(directory: Path, total: int) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".iobuf-bench-")
    block = os.urandom(MiB)
    with os.fdopen(fd, "wb") as f:
        for _ in range(total // MiB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    return Path(name)


def file_readers() -> list[str]:
    return ["blockfile-direct", "blockfile-buffered", "f.read", "readinto-bytearray"]


def measure_file(kind: str, path: Path, total: int, block: int) -> float:
    """Throughput of reading ``path`` front to back in MiB/s."""
    if kind.startswith("blockfile"):
        pool = iobuf.BufferPool(iobuf.BufferPoolConfig.for_storage())
        with iobuf.BlockFile(path, pool, direct=None if kind.endswith("direct") else False) as f:
            if kind.endswith("direct") and not f.direct:
                raise RuntimeError(f"O_DIRECT unavailable: {f.fallback_reason}")
            start = time.perf_counter()
            for offset in range(0, total, block):
                data = f.read_at(offset, block)
                if len(data) != block:
                    raise AssertionError("short read")
            seconds = time.perf_counter() - start
        pool.close()
    elif kind == "f.read":
        with open(path, "rb", buffering=0) as raw:
            start = time.perf_counter()
            for _ in range(0, total, block):
                got = raw.read(block)
                if got is None or len(got) != block:
                    raise AssertionError("short read")
            seconds = time.perf_counter() - start
    elif kind == "readinto-bytearray":
        with open(path, "rb", buffering=0) as raw:
            start = time.perf_counter()
            for _ in range(0, total, block):
                buf = bytearray(block)
                if raw.readinto(buf) != block:
                    raise AssertionError("short read")
            seconds = time.perf_counter() - start
    else:
        raise ValueError(f"unknown file reader {kind!r}")
    return total / MiB / seconds


# -- the suite -----------------------------------------------------------------------


def run(
    *,
    loopback_total: int,
    frame: int,
    file_total: int,
    block: int,
    rounds: int,
    directory: Path,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Interleaved rounds of every receiver and reader; medians in MiB/s."""
    loop_samples: dict[str, list[float]] = {k: [] for k in loopback_receivers()}
    file_samples: dict[str, list[float]] = {k: [] for k in file_readers()}
    path = make_file(directory, file_total)
    try:
        with iobuf.BlockFile(path, iobuf.BufferPool(iobuf.BufferPoolConfig.for_storage())) as probe:
            direct_ok, reason = probe.direct, probe.fallback_reason
        if not direct_ok:
            del file_samples["blockfile-direct"]
        for r in range(rounds):
            for kind, samples in loop_samples.items():
                samples.append(measure_loopback(kind, loopback_total, frame))
                log(f"round {r + 1}/{rounds} loopback {kind:22} {samples[-1]:8.1f} MiB/s")
            for kind, samples in file_samples.items():
                samples.append(measure_file(kind, path, file_total, block))
                log(f"round {r + 1}/{rounds} file     {kind:22} {samples[-1]:8.1f} MiB/s")
    finally:
        path.unlink()
    return {
        "loopback": {k: statistics.median(v) for k, v in loop_samples.items()},
        "loopback_samples": loop_samples,
        "file": {k: statistics.median(v) for k, v in file_samples.items()},
        "file_samples": file_samples,
        "o_direct": direct_ok,
        "o_direct_reason": reason,
        "params": {
            "loopback_total": loopback_total,
            "frame": frame,
            "file_total": file_total,
            "block": block,
            "rounds": rounds,
            "directory": str(directory),
        },
    }


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"Loopback TCP: {p['loopback_total'] // MiB} MiB in {p['frame'] // 1024} KiB frames "
        f"(median of {p['rounds']} interleaved rounds)",
        "",
        "| receiver | MiB/s | vs streamreader |",
        "|---|---:|---:|",
    ]
    loop = result["loopback"]
    for kind, value in loop.items():
        peer = loop["streamreader+uvloop" if kind.endswith("+uvloop") else "streamreader"]
        lines.append(f"| {kind} | {value:.0f} | {value / peer:.2f}x |")
    lines += [
        "",
        f"File reads: {p['file_total'] // MiB} MiB in {p['block'] // 1024} KiB blocks, in {p['directory']}"
        + ("" if result["o_direct"] else f" (no O_DIRECT: {result['o_direct_reason']})"),
        "",
        "| reader | MiB/s | vs f.read |",
        "|---|---:|---:|",
    ]
    files = result["file"]
    for kind, value in files.items():
        lines.append(f"| {kind} | {value:.0f} | {value / files['f.read']:.2f}x |")
    return "\n".join(lines)


def target_met(result: dict[str, Any]) -> bool:
    """The issue's target: the pooled receiver at least 1.2x the StreamReader."""
    loop = result["loopback"]
    return bool(loop["iobuf"] >= 1.2 * loop["streamreader"])
