#!/usr/bin/env bash
# CPython 3.13 and free-threaded 3.13t for iobuf, in a Debian 13 (trixie) chroot.
#
#   scripts/pythons.sh setup [3.13|3.13t|all]   build what is missing (idempotent)
#   scripts/pythons.sh run 3.13t CMD [ARGS...]   run CMD from a copy of this tree
#
# `run` copies the tracked and untracked-but-not-ignored files of this work tree
# to /work/iobuf (see IOBUF_RUN_NAME) inside the chroot, installs iobuf with its dev extras into a
# venv kept per interpreter (/opt/venv-<version>) with its test extras, and runs
# CMD there with that
# venv first on PATH and /proc mounted (in a private mount namespace, so nothing
# stays mounted). The exit status is CMD's.
#
# When src/iobuf/_core.py exists, installing iobuf compiles it (gcc and the
# interpreter's headers are part of the setup).
#
# Needs root and a Debian host whose apt sources reach a Debian mirror. The
# first setup takes a few minutes (3.13t is compiled from Debian's source of
# python3.13 with --disable-gil); later runs reuse everything.
#
# Environment: IOBUF_CHROOT (default /opt/iobuf-pythons); IOBUF_RUN_NAME (default
# iobuf) names the in-chroot copy (/work/$IOBUF_RUN_NAME) and suffixes the venv
# (/opt/venv-<version>-$IOBUF_RUN_NAME unless it is the default), so two work trees
# can run at once without overwriting each other's copy or installed package.
set -euo pipefail

CHROOT=${IOBUF_CHROOT:-/opt/iobuf-pythons}
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
    3.13) echo /usr/bin/python3.13 ;;
    3.13t) echo "$FT_PREFIX/bin/python3.13t" ;;
    *) echo "unknown interpreter '$1' (3.13 or 3.13t)" >&2; return 2 ;;
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
  log "debootstrap trixie from $url into $CHROOT"
  mkdir -p "$CHROOT"
  debootstrap --variant=minbase trixie "$CHROOT" "$url" >/dev/null
  printf 'deb %s trixie main\ndeb-src %s trixie main\n' "$url" "$url" > "$CHROOT/etc/apt/sources.list"
  cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
  in_chroot apt-get update -qq
  in_chroot apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends ca-certificates python3.13 python3.13-venv >/dev/null
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

build_tools() {
  # gcc and CPython 3.13's headers, to compile iobuf's optional core (3.13t has its
  # headers in its own prefix).
  if [ -f "$CHROOT/.iobuf-build-tools-done" ]; then return; fi
  log "installing gcc and python3.13-dev (to build iobuf's compiled core)"
  in_chroot apt-get update -qq
  in_chroot apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends gcc libc6-dev python3.13-dev >/dev/null
  touch "$CHROOT/.iobuf-build-tools-done"
}

setup() {
  base_system
  build_tools
  case ${1:-all} in
    3.13) ;;
    3.13t|all) free_threaded ;;
    *) echo "usage: $0 setup [3.13|3.13t|all]" >&2; exit 2 ;;
  esac
}

run() {
  local version=$1; shift
  local py; py=$(interpreter "$version")
  [ "$version" = 3.13t ] && setup 3.13t || setup 3.13
  local venv=/opt/venv-$version
  [ "$RUN_NAME" = iobuf ] || venv=$venv-$RUN_NAME
  [ -x "$CHROOT$venv/bin/python" ] || in_chroot "$py" -m venv "$venv"
  rm -rf "${CHROOT:?}$WORKDIR" && mkdir -p "$CHROOT$WORKDIR"
  (cd "$here" && git ls-files -z --cached --others --exclude-standard | tar -cf - --null -T -) | tar -xf - -C "$CHROOT$WORKDIR"
  local stamp="$CHROOT$venv/.iobuf-deps"
  local want; want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing iobuf[test] into $venv"
    in_chroot "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    in_chroot "$venv/bin/python" -m pip install -q --disable-pip-version-check "$WORKDIR[test]" >&2
    echo "$want" > "$stamp"
  fi
  # The tree changes between runs; reinstall the package itself only (fast, no deps).
  # IOBUF_NO_EXTENSIONS reaches the build (no compiled core) and CMD (pure-Python core).
  in_chroot ${IOBUF_NO_EXTENSIONS:+IOBUF_NO_EXTENSIONS=$IOBUF_NO_EXTENSIONS} \
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WORKDIR" >&2
  # In a private mount namespace with /proc mounted, as on a real machine (the
  # tests read /proc); the mount goes away with the command.
  unshare --mount --propagation private sh -ec 'mount -t proc proc "$0/proc"; exec chroot "$0" "$@"' "$CHROOT" \
    env -i HOME=/root LANG=C.UTF-8 PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin" \
    ${CI:+CI=$CI} ${IOBUF_NO_EXTENSIONS:+IOBUF_NO_EXTENSIONS=$IOBUF_NO_EXTENSIONS} PYTHONDONTWRITEBYTECODE=1 WORKDIR="$WORKDIR" sh -c 'cd "$WORKDIR" && exec "$@"' sh "$@"
}

case ${1:-} in
  setup) shift; setup "$@" ;;
  run) shift; [ $# -ge 2 ] || { echo "usage: $0 run 3.13|3.13t CMD..." >&2; exit 2; }; run "$@" ;;
  *) echo "usage: $0 setup [3.13|3.13t|all] | run 3.13|3.13t CMD..." >&2; exit 2 ;;
esac
