"""Both cores, driven by the same operation sequences, agree on every outcome.

The test process runs each sequence on its own core; a worker process runs it
on the other (``IOBUF_NO_EXTENSIONS=1`` when this process has the compiled
core, and the reverse). Without a compiled core on this interpreter the
comparison has no second implementation and the test skips, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iobuf

from . import differential
from .strategies import differential_operations

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def other_core() -> Iterator[subprocess.Popen[str]]:
    """A worker process running the other core."""
    env = dict(os.environ)
    if iobuf.IMPLEMENTATION == "compiled":
        env["IOBUF_NO_EXTENSIONS"] = "1"
    else:
        env.pop("IOBUF_NO_EXTENSIONS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.differential"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    theirs = json.loads(proc.stdout.readline())
    try:
        if theirs == iobuf.IMPLEMENTATION:
            pytest.skip(f"only the {theirs} core is available on this interpreter")
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
        proc.stdout.close()


def ask(proc: subprocess.Popen[str], ops: list[list[Any]]) -> Any:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(ops) + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


@settings(
    max_examples=300 if os.environ.get("CI") else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(differential_operations(), max_size=40))
def test_both_cores_agree_on_every_outcome(other_core: subprocess.Popen[str], ops: list[list[Any]]) -> None:
    """Bytes, lengths, capacities, exceptions (type and message) and stats are the same on both cores."""
    mine = json.loads(json.dumps(differential.run(ops)))
    assert mine == ask(other_core, ops)


def test_the_worker_reports_the_same_outcomes_as_the_test_process() -> None:
    """The harness itself: the same core in a worker gives the same outcomes (so a
    difference found above is the cores', not the harness's)."""
    ops: list[list[Any]] = [
        ["alloc", 100],
        ["put_slice", 0, "00ff"],
        ["freeze", 0],
        ["try_alloc", 999],
        ["stats"],
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.differential"],
        cwd=ROOT,
        input=json.dumps(ops) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    name, outcome = proc.stdout.splitlines()
    assert json.loads(name) == iobuf.IMPLEMENTATION
    assert json.loads(outcome) == json.loads(json.dumps(differential.run(ops)))
    assert json.loads(outcome)[3] == ["raised", "Oversized", "requested capacity exceeds maximum buffer size"]
