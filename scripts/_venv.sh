# Sourced by the project's scripts: make .venv (once) and keep it in step with
# pyproject.toml (dependencies) and with the compiled core's sources (setup.py,
# src/iobuf/_core.py and .pxd: the editable install holds a compiled copy, so a
# change there means rebuilding it; only iobuf itself is reinstalled then).
# The venv always gets the compiled core when it builds: IOBUF_NO_EXTENSIONS
# chooses the core when iobuf is imported, and does not reach this install.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.iobuf-installed"
want_deps=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
# A missing file hashes as nothing, so adding or removing the core counts as a change.
want_core=$(cd "$ROOT" && { cat setup.py src/iobuf/_core.py src/iobuf/_core.pxd 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)
have_deps=$(sed -n 1p "$stamp" 2>/dev/null || true)
have_core=$(sed -n 2p "$stamp" 2>/dev/null || true)
pip_install() { env -u IOBUF_NO_EXTENSIONS "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2; }
if [ "$have_deps" != "$want_deps" ] || [ "$have_core" != "$want_core" ]; then
  # A compiled core built from sources that are gone or failed to build must not be imported.
  rm -f "$ROOT/src/iobuf/_core$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
  if [ "$have_deps" != "$want_deps" ]; then
    echo "== installing iobuf and its dev extras into $VENV" >&2
    pip_install --upgrade pip
    pip_install -e "$ROOT[dev]"
  else
    echo "== rebuilding iobuf's compiled core in $VENV" >&2
    pip_install --no-deps -e "$ROOT"
  fi
  printf '%s\n%s\n' "$want_deps" "$want_core" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
