"""Request/response: a small key-value server on StreamReader and on PooledReader,
driven by ``redis-benchmark`` (Debian's ``redis-tools``), a client nobody here wrote.

The server speaks the part of the Redis protocol (RESP) that ``redis-benchmark
-t set,get`` uses: each request is a line header (``*3``) then, per argument, a
line (``$5``) and a length-prefixed value. It is written once, in
:func:`handle`, and run on either reader:

- ``streamreader``: ``asyncio.start_server``, values kept as ``bytes``;
- ``iobuf``: ``iobuf.start_server``, values kept as the ``IoBuf`` that
  ``readexactly`` returned (what a user who wants zero copy keeps);

each on the default event loop and on uvloop. Every server runs in its own
process; ``redis-benchmark`` runs SET, then GET against it, ``-P 16``
(pipelined) or ``-P 1`` (one request at a time). Measured: requests per
second; the server's CPU time (user + system, from ``/proc``) per request,
which says what the server itself costs when the client and the kernel bound
the rate; and the server's RSS after the run, with every key of the keyspace
stored. Rounds interleave the servers; the median per cell is reported, with
ratios iobuf / streamreader on the same loop.

Throughput on this shared 2-core machine varies by up to 2x between rounds,
so ``--kv --instructions`` also counts what the server itself executes: each
server runs under ``valgrind --tool=callgrind`` (Debian's ``valgrind``),
driven by the same ``redis-benchmark``, and the instructions per request are
the difference between a long and a short run over the requests between them
(start-up and shut-down cancel out). Counts do not depend on what else the
machine runs; they are not time (a syscall or a cache miss counts as little),
so they complement the throughput table rather than replace it.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import iobuf

from . import ROOT

#: (value size, requests per redis-benchmark test, keyspace). Each test runs
#: for about a second or more, pipelined or not: shorter runs (one request at a
#: time once took a quarter of these, 0.1 s for 64 KiB and 1 MiB values) were
#: dominated by connecting 16 clients and by the machine's moment-to-moment load.
SIZES: list[tuple[int, int, int]] = [
    (100, 100_000, 10_000),
    (4096, 50_000, 10_000),
    (65536, 20_000, 1_000),
    (1 << 20, 1_500, 100),
]
CLIENTS = 16
INSTALL_HINT = "apt-get install redis-tools (Debian/Ubuntu) for redis-benchmark"
#: --instructions: (value size, SET requests in the short run, in the long run)
INSTRUCTION_SIZES: list[tuple[int, int, int]] = [(100, 400, 1200), (4096, 400, 1200), (65536, 80, 240)]
#: --instructions: keys (few, so that nearly every GET finds its value)
INSTRUCTION_KEYSPACE = 50


def client_path() -> str | None:
    """Where ``redis-benchmark`` is, or None."""
    return shutil.which("redis-benchmark")


def ensure_client() -> str:
    """``redis-benchmark``, installed from Debian's packages when missing and we are root."""
    found = _apt_install("redis-tools", "redis-benchmark")
    if found is None:
        raise SystemExit(f"redis-benchmark not found: {INSTALL_HINT}")
    return found


def ensure_valgrind() -> str:
    """``valgrind``, installed from Debian's packages when missing and we are root."""
    found = _apt_install("valgrind", "valgrind")
    if found is None:
        raise SystemExit("valgrind not found: apt-get install valgrind (Debian/Ubuntu)")
    return found


def _apt_install(package: str, command: str) -> str | None:
    """Where ``command`` is, after installing Debian's ``package`` when it is missing and we are root."""
    if shutil.which(command) is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=False, env=env)  # noqa: S603, S607
    return shutil.which(command)


#: What each measurement records (RSS last).
_METRICS = ("set", "get", "set_cpu_us", "get_cpu_us", "set_user_us", "get_user_us", "rss_kib")


def servers() -> list[str]:
    names = ["streamreader", "iobuf"]
    if importlib.util.find_spec("uvloop") is not None:
        names += ["streamreader+uvloop", "iobuf+uvloop"]
    return names


# -- the server (runs in its own process) -------------------------------------------

_CONFIG = {
    b"save": b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
    b"appendonly": b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
}


