//! Helpers for driving the Python reference peer (`tests/python/peer.py`) and
//! the `peng3dnet` program from Rust: the venv made once per process by
//! `tests/python/setup.sh`, child processes that are always killed, bounded
//! waits on their line protocol, and a frame-inspecting TCP proxy.
//!
//! Shared by `tests/python_interop.rs` and `benches/python_compare.rs`, so
//! not every item is used by both.
#![allow(dead_code)]

use peng3dnet_std::server::Runtime;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The bound on every wait of these tests.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The repository root (the workspace holding this package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("std-adapter has a parent directory")
        .to_path_buf()
}

/// `tests/python/peer.py`.
pub fn peer_py() -> PathBuf {
    repo_root().join("tests/python/peer.py")
}

/// Runs `tests/python/setup.sh` with extra environment variables and returns
/// the python path it prints last, or why it failed (its stderr included).
pub fn run_setup(envs: &[(&str, &str)]) -> Result<PathBuf, String> {
    let root = repo_root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tests/python/setup.sh"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run bash tests/python/setup.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "tests/python/setup.sh failed ({}):\n{}{}",
            out.status,
            stdout,
            stderr.trim_end()
        ));
    }
    let last = stdout.lines().last().unwrap_or("").trim();
    let py = PathBuf::from(last);
    if last.is_empty() || !py.exists() {
        return Err(format!(
            "tests/python/setup.sh printed no usable python path (last line {last:?}):\n{stderr}"
        ));
    }
    Ok(py)
}

/// The venv's python, from `setup.sh` run once per test process. Panics (the
/// test fails, it is never skipped) when the Python side cannot be installed.
pub fn python() -> &'static Path {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PY.get_or_init(|| run_setup(&[])) {
        Ok(p) => p,
        Err(e) => panic!("the Python reference peer is not available: {e}"),
    }
}

/// The `peng3dnet` program built for these tests (set by cargo for
/// integration tests and benches of this package).
pub fn rust_bin() -> &'static str {
    env!("CARGO_BIN_EXE_peng3dnet")
}

