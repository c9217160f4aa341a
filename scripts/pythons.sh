#!/usr/bin/env bash
# CPython 3.13 and free-threaded 3.13t for iobuf, in a Debian 13 (trixie) chroot,
# and CPython 3.14 and 3.15 from Debian unstable (sid), in a second chroot.
#
#   scripts/pythons.sh setup [3.13|3.13t|3.14|3.15|all]   build what is missing (idempotent)
#   scripts/pythons.sh run 3.14 CMD [ARGS...]             run CMD from a copy of this tree
#
# `run` copies the tracked and untracked-but-not-ignored files of this work tree
# to /work/iobuf (see IOBUF_RUN_NAME) inside the interpreter's chroot, installs
# iobuf with its test extras into a venv kept per interpreter (/opt/venv-<version>),
# and runs CMD there with that venv first on PATH and /proc mounted (in a private
# mount namespace, so nothing stays mounted). The exit status is CMD's.
#
# When src/iobuf/_core.py exists, installing iobuf compiles it (gcc and the
# interpreter's headers are part of the setup), and `run` says which core the
# venv imports; under CI=true a core that did not build is an error, so a suite
# run cannot pass on the pure-Python fallback unnoticed.
#
# Which chroot holds what:
#   trixie (IOBUF_CHROOT, default /opt/iobuf-pythons): Debian's python3.13, and
#     3.13t compiled from Debian's source of python3.13 with --disable-gil.
#   sid (IOBUF_SID_CHROOT, default /opt/iobuf-pythons-sid): Debian's binary
#     python3.14 and python3.15 packages. Debian's sources of those are not
#     reachable from here, so there is no free-threaded 3.14t.
#
# Needs root and a Debian host whose apt sources reach a Debian mirror. The
# first setup takes a few minutes (3.13t is compiled; each chroot is a
# debootstrap); later runs reuse everything.
#
# Environment: IOBUF_CHROOT and IOBUF_SID_CHROOT (above); IOBUF_RUN_NAME (default
# iobuf) names the in-chroot copy (/work/$IOBUF_RUN_NAME) and suffixes the venv
# (/opt/venv-<version>-$IOBUF_RUN_NAME unless it is the default), so two work trees
# can run at once without overwriting each other's copy or installed package.
set -euo pipefail

TRIXIE_CHROOT=${IOBUF_CHROOT:-/opt/iobuf-pythons}
SID_CHROOT=${IOBUF_SID_CHROOT:-/opt/iobuf-pythons-sid}
CHROOT= SUITE=  # the chroot and Debian suite the current step works in (use_chroot)
FT_PREFIX=/opt/python3.13t
RUN_NAME=${IOBUF_RUN_NAME:-iobuf}
case $RUN_NAME in *[!A-Za-z0-9._-]*|'') echo "IOBUF_RUN_NAME must be [A-Za-z0-9._-]+" >&2; exit 2 ;; esac
WORKDIR=/work/$RUN_NAME
here=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '== [pythons] %s\n' "$*" >&2; }

in_chroot() {
  # A clean environment: nothing from the host's Python or pip settings leaks in.
  chroot "$CHROOT" env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

interpreter() {
  case $1 in
    3.13|3.14|3.15) echo "/usr/bin/python$1" ;;
    3.13t) echo "$FT_PREFIX/bin/python3.13t" ;;
    *) echo "unknown interpreter '$1' (3.13, 3.13t, 3.14 or 3.15)" >&2; return 2 ;;
  esac
}

use_chroot() {
  # Each interpreter's chroot and Debian suite.
  case $1 in
    3.13|3.13t) CHROOT=$TRIXIE_CHROOT SUITE=trixie ;;
    3.14|3.15) CHROOT=$SID_CHROOT SUITE=sid ;;
  esac
}

mirror() {
  # The first Debian archive URI in the host's apt configuration (deb822 or one-line).
  # (Missing files are normal: each source is optional, hence the `|| true`s.)
  { awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    awk '$1 == "deb" {print $2}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
  } | grep -v -- '-security' | grep -m1 '/debian/\?$' | sed 's:/*$::' || true
}

