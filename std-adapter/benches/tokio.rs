//! The tokio server and client, each beside a baseline measured in the same
//! run, in alternating blocks (see `README.md` here):
//!
//! 1. **tokio vs bare tokio**: the tokio client against the tokio server
//!    (`echo::server`, 2 workers), and a bare tokio length-prefixed echo (a
//!    2-worker runtime, a task per connection, the same 74-byte frames, no
//!    protocol) with a bare tokio client: round-trip latency (target: median
//!    at most 1.25x the baseline's) and pipelined throughput with 64
//!    unanswered (target: at least 0.8x).
//! 2. **tokio server vs mio server**: the same tokio client and load against
//!    both servers.
//! 3. **2 workers vs 1**: 200 raw clients (handshake done, then pre-encoded
//!    `echo:echo` frames, 32 at a time) on a one-thread client runtime
//!    against the tokio server on 2 workers and on 1; messages per second.
//!    Twice: with the echo service (a handler that costs next to nothing,
//!    so the one-thread load generator sharing the two CPUs is what limits
//!    both: the bare tokio echo shows what the machine allows), and with
//!    [`WORK_ROUNDS`] of hashing per message in an async handler (about
//!    10 us: the server is what limits, as with a real service), beside the
//!    bare echo doing the same hashing.
//!
//! Every side is measured in blocks that alternate (each side first half of
//! the time); the figures are the medians over the blocks and the spread
//! (min to max) of the per-block ratio. 1 and 2 run in two thread
//! placements, as `loopback` does (`cross`: the client's thread on CPU 0,
//! every server thread on CPU 1; `same`: all on CPU 0); 3 leaves placement
//! to the scheduler (the server needs both CPUs).
//!
//! `cargo bench -p peng3dnet-std --bench tokio [-- --blocks N --quick --scaling --same --work-rounds N]`
//! (`--scaling`: 3 only; `--same`: 1 and 2 on one CPU only)

#[path = "common/pin.rs"]
mod pin;

use peng3dnet_core::codec::Postcard;
use peng3dnet_std::client::{ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{Runtime, Server, ServerHandle, ServerOptions};
use peng3dnet_std::tokio_client::Client;
use peng3dnet_std::tokio_server::TokioServer;
use peng3dnet_test_support::{frame, RawPeer};
use pin::pin_current_thread;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Payload characters: a 64-byte postcard body, 74-byte frames.
const TEXT_LEN: usize = 63;
const HEADER: usize = 10;
const BODY: usize = TEXT_LEN + 1;
const FRAME: usize = HEADER + BODY;
const TIMEOUT: Duration = Duration::from_secs(10);
const WINDOW: usize = 64;
const CLIENTS: usize = 200;
const BATCH: usize = 32;
const LATENCY_TARGET: f64 = 1.25;
const THROUGHPUT_TARGET: f64 = 0.8;
const SCALE_TARGET: f64 = 1.3;
/// Rounds of [`work`] per message in the server-bound part of 3 (about
/// 10 us on this machine).
const WORK_ROUNDS: u32 = 150;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts {
    blocks: usize,
    round_trips: usize,
    messages: usize,
    per_client: usize,
    /// `--work-rounds N`: [`work`] per message in 3's server-bound part.
    work_rounds: u32,
    /// `--same`: 1 and 2 in the same-CPU placement only (no 3).
    same_only: bool,
    /// `--scaling`: part 3 only.
    scaling_only: bool,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        blocks: 10,
        round_trips: 1000,
        messages: 20_000,
        per_client: 500,
        scaling_only: false,
        same_only: false,
        work_rounds: WORK_ROUNDS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--blocks" => o.blocks = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.blocks),
            "--quick" => {
                o.blocks = 4;
                o.round_trips = 300;
                o.messages = 5_000;
                o.per_client = 100;
            }
            "--scaling" => o.scaling_only = true,
            "--same" => o.same_only = true,
            "--work-rounds" => {
                o.work_rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.work_rounds)
            }
            // cargo bench passes --bench.
            _ => {}
        }
    }
    o
}

// ---------------------------------------------------------------- baseline

