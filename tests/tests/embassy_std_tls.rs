//! The embassy client over TLS (`peng3dnet_embassy::tls`, embedded-tls)
//! on a host TCP stream (tokio, through embedded-io-adapters) against the std
//! echo server (rustls): every security level the client supports, asserted
//! on both ends, and the failures (wrong CA, wrong name, expired certificate,
//! rejected client certificate, no TLS at all) ending in errors, not hangs.

mod embassy_std_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use embassy_futures::join::join;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embedded_io_adapters::tokio_1::FromTokio;
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::{CloseReason, Config, Initiator, SecurityLevel, TlsFacts};
use peng3dnet_embassy::tls::{
    ConfigError, ConnectError, SharedSocket, SharedSocketRef, TlsClient, TlsClientConfig, TlsClock,
    TlsError, RECORD_READ_BUFFER,
};
use peng3dnet_embassy::{Resources, RunError, Session};
use peng3dnet_std::tls::TlsServerConfig;
use peng3dnet_test_pki::{Cert, Pki};
use rand_core::OsRng;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use embassy_std_common::{echo_exchange, registry, Client, Secret, ServerEvent, TestServer, LIMIT};

type Res = Resources<4096, 4096>;
type Socket = SharedSocket<NoopRawMutex, FromTokio<OwnedReadHalf>, FromTokio<OwnedWriteHalf>>;
type Tls<'b> = TlsClient<
    'b,
    SharedSocketRef<'b, NoopRawMutex, FromTokio<OwnedReadHalf>, FromTokio<OwnedWriteHalf>>,
>;

/// Certificates for `localhost` (embedded-tls takes no IP names).
fn pki() -> Pki {
    Pki::generate(&["localhost"])
}

fn tls_server(cert: &Cert, client_ca: Option<&Cert>) -> TestServer {
    let config = TlsServerConfig::from_pem(
        cert.pem.as_bytes(),
        cert.key_pem.as_bytes(),
        client_ca.map(|ca| ca.pem.as_bytes()),
    )
    .unwrap();
    TestServer::start(Some(config))
}

async fn socket(server: &TestServer) -> Socket {
    let stream = timeout(LIMIT, TcpStream::connect(server.addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (r, w) = stream.into_split();
    SharedSocket::new(FromTokio::new(r), FromTokio::new(w))
}

/// The TLS handshake over `socket`, which must end within [`LIMIT`].
async fn handshake<'b, Clock: TlsClock, const CHAIN: usize>(
    socket: &'b Socket,
    read_buf: &'b mut [u8],
    write_buf: &'b mut [u8],
    config: &TlsClientConfig<'_, Clock, CHAIN>,
) -> Result<Tls<'b>, ConnectError> {
    timeout(
        LIMIT,
        TlsClient::connect(socket.handle(), read_buf, write_buf, config, OsRng),
    )
    .await
    .expect("the TLS handshake did not finish in time")
}

/// What the client's handshake established: the core's facts, and whether
/// the server asked for a client certificate (which the level does not
/// depend on).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Handshake {
    facts: TlsFacts,
    client_cert_requested: bool,
}

impl Handshake {
    fn of(tls: &Tls<'_>) -> Self {
        Handshake {
            facts: tls.facts(),
            client_cert_requested: tls.client_cert_requested(),
        }
    }

    fn server_verified(&self) -> bool {
        matches!(
            self.facts,
            TlsFacts::Client {
                server_verified: true,
                ..
            }
        )
    }

    fn client_cert_sent(&self) -> bool {
        matches!(
            self.facts,
            TlsFacts::Client {
                client_cert_sent: true,
                ..
            }
        )
    }

    fn security_level(&self) -> SecurityLevel {
        self.facts.security_level()
    }
}

