"""Many threads x many random operations with canaries: no corruption, no lost buffers.

The engine is the repository's ``bench.stress`` (also a script: ``python -m bench.stress``
from the root of a clone), run against the installed iobuf. On a
free-threaded build this runs 4 threads x 50,000 operations each (the threads
really run in parallel); with a GIL a smaller run keeps the suite fast.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import bench
import iobuf._views
from bench.stress import canary, run_stress, stress_config
from iobuf import BufferPool

from .helpers import FREE_THREADED

THREADS = 4
OPS = 50_000 if FREE_THREADED else 20_000


@pytest.mark.usefixtures("contended")
@pytest.mark.parametrize("cache", [None, 0, 1, 4])
def test_threads_hammering_one_pool_never_corrupt_or_lose_buffers(cache: int | None) -> None:
    """THREADS x OPS random operations: every canary intact, and every buffer back at the end."""
    pool = BufferPool(stress_config(THREADS, cache))
    report = run_stress(pool, THREADS, OPS, seed=cache or 7)
    assert report.ok, report.errors[:5]
    assert (report.corruptions, report.lost_buffers, report.over_limit) == (0, 0, 0)
    assert report.ops == THREADS * OPS
    assert report.handoffs > 0
    print(report.summary())


@pytest.mark.pure_core
def test_the_stress_check_catches_a_pool_that_shares_live_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted bug (try_into_mut ignoring other holders) must show up as corruption."""
    monkeypatch.setattr(iobuf._views, "_lease_refs", lambda own: 0)
    monkeypatch.setattr(iobuf._views, "_view_refs", lambda own: 0)
    report = run_stress(BufferPool(stress_config(2)), 2, 5_000, seed=1)
    assert report.corruptions > 0
    assert not report.ok


def test_canaries_differ_between_owners_and_serials() -> None:
    """A canary has the requested length and changes with its owner and its serial number."""
    assert len(canary(1, 2, 100)) == 100
    assert canary(1, 2, 64) != canary(2, 2, 64) != canary(1, 3, 64)
    assert canary(3, 4, 0) == b""


def test_bad_arguments_are_value_errors() -> None:
    """No threads or a negative operation count is refused with ValueError, before any work."""
    pool = BufferPool(stress_config(1))
    with pytest.raises(ValueError, match="threads"):
        run_stress(pool, 0, 10)
    with pytest.raises(ValueError, match="ops"):
        run_stress(pool, 1, -1)


def test_the_script_reports_and_exits_zero() -> None:
    """``python -m bench.stress`` in a fresh interpreter, started from the directory that
    holds the harness: JSON and text reports of a clean run exit 0; a bad option exits 2."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.stress", "--threads", "3", "--ops", "3000", "--json", "--seed", "5"],
        cwd=bench.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["ops"] == 9000 and report["ops_per_second"] > 0
    text = subprocess.run(
        [sys.executable, "-m", "bench.stress", "--threads", "2", "--ops", "500"],
        cwd=bench.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "corruptions 0, lost buffers 0, over limit 0" in text.stdout
    argv = [sys.executable, "-m", "bench.stress", "--threads", "0"]
    bad = subprocess.run(argv, cwd=bench.ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--threads" in bad.stderr


def test_main_in_process_prints_the_summary_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    """main() prints the one-line summary, or with --json a report that says ok."""
    from bench.stress import main

    assert main(["--threads", "2", "--ops", "400", "--cache", "1"]) == 0
    assert "2 threads x 400 ops" in capsys.readouterr().out
    assert main(["--threads", "1", "--ops", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_a_worker_that_raises_is_reported_not_lost() -> None:
    """An exception in a worker thread makes the report fail and names the exception,
    once per worker, instead of vanishing with the thread."""
    pool = BufferPool(stress_config(2))
    pool.close()  # every allocation now raises PoolClosed
    report = run_stress(pool, 2, 100, seed=3)
    assert not report.ok
    assert len(report.errors) == 2 and all("PoolClosed" in e for e in report.errors)