async def handle(reader: Any, writer: Any, store: dict[bytes, Any], as_int: Callable[[Any], int]) -> None:
    """One connection: RESP requests until EOF. The same code for both readers;
    ``as_int`` parses a header's digits (``int`` where the reader's lines are bytes-like)."""
    readline, readexactly, write = reader.readline, reader.readexactly, writer.write
    while True:
        try:
            line = await readline()
        except ConnectionError:  # redis-benchmark resets its connections when done
            break
        if not line:
            break
        args = []
        for _ in range(as_int(line[1:])):
            size = as_int((await readline())[1:])
            args.append(await readexactly(size))
            await readexactly(2)
        command = bytes(args[0]).upper()
        if command == b"SET":
            store[bytes(args[1])] = args[2]
            write(b"+OK\r\n")
        elif command == b"GET":
            value = store.get(bytes(args[1]))
            if value is None:
                write(b"$-1\r\n")
            else:
                writer.writelines((b"$%d\r\n" % len(value), value, b"\r\n"))
        elif command == b"CONFIG":
            write(_CONFIG.get(bytes(args[2]).lower(), b"*0\r\n"))
        else:
            write(b"-ERR unknown command\r\n")
        try:
            await writer.drain()
        except ConnectionError:
            break
    writer.close()


def _as_int_for(kind: str) -> Callable[[Any], int]:
    """``int`` takes any bytes-like object; an IoBuf is one except on the pure core before 3.12."""
    if kind.startswith("iobuf"):
        try:
            int(iobuf.IoBuf(b"1"))
        except TypeError:
            return lambda data: int(bytes(data))
    return int


async def _serve(kind: str) -> None:
    store: dict[bytes, Any] = {}
    as_int = _as_int_for(kind)

    async def on_connect(reader: Any, writer: Any) -> None:
        await handle(reader, writer, store, as_int)

    if kind.startswith("iobuf"):
        pool = iobuf.BufferPool(iobuf.BufferPoolConfig.for_network())
        server = await iobuf.start_server(on_connect, "127.0.0.1", 0, pool=pool)
    else:
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


def serve(kind: str) -> None:  # pragma: no cover - runs in the server process
    """The server process: print the port, serve until SIGTERM."""
    if kind.endswith("+uvloop"):
        importlib.import_module("uvloop").run(_serve(kind))
    else:
        asyncio.run(_serve(kind))


# -- what a copy costs over a view ----------------------------------------------------


def copy_costs(
    sizes: tuple[int, ...] = (100, 1024, 4096, 16384, 65536), number: int = 20_000
) -> list[dict[str, Any]]:
    """ns per read of ``size`` bytes from a pooled 128 KiB receive chunk, as the reader
    takes it (``take_front``): a copy (``copy_max`` above the size) or a view (0);
    next to ``bytes(bytearray[:n])``, StreamReader's own copy. Best of 5, one process."""
    from collections import deque  # noqa: PLC0415 - only this measurement needs them
    from timeit import repeat  # noqa: PLC0415

    from iobuf._impl import take_front  # noqa: PLC0415

    pool = iobuf.BufferPool(iobuf.BufferPoolConfig.for_network())
    buf = pool.alloc(1 << 17)
    buf.put_slice(bytes(1 << 17))
    chunk = buf.freeze()
    heap = bytearray(1 << 17)
    rows = []
    for size in sizes:

        def take(copy_max: int, n: int = size) -> object:
            return take_front(deque([chunk.clone()]), n, copy_max)

        def best(fn: Callable[[], object]) -> float:
            return min(repeat(fn, number=number, repeat=5)) / number * 1e9

        base = best(lambda: deque([chunk.clone()]))  # what each call needs besides the read
        rows.append(
            {
                "size": size,
                "copy": best(lambda: take(1 << 30)) - base,
                "view": best(lambda: take(0)) - base,
                "bytes": best(functools.partial(_slice_copy, heap, size)),
            }
        )
    return rows


def _slice_copy(heap: bytearray, n: int) -> bytes:
    return bytes(heap[:n])


def render_copy_costs(rows: list[dict[str, Any]]) -> str:
    lines = [
        "ns per read taken from a pooled receive chunk (best of 5, one process)",
        "",
        "| read | copy (take_front) | view (take_front) | copy - view | bytes(bytearray[:n]) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {_size(r['size'])} | {r['copy']:.0f} | {r['view']:.0f} | "
            f"{r['copy'] - r['view']:.0f} | {r['bytes']:.0f} |"
        )
    return "\n".join(lines)


