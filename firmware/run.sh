#!/usr/bin/env bash
# Build the firmware images (QEMU's mps2-an385, and the real boards NUCLEO-F767ZI
# and Raspberry Pi Pico W), run the QEMU ones against the host's peng3dnet, end to
# end, with timeouts, and report their footprint. Exit status 0 only when every
# step passed.
#
# Usage: bash firmware/run.sh [build|boards|client|server|uart|footprint|overhead|test|all]...
#        (default: all = test build boards client server uart footprint overhead)
#   build      build the QEMU firmware images (client, server, uart-client) and the
#              host's `peng3dnet` program
#   boards     build the real boards' images, both roles each: nucleo-f767zi
#              (thumbv7em-none-eabihf) and pico-w (thumbv6m-none-eabi); they are
#              built and linked here, never run (see firmware/<board>/README.md)
#   test       `cargo test` of the LAN9118 driver on the host (simulated registers),
#              rustfmt of the firmware workspace, clippy of the host-buildable crates
#   client     firmware as client: `peng3dnet serve` on a free 127.0.0.1 port, QEMU's
#              guestfwd maps 10.0.2.100:4242 to it; handshake, 1,000 echoes, ping,
#              a packet refused by its rules, close `userrequest`; QEMU exits 0/1
#   server     firmware as 4-slot server on a free 127.0.0.1 port (QEMU hostfwd):
#              `peng3dnet echo`/`ping` reach it, a fifth client is refused (serverfull)
#   uart       firmware as client over UART0: QEMU's serial port is a chardev
#              socket listening on a free 127.0.0.1 port (`-serial tcp:...,server=on,
#              wait=on`), `peng3dnet serve --serial tcp:127.0.0.1:PORT` connects to
#              it; handshake, 1,000 echoes, a packet refused by its rules, close
#              `userrequest`, then a ping as the next connection on the link; no
#              Ethernet, no TCP stack in the image; QEMU exits 0/1
#   footprint  flash and static RAM of every image built (QEMU and boards),
#              peng3dnet-core's and peng3dnet-embassy's share, static RAM of one
#              more server slot (QEMU image)
#   overhead   the footprint harness (firmware/footprint): builds a Cortex-M4F
#              baseline (embassy-executor + embassy-net, one TcpSocket that
#              connects, writes and reads) and the same job through a peng3dnet
#              client Session (thumbv7em-none-eabihf), prints what peng3dnet
#              adds to flash and static RAM and the symbols that grew; fails
#              when the flash added is over FIRMWARE_OVERHEAD_BUDGET (unless
#              FIRMWARE_OVERHEAD_ENFORCE=0)
#
# Toolchain, per target: its rustup target when installed; otherwise the Debian
# route of /work/shared/EMBEDDED.md and .ci/baremetal.sh (rustc-web, cargo-web,
# rust-web-src 1.96, `-Zbuild-std=core`, rustup's rust-lld as linker). Missing
# Debian packages (those three and qemu-system-arm) are installed with apt-get
# (root or sudo needed) unless FIRMWARE_NO_APT=1.
#
# Environment:
#   FIRMWARE_TIMEOUT   seconds per QEMU run (default 120)
#   FIRMWARE_LOCKED=1  build with --locked (firmware/Cargo.lock must be current)
#   FIRMWARE_NO_APT=1  never run apt-get
#   FIRMWARE_BUDGET    flash budget of core + adapter in bytes (default 24576)
#   FIRMWARE_OVERHEAD_BUDGET  flash the client Session may add to the harness's
#                      baseline, in bytes (default 10240, issue 14's target)
#   FIRMWARE_OVERHEAD_ENFORCE  1 (default): the overhead step fails above
#                      that budget; 0: it only prints OVER
#   FIRMWARE_SLOT_STATE  static RAM a server slot may take beyond its buffers and
#                      embassy-net's socket, in bytes (default 576: 512 until
#                      the frame, idle and keepalive timers added 56)
#   CARGO_TARGET_DIR   honoured for the host's peng3dnet (found through `cargo
#                      metadata`); the firmware always builds under firmware/target
#   PENG3DNET_SERVER, WIFI_SSID, WIFI_PASSWORD  build-time settings of the boards'
#                      images (see their READMEs); images built without them say
#                      so when run
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target=thumbv7m-none-eabi
qemu_timeout="${FIRMWARE_TIMEOUT:-120}"
budget="${FIRMWARE_BUDGET:-24576}"
overhead_budget="${FIRMWARE_OVERHEAD_BUDGET:-10240}"
overhead_enforce="${FIRMWARE_OVERHEAD_ENFORCE:-1}"
log() { printf 'firmware: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(all)
if [[ " ${steps[*]} " == *" all "* ]]; then steps=(test build boards client server uart footprint overhead); fi

results=()
status=0
record() { # name ok|FAIL seconds detail
    results+=("$(printf '%-4s %-10s %6ss  %s' "$2" "$1" "$3" "$4")")
    [[ "$2" == ok ]] || status=1
}

# ---- packages --------------------------------------------------------------------
apt_install() {
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ "${FIRMWARE_NO_APT:-0}" != 1 ]] || die "missing packages: ${missing[*]} (FIRMWARE_NO_APT=1)"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---- build -----------------------------------------------------------------------
# The boards: package, target (the QEMU image is mps2-an385 on $target).
boards=("nucleo-f767zi thumbv7em-none-eabihf" "pico-w thumbv6m-none-eabi")
fw_cmd=()
fw_env=()
fw_out=""
route=""
lld=""
setup_debian() {
    [[ -n "$lld" ]] && return 0
    apt_install rustc-web cargo-web rust-web-src
    [[ -d /usr/lib/rustlib/src/rust/library ]] || die "rust-web-src library source missing"
    local sysroot host
    sysroot="$(rustc --print sysroot 2>/dev/null || true)"
    [[ -n "$sysroot" && "$sysroot" != /usr ]] || die "no rustup toolchain: its rust-lld is the linker of the Debian route"
    host="$(rustc -vV | sed -n 's/^host: //p')"
    lld="$sysroot/lib/rustlib/$host/bin/rust-lld"
    [[ -x "$lld" ]] || die "$lld not found"
}
# Sets route, fw_cmd, fw_env and fw_out for building package $2 for target $1.
setup_toolchain() { # [target package]
    local t="${1:-$target}" pkg="${2:-mps2-an385}" locked=()
    [[ "${FIRMWARE_LOCKED:-0}" == 1 ]] && locked=(--locked)
    if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$t"; then
        route=rustup
        fw_cmd=(cargo build --release "${locked[@]}" --target "$t" -p "$pkg" --bins)
        fw_env=(CARGO_TARGET_DIR="$here/target")
        fw_out="$here/target/$t/release"
    else
        route=debian
        setup_debian
        fw_cmd=(/usr/bin/cargo build --release "${locked[@]}" -Zbuild-std=core
                -Zbuild-std-features=compiler-builtins-mem --target "$t" -p "$pkg" --bins)
        fw_env=(RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
                CARGO_TARGET_DIR="$here/target/baremetal"
                "CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$t")_LINKER=$lld")
        fw_out="$here/target/baremetal/$t/release"
    fi
}

