//! Helpers of `tests/hostile.rs`: the `peng3dnet serve` process (killed when
//! dropped, its resident memory and open descriptors read from `/proc`), a
//! raw peer on a plain socket that writes whatever bytes a case wants and
//! reads the server's answer with a bounded wait, and the well-behaved echo
//! client that runs beside every case.

use flate2::read::ZlibDecoder;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::messages::{CloseConn, HandshakeAccept, Hello, SetType};
use peng3dnet_core::registry::internal;
use peng3dnet_core::wire::{encode_frame, Flags};
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::codec::AnyCodec;
use peng3dnet_std::echo::{self, Echo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
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
        let codec = AnyCodec::from_name(codec_name).expect("a codec name");
        let mut child = Command::new(PROGRAM)
            .args(["serve", "--addr", "127.0.0.1:0", "--codec", codec_name])
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

/// One frame.
pub fn frame(id: u32, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + 10];
    let n = encode_frame(&mut out, id, Flags(flags), body).expect("room for the frame");
    out.truncate(n);
    out
}

/// `msg` encoded with `codec`.
pub fn enc<M: Serialize + ?Sized>(codec: AnyCodec, msg: &M) -> Vec<u8> {
    let mut out = vec![0u8; codec.encoded_len(msg).expect("encodable")];
    let n = codec.encode(msg, &mut out).expect("encodes");
    out.truncate(n);
    out
}

/// `data` as one zlib stream (RFC 1950) at `level`.
pub fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
    z.write_all(data).expect("compress");
    z.finish().expect("compress")
}

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

/// Bytes no codec of the server decodes as any message: `0xc1` is never
/// used in MessagePack, and in postcard it starts a varint (or a bool) that
/// the rest does not complete.
pub const GARBAGE: &[u8] = &[0xc1, 0xff, 0xff];

// ---------------------------------------------------------------------------
// The raw peer

/// What a raw read found.
#[derive(Debug)]
pub enum Got {
    /// A whole frame: id and body (inflated when the server compressed it).
    Frame(u32, Vec<u8>),
    /// End of stream or reset.
    End,
    /// Nothing within the bound.
    Timeout,
}

/// How a connection ended, as the raw peer sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server sent `closeconn` with this reason, then ended the stream.
    Closed(String),
    /// The stream ended (or was reset) without a `closeconn`.
    Ended,
    /// The server sent `closeconn` but the stream went on: this frame id came.
    FrameAfterClose(String, u32),
    /// No end within the bound.
    Timeout,
}

/// `Outcome::Closed(reason)`.
pub fn closed(reason: &str) -> Outcome {
    Outcome::Closed(reason.to_string())
}

/// The server's `handshake` as a raw client decodes it.
#[derive(Deserialize)]
struct RawHandshake {
    #[allow(dead_code)]
    version: String,
    protoversion: u32,
    registry: BTreeMap<String, u32>,
}

/// A hostile peer on a plain blocking socket.
pub struct Raw {
    /// The socket.
    pub s: TcpStream,
    /// The server's codec.
    pub codec: AnyCodec,
}

impl Raw {
    /// Connects (bounded).
    pub fn connect(addr: SocketAddr, codec: AnyCodec) -> Raw {
        let s = TcpStream::connect_timeout(&addr, LIMIT).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        Raw { s, codec }
    }

