"""The exceptions iobuf raises, and the argument checks every entry point shares.

Invariants: ``PoolError`` is the root of everything the pool itself refuses
(oversized, exhausted, closed). Bad arguments are ordinary ``TypeError`` /
``ValueError`` raised by the ``check_*`` helpers below, always naming the
parameter and the offending value, and always raised before any state changes.

The exception classes say ``__module__ = "iobuf"``, the module users import
them from, so they print (in ``repr``, tracebacks and ``help``) as
``iobuf.Exhausted`` and pickle by that name.

Thread safety: stateless; safe from any thread.
"""

from __future__ import annotations

import sys

__all__ = [
    "Exhausted",
    "Oversized",
    "PoolClosed",
    "PoolError",
    "check_nonneg",
    "check_positive",
    "check_size",
]

_OVERSIZED_MSG = "requested capacity exceeds maximum buffer size"
_EXHAUSTED_MSG = "pool exhausted for required size class"


class PoolError(Exception):
    """Root of the errors a :class:`~iobuf.BufferPool` raises for a request it refuses."""

    __module__ = "iobuf"


class Oversized(PoolError):
    """The requested capacity is larger than the pool's ``max_size``."""

    __module__ = "iobuf"

    def __init__(self, message: str = _OVERSIZED_MSG) -> None:
        super().__init__(message)


class Exhausted(PoolError):
    """Every buffer of the needed size class is in use and the class is at ``max_per_class``."""

    __module__ = "iobuf"

    def __init__(self, message: str = _EXHAUSTED_MSG) -> None:
        super().__init__(message)


class PoolClosed(PoolError):
    """The pool was closed (explicitly, by its ``with`` block, or by being dropped)."""

    __module__ = "iobuf"

    def __init__(self, message: str = "buffer pool is closed; it hands out no more buffers") -> None:
        super().__init__(message)


def check_size(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``), else raise ``TypeError``."""
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")


def check_nonneg(name: str, value: object) -> int:
    """An ``int`` in ``[0, sys.maxsize]``, else ``TypeError``/``ValueError`` naming ``name``."""
    n = check_size(name, value)
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    if n > sys.maxsize:
        raise ValueError(f"{name} must be <= sys.maxsize, got {n}")
    return n


def check_positive(name: str, value: object) -> int:
    """An ``int`` >= 1 (the seed's ``NonZero``), else ``TypeError``/``ValueError``."""
    n = check_size(name, value)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    if n > sys.maxsize:
        raise ValueError(f"{name} must be <= sys.maxsize, got {n}")
    return n