build_firmware() { # extra cargo args... (the toolchain as last set up)
    (cd "$here" && env "${fw_env[@]}" "${fw_cmd[@]}" "$@")
}

# The host's peng3dnet: under the root workspace's target directory, which
# CARGO_TARGET_DIR (or a .cargo/config) may put anywhere.
peng3dnet=""
host_peng3dnet() {
    [[ -n "$peng3dnet" ]] && return 0
    local dir
    dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')" ||
        die "cargo metadata failed in $root"
    peng3dnet="$dir/release/peng3dnet"
}

do_build() {
    local t0 ok=ok
    t0=$(now)
    setup_toolchain
    log "building the firmware ($route route): ${fw_env[*]} ${fw_cmd[*]}"
    build_firmware || ok=FAIL
    record "firmware" "$ok" "$(since "$t0")" "$route route -> $fw_out/{client,server,uart-client}"
    [[ $ok == ok ]] || return 0
    t0=$(now)
    ok=ok
    host_peng3dnet
    log "building the host's peng3dnet"
    (cd "$root" && cargo build --release -p peng3dnet-std --bin peng3dnet) || ok=FAIL
    [[ $ok == FAIL || -x "$peng3dnet" ]] || { log "built, but $peng3dnet is missing"; ok=FAIL; }
    record "peng3dnet" "$ok" "$(since "$t0")" "$peng3dnet"
}

do_boards() {
    local b pkg t t0 ok
    for b in "${boards[@]}"; do
        read -r pkg t <<<"$b"
        t0=$(now)
        ok=ok
        setup_toolchain "$t" "$pkg"
        log "building $pkg ($route route): ${fw_cmd[*]}"
        build_firmware || ok=FAIL
        record "$pkg" "$ok" "$(since "$t0")" "$route route -> $fw_out/{client,server} (built, not run)"
    done
}

