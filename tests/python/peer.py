#!/usr/bin/env python3
"""Command-line peng3dnet peer built on the Python reference library
(peng3dnet==0.1.3a0), for interoperability tests driven from Rust.

Run it with the venv made by tests/python/setup.sh.

Subcommands (every socket is on 127.0.0.1, every wait is bounded):

  serve  --port P [--registry-extra NAME]... [--ping] [--exit-after S]
         [--ping-data JSON] [--close-on TEXT=REASON]... [--send-on-connect NAME=JSON]...
         Echo server: `echo:echo` is sent back unchanged, `echo:ping` (a map)
         is sent back with `server_timestamp` added.  --ping adds the `ping`
         connection type (PingableServerMixin), --ping-data (a JSON object)
         its `pingdata`.  --close-on: an `echo:echo` of exactly TEXT is not
         echoed; the server closes that client with REASON instead.
         --send-on-connect: once a client's handshake completed, the server
         sends it packet NAME with the JSON value (rules are not checked:
         extra names are plain packets).  Port 0 picks a free port.
         Prints `LISTENING <port>` once bound.  Runs until killed, or until
         --exit-after seconds have passed (then exits 0).
  client --port P [--message M]... [--json] [--echo-ping N] [--send NAME=JSON]...
         [--registry-extra NAME]... [--close-reason R] [--expect-close-reason R]
         Classic handshake; sends each --send packet (printing `SENT NAME`),
         then each message as `echo:echo` (a string, or JSON with --json)
         and waits for its answer, printing each answer as one JSON line;
         then N `echo:ping` maps {"client_timestamp": time.time()}, each
         answer likewise; then closes with reason R (default `userrequest`);
         exits 0.
         With --expect-close-reason R it does not close by itself: it sends
         the messages without waiting for answers and exits 0 only if the
         connection is closed with reason R (sent by either side, or reported
         locally; R=None matches a nil reason).
  ping   --port P [--data JSON]
         peng3dnet.ext.ping.pingServer(); prints its result as one JSON line.
  bench  --port P [--rounds R] [--n N] [--burst K]... [--burst-timeout T]
         [--text-len L] [--last-burst K --last-text-len L2]
         Classic handshake, then R blocks of N sequential `echo:echo` round
         trips (a string of L characters), then one pipelined burst per
         --burst K (send K, then wait for K answers, at most T seconds each;
         after a burst that did not complete, the later ones are skipped),
         then --last-burst with strings of L2 characters (default 20).
         Prints one JSON line: {"n", "text_len", "blocks": [seconds per
         block], "bursts": [{"k", "answered", "secs", "complete", "text_len"}]}.

Line protocol on stdout (flushed after every line):
  LISTENING <port>      server is bound and accepting
  CONNECTED <cid>       (server) handshake of client <cid> completed
  CONNECTED             (client) handshake completed
  CLOSING <reason>      this peer called close_connection(reason)
  CLOSED <reason>       the library reported a close (on_close hook); the
                        reason is the received closeconn reason, or `None`
  CLOSE <reason>        (client) Client.close() ran: for a received closeconn
                        with its reason, on EOF with `socketclose`
  SENT <name>           a packet given by --send / --send-on-connect was sent
  RECEIVED closeconn <reason>
                        a closeconn frame arrived (decoded on the socket
                        thread, so it is seen even when the library's own
                        report loses the reason: see NOTES.md, Closing)
  <json>                (client) one answer; (ping) the ping result
Bytes in answers are printed as {"__bytes__": "<hex>"}.
Errors go to stderr as `ERROR: ...`, with a non-zero exit status.

Common options: --timeout S (default 10) bounds every wait;
--cfg KEY=JSON overrides a peng3dnet config value (repeatable), e.g.
--cfg net.compress.threshold=16 or --cfg net.registry.missingpacketaction='"ignore"'.
"""

import argparse
import json
import os
import signal
import struct
import sys
import threading
import time
import warnings
import zlib

import msgpack

import pyglet

pyglet.options["shadow_window"] = False  # must come before importing peng3d

import peng3dnet  # noqa: E402
import peng3dnet.net  # noqa: E402
import peng3dnet.packet  # noqa: E402
from peng3dnet.constants import STATE_ACTIVE  # noqa: E402
from peng3dnet.ext import ping as pingext  # noqa: E402

