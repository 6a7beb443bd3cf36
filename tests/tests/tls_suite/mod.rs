//! The std servers (mio and tokio: `crate::RUNTIME`) and client over TLS on 127.0.0.1, at each security level
//! the adapter establishes: plain TCP (`None`), encrypted without
//! verification (`Encrypted`), the server verified by the client
//! (`ServerAuth` on the client; the server cannot know it and reports
//! `Encrypted`), and both verified (`BothAuth` on both). `min_security`
//! rules are checked against these levels before a packet is sent.
//! Certificates come from `peng3dnet-test-pki` (rcgen). `Wrapped` is never reported by the
//! std adapter (rustls always knows what it verified).

use crate::RUNTIME;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::{Rules, Violation};
use peng3dnet_core::{CloseReason, SecurityLevel};
use peng3dnet_std::client::{Client, ClientError, ClientEvent, ClientOptions};
use peng3dnet_std::server::{RunningServer, Server};
use peng3dnet_std::tls::{TlsClientConfig, TlsError, TlsServerConfig};
use peng3dnet_std::StdRegistry;
use peng3dnet_test_pki::Pki;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Echoed back.
struct Probe;
impl Packet for Probe {
    const NAME: &'static str = "tls:probe";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = u32;
}

/// Sent only over a connection whose server was verified.
struct ServerAuthOnly;
impl Packet for ServerAuthOnly {
    const NAME: &'static str = "tls:serverauth";
    const RULES: Rules = Rules::SMART.min_security(SecurityLevel::ServerAuth);
    type Message<'a> = u32;
}

/// Sent only over a connection with both certificates verified.
struct BothAuthOnly;
impl Packet for BothAuthOnly {
    const NAME: &'static str = "tls:bothauth";
    const RULES: Rules = Rules::SMART.min_security(SecurityLevel::BothAuth);
    type Message<'a> = u32;
}

/// Asks the server to send `ServerAuthOnly` (0) or `BothAuthOnly` (1); the
/// answer is a `Probe` with 0 (sent) or 1 (refused by the rules).
struct Ask;
impl Packet for Ask {
    const NAME: &'static str = "tls:ask";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = u32;
}

fn registry() -> StdRegistry {
    let mut r = StdRegistry::new();
    r.register::<Probe>().unwrap();
    r.register::<ServerAuthOnly>().unwrap();
    r.register::<BothAuthOnly>().unwrap();
    r.register::<Ask>().unwrap();
    r
}

/// Certificates for `localhost` and 127.0.0.1, made once.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(&["localhost", "127.0.0.1"]))
}

/// A TLS server (requiring client certificates of `pki().ca.pem` if asked to)
/// that echoes `Probe`, answers `Ask`, reports the level of every
/// handshake and every `ServerAuthOnly`/`BothAuthOnly` it receives.
struct TlsServer {
    addr: SocketAddr,
    running: Option<RunningServer>,
    levels: Receiver<SecurityLevel>,
    got: Receiver<&'static str>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.handle().shutdown();
            if !thread::panicking() {
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    let _ = tx.send(r.join().is_ok());
                });
                assert_eq!(rx.recv_timeout(T), Ok(true), "the server stops");
            }
        }
    }
}

fn tls_server(require_client_cert: bool) -> TlsServer {
    let p = pki();
    let ca = require_client_cert.then_some(p.ca.pem.as_bytes());
    let config =
        TlsServerConfig::from_pem(p.server.pem.as_bytes(), p.server.key_pem.as_bytes(), ca)
            .unwrap();
    server(Some(config))
}

/// The test server, over TLS with `tls`, over plain TCP without.
fn server(tls: Option<TlsServerConfig>) -> TlsServer {
    let (level_tx, levels) = mpsc::channel();
    let (got_tx, got) = mpsc::channel();
    let got2 = got_tx.clone();
    let server = Server::builder(registry())
        .with_options(|o| {
            o.tls = tls;
            o.shutdown_grace = Duration::from_secs(2);
        })
        .on::<Probe>(|ctx, v| {
            let _ = ctx.send::<Probe>(&v);
        })
        .on::<ServerAuthOnly>(move |_, _| {
            let _ = got_tx.send(ServerAuthOnly::NAME);
        })
        .on::<BothAuthOnly>(move |_, _| {
            let _ = got2.send(BothAuthOnly::NAME);
        })
        .on::<Ask>(|ctx, which| {
            let res = if which == 0 {
                ctx.send::<ServerAuthOnly>(&7)
            } else {
                ctx.send::<BothAuthOnly>(&7)
            };
            let code = match res {
                Ok(()) => 0,
                Err(SendError::Rules {
                    violation: Violation::Security { .. },
                    ..
                }) => 1,
                Err(_) => 2,
            };
            let _ = ctx.send::<Probe>(&code);
        })
        .on_handshake(move |ctx| {
            let _ = level_tx.send(ctx.security_level());
        })
        .spawn_on("127.0.0.1:0", RUNTIME)
        .unwrap();
    TlsServer {
        addr: server.local_addr(),
        running: Some(server),
        levels,
        got,
    }
}

