"""Interpreter exit stays silent with buffers alive in globals, cycles and exited threads' caches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCENARIOS = {
    "globals": """
        pool = BufferPool(BufferPoolConfig.for_network())
        held = [pool.alloc(n) for n in (100, 5000, 70000)]
        frozen = held[0].freeze()
        view = held[1].as_memoryview()
        arr = np.frombuffer(held[2].spare_capacity(), dtype=np.uint8)
        heap = IoBufMut(b"heap")
    """,
    "cycles": """
        class Node:
            pass
        pool = BufferPool(BufferPoolConfig.for_storage().with_max_per_class(4))
        for _ in range(3):
            n = Node(); n.me = n; n.buf = pool.alloc(8192); n.view = n.buf.as_memoryview()
            n.frozen = pool.alloc(100).freeze(); n.slice = n.frozen[0:0]
        del n
    """,
    "threads": """
        pool = BufferPool(BufferPoolConfig.for_network())
        def worker():
            bufs = [pool.alloc(2048) for _ in range(8)]
            del bufs
        ts = [threading.Thread(target=worker) for _ in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        keep = pool.alloc(2048)
    """,
    "pool_dropped_first": """
        pool = BufferPool(BufferPoolConfig.for_network(), registry=CollectorRegistry())
        out = pool.alloc(1024).freeze()
        out_view = out.as_memoryview()
        del pool
    """,
    "daemon_thread_holding_buffers": """
        pool = BufferPool(BufferPoolConfig.for_network())
        ready = threading.Event()
        def hold():
            mine = [pool.alloc(4096) for _ in range(4)]
            ready.set()
            threading.Event().wait()
        threading.Thread(target=hold, daemon=True).start()
        ready.wait()
    """,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_interpreter_exit_is_silent(name: str) -> None:
    """Running the scenario and exiting prints nothing to stderr and exits 0."""
    code = "import threading\nimport numpy as np\nfrom prometheus_client import CollectorRegistry\n"
    code += "from iobuf import *\n" + textwrap.dedent(SCENARIOS[name]) + "\nprint('done')\n"
    # This interpreter, so the child imports the same installed iobuf and core.
    env = dict(os.environ, PYTHONWARNINGS="error")
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert proc.stderr == ""
