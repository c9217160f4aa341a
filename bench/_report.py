"""Tables, target checks and the chart for ``python -m bench`` results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "check_targets", "render", "write_chart"]

Result = dict[str, Any]


def _label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20}M"
    if size >= 1 << 10:
        return f"{size >> 10}K"
    return f"{size}B"


def _index(results: Sequence[Result]) -> dict[tuple[Any, ...], float]:
    out: dict[tuple[Any, ...], float] = {}
    for r in results:
        if r.get("kind") == "alloc" and "median_ns" in r:
            out[(r["approach"], r["size"], r["touch"], r["threads"], r["pattern"])] = r["median_ns"]
    return out


def _alloc_table(results: Sequence[Result], touch: bool) -> str:
    idx = _index(results)
    sizes = sorted({k[1] for k in idx})
    names = list(dict.fromkeys(k[0] for k in idx if k[2] == touch and k[3] == 1))
    lines = [f"{'approach':<17}" + "".join(f"{_label(s):>19}" for s in sizes)]
    for name in names:
        row = f"{name:<17}"
        for s in sizes:
            ns = idx.get((name, s, touch, 1, "single"))
            pooled = idx.get(("pooled", s, touch, 1, "single"))
            if ns is None or pooled is None:
                row += f"{'-':>19}"
            else:
                row += f"{ns:>10,.0f} {ns / pooled:>6.2f}x"
        lines.append(row)
    return "\n".join(lines)


def _thread_table(results: Sequence[Result]) -> str:
    idx = _index(results)
    lines = [
        f"{'approach':<15}{'size':>6}{'touch':>7}{'1 thread':>11}"
        f"{'2 lockstep':>12}{'agg':>6}{'2 stagger':>11}{'agg':>6}"
    ]
    for (name, size, touch, threads, _pattern), one in sorted(
        idx.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])
    ):
        if threads != 1:
            continue
        lock = idx.get((name, size, touch, 2, "lockstep"))
        stag = idx.get((name, size, touch, 2, "staggered"))
        if lock is None:
            continue
        stag_txt = f"{stag:>11,.0f}{2 * one / stag:>6.2f}" if stag else ""
        lines.append(
            f"{name:<15}{_label(size):>6}{touch!s:>7}{one:>11,.0f}{lock:>12,.0f}{2 * one / lock:>6.2f}"
            + stag_txt
        )
    lines.append(
        "(ns per step; 2-thread figures are wall time per per-thread step; "
        "agg = 2-thread throughput / 1-thread; the staggered time includes its spin and the "
        "1-thread time does not, so its agg is a lower bound: --scaling measures it properly)"
    )
    return "\n".join(lines)


def _freelist_table(results: Sequence[Result]) -> str:
    rows = [r for r in results if r.get("kind") == "freelist" and "median_ns" in r]
    batches = sorted({r["batch"] for r in rows})
    lines = [f"{'freelist':<14}{'threads':>8}" + "".join(f"{'batch ' + str(b):>10}" for b in batches)]
    for impl in dict.fromkeys(r["impl"] for r in rows):
        for threads in (1, 2):
            cells = {
                r["batch"]: r["median_ns"] for r in rows if r["impl"] == impl and r["threads"] == threads
            }
            if cells:
                lines.append(
                    f"{impl:<14}{threads:>8}"
                    + "".join(f"{cells.get(b, float('nan')):>10,.0f}" for b in batches)
                )
    lines.append("(ns per step: put back `batch` entries, then take `batch` again)")
    return "\n".join(lines)


# (description, how to compute the measured value, comparison, threshold)
TARGETS = [
    "pooled <= 1.3x the bare freelist floor, every size (touch=False)",
    "faster than bytearray from 16 KiB up",
    ">= 40x faster than bytearray at 1 MiB",
    ">= 300x faster than bytearray at 8 MiB",
    ">= 30x faster than page-aligned mmap, every size",
    "faster than pyarrow's system pool, every size",
    "touch=True at 1 MiB: >= 2.5x faster than bytearray",
    "2 threads lockstep: aggregate throughput >= 0.85x of one thread",
]


def check_targets(results: Sequence[Result]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target; met is None when a peer is missing."""
    idx = _index(results)
    sizes = sorted({k[1] for k in idx})

    def ns(
        name: str, size: int, touch: bool = False, threads: int = 1, pattern: str = "single"
    ) -> float | None:
        return idx.get((name, size, touch, threads, pattern))

    def ratios(peer: str, size_filter: Sequence[int], touch: bool = False) -> list[tuple[int, float]]:
        out = []
        for s in size_filter:
            p, q = ns("pooled", s, touch), ns(peer, s, touch)
            if p and q:
                out.append((s, q / p))
        return out

    checks: list[tuple[str, str, bool | None]] = []
    floor = [(s, 1 / r) for s, r in ratios("freelist_floor", sizes)]
    worst = max(floor, key=lambda t: t[1], default=None)
    checks.append(
        (
            TARGETS[0],
            f"worst {worst[1]:.2f}x at {_label(worst[0])}" if worst else "n/a",
            worst[1] <= 1.3 if worst else None,
        )
    )
    big = [s for s in sizes if s >= 16 * 1024]
    vs_ba = ratios("bytearray", big)
    low = min(vs_ba, key=lambda t: t[1], default=None)
    checks.append(
        (TARGETS[1], f"min {low[1]:.2f}x at {_label(low[0])}" if low else "n/a", low[1] > 1 if low else None)
    )
    for target, size, need in ((TARGETS[2], 1 << 20, 40.0), (TARGETS[3], 8 << 20, 300.0)):
        r = dict(vs_ba).get(size)
        checks.append((target, f"{r:.1f}x" if r else "n/a", r >= need if r else None))
    mm = ratios("mmap", sizes)
    low = min(mm, key=lambda t: t[1], default=None)
    checks.append(
        (
            TARGETS[4],
            f"min {low[1]:.1f}x at {_label(low[0])}" if low else "n/a",
            low[1] >= 30 if low else None,
        )
    )
    pa = ratios("pyarrow_system", sizes)
    low = min(pa, key=lambda t: t[1], default=None)
    checks.append(
        (
            TARGETS[5],
            f"min {low[1]:.2f}x at {_label(low[0])}" if low else "not installed",
            low[1] > 1 if low else None,
        )
    )
    touch = dict(ratios("bytearray", [1 << 20], touch=True)).get(1 << 20)
    checks.append((TARGETS[6], f"{touch:.2f}x" if touch else "n/a", touch >= 2.5 if touch else None))
    aggs = []
    for s in sizes:
        one, two = ns("pooled", s), ns("pooled", s, threads=2, pattern="lockstep")
        if one and two:
            aggs.append((s, 2 * one / two))
    low = min(aggs, key=lambda t: t[1], default=None)
    checks.append(
        (
            TARGETS[7],
            f"min {low[1]:.2f}x at {_label(low[0])}" if low else "n/a",
            low[1] >= 0.85 if low else None,
        )
    )
    return checks


