//! Loopback latency and pipelined throughput of the std adapter, each beside a
//! bare baseline in the same run (see `README.md` here).
//!
//! - peng3dnet: [`peng3dnet_std::client::Client`] against
//!   [`peng3dnet_std::echo::server`] (default [`ServerOptions`]), `echo:echo`
//!   with a 63-character string: a 64-byte postcard body, 74-byte frames.
//! - baseline: a single-threaded mio echo loop (the peng3dnet server's
//!   architecture) that reads 10-byte-header frames (u32 length, u32 id,
//!   u16 flags), and writes each back with a fresh header; a blocking std
//!   client. 64-byte payload, 74-byte frames: the same bytes on the wire.
//!
//! Both servers run on their own thread in this process; the client runs on
//! the main thread. Blocks of 500 round trips and of 10,000 pipelined
//! messages alternate between baseline and peng3dnet.
//!
//! `cargo bench -p peng3dnet-std --bench loopback [-- OPTIONS]`; options:
//! `--rounds R` (1), `--latency N` (20000 round trips per round and side),
//! `--messages M` (200000 per round and side), `--window W` (64), `--quick`,
//! `--placement cross|same|free` (default: `cross`, then `same`; cross:
//! client thread on CPU 0, server threads on CPU 1, pinned with `taskset`;
//! same: all on CPU 0), `--strict` (exit 1 when a target is missed).

#[path = "common/pin.rs"]
mod pin;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::Closed;
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::ServerOptions;
use pin::pin_current_thread;
use slab::Slab;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// Payload characters: postcard encodes the `&str` as one length byte and
/// the characters, so the body is 64 bytes.
const TEXT_LEN: usize = 63;
/// Frame header: u32 length, u32 packet id, u16 flags.
const HEADER: usize = 10;
/// The baseline's payload: the same size as the peng3dnet body.
const BODY: usize = TEXT_LEN + 1;
const FRAME: usize = HEADER + BODY;
/// Read buffer of the baseline server and both clients' buffered readers.
const BASE_RX: usize = 16 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Round trips per latency block and messages per throughput block.
const LAT_BLOCK: usize = 500;
const TP_BLOCK: usize = 10_000;
const LATENCY_TARGET: f64 = 1.25;
const THROUGHPUT_TARGET: f64 = 0.8;

struct Opts {
    rounds: usize,
    latency_n: usize,
    messages: usize,
    window: usize,
    strict: bool,
    placements: Vec<Placement>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        rounds: 1,
        latency_n: 20_000,
        messages: 200_000,
        window: 64,
        strict: false,
        placements: if thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            vec![Placement::Cross, Placement::Same]
        } else {
            vec![Placement::Same]
        },
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = num("--rounds").max(1),
            "--latency" => o.latency_n = num("--latency").max(LAT_BLOCK),
            "--messages" => o.messages = num("--messages").max(TP_BLOCK),
            "--window" => o.window = num("--window").max(1),
            "--quick" => {
                o.latency_n = 5_000;
                o.messages = 50_000;
            }
            "--strict" => o.strict = true,
            "--placement" => {
                o.placements = vec![match args.next().as_deref() {
                    Some("cross") => Placement::Cross,
                    Some("same") => Placement::Same,
                    Some("free") => Placement::Free,
                    _ => panic!("--placement needs cross, same or free"),
                }]
            }
            // `cargo bench` passes `--bench`; filters and the like are ignored.
            _ => {}
        }
    }
    o
}

// ---------------------------------------------------------------- placement

/// Where the threads run. On a small VM the scheduler's placement moves a
/// loopback round trip between ~15 us (both threads on one vCPU) and ~50 us
/// (a cross-vCPU wake-up), so the bench pins the client thread and the two
/// server threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Client on CPU 0, both servers on CPU 1 (default with 2+ CPUs).
    Cross,
    /// Client and servers all on CPU 0.
    Same,
    /// Wherever the scheduler puts them.
    Free,
}

impl Placement {
    fn client_cpu(self) -> Option<usize> {
        match self {
            Placement::Cross | Placement::Same => Some(0),
            Placement::Free => None,
        }
    }

    fn server_cpu(self) -> Option<usize> {
        match self {
            Placement::Cross => Some(1),
            Placement::Same => Some(0),
            Placement::Free => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Placement::Cross => "client thread on CPU 0, server threads on CPU 1",
            Placement::Same => "client and server threads all on CPU 0",
            Placement::Free => "threads placed by the scheduler",
        }
    }
}

