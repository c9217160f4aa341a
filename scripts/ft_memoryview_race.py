"""CPython's free-threaded memoryview race (python/cpython#155606), without iobuf.

    scripts/pythons.sh run 3.13t python scripts/ft_memoryview_race.py

Threads slice one shared memoryview object (as iobuf's IoBuf clones used to
slice the buffer's one internal memoryview). Each slice registers on the shared
managed buffer with a non-atomic ``exports += 1``; lost updates let the count
reach zero while views are alive, and CPython then releases the buffer under
them: "operation forbidden on released memoryview object". The second case
slices fresh views of a ``ctypes`` array instead (what iobuf does on
free-threaded builds); it must never fail.

Prints one line per case; exits 1 if the workaround ever failed, 0 otherwise
(the race itself is expected on 3.13t and absent with a GIL). Racy by nature:
run it a few times.
"""

from __future__ import annotations

import ctypes
import sys
import sysconfig
import threading
from collections.abc import Callable

THREADS = 4
ROUNDS = 100_000


def run(slice_once: Callable[[], memoryview]) -> str | None:
    """First error any thread hit, or None."""
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def worker() -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                if bytes(slice_once()) != b"\x00" * 10:
                    raise AssertionError("wrong bytes")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors[0] if errors else None


def main() -> int:
    build = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    state = "on" if gil else "off"
    print(f"CPython {sys.version.split()[0]} ({build} build, GIL {state}), {THREADS} threads x {ROUNDS}")

    shared = memoryview(bytearray(64))
    err = run(lambda: shared[0:10])
    print(f"  slices of one shared memoryview:        {err or 'ok'}")

    array = (ctypes.c_ubyte * 64)()
    fixed = run(lambda: memoryview(array).cast("B")[0:10])
    print(f"  fresh views of one shared ctypes array: {fixed or 'ok'}")
    return 1 if fixed else 0


if __name__ == "__main__":
    sys.exit(main())
