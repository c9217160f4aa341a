#!/usr/bin/env bash
# The package as users get it: build a wheel from this tree, install it with its
# test extras into a fresh venv, and run tests from a directory that holds only
# copies of tests/ and bench/ (the repository's harness, which tests/test_bench.py
# and tests/test_stress.py drive), so nothing can be imported from src/ by accident.
#
#   scripts/wheel_check.sh [PYTEST ARGS]   default: the whole suite, -q
#
# Checks first that iobuf comes from the venv's site-packages, ships py.typed
# and both license files, holds the library's modules only (no subpackage: the
# benchmark harness and the stress driver are not part of it), and, when
# src/iobuf/_core.py exists, that iobuf._core imports as a compiled extension
# (the wheel carries no _core.py for it, only the declarations in _core.pxd)
# and serves (IMPLEMENTATION == "compiled"). Then the whole suite (about 75 s here), with
# the README and docs/ beside tests/ for the tests that run their examples.
# PYTHON (default python3) is the interpreter.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== wheel_check: building a wheel" >&2
env -u IOBUF_NO_EXTENSIONS "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps -w "$tmp/dist" "$ROOT" >&2
wheel=$(echo "$tmp"/dist/iobuf-*.whl)
echo "== wheel_check: installing $(basename "$wheel") into a fresh venv" >&2
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel[test,uvloop]" >&2

mkdir "$tmp/run"
cp -r "$ROOT/tests" "$tmp/run/tests"
cp -r "$ROOT/bench" "$tmp/run/bench"
cp -r "$ROOT/README.md" "$ROOT/docs" "$tmp/run/"
cd "$tmp/run"
COMPILED=$([ -f "$ROOT/src/iobuf/_core.py" ] && echo 1 || true) "$tmp/venv/bin/python" - <<'EOF'
import importlib.machinery, importlib.metadata, importlib.resources, importlib.util, os, sysconfig
import iobuf
site = sysconfig.get_paths()["purelib"]
assert iobuf.__file__.startswith(site + os.sep), f"iobuf imported from {iobuf.__file__}, not {site}"
assert importlib.resources.files("iobuf").joinpath("py.typed").is_file(), "py.typed not shipped"
shipped = [str(f) for f in importlib.metadata.files("iobuf") or [] if "__pycache__" not in str(f)]
for name in ("LICENSE-MIT", "LICENSE-APACHE"):
    assert any(f.endswith(f".dist-info/licenses/{name}") for f in shipped), f"{name} not shipped"
outside = [f for f in shipped if f.split("/")[0] != "iobuf" and ".dist-info/" not in f]
assert not outside, f"the wheel installs more than iobuf: {outside}"
nested = [f for f in shipped if f.startswith("iobuf/") and f.count("/") > 1]
assert not nested, f"the wheel ships subpackages of iobuf: {nested}"
assert "iobuf/stress.py" not in shipped, "the wheel ships the stress driver"
if os.environ.get("COMPILED"):
    import iobuf._core as core
    assert core.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), core.__file__
    assert not importlib.resources.files("iobuf").joinpath("_core.py").is_file(), "wheel ships _core.py"
    assert iobuf.IMPLEMENTATION == "compiled", iobuf.IMPLEMENTATION
    print(f"== wheel_check: iobuf {iobuf.__file__}, compiled core {os.path.basename(core.__file__)}")
else:
    assert importlib.util.find_spec("iobuf._core") is None, "a compiled core without its source"
    print(f"== wheel_check: iobuf {iobuf.__file__}, no compiled core (none in this tree)")
EOF
if [ $# -eq 0 ]; then
  set -- -q tests
fi
# The tree's pytest settings (warnings are errors, strict markers), with this
# directory as rootdir: tests/ is a package, so pytest puts this directory (and
# not the tree) on sys.path for `tests.helpers`.
"$tmp/venv/bin/python" -m pytest -c "$ROOT/pyproject.toml" --rootdir "$tmp/run" -p no:cacheprovider "$@"
