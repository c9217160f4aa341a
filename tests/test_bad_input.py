"""Bad arguments: clear TypeError/ValueError naming the parameter, and no state change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iobuf import BufferPool, BufferPoolConfig, IoBuf, IoBufMut, pread_into_pool, pwrite_all, write_all

from .helpers import PAGE, config

NOT_SIZES: list[Any] = [True, False, 1.0, "8", None, b"8", [8]]
SIZED_METHODS = ["try_alloc", "alloc", "alloc_len", "try_alloc_zeroed", "alloc_zeroed", "size_class"]


@pytest.mark.parametrize(
    "method", ["try_alloc", "alloc", "alloc_len", "try_alloc_zeroed", "alloc_zeroed", "size_class"]
)
@pytest.mark.parametrize("bad", NOT_SIZES)
def test_pool_sizes_must_be_ints(method: str, bad: Any) -> None:
    """Non-int sizes (bool included) raise TypeError and allocate nothing."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    before = pool.stats()
    with pytest.raises(TypeError, match="must be an int"):
        getattr(pool, method)(bad)
    assert pool.stats() == before


@pytest.mark.parametrize(
    "method", ["try_alloc", "alloc", "alloc_len", "try_alloc_zeroed", "alloc_zeroed", "size_class"]
)
def test_pool_sizes_must_not_be_negative(method: str) -> None:
    """A negative size is a ValueError naming the value."""
    pool = BufferPool(config(PAGE, PAGE, 2))
    with pytest.raises(ValueError, match="-5"):
        getattr(pool, method)(-5)
    assert pool.stats().classes[0].created == 0


def test_int_subclasses_are_accepted_as_sizes() -> None:
    """An int subclass (e.g. an IntEnum) works like its int value."""
    import enum

    class Size(enum.IntEnum):
        PAGE_ = PAGE

    pool = BufferPool(config(PAGE, PAGE, 2))
    assert pool.try_alloc(Size.PAGE_).capacity == PAGE


def test_pool_config_must_be_a_config() -> None:
    """BufferPool(config=...) type-checks and validates the config."""
    with pytest.raises(TypeError, match="config"):
        BufferPool({"min_size": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="power of two"):
        BufferPool(BufferPoolConfig(min_size=3000, max_size=4096, max_per_class=1))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.put_slice("text"), TypeError),
        (lambda m: m.put_slice(5), TypeError),
        (lambda m: m.put_slice(None), TypeError),
        (lambda m: m.advance(-1), ValueError),
        (lambda m: m.advance(True), TypeError),
        (lambda m: m.advance_mut(-1), ValueError),
        (lambda m: m.set_len(-1), ValueError),
        (lambda m: m.set_len(1.5), TypeError),
        (lambda m: m.truncate(-1), ValueError),
        (lambda m: m.copy_to_bytes(-1), ValueError),
        (lambda m: m.copy_to_bytes(100), ValueError),
    ],
)
def test_iobufmut_rejects_bad_arguments_without_changing(call: Any, error: type[Exception]) -> None:
    """Each bad call raises and the buffer still holds exactly what it held."""
    m = IoBufMut.with_alignment(64, 8)
    m.put_slice(b"abc")
    with pytest.raises(error):
        call(m)
    assert bytes(m) == b"abc" and m.capacity == 64


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda b: b.slice(-1, 2), ValueError),
        (lambda b: b.slice(0, "2"), TypeError),
        (lambda b: b.split_to(-1), ValueError),
        (lambda b: b.split_to(4), ValueError),
        (lambda b: b.advance(4), ValueError),
        (lambda b: b.copy_to_bytes(None), TypeError),
        (lambda b: b[1.0], TypeError),
        (lambda b: b[True], TypeError),
        (lambda b: b.into_mut_with_pool(None), TypeError),
    ],
)
def test_iobuf_rejects_bad_arguments_without_changing(call: Any, error: type[Exception]) -> None:
    """Each bad call raises and the view is unchanged."""
    b = IoBuf(b"abc")
    with pytest.raises(error):
        call(b)
    assert b == b"abc"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: IoBufMut("text"), TypeError),  # type: ignore[arg-type]
        (lambda: IoBuf(7), TypeError),  # type: ignore[arg-type]
        (lambda: IoBuf.copy_from_slice(object()), TypeError),  # type: ignore[arg-type]
        (lambda: IoBufMut.with_capacity(-1), ValueError),
        (lambda: IoBufMut.zeroed(True), TypeError),
        (lambda: IoBufMut.with_alignment(10, 3), ValueError),
        (lambda: IoBufMut.with_alignment(10, 0), ValueError),
        (lambda: IoBufMut.zeroed_with_alignment(10, -8), ValueError),
        (lambda: IoBufMut.with_alignment(10, 2.0), TypeError),  # type: ignore[arg-type]
    ],
)
def test_constructors_reject_bad_arguments(call: Any, error: type[Exception]) -> None:
    """Constructors name the parameter in TypeError/ValueError."""
    with pytest.raises(error):
        call()