do_test() {
    local t0 ok=ok out lint="fmt"
    t0=$(now)
    out="$(cd "$here/lan9118" && cargo test 2>&1)" || ok=FAIL
    [[ $ok == ok ]] || printf '%s\n' "$out" >&2
    # Style of the whole firmware workspace; lints of the host-buildable driver.
    (cd "$here" && cargo fmt -p lan9118 -p mps2-an385 -p scenario -p nucleo-f767zi -p pico-w -p footprint -- --check) || ok=FAIL
    if cargo clippy --version >/dev/null 2>&1; then
        lint="fmt, clippy"
        (cd "$here/lan9118" && cargo clippy --all-targets -q -- -D warnings) || ok=FAIL
        # The shared roles build on the host too (checked, never linked).
        (cd "$here" && cargo clippy -p scenario --features defmt -q -- -D warnings) || ok=FAIL
    fi
    record "lan9118" "$ok" "$(since "$t0")" \
        "$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' <<<"$out" | head -1); $lint"
}

# ---- emulator --------------------------------------------------------------------
free_port() {
    mkdir -p "$here/target"
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

qemu() { # kernel nic-options
    timeout --kill-after=5 "$qemu_timeout" qemu-system-arm -cpu cortex-m3 -machine mps2-an385 \
        -display none -serial null -monitor none \
        -semihosting-config enable=on,target=native \
        -nic "user,model=lan9118,$2" -kernel "$1" </dev/null
}

need_run_prereqs() {
    apt_install qemu-system-arm
    setup_toolchain
    host_peng3dnet
    [[ -x "$fw_out/client" && -x "$fw_out/server" && -x "$fw_out/uart-client" ]] ||
        die "firmware not built (run: $0 build)"
    [[ -x "$peng3dnet" ]] || die "$peng3dnet not built (run: $0 build)"
}

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

do_client() {
    need_run_prereqs
    local t0 port rc=0 out spid
    t0=$(now)
    port="$(free_port)"
    "$peng3dnet" serve --addr "127.0.0.1:$port" >"$here/target/serve.log" 2>&1 &
    spid=$!
    pids+=("$spid")
    # Wait until it listens.
    for _ in $(seq 1 50); do
        "$peng3dnet" ping "127.0.0.1:$port" --timeout 1 >/dev/null 2>&1 && break
        sleep 0.1
    done
    log "client scenario: peng3dnet serve on 127.0.0.1:$port, QEMU guestfwd 10.0.2.100:4242 -> it"
    out="$(qemu "$fw_out/client" \
        "guestfwd=tcp:10.0.2.100:4242-cmd:python3 $here/scripts/relay.py 127.0.0.1 $port" 2>&1)" || rc=$?
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    printf '%s\n' "$out" | sed 's/^/  | /'
    local summary
    summary="$(grep -o 'SUMMARY client: .*' <<<"$out" || true)"
    if [[ $rc -eq 0 && -n "$summary" ]]; then
        record client ok "$(since "$t0")" "${summary#SUMMARY }"
    else
        [[ $rc -eq 124 || $rc -eq 137 ]] && summary="timed out after ${qemu_timeout}s"
        record client FAIL "$(since "$t0")" "QEMU exit $rc ${summary:-$(grep -m1 FAIL <<<"$out" || true)}"
    fi
}

do_server() {
    need_run_prereqs
    local t0 port rc=0 hrc=0 qpid out
    t0=$(now)
    port="$(free_port)"
    log "server scenario: QEMU hostfwd 127.0.0.1:$port -> 10.0.2.15:4242"
    qemu "$fw_out/server" "hostfwd=tcp:127.0.0.1:$port-:4242" >"$here/target/server-firmware.log" 2>&1 &
    qpid=$!
    pids+=("$qpid")
    timeout 100 python3 "$here/scripts/server_scenario.py" "$peng3dnet" "$port" \
        >"$here/target/server-host.log" 2>&1 || hrc=$?
    sed 's/^/  | /' "$here/target/server-host.log"
    wait "$qpid" || rc=$?
    out="$(cat "$here/target/server-firmware.log")"
    printf '%s\n' "$out" | sed 's/^/  | /'
    local summary
    summary="$(grep -o 'SUMMARY server: .*' <<<"$out" || true)"
    if [[ $rc -eq 0 && $hrc -eq 0 && -n "$summary" ]]; then
        record server ok "$(since "$t0")" "${summary#SUMMARY }"
    else
        [[ $rc -eq 124 || $rc -eq 137 ]] && summary="QEMU timed out after ${qemu_timeout}s"
        record server FAIL "$(since "$t0")" "QEMU exit $rc, host checks exit $hrc ${summary}"
    fi
}

do_uart() {
    need_run_prereqs
    local t0 port rc=0 hrc=0 spid out
    t0=$(now)
    port="$(free_port)"
    log "uart scenario: QEMU's UART0 listens on 127.0.0.1:$port, peng3dnet serve --serial connects"
    # QEMU waits (wait=on) for the host to connect before the firmware runs;
    # the host keeps trying for up to 20 s while QEMU starts.
    timeout --kill-after=5 "$qemu_timeout" qemu-system-arm -cpu cortex-m3 -machine mps2-an385 \
        -display none -monitor none -nic none \
        -serial "tcp:127.0.0.1:$port,server=on,wait=on" \
        -semihosting-config enable=on,target=native \
        -kernel "$fw_out/uart-client" </dev/null >"$here/target/uart-firmware.log" 2>&1 &
    local qpid=$!
    pids+=("$qpid")
    timeout --kill-after=5 "$qemu_timeout" "$peng3dnet" serve --serial "tcp:127.0.0.1:$port" \
        --open-timeout 20 >"$here/target/uart-host.log" 2>&1 &
    spid=$!
    pids+=("$spid")
    wait "$qpid" || rc=$?
    # The link ends with QEMU: the host's serve returns by itself.
    wait "$spid" || hrc=$?
    out="$(cat "$here/target/uart-firmware.log")"
    printf '%s\n' "$out" | sed 's/^/  | /'
    sed 's/^/  host | /' "$here/target/uart-host.log"
    local summary
    summary="$(grep -o 'SUMMARY uart-client: .*' <<<"$out" || true)"
    # The host saw the two connections end as the firmware did.
    if ! grep -q 'serial connection 1 closed (userrequest, by Peer)' "$here/target/uart-host.log" ||
        ! grep -q 'serial connection 2 closed (pingcomplete' "$here/target/uart-host.log"; then
        log "uart: the host's log lacks the two connections' closes"
        [[ $hrc -ne 0 ]] || hrc=1
    fi
    if [[ $rc -eq 0 && $hrc -eq 0 && -n "$summary" ]]; then
        record uart ok "$(since "$t0")" "${summary#SUMMARY }"
    else
        [[ $rc -eq 124 || $rc -eq 137 ]] && summary="QEMU timed out after ${qemu_timeout}s"
        record uart FAIL "$(since "$t0")" "QEMU exit $rc, host serve exit $hrc ${summary:-$(grep -m1 FAIL <<<"$out" || true)}"
    fi
}

do_footprint() {
    setup_toolchain
    local t0 ok=ok
    t0=$(now)
    [[ -x "$fw_out/client" ]] || die "firmware not built (run: $0 build)"
    [[ -x "$fw_out/uart-client" ]] || die "firmware not built (run: $0 build)"
    local images=("$fw_out/client" "$fw_out/server" "$fw_out/uart-client") names=(mps2-an385) b pkg t
    local labelled=("mps2-an385 (QEMU) client=$fw_out/client" "mps2-an385 (QEMU) server=$fw_out/server"
                    "mps2-an385 (QEMU) uart-client=$fw_out/uart-client")
    for b in "${boards[@]}"; do
        read -r pkg t <<<"$b"
        setup_toolchain "$t" "$pkg"
        if [[ -x "$fw_out/client" && -x "$fw_out/server" ]]; then
            images+=("$fw_out/client" "$fw_out/server")
            labelled+=("$pkg client=$fw_out/client" "$pkg server=$fw_out/server")
            names+=("$pkg")
        else
            log "footprint: $pkg not built (run: $0 boards), left out"
        fi
    done
    setup_toolchain
    python3 "$here/scripts/footprint.py" --budget-core-adapter "$budget" "${images[@]}" || ok=FAIL
    echo "footprint of every image (core + adapter by symbol; flash includes .data's initial values):"
    python3 "$here/scripts/footprint.py" --table "${labelled[@]}" || ok=FAIL
    # The UART image carries no network stack: no symbol of smoltcp,
    # embassy-net or the LAN9118 driver.
    local stack
    stack="$(python3 "$here/scripts/footprint.py" --json "$fw_out/uart-client" | python3 -c '
import json, sys
crates = json.load(sys.stdin)[0]["crates"]
net = ("smoltcp", "embassy_net", "embassy_net_driver", "lan9118")
print(" ".join("%s=%d" % (c, v["flash"]) for c, v in sorted(crates.items()) if c in net))')"
    if [[ -n "$stack" ]]; then
        echo "uart-client: network stack linked: $stack"
        ok=FAIL
    else
        echo "uart-client: no network stack linked (no symbol of smoltcp, embassy-net, lan9118)"
    fi
    # One more server slot: what a connection costs in static RAM.
    local four five
    four="$(python3 "$here/scripts/footprint.py" --json "$fw_out/server" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ram"])')"
    cp "$fw_out/server" "$fw_out/server-4slots"
    # Cargo copies a binary to release/ only when it (re)links it: touch the
    # source so the 5-slot build relinks (seconds), keep that copy, and put
    # the 4-slot image back.
    touch "$here/mps2-an385/src/bin/server.rs"
    if build_firmware --features five-slots >/dev/null 2>&1; then
        cp "$fw_out/server" "$fw_out/server-5slots"
        cp "$fw_out/server-4slots" "$fw_out/server"
        touch "$here/mps2-an385/src/bin/server.rs"
        five="$(python3 "$here/scripts/footprint.py" --json "$fw_out/server-5slots" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ram"])')"
        # What a slot is made of: the connection's two buffers (RX + TX), the
        # TCP socket's two (see src/bin/server.rs; no copy buffer: BODY = 0),
        # embassy-net's socket state (its StackResources grow by one socket),
        # and peng3dnet's own state (session, slot future, client table).
        local diff slot=$((five - four)) bufs=$((512 + 512)) sock=$((1024 + 1024)) smol state verdict
        diff="$(python3 "$here/scripts/footprint.py" --ram-diff "$fw_out/server-4slots" "$fw_out/server-5slots")"
        smol="$(awk '$1 == "server::STACK" { gsub(/[()+]/, "", $NF); print $NF }' <<<"$diff")"
        state=$((slot - bufs - sock - ${smol:-0}))
        verdict="within"
        if [[ $state -gt ${FIRMWARE_SLOT_STATE:-576} ]]; then verdict="OVER"; ok=FAIL; fi
        echo "server: one more slot costs $slot bytes of static RAM: connection buffers $bufs + TCP socket buffers $sock + embassy-net socket ${smol:-?} + peng3dnet state $state ($verdict the ${FIRMWARE_SLOT_STATE:-576}-byte target):"
        printf '%s\n' "$diff"
    else
        ok=FAIL
        log "the five-slot build failed"
    fi
    record footprint "$ok" "$(since "$t0")" "${names[*]}; budget for core + adapter: $budget bytes of flash; per slot: ${state:-?} bytes of state (target ${FIRMWARE_SLOT_STATE:-576})"
}