def render(results: Sequence[Result], meta: dict[str, Any]) -> str:
    """Every table plus the target checks, as text."""
    errors = [r for r in results if "error" in r]
    rounds = meta.get("rounds", 1)
    parts = [
        f"Python {meta['python']} ({'GIL' if meta['gil_enabled'] else 'free-threaded'}), "
        f"{meta['cpus']} CPUs, {rounds} round(s), {meta['seconds']} s",
        "\n== allocate + drop, touch=False, one thread (median ns; Nx = time / pooled's time)",
        _alloc_table(results, touch=False),
        "\n== allocate + write one byte per page (+ the last byte) + drop, touch=True, one thread",
        _alloc_table(results, touch=True),
        "\n== two threads",
        _thread_table(results),
        "\n== shared freelist microbenchmark (64 slots)",
        _freelist_table(results),
        "\n== targets",
    ]
    for target, measured, met in check_targets(results):
        mark = "n/a " if met is None else ("MET " if met else "MISS")
        parts.append(f"  [{mark}] {target}: {measured}")
    if errors:
        parts.append(
            f"\n{len(errors)} cells failed: "
            + "; ".join(f"{e.get('approach', e.get('impl'))}: {e['error']}" for e in errors[:5])
        )
    return "\n".join(parts)


def write_chart(results: Sequence[Result], path: Path) -> Path | None:
    """A PNG of ns per cycle by size (log scales), one line per approach; None without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 - optional
    except ImportError:
        return None
    idx = _index(results)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    colors = [plt.get_cmap("tab20")(i) for i in range(20)]
    for ax in axes:
        ax.set_prop_cycle(color=colors)
    for ax, touch in zip(axes, (False, True), strict=True):
        for name in dict.fromkeys(k[0] for k in idx):
            points = sorted((k[1], v) for k, v in idx.items() if k[0] == name and k[2] == touch and k[3] == 1)
            if points:
                style = "-o" if name in ("pooled", "freelist_floor", "bytearray") else "--."
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    label=name,
                    linewidth=2 if name == "pooled" else 1,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("buffer size (bytes)")
        ax.set_title(f"allocate + drop, touch={touch}, one thread")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ns per cycle (median)")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
