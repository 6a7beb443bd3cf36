//! Helpers of `tests/hostile.rs`: the `peng3dnet serve` process (killed when
//! dropped, its resident memory and open descriptors read from `/proc`), the
//! raw peer of `peng3dnet-test-support` in the server's codec with the echo
//! server's handshake and echoes, sockets bound to another loopback address,
//! certificate files for `serve --tls-cert`, and the well-behaved echo client
//! (plain or TLS) that runs beside every case.

use peng3dnet_core::codec::Codec;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::codec::AnyCodec;
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::tls::TlsClientConfig;
use peng3dnet_test_pki::Pki;
use peng3dnet_test_support::{expect_runtime, RawPeer};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The bound on every single wait of the suite.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The program under test.
pub const PROGRAM: &str = env!("CARGO_BIN_EXE_peng3dnet");

/// The server's `ServerOptions::max_frame` (the program's default): the
/// largest frame, length prefix included, a client may send.
pub const MAX_FRAME: usize = 1 << 20;

/// The server's `ServerOptions::max_write_queue` (the program's default).
pub const MAX_WRITE_QUEUE: usize = 1 << 20;

/// `echo:echo` and `echo:ping` in the server's registry (registration order).
pub const ECHO_ID: u32 = 64;
/// See [`ECHO_ID`].
pub const ECHO_PING_ID: u32 = 65;

// ---------------------------------------------------------------------------
// The server process

/// `peng3dnet serve --addr 127.0.0.1:0 --codec NAME`, killed when dropped.
pub struct ServerProc {
    child: Child,
    /// The address it printed in its "listening on" line.
    pub addr: SocketAddr,
    /// Its codec.
    pub codec: AnyCodec,
    stderr: Arc<Mutex<String>>,
}

impl ServerProc {
    /// Starts the program and waits (bounded) for its "listening on" line,
    /// which carries the port the kernel chose.
    pub fn start(codec_name: &str) -> ServerProc {
        Self::start_with(codec_name, &[])
    }

    /// [`start`](Self::start) with more arguments of `serve`.
    pub fn start_with(codec_name: &str, extra: &[&str]) -> ServerProc {
        let codec = AnyCodec::from_name(codec_name).expect("a codec name");
        let mut child = Command::new(PROGRAM)
            .args(["serve", "--addr", "127.0.0.1:0", "--codec", codec_name])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peng3dnet serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr_pipe).read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so that the program never blocks on stdout.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("peng3dnet serve printed no listening line within {LIMIT:?}");
            }
        };
        expect_runtime(&line);
        // "peng3dnet: listening on 127.0.0.1:PORT (codec ..., ...)"
        let addr = line
            .strip_prefix("peng3dnet: listening on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        ServerProc {
            child,
            addr,
            codec,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the program wrote to stderr so far (complete once it exited).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Checks that the program still runs, then kills it. `Err` says how it
    /// ended if it had stopped by itself.
    pub fn finish(mut self) -> Result<(), String> {
        let status = self.child.try_wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
        match status {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "the server exited by itself ({status}); stderr:\n{}",
                    self.stderr()
                ))
            }
            Err(e) => Err(format!("try_wait failed: {e}")),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").expect("VmRSS of a running process")
}

/// How many descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("/proc/PID/fd of a running process")
}

/// Waits (bounded by `within`) until process `pid` has at most `max`
/// descriptors open; returns the last count.
pub fn wait_fds_at_most(pid: u32, max: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = fd_count(pid);
        if n <= max || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Bytes

/// Printable pseudo-random text (xorshift), the same for the same `seed`.
pub fn text(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x >> 40) as u8 % 26) as char
        })
        .collect()
}

/// A TCP connection to `addr` from the loopback address `from` (any of
/// 127.0.0.0/8 on Linux): how a test is two addresses for `--max-per-ip`.
pub fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind to {from}: {e}"));
    socket
        .connect_timeout(&addr.into(), LIMIT)
        .unwrap_or_else(|e| panic!("connect from {from} to {addr}: {e}"));
    socket.into()
}