/// Connects over TLS with `config`, runs the echo exchange and closes; the
/// client's handshake and the server's level. Checks that a packet needing
/// SERVERAUTH is sent exactly when the client's level allows it.
async fn tls_session<Clock: TlsClock, const CHAIN: usize>(
    server: &TestServer,
    config: &TlsClientConfig<'_, Clock, CHAIN>,
) -> (Handshake, SecurityLevel) {
    let socket = socket(server).await;
    let mut read_buf = vec![0u8; RECORD_READ_BUFFER];
    let mut write_buf = vec![0u8; 4096];
    let mut tls = handshake(&socket, &mut read_buf, &mut write_buf, config)
        .await
        .expect("TLS handshake");
    let facts = Handshake::of(&tls);
    let level = tls.security_level();
    assert_eq!(level, facts.security_level());

    let session_config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client =
        Session::client(&session_config, &mut reg, Postcard, &mut res, "classic").unwrap();
    let app = async {
        client.wait_connected().await.expect("handshake");
        echo_exchange(&client).await;
        let secret = client.send::<Secret>(&"psst").await;
        if level >= SecurityLevel::ServerAuth {
            secret.expect("SERVERAUTH allows test:secret");
        } else {
            assert!(matches!(secret, Err(SendError::Rules { .. })), "{secret:?}");
        }
        echo_exchange(&client).await;
        client.close(CloseReason::UserRequest);
    };
    let (_, run) = timeout(LIMIT, join(app, tls.run(&client)))
        .await
        .expect("the session did not finish in time");
    let closed = run.expect("transport error");
    assert_eq!(closed.reason, CloseReason::UserRequest);
    assert_eq!(closed.initiator, Initiator::Local);
    timeout(LIMIT, tls.close())
        .await
        .expect("close_notify timed out")
        .map_err(|(_, e)| e)
        .expect("close_notify");

    assert_eq!(
        server.close().await,
        (CloseReason::UserRequest, Initiator::Peer)
    );
    (facts, server.handshake_level().await)
}