# -- the driver ----------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """The user and the system CPU time the process has used, from ``/proc`` (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()  # (after the command name, which may hold spaces)
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure(
    kind: str, size: int, requests: int, keyspace: int, *, pipeline: int, client: str
) -> dict[str, Any]:
    """One server process, SET then GET from redis-benchmark: requests/s each, the
    server's CPU time (user + system) per request each, and RSS after."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", f"from bench._kv import serve; serve({kind!r})"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,  # where this harness is importable from (see bench.ROOT)
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        found: dict[str, Any] = {}
        for test in ("set", "get"):
            before = _cpu_seconds(proc.pid)
            out = subprocess.run(  # noqa: S603 - a fixed command line
                [
                    *(client, "-p", str(port), "-t", test, "-n", str(requests), "-c", str(CLIENTS)),
                    *("-P", str(pipeline), "-d", str(size), "-r", str(keyspace), "--csv"),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout
            after = _cpu_seconds(proc.pid)
            user, system = ((a - b) / requests * 1e6 for a, b in zip(after, before, strict=True))
            found[f"{test}_cpu_us"] = user + system
            found[f"{test}_user_us"] = user
            row = out.splitlines()[-1]
            cells = [c.strip('"') for c in row.split(",")]
            if cells[0].lower() != test:
                raise RuntimeError(f"redis-benchmark printed {row!r} for -t {test}")
            found[test] = float(cells[1])
        found["rss_kib"] = _rss_kib(proc.pid)
        return found
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def run(
    rounds: int,
    sizes: list[tuple[int, int, int]],
    log: Callable[[str], None] = print,
    pipelines: tuple[int, ...] = (16, 1),
) -> dict[str, Any]:
    """Interleaved rounds over every (size, pipeline, server); medians per cell.
    Odd rounds run the servers in reverse order, so neither of a pair always goes first."""
    client = ensure_client()
    samples: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        for size, requests, keyspace in sizes:
            for pipeline in pipelines:
                for kind in servers()[:: -1 if r % 2 else 1]:
                    one = measure(kind, size, requests, keyspace, pipeline=pipeline, client=client)
                    samples.setdefault(f"{kind}|{size}|{pipeline}", []).append(one)
                    log(
                        f"round {r + 1}/{rounds} {kind:20} {size:8d} B -P {pipeline:2d}: "
                        f"SET {one['set']:9.0f}/s GET {one['get']:9.0f}/s "
                        f"CPU/request SET {one['set_cpu_us']:7.1f} us GET {one['get_cpu_us']:7.1f} us "
                        f"RSS {one['rss_kib'] // 1024} MiB"
                    )
    cells = {
        key: {m: statistics.median(s[m] for s in runs) for m in _METRICS} for key, runs in samples.items()
    }
    return {"cells": cells, "samples": samples, "rounds": rounds, "clients": CLIENTS}


# -- instructions per request (callgrind) ---------------------------------------------


def server_instructions(
    kind: str, size: int, requests: int, *, tests: str, pipeline: int, client: str, valgrind: str
) -> int:
    """Instructions the ``kind`` server process executed, start to exit, under
    callgrind while ``redis-benchmark`` ran ``tests`` (e.g. ``"set,get"``) with
    ``requests`` requests each."""
    with tempfile.TemporaryDirectory(prefix="iobuf-kv-") as tmp:
        proc = subprocess.Popen(  # noqa: S603 - valgrind on our own interpreter and module
            [
                *(valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out"),
                *(sys.executable, "-c", f"from bench._kv import serve; serve({kind!r})"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED="0"),  # the same dict layouts every run
        )
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            subprocess.run(  # noqa: S603 - a fixed command line
                [
                    *(client, "-p", str(port), "-t", tests, "-n", str(requests), "-c", str(CLIENTS)),
                    *("-P", str(pipeline), "-d", str(size), "-r", str(INSTRUCTION_KEYSPACE), "-q"),
                ],
                capture_output=True,
                check=True,
                timeout=900,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=300)
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"callgrind reported no count for {kind}: {err[-500:]}")
    return int(found.group(1))


def per_request(short: int, long: int, both: int, n_short: int, n_long: int) -> dict[str, float]:
    """SET and GET instructions per request from three runs: SET with ``n_short``
    and ``n_long`` requests, then SET and GET with ``n_long`` each."""
    return {"set": (long - short) / (n_long - n_short), "get": (both - long) / n_long}


def run_instructions(sizes: list[tuple[int, int, int]], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Instructions per SET and per GET for every (size, pipeline, server)."""
    client = ensure_client()
    valgrind = ensure_valgrind()
    cells: dict[str, dict[str, float]] = {}
    for size, n_short, n_long in sizes:
        for pipeline in (16, 1):
            for kind in servers():

                def count(
                    tests: str, n: int, kind: str = kind, size: int = size, pipeline: int = pipeline
                ) -> int:
                    return server_instructions(
                        kind, size, n, tests=tests, pipeline=pipeline, client=client, valgrind=valgrind
                    )

                cell = per_request(
                    count("set", n_short), count("set", n_long), count("set,get", n_long), n_short, n_long
                )
                cells[f"{kind}|{size}|{pipeline}"] = cell
                log(
                    f"{kind:20} {size:8d} B -P {pipeline:2d}: "
                    f"SET {cell['set']:9.0f} GET {cell['get']:9.0f} instructions/request"
                )
    return {"instructions": cells, "clients": CLIENTS}


