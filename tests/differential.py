"""Run one sequence of pool and buffer operations and describe every outcome.

``tests/test_differential.py`` runs the same sequence on both cores, the one
in use in the test process and the other in a worker process (this module run
as ``python -m tests.differential``, one JSON sequence per stdin line, one JSON
outcome list per stdout line), and requires identical outcomes: bytes, lengths,
capacities, exceptions with their messages, and pool stats. Addresses differ
between processes, so only a pooled buffer's alignment is reported (a heap
buffer's is unspecified: ``bytearray`` in one core, ``calloc`` in the other).

An operation is a list ``[name, *args]``; slots are indexes into the list of
live objects (buffers, IoBufs, memoryviews), taken modulo its length.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from typing import Any

import iobuf
from iobuf import BufferPool, BufferPoolConfig, IoBuf, IoBufMut
from iobuf._impl import commit_received, join_adjacent, reclaim_received, sendable, split_filled, take_front

CONFIG = BufferPoolConfig(min_size=64, max_size=256, max_per_class=3, alignment=64, thread_cache_capacity=2)


def _describe(obj: Any) -> list[Any]:
    if isinstance(obj, IoBufMut):
        alignment = obj.address % 64 if obj and obj.is_pooled else None
        return ["mut", bytes(obj).hex(), obj.capacity, obj.is_pooled, alignment]
    if isinstance(obj, IoBuf):
        return ["buf", bytes(obj).hex(), obj.is_pooled]
    if isinstance(obj, memoryview):
        return ["view", obj.tobytes().hex(), obj.readonly]
    return ["value", repr(obj)]


def _stats(pool: BufferPool) -> list[Any]:
    s = pool.stats()
    return [
        [c.size, c.created, c.global_free, c.local_free, c.exhausted_total, c.thread_cache_capacity]
        for c in s.classes
    ] + [s.oversized_total]


def _step(pool: BufferPool, live: list[Any], op: list[Any]) -> Any:
    name, *args = op
    if name in ("try_alloc", "alloc", "alloc_len", "alloc_zeroed", "try_alloc_zeroed"):
        live.append(getattr(pool, name)(args[0]))
        return _describe(live[-1])
    if name == "stats":
        return _stats(pool)
    if name == "trim":
        return pool.trim(args[0])
    if name == "flush":
        iobuf.flush_thread_cache()
        return None
    if name == "close":
        pool.close()
        return None
    if not live:
        return "empty"
    i = args[0] % len(live)
    obj = live[i]
    rest = args[1:]
    if name == "drop":
        del live[i]
        return None
    if name == "view":
        live.append(obj.as_memoryview() if not isinstance(obj, memoryview) else obj[1:])
        return _describe(live[-1])
    if name == "release":
        if isinstance(obj, memoryview):
            obj.release()
            del live[i]
            return None
        obj.release()
        return _describe(obj)
    if name == "poke":
        if not isinstance(obj, memoryview) or obj.readonly or not len(obj):
            return "n/a"
        obj[0] = rest[0]
        return _describe(obj)
    if name == "index":
        if not isinstance(obj, IoBuf):
            return "n/a"
        return [obj[rest[0]], _describe(obj)]
    if name == "getslice":
        if not isinstance(obj, IoBuf):
            return "n/a"
        live.append(obj[rest[0] : rest[1]])
        return [_describe(live[-1]), _describe(obj)]
    if name == "split_filled":
        if not isinstance(obj, IoBufMut):
            return "n/a"
        live.append(split_filled(obj))
        return [_describe(live[-1]), _describe(obj)]
    if name in ("join", "eq"):
        other = live[rest[0] % len(live)]
        if name == "eq":
            return obj == other
        if not isinstance(obj, IoBuf) or not isinstance(other, IoBuf):
            return "n/a"
        joined = join_adjacent(obj, other)
        if joined is None:
            return None
        live.append(joined)
        return _describe(joined)
    if name == "find":
        if not isinstance(obj, IoBuf):
            return "n/a"
        return [obj.find(bytes.fromhex(rest[0]), rest[1], rest[2]), _describe(obj)]
    if name == "take_front":
        if not isinstance(obj, IoBuf):
            return "n/a"
        chunks = deque([obj]) if obj else deque()
        taken = take_front(chunks, rest[0], rest[1])
        if taken is not None:
            live.append(taken)
        return [None if taken is None else _describe(taken), len(chunks), _describe(obj)]
    if name == "commit_received":
        if not isinstance(obj, IoBufMut):
            return "n/a"
        last = live[rest[1] % len(live)]
        # A clone: the chunks are the caller's alone (the compiled core extends the
        # last one in place, the pure core replaces it), as the reader's chain keeps them.
        chunks = deque([last.clone()]) if isinstance(last, IoBuf) and last else deque()
        full = commit_received(obj, rest[0], chunks)
        live.extend(chunks)
        return [full, [_describe(c) for c in chunks], _describe(obj)]
    if name == "reclaim_received":
        # A receive of rest[0] bytes whose chunk is kept (rest[1]) or read and
        # dropped, then the reuse check: its answer depends on every other holder.
        if not isinstance(obj, IoBufMut):
            return "n/a"
        chunks = deque()
        commit_received(obj, rest[0], chunks)
        if rest[1]:
            live.extend(chunks)
        chunks.clear()
        return [reclaim_received(obj), _describe(obj)]
    if name == "sendable":
        if not isinstance(obj, IoBuf):
            return "n/a"
        sent = sendable(obj)
        return [type(sent).__name__, bytes(sent).hex()]
    if name == "put_slice":
        rest = [bytes.fromhex(rest[0])]
    method = getattr(obj, name, None)
    if method is None:
        return "n/a"
    result = method(*rest)
    if isinstance(result, (IoBuf, IoBufMut, memoryview)):
        live.append(result)
        result = _describe(result)
    return [result, _describe(obj)]


def run(ops: list[list[Any]]) -> list[Any]:
    """Every operation's outcome, in order: its value or its exception and message."""
    pool = BufferPool(CONFIG)
    live: list[Any] = []
    out: list[Any] = []
    try:
        for op in ops:
            try:
                out.append(["ok", _step(pool, live, op)])
            except Exception as exc:  # the outcome under test: type and message
                out.append(["raised", type(exc).__name__, str(exc)])
        out.append(["final", _stats(pool)])
    finally:
        live.clear()
        pool.close()
        iobuf.flush_thread_cache()
    return out


def main() -> None:
    """The worker: one sequence per input line, one outcome list per output line."""
    print(json.dumps(iobuf.IMPLEMENTATION), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
