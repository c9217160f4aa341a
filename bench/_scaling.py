"""``python -m bench --scaling``: two-thread scaling, with two processes as the ceiling.

The question is how much of a second core two threads of allocate+drop get. On
a shared or virtualised machine the answer moves with the neighbours, so each
round runs, in shuffled order and each in fresh processes, for every approach
(``pooled``, ``bytearray``; with ``base``, also ``pooled`` from another tree, whose own
harness runs its cells; :func:`base_harness` says which trees qualify):

* ``single``: one thread; ``single_staggered``: one thread with the
  staggered pattern's spin after each step (the baseline for ``staggered``,
  whose time per iteration includes that spin);
* ``lockstep`` and ``staggered``: two threads of one process (the seed's
  patterns, as in :mod:`._cells`);
* ``processes``: two processes of one thread each, released together before
  every repeat. They share no Python object, so their scaling is what the
  machine gives this code at that moment: the ceiling for the threads.

Every cell runs the same fixed iteration count per thread (calibrated once per
approach at the start) and ``repeats`` repeats; a cell's value is the median
repeat in ns per iteration (for processes, per repeat the slower of the two).

Reported per approach and two-way mode: ``agg`` = 2 x median(its one-thread
baseline) / median(two-way); ``paired`` = median over rounds of the same ratio within the
round; ``best`` = the fastest round of each. ``threads/processes`` is, per
round, the lockstep throughput over the processes' throughput: 1.0 means the
threads lose nothing to sharing one interpreter and one pool.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import ROOT
from ._cells import APPROACHES, _run_single, _run_threads, step_makers

__all__ = ["MODES", "base_harness", "child", "render", "run", "summarize", "target_verdict"]

MODES = ("single", "single_staggered", "lockstep", "staggered", "processes")
TWO_WAY = ("lockstep", "staggered", "processes")
_BASELINE = {"lockstep": "single", "staggered": "single_staggered", "processes": "single"}
TARGET = 1.7  # issue 4: two lockstep threads at >= 1.7x one thread


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one scaling cell's repeats in this process (the ``--scaling-child`` entry).

    With ``gated``, print ``ready`` and wait for a line on stdin before every
    repeat, so a parent can release several processes at once.
    """
    size, threads = int(spec["size"]), int(spec.get("threads", 1))
    alloc, view = APPROACHES[spec["approach"]](size, threads)
    makers = step_makers(alloc, view, size, False, threads)
    n, gated = int(spec["iterations"]), bool(spec.get("gated"))
    staggered = spec.get("pattern") == "staggered"
    # One thread with the spin runs in a worker thread as tid 0, the spin of
    # the slower of the two staggered threads.
    single = makers[0]() if threads == 1 and not staggered else None

    def once(count: int) -> float:
        if single is not None:
            return _run_single(single, count)
        return _run_threads(makers, count, staggered)

    once(max(1, n // 10))  # warm: caches filled, code specialised where it is
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(int(spec["repeats"])):
            if gated:
                print("ready", flush=True)
                if not sys.stdin.readline():
                    raise SystemExit("scaling child: parent went away")
            samples.append(once(n))
    finally:
        gc.enable()
    return {"pid": os.getpid(), "threads": threads, "samples_ns": samples}


def base_harness(base: Path) -> tuple[str, Path, Path] | None:
    """How to run the scaling harness of the iobuf tree at ``base``: ``(module, cwd,
    pythonpath)``, or None when ``base`` holds none.

    The base's own harness runs its cells, against its own ``iobuf`` (found
    first through ``PYTHONPATH``; pure Python unless its compiled core was
    built in place, as an editable install does). Three kinds of tree qualify:

    * a clone of this layout: ``base/bench/_scaling.py`` and ``base/src/iobuf``
      (run as ``python -m bench`` from ``base``, so that its ``bench`` comes first);
    * a clone from before the harness left the package:
      ``base/src/iobuf/bench/_scaling.py`` (run as ``python -m iobuf.bench``);
    * the ``src`` directory of such a clone: ``base/iobuf/bench/_scaling.py``.
    """
    base = base.resolve()
    if (base / "bench" / "_scaling.py").is_file() and (base / "src" / "iobuf").is_dir():
        return "bench", base, base / "src"
    for package_dir in (base / "src", base):
        if (package_dir / "iobuf" / "bench" / "_scaling.py").is_file():
            return "iobuf.bench", ROOT, package_dir
    return None


def _command(variant: str, base: Path | None) -> tuple[list[str], dict[str, str], Path]:
    """``(argv up to the harness's options, env, cwd)`` of a child running ``variant``'s harness."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if variant != "base":
        return [sys.executable, "-m", "bench"], env, ROOT
    assert base is not None
    harness = base_harness(base)
    if harness is None:
        raise ValueError(f"{base} holds no iobuf scaling harness (see base_harness)")
    module, cwd, pythonpath = harness
    env["PYTHONPATH"] = str(pythonpath)
    return [sys.executable, "-m", module], env, cwd


def _spawn(spec: dict[str, Any], base: Path | None) -> subprocess.Popen[str]:
    cmd, env, cwd = _command(spec["variant"], base)
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module, our own JSON
        [*cmd, "--scaling-child", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"scaling child exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _one_cell(spec: dict[str, Any], base: Path | None) -> tuple[float, list[int]]:
    """(median ns per iteration, child pids) of one cell, each run in fresh processes."""
    if spec["mode"] != "processes":
        proc = _spawn(spec | {"threads": 1 if spec["mode"].startswith("single") else 2}, base)
        result = _finish(proc)
        return statistics.median(result["samples_ns"]), [result["pid"]]
    procs = [_spawn(spec | {"threads": 1, "gated": True}, base) for _ in range(2)]
    try:
        for _ in range(int(spec["repeats"])):
            for p in procs:
                assert p.stdout is not None
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("scaling child did not get ready")
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
        results = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    per_repeat = [max(pair) for pair in zip(*(r["samples_ns"] for r in results), strict=True)]
    return statistics.median(per_repeat), [r["pid"] for r in results]


def _calibrate(approach: str, variant: str, size: int, target_ms: float, base: Path | None) -> int:
    """Iterations for about ``target_ms`` per repeat of one thread (in a fresh process)."""
    cmd, env, cwd = _command(variant, base)
    spec = {"kind": "alloc", "approach": approach, "size": size, "touch": False}
    spec |= {"threads": 1, "pattern": "single", "target_ms": target_ms, "repeats": 1}
    out = subprocess.run(  # noqa: S603 - our own interpreter and module, our own JSON
        [*cmd, "--cell", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=cwd,
    )
    return int(json.loads(out.stdout)["iterations"])


def run(
    rounds: int,
    *,
    size: int = 65536,
    target_ms: float = 40.0,
    repeats: int = 5,
    base: Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Measure every (approach, mode) cell ``rounds`` times, interleaved; return raw values and meta."""
    variants = [("pooled", "main"), ("bytearray", "main")]
    if base is not None:
        variants.insert(1, ("pooled", "base"))
    iterations = {f"{a}@{v}": _calibrate(a, v, size, target_ms, base) for a, v in variants}
    cells = [(a, v, m) for a, v in variants for m in MODES]
    values: dict[str, list[float]] = {}
    pids: dict[str, list[list[int]]] = {}
    started = time.monotonic()
    for r in range(rounds):
        random.shuffle(cells)
        for a, v, m in cells:
            key = f"{a}@{v}/{m}"
            spec = {"approach": a, "variant": v, "mode": m, "size": size, "repeats": repeats}
            pattern = "staggered" if m.endswith("staggered") else "lockstep"
            spec |= {"iterations": iterations[f"{a}@{v}"], "pattern": pattern}
            value, used = _one_cell(spec, base)
            values.setdefault(key, []).append(value)
            pids.setdefault(key, []).append(used)
        if log is not None:
            log(f"  round {r + 1}/{rounds}, {time.monotonic() - started:.0f} s")
    meta = {
        "python": sys.version.split()[0],
        "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "size": size,
        "rounds": rounds,
        "repeats": repeats,
        "target_ms": target_ms,
        "iterations": iterations,
        "seconds": round(time.monotonic() - started, 1),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return {"meta": meta, "values_ns": values, "pids": pids}


def summarize(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per variant: single-thread median and agg/paired/best scaling for each two-way mode."""
    values = result["values_ns"]
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(k.split("/")[0] for k in values):
        row: dict[str, Any] = {"single_ns": statistics.median(values[f"{variant}/single"])}
        for mode in TWO_WAY:
            one, two = values[f"{variant}/{_BASELINE[mode]}"], values[f"{variant}/{mode}"]
            row[mode] = {
                "agg": 2 * statistics.median(one) / statistics.median(two),
                "paired": statistics.median(2 * s / t for s, t in zip(one, two, strict=True)),
                "best": 2 * min(one) / min(two),
            }
        lock, procs = values[f"{variant}/lockstep"], values[f"{variant}/processes"]
        row["threads_over_processes"] = statistics.median(p / t for t, p in zip(lock, procs, strict=True))
        out[variant] = row
    return out


def target_verdict(summary: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """Issue 4's target on the medians: pooled lockstep agg >= 1.7x and >= bytearray's."""
    pooled = summary["pooled@main"]["lockstep"]["agg"]
    peer = summary["bytearray@main"]["lockstep"]["agg"]
    ceiling = summary["pooled@main"]["processes"]["agg"]
    met = pooled >= TARGET and pooled >= peer
    text = (
        f"target (pooled lockstep agg >= {TARGET}x and >= bytearray's): pooled {pooled:.2f}x, "
        f"bytearray {peer:.2f}x -> {'met' if met else 'MISSED'}; "
        f"two processes of the same pooled code reached {ceiling:.2f}x in this run"
    )
    return met, text


def render(result: dict[str, Any]) -> str:
    """A fixed-width table of :func:`summarize`, with the meta line and the verdict."""
    meta = result["meta"]
    summary = summarize(result)
    kind = "GIL" if meta["gil_enabled"] else "free-threaded"
    lines = [
        f"two-way scaling of allocate+drop, {meta['size']} B: Python {meta['python']} ({kind}), "
        f"{meta['cpus']} CPUs, {meta['rounds']} rounds x {meta['repeats']} repeats, {meta['seconds']} s",
        "agg = 2 x median(one thread; for staggered, one thread that spins too) / median(two-way); "
        "paired = median per-round ratio; best = fastest rounds",
        "",
        f"{'variant':16s} {'1 thread':>9s}  "
        + "  ".join(f"{m + ' agg/paired/best':>27s}" for m in TWO_WAY)
        + "  threads/processes",
    ]
    for variant, row in summary.items():
        cells = "  ".join(
            f"{row[m]['agg']:9.2f}x {row[m]['paired']:6.2f}x {row[m]['best']:6.2f}x" for m in TWO_WAY
        )
        ratio = row["threads_over_processes"]
        lines.append(f"{variant:16s} {row['single_ns']:7,.0f}ns  {cells}  {ratio:17.2f}")
    lines += ["", target_verdict(summary)[1]]
    return "\n".join(lines)
