//! Rust versus the Python reference (`peng3dnet==0.1.3a0`) on the same
//! machine in the same run: sequential echo round trips and pipelined
//! bursts, each pair's medians, and the ratios.
//!
//! - Rust pair: [`peng3dnet_std::echo::server_with_codec`] on a thread of
//!   this process, [`peng3dnet_std::client::Client`] on the main thread;
//!   MessagePack (the reference's codec, for fairness) and postcard.
//! - Python pair: `tests/python/peer.py serve` and `peer.py bench` (two
//!   processes; the client measures itself and prints JSON).
//! - Mixed pairs (for where the time goes): `peer.py bench` against the
//!   Rust server, the Rust client against `peer.py serve`.
//!
//! Every pair sends `echo:echo` with the same 32-character string (44-byte
//! frames) over 127.0.0.1. Round trips: blocks of sequential send-and-wait,
//! the median block. Bursts: send K without waiting, then wait for the K
//! answers, each bounded. A last burst of 1,000 uses 20-character strings:
//! 31-byte frames, and 1,024 = 33 x 31 + 1, so the reference's 1,024-byte
//! reads end one byte into a length prefix, where its receive loop spins
//! forever (docs/PROTOCOL.md): the Python pair hangs on it every time,
//! while 44-byte frames happen not to hit that case with full reads.
//!
//! `cargo bench -p peng3dnet-std --bench python_compare` (about 30 s, most
//! of it the bounded waits on hung Python peers; the Python venv comes from
//! `tests/python/setup.sh`, as for the tests).
//! Threads are not pinned: the Python peers run several threads each.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Proc;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::Closed;
use peng3dnet_std::client::{Client, ClientError, ClientEvent, ClientOptions};
use peng3dnet_std::codec::AnyCodec;
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{RunningServer, ServerOptions};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TEXT_LEN: usize = 32;
/// The last burst's strings: 20 characters make 31-byte frames, and
/// 1,024 = 33 x 31 + 1, so the reference's 1,024-byte reads end one byte
/// into a length prefix, where its receive loop spins forever.
const ODD_TEXT_LEN: usize = 20;
const ROUNDS: usize = 5;
/// Round trips per block: Rust, Python (slower, so fewer).
const RUST_N: usize = 2_000;
const PY_N: usize = 500;
const SMALL_BURST: usize = 100;
const BIG_BURST: usize = 1_000;
/// Bound of one burst: the Python pair, the mixed pairs.
const PY_BURST_LIMIT: Duration = Duration::from_secs(10);
const MIXED_BURST_LIMIT: Duration = Duration::from_secs(5);
const RUST_BURST_LIMIT: Duration = Duration::from_secs(10);

/// One pipelined burst.
#[derive(Clone, Copy, Debug)]
struct Burst {
    k: usize,
    text_len: usize,
    answered: usize,
    secs: f64,
}

impl Burst {
    fn complete(&self) -> bool {
        self.answered == self.k
    }

    fn describe(&self) -> String {
        if self.complete() {
            format!("{:.0} msg/s", self.k as f64 / self.secs)
        } else {
            format!(
                "hung after {:.1} s, {} of {} answers",
                self.secs, self.answered, self.k
            )
        }
    }
}

/// What one pair measured.
struct Pair {
    name: String,
    /// Seconds per block of `n` round trips.
    blocks: Vec<f64>,
    n: usize,
    small: Vec<Burst>,
    big: Option<Burst>,
    /// A burst of `BIG_BURST` with `ODD_TEXT_LEN`-character strings.
    odd: Option<Burst>,
}

impl Pair {
    fn rtt_us(&self) -> Option<f64> {
        median(&self.blocks).map(|b| b / self.n as f64 * 1e6)
    }

    fn rtt_per_s(&self) -> Option<f64> {
        self.rtt_us().map(|us| 1e6 / us)
    }

    /// Median messages per second of the complete small bursts.
    fn small_rate(&self) -> Option<f64> {
        if self.small.is_empty() || self.small.iter().any(|b| !b.complete()) {
            return None;
        }
        let rates: Vec<f64> = self.small.iter().map(|b| b.k as f64 / b.secs).collect();
        median(&rates)
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(s[s.len() / 2])
}

// ------------------------------------------------------------------ Rust

fn rust_server(codec: AnyCodec) -> (SocketAddr, RunningServer<AnyCodec>) {
    let server = echo::server_with_codec(codec, echo::registry(), ServerOptions::default())
        .bind("127.0.0.1:0")
        .expect("bind the Rust server");
    let addr = server.local_addr();
    (addr, server.spawn().expect("spawn the Rust server"))
}

fn stop(running: RunningServer<AnyCodec>) {
    running.handle().shutdown();
    let _ = running.join();
}

fn rust_client(addr: SocketAddr) -> Client<AnyCodec> {
    let mut c = Client::connect_with(
        addr,
        echo::registry(),
        AnyCodec::default(),
        ClientOptions::default(),
    )
    .expect("connect");
    c.wait_connected(Duration::from_secs(10))
        .expect("handshake");
    // Take the Connected event: only echo answers are expected from here on.
    let _ = c.recv(Duration::from_secs(1));
    c
}

/// Waits for one `echo:echo` answer before `deadline`; false on a timeout.
fn rust_answer(c: &mut Client<AnyCodec>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left) {
            Ok(ClientEvent::Packet(p)) if p.is::<Echo>() => return true,
            Ok(ClientEvent::Closed(Closed { reason, .. })) => panic!("closed: {reason}"),
            Ok(_) => {}
            Err(ClientError::Timeout) => return false,
            Err(e) => panic!("client: {e}"),
        }
    }
}