/// A server certificate (for `localhost` and `127.0.0.1`) and its key in
/// PEM files for `serve --tls-cert --tls-key`, and the CA that signed it;
/// the files are removed when dropped.
pub struct TlsFiles {
    dir: PathBuf,
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
}

impl TlsFiles {
    /// Generates them into a directory of their own under cargo's temporary
    /// directory for tests.
    pub fn new(name: &str) -> TlsFiles {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hostile-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the PEM files");
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &pki.server.pem).expect("write the certificate");
        std::fs::write(&key, &pki.server.key_pem).expect("write the key");
        TlsFiles {
            dir,
            cert,
            key,
            ca_pem: pki.ca.pem,
        }
    }

    /// The arguments of `serve` that turn TLS on with these files.
    pub fn serve_args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// Client options that verify the server against the CA (SERVERAUTH).
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            tls: Some(
                TlsClientConfig::verify(self.ca_pem.as_bytes(), "localhost")
                    .expect("a client configuration of the test CA"),
            ),
            ..ClientOptions::default()
        }
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Bytes no codec of the server decodes as any message: `0xc1` is never
/// used in MessagePack, and in postcard it starts a varint (or a bool) that
/// the rest does not complete.
pub const GARBAGE: &[u8] = &[0xc1, 0xff, 0xff];

// ---------------------------------------------------------------------------
// The raw peer

/// A hostile peer on a plain blocking socket, in the server's codec (every
/// wait bounded by [`LIMIT`]).
pub type Raw = RawPeer<AnyCodec>;

/// What a hostile peer does against the echo server beyond
/// [`RawPeer`]'s frames: the handshake with the echo ids checked, and echoes.
pub trait EchoPeer {
    /// Reads the server's `handshake` and checks the echo ids.
    fn read_echo_handshake(&mut self);
    /// After `hello`: settype classic, the handshake (echo ids checked),
    /// accept.
    fn handshake_rest(&mut self);
    /// The whole classic handshake, as a well-behaved client does it, with
    /// the echo ids checked.
    fn echo_handshake(&mut self);
    /// Sends `text` as `echo:echo` and checks that the next frame is its
    /// echo: the connection goes on.
    fn echo(&mut self, text: &str);
}

impl EchoPeer for Raw {
    #[track_caller]
    fn read_echo_handshake(&mut self) {
        self.read_handshake();
        assert_eq!(self.id("echo:echo"), ECHO_ID);
        assert_eq!(self.id("echo:ping"), ECHO_PING_ID);
    }

    #[track_caller]
    fn handshake_rest(&mut self) {
        self.settype("classic");
        self.read_echo_handshake();
        self.accept();
    }

    #[track_caller]
    fn echo_handshake(&mut self) {
        self.hello();
        self.handshake_rest();
    }

    #[track_caller]
    fn echo(&mut self, text: &str) {
        self.send_as(ECHO_ID, text);
        let body = self.expect(ECHO_ID);
        let back: &str = self.codec.decode(&body).expect("an echo body");
        assert_eq!(back, text, "the echo came back changed");
    }
}

// ---------------------------------------------------------------------------
// The well-behaved client

/// What the well-behaved client did.
#[derive(Debug, Clone)]
pub struct GoodStats {
    /// Echoes sent and answered unchanged.
    pub echoes: u64,
    /// The slowest round trip.
    pub max_rtt: Duration,
    /// Every round trip, in order.
    pub rtts: Vec<Duration>,
}

impl GoodStats {
    /// The round trip that `percent` of them took at most (nearest rank).
    pub fn percentile(&self, percent: u32) -> Duration {
        let mut sorted = self.rtts.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (sorted.len() * percent as usize).div_ceil(100).max(1);
        sorted[rank.min(sorted.len()) - 1]
    }