// ---------------------------------------------------------------- baseline

/// One connection of the bare echo loop.
struct BareConn {
    stream: TcpStream,
    rx: Box<[u8]>,
    start: usize,
    end: usize,
    tx: Vec<u8>,
    sent: usize,
}

/// Spawns the bare echo server: one thread, one mio loop, no protocol.
fn spawn_bare_server(cpu: Option<usize>) -> io::Result<SocketAddr> {
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("address"))?;
    let addr = listener.local_addr()?;
    let poll = Poll::new()?;
    const LISTENER: Token = Token(usize::MAX);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    thread::Builder::new()
        .name("bare-echo".into())
        .spawn(move || {
            pin_current_thread(cpu);
            bare_loop(poll, listener)
        })?;
    Ok(addr)
}

fn bare_loop(mut poll: Poll, listener: TcpListener) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<BareConn> = Slab::new();
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == Token(usize::MAX) {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let entry = conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    entry.insert(BareConn {
                        stream,
                        rx: vec![0; BASE_RX].into_boxed_slice(),
                        start: 0,
                        end: 0,
                        tx: Vec::new(),
                        sent: 0,
                    });
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if !bare_service(c) {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.stream);
                if conns.is_empty() {
                    return Ok(()); // the bench's one client left
                }
            }
        }
    }
}

/// Reads, echoes every whole frame, writes. `false` once the peer is gone.
fn bare_service(c: &mut BareConn) -> bool {
    loop {
        if c.end == c.rx.len() {
            if c.start == 0 {
                return false; // a frame larger than the buffer: not in this bench
            }
            c.rx.copy_within(c.start..c.end, 0);
            c.end -= c.start;
            c.start = 0;
        }
        match c.stream.read(&mut c.rx[c.end..]) {
            Ok(0) => return false,
            Ok(n) => c.end += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        // Split frames: length, id, flags, body; echo with a fresh header.
        while c.end - c.start >= HEADER {
            let f = &c.rx[c.start..c.end];
            let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
            if len < 6 {
                return false;
            }
            if f.len() < 4 + len {
                break;
            }
            let id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
            let flags = u16::from_be_bytes([f[8], f[9]]);
            c.tx.extend_from_slice(&(len as u32).to_be_bytes());
            c.tx.extend_from_slice(&id.to_be_bytes());
            c.tx.extend_from_slice(&flags.to_be_bytes());
            c.tx.extend_from_slice(&f[HEADER..4 + len]);
            c.start += 4 + len;
        }
        if c.start == c.end {
            c.start = 0;
            c.end = 0;
        }
        if !bare_flush(c) {
            return false;
        }
    }
    bare_flush(c)
}

fn bare_flush(c: &mut BareConn) -> bool {
    while c.sent < c.tx.len() {
        match c.stream.write(&c.tx[c.sent..]) {
            Ok(0) => return false,
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    c.tx.clear();
    c.sent = 0;
    true
}

/// The baseline's blocking client.
struct BareClient {
    writer: std::net::TcpStream,
    reader: BufReader<std::net::TcpStream>,
    frame: [u8; FRAME],
    answer: [u8; FRAME],
}

impl BareClient {
    fn connect(addr: SocketAddr) -> io::Result<Self> {
        let writer = std::net::TcpStream::connect(addr)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(TIMEOUT))?;
        let reader = BufReader::with_capacity(BASE_RX, writer.try_clone()?);
        let mut frame = [b'x'; FRAME];
        frame[..4].copy_from_slice(&((FRAME - 4) as u32).to_be_bytes());
        frame[4..8].copy_from_slice(&64u32.to_be_bytes());
        frame[8..10].copy_from_slice(&0u16.to_be_bytes());
        Ok(BareClient {
            writer,
            reader,
            frame,
            answer: [0; FRAME],
        })
    }

    fn send(&mut self) -> io::Result<()> {
        self.writer.write_all(&self.frame)
    }

    fn recv(&mut self) -> io::Result<()> {
        self.reader.read_exact(&mut self.answer)?;
        if self.answer != self.frame {
            return Err(io::Error::other("baseline echo differs"));
        }
        Ok(())
    }
}

// --------------------------------------------------------------- peng3dnet

struct Ours {
    client: Client,
    text: String,
}

impl Ours {
    fn connect(addr: SocketAddr) -> Result<Self, Box<dyn std::error::Error>> {
        let mut client = Client::connect(addr, echo::registry(), ClientOptions::default())?;
        client.wait_connected(TIMEOUT)?;
        Ok(Ours {
            client,
            text: "x".repeat(TEXT_LEN),
        })
    }

    fn send(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        self.client.send::<Echo>(&self.text.as_str())?;
        Ok(())
    }

    fn recv(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        loop {
            match self.client.recv(TIMEOUT)? {
                ClientEvent::Packet(p) => {
                    if p.body.len() != BODY {
                        return Err("peng3dnet echo differs".into());
                    }
                    return Ok(());
                }
                ClientEvent::Closed(Closed { reason, .. }) => {
                    return Err(format!("closed: {reason}").into())
                }
                _ => {}
            }
        }
    }
}

// ----------------------------------------------------------- measurements

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Sequential round trips; nanoseconds each.
fn latency(
    n: usize,
    mut send: impl FnMut() -> Res<()>,
    mut recv: impl FnMut() -> Res<()>,
) -> Res<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        send()?;
        recv()?;
        out.push(t.elapsed().as_nanos() as u64);
    }
    Ok(out)
}

