#!/usr/bin/env bash
# The compiled core under AddressSanitizer.
#
#   scripts/asan.sh              the buffer-lifetime tests and a stress run (below)
#   scripts/asan.sh CMD [ARGS]   CMD instead, e.g. python -m bench.stress --threads 8 --ops 100000
#
# Builds iobuf with IOBUF_ASAN=1 (setup.py: -fsanitize=address -fno-omit-frame-pointer
# -O1 -g) into its own venv, .venv-asan (a regular install: an editable one would
# put the instrumented module next to the source, where .venv's is), and runs
# with gcc's libasan preloaded, as the interpreter itself is not instrumented.
# Any report fails the run: ASan stops at the first error with exit status 86.
#
# Leaks: PYTHONMALLOC=malloc makes every Python object a malloc block that
# LeakSanitizer can see and scan, so what CPython still holds at exit is
# reachable and not reported (`python -c pass`, `import iobuf, hypothesis,
# pytest` and the stress run report nothing, a planted malloc() is reported;
# under pymalloc the pointers in its mmap'd arenas are invisible and the same
# runs "leak" hundreds of KB). It also lets ASan catch a use-after-free of a
# Python object, which pymalloc would hide. The stress run is checked for
# leaks; the tests are not: they import numpy, which leaks 3 KB (53 blocks)
# when imported, and telling those apart (an LSan suppression for
# _multiarray_umath) needs full stack unwinding, as libpython has no frame
# pointers: that took these tests from 15 s to 3.5 minutes.
# allocator_may_return_null=1 keeps a failed huge allocation a MemoryError, as
# without ASan.
#
# Environment: PYTHON (default python3) builds the venv; ASAN_VENV (default
# .venv-asan) is where it goes; ASAN_LEAKS=0 turns leak checks off for CMD.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV=${ASAN_VENV:-$ROOT/.venv-asan}
if [ ! -f src/iobuf/_core.py ]; then
  echo "== asan: no compiled core (src/iobuf/_core.py), nothing to check"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
pip_install() { env -u IOBUF_NO_EXTENSIONS "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2; }
stamp="$VENV/.iobuf-deps"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing iobuf's test extras into $VENV" >&2
  pip_install --upgrade pip
  pip_install ".[test]"
  echo "$want" > "$stamp"
fi
echo "== building iobuf with AddressSanitizer into $VENV" >&2
IOBUF_ASAN=1 pip_install --no-deps --force-reinstall .

libasan=$(gcc -print-file-name=libasan.so)
[ -f "$libasan" ] || { echo "gcc has no libasan.so ($libasan)" >&2; exit 1; }
asan_run() {
  local leaks=$1; shift
  env LD_PRELOAD="$libasan" PYTHONMALLOC=malloc \
    ASAN_OPTIONS=detect_leaks=$leaks:halt_on_error=1:exitcode=86:allocator_may_return_null=1 \
    PATH="$VENV/bin:$PATH" "$@"
}
# The installed, instrumented core is what runs (not a copy from src/).
asan_run 1 python - <<'EOF'
import importlib.machinery, sys, sysconfig
import iobuf, iobuf._core as core
site = sysconfig.get_paths()["purelib"]
assert iobuf.__file__.startswith(site), iobuf.__file__
assert core.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), core.__file__
with open(core.__file__, "rb") as so:
    assert b"__asan_report" in so.read(), f"{core.__file__} is not built with AddressSanitizer"
print("== asan: running", core.__file__)
EOF
if [ $# -gt 0 ]; then
  asan_run "${ASAN_LEAKS:-1}" "$@"
  exit
fi
# CI=true would make the state machine run 2,000 examples; its default is enough here.
asan_run 0 env -u CI python -m pytest -q -p no:cacheprovider tests/test_safety.py tests/test_state_machine.py tests/test_release.py tests/test_receive.py tests/test_views.py tests/test_pool.py
asan_run 1 python -m bench.stress --threads 4 --ops 20000