def test_errors_name_the_parameter_and_value() -> None:
    """Messages say which argument was wrong and what it was."""
    with pytest.raises(TypeError, match=r"capacity must be an int, not bool \(True\)"):
        BufferPool(config(PAGE, PAGE, 1)).try_alloc(True)
    with pytest.raises(ValueError, match=r"alignment must be a power of two, got 12"):
        IoBufMut.with_alignment(64, 12)


@pytest.mark.parametrize(
    "call",
    [
        lambda: BufferPool(config(PAGE, PAGE, 1)).alloc(2**63),
        lambda: BufferPool(config(PAGE, PAGE, 1)).alloc_zeroed(2**64),
        lambda: IoBufMut.with_capacity(2**63),
        lambda: IoBufMut.with_alignment(10, 2**70),
    ],
)
def test_sizes_beyond_the_address_space_are_value_errors(call: Any) -> None:
    """Sizes above sys.maxsize are a ValueError, never an OverflowError from deep inside."""
    with pytest.raises(ValueError, match=r"sys\.maxsize"):
        call()


# -- file descriptors and offsets of the I/O helpers ------------------------------------------

FD_HELPERS = ["write_all", "pwrite_all", "pread_into_pool"]


def call_fd_helper(name: str, fd: Any, data: Any, offset: Any = 0) -> object:
    """Call one fd-taking helper with the arguments that apply to it."""
    if name == "write_all":
        return write_all(fd, data)
    if name == "pwrite_all":
        return pwrite_all(fd, data, offset)
    return pread_into_pool(fd, BufferPool(config(PAGE, PAGE, 2)), 10, offset)


@pytest.mark.parametrize("name", FD_HELPERS)
@pytest.mark.parametrize("fd", [1 << 40, 2**31, 2**64, -1, -(2**70)])
def test_out_of_range_fd_is_a_value_error_naming_fd(name: str, fd: int) -> None:
    """An fd outside 0..2**31-1 is a ValueError naming ``fd`` and the value (never an
    OverflowError from os), raised before the data argument is touched."""
    m = IoBufMut(b"keep me")
    with pytest.raises(ValueError, match=rf"fd must be .* got {fd}\b"):
        call_fd_helper(name, fd, m)
    assert m == b"keep me" and m.capacity >= 7


@pytest.mark.parametrize("name", FD_HELPERS)
@pytest.mark.parametrize("fd", [True, False, 3.0, "3", None, b"3"])
def test_fd_of_the_wrong_type_is_a_type_error(name: str, fd: object) -> None:
    """bool, float, str, None and bytes are not file descriptors: TypeError naming ``fd``."""
    with pytest.raises(TypeError, match=r"\bfd\b"):
        call_fd_helper(name, fd, b"x")


@pytest.mark.parametrize("name", FD_HELPERS)
def test_fd_is_checked_before_the_data(name: str) -> None:
    """With both the fd and the data wrong, the fd is the one reported."""
    with pytest.raises(ValueError, match="fd"):
        call_fd_helper(name, 1 << 40, 12345)


def test_fileno_results_are_checked_like_fds() -> None:
    """An object whose fileno() returns a bad value gets the same TypeError/ValueError."""

    class Bad:
        def __init__(self, value: object) -> None:
            self.value = value

        def fileno(self) -> object:
            return self.value

    with pytest.raises(ValueError, match=r"fd\.fileno\(\) .*1099511627776"):
        write_all(Bad(1 << 40), b"x")
    with pytest.raises(TypeError, match=r"fd\.fileno\(\)"):
        write_all(Bad("3"), b"x")


def test_int_like_fds_are_accepted(tmp_path: Any) -> None:
    """An fd is anything operator.index accepts (an IntEnum here), bool excepted."""
    import enum
    import os

    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        Fd = enum.IntEnum("Fd", {"F": fd})
        assert write_all(Fd.F, b"abc") == 3
        assert pwrite_all(Fd.F, b"Z", 1) == 1
        assert pread_into_pool(Fd.F, BufferPool(config(PAGE, PAGE, 2)), 3, 0) == b"aZc"
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["pwrite_all", "pread_into_pool"])
@pytest.mark.parametrize(("offset", "error"), [(-1, ValueError), (2**63, ValueError), (2**80, ValueError)])
def test_offsets_outside_off_t_are_value_errors(
    name: str, offset: int, error: type[Exception], tmp_path: Any
) -> None:
    """A negative offset, or one too large for off_t, is a ValueError naming ``offset``."""
    import os

    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(error, match="offset"):
            call_fd_helper(name, fd, b"x", offset)
        with pytest.raises(TypeError, match="offset"):
            call_fd_helper(name, fd, b"x", True)
    finally:
        os.close(fd)


def test_readers_check_the_pool_type() -> None:
    """recv_into_pool, recv_exactly and pread_into_pool name ``pool`` when it is not a BufferPool."""
    import socket

    from iobuf import recv_exactly, recv_into_pool

    a, b = socket.socketpair()
    with a, b:
        calls: list[Callable[[], object]] = [
            lambda: recv_into_pool(a, None, 1),  # type: ignore[arg-type]
            lambda: recv_exactly(a, "pool", 1),  # type: ignore[arg-type]
            lambda: pread_into_pool(a.fileno(), object(), 1, 0),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(TypeError, match="pool must be a BufferPool"):
                call()