/// A service's work on a message: `rounds` passes of FNV-1a over `bytes`
/// (a chain of multiplications the compiler cannot skip).
fn work(bytes: &[u8], rounds: u32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for _ in 0..rounds {
        for &b in std::hint::black_box(bytes) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    std::hint::black_box(h)
}

/// The bare echo server on a runtime of `workers` threads: a task per
/// connection reads into a 16 KiB buffer, splits 10-byte-header frames and
/// writes each back with a fresh header.
fn spawn_bare_server(workers: usize, cpu: Option<usize>) -> io::Result<SocketAddr> {
    spawn_bare_worker(workers, cpu, 0)
}

/// [`spawn_bare_server`] doing `rounds` of [`work`] on each frame's body.
fn spawn_bare_worker(workers: usize, cpu: Option<usize>, rounds: u32) -> io::Result<SocketAddr> {
    let rt = runtime(workers, cpu)?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::spawn(move || {
        pin_current_thread(cpu);
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(bare_conn(stream, rounds));
            }
        })
    });
    Ok(addr)
}

async fn bare_conn(mut stream: TcpStream, rounds: u32) -> io::Result<()> {
    let mut rx = vec![0u8; 16 * 1024];
    let (mut start, mut end) = (0, 0);
    let mut tx = Vec::with_capacity(16 * 1024);
    loop {
        if start == end {
            start = 0;
            end = 0;
        } else if end == rx.len() {
            rx.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = stream.read(&mut rx[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
        while end - start >= 4 {
            let len = u32::from_be_bytes(rx[start..start + 4].try_into().expect("4")) as usize;
            if end - start < 4 + len {
                break;
            }
            let body = &rx[start + HEADER..start + 4 + len];
            work(body, rounds);
            tx.extend_from_slice(&((HEADER - 4 + body.len()) as u32).to_be_bytes());
            tx.extend_from_slice(&rx[start + 4..start + HEADER]);
            tx.extend_from_slice(body);
            start += 4 + len;
        }
        stream.write_all(&tx).await?;
        tx.clear();
    }
}

/// The bare client: frames written in one write per window's worth,
/// answers read through a 16 KiB buffer.
struct BareClient {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    frame: [u8; FRAME],
    out: Vec<u8>,
}

impl BareClient {
    async fn connect(addr: SocketAddr) -> Res<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, writer) = stream.into_split();
        let mut frame = [b'x'; FRAME];
        frame[..4].copy_from_slice(&((FRAME - 4) as u32).to_be_bytes());
        frame[4..8].copy_from_slice(&64u32.to_be_bytes());
        frame[8..10].copy_from_slice(&0u16.to_be_bytes());
        Ok(BareClient {
            reader: BufReader::with_capacity(16 * 1024, r),
            writer,
            frame,
            out: Vec::new(),
        })
    }

    /// A bare client of the peng3dnet server at `addr`: through the
    /// handshake (blocking, before the measurements), then the same
    /// `echo:echo` frames as [`Ours`] sends, pre-encoded.
    fn handshaken(addr: SocketAddr) -> Res<Self> {
        let (stream, echo) = raw_client(addr)?;
        let stream = TcpStream::from_std(stream)?;
        stream.set_nodelay(true)?;
        let (r, writer) = stream.into_split();
        Ok(BareClient {
            reader: BufReader::with_capacity(16 * 1024, r),
            writer,
            frame: echo.as_slice().try_into()?,
            out: Vec::new(),
        })
    }

    async fn send(&mut self, k: usize) -> Res<()> {
        self.out.clear();
        for _ in 0..k {
            self.out.extend_from_slice(&self.frame);
        }
        self.writer.write_all(&self.out).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Res<()> {
        let mut answer = [0u8; FRAME];
        self.reader.read_exact(&mut answer).await?;
        if answer != self.frame {
            return Err("the baseline's echo differs".into());
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
    async fn connect(addr: SocketAddr) -> Res<Self> {
        let client = Client::connect(addr, echo::registry(), ClientOptions::default()).await?;
        client.wait_connected().await?;
        Ok(Ours {
            client,
            text: "x".repeat(TEXT_LEN),
        })
    }

    async fn send(&mut self, k: usize) -> Res<()> {
        for _ in 0..k {
            self.client.send::<Echo>(&self.text.as_str()).await?;
        }
        Ok(())
    }

    async fn recv(&mut self) -> Res<()> {
        loop {
            match self.client.recv().await? {
                ClientEvent::Packet(p) if p.body.len() == BODY => return Ok(()),
                ClientEvent::Packet(_) => return Err("the peng3dnet echo differs".into()),
                ClientEvent::Closed(c) => return Err(format!("closed: {}", c.reason).into()),
                _ => {}
            }
        }
    }
}

/// A client of either kind, as the measurements drive it.
enum Side {
    Bare(BareClient),
    Ours(Ours),
}

impl Side {
    async fn send(&mut self, k: usize) -> Res<()> {
        match self {
            Side::Bare(c) => c.send(k).await,
            Side::Ours(c) => c.send(k).await,
        }
    }

    async fn recv(&mut self) -> Res<()> {
        match self {
            Side::Bare(c) => c.recv().await,
            Side::Ours(c) => c.recv().await,
        }
    }

    /// Median round trip of `n` sequential ones, in microseconds.
    async fn latency(&mut self, n: usize) -> Res<f64> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.send(1).await?;
            self.recv().await?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(median(&mut v))
    }

    /// Messages a second for `m` with at most [`WINDOW`] unanswered.
    async fn throughput(&mut self, m: usize) -> Res<f64> {
        let t = Instant::now();
        let (mut sent, mut received) = (0, 0);
        while received < m {
            let k = (m - sent).min(WINDOW - (sent - received));
            if k > 0 {
                self.send(k).await?;
                sent += k;
            }
            self.recv().await?;
            received += 1;
        }
        Ok(m as f64 / t.elapsed().as_secs_f64())
    }
}

// -------------------------------------------------------- many raw clients

/// A raw client of the server at `addr` through the handshake (blocking),
/// non-blocking from then on, and the `echo:echo` frame it sends.
fn raw_client(addr: SocketAddr) -> Res<(std::net::TcpStream, Vec<u8>)> {
    let mut peer = RawPeer::connect(addr, Postcard, TIMEOUT);
    peer.handshake();
    let id = peer.id("echo:echo");
    let echo = frame(id, 0, &peer.enc("x".repeat(TEXT_LEN).as_str()));
    peer.stream.set_nonblocking(true)?;
    Ok((peer.stream, echo))
}

/// [`CLIENTS`] raw clients through the handshake with the server at `addr`,
/// as tokio streams of the client runtime, and the `echo:echo` frame they
/// send.
fn raw_clients(addr: SocketAddr) -> Res<(Vec<TcpStream>, Vec<u8>)> {
    let mut streams = Vec::with_capacity(CLIENTS);
    let mut echo_frame = Vec::new();
    for _ in 0..CLIENTS {
        let (stream, echo) = raw_client(addr)?;
        echo_frame = echo;
        streams.push(stream);
    }
    let streams = streams
        .into_iter()
        .map(TcpStream::from_std)
        .collect::<io::Result<Vec<_>>>()?;
    Ok((streams, echo_frame))
}

/// Every client sends `per_client` echoes, [`BATCH`] at a time, and reads
/// their answers; messages a second over all of them, and the streams back.
async fn many(
    streams: Vec<TcpStream>,
    echo_frame: &[u8],
    per_client: usize,
) -> Res<(f64, Vec<TcpStream>)> {
    let n = streams.len();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut s in streams {
        let one = echo_frame.len();
        let batch = echo_frame.repeat(BATCH);
        set.spawn(async move {
            let mut buf = vec![0u8; batch.len()];
            let mut left = per_client;
            while left > 0 {
                let k = left.min(BATCH);
                s.write_all(&batch[..k * one]).await?;
                s.read_exact(&mut buf[..k * one]).await?;
                left -= k;
            }
            Ok::<TcpStream, io::Error>(s)
        });
    }
    let mut back = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        back.push(r??);
    }
    Ok(((n * per_client) as f64 / t.elapsed().as_secs_f64(), back))
}

// ----------------------------------------------------------------- report

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Prints one comparison: medians of both sides and the ratio's median and
/// spread over the blocks; whether `ok(ratio)`.
fn report(what: &str, unit: &str, a: &str, b: &str, pairs: &[(f64, f64)], target: &str) -> f64 {
    let mut xa: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut xb: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let mut ratios: Vec<f64> = pairs.iter().map(|p| p.0 / p.1).collect();
    let (lo, hi) = spread(&ratios);
    let r = median(&mut ratios);
    println!(
        "| {what} | {a}: {:.1} {unit} | {b}: {:.1} {unit} | {r:.2}x ({lo:.2} to {hi:.2}) | {target} |",
        median(&mut xa),
        median(&mut xb),
    );
    r
}

/// A multi-thread runtime whose threads run on `cpu`.
fn runtime(workers: usize, cpu: Option<usize>) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .on_thread_start(move || pin_current_thread(cpu))
        .enable_all()
        .build()
}

/// The echo server on `runtime`, its threads on `cpu`: its address, and a
/// handle that shuts it down.
fn spawn_server(runtime: Runtime, cpu: Option<usize>) -> Res<(SocketAddr, ServerHandle)> {
    let builder = echo::server(echo::registry(), ServerOptions::default());
    match runtime {
        Runtime::Mio => {
            let server = builder.bind("127.0.0.1:0")?;
            let (addr, handle) = (server.local_addr(), server.handle());
            std::thread::spawn(move || {
                pin_current_thread(cpu);
                server.run()
            });
            Ok((addr, handle))
        }
        Runtime::Tokio { workers } => spawn_tokio(builder.bind_tokio("127.0.0.1:0")?, workers, cpu),
    }
}

/// Runs `server` on a runtime of `workers` threads on `cpu`: its address
/// and a handle that shuts it down.
fn spawn_tokio(
    server: TokioServer,
    workers: usize,
    cpu: Option<usize>,
) -> Res<(SocketAddr, ServerHandle)> {
    let (addr, handle) = (server.local_addr(), server.handle());
    let rt = self::runtime(workers, cpu)?;
    std::thread::spawn(move || {
        pin_current_thread(cpu);
        rt.block_on(server.run())
    });
    Ok((addr, handle))
}

/// The tokio server on `workers` threads answering `echo:echo` from an async
/// handler that does [`WORK_ROUNDS`] of [`work`] on the text first.
fn spawn_work_server(workers: usize, rounds: u32) -> Res<(SocketAddr, ServerHandle)> {
    let server = Server::builder(echo::registry())
        .bind_tokio("127.0.0.1:0")?
        .on_async::<Echo, _, _>(move |ctx, packet| async move {
            if let Ok(text) = packet.decode::<Echo>() {
                work(text.as_bytes(), rounds);
                let _ = ctx.send::<Echo>(&text).await;
            }
        });
    spawn_tokio(server, workers, None)
}

/// Runs the two sides of each pair in the order of `flip` and returns
/// (first, second) as written.
macro_rules! pair {
    ($flip:expr, $a:expr, $b:expr) => {{
        if $flip {
            let b = $b;
            let a = $a;
            (a, b)
        } else {
            let a = $a;
            let b = $b;
            (a, b)
        }
    }};
}

/// 1 and 2 in one placement: the client's thread (the caller's, pinned to
/// `client_cpu`) and the servers' (on `server_cpu`).
fn comparisons(o: &Opts, name: &str, client_cpu: usize, server_cpu: usize) -> Res<[f64; 2]> {
    let (tokio_addr, tokio_handle) = spawn_server(Runtime::Tokio { workers: 2 }, Some(server_cpu))?;
    let (mio_addr, mio_handle) = spawn_server(Runtime::Mio, Some(server_cpu))?;
    let bare = spawn_bare_server(2, Some(server_cpu))?;
    pin_current_thread(Some(client_cpu));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let raw_to_tokio = {
        let _in = client_rt.enter();
        BareClient::handshaken(tokio_addr)?
    };
    let (blocks, round_trips, messages, name) =
        (o.blocks, o.round_trips, o.messages, name.to_owned());
    // The measurements run in a spawned task, not in `block_on`'s own
    // future: a wake-up of that future from another task (the client's
    // driver) costs the runtime an eventfd write and one more
    // `epoll_wait` each time, which a task woken by a task does not.
    let measure = async move {
        let mut raw = Side::Bare(raw_to_tokio);
        let mut ours = Side::Ours(Ours::connect(tokio_addr).await?);
        let mut base = Side::Bare(BareClient::connect(bare).await?);
        let mut on_mio = Side::Ours(Ours::connect(mio_addr).await?);
        for s in [&mut ours, &mut base, &mut on_mio, &mut raw] {
            s.latency(200).await?;
            s.throughput(2_000).await?;
        }
        let (mut lat, mut tp, mut vs_lat, mut vs_tp, mut raw_lat) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for block in 0..blocks {
            let flip = block % 2 == 1;
            let n = round_trips;
            let m = messages;
            lat.push(pair!(flip, ours.latency(n).await?, base.latency(n).await?));
            tp.push(pair!(
                flip,
                ours.throughput(m).await?,
                base.throughput(m).await?
            ));
            vs_lat.push(pair!(
                flip,
                ours.latency(n).await?,
                on_mio.latency(n).await?
            ));
            vs_tp.push(pair!(
                flip,
                ours.throughput(m).await?,
                on_mio.throughput(m).await?
            ));
            raw_lat.push(pair!(flip, raw.latency(n).await?, base.latency(n).await?));
        }
        println!("\nplacement {name}: {blocks} blocks");
        println!("| measure | side | baseline | ratio: median (spread) | target |");
        println!("|---|---|---|---|---|");
        let r1 = report(
            "round trip, median",
            "us",
            "tokio client + server",
            "bare tokio echo",
            &lat,
            &format!("<= {LATENCY_TARGET}x"),
        );
        let r2 = report(
            "pipelined, 64 unanswered",
            "msg/s",
            "tokio client + server",
            "bare tokio echo",
            &tp,
            &format!(">= {THROUGHPUT_TARGET}x"),
        );
        report(
            "round trip, median",
            "us",
            "tokio server",
            "mio server",
            &vs_lat,
            "(report)",
        );
        report(
            "pipelined, 64 unanswered",
            "msg/s",
            "tokio server",
            "mio server",
            &vs_tp,
            "(report)",
        );
        report(
            "round trip, median",
            "us",
            "bare client + tokio server",
            "bare tokio echo",
            &raw_lat,
            "(the server's share)",
        );
        Ok::<[f64; 2], Box<dyn std::error::Error + Send + Sync>>([r1, r2])
    };
    let targets = client_rt.block_on(async { tokio::spawn(measure).await })??;
    tokio_handle.shutdown();
    mio_handle.shutdown();
    Ok(targets)
}

/// [`CLIENTS`] plain connections to the bare echo at `addr`, and the
/// frame they send (the same 74 bytes as `echo:echo`).
async fn bare_clients(addr: SocketAddr) -> Res<(Vec<TcpStream>, Vec<u8>)> {
    let mut streams = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let mut f = vec![b'x'; FRAME];
    f[..4].copy_from_slice(&((FRAME - 4) as u32).to_be_bytes());
    f[4..10].copy_from_slice(&[0, 0, 0, 64, 0, 0]);
    Ok((streams, f))
}

/// 3: the tokio server on 2 workers and on 1, and the bare tokio echo on 2
/// and on 1 (what this machine and load generator allow), threads placed
/// freely: first with the echo service, then server-bound (each message
/// costs [`WORK_ROUNDS`] of [`work`] on both). The two ratios of the tokio
/// server.
fn scaling(o: &Opts) -> Res<[f64; 2]> {
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _in_client_runtime = client_rt.enter();
    println!("\nthreads placed by the scheduler: {} blocks", o.blocks);
    println!("| measure | side | baseline | ratio: median (spread) | target |");
    println!("|---|---|---|---|---|");
    let echo = scaling_pass(
        o,
        &client_rt,
        "200 clients, 32 at a time",
        [
            spawn_server(Runtime::Tokio { workers: 2 }, None)?,
            spawn_server(Runtime::Tokio { workers: 1 }, None)?,
        ],
        [spawn_bare_server(2, None)?, spawn_bare_server(1, None)?],
        o.per_client,
    )?;
    let bound = scaling_pass(
        o,
        &client_rt,
        "200 clients, 32 at a time, ~10 us of work a message",
        [
            spawn_work_server(2, o.work_rounds)?,
            spawn_work_server(1, o.work_rounds)?,
        ],
        [
            spawn_bare_worker(2, None, o.work_rounds)?,
            spawn_bare_worker(1, None, o.work_rounds)?,
        ],
        o.per_client / 4,
    )?;
    Ok([echo, bound])
}

/// One row pair of 3: `servers` (on 2 workers, on 1) beside `bare` (the
/// same), `per_client` messages a block from each client; prints both and
/// returns the servers' ratio. Shuts the servers down.
fn scaling_pass(
    o: &Opts,
    client_rt: &tokio::runtime::Runtime,
    what: &str,
    servers: [(SocketAddr, ServerHandle); 2],
    bare: [SocketAddr; 2],
    per_client: usize,
) -> Res<f64> {
    let [(two, two_handle), (one, one_handle)] = servers;
    let (many2, frame2) = raw_clients(two)?;
    let (many1, frame1) = raw_clients(one)?;
    let r = client_rt.block_on(async {
        let (b2, bframe) = bare_clients(bare[0]).await?;
        let (b1, _) = bare_clients(bare[1]).await?;
        let (_, mut many2) = many(many2, &frame2, 20).await?;
        let (_, mut many1) = many(many1, &frame1, 20).await?;
        let (_, mut b2) = many(b2, &bframe, 20).await?;
        let (_, mut b1) = many(b1, &bframe, 20).await?;
        let (mut scale, mut bare_scale) = (Vec::new(), Vec::new());
        for block in 0..o.blocks {
            let flip = block % 2 == 1;
            let m = per_client;
            let (a, b) = pair!(
                flip,
                many(many2, &frame2, m).await?,
                many(many1, &frame1, m).await?
            );
            (many2, many1) = (a.1, b.1);
            scale.push((a.0, b.0));
            let (a, b) = pair!(
                flip,
                many(b2, &bframe, m).await?,
                many(b1, &bframe, m).await?
            );
            (b2, b1) = (a.1, b.1);
            bare_scale.push((a.0, b.0));
        }
        let r = report(
            what,
            "msg/s",
            "tokio server, 2 workers",
            "1 worker",
            &scale,
            &format!(">= {SCALE_TARGET}x"),
        );
        report(
            what,
            "msg/s",
            "bare tokio echo, 2 workers",
            "1 worker",
            &bare_scale,
            "(what the machine allows)",
        );
        Ok::<f64, Box<dyn std::error::Error + Send + Sync>>(r)
    })?;
    two_handle.shutdown();
    one_handle.shutdown();
    Ok(r)
}

fn main() -> Res<()> {
    let o = parse_opts();
    println!(
        "tokio bench on {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // First, while this thread is not pinned yet (threads inherit it).
    if o.same_only {
        comparisons(&o, "same (all on CPU 0)", 0, 0)?;
        return Ok(());
    }
    let scale = scaling(&o)?;
    if o.scaling_only {
        return Ok(());
    }
    let cross = comparisons(&o, "cross (client CPU 0, servers CPU 1)", 0, 1)?;
    let same = comparisons(&o, "same (all on CPU 0)", 0, 0)?;
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "\ntargets: latency cross {} same {}, throughput cross {} same {}, 2 workers vs 1 {} (server-bound {})",
        verdict(cross[0] <= LATENCY_TARGET),
        verdict(same[0] <= LATENCY_TARGET),
        verdict(cross[1] >= THROUGHPUT_TARGET),
        verdict(same[1] >= THROUGHPUT_TARGET),
        verdict(scale[0] >= SCALE_TARGET),
        verdict(scale[1] >= SCALE_TARGET),
    );
    Ok(())
}
