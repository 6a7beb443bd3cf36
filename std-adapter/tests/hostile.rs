//! Hostile peers against the real `peng3dnet serve` program over loopback
//! TCP, once per codec (`hostile_postcard`, `hostile_msgpack`), while a
//! well-behaved client keeps exchanging echoes with the same server and must
//! see no error. Each case asserts what the hostile peer reads back: the
//! reason in `closeconn`, the stream ending without one, or the connection
//! going on. The server's resident memory is read before and after the
//! suite, its open descriptors must come back to where they were, and the
//! process must still run at the end. `docs/HOSTILE.md` is the table of
//! inputs and outcomes.
//!
//! Slow cases (the 10 s handshake timeout, the 30 s write stall) run on
//! threads beside the others; every wait is bounded.
//!
//! Cases that need a server of their own (other options, or a load whose
//! effect on the healthy client is the point: fair service, the server's
//! timers and admission bounds, CPU load) are `#[test]`s of their own after
//! the suites, each with a healthy client timed throughout its load, its
//! p99 and slowest echo printed and bounded.

mod hostile_common;

use hostile_common::*;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::messages::{HandshakeAccept, Hello, SetType};
use peng3dnet_core::registry::internal;
use peng3dnet_std::client::{Client, ClientOptions};
use peng3dnet_std::codec::AnyCodec;
use peng3dnet_std::echo;
use peng3dnet_test_support::{encode, frame, zlib, Arrival, Ending};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The most the server's resident memory may grow over the whole suite.
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;

/// The most the server's resident memory may grow while a client that never
/// reads stays connected: the bounds of its two buffers (`max_write_queue`
/// and `max_frame`, 1 MiB each) plus 1 MiB of slack for the allocator, which
/// keeps the smaller generations of a doubling buffer, per thread that
/// grows the client's buffers ([`allocating_threads`]).
fn never_reads_rss_bound_kib() -> u64 {
    ((MAX_WRITE_QUEUE + MAX_FRAME + allocating_threads() * (1 << 20)) / 1024) as u64
}

/// The threads of the program's server that grow a client's buffers
/// (`PENG3DNET_RUNTIME`, as the program reads it): its event loop (mio), or
/// the thread that accepts and each worker of the tokio runtime (one per
/// core, as the program runs it): glibc's allocator keeps what a thread frees in
/// that thread's arena, so the freed generations of the same buffer can sit
/// in as many arenas as there are threads it ran on (measured with two
/// workers: +2.5 to +3.9 MiB, and +1.3 MiB with `MALLOC_ARENA_MAX=1`).
fn allocating_threads() -> usize {
    match std::env::var("PENG3DNET_RUNTIME").as_deref() {
        Ok("tokio") => thread::available_parallelism().map_or(1, |n| n.get()) + 1,
        _ => 1,
    }
}

/// The slowest echo round trip the well-behaved client may see.
const GOOD_RTT_BOUND: Duration = Duration::from_secs(3);

/// The healthy client's p99 echo under a load of its own server: the
/// issue's 100 ms in a release build; in a debug build the bound of every
/// other case.
const HEALTHY_P99_BOUND: Duration = if cfg!(debug_assertions) {
    GOOD_RTT_BOUND
} else {
    Duration::from_millis(100)
};

/// The server's handshake timeout and write stall timeout (the program
/// uses the defaults of `ServerOptions`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a case gets.
#[derive(Clone, Copy)]
struct Env {
    addr: SocketAddr,
    codec: AnyCodec,
    pid: u32,
}

impl Env {
    fn raw(&self) -> Raw {
        Raw::connect(self.addr, self.codec, LIMIT)
    }

    /// A raw client that read `hello` (the server waits for `settype`).
    fn after_hello(&self) -> Raw {
        let mut r = self.raw();
        r.hello();
        r
    }

    /// A raw client through the whole classic handshake (ACTIVE).
    fn active(&self) -> Raw {
        let mut r = self.raw();
        r.echo_handshake();
        r
    }
}

type Case = fn(&Env);

#[test]
fn hostile_postcard() {
    suite("postcard");
}

#[test]
fn hostile_msgpack() {
    suite("msgpack");
}

