//! The embassy client (`peng3dnet_embassy::Session`) over a host TCP stream
//! (tokio, through embedded-io-adapters) against the std echo server, plain
//! TCP: handshake, echoes, a ping, closes seen by both sides.

mod embassy_std_common;

use embassy_futures::join::join;
use embedded_io_adapters::tokio_1::FromTokio;
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::{CloseReason, Closed, Config, Initiator, SecurityLevel};
use peng3dnet_embassy::{Resources, RunError, Session};
use std::future::Future;
use tokio::net::TcpStream;
use tokio::time::timeout;

use embassy_std_common::{echo_exchange, registry, Client, Secret, TestServer, LIMIT};

type Res = Resources<4096, 4096>;

/// Runs `app` beside `client`'s session over `stream` until both ended,
/// within [`LIMIT`] (`what` names the exchange for the timeout's message).
async fn drive<T>(
    client: &Client<'_>,
    stream: TcpStream,
    what: &str,
    app: impl Future<Output = T>,
) -> (T, Result<Closed, RunError<std::io::Error, std::io::Error>>) {
    let (r, w) = stream.into_split();
    timeout(
        LIMIT,
        join(app, client.run(FromTokio::new(r), FromTokio::new(w))),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish in time"))
}

async fn connect(server: &TestServer) -> TcpStream {
    timeout(LIMIT, TcpStream::connect(server.addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

#[tokio::test(flavor = "current_thread")]
async fn plain_handshake_echo_and_client_close() {
    let server = TestServer::start(None);
    let stream = connect(&server).await;
    let config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client = Session::client(&config, &mut reg, Postcard, &mut res, "classic").unwrap();

    let app = async {
        client.wait_connected().await.expect("handshake");
        echo_exchange(&client).await;
        // Plain TCP is security level NONE: a packet that needs more is
        // refused before it reaches the wire, and the connection goes on.
        assert!(matches!(
            client.send::<Secret>(&"psst").await,
            Err(SendError::Rules { .. })
        ));
        echo_exchange(&client).await;
        client.close(CloseReason::UserRequest);
    };
    let (_, run) = drive(&client, stream, "the session", app).await;
    let closed = run.expect("transport error");
    assert_eq!(closed.reason, CloseReason::UserRequest);
    assert_eq!(closed.initiator, Initiator::Local);

    assert_eq!(server.handshake_level().await, SecurityLevel::None);
    assert_eq!(
        server.close().await,
        (CloseReason::UserRequest, Initiator::Peer)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn plain_server_shutdown_reaches_the_client() {
    let server = TestServer::start(None);
    let stream = connect(&server).await;
    let config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client = Session::client(&config, &mut reg, Postcard, &mut res, "classic").unwrap();

    let app = async {
        client.wait_connected().await.expect("handshake");
        server.shutdown();
        client.wait_closed().await
    };
    let (seen, run) = drive(&client, stream, "the session", app).await;
    let closed = run.expect("transport error");
    assert_eq!(closed.reason, CloseReason::ServerShutdown);
    assert_eq!(closed.initiator, Initiator::Peer);
    assert_eq!(seen, closed);
}

#[tokio::test(flavor = "current_thread")]
async fn plain_ping() {
    let server = TestServer::start(None);
    let stream = connect(&server).await;
    let config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client = Session::client(&config, &mut reg, Postcard, &mut res, "ping").unwrap();

    let (pong, run) = drive(&client, stream, "the ping", client.wait_pong()).await;
    let delay = pong.expect("pong");
    assert!(delay.as_micros() < LIMIT.as_micros() as u64, "{delay:?}");
    let closed = run.expect("transport error");
    assert_eq!(closed.reason, CloseReason::PingComplete);
    assert_eq!(closed.initiator, Initiator::Local);
    assert_eq!(
        server.close().await,
        (CloseReason::PingComplete, Initiator::Peer)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn plain_server_gone_ends_the_session() {
    // A listener that accepts and closes at once: no hello ever comes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = async {
        let (sock, _) = listener.accept().await.unwrap();
        drop(sock);
    };
    let stream = async { TcpStream::connect(addr).await.unwrap() };
    let ((), stream) = join(accept, stream).await;
    let config = Config::new();
    let mut reg = registry();
    let mut res = Box::new(Res::new());
    let client: Client = Session::client(&config, &mut reg, Postcard, &mut res, "classic").unwrap();
    let (connected, run) = drive(&client, stream, "the session", client.wait_connected()).await;
    let closed = connected.expect_err("no handshake without a server");
    assert_eq!(closed.initiator, Initiator::Transport);
    // An EOF (Ok) or a reset (a read error), never a hang.
    if let Ok(c) = run {
        assert_eq!(c, closed);
    }
}
