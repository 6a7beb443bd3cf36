//! Scale: 10,000 concurrent peng3dnet connections against a `peng3dnet serve`
//! process (see `README.md` here).
//!
//! This bench is the load generator. It starts the server as a child process
//! (the `peng3dnet` program of this package, built by `cargo bench` with the
//! bench profile), so server and clients each have their own open-file limit.
//! On one mio loop it opens the connections (at most `--concurrency` of them
//! still connecting or in the handshake at a time, below the listen backlog
//! of 128), drives each through the real handshake with a client
//! [`Connection`] of the core (hello -> settype -> handshake -> accept), then
//! has every connection echo one 64-byte `echo:echo` body. It reads the
//! server's `VmRSS` from `/proc/PID/status` before any connection, with all
//! connections idle, and after they closed.
//!
//! `cargo bench -p peng3dnet-std --bench scale [-- OPTIONS]`; options:
//! `--conns N` (10000), `--concurrency C` (100), `--server-bin PATH` (the
//! package's `peng3dnet`), `--settle-ms MS` (1000, wait before reading RSS),
//! `--strict` (exit 1 when a target is missed).

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{Config, Connection, Event};
use peng3dnet_core::registry::Registry;
use peng3dnet_core::Closed;
use peng3dnet_std::buffer::HeapBuffer;
use peng3dnet_std::echo::{Echo, EchoPing};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Characters of the echoed text: a 64-byte postcard body, a 74-byte frame.
const TEXT_LEN: usize = 63;
const BODY: usize = TEXT_LEN + 1;
/// Target: bytes of server memory per idle connection (issue 14: at most
/// half of the Python reference's 2 KiB).
const RSS_TARGET: f64 = 1024.0;
/// Target: handshakes per second, the load generator being this process.
const HANDSHAKE_TARGET: f64 = 20_000.0;
/// Descriptors the load generator needs beyond one per connection.
const SPARE_FDS: u64 = 64;
const REEXEC_ENV: &str = "PENG3DNET_SCALE_REEXEC";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A client connection of the load generator: the core's state machine with
/// its own small registry (the server's names: internal ones and the echo
/// service's two).
type LgConn<'a> = Connection<'a, Postcard, HeapBuffer, HeapBuffer, 8, Registry<8>>;

struct Opts {
    conns: usize,
    concurrency: usize,
    server_bin: PathBuf,
    settle: Duration,
    strict: bool,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        conns: 10_000,
        concurrency: 100,
        server_bin: PathBuf::from(env!("CARGO_BIN_EXE_peng3dnet")),
        settle: Duration::from_millis(1000),
        strict: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        let num = |name: &str, v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--conns" => o.conns = num("--conns", val("--conns")).max(1),
            "--concurrency" => o.concurrency = num("--concurrency", val("--concurrency")).max(1),
            "--server-bin" => o.server_bin = PathBuf::from(val("--server-bin")),
            "--settle-ms" => {
                o.settle = Duration::from_millis(num("--settle-ms", val("--settle-ms")) as u64)
            }
            "--strict" => o.strict = true,
            // `cargo bench` passes `--bench`; anything else is ignored.
            _ => {}
        }
    }
    o
}

// ------------------------------------------------------------ process helpers

/// (soft, hard) open-file limit of this process.
fn nofile_limit() -> io::Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| io::Error::other("no open-file limit in /proc/self/limits"))?;
    let mut nums = line["Max open files".len()..]
        .split_whitespace()
        .map(|w| w.parse::<u64>().unwrap_or(u64::MAX));
    Ok((nums.next().unwrap_or(0), nums.next().unwrap_or(u64::MAX)))
}

/// Raises the soft open-file limit to the hard one by running this program
/// again under `sh -c 'ulimit -n HARD; exec ...'` (the crate forbids
/// `unsafe`, so no `setrlimit` here). `Some(exit code)` if it did.
fn ensure_fd_limit(need: u64) -> Res<Option<ExitCode>> {
    let (soft, hard) = nofile_limit()?;
    if soft >= need {
        return Ok(None);
    }
    if hard < need || std::env::var_os(REEXEC_ENV).is_some() {
        return Err(format!(
            "open-file limit {soft} (hard {hard}) is below the {need} needed; \
             use fewer --conns or raise `ulimit -n`"
        )
        .into());
    }
    eprintln!("raising the open-file limit from {soft} to {hard} (re-running under sh)");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {hard} && exec \"$0\" \"$@\""))
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .status()?;
    Ok(Some(ExitCode::from(status.code().unwrap_or(2) as u8)))
}

