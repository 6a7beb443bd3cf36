//! The TLS layer over real loopback sockets (the server's end non-blocking in
//! an edge-triggered mio loop, the client's end blocking in a thread) and over
//! an in-memory transport that cuts the byte stream where the test says.
//! Certificates come from `peng3dnet-test-pki` (rcgen). Every loop is bounded in count and
//! by a 10 s deadline; sockets carry 10 s timeouts.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use peng3dnet_core::SecurityLevel;
use peng3dnet_std::tls::{PemItem, TlsClientConfig, TlsError, TlsServerConfig, TlsStream};
use peng3dnet_test_pki::Pki;

const LIMIT: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

/// Certificates for `localhost` and 127.0.0.1.
fn pki() -> Pki {
    Pki::generate(&["localhost", "127.0.0.1"])
}

fn server_config(pki: &Pki, require_client_cert: bool) -> TlsServerConfig {
    let ca = require_client_cert.then_some(pki.ca.pem.as_bytes());
    TlsServerConfig::from_pem(pki.server.pem.as_bytes(), pki.server.key_pem.as_bytes(), ca).unwrap()
}

/// Deterministic pseudo-random bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no progress in 10 s"),
    )
}

#[derive(Debug)]
struct Outcome {
    received: Vec<u8>,
    level: Option<SecurityLevel>,
}