    /// Only the round trips from the `from`th on (those under a load that
    /// began when [`GoodClient::echoes`] said `from`).
    pub fn since(mut self, from: u64) -> GoodStats {
        self.rtts.drain(..(from as usize).min(self.rtts.len()));
        self.echoes = self.rtts.len() as u64;
        self.max_rtt = self.rtts.iter().copied().max().unwrap_or_default();
        self
    }

    /// "N echoes, p50 A ms, p99 B ms, slowest C ms".
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{} echoes, p50 {:.1} ms, p99 {:.1} ms, slowest {:.1} ms",
            self.echoes,
            ms(self.percentile(50)),
            ms(self.percentile(99)),
            ms(self.max_rtt)
        )
    }
}

/// A `Client` (codec found from the server's hello) that sends `echo:echo`
/// and checks each answer until it is stopped; the first error ends it.
pub struct GoodClient {
    stop: Arc<AtomicBool>,
    count: Arc<Mutex<u64>>,
    thread: JoinHandle<Result<GoodStats, String>>,
}

impl GoodClient {
    /// Connects and starts echoing on its own thread.
    pub fn start(addr: SocketAddr) -> GoodClient {
        Self::start_with(addr, ClientOptions::default())
    }

    /// [`start`](Self::start) with these options (TLS, for one).
    pub fn start_with(addr: SocketAddr, options: ClientOptions) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(Mutex::new(0));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&count));
        let thread = thread::Builder::new()
            .name("good-client".into())
            .spawn(move || good_client(addr, options, &s, &c))
            .expect("spawn the good client");
        GoodClient {
            stop,
            count,
            thread,
        }
    }

    /// Echoes answered so far.
    pub fn echoes(&self) -> u64 {
        *self.count.lock().unwrap()
    }

    /// Whether it stopped (on an error).
    pub fn stopped(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits (bounded) until it has `n` answers.
    pub fn wait_echoes(&self, n: u64) -> bool {
        let deadline = Instant::now() + LIMIT;
        while self.echoes() < n && !self.stopped() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.echoes() >= n
    }

    /// Stops it, closes its connection and returns what it did.
    pub fn finish(self) -> Result<GoodStats, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap_or_else(|_| Err("the good client panicked".into()))
    }
}

fn good_client(
    addr: SocketAddr,
    options: ClientOptions,
    stop: &AtomicBool,
    count: &Mutex<u64>,
) -> Result<GoodStats, String> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("good client: {what}: {err}");
    let mut c = Client::connect_with(addr, echo::registry(), AnyCodec::default(), options)
        .map_err(|err| e("connect", &err))?;
    c.wait_connected(LIMIT)
        .map_err(|err| e("handshake", &err))?;
    let mut stats = GoodStats {
        echoes: 0,
        max_rtt: Duration::ZERO,
        rtts: Vec::new(),
    };
    while !stop.load(Ordering::SeqCst) {
        // Every 16th message is large enough to be compressed both ways.
        let message = if stats.echoes % 16 == 15 {
            text(20_000, stats.echoes)
        } else {
            format!("good client message {}", stats.echoes)
        };
        let sent = Instant::now();
        c.send::<Echo>(&message.as_str())
            .map_err(|err| e("send", &err))?;
        loop {
            match c.recv(LIMIT).map_err(|err| e("recv", &err))? {
                ClientEvent::Packet(p) => {
                    let back = p.decode::<Echo>().map_err(|err| e("decode", &err))?;
                    if back != message {
                        return Err(format!(
                            "good client: echo {} came back changed",
                            stats.echoes
                        ));
                    }
                    break;
                }
                // Reported once, before the first answer.
                ClientEvent::Connected if stats.echoes == 0 => {}
                other => return Err(format!("good client: unexpected event {other:?}")),
            }
        }
        let rtt = sent.elapsed();
        stats.max_rtt = stats.max_rtt.max(rtt);
        stats.rtts.push(rtt);
        stats.echoes += 1;
        *count.lock().unwrap() = stats.echoes;
        thread::sleep(Duration::from_millis(2));
    }
    c.close(CloseReason::UserRequest)
        .map_err(|err| e("close", &err))?;
    Ok(stats)
}