# The footprint harness: what the client Session adds to a baseline firmware
# doing the same job (see firmware/footprint/src/lib.rs).
do_overhead() {
    local t0 ok=ok out line
    t0=$(now)
    setup_toolchain thumbv7em-none-eabihf footprint
    log "building the footprint harness ($route route): ${fw_cmd[*]}"
    if ! build_firmware; then
        record overhead FAIL "$(since "$t0")" "build failed"
        return 0
    fi
    local over=0
    out="$(python3 "$here/scripts/footprint.py" --delta "$fw_out/baseline" "$fw_out/peng3dnet" \
        --budget "$overhead_budget")" || over=1
    printf '%s\n' "$out"
    line="$(grep -o 'over the baseline: .*' <<<"$out" || true)"
    [[ -n "$line" ]] || ok=FAIL
    if [[ $over -eq 1 ]]; then
        if [[ "$overhead_enforce" == 1 ]]; then
            ok=FAIL
        else
            line="$line (not enforced: FIRMWARE_OVERHEAD_ENFORCE=0)"
        fi
    fi
    record overhead "$ok" "$(since "$t0")" "thumbv7em-none-eabihf client Session ${line:-?}"
}

for s in "${steps[@]}"; do
    case "$s" in
        build) do_build ;;
        boards) do_boards ;;
        test) do_test ;;
        client) do_client ;;
        server) do_server ;;
        uart) do_uart ;;
        footprint) do_footprint ;;
        overhead) do_overhead ;;
        *) die "unknown step $s (build, boards, test, client, server, uart, footprint, overhead, all)" ;;
    esac
done

echo "firmware summary:"
for r in "${results[@]}"; do echo "  $r"; done
exit "$status"
