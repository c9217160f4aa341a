"""``BufferPoolConfig``: the frozen description of a pool's size classes and limits.

Invariants:
- A config object is immutable; every ``with_*`` builder returns a new one.
- Construction checks only types and per-field ranges (a size is a non-bool
  ``int``; ``min_size``, ``max_size``, ``max_per_class``, ``alignment`` and
  ``parallelism`` are >= 1; ``max_per_class`` fits in 32 bits). Relations
  between fields (powers of two, ``min_size >= alignment`` ...) are checked by
  :meth:`BufferPoolConfig.validate`, which :class:`~iobuf.BufferPool` calls, so
  builders may pass through invalid intermediate states as in the seed.
- ``validate()`` raises ``ValueError`` with the seed's panic messages.

Thread safety: immutable, so freely shareable between threads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ._errors import check_nonneg, check_positive
from ._memory import page_size

__all__ = ["MAX_PER_CLASS_LIMIT", "BufferPoolConfig"]

# The seed identifies slots with u32, so a class holds at most 2**32 - 1 buffers.
MAX_PER_CLASS_LIMIT = 2**32 - 1


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True, kw_only=True)
class BufferPoolConfig:
    """Size classes, limits and caching policy of a :class:`~iobuf.BufferPool`.

    Sizes are in bytes. Size classes are the powers of two from ``min_size`` to
    ``max_size``; each class holds at most ``max_per_class`` buffers.

    ``thread_cache_capacity``: ``None`` derives each thread's cache size from
    ``parallelism`` (see :meth:`resolve_thread_cache_capacity`), ``0``
    disables thread caches, ``n >= 1`` caches exactly ``n`` free buffers per
    thread per class.

    ``scrub_on_return`` zeroes every pooled buffer's bytes when it comes back,
    so no data passes from one user to the next. ``track_allocations`` records
    where each pooled buffer in use was allocated, for
    :meth:`BufferPool.outstanding` (a debugging aid; see docs/operations.md
    for both costs). Both move every return off the inlined fast path.

    >>> cfg = BufferPoolConfig.for_network().with_max_per_class(64)
    >>> cfg.class_sizes[:3]
    (1024, 2048, 4096)
    """

    pool_min_size: int = 0
    min_size: int
    max_size: int
    max_per_class: int
    prefill: bool = False
    alignment: int = 1
    parallelism: int = 1
    thread_cache_capacity: int | None = field(default=None)
    scrub_on_return: bool = False
    track_allocations: bool = False

    def __post_init__(self) -> None:
        check_nonneg("pool_min_size", self.pool_min_size)
        check_positive("min_size", self.min_size)
        check_positive("max_size", self.max_size)
        per_class = check_positive("max_per_class", self.max_per_class)
        if per_class > MAX_PER_CLASS_LIMIT:
            raise ValueError(f"max_per_class must be <= {MAX_PER_CLASS_LIMIT}, got {per_class}")
        for flag in ("prefill", "scrub_on_return", "track_allocations"):
            if type(getattr(self, flag)) is not bool:
                raise TypeError(f"{flag} must be a bool, not {type(getattr(self, flag)).__name__}")
        check_positive("alignment", self.alignment)
        check_positive("parallelism", self.parallelism)
        if self.thread_cache_capacity is not None:
            check_nonneg("thread_cache_capacity", self.thread_cache_capacity)

    # -- presets -------------------------------------------------------------

    @classmethod
    def for_network(cls) -> BufferPoolConfig:
        """1 KiB to 128 KiB, 4096 buffers per class, no alignment, automatic thread cache."""
        return cls(min_size=1024, max_size=128 * 1024, max_per_class=4096)

    @classmethod
    def for_storage(cls) -> BufferPoolConfig:
        """One page to 8 MiB, 64 buffers per class, page-aligned (ready for ``O_DIRECT``)."""
        page = page_size()
        return cls(min_size=page, max_size=8 * 1024 * 1024, max_per_class=64, alignment=page)

    # -- builders ------------------------------------------------------------

    def with_pool_min_size(self, pool_min_size: int) -> BufferPoolConfig:
        """Requests smaller than this bypass the pool (untracked, aligned)."""
        return dataclasses.replace(self, pool_min_size=pool_min_size)

    def with_min_size(self, min_size: int) -> BufferPoolConfig:
        """Smallest size class (a power of two, >= alignment)."""
        return dataclasses.replace(self, min_size=min_size)

    def with_max_size(self, max_size: int) -> BufferPoolConfig:
        """Largest size class (a power of two, >= min_size)."""
        return dataclasses.replace(self, max_size=max_size)

    def with_max_per_class(self, max_per_class: int) -> BufferPoolConfig:
        """Upper bound on buffers created per size class."""
        return dataclasses.replace(self, max_per_class=max_per_class)

    def with_parallelism(self, parallelism: int) -> BufferPoolConfig:
        """Expected number of threads: stripes the shared freelists and sizes automatic caches."""
        return dataclasses.replace(self, parallelism=parallelism)

    def with_thread_cache_capacity(self, thread_cache_capacity: int) -> BufferPoolConfig:
        """Cache exactly ``thread_cache_capacity`` (>= 1) free buffers per thread per class."""
        check_positive("thread_cache_capacity", thread_cache_capacity)
        return dataclasses.replace(self, thread_cache_capacity=thread_cache_capacity)

    def with_thread_cache_disabled(self) -> BufferPoolConfig:
        """Route every return through the shared freelists."""
        return dataclasses.replace(self, thread_cache_capacity=0)

    def with_prefill(self, prefill: bool) -> BufferPoolConfig:
        """Create every buffer up front when the pool is built."""
        return dataclasses.replace(self, prefill=prefill)

    def with_scrub_on_return(self, scrub: bool) -> BufferPoolConfig:
        """Zero each pooled buffer when it comes back to the pool."""
        return dataclasses.replace(self, scrub_on_return=scrub)

    def with_track_allocations(self, track: bool) -> BufferPoolConfig:
        """Record the origin of every pooled buffer in use (see ``BufferPool.outstanding``)."""
        return dataclasses.replace(self, track_allocations=track)

    def with_alignment(self, alignment: int) -> BufferPoolConfig:
        """Base-address alignment of every buffer (a power of two)."""
        return dataclasses.replace(self, alignment=alignment)

    def with_budget_bytes(self, budget_bytes: int) -> BufferPoolConfig:
        """Set ``max_per_class = ceil(budget_bytes / sum(class sizes))``, at least 1.

        Rounding up means the tracked memory may exceed the budget slightly.
        """
        budget = check_positive("budget_bytes", budget_bytes)
        self._validate_bounds()
        per_class = max(1, -(-budget // sum(self.class_sizes)))
        if per_class > MAX_PER_CLASS_LIMIT:
            raise ValueError(
                f"budget_bytes ({budget}) gives max_per_class ({per_class}) above {MAX_PER_CLASS_LIMIT}"
            )
        return dataclasses.replace(self, max_per_class=per_class)

    # -- derived values ------------------------------------------------------

    def _validate_bounds(self) -> None:
        if not _is_pow2(self.min_size):
            raise ValueError("min_size must be a power of two")
        if not _is_pow2(self.max_size):
            raise ValueError("max_size must be a power of two")
        if self.max_size < self.min_size:
            raise ValueError("max_size must be >= min_size")

    def validate(self) -> None:
        """Raise ``ValueError`` (with the seed's message) if this config cannot build a pool."""
        self._validate_bounds()
        if not _is_pow2(self.alignment):
            raise ValueError("alignment must be a power of two")
        if self.min_size < self.alignment:
            raise ValueError(f"min_size ({self.min_size}) must be >= alignment ({self.alignment})")
        if self.pool_min_size > self.min_size:
            raise ValueError(f"pool_min_size ({self.pool_min_size}) must be <= min_size ({self.min_size})")
        tcc = self.thread_cache_capacity
        if tcc is not None and tcc > self.max_per_class:
            raise ValueError(f"thread_cache_capacity ({tcc}) must be <= max_per_class ({self.max_per_class})")

    @property
    def num_classes(self) -> int:
        """Number of size classes from ``min_size`` to ``max_size``."""
        self._validate_bounds()
        return self.max_size.bit_length() - self.min_size.bit_length() + 1

    @property
    def class_sizes(self) -> tuple[int, ...]:
        """Buffer size of every class, ascending."""
        return tuple(self.min_size << i for i in range(self.num_classes))

    def resolve_thread_cache_capacity(self) -> int:
        """Free buffers each thread may cache per class.

        Automatic: ``max_per_class // (2 * min(parallelism, max_per_class))``,
        which keeps about half of each class in the shared freelist and may be
        0 (caching off, so no buffer is stranded in another thread's cache).
        """
        if self.thread_cache_capacity is not None:
            return self.thread_cache_capacity
        threads = min(self.parallelism, self.max_per_class)
        return self.max_per_class // (2 * threads)