def _pairs(
    cells: dict[str, dict[str, Any]],
) -> Iterator[tuple[str, str, int, str, dict[str, Any], dict[str, Any]]]:
    """Each StreamReader cell with its iobuf peer on the same loop: (key, loop, value
    size, pipeline, StreamReader's cell, iobuf's cell)."""
    for key, peer in cells.items():
        kind, size, pipeline = key.split("|")
        ours = cells.get(key.replace("streamreader", "iobuf"))
        if kind.startswith("streamreader") and ours is not None:
            yield key, "uvloop" if kind.endswith("+uvloop") else "asyncio", int(size), pipeline, peer, ours


def render_instructions(result: dict[str, Any]) -> str:
    cells = result["instructions"]
    lines = [
        "server instructions per request (callgrind; redis-benchmark -t set,get, "
        f"{result['clients']} clients); ratio = streamreader / iobuf (above 1: iobuf executes fewer)",
        "",
        "| loop | value | pipeline | SET streamreader | SET iobuf | SET ratio "
        "| GET streamreader | GET iobuf | GET ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, loop, size, pipeline, peer, ours in _pairs(cells):
        row = [loop, _size(size), pipeline]
        for metric in ("set", "get"):
            row += [f"{peer[metric]:.0f}", f"{ours[metric]:.0f}", f"{peer[metric] / ours[metric]:.2f}"]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def paired_ratios(result: dict[str, Any], key: str, metric: str) -> list[float]:
    """iobuf / streamreader for a rate, streamreader / iobuf for a CPU time per
    request (above 1: iobuf does better either way), one ratio per round (the
    two ran side by side)."""
    ours = result["samples"][key.replace("streamreader", "iobuf")]
    peer = result["samples"][key]
    if metric.endswith("_cpu_us"):
        ours, peer = peer, ours
    return sorted(o[metric] / p[metric] for o, p in zip(ours, peer, strict=True))


def render(result: dict[str, Any]) -> str:
    cells = result["cells"]
    lines = [
        f"redis-benchmark -t set, then -t get, {result['clients']} clients, "
        f"{result['rounds']} interleaved rounds; "
        "ratio = iobuf / streamreader requests/s on the same loop in the same round, and "
        "streamreader / iobuf server CPU time (user + system) per request (above 1: iobuf does better): "
        "median (95% confidence interval of the median, from 6 rounds) [min-max]",
        "",
        "| loop | value | pipeline | SET ratio | GET ratio | SET CPU ratio | GET CPU ratio "
        "| streamreader SET/s | RSS iobuf / streamreader |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, loop, size, pipeline, peer, ours in _pairs(cells):
        ratio = {m: _spread(paired_ratios(result, key, m)) for m in _METRICS[:4]}
        lines.append(
            f"| {loop} | {_size(size)} | {pipeline} | {ratio['set']} | {ratio['get']} | "
            f"{ratio['set_cpu_us']} | {ratio['get_cpu_us']} | "
            f"{peer['set']:.0f} | {ours['rss_kib'] / 1024:.0f} / {peer['rss_kib'] / 1024:.0f} MiB |"
        )
    return "\n".join(lines)


def render_cpu(result: dict[str, Any]) -> str:
    """Medians of the server's CPU time per request, split into user space (the
    server's own code and the libraries it runs) and the kernel (system calls,
    page faults, loopback TCP: the same work for both readers)."""
    lines = [
        "server CPU per request (us, median), user space + kernel: streamreader / iobuf",
        "",
        "| loop | value | pipeline | SET user | SET kernel | GET user | GET kernel |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, loop, size, pipeline, peer, ours in _pairs(result["cells"]):
        row = [loop, _size(size), str(pipeline)]
        for test in ("set", "get"):
            user = (peer[f"{test}_user_us"], ours[f"{test}_user_us"])
            kernel = (peer[f"{test}_cpu_us"] - user[0], ours[f"{test}_cpu_us"] - user[1])
            row += [f"{user[0]:.1f} / {user[1]:.1f}", f"{kernel[0]:.1f} / {kernel[1]:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _spread(ratios: list[float]) -> str:
    """``median (95% CI of the median) [min-max]`` of sorted ``ratios``; the interval
    only from 6 rounds on."""
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    interval = median_interval(ratios)
    middle = "" if interval is None else f" ({interval[0]:.2f}-{interval[1]:.2f})"
    return f"{statistics.median(ratios):.2f}{middle} [{ratios[0]:.2f}-{ratios[-1]:.2f}]"


def median_interval(ordered: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of sorted samples:
    ``(x[k], x[n-1-k])`` for the largest ``k`` with P(Binomial(n, 1/2) <= k) at most
    ``(1 - confidence) / 2``; None when even ``(min, max)`` is not that sure."""
    n = len(ordered)
    tail, k = 0.0, -1
    while True:
        tail += math.comb(n, k + 1) / 2**n
        if tail > (1 - confidence) / 2:
            break
        k += 1
    if k < 0:
        return None
    return ordered[k], ordered[n - 1 - k]


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1024 else f"{n} B"
