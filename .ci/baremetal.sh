#!/usr/bin/env bash
# Build workspace packages for bare-metal (no_std) targets.
#
# Usage: bash .ci/baremetal.sh [-p PACKAGE]... [--target TRIPLE]... [--features F] [--manifest-path PATH]
#   defaults: -p peng3dnet-core --target thumbv6m-none-eabi --target thumbv7em-none-eabihf
#
# Per target:
#   * if the rustup toolchain has the target installed (`rustup target add T`), a plain
#     `cargo build --release --target T` is used;
#   * otherwise the "Debian route" (see /work/shared/EMBEDDED.md): Debian's rustc-web /
#     cargo-web / rust-web-src (1.96, ships the library source) build `core` from source
#     with `-Zbuild-std=core` (installed with apt-get if missing; needs root or sudo).
#
# Environment:
#   BAREMETAL_MANIFEST    workspace Cargo.toml to use (same as --manifest-path; default:
#                         the workspace containing this script)
#   BAREMETAL_TARGET_DIR  target dir of the Debian route (default <workspace>/target/baremetal)
#   BAREMETAL_BUILD_STD   crates for -Zbuild-std (default "core")
#   BAREMETAL_BUILD_STD_FEATURES  -Zbuild-std-features (default "compiler-builtins-mem",
#                         i.e. memcpy & co. as rustup's prebuilt bare-metal targets have them,
#                         needed to link firmware later; set empty to disable)
#   BAREMETAL_NO_APT=1    never run apt-get (fail if the Debian packages are missing)
set -euo pipefail