/// `m` messages with at most `window` unanswered; messages per second.
fn throughput(
    m: usize,
    window: usize,
    mut send: impl FnMut() -> Res<()>,
    mut recv: impl FnMut() -> Res<()>,
) -> Res<f64> {
    let t = Instant::now();
    let (mut sent, mut received) = (0, 0);
    while received < m {
        while sent < m && sent - received < window {
            send()?;
            sent += 1;
        }
        recv()?;
        received += 1;
    }
    Ok(m as f64 / t.elapsed().as_secs_f64())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loopback bench failed: {e}");
            ExitCode::from(2)
        }
    }
}

/// Medians of one placement.
struct Outcome {
    placement: Placement,
    /// Latency median and p99 (us): baseline, peng3dnet.
    lat: [(f64, f64); 2],
    /// Messages per second: baseline, peng3dnet.
    tp: [f64; 2],
}

impl Outcome {
    fn lat_ratio(&self) -> f64 {
        self.lat[1].0 / self.lat[0].0
    }

    fn tp_ratio(&self) -> f64 {
        self.tp[1] / self.tp[0]
    }

    fn met(&self) -> bool {
        self.lat_ratio() <= LATENCY_TARGET && self.tp_ratio() >= THROUGHPUT_TARGET
    }
}

fn run() -> Res<bool> {
    let o = parse_opts();
    let body_len = Postcard.encoded_len(&"x".repeat(TEXT_LEN).as_str())?;
    assert_eq!(body_len, BODY, "postcard body size");
    println!(
        "peng3dnet-std loopback bench: {FRAME}-byte frames on both sides (10-byte header + \
         {BODY}-byte body; peng3dnet: echo:echo, a postcard &str of {TEXT_LEN} chars)"
    );
    println!(
        "per placement: {} round trips and {} pipelined messages (window {}) per side, \
         in alternating blocks of {LAT_BLOCK} and {TP_BLOCK}",
        o.latency_n * o.rounds,
        o.messages * o.rounds,
        o.window
    );
    let mut outcomes = Vec::new();
    for &placement in &o.placements {
        outcomes.push(measure(&o, placement)?);
    }

    println!();
    println!(
        "{:<46} {:>9} {:>9}",
        "(a) round-trip latency", "median", "p99"
    );
    for r in &outcomes {
        println!("  {}", r.placement.describe());
        for (name, (m, p99)) in SIDES.iter().zip(r.lat) {
            println!("{name:<46} {m:>6.1} us {p99:>6.1} us");
        }
        println!(
            "{:<46} {:>8.2}x {:>8.2}x   target median <= {LATENCY_TARGET}x {}",
            "    ratio peng3dnet/baseline",
            r.lat_ratio(),
            r.lat[1].1 / r.lat[0].1,
            verdict(r.lat_ratio() <= LATENCY_TARGET)
        );
    }
    println!();
    println!("{:<46} {:>9}", "(b) pipelined throughput", "msg/s");
    for r in &outcomes {
        println!("  {}", r.placement.describe());
        for (name, tp) in SIDES.iter().zip(r.tp) {
            println!("{name:<46} {tp:>9.0}");
        }
        println!(
            "{:<46} {:>8.2}x   target >= {THROUGHPUT_TARGET}x {}",
            "    ratio peng3dnet/baseline",
            r.tp_ratio(),
            verdict(r.tp_ratio() >= THROUGHPUT_TARGET)
        );
    }
    println!("(latency: median and p99 of all samples; throughput: median of the blocks' rates)");
    Ok(outcomes.iter().all(Outcome::met) || !o.strict)
}