base_system() {
  if [ -f "$CHROOT/.iobuf-base-done" ]; then return; fi
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
  local url; url=$(mirror)
  [ -n "$url" ] || { echo "no Debian mirror found in /etc/apt" >&2; exit 1; }
  # debootstrap removes $CHROOT/debootstrap when it succeeds: a chroot without it
  # and with apt-get is whole, and a later step that failed resumes from here.
  if [ -d "$CHROOT/debootstrap" ] || [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
    log "debootstrap $SUITE from $url into $CHROOT"
    mkdir -p "$CHROOT"
    debootstrap --variant=minbase "$SUITE" "$CHROOT" "$url" >/dev/null
  fi
  printf 'deb %s %s main\ndeb-src %s %s main\n' "$url" "$SUITE" "$url" "$SUITE" > "$CHROOT/etc/apt/sources.list"
  # The mirror may serve a Release file past its Valid-Until (seen with sid here:
  # "Release file ... is expired"), which apt then refuses; these chroots only
  # run tests, so an old but signed index is fine.
  echo 'Acquire::Check-Valid-Until "false";' > "$CHROOT/etc/apt/apt.conf.d/99iobuf-valid-until"
  cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
  in_chroot apt-get update -qq
  in_chroot apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends ca-certificates >/dev/null
  # The host may reach package registries through its own certificate authorities.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$CHROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$CHROOT/usr/local/share/ca-certificates/"
    in_chroot update-ca-certificates >/dev/null 2>&1
  fi
  touch "$CHROOT/.iobuf-base-done"
}

free_threaded() {
  if in_chroot "$FT_PREFIX/bin/python3.13t" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null; then
    return
  fi
  log "building free-threaded CPython 3.13 from Debian's python3.13 source (a few minutes)"
  in_chroot apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends build-essential pkg-config xz-utils dpkg-dev \
    libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev uuid-dev libreadline-dev \
    libncurses-dev libgdbm-dev libexpat1-dev >/dev/null
  in_chroot sh -ec "
    rm -rf /usr/src/py313t && mkdir -p /usr/src/py313t && cd /usr/src/py313t
    apt-get source -qq --download-only python3.13 >/dev/null 2>&1
    tar xf python3.13_*.orig.tar.xz
    src=\$(find . -maxdepth 1 -type d -name 'Python-3.13*' | head -n1)
    mkdir build && cd build
    ../\$src/configure --prefix=$FT_PREFIX --disable-gil --with-ensurepip=install --disable-test-modules >../configure.log 2>&1
    make -j\$(nproc) >../make.log 2>&1
    make install >../install.log 2>&1
    cd / && rm -rf /usr/src/py313t"
  in_chroot "$FT_PREFIX/bin/python3.13t" -c 'import sys; assert not sys._is_gil_enabled(); print(sys.version)' >&2
}

installed() {
  # Whether every package named is installed in the chroot.
  [ "$(in_chroot dpkg-query -W -f='${db:Status-Status}\n' "$@" 2>/dev/null | grep -cx installed)" -eq $# ]
}

debian_python() {
  # Debian's python3.X with venv, its headers and gcc (to compile iobuf's optional
  # core). In sid, redis-tools too: tests/test_bench.py installs it when missing,
  # but sid moves daily and the chroot's package lists go stale, so it is
  # installed here, right after an apt-get update.
  local packages=(gcc libc6-dev "python$1" "python$1-venv" "python$1-dev")
  [ "$SUITE" = sid ] && packages+=(redis-tools)
  if installed "${packages[@]}"; then return; fi
  log "installing ${packages[*]} from $SUITE"
  in_chroot apt-get update -qq
  in_chroot apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${packages[@]}" >/dev/null
}

setup() {
  local version
  case ${1:-all} in
    all) for version in 3.13t 3.14 3.15; do setup "$version"; done; return ;;
    3.13|3.13t|3.14|3.15) ;;
    *) echo "usage: $0 setup [3.13|3.13t|3.14|3.15|all]" >&2; exit 2 ;;
  esac
  use_chroot "$1"
  base_system
  debian_python "${1%t}"
  [ "$1" != 3.13t ] || free_threaded
}

