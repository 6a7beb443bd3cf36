#!/usr/bin/env bash
# Creates the Python venv holding the reference peer (peng3dnet 0.1.3a0) used
# by the interoperability tests, and prints the venv's python path last.
#
#   PENG3DNET_PYENV   venv directory (default build/pyenv, relative to the
#                     repository root unless absolute)
#   PENG3DNET_PYTHON  interpreter to build the venv with (default python3)
#
# Idempotent: when the stamp file matches the pins below it only checks the
# Debian libraries and prints the path.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PENG3DNET_PYENV:-build/pyenv}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
BASE_PY="${PENG3DNET_PYTHON:-python3}"

# Versions verified together on Python 3.11 / Debian 12.
# peng3dnet declares no install requirements: msgpack, bidict and peng3d (for
# peng3d.config.Config) are needed at import time; peng3d pulls in pyglet
# (>=1.5.3); pyglet 1.5.x is the series peng3d 1.11 was written for.
# msgpack must be >= 1.0: older ones decode strings to bytes on Python 3 and
# the handshake then fails with KeyError.
PINS=(
  "peng3dnet==0.1.3a0"
  "peng3d==1.11.0"
  "pyglet==1.5.31"
  "msgpack==1.2.4"
  "bidict==0.24.1"
  "typing_extensions==4.16.0"
)

# Importing peng3d imports pyglet.gl, window and font, which dlopen these even
# with no display (no Xvfb needed: shadow_window is turned off before import).
#   libGL.so.1 -> libgl1, libGLU.so.1 -> libglu1-mesa,
#   libX11.so.6 -> libx11-6, libfreetype.so.6 -> libfreetype6
DEB_PKGS=(libgl1 libglu1-mesa libx11-6 libfreetype6)

log() { echo "setup.sh: $*" >&2; }

ensure_debs() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "dpkg-query not found; not a Debian system, assuming ${DEB_PKGS[*]} are present"
    return 0
  fi
  local missing=() p
  for p in "${DEB_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else
      log "need root to apt-get install ${missing[*]}"; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

ensure_debs

PY="$VENV/bin/python"
STAMP="$VENV/.peng3dnet-setup.stamp"
WANT="$(printf '%s\n' "${PINS[@]}" "debs: ${DEB_PKGS[*]}")"

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "$PY"
  exit 0
fi

if [ ! -x "$PY" ] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  command -v "$BASE_PY" >/dev/null 2>&1 || { log "$BASE_PY not found"; exit 1; }
  "$BASE_PY" -c 'import sys; assert sys.version_info >= (3, 8), sys.version' \
    || { log "$BASE_PY is older than 3.8"; exit 1; }
  log "creating venv $VENV with $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv "$VENV"
fi

rm -f "$STAMP"
export PIP_DISABLE_PIP_VERSION_CHECK=1
log "installing ${PINS[*]}"
"$PY" -m pip install -q "${PINS[@]}" >&2

# Check that the reference library imports headless.
"$PY" - >&2 <<'EOF'
import pyglet
pyglet.options["shadow_window"] = False
import peng3d, peng3dnet, peng3dnet.ext.ping, msgpack, bidict
assert peng3dnet.version.VERSION == "0.1.3a0", peng3dnet.version.VERSION
assert peng3dnet.version.PROTOVERSION == 2
assert msgpack.version >= (1, 0, 0), msgpack.version
EOF

printf '%s' "$WANT" > "$STAMP"
echo "$PY"