fn rust_round_trips(c: &mut Client<AnyCodec>, n: usize) -> f64 {
    let msg = "x".repeat(TEXT_LEN);
    let start = Instant::now();
    for _ in 0..n {
        c.send::<Echo>(&msg.as_str()).expect("send");
        assert!(
            rust_answer(c, Instant::now() + Duration::from_secs(10)),
            "no answer within 10 s"
        );
    }
    start.elapsed().as_secs_f64()
}

fn rust_burst(c: &mut Client<AnyCodec>, k: usize, text_len: usize, limit: Duration) -> Burst {
    let msg = "x".repeat(text_len);
    let start = Instant::now();
    let deadline = start + limit;
    for _ in 0..k {
        c.send::<Echo>(&msg.as_str()).expect("send");
    }
    let mut answered = 0;
    while answered < k && rust_answer(c, deadline) {
        answered += 1;
    }
    Burst {
        k,
        text_len,
        answered,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// The Rust client against `addr`: blocks of round trips, small bursts and
/// one big burst (skipped after an incomplete burst).
fn measure_rust_client(
    name: &str,
    addr: SocketAddr,
    expect_codec: &str,
    n: usize,
    limit: Duration,
) -> Pair {
    let mut c = rust_client(addr);
    rust_round_trips(&mut c, n / 10); // warm-up
    let blocks = (0..ROUNDS).map(|_| rust_round_trips(&mut c, n)).collect();
    let mut small = Vec::new();
    for _ in 0..3 {
        let b = rust_burst(&mut c, SMALL_BURST, TEXT_LEN, limit);
        small.push(b);
        if !b.complete() {
            break;
        }
    }
    let big = small
        .iter()
        .all(Burst::complete)
        .then(|| rust_burst(&mut c, BIG_BURST, TEXT_LEN, limit));
    let odd = big
        .filter(Burst::complete)
        .map(|_| rust_burst(&mut c, BIG_BURST, ODD_TEXT_LEN, limit));
    assert_eq!(
        c.codec().name(),
        expect_codec,
        "the codec the server's hello chose"
    );
    if odd.is_some_and(|b| b.complete()) {
        let _ = c.close(peng3dnet_core::CloseReason::UserRequest);
    }
    Pair {
        name: name.into(),
        blocks,
        n,
        small,
        big,
        odd,
    }
}

// ---------------------------------------------------------------- Python

/// `peer.py bench` against `port`; its JSON.
fn python_bench(port: u16, limit: Duration) -> Value {
    let port = port.to_string();
    let (rounds, n, small, big, limit, text_len, odd_len) = (
        ROUNDS.to_string(),
        PY_N.to_string(),
        SMALL_BURST.to_string(),
        BIG_BURST.to_string(),
        format!("{}", limit.as_secs_f64()),
        TEXT_LEN.to_string(),
        ODD_TEXT_LEN.to_string(),
    );
    let mut args = vec![
        "bench",
        "--port",
        &port,
        "--rounds",
        &rounds,
        "--n",
        &n,
        "--text-len",
        &text_len,
        "--last-burst",
        &big,
        "--last-text-len",
        &odd_len,
        "--burst-timeout",
        &limit,
        "--timeout",
        "20",
    ];
    for _ in 0..3 {
        args.extend_from_slice(&["--burst", &small]);
    }
    args.extend_from_slice(&["--burst", &big]);
    let mut p = Proc::python(&args);
    let lines = p.success();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from peer.py bench: {lines:?}"));
    serde_json::from_str(line).expect("peer.py bench prints JSON")
}

fn pair_from_json(name: &str, v: &Value) -> Pair {
    let blocks = v["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let bursts: Vec<Burst> = v["bursts"]
        .as_array()
        .expect("bursts")
        .iter()
        .map(|b| Burst {
            k: b["k"].as_u64().unwrap_or(0) as usize,
            text_len: b["text_len"].as_u64().unwrap_or(0) as usize,
            answered: b["answered"].as_u64().unwrap_or(0) as usize,
            secs: b["secs"].as_f64().unwrap_or(0.0),
        })
        .collect();
    let small = bursts
        .iter()
        .copied()
        .filter(|b| b.k == SMALL_BURST && b.text_len == TEXT_LEN)
        .collect();
    let big = bursts
        .iter()
        .copied()
        .find(|b| b.k == BIG_BURST && b.text_len == TEXT_LEN);
    let odd = bursts
        .iter()
        .copied()
        .find(|b| b.k == BIG_BURST && b.text_len == ODD_TEXT_LEN);
    Pair {
        name: name.into(),
        blocks,
        n: v["n"].as_u64().unwrap_or(PY_N as u64) as usize,
        small,
        big,
        odd,
    }
}

// ------------------------------------------------------------------ main

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}x", a / b),
        _ => "n/a".into(),
    }
}