compiled_core() {
  # Says which core the venv's iobuf imports when src/iobuf/_core.py exists; under
  # CI=true a core that did not build fails the run (pip only warns), so a leg
  # cannot pass on the pure-Python fallback unnoticed.
  if [ ! -f "$here/src/iobuf/_core.py" ] || [ -n "${IOBUF_NO_EXTENSIONS:-}" ]; then return; fi
  local so
  if so=$(in_chroot "$1" -c 'import importlib.machinery as m, iobuf._core as c, sys
print(c.__file__); sys.exit(not c.__file__.endswith(tuple(m.EXTENSION_SUFFIXES)))' 2>/dev/null); then
    log "compiled core: $so"
  elif [ -n "${CI:-}" ]; then
    echo "src/iobuf/_core.py exists but iobuf._core did not build for $1" >&2
    exit 1
  else
    log "no compiled core: iobuf._core did not build for $1; the pure-Python core serves"
  fi
}

run() {
  local version=$1; shift
  local py; py=$(interpreter "$version")
  setup "$version"
  local venv=/opt/venv-$version
  [ "$RUN_NAME" = iobuf ] || venv=$venv-$RUN_NAME
  [ -x "$CHROOT$venv/bin/python" ] || in_chroot "$py" -m venv "$venv"
  rm -rf "${CHROOT:?}$WORKDIR" && mkdir -p "$CHROOT$WORKDIR"
  (cd "$here" && git ls-files -z --cached --others --exclude-standard | tar -cf - --null -T -) | tar -xf - -C "$CHROOT$WORKDIR"
  # 3.14 and 3.15 also get uvloop (PyPI has wheels for both), so the asyncio
  # tests run on it there too; 3.13 and 3.13t keep the test extras only.
  local extras=test
  case $version in 3.14|3.15) extras=test,uvloop ;; esac
  local stamp="$CHROOT$venv/.iobuf-deps"
  local want; want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1) $extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing iobuf[$extras] into $venv"
    in_chroot "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    in_chroot "$venv/bin/python" -m pip install -q --disable-pip-version-check "$WORKDIR[$extras]" >&2
    echo "$want" > "$stamp"
  fi
  # The tree changes between runs; reinstall the package itself only (no deps), and
  # only when what the install is made of changed since the last one into this venv
  # (compiling the core takes most of a minute, the suite's second run and the
  # stress run skip it). IOBUF_NO_EXTENSIONS reaches the build (no compiled core)
  # and CMD (pure-Python core).
  local built="$CHROOT$venv/.iobuf-installed"
  local tree; tree=$(cd "$CHROOT$WORKDIR" && { find src setup.py pyproject.toml -type f -print0 | sort -z |
    xargs -0 sha256sum; echo "IOBUF_NO_EXTENSIONS=${IOBUF_NO_EXTENSIONS:-}"; } | sha256sum | cut -d' ' -f1)
  if [ ! -f "$built" ] || [ "$(cat "$built")" != "$tree" ]; then
    in_chroot ${IOBUF_NO_EXTENSIONS:+IOBUF_NO_EXTENSIONS=$IOBUF_NO_EXTENSIONS} \
      "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WORKDIR" >&2
    echo "$tree" > "$built"
  fi
  compiled_core "$venv/bin/python"
  # In a private mount namespace with /proc mounted, as on a real machine (the
  # tests read /proc); the mount goes away with the command.
  unshare --mount --propagation private sh -ec 'mount -t proc proc "$0/proc"; exec chroot "$0" "$@"' "$CHROOT" \
    env -i HOME=/root LANG=C.UTF-8 PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin" \
    ${CI:+CI=$CI} ${IOBUF_NO_EXTENSIONS:+IOBUF_NO_EXTENSIONS=$IOBUF_NO_EXTENSIONS} PYTHONDONTWRITEBYTECODE=1 WORKDIR="$WORKDIR" sh -c 'cd "$WORKDIR" && exec "$@"' sh "$@"
}

case ${1:-} in
  setup) shift; setup "$@" ;;
  run) shift; [ $# -ge 2 ] || { echo "usage: $0 run 3.13|3.13t|3.14|3.15 CMD..." >&2; exit 2; }; run "$@" ;;
  *) echo "usage: $0 setup [3.13|3.13t|3.14|3.15|all] | run 3.13|3.13t|3.14|3.15 CMD..." >&2; exit 2 ;;
esac
