"""``python -m bench``: the full benchmark, each cell in a fresh process.

Usage::

    python -m bench            # full run: 3 interleaved rounds (about 10 minutes here)
    python -m bench --quick    # 1 round, fewer repeats and thread cells (under 2 minutes)
    python -m bench --inline   # the demo's in-process table only
    python -m bench --e2e      # end to end: 512 MiB over loopback TCP, a 256 MiB file
                               # (about 2 minutes; --e2e --quick: 64 MiB each, 1 round)
    python -m bench --ops      # cost of scrub_on_return and track_allocations per size,
                               # and RSS around a 256 MiB burst and trim() (about 30 s)
    python -m bench --kv       # request/response: a key-value server on StreamReader and on
                               # PooledReader, driven by redis-benchmark (installed from
                               # Debian's redis-tools if missing), asyncio and uvloop, 4 value
                               # sizes, pipelined and not; server CPU per request, RSS after
                               # (about 5 minutes; --kv --quick: 1 round of a tenth of the
                               # requests; --values 100 4096 --pipelines 1: only those cells)
    python -m bench --kv --instructions  # the same servers' instructions per request under
                               # callgrind (repeatable on a shared machine; about 20 minutes)
    python -m bench --core     # the core's targets (issue 13) against bytearray, numpy.empty
                               # and memoryview slicing, in one process (about 1 minute)
    python -m bench --scaling  # two threads vs one vs two processes, 64 KiB allocate+drop,
                               # pooled and bytearray, 16 interleaved rounds (about 80 s on 3.13t;
                               # --scaling --base DIR adds the pooled cells of the iobuf
                               # tree at DIR, run by that tree's own harness: a clone
                               # (either layout) or the src/ of a clone from before
                               # bench/ left the package)

Run from the root of a clone with iobuf installed (``./scripts/test`` makes
``.venv``, or ``pip install -e '.[dev]'``); the harness is not part of the package.

Writes ``bench-results/results.json`` and, when matplotlib is installed
(``pip install -e '.[bench]'``), ``bench-results/alloc.png``; prints the
tables and the target checks. Peers that are not installed (numpy, pyarrow)
are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from iobuf._demo_timing import format_table, measure_cycles

from . import ROOT, _e2e, _kv, _ops, _scaling, _targets
from ._cells import available_approaches, run_cell
from ._freelists import FREELISTS, run_freelist_cell
from ._report import render, write_chart

SIZES = [256, 1024, 4096, 65536, 1 << 20, 8 << 20]
THREADED = ["pooled", "freelist_floor", "bytearray", "direct"]


def _cells(
    quick: bool, approaches: list[str], freelists: list[str], sizes: list[int], target: float | None
) -> list[dict[str, Any]]:
    target = target or (15.0 if quick else 40.0)
    repeats = 3 if quick else 5
    cells: list[dict[str, Any]] = []
    for size in sizes:
        for approach in approaches:
            for touch in (False, True):
                base = {"kind": "alloc", "approach": approach, "size": size, "touch": touch}
                base |= {"target_ms": target, "repeats": repeats}
                cells.append({**base, "threads": 1, "pattern": "single"})
                # The seed's thread patterns for pooled, direct and the two baselines;
                # --quick keeps them for touch=False only.
                if approach in THREADED and not (quick and touch):
                    for pattern in ("lockstep", "staggered"):
                        cells.append({**base, "threads": 2, "pattern": pattern})
    batches = [1, 8, 32] if quick else [1, 2, 4, 8, 16, 32]
    for impl in freelists:
        for batch in batches:
            for threads in (1, 2):
                cells.append(
                    {"kind": "freelist", "impl": impl, "batch": batch, "threads": threads, "slots": 64}
                    | {"target_ms": target, "repeats": repeats}
                )
    return cells


def _run_in_subprocess(cell: dict[str, Any]) -> dict[str, Any]:
    # A fixed hash seed removes one source of process-to-process variation.
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module, our own JSON
        [sys.executable, "-m", "bench", "--cell", json.dumps(cell)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
        cwd=ROOT,  # where this harness is importable from (see bench.ROOT)
    )
    if proc.returncode != 0:
        return {**cell, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and thread cells")
    parser.add_argument("--inline", action="store_true", help="only the quick in-process table")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory")
    parser.add_argument("--only", nargs="+", help="restrict to these approaches / freelists")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="buffer sizes in bytes")
    parser.add_argument("--target-ms", type=float, help="time per repeat (default 40, --quick 15)")
    parser.add_argument("--rounds", type=int, help="passes over all cells (default 3, --quick 1)")
    parser.add_argument("--e2e", action="store_true", help="end-to-end socket and file throughput")
    parser.add_argument("--ops", action="store_true", help="scrub/tracking costs and trim's RSS effect")
    parser.add_argument("--scaling", action="store_true", help="two threads vs one vs two processes")
    parser.add_argument("--core", action="store_true", help="the core's speed targets, in one process")
    parser.add_argument("--kv", action="store_true", help="request/response server vs StreamReader")
    parser.add_argument(
        "--instructions", action="store_true", help="with --kv: server instructions per request (callgrind)"
    )
    parser.add_argument(
        "--values",
        type=int,
        nargs="+",
        metavar="BYTES",
        help="with --kv: only these value sizes (of 100 4096 65536 1048576)",
    )
    parser.add_argument(
        "--pipelines",
        type=int,
        nargs="+",
        metavar="P",
        help="with --kv: only these pipeline depths (of 16 1)",
    )
    parser.add_argument(
        "--base",
        type=Path,
        metavar="DIR",
        help="with --scaling: also time the iobuf tree at DIR with its own harness; DIR is a clone "
        "(bench/ beside src/iobuf/, or an older one with src/iobuf/bench/) or an older clone's src/",
    )
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--scaling-child", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the harness (see the module docstring)."""
    args = _parser().parse_args(argv)

    single = _single_mode(args)
    if single is not None:
        return single

    approaches = available_approaches()
    freelists = list(FREELISTS)
    if args.only:
        approaches = [a for a in approaches if a in args.only]
        freelists = [f for f in freelists if f in args.only]
    cells = _cells(args.quick, approaches, freelists, args.sizes, args.target_ms)
    rounds = args.rounds or (1 if args.quick else 3)
    print(
        f"iobuf benchmark: {len(cells)} cells x {rounds} rounds, each cell in a fresh process; "
        "gc disabled while timing; median of all repeats, spread = max/min"
    )
    print(f"approaches: {', '.join(approaches)}")
    started = time.monotonic()
    # Rounds interleave: every cell runs once before any runs twice, so a noisy
    # minute on a shared machine hits all approaches alike.
    results = [dict(cell, samples_ns=[], rounds=[]) for cell in cells]
    done = 0
    for _ in range(rounds):
        for result, cell in zip(results, cells, strict=True):
            one = _run_in_subprocess(cell)
            if "error" in one:
                result["error"] = one["error"]
            else:
                result["samples_ns"].extend(one["samples_ns"])
                result["rounds"].append(statistics.median(one["samples_ns"]))
            done += 1
            if done % 50 == 0:
                print(
                    f"  {done}/{len(cells) * rounds} cells, {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
    for r in results:
        if r["samples_ns"]:
            r["median_ns"] = statistics.median(r["samples_ns"])
            r["spread"] = max(r["samples_ns"]) / min(r["samples_ns"])
    meta = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(render(results, meta))
    chart = write_chart(results, args.out / "alloc.png")
    print(
        f"\nwrote {args.out / 'results.json'}" + (f" and {chart}" if chart else " (no matplotlib: no chart)")
    )
    return 0


def _single_mode(args: argparse.Namespace) -> int | None:
    """The modes that are not the full harness: one cell, --e2e, --ops, --inline."""
    if args.cell:
        spec = json.loads(args.cell)
        runner = run_freelist_cell if spec["kind"] == "freelist" else run_cell
        print(json.dumps(runner(spec)))
        return 0
    if args.scaling_child:
        print(json.dumps(_scaling.child(json.loads(args.scaling_child))))
        return 0
    if args.e2e:
        return _run_e2e(args.quick, args.rounds, args.out)
    if args.scaling:
        return _run_scaling(args)
    if args.ops:
        return _run_ops(args.quick, args.out)
    if args.core:
        return _run_core(args.quick, args.out)
    if args.kv:
        return (
            _run_kv_instructions(args.out)
            if args.instructions
            else _run_kv(args.quick, args.rounds, args.out, args.values, args.pipelines)
        )
    if args.inline:
        print("gc disabled while timing; one process; approaches interleaved per repeat")
        print(format_table(measure_cycles(sizes=(256, 4096, 65536, 1 << 20, 8 << 20))))
        return 0
    return None


def _run_core(quick: bool, out: Path) -> int:
    print("gc disabled while timing; one process; cases interleaved in shuffled order per round")
    result = _targets.measure_targets(n=20_000 if quick else 100_000, rounds=5 if quick else 15)
    for name, ns in result["median_ns"].items():
        print(f"  {name:46s} {ns:10.1f} ns")
    print("\n".join(_targets.check_targets(result)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.json").write_text(json.dumps(result, indent=1))
    return 0


def _run_kv(
    quick: bool, rounds: int | None, out: Path, values: list[int] | None, pipelines: list[int] | None
) -> int:
    rounds = rounds or (1 if quick else 3)
    sizes = [row for row in _kv.SIZES if values is None or row[0] in values]
    if quick:  # a tenth of the requests: whether it all works, not what it measures
        sizes = [(size, max(requests // 10, 200), keys) for size, requests, keys in sizes]
    depths = tuple(p for p in (16, 1) if pipelines is None or p in pipelines)
    if not sizes or not depths:
        raise SystemExit(f"--values of {[row[0] for row in _kv.SIZES]}, --pipelines of 16 1")
    print(f"iobuf request/response benchmark: {rounds} rounds", file=sys.stderr)
    result = _kv.run(rounds, sizes, log=lambda line: print(line, file=sys.stderr), pipelines=depths)
    result["meta"] = {"python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "kv.json").write_text(json.dumps(result, indent=1))
    result["copy_costs"] = _kv.copy_costs()
    print(_kv.render(result))
    print()
    print(_kv.render_cpu(result))
    print()
    print(_kv.render_copy_costs(result["copy_costs"]))
    print(f"\nwrote {out / 'kv.json'}")
    return 0


def _run_kv_instructions(out: Path) -> int:
    print(
        "iobuf request/response benchmark: server instructions per request under callgrind", file=sys.stderr
    )
    result = _kv.run_instructions(_kv.INSTRUCTION_SIZES, log=lambda line: print(line, file=sys.stderr))
    result["meta"] = {"python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "kv-instructions.json").write_text(json.dumps(result, indent=1))
    print(_kv.render_instructions(result))
    print(f"\nwrote {out / 'kv-instructions.json'}")
    return 0


def _run_e2e(quick: bool, rounds: int | None, out: Path) -> int:
    mib = _e2e.MiB
    params = {
        "loopback_total": (64 if quick else 512) * mib,
        "frame": 64 * 1024,
        "file_total": (64 if quick else 256) * mib,
        "block": mib,
        "rounds": rounds or (1 if quick else 3),
    }
    out.mkdir(parents=True, exist_ok=True)
    print(f"iobuf end-to-end benchmark: {params}", file=sys.stderr)
    result = _e2e.run(directory=Path.cwd(), log=lambda line: print(line, file=sys.stderr), **params)
    result["meta"] = {"python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "e2e.json").write_text(json.dumps(result, indent=1))
    print(_e2e.render(result))
    verdict = "met" if _e2e.target_met(result) else "MISSED"
    print(f"\ntarget: iobuf receiver >= 1.2x asyncio.StreamReader: {verdict}")
    print(f"wrote {out / 'e2e.json'}")
    return 0


def _run_ops(quick: bool, out: Path) -> int:
    sizes = (4096, 65536) if quick else _ops.SIZES
    rows = _ops.measure_costs(sizes=sizes, repeats=3 if quick else 7, target_ms=5.0 if quick else 20.0)
    trim = _ops.measure_trim(burst_bytes=(32 if quick else 256) << 20)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "ops.json").write_text(json.dumps({"meta": meta, "costs": rows, "trim": trim}, indent=1))
    print(_ops.render(rows, trim))
    print(f"\nwrote {out / 'ops.json'}")
    return 0


def _run_scaling(args: argparse.Namespace) -> int:
    # The base's own harness runs its cells (PYTHONPATH swaps the whole package),
    # so it must be a tree that has one.
    if args.base is not None and _scaling.base_harness(args.base) is None:
        raise SystemExit(
            f"--base {args.base}: expected an iobuf tree with the scaling harness: a clone "
            "(bench/_scaling.py beside src/iobuf/, or src/iobuf/bench/_scaling.py) or an older clone's src/"
        )
    rounds = args.rounds or (3 if args.quick else 16)
    target_ms = args.target_ms or (10.0 if args.quick else 40.0)
    print(f"iobuf scaling benchmark: {rounds} rounds", file=sys.stderr)
    result = _scaling.run(
        rounds, target_ms=target_ms, base=args.base, log=lambda line: print(line, file=sys.stderr)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    result["summary"] = _scaling.summarize(result)
    (args.out / "scaling.json").write_text(json.dumps(result, indent=1))
    print(_scaling.render(result))
    print(f"\nwrote {args.out / 'scaling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
