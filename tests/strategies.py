"""Hypothesis strategies shared by the property tests.

The strategies of the asyncio suites (``test_aio.py``, ``test_aio_streamreader_parity.py``,
``test_receive.py``) still live in those files while they are edited elsewhere.
"""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import strategies as st

from iobuf import BufferPoolConfig, IoBuf, IoBufMut


@st.composite
def small_configs(draw: st.DrawFn) -> BufferPoolConfig:
    """Small pools (1-3 classes, few buffers) whose limits are reached often."""
    alignment = draw(st.sampled_from([1, 8, 64, 256]))
    min_size = draw(st.sampled_from([s for s in (64, 128, 256) if s >= alignment]))
    classes = draw(st.integers(1, 3))
    max_per_class = draw(st.integers(1, 6))
    cache = draw(st.sampled_from([None, 0, 1, 3, 4, 5]))
    return BufferPoolConfig(
        pool_min_size=draw(st.sampled_from([0, 0, 16, min_size])),
        min_size=min_size,
        max_size=min_size << (classes - 1),
        max_per_class=max_per_class,
        prefill=draw(st.booleans()),
        alignment=alignment,
        parallelism=draw(st.integers(1, 4)),
        thread_cache_capacity=cache if cache is None else min(cache, max_per_class),
    )


def payloads(max_size: int) -> st.SearchStrategy[bytes]:
    """Non-constant byte strings, so a misplaced write shows up."""
    return st.binary(min_size=1, max_size=max_size)


def _as_memoryview(data: bytes) -> memoryview:
    """``data`` as a memoryview (``memoryview`` itself is generic, which ``map`` cannot type)."""
    return memoryview(data)


def mistaken_arguments() -> st.SearchStrategy[list[Any]]:
    """Argument lists of anything a caller might pass by mistake, at the edges of
    every range (``test_input_sweep``): ints around 0, 2**31, 2**63 and beyond,
    None, bools, floats with NaN, text, bytes-likes, buffers, lists, slices, a config."""
    ints = st.one_of(
        st.integers(-3, 70_000),
        st.sampled_from([-(2**63), -1, 0, 1, 2**31, 2**63 - 1, 2**63, 2**64, 2**100, sys.maxsize]),
    )
    values = st.one_of(
        ints,
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=64),
        st.binary(max_size=64).map(bytearray),
        st.binary(max_size=64).map(_as_memoryview),
        st.binary(max_size=64).map(IoBuf),
        st.binary(max_size=64).map(IoBufMut),
        st.lists(st.binary(max_size=8), max_size=3),
        st.builds(object),
        st.just(slice(1, 3)),
        st.just(BufferPoolConfig.for_network()),
    )
    return st.lists(values, max_size=4)


#: The pool's allocation methods the differential operations call by name.
ALLOCATORS = ["try_alloc", "alloc", "alloc_len", "alloc_zeroed", "try_alloc_zeroed"]


def differential_operations() -> st.SearchStrategy[list[Any]]:
    """One operation for ``tests/differential.py``: ``[name, *args]``, JSON-ready, with
    sizes and counts from -1 (invalid) to past the largest class, slots indexing the
    live objects, and data as hex."""
    sizes = st.integers(-1, 300)
    counts = st.integers(-1, 300)
    slots = st.integers(0, 20)
    hex_data = st.binary(max_size=80).map(bytes.hex)
    return st.one_of(
        st.tuples(st.sampled_from(ALLOCATORS), sizes),
        st.tuples(st.just("put_slice"), slots, hex_data),
        st.tuples(
            st.sampled_from(["set_len", "truncate", "advance", "advance_mut", "split_to", "copy_to_bytes"]),
            slots,
            counts,
        ),
        st.tuples(st.just("slice"), slots, counts, counts),
        st.tuples(st.just("poke"), slots, st.integers(0, 255)),
        st.tuples(
            st.sampled_from(
                [
                    "clear",
                    "freeze",
                    "clone",
                    "try_into_mut",
                    "into_mut",
                    "remaining",
                    "chunk",
                    "spare_capacity",
                    "view",
                    "release",
                    "drop",
                    "drop",
                ]
            ),
            slots,
        ),
        st.tuples(st.just("index"), slots, st.integers(-300, 300)),
        st.tuples(st.just("getslice"), slots, st.integers(-300, 300), st.integers(-300, 300)),
        st.tuples(st.just("split_filled"), slots),
        st.tuples(st.sampled_from(["join", "eq"]), slots, slots),
        st.tuples(st.sampled_from(["stats", "flush", "stats", "flush", "close"])),
        st.tuples(st.just("trim"), st.integers(0, 3)),
        # The receive path's steps, and the IoBuf methods it relies on.
        st.tuples(st.just("find"), slots, st.binary(max_size=3).map(bytes.hex), counts, counts),
        st.tuples(st.just("take_front"), slots, counts, st.integers(0, 64)),
        st.tuples(st.just("commit_received"), slots, st.integers(0, 300), slots),
        st.tuples(st.just("reclaim_received"), slots, st.integers(0, 40), st.booleans()),
        st.tuples(st.sampled_from(["sendable", "compact"]), slots),
    ).map(list)
