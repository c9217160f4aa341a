"""The benchmark harness (the repository's ``bench/``, run as ``python -m bench``): every
cell kind runs, its child processes find the harness, and the target checks can fail as
well as pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bench
import iobuf
from bench._cells import APPROACHES, available_approaches, run_cell
from bench._freelists import FREELISTS, run_freelist_cell
from bench._report import check_targets, render, write_chart

QUICK = {"target_ms": 0.5, "repeats": 2}


@pytest.mark.parametrize("touch", [False, True])
def test_every_available_approach_runs_a_cell(touch: bool) -> None:
    """Each installed peer allocates, optionally touches, and reports positive samples."""
    for name in available_approaches():
        result = run_cell({"approach": name, "size": 8192, "touch": touch, **QUICK})
        assert len(result["samples_ns"]) == 2 and min(result["samples_ns"]) > 0, name
    assert set(available_approaches()) <= set(APPROACHES)


@pytest.mark.parametrize("pattern", ["lockstep", "staggered"])
def test_two_thread_cells_run(pattern: str) -> None:
    """The seed's thread patterns run with the pool and with the floor."""
    for name in ("pooled", "freelist_floor", "reuse_one"):
        result = run_cell(
            {"approach": name, "size": 256, "touch": True, "threads": 2, "pattern": pattern, **QUICK}
        )
        assert min(result["samples_ns"]) > 0


@pytest.mark.parametrize("impl", sorted(FREELISTS))
@pytest.mark.parametrize("threads", [1, 2])
def test_freelist_cells_keep_occupancy_constant(impl: str, threads: int) -> None:
    """Each freelist runs batch 1 and batch 4 with one and two threads."""
    for batch in (1, 4):
        result = run_freelist_cell({"impl": impl, "batch": batch, "threads": threads, "slots": 16, **QUICK})
        assert min(result["samples_ns"]) > 0


def _synthetic(
    pooled: float, floor: float, bytearray_1m: float, two_threads: float = 2.0
) -> list[dict[str, object]]:
    rows = []
    for size in (4096, 1 << 20, 8 << 20):
        for name, ns in (
            ("pooled", pooled),
            ("freelist_floor", floor),
            ("bytearray", bytearray_1m * size / (1 << 20)),
            ("mmap", 9000.0),
            ("pyarrow_system", 300.0),
        ):
            for touch in (False, True):
                rows.append(
                    {"kind": "alloc", "approach": name, "size": size, "touch": touch, "threads": 1}
                    | {"pattern": "single", "median_ns": ns}
                )
        rows.append(
            {"kind": "alloc", "approach": "pooled", "size": size, "touch": False, "threads": 2}
            | {"pattern": "lockstep", "median_ns": two_threads * pooled}
        )
    return rows


def test_target_checks_report_met_and_missed() -> None:
    """Synthetic numbers on either side of each threshold flip the verdicts."""
    good = dict(
        (t, met) for t, _, met in check_targets(_synthetic(pooled=200, floor=180, bytearray_1m=12_000))
    )
    assert all(good.values()), good
    slow = _synthetic(pooled=900, floor=180, bytearray_1m=500, two_threads=4.0)
    bad = {t: met for t, _, met in check_targets(slow)}
    assert not any(bad.values()), bad


def test_render_and_chart(tmp_path: Path) -> None:
    """The text report names every section; the chart is a PNG when matplotlib is installed."""
    rows = _synthetic(pooled=400, floor=180, bytearray_1m=12_000)
    text = render(rows, {"python": "3.x", "gil_enabled": True, "cpus": 2, "seconds": 1.0, "rounds": 1})
    for heading in ("touch=False", "touch=True", "two threads", "freelist", "targets"):
        assert heading in text
    chart = write_chart(rows, tmp_path / "c.png")
    if chart is not None:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_harness_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny real run spawns cell processes, writes results.json and prints the targets."""
    from bench.__main__ import main

    out = tmp_path / "out"
    argv = ["--quick", "--only", "pooled", "freelist_floor", "simple_queue", "--sizes", "4096"]
    assert main([*argv, "--target-ms", "1", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["rounds"] == 1
    assert all("error" not in r for r in data["results"])
    assert {r.get("approach", r.get("impl")) for r in data["results"]} == {
        "pooled",
        "freelist_floor",
        "simple_queue",
    }
    assert "== targets" in capsys.readouterr().out


def test_inline_mode_prints_the_quick_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--inline is the demo's in-process table."""
    import bench.__main__ as cli
    from iobuf import _demo_timing

    def one_small_size(*args: object, **kw: object) -> list[_demo_timing.CycleResult]:
        return _demo_timing.measure_cycles(sizes=(4096,), repeats=2, target_ms=1.0)  # a real, shorter run

    monkeypatch.setattr(cli, "measure_cycles", one_small_size)
    assert cli.main(["--inline"]) == 0
    assert "pooled" in capsys.readouterr().out


