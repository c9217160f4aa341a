"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from iobuf import BufferPoolConfig


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