/// Accepts one connection and runs the server's end on a non-blocking mio
/// socket, strictly on edge-triggered readiness events: sends `send`, reads
/// until the client's `close_notify`. Ends with the first error.
fn serve(listener: &TcpListener, config: &TlsServerConfig, send: &[u8]) -> io::Result<Outcome> {
    let deadline = Instant::now() + LIMIT;
    listener.set_nonblocking(true)?;
    let sock = loop {
        match listener.accept() {
            Ok((sock, _)) => break sock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(timed_out("accept"));
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    };
    sock.set_nonblocking(true)?;
    let mut tls = TlsStream::server(mio::net::TcpStream::from_std(sock), config)?;
    assert_eq!(tls.security_level(), None);
    let mut poll = Poll::new()?;
    poll.registry().register(
        tls.get_mut(),
        Token(0),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 16 * 1024];
    let mut received = Vec::new();
    let mut level = None;
    let mut sent = 0;
    let mut closed = false;
    for _ in 0..100_000 {
        if Instant::now() > deadline {
            return Err(timed_out("server"));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        if events.is_empty() {
            // Only readiness events drive the stream: a stream that returned
            // `WouldBlock` without draining the socket would stall here.
            continue;
        }
        while !closed {
            match tls.read_plain(&mut buf) {
                Ok(0) => closed = true,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if level.is_none() {
            level = tls.security_level();
        }
        while sent < send.len() {
            match tls.write_plain(&send[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let flushed = tls.flush_tls()?;
        if closed && sent == send.len() && flushed {
            return Ok(Outcome { received, level });
        }
    }
    Err(timed_out("server loop"))
}

/// The client's end on a blocking socket: completes the handshake, sends
/// `send`, reads `expect` bytes, closes with `close_notify`.
fn client(
    addr: SocketAddr,
    config: &TlsClientConfig,
    send: &[u8],
    expect: usize,
) -> io::Result<Outcome> {
    let sock = TcpStream::connect(addr)?;
    // A blocking read or write that times out returns `WouldBlock`, which
    // fails the client rather than hanging it.
    sock.set_read_timeout(Some(LIMIT))?;
    sock.set_write_timeout(Some(LIMIT))?;
    let mut tls = TlsStream::client(sock, config)?;
    assert_eq!(tls.security_level(), None);
    tls.complete_handshake()?;
    assert!(!tls.is_handshaking());
    let level = tls.security_level();
    let mut sent = 0;
    while sent < send.len() {
        sent += tls.write_plain(&send[sent..])?;
    }
    if !tls.flush_tls()? {
        return Err(timed_out("client flush"));
    }
    let mut received = Vec::with_capacity(expect);
    let mut buf = vec![0u8; 16 * 1024];
    while received.len() < expect {
        match tls.read_plain(&mut buf)? {
            0 => break,
            n => received.extend_from_slice(&buf[..n]),
        }
    }
    tls.send_close_notify();
    if !tls.flush_tls()? {
        return Err(timed_out("client close"));
    }
    Ok(Outcome { received, level })
}

/// Runs a server (this thread) and a client (another thread) against each
/// other over loopback.
fn run(
    server: &TlsServerConfig,
    client_config: TlsClientConfig,
    to_client: &[u8],
    to_server: Vec<u8>,
) -> (io::Result<Outcome>, io::Result<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let expect = to_client.len();
    let handle = thread::spawn(move || client(addr, &client_config, &to_server, expect));
    let served = serve(&listener, server, to_client);
    let client_result = handle.join().expect("client thread panicked");
    (served, client_result)
}

fn exchange_mib(server: &TlsServerConfig, client_config: TlsClientConfig) -> (Outcome, Outcome) {
    let to_client = payload(MIB, 1);
    let to_server = payload(MIB, 2);
    let started = Instant::now();
    let (served, client_result) = run(server, client_config, &to_client, to_server.clone());
    let (served, client_result) = (served.unwrap(), client_result.unwrap());
    assert!(started.elapsed() < LIMIT);
    assert!(served.received == to_server, "server got corrupted data");
    assert!(
        client_result.received == to_client,
        "client got corrupted data"
    );
    (served, client_result)
}

fn rustls_error(e: &io::Error) -> &rustls::Error {
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {e}"))
}

#[test]
fn no_verification_exchanges_a_mib_each_way_encrypted() {
    let pki = pki();
    let (server, client) = exchange_mib(
        &server_config(&pki, false),
        TlsClientConfig::no_verification().unwrap(),
    );
    assert_eq!(client.level, Some(SecurityLevel::Encrypted));
    assert_eq!(server.level, Some(SecurityLevel::Encrypted));
}

#[test]
fn verified_server_exchanges_a_mib_each_way_with_server_auth() {
    let pki = pki();
    for name in ["localhost", "127.0.0.1"] {
        let (server, client) = exchange_mib(
            &server_config(&pki, false),
            TlsClientConfig::verify(pki.ca.pem.as_bytes(), name).unwrap(),
        );
        assert_eq!(client.level, Some(SecurityLevel::ServerAuth), "{name}");
        assert_eq!(server.level, Some(SecurityLevel::Encrypted), "{name}");
    }
}

#[test]
fn mutual_auth_exchanges_a_mib_each_way_with_both_auth() {
    let pki = pki();
    let client_config = TlsClientConfig::verify(pki.ca.pem.as_bytes(), "localhost")
        .unwrap()
        .with_client_cert(pki.client.pem.as_bytes(), pki.client.key_pem.as_bytes())
        .unwrap();
    assert!(client_config.has_client_cert());
    let (server, client) = exchange_mib(&server_config(&pki, true), client_config.clone());
    assert_eq!(client.level, Some(SecurityLevel::BothAuth));
    assert_eq!(server.level, Some(SecurityLevel::BothAuth));
}

#[test]
fn client_cert_not_asked_for_leaves_server_auth() {
    let pki = pki();
    let client_config = TlsClientConfig::verify(pki.ca.pem.as_bytes(), "localhost")
        .unwrap()
        .with_client_cert(pki.client.pem.as_bytes(), pki.client.key_pem.as_bytes())
        .unwrap();
    let (served, client) = run(
        &server_config(&pki, false),
        client_config,
        b"hi",
        b"yo".to_vec(),
    );
    let (served, client) = (served.unwrap(), client.unwrap());
    assert_eq!(served.received, b"yo");
    assert_eq!(client.received, b"hi");
    assert_eq!(client.level, Some(SecurityLevel::ServerAuth));
    assert_eq!(served.level, Some(SecurityLevel::Encrypted));
}

/// What a failed handshake must leave on one end: any error, or an I/O
/// error carrying a rustls error for which this holds.
type TlsErrorCheck = Option<fn(&rustls::Error) -> bool>;

/// A handshake that must fail on both ends.
struct HandshakeFailure {
    /// The case, for the assertion messages.
    what: &'static str,
    /// Whether the server asks for (and verifies) a client certificate.
    require_client_cert: bool,
    /// The client's configuration.
    client: fn(&Pki) -> TlsClientConfig,
    /// What the client's end must report.
    client_error: TlsErrorCheck,
    /// What the server's end must report.
    server_error: TlsErrorCheck,
}

/// Every way a handshake fails against these certificates. With a client
/// certificate required, TLS 1.3 lets the client's handshake complete
/// before the server checks: its next read fails with the server's alert.
const HANDSHAKE_FAILURES: &[HandshakeFailure] = &[
    HandshakeFailure {
        what: "server certificate of another CA",
        require_client_cert: false,
        client: |p| TlsClientConfig::verify(p.other_ca.pem.as_bytes(), "localhost").unwrap(),
        client_error: Some(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            )
        }),
        server_error: None,
    },
    HandshakeFailure {
        what: "host name example.com not in the certificate",
        require_client_cert: false,
        client: |p| TlsClientConfig::verify(p.ca.pem.as_bytes(), "example.com").unwrap(),
        client_error: Some(not_valid_for_name),
        server_error: None,
    },
    HandshakeFailure {
        what: "address 127.0.0.2 not in the certificate",
        require_client_cert: false,
        client: |p| TlsClientConfig::verify(p.ca.pem.as_bytes(), "127.0.0.2").unwrap(),
        client_error: Some(not_valid_for_name),
        server_error: None,
    },
    HandshakeFailure {
        what: "a server requiring client certificates, a client without one",
        require_client_cert: true,
        client: |p| TlsClientConfig::verify(p.ca.pem.as_bytes(), "localhost").unwrap(),
        client_error: Some(|e| matches!(e, rustls::Error::AlertReceived(_))),
        server_error: Some(|e| e == &rustls::Error::NoCertificatesPresented),
    },
    HandshakeFailure {
        what: "a server requiring client certificates, one from another CA",
        require_client_cert: true,
        client: |p| {
            TlsClientConfig::verify(p.ca.pem.as_bytes(), "localhost")
                .unwrap()
                .with_client_cert(p.stranger.pem.as_bytes(), p.stranger.key_pem.as_bytes())
                .unwrap()
        },
        client_error: None,
        server_error: Some(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            )
        }),
    },
];

/// The server's certificate does not name the host the client asked for.
fn not_valid_for_name(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(c) if format!("{c:?}").contains("NotValidForName"))
}

/// `result` failed as `check` says.
#[track_caller]
fn assert_failed(what: &str, end: &str, result: &io::Result<Outcome>, check: TlsErrorCheck) {
    let err = match result {
        Ok(outcome) => panic!("{what}: the {end} went on: {outcome:?}"),
        Err(e) => e,
    };
    if let Some(check) = check {
        let tls = rustls_error(err);
        assert!(check(tls), "{what}: the {end} failed with {tls:?} ({err})");
    }
}

#[test]
fn failed_handshakes_fail_the_client_and_the_server() {
    let pki = pki();
    for case in HANDSHAKE_FAILURES {
        let (served, client) = run(
            &server_config(&pki, case.require_client_cert),
            (case.client)(&pki),
            b"hi",
            b"x".to_vec(),
        );
        assert_failed(case.what, "client", &client, case.client_error);
        assert_failed(case.what, "server", &served, case.server_error);
    }
}

#[test]
fn a_client_that_does_not_verify_cannot_present_a_certificate() {
    let pki = pki();
    let err = TlsClientConfig::no_verification()
        .unwrap()
        .with_client_cert(pki.client.pem.as_bytes(), pki.client.key_pem.as_bytes())
        .unwrap_err();
    assert!(matches!(err, TlsError::ClientCertWithoutVerification));
}

#[test]
fn bad_pem_input_is_a_named_error() {
    let pki = pki();
    let key = pki.server.key_pem.as_bytes();
    let cert = pki.server.pem.as_bytes();
    assert!(matches!(
        TlsServerConfig::from_pem(b"", key, None),
        Err(TlsError::Missing(PemItem::CertificateChain))
    ));
    assert!(matches!(
        TlsServerConfig::from_pem(cert, cert, None),
        Err(TlsError::Missing(PemItem::PrivateKey))
    ));
    assert!(matches!(
        TlsServerConfig::from_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n", key, None),
        Err(TlsError::Pem {
            item: PemItem::CertificateChain,
            ..
        })
    ));
    // A key that does not belong to the certificate.
    assert!(matches!(
        TlsServerConfig::from_pem(cert, pki.client.key_pem.as_bytes(), None),
        Err(TlsError::Config(_))
    ));
    assert!(matches!(
        TlsClientConfig::verify(b"not pem", "localhost"),
        Err(TlsError::Missing(PemItem::CaCertificates))
    ));
    assert!(matches!(
        TlsClientConfig::verify(pki.ca.pem.as_bytes(), "not a name!"),
        Err(TlsError::InvalidServerName(_))
    ));
    assert!(matches!(
        TlsServerConfig::from_pem_files("/nonexistent/chain.pem", "/nonexistent/key.pem", None),
        Err(TlsError::ReadFile { .. })
    ));
}

#[test]
fn configurations_load_from_files() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("peng3dnet-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = file("ca.pem", &pki.ca.pem);
    let server_cert = file("server.pem", &pki.server.pem);
    let server_key = file("server.key", &pki.server.key_pem);
    let client_cert = file("client.pem", &pki.client.pem);
    let client_key = file("client.key", &pki.client.key_pem);
    let server = TlsServerConfig::from_pem_files(&server_cert, &server_key, Some(&ca)).unwrap();
    assert!(server.requires_client_cert());
    let client_config = TlsClientConfig::verify_file(&ca, "localhost")
        .unwrap()
        .with_client_cert_files(&client_cert, &client_key)
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let (served, client) = run(&server, client_config, b"hi", b"yo".to_vec());
    assert_eq!(served.unwrap().level, Some(SecurityLevel::BothAuth));
    assert_eq!(client.unwrap().level, Some(SecurityLevel::BothAuth));
}

/// One direction of an in-memory transport.
#[derive(Default)]
struct Wire {
    bytes: VecDeque<u8>,
    closed: bool,
}

/// One end of an in-memory transport: non-blocking, each read returns at most
/// `chunk` bytes.
struct End {
    rx: Rc<RefCell<Wire>>,
    tx: Rc<RefCell<Wire>>,
    chunk: usize,
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut wire = self.rx.borrow_mut();
        if wire.bytes.is_empty() {
            return if wire.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(wire.bytes.len()).min(self.chunk);
        for (dst, src) in buf.iter_mut().zip(wire.bytes.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.borrow_mut().bytes.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pair(chunk: usize) -> (End, End) {
    let a = Rc::new(RefCell::new(Wire::default()));
    let b = Rc::new(RefCell::new(Wire::default()));
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
            chunk,
        },
        End {
            rx: b,
            tx: a,
            chunk,
        },
    )
}

/// Reads what is there: `Ok(None)` on `WouldBlock`.
fn poll_read(tls: &mut TlsStream<End>, into: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut buf = [0u8; 4096];
    match tls.read_plain(&mut buf) {
        Ok(n) => {
            into.extend_from_slice(&buf[..n]);
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Application data written before the handshake completes travels in the
/// same transport reads as the last handshake messages, whole or a byte at a
/// time, and none of it is lost; `close_notify` ends reads with `Ok(0)`.
#[test]
fn data_arriving_with_the_handshake_is_kept() {
    let pki = pki();
    let server = server_config(&pki, true);
    let client_config = TlsClientConfig::verify(pki.ca.pem.as_bytes(), "localhost")
        .unwrap()
        .with_client_cert(pki.client.pem.as_bytes(), pki.client.key_pem.as_bytes())
        .unwrap();
    let to_server = payload(40_000, 3);
    let to_client = payload(40_000, 4);
    for chunk in [usize::MAX, 1, 7] {
        let (c_end, s_end) = pair(chunk);
        let mut c = TlsStream::client(c_end, &client_config).unwrap();
        let mut s = TlsStream::server(s_end, &server).unwrap();
        // Both write before any handshake message has moved.
        assert_eq!(c.write_plain(&to_server).unwrap(), to_server.len());
        assert_eq!(s.write_plain(&to_client).unwrap(), to_client.len());
        assert!(c.is_handshaking() && s.is_handshaking());
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        let mut turns = 0;
        while at_server.len() < to_server.len() || at_client.len() < to_client.len() {
            turns += 1;
            assert!(turns < 1_000_000, "chunk {chunk}: no progress");
            poll_read(&mut s, &mut at_server).unwrap();
            poll_read(&mut c, &mut at_client).unwrap();
        }
        assert!(
            at_server == to_server,
            "chunk {chunk}: server got corrupted data"
        );
        assert!(
            at_client == to_client,
            "chunk {chunk}: client got corrupted data"
        );
        assert_eq!(c.security_level(), Some(SecurityLevel::BothAuth));
        assert_eq!(s.security_level(), Some(SecurityLevel::BothAuth));

        c.send_close_notify();
        assert!(!c.wants_write());
        let mut rest = Vec::new();
        let mut end = None;
        for _ in 0..100_000 {
            end = poll_read(&mut s, &mut rest).unwrap();
            if end == Some(0) {
                break;
            }
        }
        assert_eq!(end, Some(0), "chunk {chunk}: no clean close");
        assert!(rest.is_empty());
    }
}

/// A transport that ends without `close_notify` is `UnexpectedEof`, not a
/// clean close.
#[test]
fn eof_without_close_notify_is_unexpected() {
    let pki = pki();
    let server = server_config(&pki, false);
    let (c_end, s_end) = pair(usize::MAX);
    let wire_to_server = c_end.tx.clone();
    let mut c = TlsStream::client(c_end, &TlsClientConfig::no_verification().unwrap()).unwrap();
    let mut s = TlsStream::server(s_end, &server).unwrap();
    c.write_plain(b"ping").unwrap();
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    for _ in 0..1_000 {
        if at_server.len() == 4 {
            break;
        }
        poll_read(&mut s, &mut at_server).unwrap();
        poll_read(&mut c, &mut at_client).unwrap();
    }
    assert_eq!(at_server, b"ping");
    wire_to_server.borrow_mut().closed = true;
    let err = poll_read(&mut s, &mut at_server).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

// ---- TLS mismatches and rejected certificates through the client (issue
// 13, point 7): each says what happened instead of `timed out` or
// `socketclose`.

mod mismatches {
    use super::*;
    use peng3dnet_core::{CloseReason, Closed};
    use peng3dnet_std::client::{Client, ClientError, ClientOptions};
    use peng3dnet_std::echo;
    use peng3dnet_std::server::{RunningServer, ServerOptions};

    /// An echo server on 127.0.0.1, with TLS if `tls` is given.
    fn echo_server(tls: Option<TlsServerConfig>) -> RunningServer {
        let options = ServerOptions {
            tls,
            ..ServerOptions::default()
        };
        echo::server(echo::registry(), options)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap()
    }

    /// What `wait_connected` fails with for a client of `tls` at `server`:
    /// the blocking client's error (after `wait`), then the tokio client's
    /// (whose handshake timeout is `wait`: its `wait_connected` ends when
    /// the connection does).
    fn failure(
        server: &RunningServer,
        tls: Option<TlsClientConfig>,
        wait: Duration,
    ) -> [ClientError; 2] {
        let options = ClientOptions {
            tls,
            ..ClientOptions::default()
        };
        let mut c =
            Client::connect(server.local_addr(), echo::registry(), options.clone()).unwrap();
        let blocking = match c.wait_connected(wait) {
            Ok(()) => panic!("connected at {:?}", c.security_level()),
            Err(e) => e,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = ClientOptions {
            handshake_timeout: wait,
            ..options
        };
        let tokio = rt.block_on(async {
            let c = peng3dnet_std::tokio_client::Client::connect(
                server.local_addr(),
                echo::registry(),
                options,
            )
            .await
            .unwrap();
            tokio::time::timeout(LIMIT, c.wait_connected())
                .await
                .expect("the tokio client's wait_connected ends")
                .expect_err("the tokio client connected")
        });
        [blocking, tokio]
    }

    /// A self-signed certificate for localhost that is also a CA (what
    /// `openssl req -x509` makes by default): its certificate and key, PEM.
    pub(super) fn self_signed_ca() -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_tls_client_at_a_plain_server_is_told_it_does_not_speak_tls() {
        let server = echo_server(None);
        for e in failure(
            &server,
            Some(TlsClientConfig::no_verification().unwrap()),
            LIMIT,
        ) {
            assert!(matches!(e, ClientError::Tls(TlsError::NotTls(_))), "{e:?}");
            assert!(e.to_string().contains("does not speak TLS"), "{e}");
        }
    }

    #[test]
    fn a_plain_client_at_a_tls_server_is_told_to_try_tls() {
        let server = echo_server(Some(server_config(&pki(), false)));
        let [e, tokio] = failure(&server, None, Duration::from_millis(500));
        assert!(matches!(e, ClientError::NoHello { closed: None }), "{e:?}");
        assert!(e.to_string().contains("connect with TLS"), "{e}");
        // The tokio client's own handshake timeout ended it.
        assert!(
            matches!(
                tokio,
                ClientError::NoHello {
                    closed: Some(Closed {
                        reason: CloseReason::HandshakeTimeout,
                        ..
                    })
                }
            ),
            "{tokio:?}"
        );
        assert!(tokio.to_string().contains("connect with TLS"), "{tokio}");
    }

    #[test]
    fn a_rejected_certificate_says_why() {
        // The server's self-signed certificate is also the client's CA:
        // webpki refuses a CA certificate as the server's own.
        let (cert, key) = self_signed_ca();
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes(), None).unwrap();
        let server = echo_server(Some(tls));
        let client = TlsClientConfig::verify(cert.as_bytes(), "localhost").unwrap();
        for e in failure(&server, Some(client), LIMIT) {
            assert!(
                matches!(
                    e,
                    ClientError::Tls(TlsError::Handshake(rustls::Error::InvalidCertificate(_)))
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("CaUsedAsEndEntity"), "{e}");
        }
        // A CA the server's certificate does not come from: UnknownIssuer.
        let p = pki();
        let server = echo_server(Some(server_config(&p, false)));
        let client = TlsClientConfig::verify(p.other_ca.pem.as_bytes(), "localhost").unwrap();
        for e in failure(&server, Some(client), LIMIT) {
            assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        }
    }

    /// `peng3dnet echo --tls-ca cert.pem` at a server whose self-signed
    /// certificate is also that CA prints rustls's reason (it printed only
    /// `connection closed (socketclose, by Transport)`).
    #[test]
    fn the_program_prints_why_a_certificate_was_rejected() {
        let (cert, key) = self_signed_ca();
        let tls = TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes(), None).unwrap();
        let server = echo_server(Some(tls));
        let path = std::env::temp_dir().join(format!(
            "peng3dnet-tls-ca-as-end-entity-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, &cert).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
            .arg("echo")
            .arg(format!("localhost:{}", server.local_addr().port()))
            .arg("--tls-ca")
            .arg(&path)
            .args(["--timeout", "10", "hello"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("CaUsedAsEndEntity"), "{stderr}");
        assert!(!stderr.contains("socketclose"), "{stderr}");
    }
}
