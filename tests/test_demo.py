"""``python -m iobuf``, the README's first command, runs its demo cleanly, on the package alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

import iobuf


def test_demo_runs_cleanly_and_shows_round_trips_and_metrics() -> None:
    """Proves the demo works end to end in a fresh interpreter: it exits 0 with
    nothing on stderr, every framed message came back byte for byte through
    pooled buffers (the demo asserts it and prints the confirmation), and the
    pool's metrics were published under the ``demo`` namespace. The interpreter is
    this one, so it imports the same installed iobuf (editable, or the wheel)."""
    result = subprocess.run(
        [sys.executable, "-m", "iobuf"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.count("round-trip ok, zero-copy") == 5
    assert "MISMATCH" not in out
    assert "(pooled memory reused)" in out
    assert "Oversized:" in out
    assert "Exhausted:" in out
    assert "the next alloc(64) gets that very buffer back: True" in out
    assert 'demo_buffer_pool_created{size_class="1024"}' in out
    assert "demo_buffer_pool_oversized_total 2.0" in out
    assert "every byte checked" in out
    assert "file round trip ok" in out
    assert "O_DIRECT" in out or "buffered (" in out
    assert "Allocate + drop" in out and "bytearray" in out
    assert f"iobuf core: {iobuf.IMPLEMENTATION}" in out


def test_demo_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main() also runs inside this interpreter (so coverage measures the demo's lines)."""
    from iobuf.__main__ import main

    assert main() == 0
    assert "round-trip ok, zero-copy" in capsys.readouterr().out


def test_demo_does_not_import_the_benchmark_harness() -> None:
    """The demo is self-contained: importing it in a fresh interpreter imports no ``bench``
    module (the harness lives in the repository, not in the installed package)."""
    code = "import sys, iobuf.__main__; print(sorted(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules = result.stdout
    assert "'iobuf._demo_timing'" in modules
    assert "'bench'" not in modules and "'iobuf.bench'" not in modules


def test_the_freelist_floor_hands_out_its_buffers_and_takes_them_back() -> None:
    """The demo's pure-Python floor (also a peer in the harness): a handle views its own
    preallocated bytearray, and dropping the handle pushes that bytearray back for reuse."""
    from iobuf._demo_timing import freelist_floor

    alloc, view = freelist_floor(64, threads=1)
    first = alloc()
    data = view(first)
    assert isinstance(data, bytearray) and len(data) == 64
    second = alloc()
    assert view(second) is not data
    del first
    assert view(alloc()) is data  # the buffer the dropped handle held, popped again
