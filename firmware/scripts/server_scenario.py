#!/usr/bin/env python3
"""Host side of the server scenario: the firmware serves 4 slots on the
host's 127.0.0.1:PORT (QEMU `hostfwd`). Usage: server_scenario.py PENG3DNET PORT

1. `peng3dnet echo` (handshake, two echoes) and `peng3dnet ping` reach it;
2. four clients hold all 4 slots (plain TCP connections that read the
   server's `hello` and stay in the handshake), and a fifth `peng3dnet echo`
   is refused with `serverfull`;
3. `peng3dnet echo ... '!shutdown'` stops the server, which then prints its
   counters and exits QEMU (0 when it saw all of the above).
Exit status 0 when every host-side check passed.
"""
import socket
import struct
import subprocess
import sys
import time

HELLO = 1  # peng3dnet:internal.hello


def run(cmd, timeout=20):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def read_frame(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    length, pid, _flags = struct.unpack(">IIH", exact(10))
    exact(length - 6)
    return pid


def main() -> int:
    exe, port = sys.argv[1], int(sys.argv[2])
    addr = f"127.0.0.1:{port}"
    ok = True

    def check(cond, what):
        nonlocal ok
        print(f"host: {'ok  ' if cond else 'FAIL'} {what}", flush=True)
        ok = ok and cond

    # The firmware boots in well under a second; wait for it to listen.
    deadline = time.monotonic() + 30
    while True:
        rc, out, err = run([exe, "ping", addr, "--timeout", "2"])
        if rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(rc == 0, f"peng3dnet ping {addr}: {out.strip() or err.strip()}")

    msgs = ["hello board", "peng3dnet from the host"]
    rc, out, err = run([exe, "echo", addr, *msgs])
    check(rc == 0 and out.split("\n")[:2] == msgs, f"peng3dnet echo: {rc} {out.strip()!r} {err.strip()}")

    holders = []
    try:
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            pid = read_frame(s)  # the slot accepted it and sent hello
            holders.append(s)
            check(pid == HELLO, f"client {i + 1} of 4 holds a slot (got hello)")
        rc, out, err = run([exe, "echo", addr, "fifth", "--timeout", "5"])
        check(rc != 0 and "serverfull" in err, f"fifth client refused: rc {rc}, {err.strip()!r}")
    except (OSError, ConnectionError) as e:
        check(False, f"holding the 4 slots: {e}")
    finally:
        for s in holders:
            s.close()

    # The 4 slots linger up to a second on the closed connections before
    # they listen again (a client arriving meanwhile is refused): retry.
    for _ in range(20):
        rc, out, err = run([exe, "echo", addr, "!shutdown"])
        if "!shutdown" in out:
            break
        time.sleep(0.25)
    check("!shutdown" in out, f"shutdown asked: {out.strip()!r} {err.strip()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