HOST = "127.0.0.1"

# bind() warns whenever SSL is off; that is the normal case here.
warnings.filterwarnings("ignore", message="Potential security weakness")

_out_lock = threading.RLock()  # re-entrant: finish() may run in a signal handler


def out(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def die(msg, code=1):
    with _out_lock:
        sys.stdout.flush()
        sys.stderr.write("ERROR: %s\n" % msg)
        sys.stderr.flush()
    os._exit(code)


def finish(code=0):
    with _out_lock:
        sys.stdout.flush()
        sys.stderr.flush()
    # Daemon threads of the library may still run; do not wait for them.
    os._exit(code)


def to_jsonable(obj):
    if isinstance(obj, (bytes, bytearray)):
        return {"__bytes__": bytes(obj).hex()}
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (bytes, bytearray)) else bytes(k).hex(): to_jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def dump_json(obj):
    return json.dumps(to_jsonable(obj), sort_keys=True)


def parse_cfg(items):
    cfg = {}
    for item in items or []:
        if "=" not in item:
            die("--cfg needs KEY=JSON, got %r" % item, 2)
        k, v = item.split("=", 1)
        try:
            cfg[k] = json.loads(v)
        except ValueError:
            die("--cfg value for %s is not JSON: %r" % (k, v), 2)
    return cfg


# --------------------------------------------------------------------------
# Packets (as in the reference's examples/echo/common.py, minus printing and
# the "stop" command, which calls a Server.shutdown() that does not exist)

class EchoPacket(peng3dnet.packet.SmartPacket):
    def receive(self, msg, cid=None):
        if self.peer.is_server:
            if isinstance(msg, str) and msg in self.peer.close_on:
                self.peer.close_connection(cid, self.peer.close_on[msg])
                return
            self.peer.send_message("echo:echo", msg, cid)
        else:
            self.peer.answers.put(("echo:echo", msg))


class EchoPingPacket(peng3dnet.packet.SmartPacket):
    def receive(self, msg, cid=None):
        if self.peer.is_server:
            msg["server_timestamp"] = time.time()
            self.peer.send_message("echo:ping", msg, cid)
        else:
            self.peer.answers.put(("echo:ping", msg))


class NoopPacket(peng3dnet.packet.Packet):
    pass


def register_packets(peer, extras):
    peer.register_packet("echo:echo", EchoPacket(peer.registry, peer))
    peer.register_packet("echo:ping", EchoPingPacket(peer.registry, peer))
    for name in extras or []:
        peer.register_packet(name, NoopPacket(peer.registry, peer))


# --------------------------------------------------------------------------
# Server

class EchoClientOnServer(peng3dnet.net.ClientOnServer):
    def on_handshake_complete(self):
        super().on_handshake_complete()
        out("CONNECTED %s" % self.cid)
        for name, value in self.server.send_on_connect:
            self.server.send_message(name, value, self.cid)
            out("SENT %s" % name)

    def on_close(self, reason=None):
        out("CLOSED %s" % reason)


# `--count-keepalives`: print KEEPALIVE for every `hello` (pid 1) a
# connected client receives and every `settype` (pid 2) a server receives
# from a connected client: what the Rust peer sends as its keepalive.
COUNT_KEEPALIVES = False


def note_keepalive(data, pid_wanted, connected):
    if not COUNT_KEEPALIVES or not connected:
        return
    try:
        pid, _flags = struct.unpack(">IH", bytes(data[:6]))
    except Exception:
        return
    if pid == pid_wanted:
        out("KEEPALIVE")


def note_closeconn(data):
    """Prints `RECEIVED closeconn <reason>` for a closeconn frame (pid 16).

    Runs on the library's socket thread when the frame is complete, before
    the EOF that may follow it is read, so it sees every closeconn: the
    library's own report of the reason (on_close) is racy, see NOTES.md."""
    try:
        pid, flags = struct.unpack(">IH", bytes(data[:6]))
        if pid != 16:
            return
        body = bytes(data[6:])
        if flags & 1:
            body = zlib.decompress(body)
        msg = msgpack.unpackb(body)
        reason = msg.get("reason") if isinstance(msg, dict) else None
    except Exception as e:  # report, never disturb the library
        out("RECEIVED closeconn <undecodable: %s>" % e)
        return
    out("RECEIVED closeconn %s" % reason)


