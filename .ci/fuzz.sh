#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for a bounded time
# and fails on any crash. See fuzz/README.md.
#
# Usage: bash .ci/fuzz.sh [SECONDS]      (default 60 s per target)
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is
# missing. Toolchain: the rustup `nightly` when it is installed; otherwise the
# default (stable) toolchain with RUSTC_BOOTSTRAP=1, which accepts the -Z
# flags cargo-fuzz passes (-Zsanitizer=address); no toolchain is downloaded.
#
# Each target starts from its committed seeds (fuzz/corpus/<target>) and the
# inputs of reported crashes (fuzz/regressions/<target>, run in libFuzzer's
# first pass before any mutation: a bug that is back fails at once); what it
# finds goes to
# fuzz/work/<target> (ignored by git, kept between runs). A crash is written
# to fuzz/artifacts/<target>/ and makes the script exit 1 after the other
# targets ran.
#
# Environment:
#   FUZZ_TARGETS     targets to run (default: all of `cargo fuzz list`)
#   FUZZ_TOOLCHAIN   rustup toolchain to use (default: nightly if installed)
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_JOBS        targets run at once (default 1)
#   FUZZ_MAX_LEN     libFuzzer -max_len (default 4096)
#   FUZZ_ARGS        more libFuzzer arguments
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
start=$SECONDS
log() { printf 'fuzz: %s\n' "$*"; }

# --- toolchain ---------------------------------------------------------------
toolchain="${FUZZ_TOOLCHAIN:-}"
if [[ -z "$toolchain" ]]; then
    if rustup run nightly rustc --version >/dev/null 2>&1; then
        toolchain=nightly
    else
        toolchain="$(rustup show active-toolchain 2>/dev/null | awk '{print $1}')"
        toolchain="${toolchain:-stable}"
    fi
fi
rustc_version="$(rustup run "$toolchain" rustc --version)"
if [[ "$rustc_version" != *nightly* ]]; then
    # Not a nightly: let it take the unstable flags cargo-fuzz passes.
    export RUSTC_BOOTSTRAP=1
fi
log "toolchain $toolchain ($rustc_version)${RUSTC_BOOTSTRAP:+, RUSTC_BOOTSTRAP=1}"

# --- cargo-fuzz --------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
log "$(cargo fuzz --version)"

cargo_fuzz() { cargo "+$toolchain" fuzz "$@"; }
sanitizer="${FUZZ_SANITIZER:-address}"
build_flags=(--debug-assertions --sanitizer "$sanitizer" --fuzz-dir fuzz)

# --- build -------------------------------------------------------------------
log "building every target (debug assertions and overflow checks on, sanitizer $sanitizer)"
build_start=$SECONDS
cargo_fuzz build "${build_flags[@]}"
log "built in $((SECONDS - build_start)) s"

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo_fuzz list --fuzz-dir fuzz)
fi
[[ ${#targets[@]} -gt 0 ]] || { log "no fuzz target"; exit 2; }

# --- run ---------------------------------------------------------------------
logs="$root/fuzz/target/fuzz-logs"
mkdir -p "$logs"
run_target() {
    local t=$1
    local work="$root/fuzz/work/$t" seeds="$root/fuzz/corpus/$t" reg="$root/fuzz/regressions/$t"
    local art="$root/fuzz/artifacts/$t/"
    mkdir -p "$work" "$art"
    local dirs=("$work" "$seeds")
    # Reported crash inputs run in the first pass, before any mutation.
    if [[ -d "$reg" ]] && [[ -n "$(ls -A "$reg")" ]]; then dirs=("$work" "$reg" "$seeds"); fi
    # shellcheck disable=SC2086
    cargo_fuzz run "${build_flags[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len="${FUZZ_MAX_LEN:-4096}" -print_final_stats=1 \
        -artifact_prefix="$art" ${FUZZ_ARGS:-} >"$logs/$t.log" 2>&1
}

declare -A status
jobs_max="${FUZZ_JOBS:-1}"
log "running ${#targets[@]} targets for $seconds s each, $jobs_max at a time"
pids=()
for t in "${targets[@]}"; do
    run_target "$t" &
    pids+=("$!:$t")
    if [[ ${#pids[@]} -ge $jobs_max ]]; then
        p=${pids[0]}; pids=("${pids[@]:1}")
        if wait "${p%%:*}"; then status[${p#*:}]=0; else status[${p#*:}]=$?; fi
    fi
done
for p in "${pids[@]}"; do
    if wait "${p%%:*}"; then status[${p#*:}]=0; else status[${p#*:}]=$?; fi
done

# --- report ------------------------------------------------------------------
failed=0
printf '\n%-16s %-7s %12s %10s %8s %8s %9s\n' target result execs "exec/s" cov ft corpus
for t in "${targets[@]}"; do
    l="$logs/$t.log"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$l" | grep -o '[0-9]*$' | tail -1 || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$l" | grep -o '[0-9]*$' | tail -1 || true)
    last=$(grep -E '^#[0-9]+' "$l" | grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' | tail -1 || true)
    read -r _ cov _ ft _ corp <<<"${last:-- - - - - -}"
    if [[ ${status[$t]} -eq 0 ]] && grep -q '^Done [0-9]* runs' "$l"; then
        result=ok
    else
        result=CRASH
        failed=1
    fi
    printf '%-16s %-7s %12s %10s %8s %8s %9s\n' "$t" "$result" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}"
done
for t in "${targets[@]}"; do
    if [[ ${status[$t]} -ne 0 ]] || ! grep -q '^Done [0-9]* runs' "$logs/$t.log"; then
        printf '\n==== %s (exit %s): end of %s\n' "$t" "${status[$t]}" "$logs/$t.log"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|Running:' -A3 "$logs/$t.log" | head -40 || true
        tail -5 "$logs/$t.log"
    fi
done
log "done in $((SECONDS - start)) s"
crashed=0
for t in "${targets[@]}"; do
    if [[ ${status[$t]} -ne 0 ]] || ! grep -q '^Done [0-9]* runs' "$logs/$t.log"; then
        crashed=$((crashed + 1))
    fi
done
printf 'fuzz: %d passed, %d failed\n' "$(( ${#targets[@]} - crashed ))" "$crashed"
if [[ $failed -ne 0 ]]; then
    log "FAILED: a target crashed; its input is in fuzz/artifacts/<target>/"
    exit 1
fi