    /// Writes all of `bytes` (bounded by the write timeout).
    #[track_caller]
    pub fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("raw write");
    }

    /// Writes one frame.
    #[track_caller]
    pub fn frame(&mut self, id: u32, flags: u16, body: &[u8]) {
        self.write(&frame(id, flags, body));
    }

    /// `msg` in the server's codec.
    pub fn enc<M: Serialize + ?Sized>(&self, msg: &M) -> Vec<u8> {
        enc(self.codec, msg)
    }

    /// Writes `msg` as packet `id`.
    #[track_caller]
    pub fn send<M: Serialize + ?Sized>(&mut self, id: u32, msg: &M) {
        let body = self.enc(msg);
        self.frame(id, 0, &body);
    }

    /// The next frame, the end of the stream, or a timeout at `deadline`.
    #[track_caller]
    pub fn read_frame(&mut self, deadline: Instant) -> Got {
        let mut len = [0u8; 4];
        match self.read_exact_by(&mut len, deadline, true) {
            Ok(()) => {}
            Err(r) => return r,
        }
        let len = u32::from_be_bytes(len) as usize;
        assert!(
            (6..=16 << 20).contains(&len),
            "the server sent a frame length of {len}"
        );
        let mut rest = vec![0u8; len];
        if let Err(r) = self.read_exact_by(&mut rest, deadline, false) {
            return r;
        }
        let id = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let flags = u16::from_be_bytes(rest[4..6].try_into().unwrap());
        let mut body = rest[6..].to_vec();
        if flags & 1 != 0 {
            let mut out = Vec::new();
            ZlibDecoder::new(&body[..])
                .take(16 << 20)
                .read_to_end(&mut out)
                .expect("the server's compressed body inflates");
            body = out;
        }
        Got::Frame(id, body)
    }

    fn read_exact_by(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        at_start: bool,
    ) -> Result<(), Got> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Got::Timeout);
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut buf[got..]) {
                Ok(0) if at_start && got == 0 => return Err(Got::End),
                Ok(0) => panic!("the stream ended inside a frame"),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Got::Timeout)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    return Err(Got::End)
                }
                Err(e) => panic!("raw read: {e}"),
            }
        }
        Ok(())
    }

    /// The next frame, which must come within [`LIMIT`] and be packet `id`.
    #[track_caller]
    pub fn expect(&mut self, id: u32) -> Vec<u8> {
        match self.read_frame(Instant::now() + LIMIT) {
            Got::Frame(got, body) => {
                assert_eq!(got, id, "expected packet {id}, got {got}");
                body
            }
            other => panic!("expected packet {id}, got {other:?}"),
        }
    }

    /// Reads `hello`.
    #[track_caller]
    pub fn hello(&mut self) {
        let body = self.expect(internal::HELLO);
        let hello: Hello = self.codec.decode(&body).expect("a hello");
        assert_eq!(hello.protoversion, 2);
    }

    /// Sends `settype`.
    #[track_caller]
    pub fn settype(&mut self, conntype: &str) {
        self.send(internal::SETTYPE, &SetType { conntype });
    }

    /// Sends `handshake.accept {success: true}`.
    #[track_caller]
    pub fn accept(&mut self) {
        self.send(
            internal::HANDSHAKE_ACCEPT,
            &HandshakeAccept { success: true },
        );
    }

    /// Reads the server's `handshake` and checks the echo ids.
    #[track_caller]
    pub fn read_handshake(&mut self) {
        let body = self.expect(internal::HANDSHAKE);
        let hs: RawHandshake = self.codec.decode(&body).expect("a handshake");
        assert_eq!(hs.protoversion, 2);
        assert_eq!(hs.registry.get("echo:echo"), Some(&ECHO_ID));
        assert_eq!(hs.registry.get("echo:ping"), Some(&ECHO_PING_ID));
    }

    /// The whole classic handshake, as a well-behaved client does it.
    #[track_caller]
    pub fn handshake(&mut self) {
        self.hello();
        self.settype("classic");
        self.read_handshake();
        self.accept();
    }

    /// Sends `text` as `echo:echo` and checks that the next frame is its echo:
    /// the connection goes on.
    #[track_caller]
    pub fn echo(&mut self, text: &str) {
        self.send(ECHO_ID, text);
        let body = self.expect(ECHO_ID);
        let back: &str = self.codec.decode(&body).expect("an echo body");
        assert_eq!(back, text, "the echo came back changed");
    }

    /// Sends `closeconn` with `reason`.
    #[track_caller]
    pub fn closeconn(&mut self, reason: &str) {
        self.send(
            internal::CLOSECONN,
            &CloseConn {
                reason: Some(reason),
            },
        );
    }

    /// Reads up to the server's `closeconn` (skipping other frames) and
    /// then the end of the stream, bounded by [`LIMIT`] each.
    #[track_caller]
    pub fn outcome(&mut self) -> Outcome {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.read_frame(deadline) {
                Got::Frame(id, body) if id == internal::CLOSECONN => {
                    let reason = match self.codec.decode::<CloseConn>(&body) {
                        Ok(c) => c.reason.unwrap_or("(none)").to_string(),
                        Err(_) => "(undecodable closeconn)".to_string(),
                    };
                    return match self.read_frame(Instant::now() + LIMIT) {
                        Got::End => Outcome::Closed(reason),
                        Got::Frame(id, ..) => Outcome::FrameAfterClose(reason, id),
                        Got::Timeout => Outcome::Timeout,
                    };
                }
                Got::Frame(..) => {}
                Got::End => return Outcome::Ended,
                Got::Timeout => return Outcome::Timeout,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The well-behaved client

/// What the well-behaved client did.
#[derive(Debug, Clone, Copy)]
pub struct GoodStats {
    /// Echoes sent and answered unchanged.
    pub echoes: u64,
    /// The slowest round trip.
    pub max_rtt: Duration,
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
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(Mutex::new(0));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&count));
        let thread = thread::Builder::new()
            .name("good-client".into())
            .spawn(move || good_client(addr, &s, &c))
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
    stop: &AtomicBool,
    count: &Mutex<u64>,
) -> Result<GoodStats, String> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("good client: {what}: {err}");
    let mut c = Client::connect_with(
        addr,
        echo::registry(),
        AnyCodec::default(),
        ClientOptions::default(),
    )
    .map_err(|err| e("connect", &err))?;
    c.wait_connected(LIMIT)
        .map_err(|err| e("handshake", &err))?;
    let mut stats = GoodStats {
        echoes: 0,
        max_rtt: Duration::ZERO,
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
        stats.max_rtt = stats.max_rtt.max(sent.elapsed());
        stats.echoes += 1;
        *count.lock().unwrap() = stats.echoes;
        thread::sleep(Duration::from_millis(2));
    }
    c.close(CloseReason::UserRequest)
        .map_err(|err| e("close", &err))?;
    Ok(stats)
}
