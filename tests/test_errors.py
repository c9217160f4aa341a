"""The exceptions (``_errors``): the seed's messages and one root, ``PoolError``.
The argument checks this module also holds are exercised through every entry point
in ``test_bad_input.py`` and ``test_input_sweep.py``."""

from __future__ import annotations

from iobuf import Exhausted, Oversized, PoolClosed, PoolError


def test_error_messages_match_the_seed() -> None:
    """Oversized and Exhausted print the seed's Display strings and are PoolErrors."""
    assert str(Oversized()) == "requested capacity exceeds maximum buffer size"
    assert str(Exhausted()) == "pool exhausted for required size class"
    assert issubclass(Oversized, PoolError) and issubclass(Exhausted, PoolError)
    assert issubclass(PoolClosed, PoolError)
