"""BufferPoolConfig: presets, builders, validation messages, derived values."""

from __future__ import annotations

import dataclasses
import re

import pytest

from iobuf import BufferPoolConfig, page_size

from .helpers import PAGE, config


def test_valid_config_validates() -> None:
    """A page-aligned config of three classes (PAGE..4*PAGE) passes validate() and
    describes exactly those classes: a validate() that refused a valid config, or
    class sizes off by one doubling, fail here."""
    cfg = config(PAGE, PAGE * 4, 10)
    cfg.validate()
    assert cfg.class_sizes == (PAGE, 2 * PAGE, 4 * PAGE)


def test_explicit_thread_cache_above_max_per_class_is_rejected() -> None:
    """validate() names both numbers when the cache could hold more than the class."""
    cfg = config(PAGE, PAGE * 4, 10).with_thread_cache_capacity(11)
    with pytest.raises(ValueError, match=r"^thread_cache_capacity \(11\) must be <= max_per_class \(10\)$"):
        cfg.validate()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_size": 3000, "max_size": 8192}, "min_size must be a power of two"),
        ({"max_size": 3 * PAGE}, "max_size must be a power of two"),
        ({"min_size": 2 * PAGE, "max_size": PAGE}, "max_size must be >= min_size"),
        ({"alignment": 3}, "alignment must be a power of two"),
        ({"min_size": 2048, "alignment": 4096}, "min_size (2048) must be >= alignment (4096)"),
        ({"pool_min_size": PAGE + 1}, f"pool_min_size ({PAGE + 1}) must be <= min_size ({PAGE})"),
    ],
)
def test_validate_uses_the_seed_messages(changes: dict[str, int], message: str) -> None:
    """Each invalid relation between fields raises ValueError with the seed's text."""
    cfg = dataclasses.replace(config(PAGE, PAGE * 4, 10), **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cfg.validate()


def test_network_preset_matches_the_seed() -> None:
    """for_network(): 1 KiB..128 KiB, 4096 per class, alignment 1, automatic cache."""
    cfg = BufferPoolConfig.for_network()
    cfg.validate()
    assert (cfg.pool_min_size, cfg.min_size, cfg.max_size) == (0, 1024, 128 * 1024)
    assert (cfg.max_per_class, cfg.parallelism, cfg.alignment) == (4096, 1, 1)
    assert cfg.thread_cache_capacity is None
    assert cfg.prefill is False
    assert cfg.num_classes == 8


def test_storage_preset_is_page_aligned() -> None:
    """for_storage(): page..8 MiB, 64 per class, and (unlike the seed) page alignment."""
    cfg = BufferPoolConfig.for_storage()
    cfg.validate()
    assert (cfg.pool_min_size, cfg.min_size, cfg.max_size) == (0, page_size(), 8 * 1024 * 1024)
    assert (cfg.max_per_class, cfg.parallelism) == (64, 1)
    assert cfg.alignment == page_size()
    assert cfg.thread_cache_capacity is None
    assert cfg.prefill is False


def test_builders_return_new_configs_with_one_field_changed() -> None:
    """Every with_* builder sets its field and leaves the original untouched."""
    base = BufferPoolConfig.for_storage()
    cfg = (
        base.with_pool_min_size(1024)
        .with_max_per_class(64)
        .with_parallelism(4)
        .with_thread_cache_capacity(8)
        .with_prefill(True)
        .with_min_size(PAGE)
        .with_max_size(128 * 1024)
    )
    cfg.validate()
    assert cfg.pool_min_size == 1024
    assert (cfg.min_size, cfg.max_size, cfg.max_per_class) == (PAGE, 128 * 1024, 64)
    assert (cfg.parallelism, cfg.thread_cache_capacity, cfg.prefill) == (4, 8, True)
    assert base.pool_min_size == 0 and base.prefill is False

    aligned = (
        BufferPoolConfig.for_network()
        .with_pool_min_size(256)
        .with_parallelism(4)
        .with_alignment(256)
        .with_min_size(256)
    )
    aligned.validate()
    assert (aligned.alignment, aligned.min_size, aligned.parallelism) == (256, 256, 4)
    assert aligned.thread_cache_capacity is None
    assert aligned.with_thread_cache_disabled().resolve_thread_cache_capacity() == 0


def test_budget_bytes_divides_by_the_sum_of_class_sizes_rounding_up() -> None:
    """Classes 4+8+16=28: a 280-byte budget gives 10 per class, a 10-byte budget 1."""
    cfg = BufferPoolConfig(min_size=4, max_size=16, max_per_class=1, alignment=4)
    assert cfg.with_budget_bytes(280).max_per_class == 10
    assert cfg.with_budget_bytes(281).max_per_class == 11
    assert cfg.with_budget_bytes(10).max_per_class == 1


def test_budget_bytes_requires_valid_bounds() -> None:
    """with_budget_bytes() cannot size classes that do not exist."""
    cfg = BufferPoolConfig(min_size=3000, max_size=8192, max_per_class=1)
    with pytest.raises(ValueError, match="min_size must be a power of two"):
        cfg.with_budget_bytes(1 << 20)
    with pytest.raises(ValueError, match="budget_bytes must be >= 1"):
        config(PAGE, PAGE, 1).with_budget_bytes(0)
    with pytest.raises(ValueError, match="above 4294967295"):
        BufferPoolConfig(min_size=1, max_size=1, max_per_class=1).with_budget_bytes(2**33)


def test_automatic_cache_divides_half_the_class_among_threads() -> None:
    """64 buffers over 8 threads cache 4 each; 4096 over 8 cache 256."""
    assert config(PAGE, PAGE, 64, parallelism=8).resolve_thread_cache_capacity() == 4
    assert config(PAGE, PAGE, 4096, parallelism=8).resolve_thread_cache_capacity() == 256
    assert config(PAGE, PAGE, 2, parallelism=1).resolve_thread_cache_capacity() == 1


def test_automatic_cache_is_off_when_threads_outnumber_the_budget() -> None:
    """2 buffers over 8 threads: 2 // (2 * min(8, 2)) == 0, caching disabled."""
    assert config(PAGE, PAGE, 2, parallelism=8).resolve_thread_cache_capacity() == 0


def test_fixed_cache_capacity_overrides_the_automatic_one() -> None:
    """with_thread_cache_capacity(7) wins over the parallelism heuristic."""
    cfg = config(PAGE, PAGE, 64, parallelism=8).with_thread_cache_capacity(7)
    assert cfg.resolve_thread_cache_capacity() == 7


def test_class_sizes_are_ascending_powers_of_two() -> None:
    """class_sizes lists min_size, 2*min_size, ... max_size."""
    assert config(PAGE, PAGE * 8, 1).class_sizes == (PAGE, 2 * PAGE, 4 * PAGE, 8 * PAGE)
    assert config(PAGE, PAGE * 8, 1).num_classes == 4


def test_config_is_frozen() -> None:
    """Configs are immutable values."""
    cfg = BufferPoolConfig.for_network()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.min_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("min_size", "4096", TypeError),
        ("min_size", True, TypeError),
        ("min_size", 4096.0, TypeError),
        ("min_size", 0, ValueError),
        ("max_size", -1, ValueError),
        ("max_per_class", 0, ValueError),
        ("max_per_class", 2**32, ValueError),
        ("alignment", 0, ValueError),
        ("parallelism", 0, ValueError),
        ("pool_min_size", -1, ValueError),
        ("thread_cache_capacity", -1, ValueError),
        ("thread_cache_capacity", 1.5, TypeError),
        ("prefill", 1, TypeError),
    ],
)
def test_bad_field_types_and_ranges_are_rejected_at_construction(
    field: str, value: object, error: type[Exception]
) -> None:
    """Wrong types raise TypeError and out-of-range values ValueError, naming the field."""
    kwargs: dict[str, object] = {"min_size": 4096, "max_size": 8192, "max_per_class": 4}
    kwargs[field] = value
    with pytest.raises(error, match=field):
        BufferPoolConfig(**kwargs)  # type: ignore[arg-type]


def test_builder_rejects_zero_thread_cache_capacity() -> None:
    """with_thread_cache_capacity takes n >= 1; disabling has its own builder."""
    with pytest.raises(ValueError, match="thread_cache_capacity"):
        BufferPoolConfig.for_network().with_thread_cache_capacity(0)


def test_builders_may_pass_through_invalid_states() -> None:
    """Relations are only checked by validate(), so builder order does not matter."""
    cfg = BufferPoolConfig.for_network().with_alignment(4096)  # min_size 1024 < 4096 for now
    with pytest.raises(ValueError, match="must be >= alignment"):
        cfg.validate()
    cfg.with_min_size(4096).validate()