def test_end_to_end_suite_runs_small(tmp_path: Path) -> None:
    """A small end-to-end run: every receiver and reader moves every byte and reports a rate."""
    from bench import _e2e

    result = _e2e.run(
        loopback_total=4 << 20,
        frame=65536,
        file_total=4 << 20,
        block=1 << 20,
        rounds=1,
        directory=tmp_path,
        log=lambda line: None,
    )
    assert set(result["loopback"]) == set(_e2e.loopback_receivers())
    assert set(result["file"]) >= {"blockfile-buffered", "f.read", "readinto-bytearray"}
    assert all(v > 0 for v in [*result["loopback"].values(), *result["file"].values()])
    table = _e2e.render(result)
    assert "| iobuf |" in table and "| f.read |" in table
    assert isinstance(_e2e.target_met(result), bool)
    assert list(tmp_path.iterdir()) == []  # the test file was removed


def test_end_to_end_target_check_can_fail() -> None:
    """The end-to-end verdict is met at exactly 1.2x StreamReader and missed just below."""
    from bench import _e2e

    assert _e2e.target_met({"loopback": {"iobuf": 120.0, "streamreader": 100.0}})
    assert not _e2e.target_met({"loopback": {"iobuf": 119.0, "streamreader": 100.0}})


def test_end_to_end_command_writes_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench --e2e --quick``: 64 MiB each way, one round, a table and a verdict."""
    from bench.__main__ import main

    assert main(["--e2e", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| streamreader |" in out and "| blockfile-buffered |" in out
    assert "target: iobuf receiver >= 1.2x asyncio.StreamReader:" in out
    saved = json.loads((tmp_path / "e2e.json").read_text())
    assert saved["params"]["loopback_total"] == 64 << 20


def test_ops_command_reports_costs_and_trim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench --ops --quick``: a real (short) run of the operations costs."""
    from bench.__main__ import main

    assert main(["--ops", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 4,096 |" in out and "| 65,536 |" in out
    assert "after trim()" in out
    saved = json.loads((tmp_path / "ops.json").read_text())
    for row in saved["costs"]:
        assert set(row["median_ns"]) == {"default", "default-b", "scrub", "track", "bytearray"}
        assert all(v > 0 for v in row["median_ns"].values())
    trim = saved["trim"]
    assert trim["trim_returned"] == 32 << 20  # every buffer of the burst was free and released
    assert trim["after_trim"] < trim["held"]


def test_scaling_runs_threads_and_real_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--scaling: every (variant, mode) cell runs; the process ceiling really uses two processes."""
    from bench.__main__ import main

    out = tmp_path / "out"
    assert main(["--scaling", "--rounds", "1", "--target-ms", "2", "--out", str(out)]) == 0
    data = json.loads((out / "scaling.json").read_text())
    modes = ("single", "single_staggered", "lockstep", "staggered", "processes")
    assert set(data["values_ns"]) == {f"{v}@main/{m}" for v in ("pooled", "bytearray") for m in modes}
    assert all(len(v) == 1 and v[0] > 0 for v in data["values_ns"].values())
    for key, rounds in data["pids"].items():
        (pids,) = rounds
        assert len(set(pids)) == (2 if key.endswith("/processes") else 1), key
    assert set(data["summary"]) == {"pooled@main", "bytearray@main"}
    text = capsys.readouterr().out
    assert "threads/processes" in text and "target (pooled lockstep agg" in text


def test_scaling_base_must_hold_a_package(tmp_path: Path) -> None:
    """A --base directory without an iobuf scaling harness is refused before anything runs."""
    from bench.__main__ import main

    with pytest.raises(SystemExit, match="expected an iobuf tree with the scaling harness"):
        main(["--scaling", "--base", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def _imported_by_base_child(base: Path) -> dict[str, str]:
    """Where the --base variant's child process imports ``bench`` and ``iobuf`` from."""
    import subprocess
    import sys

    from bench._scaling import _command

    cmd, env, cwd = _command("base", base)
    assert cmd[0] == sys.executable
    code = "import json, bench, iobuf; print(json.dumps({'bench': bench.__file__, 'iobuf': iobuf.__file__}))"
    done = subprocess.run(
        [cmd[0], "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    found: dict[str, str] = json.loads(done.stdout)
    return found


def test_scaling_base_runs_a_clone_of_this_layout_with_its_own_harness_and_package(tmp_path: Path) -> None:
    """--base accepts a clone with bench/ beside src/iobuf/: its child runs ``-m bench`` and
    imports that clone's harness and that clone's iobuf, not this tree's (nor the installed one)."""
    import shutil

    from bench._scaling import base_harness

    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(bench.__file__).parent, clone / "bench", ignore=ignore)
    shutil.copytree(Path(iobuf.__file__).parent, clone / "src" / "iobuf", ignore=ignore)
    assert base_harness(clone) == ("bench", clone.resolve(), clone.resolve() / "src")
    found = _imported_by_base_child(clone)
    assert found["bench"] == str(clone.resolve() / "bench" / "__init__.py")
    assert found["iobuf"] == str(clone.resolve() / "src" / "iobuf" / "__init__.py")


@pytest.mark.parametrize("given", ["clone", "src"])
def test_scaling_base_runs_an_older_clone_whose_harness_is_inside_the_package(
    tmp_path: Path, given: str
) -> None:
    """--base accepts a clone from before bench/ left the package (src/iobuf/bench/), or its
    src/ directory as --base used to require: the child runs ``-m iobuf.bench`` with that
    tree's iobuf first on its path."""
    from bench._scaling import base_harness

    package = tmp_path / "old" / "src" / "iobuf"
    (package / "bench").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "bench" / "__init__.py").write_text("")
    (package / "bench" / "_scaling.py").write_text("")
    base = tmp_path / "old" if given == "clone" else tmp_path / "old" / "src"
    assert base_harness(base) == ("iobuf.bench", bench.ROOT, package.parent.resolve())
    assert _imported_by_base_child(base)["iobuf"] == str(package.resolve() / "__init__.py")


def _scaling_result(pooled: tuple[float, float], peer: tuple[float, float]) -> dict[str, object]:
    """Synthetic per-round medians: (1 thread, lockstep) ns for pooled and bytearray."""
    values: dict[str, list[float]] = {}
    for variant, (one, two) in (("pooled@main", pooled), ("bytearray@main", peer)):
        values |= {f"{variant}/single": [one, one], f"{variant}/lockstep": [two, two]}
        values |= {f"{variant}/single_staggered": [one, one]}
        values |= {f"{variant}/staggered": [two, two], f"{variant}/processes": [one, one]}
    return {"values_ns": values}


def test_scaling_verdict_flips_on_either_condition() -> None:
    """Met only with pooled >= 1.7x and >= bytearray; either shortfall alone misses."""
    from bench._scaling import summarize, target_verdict

    assert target_verdict(summarize(_scaling_result((1000, 1100), (700, 800))))[0]  # 1.82x vs 1.75x
    assert not target_verdict(summarize(_scaling_result((1000, 1250), (700, 1000))))[0]  # 1.6x
    assert not target_verdict(summarize(_scaling_result((1000, 1150), (700, 700))))[0]  # 1.74x < 2x
    row = summarize(_scaling_result((1000, 1250), (700, 1000)))["pooled@main"]
    assert row["lockstep"]["agg"] == pytest.approx(1.6)
    assert row["threads_over_processes"] == pytest.approx(0.8)


def test_scaling_child_exits_when_its_parent_goes_away() -> None:
    """A gated child whose stdin closes before the go line exits with an error instead of hanging."""
    import subprocess
    import sys

    spec = {"approach": "bytearray", "size": 4096, "iterations": 10, "repeats": 2, "gated": True}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scaling-child", json.dumps(spec)],
        cwd=bench.ROOT,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "parent went away" in proc.stderr
    assert proc.stdout.strip() == "ready"


@pytest.mark.parametrize(
    ("threads", "pattern"), [(1, "lockstep"), (1, "staggered"), (2, "lockstep"), (2, "staggered")]
)
def test_scaling_child_runs_every_shape_in_process(threads: int, pattern: str) -> None:
    """The child behind each cell: one or two threads, plain or spinning, positive samples."""
    from bench._scaling import child

    spec = {"approach": "pooled", "size": 4096, "iterations": 50, "repeats": 3}
    result = child(spec | {"threads": threads, "pattern": pattern})
    assert result["threads"] == threads and len(result["samples_ns"]) == 3
    assert min(result["samples_ns"]) > 0


def test_scaling_child_waits_for_a_line_before_each_repeat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gated: one ``ready`` per repeat, each answered by one line on stdin."""
    import io

    from bench._scaling import child

    monkeypatch.setattr("sys.stdin", io.StringIO("go\ngo\n"))
    spec = {"approach": "bytearray", "size": 4096, "iterations": 20, "repeats": 2, "gated": True}
    assert len(child(spec)["samples_ns"]) == 2
    assert capsys.readouterr().out.split() == ["ready", "ready"]


def test_threaded_cell_reports_a_failing_worker_without_hanging() -> None:
    """A thread whose step cannot be built breaks the start barrier; its error reaches the caller."""
    from bench._cells import _run_threads

    def broken() -> Callable[[int], None]:
        raise LookupError("no step here")

    def fine() -> Callable[[int], None]:
        return lambda i: None

    with pytest.raises(LookupError, match="no step here"):
        _run_threads([fine, broken], 100, staggered=False)


def test_core_targets_measure_every_case_and_judge_each_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--core`` times every case on the core in use, reports each target's ratio
    and verdict, and a ratio past its limit reads as missed (in either direction)."""
    from bench import __main__ as bench_main
    from bench._targets import TARGETS, check_targets, measure_targets
    from iobuf import IMPLEMENTATION

    result = measure_targets(n=300, rounds=1)
    assert result["implementation"] == IMPLEMENTATION
    assert all(ns > 0 for ns in result["median_ns"].values())
    assert set(result["ratios"]) == {name for name, _, _ in TARGETS}
    lines = check_targets(result)
    assert len(lines) == 1 + len(TARGETS)
    judged = dict(result, ratios={name: (0.0 if at_least else 1e9) for name, _, at_least in TARGETS})
    assert all(line.endswith("MISSED") for line in check_targets(judged)[1:])
    judged = dict(result, ratios={name: (1e9 if at_least else 0.0) for name, _, at_least in TARGETS})
    assert all(line.endswith("met") for line in check_targets(judged)[1:])
    assert bench_main.main(["--core", "--quick", "--out", str(tmp_path)]) == 0
    assert "worst class alloc+drop / bytearray(4096)" in capsys.readouterr().out
    assert json.loads((tmp_path / "core.json").read_text())["implementation"] == IMPLEMENTATION


@pytest.mark.parametrize("kind", ["streamreader", "iobuf"])
def test_kv_server_answers_set_get_and_config(run: Callable[[Any], Any], kind: str) -> None:
    """The benchmark's key-value server, on either reader, speaks the RESP that
    redis-benchmark uses: a pipelined SET, GET of that key and of a missing one,
    CONFIG GET, and an unknown command, over a real socket, answered in order."""
    from bench import _kv

    async def main() -> bool:
        store: dict[bytes, Any] = {}

        async def on_connect(reader: Any, writer: Any) -> None:
            await _kv.handle(reader, writer, store, _kv._as_int_for(kind))

        if kind == "iobuf":
            pool = iobuf.BufferPool(iobuf.BufferPoolConfig.for_network())
            server = await iobuf.start_server(on_connect, "127.0.0.1", 0, pool=pool)
        else:
            server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        value = bytes(range(256)) * 100
        writer.write(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$25600\r\n" + value + b"\r\n")
        writer.write(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nget\r\n$1\r\nz\r\n")
        writer.write(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n*1\r\n$4\r\nNOPE\r\n")
        writer.write_eof()
        replies = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        expected = b"+OK\r\n$25600\r\n" + value + b"\r\n$-1\r\n" + _kv._CONFIG[b"save"]
        return replies == expected + b"-ERR unknown command\r\n"

    assert run(main())


def test_kv_benchmark_drives_both_servers_with_redis_benchmark(tmp_path: Path) -> None:
    """One tiny round of ``--kv`` cells with the real client (installed from Debian's
    packages when missing): every server answers, rates are positive, RSS is read."""
    from bench import _kv

    result = _kv.run(1, [(100, 2000, 100)], log=lambda _line: None)
    assert len(result["cells"]) == 2 * len(_kv.servers())
    for cell in result["cells"].values():
        assert cell["set"] > 0 and cell["get"] > 0 and cell["rss_kib"] > 0
        assert cell["set_cpu_us"] >= 0 and cell["get_cpu_us"] >= 0  # (clock ticks: a short run may show 0)
    assert sum(c["set_cpu_us"] + c["get_cpu_us"] for c in result["cells"].values()) > 0
    assert "| asyncio | 100 B | 16 |" in _kv.render(result)
    assert "| asyncio | 100 B | 16 |" in _kv.render_cpu(result)


def test_kv_cells_can_be_chosen_and_rounds_give_a_median_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--kv --values --pipelines`` runs only the chosen cells; with 6 rounds the table
    gives each ratio's median with its 95% interval (order statistics: the extremes
    at 6 samples, the 2nd and 9th of 10, the 6th and 15th of 20)."""
    from bench import _kv
    from bench.__main__ import main

    assert _kv.median_interval([1.0] * 5) is None
    assert _kv.median_interval([float(i) for i in range(6)]) == (0.0, 5.0)
    assert _kv.median_interval([float(i) for i in range(10)]) == (1.0, 8.0)
    assert _kv.median_interval([float(i) for i in range(20)]) == (5.0, 14.0)
    assert main(["--kv", "--quick", "--values", "100", "--pipelines", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "kv.json").read_text())
    assert {key.split("|", 1)[1] for key in result["cells"]} == {"100|1"}
    with pytest.raises(SystemExit):
        main(["--kv", "--values", "7", "--out", str(tmp_path)])
    capsys.readouterr()
    assert _kv._spread([0.9, 1.0, 1.0, 1.1, 1.1, 1.2]) == "1.05 (0.90-1.20) [0.90-1.20]"


def test_kv_copy_costs_measure_each_size_and_render() -> None:
    """The copy-vs-view measurement runs for each size, on whichever core serves, and
    renders one row per size (what the numbers are is the benchmark's business)."""
    from bench import _kv

    rows = _kv.copy_costs(sizes=(100, 65536), number=50)
    assert [r["size"] for r in rows] == [100, 65536]
    assert all(r["bytes"] > 0 for r in rows)
    table = _kv.render_copy_costs(rows)
    assert "| 100 B |" in table and "| 64 KiB |" in table


def test_kv_instructions_count_a_server_under_callgrind() -> None:
    """``--kv --instructions`` runs a server under callgrind (valgrind installed from
    Debian's packages when missing) while redis-benchmark drives it: a run with more
    requests counts more instructions, and the per-request figures are what is
    left after the shorter run is taken off; the table pairs each server with its
    StreamReader peer."""
    from bench import _kv

    client, valgrind = _kv.ensure_client(), _kv.ensure_valgrind()

    def count(tests: str, n: int) -> int:
        return _kv.server_instructions(
            "iobuf", 100, n, tests=tests, pipeline=16, client=client, valgrind=valgrind
        )

    short, long, both = count("set", 64), count("set", 192), count("set,get", 192)
    assert 0 < short < long < both
    cell = _kv.per_request(short, long, both, 64, 192)
    assert cell == {"set": (long - short) / 128, "get": (both - long) / 192}
    result = {
        "instructions": {"streamreader|100|16": {"set": 2.0, "get": 3.0}, "iobuf|100|16": cell},
        "clients": 16,
    }
    row = _kv.render_instructions(result).splitlines()[-1]
    assert row.startswith("| asyncio | 100 B | 16 | 2 | ")
    assert row.endswith(f" | {3.0 / cell['get']:.2f} |")