/// `VmRSS` (and `VmHWM`) of a process, in bytes.
fn rss(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| io::Error::other(format!("no {name} for process {pid}")))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user, system) of a process so far, in seconds.
fn cpu_times(pid: &str, tick: f64) -> io::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad /proc stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after `)`.
    Ok((num(11) / tick, num(12) / tick))
}

/// Clock ticks per second for `/proc/*/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The server process; killed when dropped.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts `peng3dnet serve` and waits until it sends `hello`.
fn start_server(bin: &PathBuf, addr: SocketAddr) -> Res<ServerProcess> {
    let child = Command::new(bin)
        .args([
            "serve",
            "--addr",
            &addr.to_string(),
            "--max-clients",
            "20000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut server = ServerProcess(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.0.try_wait()? {
            return Err(format!("server exited at start: {status}").into());
        }
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut b = [0u8; 16];
            if s.read(&mut b)? > 0 {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            return Err("server did not come up within 10 s".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------ load generator

struct Lg<'a> {
    stream: TcpStream,
    conn: LgConn<'a>,
    opened: Instant,
    connected: bool,
    echoed: bool,
    failed: Option<String>,
}

fn registry() -> Registry<8> {
    let mut reg = Registry::new();
    reg.register::<Echo>().expect("room for echo:echo");
    reg.register::<EchoPing>().expect("room for echo:ping");
    reg
}

/// Reads what is there, handles the core's events, writes what it queued.
fn drive(c: &mut Lg<'_>, now: peng3dnet_core::time::Instant) {
    loop {
        if c.conn.receive_buffer().is_empty() {
            if c.conn.is_closed() {
                break;
            }
            events(c, now);
            if c.conn.receive_buffer().is_empty() {
                break;
            }
        }
        let buf = c.conn.receive_buffer();
        match c.stream.read(buf) {
            Ok(0) => {
                c.conn.handle_transport_closed();
                break;
            }
            Ok(n) => {
                c.conn.commit_received(n);
                events(c, now);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                c.failed.get_or_insert_with(|| e.to_string());
                c.conn.handle_transport_closed();
                break;
            }
        }
    }
    events(c, now);
    flush(c);
}

fn events(c: &mut Lg<'_>, now: peng3dnet_core::time::Instant) {
    while let Some(ev) = c.conn.poll(now) {
        match ev {
            Event::Connected => c.connected = true,
            Event::Packet(p) if p.is::<Echo>() && p.body.len() == BODY => c.echoed = true,
            Event::Closed(Closed { reason, .. }) => {
                c.failed.get_or_insert_with(|| format!("closed: {reason}"));
            }
            _ => {}
        }
    }
}

fn flush(c: &mut Lg<'_>) {
    loop {
        let data = c.conn.poll_transmit();
        if data.is_empty() {
            return;
        }
        match c.stream.write(data) {
            Ok(0) => return,
            Ok(n) => c.conn.transmitted(n),
            // The next writable event comes back here.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                c.failed.get_or_insert_with(|| e.to_string());
                c.conn.handle_transport_closed();
                return;
            }
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scale bench failed: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Res<ExitCode> {
    let o = parse_opts();
    if let Some(code) = ensure_fd_limit(o.conns as u64 + SPARE_FDS)? {
        return Ok(code);
    }
    let addr = free_port()?;
    let server = start_server(&o.server_bin, addr)?;
    let pid = server.0.id();
    thread::sleep(o.settle);
    let (rss_before, _) = rss(pid)?;

    let config = Config::new();
    let text = "x".repeat(TEXT_LEN);
    let start = Instant::now();
    let core_now =
        || peng3dnet_core::time::Instant::from_micros(start.elapsed().as_micros() as u64);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut conns: Vec<Lg<'_>> = Vec::with_capacity(o.conns);
    let mut handshake_ns: Vec<u64> = Vec::with_capacity(o.conns);
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut first_failure: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(120);

    // Phase 1: connect and handshake, at most `concurrency` in flight.
    let tick = clock_ticks();
    let pid_s = pid.to_string();
    let server_cpu0 = cpu_times(&pid_s, tick)?;
    let own_cpu0 = cpu_times("self", tick)?;
    let t_open = Instant::now();
    while connected + failed < o.conns {
        while conns.len() < o.conns && conns.len() - connected - failed < o.concurrency {
            let key = conns.len();
            let mut stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let conn = LgConn::client(
                &config,
                registry(),
                Postcard,
                HeapBuffer::new(64 * 1024, 1024),
                HeapBuffer::new(64 * 1024, 1024),
                "classic",
                core_now(),
            )?;
            conns.push(Lg {
                stream,
                conn,
                opened: Instant::now(),
                connected: false,
                echoed: false,
                failed: None,
            });
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let now = core_now();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            let (was_connected, was_failed) = (c.connected, c.failed.is_some());
            drive(c, now);
            if c.connected && !was_connected {
                connected += 1;
                handshake_ns.push(c.opened.elapsed().as_nanos() as u64);
            }
            if c.failed.is_some() && !was_failed {
                if !c.connected {
                    failed += 1;
                }
                if first_failure.is_none() {
                    first_failure.clone_from(&c.failed);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {connected} of {} connections handshaken after 120 s",
                o.conns
            )
            .into());
        }
    }
    let t_handshakes = t_open.elapsed();
    let server_cpu1 = cpu_times(&pid_s, tick)?;
    let own_cpu1 = cpu_times("self", tick)?;
    if failed > 0 {
        return Err(format!(
            "{failed} of {} connections failed (first: {})",
            o.conns,
            first_failure.unwrap_or_default()
        )
        .into());
    }

    // Phase 2: every connection echoes one message.
    let t_echo = Instant::now();
    for c in conns.iter_mut() {
        c.conn.send::<Echo>(&text.as_str())?;
        flush(c);
    }
    let mut echoed = 0usize;
    while echoed < o.conns {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let now = core_now();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            let was = c.echoed;
            drive(c, now);
            if c.echoed && !was {
                echoed += 1;
            }
            if let Some(f) = &c.failed {
                return Err(format!("connection {} failed in the echo: {f}", ev.token().0).into());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("only {echoed} of {} echoes came back", o.conns).into());
        }
    }
    let t_echoes = t_echo.elapsed();

    // Phase 3: all idle; then close them all.
    thread::sleep(o.settle);
    let (rss_idle, hwm) = rss(pid)?;
    // Take in whatever arrived while idle (a close would show here).
    poll.poll(&mut events, Some(Duration::ZERO))?;
    let now = core_now();
    for ev in events.iter() {
        drive(&mut conns[ev.token().0], now);
    }
    let all_open = conns.iter().all(|c| c.conn.is_connected());
    drop(conns);
    thread::sleep(o.settle);
    let (rss_after, _) = rss(pid)?;
    drop(server);

    handshake_ns.sort_unstable();
    let per_conn = rss_idle.saturating_sub(rss_before) as f64 / o.conns as f64;
    let rate = o.conns as f64 / t_handshakes.as_secs_f64();
    let ok = per_conn <= RSS_TARGET && rate >= HANDSHAKE_TARGET && all_open;
    println!(
        "peng3dnet-std scale bench: {} connections to `peng3dnet serve` (pid {pid}) on {addr}, \
         a separate process",
        o.conns
    );
    println!(
        "(c) handshakes: {} in {:.3} s = {:.0} handshakes/s ({} connecting at a time), \
         target >= {HANDSHAKE_TARGET:.0} {}; connect-to-accepted median {:.0} us, p99 {:.0} us",
        o.conns,
        t_handshakes.as_secs_f64(),
        rate,
        o.concurrency,
        if rate >= HANDSHAKE_TARGET {
            "PASS"
        } else {
            "MISS"
        },
        pct(&handshake_ns, 0.5),
        pct(&handshake_ns, 0.99)
    );
    let per_hs = |a: (f64, f64), b: (f64, f64)| {
        (
            (b.0 - a.0) / o.conns as f64 * 1e6,
            (b.1 - a.1) / o.conns as f64 * 1e6,
        )
    };
    let (su, ss) = per_hs(server_cpu0, server_cpu1);
    let (lu, ls) = per_hs(own_cpu0, own_cpu1);
    println!(
        "    CPU per handshake: server {su:.1} us user + {ss:.1} us system, \
         load generator {lu:.1} us user + {ls:.1} us system (from /proc/PID/stat)"
    );
    println!(
        "    echo: every connection sent one 64-byte echo:echo at once; all {} back in {:.3} s \
         ({:.0} echoes/s)",
        o.conns,
        t_echoes.as_secs_f64(),
        o.conns as f64 / t_echoes.as_secs_f64()
    );
    println!(
        "    server VmRSS: before {:.1} MiB, {} idle connections {:.1} MiB (peak {:.1} MiB), \
         after they closed {:.1} MiB",
        mib(rss_before),
        o.conns,
        mib(rss_idle),
        mib(hwm),
        mib(rss_after)
    );
    println!(
        "    per idle connection: {:.0} bytes ({:.2} KiB); target <= {RSS_TARGET:.0} B {}{}",
        per_conn,
        per_conn / 1024.0,
        if per_conn <= RSS_TARGET {
            "PASS"
        } else {
            "MISS"
        },
        if all_open {
            ""
        } else {
            "; some connections were closed while idle"
        }
    );
    Ok(if ok || !o.strict {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
