#!/usr/bin/env python3
"""Relay one connection between stdin/stdout and HOST:PORT.

QEMU's user network runs this once per guest connection to a `guestfwd`
address (`guestfwd=tcp:10.0.2.100:4242-cmd:python3 relay.py 127.0.0.1 PORT`):
its stdin and stdout are the guest's TCP stream. A `guestfwd` to a `tcp:`
chardev instead would carry only one connection for the emulator's life,
and the client firmware opens two (classic and ping).
"""
import os
import select
import socket
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        peer = socket.create_connection((host, port), timeout=10)
    except OSError:
        # Say nothing: stderr is the guest's stream too. The guest sees the
        # connection end before the server's hello.
        return 1
    peer.settimeout(None)
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    guest_in, guest_out = sys.stdin.fileno(), sys.stdout.fileno()
    open_in, open_peer = True, True
    while open_in or open_peer:
        watch = ([guest_in] if open_in else []) + ([peer] if open_peer else [])
        ready, _, _ = select.select(watch, [], [], 120)
        if not ready:
            return 1  # idle for two minutes: give up
        if guest_in in ready:
            data = os.read(guest_in, 65536)
            if data:
                peer.sendall(data)
            else:
                open_in = False
                peer.shutdown(socket.SHUT_WR)
        if peer in ready:
            data = peer.recv(65536)
            if data:
                view = memoryview(data)
                while view:
                    view = view[os.write(guest_out, view):]
            else:
                open_peer = False
                try:
                    os.close(guest_out)
                except OSError:
                    pass
                if not open_in:
                    break
                # The server closed: the guest will see the end of stream.
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