class _ServerHooks(object):
    def close_connection(self, cid, reason=None):
        out("CLOSING %s" % reason)
        return super().close_connection(cid, reason)

    def receive_packet(self, data, cid):
        note_closeconn(data)
        client = self.clients.get(cid) if hasattr(self.clients, "get") else None
        note_keepalive(data, 2, client is not None and client.state == STATE_ACTIVE)
        return super().receive_packet(data, cid)


class EchoServer(_ServerHooks, peng3dnet.net.Server):
    pass


class PingableEchoServer(_ServerHooks, pingext.PingableServerMixin, peng3dnet.net.Server):
    pass


def parse_pairs(items, what, value_is_json):
    pairs = []
    for item in items or []:
        if "=" not in item:
            die("%s needs A=B, got %r" % (what, item), 2)
        k, v = item.split("=", 1)
        if value_is_json:
            try:
                v = json.loads(v)
            except ValueError:
                die("%s value for %s is not JSON: %r" % (what, k, v), 2)
        pairs.append((k, v))
    return pairs


def cmd_serve(args):
    cls = PingableEchoServer if args.ping else EchoServer
    server = cls(addr=[HOST, args.port], clientcls=EchoClientOnServer, cfg=parse_cfg(args.cfg))
    server.close_on = dict(parse_pairs(args.close_on, "--close-on", False))
    server.send_on_connect = parse_pairs(args.send_on_connect, "--send-on-connect", True)
    if args.ping_data is not None:
        try:
            data = json.loads(args.ping_data)
        except ValueError as e:
            die("--ping-data is not JSON: %s" % e, 2)
        if not isinstance(data, dict):
            die("--ping-data must be a JSON object", 2)
        if not args.ping:
            die("--ping-data needs --ping", 2)
        server.pingdata = data
    register_packets(server, args.registry_extra)
    # Note: initialize() never sets _is_initialized in 0.1.3a0, so calling it
    # here and again in runBlocking() raises AlreadyRegisteredError; only
    # bind() is called here (to learn the port and fail early).
    try:
        server.bind()
    except OSError as e:
        die("cannot bind %s:%s: %s" % (HOST, args.port, e))
    port = server.sock.getsockname()[1]
    server.runAsync()
    # runBlocking() is now in its own thread; packets are processed here.
    out("LISTENING %d" % port)
    deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
    while deadline is None or time.monotonic() < deadline:
        try:
            server.process(wait=True, timeout=0.02)
        except Exception as e:
            # Server.process() decodes (zlib, msgpack, header) outside its
            # try block, so a malformed frame kills the reference's processing
            # loop (the echo example runs it on the main thread: it exits).
            import traceback
            traceback.print_exc()
            die("processing loop died: %s: %s" % (type(e).__name__, e), 3)
        if server._run_thread is not None and not server._run_thread.is_alive():
            die("server thread died")
    server.stop()
    finish(0)


# --------------------------------------------------------------------------
# Client

class EchoClient(peng3dnet.net.Client):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        import queue
        self.answers = queue.Queue()
        self.connected_ev = threading.Event()
        self.closed_ev = threading.Event()
        self.reasons = []

    def on_handshake_complete(self):
        super().on_handshake_complete()
        out("CONNECTED")
        self.connected_ev.set()

    def on_close(self, reason=None):
        out("CLOSED %s" % reason)
        self.reasons.append(reason)
        self.closed_ev.set()

    def close_connection(self, cid=None, reason=None):
        out("CLOSING %s" % reason)
        self.reasons.append(reason)
        return super().close_connection(cid, reason)

    def receive_packet(self, data, cid=None):
        note_closeconn(data)
        note_keepalive(data, 1, self.connected_ev.is_set())
        return super().receive_packet(data, cid)

    def close(self, reason=None):
        # Called by a received closeconn (with its reason) and on EOF (with
        # `socketclose`). The library reads EOF on its socket thread and
        # closeconn on its processing thread, so when a server sends
        # closeconn and closes, on_close may report `socketclose` first and
        # never the reason; this line shows the reason that arrived.
        out("CLOSE %s" % reason)
        self.reasons.append(reason)
        return super().close(reason)