fn connect(addr: SocketAddr, tls: Option<TlsClientConfig>) -> Result<Client, ClientError> {
    let options = ClientOptions {
        tls,
        ..ClientOptions::default()
    };
    let mut c = Client::connect(addr, registry(), options)?;
    c.wait_connected(T)?;
    assert_eq!(c.recv(T)?, ClientEvent::Connected);
    Ok(c)
}

/// The next packet of `c`, as a name and a `u32`.
fn packet(c: &mut Client) -> (&'static str, u32) {
    match c.recv(T).expect("a packet") {
        ClientEvent::Packet(p) => {
            let v = if p.is::<Probe>() {
                p.decode::<Probe>().unwrap()
            } else if p.is::<ServerAuthOnly>() {
                p.decode::<ServerAuthOnly>().unwrap()
            } else {
                p.decode::<BothAuthOnly>().unwrap()
            };
            (p.name.unwrap(), v)
        }
        other => panic!("{other:?}"),
    }
}

/// Whether the client may send each of the rule packets, and whether the
/// server may (0: sent, 1: refused by the security rule); every packet
/// sent must arrive, every refused one must not.
fn exchange(s: &TlsServer, c: &mut Client, expect: [bool; 4]) {
    let [client_serverauth, client_bothauth, server_serverauth, server_bothauth] = expect;
    for (allowed, res, name) in [
        (
            client_serverauth,
            c.send::<ServerAuthOnly>(&1),
            ServerAuthOnly::NAME,
        ),
        (
            client_bothauth,
            c.send::<BothAuthOnly>(&2),
            BothAuthOnly::NAME,
        ),
    ] {
        match res {
            Ok(()) => assert!(allowed, "{name} was sent"),
            Err(ClientError::Send(SendError::Rules {
                violation: Violation::Security { actual, .. },
                ..
            })) => {
                assert!(!allowed, "{name} was refused");
                assert_eq!(actual, c.security_level());
            }
            Err(e) => panic!("{name}: {e:?}"),
        }
    }
    // Round trip: everything sent before has been handled.
    c.send::<Probe>(&99).unwrap();
    assert_eq!(packet(c), (Probe::NAME, 99));
    let mut arrived = Vec::new();
    while let Ok(name) = s.got.try_recv() {
        arrived.push(name);
    }
    let mut want = Vec::new();
    if client_serverauth {
        want.push(ServerAuthOnly::NAME);
    }
    if client_bothauth {
        want.push(BothAuthOnly::NAME);
    }
    assert_eq!(arrived, want, "what reached the server");
    // The server's sends.
    for (which, allowed, name) in [
        (0, server_serverauth, ServerAuthOnly::NAME),
        (1, server_bothauth, BothAuthOnly::NAME),
    ] {
        c.send::<Ask>(&which).unwrap();
        if allowed {
            assert_eq!(packet(c), (name, 7));
            assert_eq!(packet(c), (Probe::NAME, 0));
        } else {
            assert_eq!(packet(c), (Probe::NAME, 1), "{name} refused by the server");
        }
    }
    assert!(c.is_connected(), "ignore-rule refusals keep the connection");
}

#[test]
fn plain_tcp_is_level_none() {
    let s = server(None);
    let mut c = connect(s.addr, None).unwrap();
    assert_eq!(c.security_level(), SecurityLevel::None);
    assert_eq!(s.levels.recv_timeout(T).unwrap(), SecurityLevel::None);
    assert!(matches!(
        c.send::<ServerAuthOnly>(&1),
        Err(ClientError::Send(SendError::Rules {
            violation: Violation::Security {
                actual: SecurityLevel::None,
                ..
            },
            ..
        }))
    ));
    exchange(&s, &mut c, [false, false, false, false]);
}