/// The system clock for the verifier's validity check.
struct SystemClock;
impl TlsClock for SystemClock {
    fn now() -> Option<u64> {
        Some(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tls_without_verification_is_encrypted() {
    let pki = pki();
    let server = tls_server(&pki.server, None);
    let config = TlsClientConfig::no_verification();
    let (facts, server_level) = tls_session(&server, &config).await;
    assert_eq!(
        facts,
        Handshake {
            facts: TlsFacts::Client {
                server_verified: false,
                client_cert_sent: false,
            },
            client_cert_requested: false,
        }
    );
    assert_eq!(facts.security_level(), SecurityLevel::Encrypted);
    assert_eq!(server_level, SecurityLevel::Encrypted);
}

#[tokio::test(flavor = "current_thread")]
async fn tls_without_verification_accepts_any_server_and_stays_encrypted() {
    // A certificate from an unknown CA, for another name, long expired:
    // without a verifier nothing is checked, and the level says so.
    let unrelated = Pki::generate(&["elsewhere.invalid"]);
    let server = tls_server(&unrelated.expired_server, None);
    let (facts, _) = tls_session(&server, &TlsClientConfig::no_verification()).await;
    assert!(!facts.server_verified());
    assert_eq!(facts.security_level(), SecurityLevel::Encrypted);
}

#[tokio::test(flavor = "current_thread")]
async fn tls_verified_server_is_serverauth() {
    let pki = pki();
    let server = tls_server(&pki.server, None);
    let config = TlsClientConfig::verify(&pki.ca.der, "localhost").unwrap();
    let (facts, server_level) = tls_session(&server, &config).await;
    assert!(facts.server_verified());
    assert!(!facts.client_cert_requested);
    assert_eq!(facts.security_level(), SecurityLevel::ServerAuth);
    // The server cannot know that its client verified it.
    assert_eq!(server_level, SecurityLevel::Encrypted);
}

#[tokio::test(flavor = "current_thread")]
async fn tls_with_clock_checks_validity() {
    let pki = pki();
    let server = tls_server(&pki.server, None);
    let config = TlsClientConfig::verify(&pki.ca.der, "localhost")
        .unwrap()
        .with_clock::<SystemClock>();
    let (facts, _) = tls_session(&server, &config).await;
    assert_eq!(facts.security_level(), SecurityLevel::ServerAuth);
}

#[tokio::test(flavor = "current_thread")]
async fn tls_client_cert_is_bothauth() {
    let pki = pki();
    let server = tls_server(&pki.server, Some(&pki.ca));
    let config = TlsClientConfig::verify(&pki.ca.der, "localhost")
        .unwrap()
        .with_client_cert(&pki.client.der, &pki.client.key_der)
        .unwrap();
    let (facts, server_level) = tls_session(&server, &config).await;
    assert_eq!(
        facts,
        Handshake {
            facts: TlsFacts::Client {
                server_verified: true,
                client_cert_sent: true,
            },
            client_cert_requested: true,
        }
    );
    assert_eq!(facts.security_level(), SecurityLevel::BothAuth);
    assert_eq!(server_level, SecurityLevel::BothAuth);
}

#[tokio::test(flavor = "current_thread")]
async fn tls_client_cert_not_asked_for_is_serverauth() {
    let pki = pki();
    let server = tls_server(&pki.server, None);
    let config = TlsClientConfig::verify(&pki.ca.der, "localhost")
        .unwrap()
        .with_client_cert(&pki.client.der, &pki.client.key_der)
        .unwrap();
    let (facts, server_level) = tls_session(&server, &config).await;
    assert!(!facts.client_cert_requested && !facts.client_cert_sent());
    assert_eq!(facts.security_level(), SecurityLevel::ServerAuth);
    assert_eq!(server_level, SecurityLevel::Encrypted);
}

#[test]
fn tls_client_cert_needs_verification() {
    let pki = pki();
    let refused = TlsClientConfig::no_verification()
        .with_client_cert(&pki.client.der, &pki.client.key_der)
        .unwrap_err();
    assert_eq!(refused, ConfigError::ClientCertWithoutVerification);
    // A PKCS#8 key is taken; garbage is not.
    let pkcs8_ok = TlsClientConfig::verify(&pki.ca.der, "localhost")
        .unwrap()
        .with_client_cert(&pki.client.der, &pki.client.key_der)
        .is_ok();
    assert!(pkcs8_ok);
    let bad = TlsClientConfig::verify(&pki.ca.der, "localhost")
        .unwrap()
        .with_client_cert(&pki.client.der, b"not a key")
        .unwrap_err();
    assert_eq!(bad, ConfigError::InvalidClientKey);
    for name in ["", "127.0.0.1", "a b", "ünï", &"a".repeat(65)] {
        assert_eq!(
            TlsClientConfig::verify(&pki.ca.der, name).unwrap_err(),
            ConfigError::InvalidServerName,
            "{name:?}"
        );
    }
}

/// A TLS handshake that must fail: returns the error, after checking that
/// the server saw no peng3dnet handshake.
async fn failed_connect<Clock: TlsClock, const CHAIN: usize>(
    server: &TestServer,
    config: &TlsClientConfig<'_, Clock, CHAIN>,
) -> ConnectError {
    let socket = socket(server).await;
    let mut read_buf = vec![0u8; RECORD_READ_BUFFER];
    let mut write_buf = vec![0u8; 4096];
    let result = handshake(&socket, &mut read_buf, &mut write_buf, config).await;
    let Err(e) = result else {
        panic!("the handshake succeeded")
    };
    assert!(!server
        .events()
        .iter()
        .any(|e| matches!(e, ServerEvent::Handshake(_))));
    e
}

/// `failed_connects!(what: server, config => pattern, ...)`: one TLS
/// handshake per row (a fresh server, the row's client configuration, of
/// whatever clock and chain capacity) that must fail with an error matching
/// the row's pattern. A macro rather than a `const` table because every
/// row's configuration is of another type.
macro_rules! failed_connects {
    ($($what:literal: $server:expr, $config:expr => $pattern:pat),* $(,)?) => {
        $({
            let server = $server;
            let config = $config;
            let e = failed_connect(&server, &config).await;
            assert!(matches!(e, $pattern), "{}: {e:?}", $what);
        })*
    };
}

#[tokio::test(flavor = "current_thread")]
async fn tls_failures_end_in_connect_errors() {
    let pki = pki();
    failed_connects! {
        "wrong CA":
            tls_server(&pki.server, None),
            TlsClientConfig::verify(&pki.other_ca.der, "localhost").unwrap()
            => ConnectError::Tls(TlsError::InvalidCertificate),
        "wrong name":
            tls_server(&pki.server, None),
            TlsClientConfig::verify(&pki.ca.der, "elsewhere.example").unwrap()
            => ConnectError::Tls(TlsError::InvalidCertificate),
        "expired certificate, with a clock":
            tls_server(&pki.expired_server, None),
            TlsClientConfig::verify(&pki.ca.der, "localhost")
                .unwrap()
                .with_clock::<SystemClock>()
            => ConnectError::Tls(TlsError::InvalidCertificate),
        "chain too long for its room":
            tls_server(&pki.server, None),
            TlsClientConfig::verify(&pki.ca.der, "localhost")
                .unwrap()
                .with_chain_capacity::<64>()
            => ConnectError::Tls(TlsError::OutOfMemory),
        "a plain server":
            TestServer::start(None),
            TlsClientConfig::no_verification()
            => ConnectError::Tls(_),
    }
}

/// The server rejects the client's certificate (or its lack of one). In TLS
/// 1.3 the client's side of the handshake may complete before the server's
/// alert arrives: then the session ends with a read error and never
/// connects; or the alert comes while the client still writes its
/// handshake, and `connect` fails. Either way an error, never a hang, and
/// the server sees no peng3dnet handshake. The facts when `connect`
/// succeeded.
async fn rejected_by_server(
    config: &TlsClientConfig<'_>,
    server: &TestServer,
) -> Option<Handshake> {
    let socket = socket(server).await;
    let mut read_buf = vec![0u8; RECORD_READ_BUFFER];
    let mut write_buf = vec![0u8; 4096];
    let connected = handshake(&socket, &mut read_buf, &mut write_buf, config).await;
    let facts = match connected {
        Err(e) => {
            assert!(matches!(e, ConnectError::Tls(_)), "{e:?}");
            None
        }
        Ok(mut tls) => {
            let facts = Handshake::of(&tls);
            let session_config = Config::new();
            let mut reg = registry();
            let mut res = Box::new(Res::new());
            let client: Client =
                Session::client(&session_config, &mut reg, Postcard, &mut res, "classic").unwrap();
            let (connected, run) = timeout(LIMIT, join(client.wait_connected(), tls.run(&client)))
                .await
                .expect("a rejected session must end, not hang");
            let closed = connected.expect_err("never connected");
            assert_eq!(closed.initiator, Initiator::Transport);
            assert!(matches!(run, Err(RunError::Read(_))), "{run:?}");
            Some(facts)
        }
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!server
        .events()
        .iter()
        .any(|e| matches!(e, ServerEvent::Handshake(_))));
    facts
}

/// A client the server rejects, and what must hold of its handshake facts
/// when `connect` succeeded.
struct Rejected {
    /// The case, for the assertion messages.
    what: &'static str,
    /// The client's configuration.
    config: for<'p> fn(&'p Pki) -> TlsClientConfig<'p>,
    /// Checks the facts of a client whose `connect` succeeded.
    facts: fn(&Handshake) -> bool,
}

/// Clients a server that requires certificates of its CA rejects.
const REJECTED: &[Rejected] = &[
    Rejected {
        what: "client certificate from another CA",
        config: |p| {
            TlsClientConfig::verify(&p.ca.der, "localhost")
                .unwrap()
                .with_client_cert(&p.stranger.der, &p.stranger.key_der)
                .unwrap()
        },
        facts: |f| f.client_cert_sent(),
    },
    Rejected {
        what: "no client certificate",
        config: |p| TlsClientConfig::verify(&p.ca.der, "localhost").unwrap(),
        facts: |f| {
            f.client_cert_requested
                && !f.client_cert_sent()
                && f.security_level() == SecurityLevel::ServerAuth
        },
    },
];

#[tokio::test(flavor = "current_thread")]
async fn tls_client_certs_the_server_rejects() {
    let pki = pki();
    for case in REJECTED {
        let server = tls_server(&pki.server, Some(&pki.ca));
        let config = (case.config)(&pki);
        if let Some(facts) = rejected_by_server(&config, &server).await {
            assert!((case.facts)(&facts), "{}: {facts:?}", case.what);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tls_server_shutdown_reaches_the_client() {
    let pki = pki();
    let server = tls_server(&pki.server, None);
    let config = TlsClientConfig::verify(&pki.ca.der, "localhost").unwrap();
    let socket = socket(&server).await;
    let mut read_buf = vec![0u8; RECORD_READ_BUFFER];
    let mut write_buf = vec![0u8; 4096];
    let mut tls = handshake(&socket, &mut read_buf, &mut write_buf, &config)
        .await
        .unwrap();
    let session_config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client =
        Session::client(&session_config, &mut reg, Postcard, &mut res, "classic").unwrap();
    let app = async {
        client.wait_connected().await.expect("handshake");
        server.shutdown();
        client.wait_closed().await
    };
    let (seen, run) = timeout(LIMIT, join(app, tls.run(&client)))
        .await
        .expect("the session did not finish in time");
    // The server's closeconn, then its close_notify (read as the end of
    // the stream, not as an error).
    let closed = run.expect("transport error");
    assert_eq!(closed.reason, CloseReason::ServerShutdown);
    assert_eq!(closed.initiator, Initiator::Peer);
    assert_eq!(seen, closed);
}

#[tokio::test(flavor = "current_thread")]
async fn tls_ping() {
    let pki = pki();
    let server = tls_server(&pki.server, None);
    let config = TlsClientConfig::verify(&pki.ca.der, "localhost").unwrap();
    let socket = socket(&server).await;
    let mut read_buf = vec![0u8; RECORD_READ_BUFFER];
    let mut write_buf = vec![0u8; 4096];
    let mut tls = handshake(&socket, &mut read_buf, &mut write_buf, &config)
        .await
        .unwrap();
    let session_config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client =
        Session::client(&session_config, &mut reg, Postcard, &mut res, "ping").unwrap();
    let (pong, run) = timeout(LIMIT, join(client.wait_pong(), tls.run(&client)))
        .await
        .expect("the ping did not finish in time");
    pong.expect("pong");
    let closed = run.expect("transport error");
    assert_eq!(closed.reason, CloseReason::PingComplete);
    assert_eq!(
        server.close().await,
        (CloseReason::PingComplete, Initiator::Peer)
    );
}