def wait_any(events, deadline):
    while time.monotonic() < deadline:
        for ev in events:
            if ev.is_set():
                return ev
        time.sleep(0.005)
    return None


def cmd_client(args):
    if args.json:
        try:
            messages = [json.loads(m) for m in args.message or []]
        except ValueError as e:
            die("--message is not JSON: %s" % e, 2)
    else:
        messages = list(args.message or [])
    sends = parse_pairs(args.send, "--send", True)
    client = EchoClient(addr=[HOST, args.port], cfg=parse_cfg(args.cfg))
    register_packets(client, args.registry_extra)
    try:
        client.connect()  # runBlocking() calls initialize(); see cmd_serve
    except OSError as e:
        die("cannot connect to %s:%s: %s" % (HOST, args.port, e))
    client.runAsync()
    client.process_async()
    deadline = time.monotonic() + args.timeout
    expect = args.expect_close_reason

    ev = wait_any([client.connected_ev, client.closed_ev], deadline)
    if ev is None:
        die("timed out waiting for the handshake")
    if ev is client.connected_ev and not client.closed_ev.is_set():
        if args.idle:
            time.sleep(args.idle)
            if client.closed_ev.is_set():
                die("connection closed while idle (reasons %r)" % (client.reasons,))
            if client._process_thread is not None and not client._process_thread.is_alive():
                die("processing thread died while idle")
        for name, value in sends:
            client.send_message(name, value)
            out("SENT %s" % name)
        pings = [("echo:ping", None)] * args.echo_ping
        for packet, m in [("echo:echo", m) for m in messages] + pings:
            if packet == "echo:ping":
                m = {"client_timestamp": time.time()}
            client.send_message(packet, m)
            if expect is None:
                try:
                    name, ans = client.answers.get(timeout=max(deadline - time.monotonic(), 0.001))
                except Exception:
                    die("timed out waiting for the answer to %s %r" % (packet, m))
                if name != packet:
                    die("sent %s, answer came as %s" % (packet, name))
                out(dump_json(ans))
    elif expect is None:
        die("connection closed during the handshake (reasons %r)" % (client.reasons,))

    if expect is not None:
        def seen():
            return expect in [str(r) for r in client.reasons]

        while time.monotonic() < deadline and not seen():
            try:
                name, ans = client.answers.get(timeout=0.01)
                out(dump_json(ans))
            except Exception:
                pass
        # print any answer that is still queued
        while not client.answers.empty():
            out(dump_json(client.answers.get_nowait()[1]))
        if seen():
            finish(0)
        die("expected close reason %r, saw %r" % (expect, client.reasons))

    client.close_connection(reason=args.close_reason)
    # The reference reports its own close only once the server has closed the
    # socket (as `socketclose`); wait for that, bounded.
    if not client.closed_ev.wait(max(deadline - time.monotonic(), 0.001)):
        die("timed out waiting for the connection to close")
    finish(0)


# --------------------------------------------------------------------------
# Ping

class PingClient(pingext._PingClient):
    _connect_error = None

    def connect(self):
        try:
            return super().connect()
        except Exception as e:
            self._connect_error = e
            raise

    def wait_for_pong(self, timeout=None):
        # fail fast when connect() failed in the client thread
        deadline = time.monotonic() + (timeout if timeout is not None else 10.0)
        while time.monotonic() < deadline:
            if self._connect_error is not None:
                raise OSError(str(self._connect_error))
            if self._pongdata is not None:
                return self._pongdata
            time.sleep(0.005)
        raise peng3dnet.errors.FailedPingError("Timed out")
    def on_close(self, reason=None):
        out("CLOSED %s" % reason)

    def close_connection(self, cid=None, reason=None):
        out("CLOSING %s" % reason)
        return super().close_connection(cid, reason)


def cmd_ping(args):
    data = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except ValueError as e:
            die("--data is not JSON: %s" % e, 2)
        if not isinstance(data, dict):
            die("--data must be a JSON object", 2)
    try:
        res = pingext.pingServer(addr=[HOST, args.port], cfg=parse_cfg(args.cfg), data=data,
                                 clientcls=PingClient, timeout=args.timeout)
    except OSError as e:
        die("cannot connect to %s:%s: %s" % (HOST, args.port, e))
    except peng3dnet.errors.FailedPingError as e:
        die("ping failed: %s" % e)
    out(dump_json(res))
    finish(0)