#[test]
fn no_verification_is_encrypted_on_both_ends() {
    let s = tls_server(false);
    let mut c = connect(s.addr, Some(TlsClientConfig::no_verification().unwrap())).unwrap();
    assert_eq!(c.security_level(), SecurityLevel::Encrypted);
    assert_eq!(s.levels.recv_timeout(T).unwrap(), SecurityLevel::Encrypted);
    // ServerAuth packets are refused on an Encrypted connection, both ways.
    exchange(&s, &mut c, [false, false, false, false]);
    c.close(CloseReason::UserRequest).unwrap();
}

#[test]
fn a_verified_server_is_serverauth_on_the_client_and_encrypted_on_the_server() {
    let s = tls_server(false);
    for name in ["localhost", "127.0.0.1"] {
        let tls = TlsClientConfig::verify(pki().ca.pem.as_bytes(), name).unwrap();
        let mut c = connect(s.addr, Some(tls)).unwrap();
        assert_eq!(c.security_level(), SecurityLevel::ServerAuth, "{name}");
        // The server cannot tell that its client verified it.
        assert_eq!(s.levels.recv_timeout(T).unwrap(), SecurityLevel::Encrypted);
        // The client may send ServerAuth packets, not BothAuth ones; the
        // server (Encrypted) may send neither.
        exchange(&s, &mut c, [true, false, false, false]);
        c.close(CloseReason::UserRequest).unwrap();
    }
}

#[test]
fn both_certificates_verified_is_bothauth_on_both_ends() {
    let s = tls_server(true);
    let p = pki();
    let tls = TlsClientConfig::verify(p.ca.pem.as_bytes(), "localhost")
        .unwrap()
        .with_client_cert(p.client.pem.as_bytes(), p.client.key_pem.as_bytes())
        .unwrap();
    let mut c = connect(s.addr, Some(tls)).unwrap();
    assert_eq!(c.security_level(), SecurityLevel::BothAuth);
    assert_eq!(s.levels.recv_timeout(T).unwrap(), SecurityLevel::BothAuth);
    exchange(&s, &mut c, [true, true, true, true]);
    c.close(CloseReason::UserRequest).unwrap();
}

#[test]
fn failed_verification_never_connects() {
    let p = pki();
    let open = tls_server(false);
    let strict = tls_server(true);
    let cases: [(&str, &TlsServer, TlsClientConfig); 4] = [
        (
            "server certificate of an unknown CA",
            &open,
            TlsClientConfig::verify(p.other_ca.pem.as_bytes(), "localhost").unwrap(),
        ),
        (
            "server name not in the certificate",
            &open,
            TlsClientConfig::verify(p.ca.pem.as_bytes(), "example.com").unwrap(),
        ),
        (
            "no client certificate",
            &strict,
            TlsClientConfig::verify(p.ca.pem.as_bytes(), "localhost").unwrap(),
        ),
        (
            "client certificate of an unknown CA",
            &strict,
            TlsClientConfig::verify(p.ca.pem.as_bytes(), "localhost")
                .unwrap()
                .with_client_cert(p.stranger.pem.as_bytes(), p.stranger.key_pem.as_bytes())
                .unwrap(),
        ),
    ];
    for (what, server, tls) in cases {
        match connect(server.addr, Some(tls)) {
            Ok(c) => panic!("{what}: connected at {:?}", c.security_level()),
            Err(ClientError::Timeout) => panic!("{what}: timed out instead of failing"),
            Err(_) => {}
        }
        assert!(
            server.levels.try_recv().is_err(),
            "{what}: the server completed a handshake"
        );
    }
    // A client certificate needs a configuration that verifies the server.
    assert!(matches!(
        TlsClientConfig::no_verification()
            .unwrap()
            .with_client_cert(p.client.pem.as_bytes(), p.client.key_pem.as_bytes()),
        Err(TlsError::ClientCertWithoutVerification)
    ));
    // A plain client at a TLS server does not get in either (both wait for
    // the other's first bytes).
    let mut c = Client::connect(open.addr, registry(), ClientOptions::default()).unwrap();
    assert!(c.wait_connected(Duration::from_millis(500)).is_err());
    assert!(!c.is_connected());
    assert!(open.levels.try_recv().is_err());
}
