//! Shared by `embassy_std_plain.rs` and `embassy_std_tls.rs`: the std echo
//! server on 127.0.0.1 (recording what its hooks saw), the embassy client's
//! registry and session type, and the echo exchange both run.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::{CloseReason, Initiator, SecurityLevel};
use peng3dnet_embassy::Session;
use peng3dnet_std::echo::{self, Echo, EchoPing, EchoPingMsg};
use peng3dnet_std::server::{RunningServer, ServerOptions};
use peng3dnet_std::tls::TlsServerConfig;
use peng3dnet_std::{StdRegistry, REGISTRY_CAPACITY};

use embassy_sync::blocking_mutex::raw::NoopRawMutex;

/// The bound of every wait.
pub const LIMIT: Duration = Duration::from_secs(10);

/// `test:secret`: may only be sent over a server-authenticated transport.
pub struct Secret;
impl Packet for Secret {
    const NAME: &'static str = "test:secret";
    const RULES: Rules = Rules {
        min_security: SecurityLevel::ServerAuth,
        ..Rules::SMART
    };
    type Message<'a> = &'a str;
}

/// The registry of both ends: the echo packets and [`Secret`] (the std
/// registry's capacity, so that the embassy session holds the same names).
pub fn registry() -> StdRegistry {
    let mut reg = echo::registry();
    reg.register::<Secret>().unwrap();
    reg
}

/// The embassy client's session type.
pub type Client<'a> = Session<'a, NoopRawMutex, Postcard, REGISTRY_CAPACITY, &'a mut StdRegistry>;

/// What the std server's hooks saw.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// A client completed the handshake, at this security level.
    Handshake(SecurityLevel),
    /// A client's connection closed.
    Closed(CloseReason, Initiator),
}

/// A std echo server on an ephemeral 127.0.0.1 port, shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    running: Option<RunningServer>,
    events: Arc<Mutex<Vec<ServerEvent>>>,
}

impl TestServer {
    pub fn start(tls: Option<TlsServerConfig>) -> TestServer {
        let events = Arc::new(Mutex::new(Vec::new()));
        let (on_handshake, on_close) = (events.clone(), events.clone());
        let options = ServerOptions {
            tls,
            shutdown_grace: Duration::from_millis(500),
            ..ServerOptions::default()
        };
        let server = echo::server(registry(), options)
            .on_handshake(move |ctx| {
                let level = ctx.security_level();
                on_handshake
                    .lock()
                    .unwrap()
                    .push(ServerEvent::Handshake(level));
            })
            .on_close(move |_, closed| {
                on_close
                    .lock()
                    .unwrap()
                    .push(ServerEvent::Closed(closed.reason.clone(), closed.initiator));
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        TestServer {
            addr,
            running: Some(server.spawn().unwrap()),
            events,
        }
    }

    /// Everything the hooks saw so far.
    pub fn events(&self) -> Vec<ServerEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Waits (at most [`LIMIT`]) for the first event `pick` accepts.
    pub async fn wait_for<T>(&self, what: &str, pick: impl Fn(&ServerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Some(t) = self.events.lock().unwrap().iter().find_map(&pick) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server saw no {what} within {LIMIT:?}; it saw {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The security level the server's handshake hook read.
    pub async fn handshake_level(&self) -> SecurityLevel {
        self.wait_for("handshake", |e| match e {
            ServerEvent::Handshake(level) => Some(*level),
            _ => None,
        })
        .await
    }

    /// Why the server says the connection closed.
    pub async fn close(&self) -> (CloseReason, Initiator) {
        self.wait_for("close", |e| match e {
            ServerEvent::Closed(reason, initiator) => Some((reason.clone(), *initiator)),
            _ => None,
        })
        .await
    }

    /// Asks the server to shut down (its clients get `servershutdown`).
    pub fn shutdown(&self) {
        if let Some(running) = &self.running {
            running.handle().shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.handle().shutdown();
            let _ = running.join();
        }
    }
}

/// The exchange every connected client runs: echoes of several sizes, a
/// pipelined burst, and an `echo:ping` stamped by the server.
pub async fn echo_exchange(client: &Client<'_>) {
    let mut buf = vec![0u8; 4096];
    let long = "x".repeat(3000);
    for msg in ["hello", "", "ünïcödé", long.as_str()] {
        client.send::<Echo>(&msg).await.expect("send echo");
        let got = client.receive(&mut buf).await.expect("receive echo");
        assert_eq!(got.decode::<Echo>().expect("decode echo"), msg);
    }

    let burst: Vec<String> = (0..100).map(|i| format!("message {i}")).collect();
    for msg in &burst {
        client
            .send::<Echo>(&msg.as_str())
            .await
            .expect("send burst");
    }
    for msg in &burst {
        let got = client.receive(&mut buf).await.expect("receive burst");
        assert_eq!(got.decode::<Echo>().expect("decode burst"), msg);
    }

    let sent = EchoPingMsg {
        client_timestamp: 1234.5,
        server_timestamp: None,
    };
    client
        .send::<EchoPing>(&sent)
        .await
        .expect("send echo:ping");
    let got = client.receive(&mut buf).await.expect("receive echo:ping");
    let answer = got.decode::<EchoPing>().expect("decode echo:ping");
    assert_eq!(answer.client_timestamp, 1234.5);
    let stamp = answer
        .server_timestamp
        .expect("the server stamps echo:ping");
    assert!((stamp - echo::unix_time()).abs() < 60.0, "stamp {stamp}");
}