fn main() {
    let started = Instant::now();
    let py = common::python();
    eprintln!("python_compare: Python peer {}", py.display());
    let mut pairs = Vec::new();

    // (a) Rust server + Rust client, both codecs.
    for codec in [AnyCodec::MsgPack, AnyCodec::Postcard] {
        let (addr, running) = rust_server(codec);
        let pair = measure_rust_client(
            &format!("Rust server + Rust client ({})", codec.name()),
            addr,
            codec.name(),
            RUST_N,
            RUST_BURST_LIMIT,
        );
        stop(running);
        pairs.push(pair);
    }

    // (b) Python server + Python client.
    {
        let (server, port) = Proc::python_server(&[]);
        let v = python_bench(port, PY_BURST_LIMIT);
        drop(server); // a hung reference server spins at 100% CPU: kill it now
        pairs.push(pair_from_json("Python server + Python client", &v));
    }

    // Mixed pairs.
    {
        let (addr, running) = rust_server(AnyCodec::MsgPack);
        let v = python_bench(addr.port(), MIXED_BURST_LIMIT);
        stop(running);
        pairs.push(pair_from_json("Rust server + Python client", &v));
    }
    {
        let (server, port) = Proc::python_server(&[]);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pair = measure_rust_client(
            "Python server + Rust client",
            addr,
            "msgpack",
            PY_N,
            MIXED_BURST_LIMIT,
        );
        drop(server);
        pairs.push(pair);
    }

    // Frame bytes in MessagePack: prefix and header, str8 above 31 bytes.
    let frame = |len: usize| 10 + if len < 32 { 1 } else { 2 } + len;
    println!();
    println!(
        "python_compare: echo:echo over 127.0.0.1; a {TEXT_LEN}-character string ({} B frames \
         in msgpack) unless said; medians of {ROUNDS} blocks of round trips and of 3 bursts of {SMALL_BURST}",
        frame(TEXT_LEN)
    );
    println!(
        "{:<37} {:>10} {:>13} {:>15}  {:<34} burst 1,000 of {} B frames",
        "pair",
        "round trip",
        "round trips/s",
        "burst 100 msg/s",
        "burst 1,000",
        frame(ODD_TEXT_LEN)
    );
    for p in &pairs {
        println!(
            "{:<37} {:>10} {:>13} {:>15}  {:<34} {}",
            p.name,
            fmt_opt(p.rtt_us(), |us| format!("{us:.1} us")),
            fmt_opt(p.rtt_per_s(), |r| format!("{r:.0}")),
            match p.small.iter().find(|b| !b.complete()) {
                Some(b) => b.describe(),
                None => fmt_opt(p.small_rate(), |r| format!("{r:.0}")),
            },
            p.big.map_or_else(|| "not run".into(), |b| b.describe()),
            p.odd.map_or_else(|| "not run".into(), |b| b.describe()),
        );
    }
    let rust = &pairs[0];
    let python = &pairs[2];
    let burst_ratio = |r: Option<Burst>, p: Option<Burst>| match (r, p) {
        (Some(r), Some(p)) if r.complete() && !p.complete() => format!(
            "n/a: the Python pair {}; the Rust pair did {}",
            p.describe(),
            r.describe()
        ),
        (r, p) => ratio(
            r.filter(Burst::complete).map(|b| b.k as f64 / b.secs),
            p.filter(Burst::complete).map(|b| b.k as f64 / b.secs),
        ),
    };
    println!();
    println!("ratios, Rust pair (msgpack) / Python pair (the same machine, this run):");
    println!(
        "  round trips per second          {}",
        ratio(rust.rtt_per_s(), python.rtt_per_s())
    );
    println!(
        "  burst of {SMALL_BURST}, msg/s              {}",
        ratio(rust.small_rate(), python.small_rate())
    );
    println!(
        "  burst of {BIG_BURST}, msg/s            {}",
        burst_ratio(rust.big, python.big)
    );
    println!(
        "  burst of {BIG_BURST}, {} B frames, msg/s {}",
        frame(ODD_TEXT_LEN),
        burst_ratio(rust.odd, python.odd)
    );
    let postcard = &pairs[1];
    println!(
        "  (postcard Rust pair / Python pair: round trips {}, burst of {SMALL_BURST} {})",
        ratio(postcard.rtt_per_s(), python.rtt_per_s()),
        ratio(postcard.small_rate(), python.small_rate())
    );
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
