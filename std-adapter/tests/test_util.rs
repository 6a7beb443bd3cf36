//! The `test-util` helpers: a server (mio and tokio) on 127.0.0.1:0 whose
//! guard shuts it down when dropped, the tokio server with in-memory
//! clients, the in-memory stream and the connection pair on it.

use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientError, ClientOptions, UnexpectedEvent};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{RunningServer, ServerOptions};
use peng3dnet_std::stream::ReadTimeout;
use peng3dnet_std::stream::StreamOptions;
use peng3dnet_std::test_util::{
    spawn_server, spawn_tokio_server, stream_pair, MemoryServer, MemoryStream,
    MEMORY_STREAM_CAPACITY,
};
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn the_spawned_server_echoes_and_dropping_it_shuts_it_down() {
    let server = spawn_server(echo::server(echo::registry(), ServerOptions::default())).unwrap();
    echoes_and_shuts_down_on_drop(server);
}

/// The guard's server is on 127.0.0.1 and echoes; dropping the guard
/// returns after the server closed its clients (`servershutdown`) and
/// stopped listening.
fn echoes_and_shuts_down_on_drop(server: RunningServer) {
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    let mut client = Client::connect(addr, echo::registry(), ClientOptions::default()).unwrap();
    client.wait_connected(T).unwrap();
    client.send::<Echo>(&"ping").unwrap();
    assert_eq!(
        client.expect::<Echo>(T).unwrap().decode::<Echo>().unwrap(),
        "ping"
    );
    drop(server);
    // The drop returned after the server closed its clients and stopped.
    match client.expect::<Echo>(T) {
        Err(ClientError::Unexpected {
            got: UnexpectedEvent::Closed(c),
            ..
        }) => assert_eq!(c.reason, CloseReason::ServerShutdown),
        other => panic!("expected the server's shutdown, got {other:?}"),
    }
    let again = Client::connect(addr, echo::registry(), ClientOptions::default());
    assert!(
        matches!(again, Err(ClientError::Connect { .. })),
        "{:?}",
        again.err()
    );
}

#[test]
fn the_stream_pair_connects_and_echoes() {
    let (mut client, mut server) = stream_pair(echo::registry(), StreamOptions::default()).unwrap();
    let server = std::thread::spawn(move || -> Result<CloseReason, ClientError> {
        let p = server.expect::<Echo>(T)?;
        server.send_encoded(p.packet_id, &p.body)?;
        match server.expect::<Echo>(T) {
            Err(ClientError::Unexpected {
                got: UnexpectedEvent::Closed(c),
                ..
            }) => Ok(c.reason),
            other => panic!("expected the client's close, got {other:?}"),
        }
    });
    client.wait_connected(T).unwrap();
    client.send::<Echo>(&"in memory").unwrap();
    assert_eq!(
        client.expect::<Echo>(T).unwrap().decode::<Echo>().unwrap(),
        "in memory"
    );
    client.close(CloseReason::UserRequest).unwrap();
    assert_eq!(server.join().unwrap().unwrap(), CloseReason::UserRequest);
}

#[test]
fn a_memory_stream_carries_bytes_both_ways_and_ends_when_dropped() {
    let (mut a, mut b) = MemoryStream::pair();
    a.write_all(b"ping").unwrap();
    b.write_all(b"pong!").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(b.read(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"ping");
    assert_eq!(a.read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"pong!");
    // Nothing to read: the read timeout ends the wait.
    a.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let e = a.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    // A full direction takes no more until read.
    let big = vec![7u8; MEMORY_STREAM_CAPACITY + 10];
    assert_eq!(a.write(&big).unwrap(), MEMORY_STREAM_CAPACITY);
    let mut got = vec![0u8; MEMORY_STREAM_CAPACITY];
    b.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&x| x == 7));
    // What was written before the drop is still read, then end of stream.
    a.write_all(b"last").unwrap();
    drop(a);
    assert_eq!(b.read(&mut buf).unwrap(), 4);
    assert_eq!(b.read(&mut buf).unwrap(), 0);
    assert_eq!(b.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
}

/// A writer blocked on a full direction resumes when the reader takes.
#[test]
fn a_blocked_memory_stream_writer_resumes_when_read() {
    let (mut a, mut b) = MemoryStream::pair();
    let writer = std::thread::spawn(move || {
        a.write_all(&vec![1u8; 3 * MEMORY_STREAM_CAPACITY]).unwrap();
        a
    });
    let mut total = 0;
    let mut buf = vec![0u8; 8192];
    b.set_read_timeout(Some(T)).unwrap();
    while total < 3 * MEMORY_STREAM_CAPACITY {
        let n = b.read(&mut buf).unwrap();
        assert!(n > 0);
        total += n;
    }
    assert_eq!(total, 3 * MEMORY_STREAM_CAPACITY);
    drop(writer.join().unwrap());
    assert_eq!(b.read(&mut buf).unwrap(), 0);
}

#[test]
fn the_spawned_tokio_server_echoes_and_dropping_it_shuts_it_down() {
    let server =
        spawn_tokio_server(echo::server(echo::registry(), ServerOptions::default())).unwrap();
    echoes_and_shuts_down_on_drop(server);
}

/// The memory server echoes to in-memory clients; dropping it shuts the
/// server down (its clients see `servershutdown`), and `shutdown` returns
/// its counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_server_serves_clients_without_a_socket() {
    let server =
        MemoryServer::start(echo::server(echo::registry(), ServerOptions::default())).unwrap();
    let a = server
        .client(echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    a.send::<Echo>(&"over memory").await.unwrap();
    let echoed = a.expect::<Echo>(T).await.unwrap();
    assert_eq!(echoed.decode::<Echo>().unwrap(), "over memory");
    drop(server);
    match a.expect::<Echo>(T).await {
        Err(ClientError::Unexpected {
            got: UnexpectedEvent::Closed(c),
            ..
        }) => assert_eq!(c.reason, CloseReason::ServerShutdown),
        other => panic!("expected the server's shutdown, got {other:?}"),
    }

    let server =
        MemoryServer::start(echo::server(echo::registry(), ServerOptions::default())).unwrap();
    let b = server
        .client(echo::registry(), ClientOptions::default())
        .await
        .unwrap();
    // An echo: the server has the client's handshake.accept by then (the
    // client is connected once it sent it).
    b.send::<Echo>(&"once").await.unwrap();
    b.expect::<Echo>(T).await.unwrap();
    drop(b);
    let stats = tokio::time::timeout(T, server.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stats.accepted, stats.handshakes), (1, 1));
}

#[test]
fn the_memory_server_needs_a_runtime() {
    let e = MemoryServer::start(echo::server(echo::registry(), ServerOptions::default()))
        .err()
        .expect("no runtime here");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}
