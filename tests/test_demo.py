"""``python -m iobuf``, the README's first command, runs its demo cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import iobuf

# Where the iobuf under test lives (the source tree, or site-packages when
# installed), so the demo's interpreter imports that same package and core.
SRC = Path(iobuf.__file__).resolve().parent.parent


def test_demo_runs_cleanly_and_shows_round_trips_and_metrics() -> None:
    """Proves the demo works end to end in a fresh interpreter: it exits 0 with
    nothing on stderr, every framed message came back byte for byte through
    pooled buffers (the demo asserts it and prints the confirmation), and the
    pool's metrics were published under the ``demo`` namespace."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "iobuf"], env=env, capture_output=True, text=True, timeout=60, check=False
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