const SIDES: [&str; 2] = [
    "    baseline: bare mio echo + blocking client",
    "    peng3dnet: echo::server + Client",
];

/// Both servers on fresh threads, both clients, the interleaved blocks.
fn measure(o: &Opts, placement: Placement) -> Res<Outcome> {
    pin_current_thread(placement.client_cpu());
    let server_cpu = placement.server_cpu();
    let bare_addr = spawn_bare_server(server_cpu)?;
    let server = echo::server(echo::registry(), ServerOptions::default()).bind("127.0.0.1:0")?;
    let ours_addr = server.local_addr();
    let handle = server.handle();
    let running = thread::Builder::new()
        .name("peng3dnet-server".into())
        .spawn(move || {
            pin_current_thread(server_cpu);
            server.run()
        })?;

    let mut bare = BareClient::connect(bare_addr)?;
    let mut ours = Ours::connect(ours_addr)?;
    let bare_cell = std::cell::RefCell::new(&mut bare);
    let ours_cell = std::cell::RefCell::new(&mut ours);
    let bare_send = || bare_cell.borrow_mut().send().map_err(Into::into);
    let bare_recv = || bare_cell.borrow_mut().recv().map_err(Into::into);
    let ours_send = || ours_cell.borrow_mut().send();
    let ours_recv = || ours_cell.borrow_mut().recv();

    // Warm both paths up.
    latency(2_000, bare_send, bare_recv)?;
    latency(2_000, ours_send, ours_recv)?;
    throughput(20_000, o.window, bare_send, bare_recv)?;
    throughput(20_000, o.window, ours_send, ours_recv)?;

    // Interleave small blocks, alternating which side goes first, so that
    // drift and noise hit both sides alike.
    let (mut lat_bare, mut lat_ours) = (Vec::new(), Vec::new());
    let (mut tp_bare, mut tp_ours) = (Vec::new(), Vec::new());
    let lat_blocks = o.latency_n.div_ceil(LAT_BLOCK);
    let tp_blocks = o.messages.div_ceil(TP_BLOCK);
    for round in 0..o.rounds {
        for b in 0..lat_blocks.max(tp_blocks) {
            let bare_first = (round + b) % 2 == 0;
            for bare_side in [bare_first, !bare_first] {
                if b < lat_blocks {
                    if bare_side {
                        lat_bare.extend(latency(LAT_BLOCK, bare_send, bare_recv)?);
                    } else {
                        lat_ours.extend(latency(LAT_BLOCK, ours_send, ours_recv)?);
                    }
                }
                if b < tp_blocks {
                    if bare_side {
                        tp_bare.push(throughput(TP_BLOCK, o.window, bare_send, bare_recv)?);
                    } else {
                        tp_ours.push(throughput(TP_BLOCK, o.window, ours_send, ours_recv)?);
                    }
                }
            }
        }
    }
    lat_bare.sort_unstable();
    lat_ours.sort_unstable();
    let outcome = Outcome {
        placement,
        lat: [
            (percentile(&lat_bare, 0.5), percentile(&lat_bare, 0.99)),
            (percentile(&lat_ours, 0.5), percentile(&lat_ours, 0.99)),
        ],
        tp: [median_f(&mut tp_bare), median_f(&mut tp_ours)],
    };
    eprintln!(
        "{}: latency median {:.1} / {:.1} us, throughput {:.0} / {:.0} msg/s (baseline / peng3dnet)",
        placement.describe(),
        outcome.lat[0].0,
        outcome.lat[1].0,
        outcome.tp[0],
        outcome.tp[1]
    );

    ours.client
        .close(peng3dnet_core::CloseReason::UserRequest)?;
    drop(bare); // the bare server's thread ends once its client left
    handle.shutdown();
    running.join().map_err(|_| "server thread panicked")??;
    Ok(outcome)
}