/// A child process whose stdout lines are collected by a thread; killed and
/// reaped when dropped.
pub struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// Signalled when the stderr thread reached end of file.
    stderr_done: Receiver<()>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr piped and stdin closed.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        let (done_tx, stderr_done) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            let _ = done_tx.send(());
        });
        Proc {
            name: name.to_string(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_done,
            status: None,
        }
    }

    /// `python tests/python/peer.py ARGS...`.
    pub fn python(args: &[&str]) -> Proc {
        let mut cmd = Command::new(python());
        cmd.arg("-u").arg(peer_py()).args(args);
        let name = format!("peer.py {}", args.first().copied().unwrap_or(""));
        Proc::spawn(&name, cmd)
    }

    /// `peng3dnet ARGS...`.
    pub fn rust(args: &[&str]) -> Proc {
        let mut cmd = Command::new(rust_bin());
        cmd.args(args);
        let name = format!("peng3dnet {}", args.first().copied().unwrap_or(""));
        Proc::spawn(&name, cmd)
    }

    /// A Python echo server (`peer.py serve --port 0 EXTRA...`) and its port.
    pub fn python_server(extra: &[&str]) -> (Proc, u16) {
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(extra);
        let mut p = Proc::python(&args);
        let line = p.expect(|l| l.starts_with("LISTENING "), "LISTENING <port>");
        let port = line["LISTENING ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad LISTENING line {line:?}: {e}"));
        (p, port)
    }

    /// `peng3dnet serve --addr 127.0.0.1:0 EXTRA...` and its address.
    pub fn rust_server(extra: &[&str]) -> (Proc, SocketAddr) {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut p = Proc::rust(&args);
        let line = p.expect(|l| l.contains("listening on "), "listening on ADDR");
        peng3dnet_test_support::expect_runtime(&line);
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (p, addr)
    }

    /// What the process wrote so far (stdout lines seen, then stderr), for
    /// failure messages.
    pub fn transcript(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.seen.join("\n"),
            self.name,
            self.stderr.lock().unwrap()
        )
    }

    /// The stdout lines seen so far.
    pub fn lines(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// Waits up to `timeout` for a new stdout line matching `pred`; `None`
    /// when none came (or the process ended).
    pub fn expect_within(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits (up to [`LIMIT`]) for a new stdout line matching `pred` and
    /// returns it; lines passed over are kept for [`Proc::saw`].
    pub fn expect(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let t = self.transcript();
                    panic!("{}: no line {what} within {LIMIT:?}\n{t}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Give stderr's thread a moment to collect the end.
                    thread::sleep(Duration::from_millis(50));
                    let t = self.transcript();
                    panic!("{}: exited before a line {what}\n{t}", self.name)
                }
            }
        }
    }

    /// Waits for the exact stdout line `line`.
    pub fn expect_line(&mut self, line: &str) {
        self.expect(|l| l == line, &format!("{line:?}"));
    }

    /// Whether a stdout line equal to `line` was seen already.
    pub fn saw(&mut self, line: &str) -> bool {
        self.lines().iter().any(|l| l == line)
    }

    /// Waits (up to [`LIMIT`]) for the process to exit; returns its status
    /// and all its stdout lines.
    pub fn wait(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(s) = self.status {
                break s;
            }
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    break s;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let t = self.transcript();
                    panic!("{} did not exit within {LIMIT:?}\n{t}", self.name)
                }
                Err(e) => panic!("{}: wait failed: {e}", self.name),
            }
        };
        // The stdout thread ends at EOF; collect what it still holds.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
        // And stderr, to its end.
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        (status, self.seen.clone())
    }

    /// Waits for the exit and panics unless it succeeded; returns stdout.
    pub fn success(&mut self) -> Vec<String> {
        let (status, lines) = self.wait();
        if !status.success() {
            thread::sleep(Duration::from_millis(50));
            let t = self.transcript();
            panic!("{} exited with {status}\n{t}", self.name);
        }
        lines
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One frame seen by the [`FrameProxy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The length prefix (header and body).
    pub length: u32,
    /// The packet id.
    pub pid: u32,
    /// The flags.
    pub flags: u16,
}

impl FrameInfo {
    /// Whether `FLAG_COMPRESSED` is set.
    pub fn compressed(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Frames seen in each direction: `[client -> server, server -> client]`.
type Seen = Arc<Mutex<[Vec<FrameInfo>; 2]>>;

/// A TCP proxy on 127.0.0.1 that forwards every connection to `upstream`
/// unchanged and records the header of every frame in each direction.
pub struct FrameProxy {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
}

impl FrameProxy {
    /// Listens on an ephemeral port.
    pub fn start(upstream: SocketAddr) -> FrameProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let addr = listener.local_addr().expect("proxy address");
        let seen: Seen = Arc::new(Mutex::new([Vec::new(), Vec::new()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((down, _)) => {
                        let Ok(up) = TcpStream::connect_timeout(&upstream, LIMIT) else {
                            continue;
                        };
                        let _ = down.set_nonblocking(false);
                        for (from, to, dir) in [
                            (down.try_clone(), up.try_clone(), 0usize),
                            (up.try_clone(), down.try_clone(), 1usize),
                        ] {
                            let (Ok(from), Ok(to)) = (from, to) else {
                                continue;
                            };
                            let seen = Arc::clone(&seen2);
                            thread::spawn(move || pump(from, to, dir, seen));
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FrameProxy { addr, seen, stop }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frames seen so far from the client to the server.
    pub fn to_server(&self) -> Vec<FrameInfo> {
        self.seen.lock().unwrap()[0].clone()
    }

    /// Frames seen so far from the server to the client.
    pub fn to_client(&self) -> Vec<FrameInfo> {
        self.seen.lock().unwrap()[1].clone()
    }
}

impl Drop for FrameProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, parsing frame headers on the way; at the end shuts
/// down the write half of `to` so a close travels through.
fn pump(mut from: TcpStream, mut to: TcpStream, dir: usize, seen: Seen) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 10 {
            let length = u32::from_be_bytes(pending[0..4].try_into().unwrap());
            let total = 4 + length as usize;
            if length < 6 || pending.len() < total {
                break;
            }
            let pid = u32::from_be_bytes(pending[4..8].try_into().unwrap());
            let flags = u16::from_be_bytes(pending[8..10].try_into().unwrap());
            seen.lock().unwrap()[dir].push(FrameInfo { length, pid, flags });
            pending.drain(..total);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The server the in-process servers of a test run on: `PENG3DNET_RUNTIME`
/// (`mio`, the default, or `tokio`, then on two workers), as the program's
/// `serve --runtime` default.
pub fn runtime() -> Runtime {
    match std::env::var("PENG3DNET_RUNTIME").as_deref() {
        Ok("tokio") => Runtime::Tokio { workers: 2 },
        Ok("mio") | Err(_) => Runtime::Mio,
        Ok(other) => panic!("PENG3DNET_RUNTIME={other:?}: mio or tokio"),
    }
}