# --------------------------------------------------------------------------
# Bench

def cmd_bench(args):
    client = EchoClient(addr=[HOST, args.port], cfg=parse_cfg(args.cfg))
    register_packets(client, None)
    try:
        client.connect()
    except OSError as e:
        die("cannot connect to %s:%s: %s" % (HOST, args.port, e))
    client.runAsync()
    client.process_async()
    if wait_any([client.connected_ev, client.closed_ev], time.monotonic() + args.timeout) \
            is not client.connected_ev:
        die("no handshake (reasons %r)" % (client.reasons,))
    text = "x" * args.text_len
    res = {"n": args.n, "text_len": args.text_len, "blocks": [], "bursts": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for i in range(args.n):
            client.send_message("echo:echo", text)
            try:
                client.answers.get(timeout=args.timeout)
            except Exception:
                die("round trip %d timed out" % i)
        res["blocks"].append(time.perf_counter() - t0)
    bursts = [(k, text) for k in args.burst or []]
    if args.last_burst:
        bursts.append((args.last_burst, "x" * args.last_text_len))
    for k, text in bursts:
        t0 = time.perf_counter()
        deadline = time.monotonic() + args.burst_timeout
        for _ in range(k):
            client.send_message("echo:echo", text)
        got = 0
        while got < k:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                client.answers.get(timeout=min(left, 0.1))
                got += 1
            except Exception:
                pass
        secs = time.perf_counter() - t0
        res["bursts"].append({"k": k, "answered": got, "secs": secs, "complete": got == k,
                              "text_len": len(text)})
        if got < k:
            break
    out(json.dumps(res, sort_keys=True))
    finish(0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--timeout", type=float, default=10.0, help="bound on every wait (s)")
        sp.add_argument("--cfg", action="append", metavar="KEY=JSON")
        sp.add_argument("--count-keepalives", action="store_true",
                        help="print KEEPALIVE for each keepalive received")

    s = sub.add_parser("serve")
    common(s)
    s.add_argument("--registry-extra", action="append", metavar="NAME")
    s.add_argument("--ping", action="store_true")
    s.add_argument("--exit-after", type=float, metavar="SECONDS")
    s.add_argument("--ping-data", metavar="JSON", help="the server's pingdata (needs --ping)")
    s.add_argument("--close-on", action="append", metavar="TEXT=REASON")
    s.add_argument("--send-on-connect", action="append", metavar="NAME=JSON")

    c = sub.add_parser("client")
    common(c)
    c.add_argument("--message", action="append", metavar="M")
    c.add_argument("--json", action="store_true", help="messages are JSON values")
    c.add_argument("--registry-extra", action="append", metavar="NAME")
    c.add_argument("--expect-close-reason", metavar="R")
    c.add_argument("--close-reason", default="userrequest", metavar="R")
    c.add_argument("--echo-ping", type=int, default=0, metavar="N")
    c.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                   help="stay idle this long after the handshake, then send")
    c.add_argument("--send", action="append", metavar="NAME=JSON")

    b = sub.add_parser("bench")
    common(b)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--n", type=int, default=500)
    b.add_argument("--burst", type=int, action="append", metavar="K")
    b.add_argument("--burst-timeout", type=float, default=10.0, metavar="T")
    b.add_argument("--text-len", type=int, default=32, metavar="L")
    b.add_argument("--last-burst", type=int, metavar="K")
    b.add_argument("--last-text-len", type=int, default=20, metavar="L")

    g = sub.add_parser("ping")
    common(g)
    g.add_argument("--data", metavar="JSON", help="extra fields of the ping request")

    args = p.parse_args(argv)
    global COUNT_KEEPALIVES
    COUNT_KEEPALIVES = args.count_keepalives
    if not 0 <= args.port < 65536:
        die("port out of range", 2)
    signal.signal(signal.SIGTERM, lambda *_: finish(0))
    {"serve": cmd_serve, "client": cmd_client, "ping": cmd_ping,
     "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    main()
