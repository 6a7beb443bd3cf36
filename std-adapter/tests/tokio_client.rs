//! The tokio client against the mio echo server on 127.0.0.1: echoes,
//! split halves in two tasks, cancel-safety of `recv` and `send`, bounded
//! queues, closes and refusals. Every wait is bounded by a timeout.
#![cfg(feature = "tokio")]

use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::{CloseReason, Initiator};
use peng3dnet_std::client::{ClientError, ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{RunningServer, ServerOptions};
use peng3dnet_std::tokio_client::{Client, EVENT_QUEUE};
use peng3dnet_std::StdRegistry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn echo_server() -> (SocketAddr, RunningServer) {
    let server = echo::server(echo::registry(), ServerOptions::default())
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (addr, server.spawn().unwrap())
}

fn stop(running: RunningServer) {
    running.handle().shutdown();
    running.join().unwrap();
}

/// The next packet's text, skipping other events.
async fn next_echo(client: &Client) -> String {
    loop {
        match timeout(T, client.recv()).await.expect("an event in time") {
            Ok(ClientEvent::Packet(p)) => return p.decode::<Echo>().unwrap().to_owned(),
            Ok(ClientEvent::Connected) => {}
            other => panic!("expected an echo, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_in_order_and_closes_with_the_reason() {
    let (addr, running) = echo_server();
    let client = Client::connect(addr, echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    assert!(client.is_connected());
    for i in 0..200 {
        client
            .send::<Echo>(&format!("m{i}").as_str())
            .await
            .unwrap();
    }
    for i in 0..200 {
        assert_eq!(next_echo(&client).await, format!("m{i}"));
    }
    let closed = timeout(T, client.close(CloseReason::UserRequest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.reason, CloseReason::UserRequest);
    assert_eq!(closed.initiator, Initiator::Local);
    // After the close every call fails with it.
    match client.send::<Echo>(&"late").await {
        Err(ClientError::Closed(c)) => assert_eq!(c.reason, CloseReason::UserRequest),
        other => panic!("{other:?}"),
    }
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_send_and_receive_from_two_tasks() {
    let (addr, running) = echo_server();
    let client = Client::connect(addr, echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    let (sender, receiver) = client.split();
    let second = sender.clone();
    let a = tokio::spawn(async move {
        for i in 0..300 {
            sender
                .send::<Echo>(&format!("a{i}").as_str())
                .await
                .unwrap();
        }
    });
    let b = tokio::spawn(async move {
        for i in 0..300 {
            second
                .send::<Echo>(&format!("b{i}").as_str())
                .await
                .unwrap();
        }
        second
    });
    let (mut next_a, mut next_b) = (0, 0);
    while next_a + next_b < 600 {
        match timeout(T, receiver.recv()).await.expect("in time").unwrap() {
            ClientEvent::Packet(p) => {
                let text = p.decode::<Echo>().unwrap();
                // Each sender's echoes come back in its order.
                if let Some(n) = text.strip_prefix('a') {
                    assert_eq!(n, next_a.to_string());
                    next_a += 1;
                } else {
                    assert_eq!(text.strip_prefix('b').unwrap(), next_b.to_string());
                    next_b += 1;
                }
            }
            ClientEvent::Connected => {}
            other => panic!("{other:?}"),
        }
    }
    a.await.unwrap();
    let sender = b.await.unwrap();
    let closed = sender.close(CloseReason::UserRequest).await.unwrap();
    assert_eq!(closed.reason, CloseReason::UserRequest);
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_recv_loses_no_event() {
    let (addr, running) = echo_server();
    let client = Client::connect(addr, echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    const N: usize = 500;
    let mut got = Vec::new();
    let mut cancelled = 0;
    let mut sent = 0;
    // Interleave sends with recv futures that are mostly dropped before an
    // event arrives; every echo must still come exactly once, in order.
    for _ in 0..20 * N {
        if sent < N {
            client
                .send::<Echo>(&format!("{sent}").as_str())
                .await
                .unwrap();
            sent += 1;
        }
        match timeout(Duration::from_micros(50), client.recv()).await {
            Ok(Ok(ClientEvent::Packet(p))) => got.push(p.decode::<Echo>().unwrap().to_owned()),
            Ok(Ok(ClientEvent::Connected)) => {}
            Ok(other) => panic!("{other:?}"),
            Err(_) => cancelled += 1,
        }
        if got.len() == N {
            break;
        }
    }
    while got.len() < N {
        got.push(next_echo(&client).await);
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    assert!(
        cancelled > 0,
        "no recv was cancelled: the test did not test"
    );
    // Nothing more: no event was duplicated either.
    assert!(timeout(Duration::from_millis(100), client.recv())
        .await
        .is_err());
    stop(running);
}

/// Accepts one connection and never reads from it nor writes to it.
fn silent_listener() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // Hold the connection until the client side goes away.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    (addr, handle)
}

/// Sent before any handshake (no rules): fills the queue of a client whose
/// server never reads.
struct Raw;
impl Packet for Raw {
    const NAME: &'static str = "test:raw";
    const RULES: Rules = Rules::NONE;
    type Message<'a> = &'a [u8];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_blocks_send_and_a_dropped_send_queues_nothing() {
    let (addr, listener) = silent_listener();
    let mut registry = StdRegistry::new();
    registry.register::<Raw>().unwrap();
    let options = ClientOptions {
        max_write_queue: 64 * 1024,
        compression: false,
        ..ClientOptions::default()
    };
    let client = Client::connect(addr, registry, options).await.unwrap();
    let body = vec![7u8; 16 * 1024];
    // The socket's buffers take a few MB; then the queue fills and a send
    // waits. Bounded: at most 4,000 sends of 16 KiB.
    let mut blocked = false;
    for _ in 0..4000 {
        match timeout(
            Duration::from_millis(200),
            client.send::<Raw>(&body.as_slice()),
        )
        .await
        {
            Ok(r) => r.unwrap(),
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "a send never waited for room");
    let queued = client.queued_bytes();
    assert!(queued <= 64 * 1024, "queue over its bound: {queued}");
    // A second send dropped while waiting queues nothing either.
    assert!(timeout(
        Duration::from_millis(100),
        client.send::<Raw>(&body.as_slice())
    )
    .await
    .is_err());
    assert_eq!(client.queued_bytes(), queued);
    drop(client);
    listener.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_errors_that_name_them() {
    let (addr, running) = echo_server();
    let client = Client::connect(addr, echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    // Not in the registry.
    match client.send::<Raw>(&[1u8, 2].as_slice()).await {
        Err(ClientError::Send(e)) => assert!(e.to_string().contains("registered"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A TLS client against this plain server: the handshake fails in
    // bounded time (rustls refuses the plain `hello`), nothing hangs.
    let tls = ClientOptions {
        tls: Some(peng3dnet_std::tls::TlsClientConfig::no_verification().unwrap()),
        ..ClientOptions::default()
    };
    let mismatched = Client::connect(addr, echo::registry(), tls).await.unwrap();
    let result = timeout(T, mismatched.wait_connected())
        .await
        .expect("an end in time");
    assert!(
        matches!(
            result,
            Err(ClientError::Tls(peng3dnet_std::tls::TlsError::NotTls(_)))
        ),
        "{result:?}"
    );
    drop(client);
    stop(running);
}

/// A registry the server lacks a name of: `wait_connected` names it
/// (`ClientError::RegistryMismatch`, as the blocking client's), and the
/// connection is closed with `packetregmismatch` by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_mismatch_names_the_name() {
    let (addr, running) = echo_server();
    let mut registry = echo::registry();
    registry.register::<Raw>().unwrap();
    let client = Client::connect(addr, registry, ClientOptions::default())
        .await
        .unwrap();
    match timeout(T, client.wait_connected())
        .await
        .expect("an end in time")
    {
        Err(ClientError::RegistryMismatch(m)) => {
            assert_eq!(m.peer_lacks, Some(Raw::NAME), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let closed = timeout(T, client.wait_closed()).await.unwrap();
    assert_eq!(
        (closed.reason, closed.initiator),
        (CloseReason::PacketRegMismatch, Initiator::Local)
    );
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_closing_reaches_recv_and_wait_closed() {
    let (addr, running) = echo_server();
    let client = Client::connect(addr, echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    running.handle().shutdown();
    let closed = timeout(T, client.wait_closed()).await.unwrap();
    assert_eq!(closed.reason, CloseReason::ServerShutdown);
    assert_eq!(closed.initiator, Initiator::Peer);
    // The events end with the close, then errors.
    let mut saw_close = false;
    for _ in 0..4 {
        match client.recv().await {
            Ok(ClientEvent::Closed(c)) => {
                assert_eq!(c.reason, CloseReason::ServerShutdown);
                saw_close = true;
            }
            Ok(ClientEvent::Connected) => {}
            Ok(other) => panic!("{other:?}"),
            Err(ClientError::Closed(c)) => {
                assert_eq!(c.reason, CloseReason::ServerShutdown);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(saw_close);
    running.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_a_bounded_queue() {
    let (addr, running) = echo_server();
    let client = Client::connect(addr, echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    let n = 3 * EVENT_QUEUE;
    for i in 0..n {
        client.send::<Echo>(&format!("{i}").as_str()).await.unwrap();
    }
    // Without a recv, the echoes pile up only to the queue's bound (the
    // rest waits in the buffers and the TCP window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sender, receiver) = client.split();
    // Full (3x as many were echoed), and not over.
    assert_eq!(receiver.queued_events(), EVENT_QUEUE);
    let mut waiting = 0;
    while waiting < EVENT_QUEUE && receiver.try_recv().is_some() {
        waiting += 1;
    }
    assert_eq!(waiting, EVENT_QUEUE);
    // Taking events lets the rest in: every echo arrives.
    let mut got = waiting;
    while got < n + 1 {
        match timeout(T, receiver.recv()).await.unwrap().unwrap() {
            ClientEvent::Packet(_) => got += 1,
            other => panic!("{other:?}"),
        }
    }
    drop((sender, receiver));
    stop(running);
}

// ---- TLS ----

mod tls {
    use super::*;
    use peng3dnet_core::{SecurityLevel, State};
    use peng3dnet_std::tls::{TlsClientConfig, TlsServerConfig};
    use peng3dnet_test_pki::Pki;

    /// A packet that may only be sent with a verified server.
    struct Secret;
    impl Packet for Secret {
        const NAME: &'static str = "test:secret";
        const RULES: Rules = Rules::SMART.min_security(SecurityLevel::ServerAuth);
        type Message<'a> = &'a str;
    }

    fn registry() -> StdRegistry {
        let mut reg = echo::registry();
        reg.register::<Secret>().unwrap();
        reg
    }

    fn tls_server(pki: &Pki, client_certs: bool) -> (SocketAddr, RunningServer) {
        let ca = client_certs.then_some(pki.ca.pem.as_bytes());
        let tls =
            TlsServerConfig::from_pem(pki.server.pem.as_bytes(), pki.server.key_pem.as_bytes(), ca)
                .unwrap();
        let options = ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        };
        let server = echo::server(registry(), options)
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        (addr, server.spawn().unwrap())
    }

    async fn connect(addr: SocketAddr, tls: TlsClientConfig) -> Client {
        let options = ClientOptions {
            tls: Some(tls),
            ..ClientOptions::default()
        };
        let client = Client::connect(addr, registry(), options).await.unwrap();
        timeout(T, client.wait_connected()).await.unwrap().unwrap();
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verified_server_is_serverauth_and_echoes_large_and_small() {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]);
        let (addr, running) = tls_server(&pki, false);
        let tls = TlsClientConfig::verify(pki.ca.pem.as_bytes(), "localhost").unwrap();
        let client = connect(addr, tls).await;
        assert_eq!(client.security_level(), SecurityLevel::ServerAuth);
        assert_eq!(client.state(), State::Active);
        // Allowed by the level: it reaches the wire (the echo server drops
        // an unhandled packet; the next echo shows the stream is intact).
        client
            .send::<Secret>(&"for verified servers")
            .await
            .unwrap();
        let big = "x".repeat(100_000);
        for text in ["small", big.as_str(), "after"] {
            client.send::<Echo>(&text).await.unwrap();
            assert_eq!(next_echo(&client).await, text);
        }
        let closed = timeout(T, client.close(CloseReason::UserRequest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(closed.reason, CloseReason::UserRequest);
        stop(running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_certificate_makes_bothauth() {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]);
        let (addr, running) = tls_server(&pki, true);
        let tls = TlsClientConfig::verify(pki.ca.pem.as_bytes(), "localhost")
            .unwrap()
            .with_client_cert(pki.client.pem.as_bytes(), pki.client.key_pem.as_bytes())
            .unwrap();
        let client = connect(addr, tls).await;
        assert_eq!(client.security_level(), SecurityLevel::BothAuth);
        client.send::<Echo>(&"mutual").await.unwrap();
        assert_eq!(next_echo(&client).await, "mutual");
        stop(running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_verification_the_level_is_encrypted_and_rules_refuse() {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]);
        let (addr, running) = tls_server(&pki, false);
        let client = connect(addr, TlsClientConfig::no_verification().unwrap()).await;
        assert_eq!(client.security_level(), SecurityLevel::Encrypted);
        assert!(matches!(
            client.send::<Secret>(&"no").await,
            Err(ClientError::Send(
                peng3dnet_core::connection::SendError::Rules { .. }
            ))
        ));
        client.send::<Echo>(&"still fine").await.unwrap();
        assert_eq!(next_echo(&client).await, "still fine");
        stop(running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_the_ca_did_not_sign_is_refused() {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]);
        let (addr, running) = tls_server(&pki, false);
        let tls = TlsClientConfig::verify(pki.other_ca.pem.as_bytes(), "localhost").unwrap();
        let options = ClientOptions {
            tls: Some(tls),
            ..ClientOptions::default()
        };
        let client = Client::connect(addr, registry(), options).await.unwrap();
        let result = timeout(T, client.wait_connected())
            .await
            .expect("an end in time");
        assert!(result.is_err(), "{result:?}");
        assert!(!client.is_connected());
        stop(running);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_names_the_address() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    match Client::connect(addr, echo::registry(), ClientOptions::default()).await {
        Err(ClientError::Connect { addr: tried, error }) => {
            assert_eq!(tried, addr);
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

/// The echo service for the one peer at the other end of `sock`, on a
/// thread: the core's server connection, driven by
/// `stream::StreamConnection`. Returns how the connection ended.
#[cfg(unix)]
fn stream_echo_server(
    sock: std::os::unix::net::UnixStream,
) -> std::thread::JoinHandle<Result<CloseReason, ClientError>> {
    use peng3dnet_core::codec::Postcard;
    use peng3dnet_std::stream::{StreamConnection, StreamOptions};
    std::thread::spawn(move || {
        let mut conn =
            StreamConnection::server(sock, echo::registry(), Postcard, StreamOptions::default())?;
        loop {
            match conn.recv(T)? {
                ClientEvent::Packet(p) if p.is::<Echo>() => {
                    conn.send_encoded(p.packet_id, &p.body)?
                }
                ClientEvent::Closed(closed) => return Ok(closed.reason),
                _ => {}
            }
        }
    })
}

/// `Client::over` a `tokio::net::UnixStream`: the handshake, echoes in
/// order and a close that the server side sees with its reason.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_a_unix_stream_echoes_and_closes() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = stream_echo_server(b);
    a.set_nonblocking(true).unwrap();
    let a = tokio::net::UnixStream::from_std(a).unwrap();
    let client = Client::over(a, echo::registry(), ClientOptions::default()).unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    for i in 0..100 {
        client
            .send::<Echo>(&format!("u{i}").as_str())
            .await
            .unwrap();
    }
    for i in 0..100 {
        assert_eq!(next_echo(&client).await, format!("u{i}"));
    }
    let closed = timeout(T, client.close(CloseReason::UserRequest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.reason, CloseReason::UserRequest);
    assert_eq!(server.join().unwrap().unwrap(), CloseReason::UserRequest);
}

/// `Client::over` one end of a `tokio::io::duplex` of 64 bytes (every
/// frame is written and read in pieces, the writer waits for room), whose
/// other end is copied to a socket pair with the stream server behind it:
/// 300 messages of 1,000 bytes, sent from one task while another receives,
/// all come back in order. With a write queue smaller than what is sent,
/// `send` waits for the driver (back-pressure) rather than failing.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_a_small_duplex_gets_every_echo_in_order() {
    let (near, far) = tokio::io::duplex(64);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = stream_echo_server(b);
    a.set_nonblocking(true).unwrap();
    let mut a = tokio::net::UnixStream::from_std(a).unwrap();
    let bridge = tokio::spawn(async move {
        let mut far = far;
        let _ = tokio::io::copy_bidirectional(&mut far, &mut a).await;
    });
    let options = ClientOptions {
        max_write_queue: 8 * 1024,
        ..ClientOptions::default()
    };
    let client = Client::over(near, echo::registry(), options).unwrap();
    timeout(T, client.wait_connected()).await.unwrap().unwrap();
    let (sender, receiver) = client.split();
    let body = |i: usize| format!("{i:04}{}", "d".repeat(996));
    let sending = tokio::spawn(async move {
        for i in 0..300 {
            timeout(T, sender.send::<Echo>(&body(i).as_str()))
                .await
                .expect("room in time")
                .unwrap();
        }
        sender
    });
    let mut got = 0;
    while got < 300 {
        match timeout(T, receiver.recv()).await.expect("an event in time") {
            Ok(ClientEvent::Packet(p)) => {
                assert_eq!(p.decode::<Echo>().unwrap(), body(got));
                got += 1;
            }
            Ok(ClientEvent::Connected) => {}
            other => panic!("expected an echo, got {other:?}"),
        }
    }
    let sender = sending.await.unwrap();
    let closed = timeout(T, sender.close(CloseReason::UserRequest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.reason, CloseReason::UserRequest);
    assert_eq!(server.join().unwrap().unwrap(), CloseReason::UserRequest);
    timeout(T, bridge).await.unwrap().unwrap();
}

/// The server side of a `Client::over` stream ending: the client's task
/// sees end of stream and reports the close.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_a_stream_sees_the_server_close() {
    use peng3dnet_core::codec::Postcard;
    use peng3dnet_std::stream::{StreamConnection, StreamOptions};
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut conn =
            StreamConnection::server(b, echo::registry(), Postcard, StreamOptions::default())
                .unwrap();
        conn.wait_connected(T).unwrap();
        conn.close(CloseReason::ServerShutdown).unwrap();
    });
    a.set_nonblocking(true).unwrap();
    let a = tokio::net::UnixStream::from_std(a).unwrap();
    let client = Client::over(a, echo::registry(), ClientOptions::default()).unwrap();
    let closed = timeout(T, client.wait_closed()).await.unwrap();
    assert_eq!(closed.reason, CloseReason::ServerShutdown);
    assert_eq!(closed.initiator, Initiator::Peer);
    server.join().unwrap();
}