log() { printf 'baremetal: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

packages=()
targets=()
features=
manifest="${BAREMETAL_MANIFEST:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -p|--package) [[ $# -ge 2 ]] || die "$1 needs a value"; packages+=("$2"); shift 2 ;;
        -p=*|--package=*) packages+=("${1#*=}"); shift ;;
        --target) [[ $# -ge 2 ]] || die "$1 needs a value"; targets+=("$2"); shift 2 ;;
        --target=*) targets+=("${1#*=}"); shift ;;
        --manifest-path) [[ $# -ge 2 ]] || die "$1 needs a value"; manifest="$2"; shift 2 ;;
        --features) [[ $# -ge 2 ]] || die "$1 needs a value"; features="$2"; shift 2 ;;
        --features=*) features="${1#*=}"; shift ;;
        --manifest-path=*) manifest="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ ${#packages[@]} -gt 0 ]] || packages=(peng3dnet-core)
[[ ${#targets[@]} -gt 0 ]] || targets=(thumbv6m-none-eabi thumbv7em-none-eabihf)

# Workspace root: from --manifest-path / BAREMETAL_MANIFEST, else the parent of .ci/.
if [[ -n "$manifest" ]]; then
    [[ -f "$manifest" ]] || die "manifest not found: $manifest"
    ws_root="$(cd "$(dirname "$manifest")" && pwd)"
else
    ws_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fi
manifest="$ws_root/Cargo.toml"
[[ -f "$manifest" ]] || die "no Cargo.toml in $ws_root"
cd "$ws_root"   # so that rust-toolchain.toml overrides apply to rustup/cargo/rustc below

bm_target_dir="${BAREMETAL_TARGET_DIR:-$ws_root/target/baremetal}"
build_std="${BAREMETAL_BUILD_STD:-core}"
build_std_features="${BAREMETAL_BUILD_STD_FEATURES-compiler-builtins-mem}"

pkg_args=()
for p in "${packages[@]}"; do pkg_args+=(-p "$p"); done
[[ -n "$features" ]] && pkg_args+=(--features "$features")

# --locked whenever a lockfile exists, so CI never silently re-resolves.
locked=()
[[ -f "$ws_root/Cargo.lock" ]] && locked=(--locked)

installed_targets=""
if command -v rustup >/dev/null 2>&1; then
    installed_targets="$(rustup target list --installed 2>/dev/null || true)"
fi

debian_pkgs=(rustc-web cargo-web rust-web-src)
debian_ready=""
ensure_debian_toolchain() {
    [[ -n "$debian_ready" ]] && return 0
    local missing=() p
    for p in "${debian_pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        [[ "${BAREMETAL_NO_APT:-0}" != 1 ]] || die "missing Debian packages: ${missing[*]} (BAREMETAL_NO_APT=1)"
        command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install the targets with rustup instead"
        local sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install ${missing[*]}"
            sudo=(sudo)
        fi
        log "installing ${missing[*]} (Debian route, no rustup target installed)"
        # The update is required: stale package lists may only offer the 1.85 packages,
        # too old for this workspace (rust-version 1.88).
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    [[ -x /usr/bin/cargo && -x /usr/bin/rustc ]] || die "/usr/bin/cargo or /usr/bin/rustc missing after install"
    [[ -d /usr/lib/rustlib/src/rust/library ]] || die "rust-web-src library source missing"

    # Cargo.lock: with a committed lockfile we pass --locked. Debian's cargo 1.96 reads the
    # lockfile (version 4) written by rustup's cargo 1.95 unchanged (checked), but it is a
    # different cargo, so to be certain the committed file is never touched the Debian route
    # works on a private copy in the target dir via the unstable `resolver.lockfile-path`
    # config (-Zlockfile-path, allowed by RUSTC_BOOTSTRAP=1; the file must be named
    # Cargo.lock). With --locked, a copy that would need changes fails the build instead of
    # being rewritten; with no committed lockfile the fresh one is written there, not into
    # the workspace.
    # (-Zbuild-std resolves the standard library against its own lockfile in rust-web-src.)
    mkdir -p "$bm_target_dir"
    lock_copy="$bm_target_dir/Cargo.lock"
    if [[ -f "$ws_root/Cargo.lock" ]]; then
        cp "$ws_root/Cargo.lock" "$lock_copy"
    fi

    # Linker for later firmware links: Debian's rust-lld points at an lld that is not
    # installed, so use the rustup toolchain's rust-lld (ask rustup's rustc, not /usr/bin's).
    rust_lld=""
    local sysroot
    if sysroot="$(rustc --print sysroot 2>/dev/null)" && [[ "$sysroot" != /usr ]]; then
        local host
        host="$(rustc -vV | sed -n 's/^host: //p')"
        rust_lld="$sysroot/lib/rustlib/$host/bin/rust-lld"
        [[ -x "$rust_lld" ]] || { log "warning: $rust_lld not found; linker left at default"; rust_lld=""; }
    fi
    debian_ready=1
}

results=()
status=0
for t in "${targets[@]}"; do
    start=$SECONDS
    if grep -qxF "$t" <<<"$installed_targets"; then
        route=rustup
        out_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$manifest" \
            | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/$t/release"
        cmd=(cargo build --release "${locked[@]}" --manifest-path "$manifest" --target "$t" "${pkg_args[@]}")
        envs=()
    else
        route=debian
        ensure_debian_toolchain
        out_dir="$bm_target_dir/$t/release"
        cmd=(/usr/bin/cargo build --release "${locked[@]}" --manifest-path "$manifest"
             -Zlockfile-path --config "resolver.lockfile-path=\"$lock_copy\""
             -Zbuild-std="$build_std" ${build_std_features:+-Zbuild-std-features="$build_std_features"}
             --target "$t" "${pkg_args[@]}")
        envs=(RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
              CARGO_TARGET_DIR="$bm_target_dir")
        linker_var="CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$t")_LINKER"
        if [[ -n "$rust_lld" && -z "${!linker_var:-}" ]]; then
            envs+=("$linker_var=$rust_lld")
        fi
    fi
    log "[$t] ($route) ${envs[*]} ${cmd[*]}"
    if env "${envs[@]}" "${cmd[@]}"; then
        results+=("OK      $t  ($route, $((SECONDS - start))s): ${packages[*]}")
        for p in "${packages[@]}"; do
            rlib="$out_dir/lib${p//-/_}.rlib"
            if [[ -f "$rlib" ]]; then
                log "[$t] $(du -h "$rlib" | cut -f1) ($(stat -c %s "$rlib") bytes) $rlib"
            fi
        done
    else
        results+=("FAILED  $t  ($route, $((SECONDS - start))s): ${packages[*]}")
        status=1
    fi
done

echo "baremetal summary:"
for r in "${results[@]}"; do echo "  $r"; done
exit "$status"