fn suite(codec: &str) {
    let started = Instant::now();
    let mut server = ServerProc::start(codec);
    let env = Env {
        addr: server.addr,
        codec: server.codec,
        pid: server.pid(),
    };
    let good = GoodClient::start(env.addr);
    if !good.wait_echoes(50) {
        panic!("the good client did not get going: {:?}", good.finish());
    }
    let rss_before = rss_kib(env.pid);
    let fds_before = fd_count(env.pid);
    let mut failures: Vec<String> = Vec::new();
    let mut record = |name: &str, result: Result<(), String>, took: Duration| {
        eprintln!(
            "[{codec}] {name}: {} ({:.1} s)",
            if result.is_ok() { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    };

    // The client that never reads goes first, alone beside the good client,
    // so that the memory it costs the server is measured without the others.
    let t = Instant::now();
    let never = catch(|| never_reads_fill(&env, rss_before));
    let (never, result) = match never {
        Ok(n) => (Some(n), Ok(())),
        Err(e) => (None, Err(e)),
    };
    record("never_reads_backpressure", result, t.elapsed());

    // Slow cases beside the others.
    let mut background: Vec<(&str, thread::JoinHandle<Duration>)> = Vec::new();
    let slow: [(&str, Case); 2] = [
        ("slowloris_silent", slowloris_silent),
        ("slowloris_trickle", slowloris_trickle),
    ];
    for (name, case) in slow {
        background.push((name, thread::spawn(move || timed(|| case(&env)))));
    }
    if let Some(n) = never {
        background.push((
            "never_reads_dropped_after_write_stall",
            thread::spawn(move || timed(|| never_reads_dropped(n))),
        ));
    }

    let cases: [(&str, Case); 22] = [
        ("length_prefix_0", length_prefix_0),
        ("length_prefix_5", length_prefix_5),
        ("length_prefix_u32_max", length_prefix_u32_max),
        ("frame_split_at_every_byte", frame_split_at_every_byte),
        ("unknown_packet_ids", unknown_packet_ids),
        ("unknown_flags", unknown_flags),
        ("aes_flag", aes_flag),
        ("compressed_garbage", compressed_garbage),
        ("zlib_bomb", zlib_bomb),
        ("zlib_trailing_bytes", zlib_trailing_bytes),
        ("pipelined_compressed_echoes", pipelined_compressed_echoes),
        (
            "prefix_1_mib_on_2000_connections",
            prefix_1_mib_on_2000_connections,
        ),
        ("malformed_internal_bodies", malformed_internal_bodies),
        ("handshake_out_of_order", handshake_out_of_order),
        ("handshake_replayed", handshake_replayed),
        ("settype_unknown_and_1_mib", settype_unknown_and_1_mib),
        ("ping_request_16_mib", ping_request_16_mib),
        ("disconnect_mid_frame", disconnect_mid_frame),
        ("burst_of_5000_connections", burst_of_5000_connections),
        ("non_utf8_close_reason", non_utf8_close_reason),
        ("registry_of_100000_entries", registry_of_100000_entries),
        ("echo_of_the_largest_frame", echo_of_the_largest_frame),
    ];
    for (name, case) in cases {
        let t = Instant::now();
        record(name, catch(|| case(&env)), t.elapsed());
    }
    for (name, handle) in background {
        match handle.join() {
            Ok(took) => record(name, Ok(()), took),
            Err(p) => record(name, Err(panic_text(p)), Duration::ZERO),
        }
    }

    // Every hostile connection is gone: the descriptors come back.
    let fds_after = wait_fds_at_most(env.pid, fds_before, LIMIT);
    let rss_after = rss_kib(env.pid);
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "[{codec}] server RSS {rss_before} KiB before, {rss_after} KiB after (+{growth} KiB, \
         bound {RSS_GROWTH_BOUND_KIB} KiB, peak {} KiB); fds {fds_before} before, {fds_after} after",
        proc_status_kib(env.pid, "VmHWM").unwrap_or(0)
    );
    if fds_after > fds_before {
        failures.push(format!(
            "descriptors: {fds_before} before the suite, still {fds_after} after it"
        ));
    }
    if growth > RSS_GROWTH_BOUND_KIB {
        failures.push(format!(
            "memory: the server's RSS grew by {growth} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB)"
        ));
    }

    // The well-behaved client saw no error the whole time.
    let stopped_early = good.stopped();
    match good.finish() {
        Ok(stats) => {
            eprintln!(
                "[{codec}] good client: {} echoes, slowest {:.0} ms",
                stats.echoes,
                stats.max_rtt.as_secs_f64() * 1000.0
            );
            if stopped_early || stats.echoes == 0 {
                failures.push("good client: stopped early".into());
            }
            if stats.max_rtt > GOOD_RTT_BOUND {
                failures.push(format!(
                    "good client: an echo took {:?} (bound {GOOD_RTT_BOUND:?})",
                    stats.max_rtt
                ));
            }
        }
        Err(e) => failures.push(e),
    }
    let stderr = server.stderr();
    let alive = server.alive();
    if let Err(e) = server.finish() {
        failures.push(e);
    } else if !alive {
        failures.push("the server stopped".into());
    }
    eprintln!(
        "[{codec}] suite took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "[{codec}] {} failure(s):\n  {}\nserver stderr:\n{stderr}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panic_text)
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Writes what it can, ignoring errors: the server may close while a peer
/// still writes the rest of a refused frame.
fn write_lossy(s: &mut TcpStream, bytes: &[u8]) {
    for chunk in bytes.chunks(64 * 1024) {
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Framing

fn length_prefix_0(env: &Env) {
    let mut r = env.after_hello();
    r.write(&[0, 0, 0, 0]);
    assert_eq!(r.ending(), Ending::closed("malformedframe"));
    // Also when connected, followed by more bytes.
    let mut r = env.active();
    r.write(&[0, 0, 0, 0, 0, 0, 0, 64, 0, 0]);
    assert_eq!(r.ending(), Ending::closed("malformedframe"));
}

fn length_prefix_5(env: &Env) {
    let mut r = env.after_hello();
    r.write(&[0, 0, 0, 5, 0, 0, 0, 2, 0]);
    assert_eq!(r.ending(), Ending::closed("malformedframe"));
    let mut r = env.active();
    r.write(&[0, 0, 0, 5]);
    assert_eq!(r.ending(), Ending::closed("malformedframe"));
}

fn length_prefix_u32_max(env: &Env) {
    // Refused from the prefix alone: nothing of the 4 GiB is waited for.
    let mut r = env.after_hello();
    r.write(&u32::MAX.to_be_bytes());
    assert_eq!(r.ending(), Ending::closed("packettoolarge"));
    let mut r = env.active();
    r.write(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 64, 0, 0, b'x']);
    assert_eq!(r.ending(), Ending::closed("packettoolarge"));
    // One byte above the limit, too.
    let mut r = env.active();
    r.write(&((MAX_FRAME - 3) as u32).to_be_bytes());
    assert_eq!(r.ending(), Ending::closed("packettoolarge"));
}

fn frame_split_at_every_byte(env: &Env) {
    let mut r = env.after_hello();
    // The second is compressed (to about 100 bytes).
    let messages = [
        "first".to_string(),
        "hostile ".repeat(2500),
        "third".to_string(),
    ];
    let mut bytes = frame(
        internal::SETTYPE,
        0,
        &r.enc(&SetType {
            conntype: "classic",
        }),
    );
    bytes.extend(frame(
        internal::HANDSHAKE_ACCEPT,
        0,
        &r.enc(&HandshakeAccept { success: true }),
    ));
    bytes.extend(frame(ECHO_ID, 0, &r.enc(messages[0].as_str())));
    // A compressed frame, split too.
    bytes.extend(frame(ECHO_ID, 1, &zlib(&r.enc(messages[1].as_str()), 6)));
    bytes.extend(frame(ECHO_ID, 0, &r.enc(messages[2].as_str())));
    assert!(bytes.len() < 2000, "{} bytes to trickle", bytes.len());
    for b in &bytes {
        r.write(std::slice::from_ref(b));
        thread::sleep(Duration::from_micros(500));
    }
    r.read_echo_handshake();
    for m in &messages {
        let body = r.expect(ECHO_ID);
        let back: &str = r.codec.decode(&body).expect("an echo");
        assert_eq!(back, m.as_str());
    }
    r.echo("still going");
}

fn unknown_packet_ids(env: &Env) {
    // Ignored in every state, as the reference does; the connection goes on.
    let mut r = env.after_hello();
    r.frame(1000, 0, b"before settype");
    r.settype("classic");
    r.read_echo_handshake();
    r.frame(77, 0, GARBAGE);
    r.accept();
    for id in [0, 5, 15, 17, 63, 66, 1000, u32::MAX] {
        r.frame(id, 0, GARBAGE);
    }
    // A flood of 10,000 in one write, then an echo: answered in order.
    let mut flood = Vec::new();
    for i in 0..10_000u32 {
        flood.extend(frame(100 + i, 0, &i.to_be_bytes()));
    }
    r.write(&flood);
    r.echo("after 10,000 unknown packets");
    // On a ping connection any other id is refused, as the reference does.
    let mut r = env.after_hello();
    r.settype("ping");
    r.frame(1000, 0, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("invalidpingpacket"));
}

fn unknown_flags(env: &Env) {
    for flags in [4u16, 0x8000, 0xfffc] {
        let mut r = env.active();
        let body = r.enc("x");
        r.frame(ECHO_ID, flags, &body);
        assert_eq!(
            r.ending(),
            Ending::closed("unknownflags"),
            "flags {flags:#x}"
        );
    }
    // Before the handshake too.
    let mut r = env.after_hello();
    let body = r.enc(&SetType {
        conntype: "classic",
    });
    r.frame(internal::SETTYPE, 0x10, &body);
    assert_eq!(r.ending(), Ending::closed("unknownflags"));
}

fn aes_flag(env: &Env) {
    for flags in [2u16, 3] {
        let mut r = env.active();
        let body = r.enc("secret");
        r.frame(ECHO_ID, flags, &body);
        assert_eq!(
            r.ending(),
            Ending::closed("encryptionunsupported"),
            "flags {flags:#x}"
        );
    }
    let mut r = env.after_hello();
    r.frame(internal::SETTYPE, 2, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("encryptionunsupported"));
}

fn compressed_garbage(env: &Env) {
    let good = zlib(&encode(&env.codec, "x"), 6);
    let bodies: [(&str, Vec<u8>); 4] = [
        ("not zlib", GARBAGE.to_vec()),
        ("empty", Vec::new()),
        ("truncated zlib", good[..good.len() - 5].to_vec()),
        ("bad checksum", {
            let mut b = good.clone();
            let n = b.len();
            b[n - 1] ^= 0xff;
            b
        }),
    ];
    for (what, body) in bodies {
        let mut r = env.active();
        r.frame(ECHO_ID, 1, &body);
        assert_eq!(r.ending(), Ending::closed("decompressionfailed"), "{what}");
    }
    // In the handshake too.
    let mut r = env.after_hello();
    r.frame(internal::SETTYPE, 1, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("decompressionfailed"));
}

fn zlib_bomb(env: &Env) {
    // 64 MiB of zeros in about 64 KiB: inflating stops at the receive
    // buffer (1 MiB).
    let bomb = zlib(&vec![0u8; 64 << 20], 9);
    assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
    let mut r = env.active();
    r.frame(ECHO_ID, 1, &bomb);
    assert_eq!(r.ending(), Ending::closed("decompressionfailed"));
    // Before the handshake.
    let mut r = env.after_hello();
    r.frame(internal::SETTYPE, 1, &bomb);
    assert_eq!(r.ending(), Ending::closed("decompressionfailed"));
    // Just past the limit: one byte more than the largest body.
    let body = vec![b'a'; MAX_FRAME - 10 + 1];
    let mut r = env.active();
    r.frame(ECHO_ID, 1, &zlib(&body, 6));
    assert_eq!(r.ending(), Ending::closed("decompressionfailed"));
    // A compressed settype that inflates fine is handled.
    let mut r = env.after_hello();
    let settype = r.enc(&SetType {
        conntype: "classic",
    });
    r.frame(internal::SETTYPE, 1, &zlib(&settype, 6));
    r.read_echo_handshake();
    r.accept();
    r.echo("after a compressed settype");
}

fn zlib_trailing_bytes(env: &Env) {
    // A valid zlib stream is echoed; the same stream with bytes after its
    // end is refused, not taken as the stream alone.
    let mut r = env.active();
    let body = zlib(&r.enc("the stream alone"), 6);
    r.frame(ECHO_ID, 1, &body);
    let back = r.expect(ECHO_ID);
    let text: &str = r.codec.decode(&back).expect("an echo body");
    assert_eq!(text, "the stream alone");
    for trailer in [&b"\0"[..], b"trailing", GARBAGE] {
        let mut r = env.active();
        let mut body = zlib(&r.enc("then more"), 6);
        body.extend_from_slice(trailer);
        r.frame(ECHO_ID, 1, &body);
        assert_eq!(
            r.ending(),
            Ending::closed("decompressionfailed"),
            "{} bytes after the stream",
            trailer.len()
        );
    }
}

/// Compressed echoes pipelined in one write.
const PIPELINED_COMPRESSED: usize = 60;
/// The body each of them inflates to: under the largest body (1 MiB less
/// the frame header), so that 60 of them (about 1 KB each on the wire) and
/// one inflated body do not fit one `max_frame` together.
const INFLATED_BODY: usize = 1_000_005;

fn pipelined_compressed_echoes(env: &Env) {
    // On a server of its own, with a healthy client of its own timed
    // throughout: the 60 megabytes are served in rounds (fair service,
    // issue 13 point 3), one echo and its debt at a time; before, all of
    // them in one go stalled other clients for 8.5 s in a debug build.
    let server = ServerProc::start(env.codec.name());
    let own = Env {
        addr: server.addr,
        codec: server.codec,
        pid: server.pid(),
    };
    let good = GoodClient::start(own.addr);
    assert!(good.wait_echoes(20), "the healthy client did not get going");
    let before = good.echoes() as usize;
    let t = Instant::now();
    let mut r = own.active();
    let probe = "x".repeat(INFLATED_BODY);
    let overhead = r.enc(probe.as_str()).len() - probe.len();
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for i in 0..PIPELINED_COMPRESSED {
        // Each one different (its first bytes), so that a mixed-up answer
        // shows.
        let mut message = format!("{i:04}");
        message.push_str(&"a".repeat(INFLATED_BODY - overhead - message.len()));
        let body = r.enc(message.as_str());
        assert_eq!(body.len(), INFLATED_BODY);
        let compressed = zlib(&body, 9);
        assert!(compressed.len() < 2048, "{} bytes", compressed.len());
        wire.extend_from_slice(&frame(ECHO_ID, 1, &compressed));
        sent.push(message);
    }
    r.write(&wire);
    for (i, message) in sent.iter().enumerate() {
        match r.read_frame(Instant::now() + LIMIT) {
            Arrival::Frame(ECHO_ID, _, back) => {
                let text: &str = r.codec.decode(&back).expect("an echo body");
                assert!(text == message.as_str(), "echo {i} came back changed");
            }
            other => panic!(
                "echo {i} of {PIPELINED_COMPRESSED} pipelined compressed echoes (each \
                 inflating to {INFLATED_BODY} bytes): {other:?}"
            ),
        }
    }
    r.echo("after 60 compressed echoes");
    let took = t.elapsed();
    let mut stats = good.finish().expect("the healthy client saw no error");
    stats.rtts.drain(..before.min(stats.rtts.len()));
    let slowest = stats.rtts.iter().copied().max().unwrap_or_default();
    eprintln!(
        "{PIPELINED_COMPRESSED} pipelined compressed echoes answered in {:.2} s; \
         healthy client beside: {} echoes, p99 {:.1} ms, slowest {:.1} ms",
        took.as_secs_f64(),
        stats.rtts.len(),
        stats.percentile(99).as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    assert!(
        slowest < GOOD_RTT_BOUND,
        "the healthy client beside waited {slowest:?} for an echo (bound {GOOD_RTT_BOUND:?})"
    );
    server.finish().expect("the server still runs");
}

/// Connections that each announce the largest frame and send 1 KB of it.
const PREFIX_HOLDERS: usize = 2000;
/// What each may cost the server at most.
const PREFIX_HOLDER_BOUND_KIB: u64 = 64;

fn prefix_1_mib_on_2000_connections(env: &Env) {
    let fds = fd_count(env.pid);
    let t = Instant::now();
    let mut peers = Vec::with_capacity(PREFIX_HOLDERS);
    for i in 0..PREFIX_HOLDERS {
        let r = env.active();
        peers.push(r);
        assert!(
            t.elapsed() < 3 * LIMIT,
            "{i} handshakes took {:?}",
            t.elapsed()
        );
    }
    // Handshakes done: measure from here.
    env.active().echo("before the prefixes");
    let rss_before = rss_kib(env.pid);
    // An echo as large as the write queue takes back (see
    // `echo_of_the_largest_frame`): its length prefix announces 1 MiB less
    // 96 bytes. Its first 1 KB is sent on every connection.
    let probe = "x".repeat(MAX_FRAME - 100);
    let overhead = env.active().enc(probe.as_str()).len() - probe.len();
    let body_len = MAX_WRITE_QUEUE - 96 - 10;
    let message = text(body_len - overhead, 7);
    let whole = frame(ECHO_ID, 0, &env.active().enc(message.as_str()));
    assert_eq!(whole.len(), body_len + 10);
    let (start, rest) = whole.split_at(10 + 1024);
    for r in &mut peers {
        r.write(start);
    }
    // A newcomer's echo comes back after the server read what was sent
    // before it (one event loop).
    env.active().echo("beside the prefixes");
    let rss_held = rss_kib(env.pid);
    let per = rss_held.saturating_sub(rss_before) * 1024 / PREFIX_HOLDERS as u64;
    eprintln!(
        "{PREFIX_HOLDERS} connections holding a 1 MiB prefix + 1 KB: server RSS \
         {rss_before} KiB -> {rss_held} KiB, {per} B each (bound {PREFIX_HOLDER_BOUND_KIB} KiB)"
    );
    assert!(
        per <= PREFIX_HOLDER_BOUND_KIB * 1024,
        "each connection holding a 1 MiB prefix + 1 KB costs {per} B"
    );
    // They are still served: one completes its frame and gets its echo.
    let mut r = peers.pop().expect("a peer");
    r.write(rest);
    let back = r.expect(ECHO_ID);
    let text: &str = r.codec.decode(&back).expect("an echo body");
    assert!(text == message.as_str(), "the echo came back changed");
    drop(peers);
    let after = wait_fds_at_most(env.pid, fds, LIMIT);
    assert!(
        after <= fds,
        "the server still holds {after} descriptors (had {fds})"
    );
}

// ---------------------------------------------------------------------------
// Internal packets

fn malformed_internal_bodies(env: &Env) {
    // settype (in WAITTYPE).
    for body in [GARBAGE, &[]] {
        let mut r = env.after_hello();
        r.frame(internal::SETTYPE, 0, body);
        assert_eq!(
            r.ending(),
            Ending::closed("malformedpacket"),
            "settype {body:?}"
        );
    }
    // handshake.accept (in HANDSHAKE_WAIT1).
    for body in [GARBAGE, &[]] {
        let mut r = env.after_hello();
        r.settype("classic");
        r.read_echo_handshake();
        r.frame(internal::HANDSHAKE_ACCEPT, 0, body);
        assert_eq!(
            r.ending(),
            Ending::closed("malformedpacket"),
            "handshake.accept {body:?}"
        );
    }
    // hello from a client: its rules (received by clients only, ignore)
    // drop it before the body is looked at.
    let mut r = env.after_hello();
    r.frame(internal::HELLO, 0, GARBAGE);
    r.settype("classic");
    r.read_echo_handshake();
    r.accept();
    r.frame(internal::HELLO, 0, GARBAGE);
    r.echo("after two malformed hellos");
    // handshake from a client: its rules close.
    let mut r = env.active();
    r.frame(internal::HANDSHAKE, 0, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("smartpacketinvalid"));
    // closeconn that does not decode: still a close, by the peer, so the
    // server sends nothing back.
    for mut r in [env.after_hello(), env.active()] {
        r.frame(internal::CLOSECONN, 0, GARBAGE);
        assert_eq!(r.ending(), Ending::Ended);
    }
    // ping request on a ping connection.
    let mut r = env.after_hello();
    r.settype("ping");
    r.frame(internal::PING_REQUEST, 0, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("invalidpingpacket"));
    // A ping answer from the client: the wrong side, whatever its body.
    let mut r = env.after_hello();
    r.settype("ping");
    r.frame(internal::PING_RESPONSE, 0, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("pinginvalidside"));
    // An application packet that must decode: echo:ping.
    let mut r = env.active();
    r.frame(ECHO_PING_ID, 0, GARBAGE);
    assert_eq!(r.ending(), Ending::closed("malformedpacket"));
}

fn handshake_out_of_order(env: &Env) {
    // handshake.accept before settype: its rules close.
    let mut r = env.after_hello();
    r.accept();
    assert_eq!(r.ending(), Ending::closed("smartpacketinvalid"));
    // handshake from the client, before settype.
    let mut r = env.after_hello();
    r.frame(internal::HANDSHAKE, 0, &[]);
    assert_eq!(r.ending(), Ending::closed("smartpacketinvalid"));
    // hello from the client before settype: ignored.
    let mut r = env.after_hello();
    let hello = r.enc(&Hello {
        version: "hostile",
        protoversion: 2,
    });
    r.frame(internal::HELLO, 0, &hello);
    r.handshake_rest();
    r.echo("after an early hello");
    // An application packet before the handshake completed: ignored (its
    // rules want ACTIVE), so the first answer is the later echo's.
    let mut r = env.after_hello();
    r.send_as(ECHO_ID, "too early");
    r.settype("classic");
    r.send_as(ECHO_ID, "still too early");
    r.read_echo_handshake();
    r.accept();
    r.echo("in time");
    // Id 64 (a ping request on a ping connection, echo:echo on a classic
    // one) with a ping body before the handshake: the wrong state, ignored.
    let mut r = env.after_hello();
    r.send_as(internal::PING_REQUEST, &PingTime { time: 1.0 });
    r.handshake_rest();
    r.echo("after an early ping request");
    // settype written before hello is read: the server's order holds.
    let mut r = env.raw();
    r.settype("classic");
    r.accept();
    r.hello();
    r.read_echo_handshake();
    r.echo("after a client that did not wait for hello");
    // closeconn first, twice: the server closes without a word.
    let mut r = env.after_hello();
    r.send_closeconn("userrequest");
    r.send_closeconn("userrequest");
    assert_eq!(r.ending(), Ending::Ended);
}

fn handshake_replayed(env: &Env) {
    // settype again in HANDSHAKE_WAIT1: ignored by its state rule.
    let mut r = env.after_hello();
    r.settype("classic");
    r.settype("classic");
    r.settype("ping");
    r.read_echo_handshake();
    r.accept();
    r.echo("after three settypes");
    // settype again when ACTIVE: ignored.
    let mut r = env.active();
    r.settype("classic");
    r.settype("nosuchtype");
    r.echo("after settype replayed");
    // handshake.accept replayed when ACTIVE: its rules close.
    let mut r = env.active();
    r.accept();
    assert_eq!(r.ending(), Ending::closed("smartpacketinvalid"));
    // The server's own handshake sent back to it when ACTIVE: its rules
    // (received by clients only) close.
    let mut r = env.active();
    r.send_as(internal::HANDSHAKE, &HandshakeAccept { success: true });
    assert_eq!(r.ending(), Ending::closed("smartpacketinvalid"));
    // The whole client side of the handshake replayed at once.
    let mut r = env.active();
    r.settype("classic");
    r.accept();
    assert_eq!(r.ending(), Ending::closed("smartpacketinvalid"));
    // settype replayed on a ping connection: ignored, and the ping answered.
    let mut r = env.after_hello();
    r.settype("ping");
    r.settype("ping");
    r.settype("classic");
    r.send_as(internal::PING_REQUEST, &PingTime { time: 42.5 });
    r.expect(internal::PING_RESPONSE);
    r.send_closeconn("pingcomplete");
    assert_eq!(r.ending(), Ending::Ended);
    // A second ping request on the same connection is answered too (each
    // answer is bounded: only `time` is echoed).
    let mut r = env.after_hello();
    r.settype("ping");
    for _ in 0..3 {
        r.send_as(internal::PING_REQUEST, &PingTime { time: 1.5 });
        let answer = r.expect(internal::PING_RESPONSE);
        assert!(answer.len() < 256, "ping answer of {} bytes", answer.len());
    }
}

#[derive(Serialize)]
struct PingTime {
    time: f64,
}

fn settype_unknown_and_1_mib(env: &Env) {
    for conntype in ["nosuchtype", "_notset", "", "CLASSIC", "classic\0"] {
        let mut r = env.after_hello();
        r.settype(conntype);
        assert_eq!(
            r.ending(),
            Ending::closed("unknownconntype"),
            "conntype {conntype:?}"
        );
    }
    // A 1 MiB connection type: larger than the largest frame.
    let huge = "x".repeat(1 << 20);
    let mut r = env.after_hello();
    let body = r.enc(&SetType { conntype: &huge });
    let mut writer = r.stream.try_clone().unwrap();
    let bytes = frame(internal::SETTYPE, 0, &body);
    let w = thread::spawn(move || write_lossy(&mut writer, &bytes));
    assert_eq!(r.ending(), Ending::closed("packettoolarge"));
    w.join().unwrap();
    // Just below the limit: read whole, then refused by name.
    let overhead = encode(&env.codec, &SetType { conntype: &huge }).len() - huge.len();
    let almost = "y".repeat(MAX_FRAME - 10 - overhead);
    let mut r = env.after_hello();
    let body = r.enc(&SetType { conntype: &almost });
    assert_eq!(body.len() + 10, MAX_FRAME);
    r.frame(internal::SETTYPE, 0, &body);
    assert_eq!(r.ending(), Ending::closed("unknownconntype"));
}

fn ping_request_16_mib(env: &Env) {
    let mut r = env.after_hello();
    r.settype("ping");
    let mut head = ((16u32 << 20) + 6).to_be_bytes().to_vec();
    head.extend(internal::PING_REQUEST.to_be_bytes());
    head.extend([0, 0]);
    let mut writer = r.stream.try_clone().unwrap();
    let w = thread::spawn(move || {
        write_lossy(&mut writer, &head);
        write_lossy(&mut writer, &vec![0x90; 256 * 1024]);
    });
    assert_eq!(r.ending(), Ending::closed("packettoolarge"));
    w.join().unwrap();
    // A ping request as large as a frame may be: the answer echoes only
    // `time` (MessagePack ignores the other field; postcard has no room
    // for one and refuses the request).
    #[derive(Serialize)]
    struct Padded<'a> {
        time: f64,
        pad: &'a str,
    }
    let probe = encode(&env.codec, &Padded { time: 1.0, pad: "" }).len();
    let pad = "p".repeat(MAX_FRAME - 10 - probe - 5);
    let mut r = env.after_hello();
    r.settype("ping");
    let body = r.enc(&Padded {
        time: 1.0,
        pad: &pad,
    });
    assert!(body.len() + 10 <= MAX_FRAME);
    r.frame(internal::PING_REQUEST, 0, &body);
    match env.codec {
        AnyCodec::MsgPack => {
            let answer = r.expect(internal::PING_RESPONSE);
            assert!(answer.len() < 256, "ping answer of {} bytes", answer.len());
            r.send_closeconn("pingcomplete");
            assert_eq!(r.ending(), Ending::Ended);
        }
        AnyCodec::Postcard => assert_eq!(r.ending(), Ending::closed("invalidpingpacket")),
    }
}

// ---------------------------------------------------------------------------
// Connections

fn slowloris_silent(env: &Env) {
    let t = Instant::now();
    let mut r = env.after_hello();
    assert_eq!(r.ending(), Ending::closed("handshaketimeout"));
    let took = t.elapsed();
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(500) && took < HANDSHAKE_TIMEOUT * 3 / 2,
        "closed after {took:?}"
    );
}

fn slowloris_trickle(env: &Env) {
    // One byte of a settype every 250 ms, never completing it.
    let t = Instant::now();
    let mut r = env.after_hello();
    let long = "z".repeat(500);
    let bytes = frame(internal::SETTYPE, 0, &r.enc(&SetType { conntype: &long }));
    let mut writer = r.stream.try_clone().unwrap();
    let w = thread::spawn(move || {
        for b in &bytes[..bytes.len() - 1] {
            if writer.write_all(std::slice::from_ref(b)).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
    });
    assert_eq!(r.ending(), Ending::closed("handshaketimeout"));
    let took = t.elapsed();
    assert!(
        took >= HANDSHAKE_TIMEOUT - Duration::from_millis(500) && took < HANDSHAKE_TIMEOUT * 3 / 2,
        "closed after {took:?}"
    );
    w.join().unwrap();
}

/// Writes frame `f` over and over, never reading, until the server has
/// taken no byte for `quiet` (it stopped reading); the bytes it took and
/// when it took the last. The server must stop within `LIMIT` and 256 MiB.
fn push_until_refused(stream: &mut TcpStream, f: &[u8], quiet: Duration) -> (usize, Instant) {
    stream.set_nonblocking(true).unwrap();
    let (mut written, mut off) = (0usize, 0usize);
    let mut last_progress = Instant::now();
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(Instant::now() < deadline, "the server kept reading");
        assert!(
            written < 256 << 20,
            "the server took {written} bytes from a client that never reads"
        );
        match stream.write(&f[off..]) {
            Ok(n) => {
                written += n;
                off = (off + n) % f.len();
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if last_progress.elapsed() > quiet {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    (written, last_progress)
}

/// A connected client that pipelined echoes and stopped reading.
struct NeverReader {
    r: Raw,
    /// When its last byte was taken.
    stalled: Instant,
}

/// Pipelines 8 KiB echoes (below the compression threshold) without ever
/// reading until the server takes no more for a second: the server must
/// stop reading from it (bounded bytes taken) and hold at most its write
/// queue for it.
fn never_reads_fill(env: &Env, rss_before: u64) -> NeverReader {
    let mut r = env.active();
    let message = text(8000, 3);
    let f = frame(ECHO_ID, 0, &r.enc(message.as_str()));
    let (written, last_progress) = push_until_refused(&mut r.stream, &f, Duration::from_secs(1));
    let rss = rss_kib(env.pid);
    let growth = rss.saturating_sub(rss_before);
    eprintln!(
        "never reads: server took {written} bytes ({} echoes), then stopped reading; RSS +{growth} KiB \
         (bound {} KiB)",
        written / f.len(),
        never_reads_rss_bound_kib()
    );
    assert!(
        growth <= never_reads_rss_bound_kib(),
        "the server's RSS grew by {growth} KiB for a client that never reads"
    );
    NeverReader {
        r,
        stalled: last_progress,
    }
}

/// The server drops the client after `write_stall_timeout` (30 s) without
/// a byte taken: no `closeconn` (it would not be read), a reset.
fn never_reads_dropped(n: NeverReader) {
    let NeverReader { r, stalled } = n;
    let deadline = stalled + WRITE_STALL_TIMEOUT + LIMIT;
    let err = loop {
        match r.stream.take_error() {
            Ok(Some(e)) => break e,
            Ok(None) => {}
            Err(e) => break e,
        }
        assert!(
            Instant::now() < deadline,
            "still connected {:?} after the server stopped taking bytes",
            stalled.elapsed()
        );
        thread::sleep(Duration::from_millis(100));
    };
    let took = stalled.elapsed();
    eprintln!("never reads: dropped {took:?} after the stall ({err})");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert!(
        took >= WRITE_STALL_TIMEOUT - Duration::from_secs(2),
        "dropped after {took:?}, before the write stall timeout"
    );
}

fn disconnect_mid_frame(env: &Env) {
    let fds = fd_count(env.pid);
    let echo = frame(ECHO_ID, 0, &encode(&env.codec, "cut short"));
    let big = frame(
        ECHO_ID,
        0,
        &encode(&env.codec, text(512 * 1024, 9).as_str()),
    );
    let settype = frame(
        internal::SETTYPE,
        0,
        &encode(
            &env.codec,
            &SetType {
                conntype: "classic",
            },
        ),
    );
    let cuts: [(bool, &[u8]); 6] = [
        (false, &settype[..2]),
        (false, &settype[..7]),
        (false, &settype[..settype.len() - 1]),
        (true, &echo[..echo.len() / 2]),
        (true, &big[..big.len() / 2]),
        (true, &zlib(&big, 6)[..100]),
    ];
    for (active, bytes) in cuts {
        let mut r = if active {
            env.active()
        } else {
            env.after_hello()
        };
        r.write(bytes);
        drop(r);
    }
    // And mid-handshake: settype sent, the handshake never read.
    let mut r = env.after_hello();
    r.settype("classic");
    drop(r);
    let after = wait_fds_at_most(env.pid, fds, Duration::from_secs(5));
    assert!(
        after <= fds,
        "the server still holds {after} descriptors (had {fds})"
    );
}

fn burst_of_5000_connections(env: &Env) {
    // Both suites may burst at once in this process, and the server inherits
    // the same limit.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        soft >= 12_000,
        "the open-file limit is {soft}: this case needs 12,000 (ulimit -n)"
    );
    let fds = fd_count(env.pid);
    let t = Instant::now();
    let settype = frame(
        internal::SETTYPE,
        0,
        &encode(
            &env.codec,
            &SetType {
                conntype: "classic",
            },
        ),
    );
    let mut socks = Vec::with_capacity(5000);
    let mut slowest = Duration::ZERO;
    let mut slow = 0;
    for i in 0..5000 {
        let c = Instant::now();
        let mut s = TcpStream::connect_timeout(&env.addr, LIMIT)
            .unwrap_or_else(|e| panic!("connection {i} of the burst: {e}"));
        slowest = slowest.max(c.elapsed());
        if c.elapsed() > Duration::from_millis(100) {
            slow += 1;
        }
        // A third say nothing, a third half a length prefix, a third a
        // whole settype.
        let _ = match i % 3 {
            0 => Ok(()),
            1 => s.write_all(&[0, 0]),
            _ => s.write_all(&settype),
        };
        socks.push(s);
        assert!(t.elapsed() < 3 * LIMIT, "the burst took {:?}", t.elapsed());
    }
    let opened = t.elapsed();
    drop(socks);
    let after = wait_fds_at_most(env.pid, fds, LIMIT);
    eprintln!(
        "burst: 5000 opened in {:.2} s (slowest connect {slowest:?}, {slow} over 100 ms), \
         all gone from the server {:.2} s later",
        opened.as_secs_f64(),
        (t.elapsed() - opened).as_secs_f64()
    );
    assert!(
        after <= fds,
        "the server still holds {after} descriptors (had {fds})"
    );
    // And it still serves a newcomer at once.
    let mut r = env.active();
    r.echo("after the burst");
}

fn non_utf8_close_reason(env: &Env) {
    // closeconn {reason: <3 bytes that are no UTF-8>} in the codec's own
    // string encoding, and a 64 KiB reason of valid UTF-8.
    let bad: &[u8] = &[0xff, 0xfe, b'A'];
    let bad_reason = match env.codec {
        AnyCodec::Postcard => [&[1u8, 3][..], bad].concat(),
        AnyCodec::MsgPack => [&b"\x81\xa6reason\xa3"[..], bad].concat(),
    };
    // MessagePack bin instead of str; postcard: a length past the end.
    let odd_reason = match env.codec {
        AnyCodec::Postcard => vec![1u8, 100, b'a'],
        AnyCodec::MsgPack => [&b"\x81\xa6reason\xc4\x03"[..], bad].concat(),
    };
    let long = "é".repeat(32 * 1024);
    for (active, body) in [
        (true, bad_reason.clone()),
        (false, bad_reason),
        (true, odd_reason),
        (
            true,
            encode(
                &env.codec,
                &peng3dnet_core::messages::CloseConn {
                    reason: Some(&long),
                },
            ),
        ),
    ] {
        let mut r = if active {
            env.active()
        } else {
            env.after_hello()
        };
        r.frame(internal::CLOSECONN, 0, &body);
        assert_eq!(
            r.ending(),
            Ending::Ended,
            "closeconn {:?}",
            &body[..body.len().min(12)]
        );
    }
}

fn echo_of_the_largest_frame(env: &Env) {
    // An echo must come back, or the server must close and say why; a
    // silent drop leaves the client waiting forever. The largest body whose
    // echo fits the write queue (1 MiB less the 96 bytes kept for a
    // closeconn, less the 10-byte frame header) comes back; the largest
    // body the server accepts (a frame of max_frame bytes) is 96 bytes
    // longer.
    let probe = "x".repeat(MAX_FRAME - 100);
    let overhead = encode(&env.codec, probe.as_str()).len() - probe.len();
    let fits = MAX_WRITE_QUEUE - 96 - 10;
    let largest = MAX_FRAME - 10;
    for body_len in [fits, largest] {
        let message = text(body_len - overhead, body_len as u64);
        let mut r = env.active();
        let body = r.enc(message.as_str());
        assert_eq!(body.len(), body_len);
        r.frame(ECHO_ID, 0, &body);
        match r.read_frame(Instant::now() + Duration::from_secs(5)) {
            Arrival::Frame(ECHO_ID, _, back) => {
                assert!(back == body, "the echo came back changed");
                r.echo("after a large echo");
            }
            Arrival::Frame(internal::CLOSECONN, ..) => {}
            other => panic!(
                "an echo with a body of {body_len} bytes (a frame of {} bytes; the server \
                 accepts up to max_frame = {MAX_FRAME}) got neither its answer nor a closeconn \
                 within 5 s: {other:?}",
                body_len + 10
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// A hostile server against the `peng3dnet echo` program

/// The name -> id map of a hostile handshake: the client's own names with
/// their ids, then `extra` made-up names.
struct BigRegistry {
    extra: usize,
    long_names: bool,
}

impl Serialize for BigRegistry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let own = [
            ("peng3dnet:internal.hello", 1u32),
            ("peng3dnet:internal.settype", 2),
            ("peng3dnet:internal.handshake", 3),
            ("peng3dnet:internal.handshake.accept", 4),
            ("peng3dnet:internal.closeconn", 16),
            ("echo:echo", ECHO_ID),
            ("echo:ping", ECHO_PING_ID),
        ];
        let mut map = s.serialize_map(Some(own.len() + self.extra))?;
        for (name, id) in own {
            map.serialize_entry(name, &id)?;
        }
        for i in 0..self.extra {
            let name = if self.long_names {
                format!("hostile:registry.entry.{i:08}")
            } else {
                format!("h:{i}")
            };
            map.serialize_entry(&name, &100u32)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct BigHandshake {
    version: &'static str,
    protoversion: u32,
    registry: BigRegistry,
}

/// A hard cap on the virtual memory of the echo program (`ulimit -v`),
/// about three times its own peak (10 MiB in a debug build): a client that
/// grew without bound on a huge handshake would be killed by it.
const ECHO_VM_LIMIT_KIB: u64 = 32 * 1024;
/// The most its resident memory may be while it holds the whole handshake
/// (about 7 MiB idle, 8 MiB with the 900 KB frame buffered).
const ECHO_RSS_BOUND_KIB: u64 = 16 * 1024;

fn registry_of_100000_entries(env: &Env) {
    // Fits the client's 1 MiB frame: decoded entry by entry against the
    // client's registry (nothing stored), then packetregmismatch. With long
    // names it does not fit: packettoolarge from its length prefix.
    for (long_names, expected) in [(false, "packetregmismatch"), (true, "packettoolarge")] {
        let hs = BigHandshake {
            version: "hostile",
            protoversion: 2,
            registry: BigRegistry {
                extra: 100_000,
                long_names,
            },
        };
        let body = encode(&env.codec, &hs);
        assert_eq!(
            body.len() + 10 <= MAX_FRAME,
            !long_names,
            "{} bytes",
            body.len()
        );
        hostile_server_against_echo(env.codec, frame(internal::HANDSHAKE, 0, &body), expected);
    }
}

fn hostile_server_against_echo(codec: AnyCodec, handshake: Vec<u8>, expected: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t = Instant::now();
    let script = format!("ulimit -v {ECHO_VM_LIMIT_KIB} && exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .args([
            "-c",
            &script,
            PROGRAM,
            "echo",
            &addr,
            "hi",
            "--timeout",
            "10",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peng3dnet echo");
    let pid = child.id();
    // Kill the child whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut child = Reap(child);
    listener.set_nonblocking(true).unwrap();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && t.elapsed() < LIMIT => {
                if let Ok(Some(status)) = child.0.try_wait() {
                    panic!("peng3dnet echo exited ({status}) before connecting");
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut r = Raw::from_stream(stream, codec, LIMIT);
    r.send_as(
        internal::HELLO,
        &Hello {
            version: "hostile",
            protoversion: 2,
        },
    );
    let body = r.expect(internal::SETTYPE);
    let st: SetType = codec.decode(&body).expect("a settype");
    assert_eq!(st.conntype, "classic");
    // All but the last byte, then the client's memory while it holds them,
    // then the last byte.
    let rss_before = rss_kib(pid);
    let mut writer = r.stream.try_clone().unwrap();
    let (head, last) = handshake.split_at(handshake.len() - 1);
    write_lossy(&mut writer, head);
    let mut rss_full = rss_before;
    if expected == "packetregmismatch" {
        thread::sleep(Duration::from_millis(300));
        rss_full = rss_kib(pid);
        write_lossy(&mut writer, last);
    }
    assert_eq!(r.ending(), Ending::closed(expected));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "peng3dnet echo did not exit");
        thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    let stderr = stderr.join().unwrap();
    eprintln!(
        "registry of 100,000 ({expected}): peng3dnet echo RSS {rss_before} KiB, {rss_full} KiB \
         holding the handshake; exited ({status}) after {:.2} s: {}",
        took.as_secs_f64(),
        stderr.trim()
    );
    assert!(!status.success(), "peng3dnet echo succeeded");
    assert!(stderr.contains(expected), "stderr: {stderr}");
    assert!(
        rss_full <= ECHO_RSS_BOUND_KIB,
        "peng3dnet echo holds {rss_full} KiB"
    );
    assert!(took < LIMIT, "took {took:?}");
}

// ---------------------------------------------------------------------------
// Fair service (issue 13, point 3): each on a server of its own, beside the
// suites, with the healthy client timed throughout.

/// Clients that push echoes and never read.
const PUSHERS: usize = 200;
/// The body each pushed echo carries (above the 8 KiB compression
/// threshold: the server compresses every answer).
const PUSHED_BODY: usize = 500_000;
/// How long the healthy client is timed under the load.
const FAIR_MEASURE: Duration = Duration::from_secs(8);

/// 200 clients pipeline 500 KB echoes (half compressible to a few hundred
/// bytes, half letters that deflate to about 60 %) and never read, while
/// the healthy client is timed: its p99 must stay under the bound, its
/// every echo under the suite's.
#[test]
fn fair_service_200_pushers_never_reading() {
    let server = ServerProc::start("postcard");
    let env = Env {
        addr: server.addr,
        codec: server.codec,
        pid: server.pid(),
    };
    let probe = env.raw();
    let frames: [std::sync::Arc<Vec<u8>>; 2] = [
        std::sync::Arc::new(frame(
            ECHO_ID,
            0,
            &probe.enc("a".repeat(PUSHED_BODY).as_str()),
        )),
        std::sync::Arc::new(frame(
            ECHO_ID,
            0,
            &probe.enc(text(PUSHED_BODY, 77).as_str()),
        )),
    ];
    drop(probe);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Every pusher through its handshake first, then all push at once.
    let connected: Vec<Raw> = (0..PUSHERS).map(|_| env.active()).collect();
    let go = std::sync::Arc::new(std::sync::Barrier::new(PUSHERS + 1));
    let deadline = Instant::now() + 4 * LIMIT;
    let mut pushers = Vec::new();
    for (i, mut r) in connected.into_iter().enumerate() {
        let shut = r.stream.try_clone().expect("a clone of the socket");
        let f = std::sync::Arc::clone(&frames[i % 2]);
        let stop = std::sync::Arc::clone(&stop);
        let go = std::sync::Arc::clone(&go);
        let t = thread::spawn(move || {
            go.wait();
            let mut pushed = 0u64;
            // Bounded in count and time; a shutdown from the test ends a
            // blocked write.
            while pushed < 10_000
                && !stop.load(std::sync::atomic::Ordering::SeqCst)
                && Instant::now() < deadline
            {
                if r.stream.write_all(&f).is_err() {
                    break;
                }
                pushed += 1;
            }
            pushed
        });
        pushers.push((shut, t));
    }
    // The healthy client is connected and echoing, then the load starts
    // and the echoes from then on are timed.
    let good = GoodClient::start(env.addr);
    assert!(good.wait_echoes(20), "the healthy client did not get going");
    let before_load = good.echoes() as usize;
    go.wait();
    let pushing = Instant::now();
    thread::sleep(FAIR_MEASURE);
    let stopped_early = good.stopped();
    let stats = good.finish();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut pushed = 0;
    for (shut, t) in pushers {
        let _ = shut.shutdown(std::net::Shutdown::Both);
        pushed += t.join().expect("a pusher");
    }
    let load = pushing.elapsed();
    let mut stats = match stats {
        Ok(stats) => stats,
        Err(e) => panic!(
            "the healthy client: {e}\nserver stderr (its end):\n{}",
            tail(&server.stderr(), 4000)
        ),
    };
    // Only the echoes under the load.
    stats.rtts.drain(..before_load.min(stats.rtts.len()));
    stats.echoes = stats.rtts.len() as u64;
    stats.max_rtt = stats.rtts.iter().copied().max().unwrap_or_default();
    let (p50, p99) = (stats.percentile(50), stats.percentile(99));
    eprintln!(
        "fair service: {PUSHERS} clients pushed {pushed} echoes of {PUSHED_BODY} bytes \
         in {:.1} s (about {} each); healthy client: {} echoes in {FAIR_MEASURE:?}, \
         p50 {:.1} ms, p99 {:.1} ms, slowest {:.1} ms (p99 bound {HEALTHY_P99_BOUND:?})",
        load.as_secs_f64(),
        pushed / PUSHERS as u64,
        stats.echoes,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        stats.max_rtt.as_secs_f64() * 1e3
    );
    assert!(
        !stopped_early && stats.echoes > 0,
        "the healthy client stopped"
    );
    assert!(
        p99 < HEALTHY_P99_BOUND,
        "healthy client p99 {p99:?} under {PUSHERS} pushers (bound {HEALTHY_P99_BOUND:?})"
    );
    assert!(
        stats.max_rtt < GOOD_RTT_BOUND,
        "an echo took {:?} (bound {GOOD_RTT_BOUND:?})",
        stats.max_rtt
    );
    server.finish().expect("the server still runs");
}

/// The write stall of the trickle case's server.
const TRICKLE_STALL: Duration = Duration::from_secs(3);

/// A client fills its write queue past the read-pause mark with echoes,
/// then reads 64 KiB a second: the server drops it (a reset, no
/// `closeconn`) about the write-stall time after its queue last drained,
/// though it takes bytes every second (the server's keepalive timer has it
/// write them); the healthy client is timed beside.
#[test]
fn trickle_reader_dropped_after_write_stall() {
    // A keepalive every second has the server look at the client (and
    // write what the kernel took since) once a second: each 64 KiB read is
    // write progress then.
    let stall = format!("{}", TRICKLE_STALL.as_secs());
    let server = ServerProc::start_with("postcard", &["--write-stall", &stall, "--keepalive", "1"]);
    let env = Env {
        addr: server.addr,
        codec: server.codec,
        pid: server.pid(),
    };
    let good = GoodClient::start(env.addr);
    assert!(good.wait_echoes(20), "the healthy client did not get going");
    let mut r = env.active();
    // Letters deflate to about 60 %: each answer is about 300 KB queued.
    let f = frame(ECHO_ID, 0, &r.enc(text(PUSHED_BODY, 5).as_str()));
    let (written, last_progress) =
        push_until_refused(&mut r.stream, &f, Duration::from_millis(500));
    r.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Trickle: 64 KiB a second, until the server drops it (bounded).
    let trickle_from = Instant::now();
    let mut read = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = 'trickle: loop {
        assert!(
            trickle_from.elapsed() < TRICKLE_STALL + LIMIT,
            "still connected {:?} into the trickle ({read} bytes read)",
            trickle_from.elapsed()
        );
        let mut got = 0;
        let round = Instant::now();
        while got < buf.len() && round.elapsed() < Duration::from_secs(1) {
            match r.stream.read(&mut buf[got..]) {
                Ok(0) => break 'trickle Ok(()),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => break 'trickle Err(e),
            }
        }
        read += got;
        if let Ok(Some(e)) = r.stream.take_error() {
            break Err(e);
        }
        thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
    };
    let took = last_progress.elapsed();
    eprintln!(
        "trickle reader: wrote {written} bytes ({} echoes), read {read} bytes in {:.1} s of \
         trickle, dropped {:.1} s after the server stopped taking its echoes ({ended:?})",
        written / f.len(),
        trickle_from.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        read >= 64 * 1024,
        "it read only {read} bytes before the drop"
    );
    assert!(
        matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "not reset: {ended:?}"
    );
    assert!(
        took < TRICKLE_STALL + Duration::from_secs(5),
        "dropped {took:?} after the stall began (write stall {TRICKLE_STALL:?})"
    );
    let stats = good.finish().expect("the healthy client saw no error");
    assert!(
        stats.max_rtt < GOOD_RTT_BOUND,
        "an echo took {:?} (bound {GOOD_RTT_BOUND:?})",
        stats.max_rtt
    );
    server.finish().expect("the server still runs");
}

// ---------------------------------------------------------------------------
// The server's admission bounds, its timers, and CPU load (issue 13, points
// 2, 5 and 8): each on a server of its own with the options it needs, the
// healthy client connected first and timed throughout the load. The cases
// of the program's admission and timer options came here from
// `admission.rs` and `timers.rs` with their assertions, and gained the
// healthy client (and, for `--max-per-ip`, a second loopback address).

/// The hostile peers' own loopback address, so that `--max-per-ip` does not
/// count the healthy client (on 127.0.0.1) among theirs.
const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The fewest echoes the healthy client is timed over in each case.
const UNDER_LOAD: u64 = 100;

/// A server of its own and the healthy client on it, echoing.
struct Loaded {
    server: ServerProc,
    env: Env,
    good: GoodClient,
}

/// `peng3dnet serve --codec postcard EXTRA...` and a plain healthy client.
fn loaded(extra: &[&str]) -> Loaded {
    loaded_with(extra, ClientOptions::default())
}

/// [`loaded`] with the healthy client's options (TLS).
fn loaded_with(extra: &[&str], options: ClientOptions) -> Loaded {
    let server = ServerProc::start_with("postcard", extra);
    let env = Env {
        addr: server.addr,
        codec: server.codec,
        pid: server.pid(),
    };
    let good = GoodClient::start_with(env.addr, options);
    if !good.wait_echoes(20) {
        panic!(
            "the healthy client did not get going: {:?}\nserver stderr:\n{}",
            good.finish().map(|s| s.summary()),
            tail(&server.stderr(), 4000)
        );
    }
    Loaded { server, env, good }
}

impl Loaded {
    /// The healthy client's echoes so far: where the load begins.
    fn mark(&self) -> u64 {
        self.good.echoes()
    }

    /// Waits (bounded) until the healthy client has done [`UNDER_LOAD`]
    /// echoes since `from`: a load that a case holds is timed over that many
    /// echoes at least, and one that is over (a burst) its aftermath.
    fn settle(&self, from: u64) {
        assert!(
            self.good.wait_echoes(from + UNDER_LOAD),
            "the healthy client did {} echoes under the load, not {UNDER_LOAD}",
            self.good.echoes().saturating_sub(from)
        );
    }

    /// Stops the healthy client and checks what it saw from echo `from` on
    /// (the load): no error, some echoes, the p99 under
    /// [`HEALTHY_P99_BOUND`] and every echo under [`GOOD_RTT_BOUND`]; then
    /// that the server still runs. Prints the figures under `case`.
    fn finish(self, case: &str, from: u64) -> GoodStats {
        let stats = match self.good.finish() {
            Ok(stats) => stats.since(from),
            Err(e) => panic!(
                "[{case}] the healthy client: {e}\nserver stderr (its end):\n{}",
                tail(&self.server.stderr(), 4000)
            ),
        };
        eprintln!(
            "[{case}] healthy client under the load: {} (bounds: p99 {HEALTHY_P99_BOUND:?}, \
             each {GOOD_RTT_BOUND:?})",
            stats.summary()
        );
        assert!(stats.echoes > 0, "[{case}] no echo under the load");
        let p99 = stats.percentile(99);
        assert!(
            p99 < HEALTHY_P99_BOUND,
            "[{case}] healthy client p99 {p99:?} (bound {HEALTHY_P99_BOUND:?})"
        );
        assert!(
            stats.max_rtt < GOOD_RTT_BOUND,
            "[{case}] an echo took {:?} (bound {GOOD_RTT_BOUND:?})",
            stats.max_rtt
        );
        self.server.finish().expect("the server still runs");
        stats
    }
}

/// The reason of a `closeconn` that is the first frame `peer` gets (its
/// body, lossily as text), or `None` if the first frame is another
/// (`hello`: accepted, and read).
fn refused_with(peer: &mut Raw) -> Option<String> {
    match peer.read_frame(Instant::now() + LIMIT) {
        Arrival::Frame(internal::CLOSECONN, _, body) => {
            Some(String::from_utf8_lossy(&body).into_owned())
        }
        Arrival::Frame(..) => None,
        other => panic!("no first frame: {other:?}"),
    }
}

/// A raw peer from [`OTHER_ADDRESS`].
fn raw_from_other(env: &Env) -> Raw {
    Raw::from_stream(connect_from(OTHER_ADDRESS, env.addr), env.codec, LIMIT)
}

#[test]
fn the_program_closes_a_silent_client_with_idletimeout() {
    let l = loaded(&["--idle-timeout", "0.3"]);
    let from = l.mark();
    let mut peer = l.env.raw();
    peer.handshake();
    assert_eq!(peer.ending(), Ending::closed("idletimeout"));
    // The healthy client, never idle for 0.3 s, was not closed.
    l.settle(from);
    l.finish("idle timeout", from);
}

#[test]
fn the_program_closes_a_frame_that_never_completes_with_frametimeout() {
    let l = loaded(&["--frame-timeout", "0.3"]);
    let from = l.mark();
    let mut peer = l.env.raw();
    peer.handshake();
    // A length prefix promising 100 bytes, and 2 of them.
    peer.write(&[0, 0, 0, 100, 0, 0]);
    assert_eq!(peer.ending(), Ending::closed("frametimeout"));
    l.settle(from);
    // The healthy client's frames, each complete at once, were not cut.
    l.finish("frame timeout", from);
}

/// Silent connections after their handshake.
const SILENT: usize = 200;
/// The idle timeout of their server, in seconds.
const SILENT_IDLE_SECS: f64 = 2.0;
/// What a silent connection may cost the server at most: `DESIGN.md`'s
/// 1 KiB for an idle connection, and room for the allocator's rounding.
const SILENT_BOUND_KIB: u64 = 16;

/// 200 connections complete their handshake and go silent, filling
/// `--max-clients` (the healthy client holds the one slot more): a
/// newcomer is refused `serverfull` until `--idle-timeout` closes them,
/// then gets in and is served; the healthy client is timed throughout.
#[test]
fn silent_200_fill_the_server_until_the_idle_timeout() {
    let max = format!("{}", SILENT + 1);
    let idle = format!("{SILENT_IDLE_SECS}");
    let l = loaded(&["--max-clients", &max, "--idle-timeout", &idle]);
    let from = l.mark();
    let rss_before = rss_kib(l.env.pid);
    let filling = Instant::now();
    let mut silent: Vec<Raw> = (0..SILENT).map(|_| l.env.active()).collect();
    let filled = filling.elapsed();
    let rss_held = rss_kib(l.env.pid);
    let per = rss_held.saturating_sub(rss_before) * 1024 / SILENT as u64;
    // Full: a newcomer is refused.
    let mut newcomer = l.env.raw();
    let reason = refused_with(&mut newcomer).expect("a newcomer is refused while full");
    assert!(reason.contains("serverfull"), "{reason:?}");
    // The idle timeout closes every silent one, none before its time.
    for (i, r) in silent.iter_mut().enumerate() {
        assert_eq!(r.ending(), Ending::closed("idletimeout"), "silent {i}");
        if i == 0 {
            assert!(
                filling.elapsed().as_secs_f64() >= SILENT_IDLE_SECS,
                "closed {:?} after it went silent (idle timeout {SILENT_IDLE_SECS} s)",
                filling.elapsed()
            );
        }
    }
    let freed = filling.elapsed();
    // Their slots are free: a newcomer gets in (the server may not have
    // finished them all yet: a few tries) and is served.
    let mut admitted = None;
    for _ in 0..50 {
        let mut r = l.env.raw();
        if refused_with(&mut r).is_none() {
            admitted = Some(r);
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut r = admitted.expect("a slot came free after the idle timeout");
    r.handshake_rest();
    r.echo("after the idle timeout");
    eprintln!(
        "{SILENT} silent connections at --max-clients {max}: handshakes in {:.2} s, server \
         RSS {rss_before} KiB -> {rss_held} KiB, {per} B each (bound {SILENT_BOUND_KIB} \
         KiB); a newcomer refused serverfull; all closed idletimeout {:.2} s after the first \
         connected (idle timeout {SILENT_IDLE_SECS} s), then a newcomer served",
        filled.as_secs_f64(),
        freed.as_secs_f64()
    );
    assert!(
        per <= SILENT_BOUND_KIB * 1024,
        "each silent connection costs {per} B (bound {SILENT_BOUND_KIB} KiB)"
    );
    l.finish("200 silent at max-clients", from);
}

/// Most clients from one address in the next case.
const PER_ADDRESS: usize = 50;

/// The same 200 silent connections from one address, at `--max-per-ip 50`:
/// they get 50 of the 201 slots and the other 150 are refused
/// `toomanyconnections`; clients from another address get in at once.
#[test]
fn one_address_cannot_fill_the_server() {
    let max = format!("{}", SILENT + 1);
    let per_ip = format!("{PER_ADDRESS}");
    let l = loaded(&["--max-clients", &max, "--max-per-ip", &per_ip]);
    let from = l.mark();
    let (mut held, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..SILENT {
        let mut r = raw_from_other(&l.env);
        match refused_with(&mut r) {
            None => {
                r.handshake_rest();
                held.push(r);
            }
            Some(reason) => refused.push(reason),
        }
    }
    assert_eq!(held.len(), PER_ADDRESS, "admitted from {OTHER_ADDRESS}");
    assert_eq!(refused.len(), SILENT - PER_ADDRESS);
    assert!(
        refused.iter().all(|r| r.contains("toomanyconnections")),
        "{refused:?}"
    );
    // From 127.0.0.1 (the healthy client's address too): in at once.
    let mut newcomer = l.env.active();
    newcomer.echo("from another address");
    l.settle(from);
    drop(held);
    l.finish("200 from one address at max-per-ip 50", from);
}

#[test]
fn the_program_refuses_a_third_client_from_one_address() {
    let l = loaded(&["--max-per-ip", "2"]);
    let from = l.mark();
    // From an address of their own: the healthy client is not one of the
    // two.
    let mut a = raw_from_other(&l.env);
    a.handshake();
    let mut b = raw_from_other(&l.env);
    b.handshake();
    let mut c = raw_from_other(&l.env);
    let reason = refused_with(&mut c).expect("the third is refused");
    assert!(reason.contains("toomanyconnections"), "{reason:?}");
    // One leaves: the next from that address gets in.
    a.send_closeconn("userrequest");
    assert_eq!(a.ending(), Ending::Ended);
    let mut admitted = false;
    for _ in 0..50 {
        let mut d = raw_from_other(&l.env);
        if refused_with(&mut d).is_none() {
            admitted = true;
            break;
        }
        // The server may not have seen `a` go yet.
        thread::sleep(Duration::from_millis(20));
    }
    assert!(admitted, "a slot of that address came free");
    l.settle(from);
    l.finish("max-per-ip 2", from);
}

/// Connects `n` plain TCP sockets at once to `addr` and sorts them: those
/// that got a `closeconn` first (its body) and those that got anything else
/// or nothing within `wait` (accepted: a TLS server sends nothing first).
fn burst(addr: SocketAddr, n: usize, wait: Duration) -> (Vec<String>, usize) {
    let sockets: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect_timeout(&addr, LIMIT).expect("connect"))
        .collect();
    let (mut refused, mut other) = (Vec::new(), 0);
    for s in sockets {
        let mut peer = Raw::from_stream(s, AnyCodec::default(), LIMIT);
        match peer.read_frame(Instant::now() + wait) {
            Arrival::Frame(internal::CLOSECONN, _, body) => {
                refused.push(String::from_utf8_lossy(&body).into_owned())
            }
            _ => other += 1,
        }
    }
    (refused, other)
}

/// Longer than a token bucket of the accept rate takes to refill after the
/// healthy client took one of its tokens.
const REFILL: Duration = Duration::from_millis(1_200);

#[test]
fn the_program_bounds_new_clients_a_second() {
    let l = loaded(&["--max-accepts-per-sec", "3"]);
    thread::sleep(REFILL);
    let from = l.mark();
    // 12 at once: the burst of 3 (and perhaps one or two refilled while
    // they connect) get `hello`, the rest `serverbusy`.
    let (refused, accepted) = burst(l.env.addr, 12, LIMIT);
    assert!((3..=6).contains(&accepted), "{accepted} accepted");
    assert_eq!(refused.len(), 12 - accepted);
    assert!(
        refused.iter().all(|r| r.contains("serverbusy")),
        "{refused:?}"
    );
    l.settle(from);
    l.finish("max-accepts-per-sec 3", from);
}

#[test]
fn tls_handshakes_started_a_second_are_bounded_too() {
    let files = TlsFiles::new("accept-rate");
    let tls = files.serve_args();
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend(["--max-accepts-per-sec", "2"]);
    let l = loaded_with(&args, files.client_options());
    thread::sleep(REFILL);
    let from = l.mark();
    // Refused before any TLS is set up: a plain `closeconn`; the accepted
    // wait for a ClientHello and send nothing.
    let (refused, accepted) = burst(l.env.addr, 10, Duration::from_millis(300));
    assert!((2..=4).contains(&accepted), "{accepted} accepted");
    assert!(refused.len() >= 6, "{refused:?}");
    assert!(
        refused.iter().all(|r| r.contains("serverbusy")),
        "{refused:?}"
    );
    l.settle(from);
    l.finish("TLS, max-accepts-per-sec 2", from);
}

/// The ClientHello (one TLS record) that a client of `options` sends to a
/// server: captured on a listener of the test's own, which then hangs up.
fn captured_client_hello(options: ClientOptions) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let addr = listener.local_addr().expect("its address");
    let client = thread::spawn(move || {
        // It fails once the listener hangs up: only its first record counts.
        if let Ok(mut c) = Client::connect(addr, echo::registry(), options) {
            let _ = c.wait_connected(LIMIT);
        }
    });
    let (mut s, _) = listener.accept().expect("the client connects");
    s.set_read_timeout(Some(LIMIT)).expect("a read timeout");
    let mut record = vec![0u8; 5];
    s.read_exact(&mut record).expect("a TLS record header");
    assert_eq!(record[0], 0x16, "a handshake record: {record:?}");
    let len = u16::from_be_bytes([record[3], record[4]]) as usize;
    record.resize(5 + len, 0);
    s.read_exact(&mut record[5..]).expect("the ClientHello");
    assert_eq!(record[5], 1, "a ClientHello");
    drop(s);
    client.join().expect("the capturing client");
    record
}

/// Replayed ClientHellos, and the time they are sent over.
const HELLOS: usize = 3000;
const HELLO_SPAN: Duration = Duration::from_millis(1_500);
/// The accept rate of their server.
const HELLO_RATE: u32 = 20;

/// 3,000 connections each replay one captured ClientHello (and read
/// nothing) within 1.5 s, at a TLS server with `--max-accepts-per-sec 20`:
/// the server starts at most about 20 TLS handshakes a second and refuses
/// the rest with a plain `closeconn serverbusy`; a healthy TLS client
/// connected before is timed throughout, and a new one gets in after.
#[test]
fn replayed_tls_client_hellos_at_an_accept_rate() {
    let files = TlsFiles::new("hellos");
    let hello = captured_client_hello(files.client_options());
    let tls = files.serve_args();
    let rate = format!("{HELLO_RATE}");
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend(["--max-accepts-per-sec", &rate]);
    let l = loaded_with(&args, files.client_options());
    let from = l.mark();
    let t = Instant::now();
    let mut sockets = Vec::with_capacity(HELLOS);
    for i in 0..HELLOS {
        let due = HELLO_SPAN.mul_f64(i as f64 / HELLOS as f64);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            thread::sleep(wait);
        }
        let mut s = TcpStream::connect_timeout(&l.env.addr, LIMIT).expect("connect");
        // A refused one may be closed already.
        let _ = s.write_all(&hello);
        sockets.push(s);
    }
    let sent = t.elapsed();
    // Let the server answer what it took, then see who got a TLS answer
    // (a handshake record) and who a `closeconn` (a length prefix).
    thread::sleep(Duration::from_millis(500));
    let (mut tls_answers, mut refused, mut other) = (0u32, 0u32, 0u32);
    for s in &mut sockets {
        s.set_nonblocking(true).expect("non-blocking");
        let mut first = [0u8; 1];
        match s.read(&mut first) {
            Ok(1) if first[0] == 0x16 => tls_answers += 1,
            Ok(1) if first[0] == 0 => refused += 1,
            _ => other += 1,
        }
    }
    let took = t.elapsed();
    drop(sockets);
    // At most the rate over the whole time, plus the burst, plus the one
    // second the healthy client's token took to come back.
    let allowed = HELLO_RATE * (took.as_secs() as u32 + 3);
    eprintln!(
        "{HELLOS} replayed ClientHellos sent in {:.2} s at --max-accepts-per-sec \
         {HELLO_RATE}: {tls_answers} TLS handshakes answered (bound {allowed}), {refused} \
         refused with a closeconn, {other} neither (reset, or not yet read)",
        sent.as_secs_f64()
    );
    assert!(tls_answers >= 1, "no replayed ClientHello was answered");
    assert!(
        tls_answers <= allowed,
        "{tls_answers} TLS handshakes started in {took:?} (bound {allowed})"
    );
    assert!(refused >= 1, "none was refused");
    // A new TLS client gets in once the burst is over (a token may take
    // 1/20 s to come back).
    let mut joined = false;
    for _ in 0..50 {
        let mut c =
            Client::connect(l.env.addr, echo::registry(), files.client_options()).expect("connect");
        if c.wait_connected(LIMIT).is_ok() {
            joined = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(joined, "no new TLS client got in after the burst");
    l.finish("3000 replayed ClientHellos, accept rate 20", from);
}

/// Clients that send compressed echoes inflating to [`INFLATED_BODY`].
const INFLATERS: usize = 2;
/// How long they send.
const INFLATE_MEASURE: Duration = Duration::from_secs(5);

/// Two clients each send, as fast as the server takes them, compressed
/// echoes of about 1 KB that inflate to 1 MB (and read their answers): the
/// server inflates, decodes, encodes and compresses a megabyte for each;
/// the healthy client is timed throughout.
#[test]
fn two_clients_send_1_kb_frames_inflating_to_1_mb() {
    let l = loaded(&[]);
    let probe = "x".repeat(INFLATED_BODY);
    let overhead = l.env.raw().enc(probe.as_str()).len() - probe.len();
    let message = "a".repeat(INFLATED_BODY - overhead);
    let body = l.env.raw().enc(message.as_str());
    assert_eq!(body.len(), INFLATED_BODY);
    let compressed = zlib(&body, 9);
    assert!(compressed.len() < 2048, "{} bytes", compressed.len());
    let wire = std::sync::Arc::new(frame(ECHO_ID, 1, &compressed));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deadline = Instant::now() + INFLATE_MEASURE + LIMIT;
    let from = l.mark();
    let started = Instant::now();
    let mut inflaters = Vec::new();
    for _ in 0..INFLATERS {
        let r = l.env.active();
        let mut reader = r.stream.try_clone().expect("a clone of the socket");
        let shut = r.stream.try_clone().expect("a clone of the socket");
        let (wire, stop) = (std::sync::Arc::clone(&wire), std::sync::Arc::clone(&stop));
        let mut writer = r.stream;
        let sends = thread::spawn(move || {
            let mut sent = 0u64;
            while sent < 100_000
                && !stop.load(std::sync::atomic::Ordering::SeqCst)
                && Instant::now() < deadline
            {
                if writer.write_all(&wire).is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        // Reads whole frames, by their length prefix, until the end.
        let reads = thread::spawn(move || {
            let (mut answered, mut buf) = (0u64, Vec::new());
            while answered < 100_000 && Instant::now() < deadline {
                let mut len = [0u8; 4];
                if reader.read_exact(&mut len).is_err() {
                    break;
                }
                buf.resize(u32::from_be_bytes(len) as usize, 0);
                if reader.read_exact(&mut buf).is_err() {
                    break;
                }
                answered += 1;
            }
            answered
        });
        inflaters.push((shut, sends, reads));
    }
    thread::sleep(INFLATE_MEASURE);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut report = Vec::new();
    for (shut, sends, reads) in inflaters {
        let _ = shut.shutdown(Shutdown::Both);
        report.push((
            sends.join().expect("a sender"),
            reads.join().expect("a reader"),
        ));
    }
    let load = started.elapsed();
    eprintln!(
        "{INFLATERS} clients sent {}-byte frames inflating to {INFLATED_BODY} bytes for \
         {:.1} s: (sent, answered) {report:?}",
        wire.len(),
        load.as_secs_f64()
    );
    assert!(
        report.iter().all(|&(_, answered)| answered > 0),
        "an inflating client was not served: {report:?}"
    );
    l.finish("2 clients inflating 1 KB to 1 MB", from);
}

/// The last `n` bytes (or so) of `text`.
fn tail(text: &str, n: usize) -> &str {
    let mut from = text.len().saturating_sub(n);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}
