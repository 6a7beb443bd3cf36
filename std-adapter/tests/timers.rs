//! The connection's timers through the std adapter, on 127.0.0.1:
//! keepalives that keep an idle client of this crate connected under a
//! server's idle timeout; a half-open connection (a path that stops carrying
//! bytes while both sockets stay open) found on both sides, with the
//! blocking and the tokio client; and the `peng3dnet echo --timeout` that
//! bounds each answer. The program's server timers (`serve --idle-timeout`,
//! `--frame-timeout`) are cases of `tests/hostile.rs`, with a healthy client
//! timed beside them. Every wait is bounded.

mod common;

use common::{Proc, LIMIT};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::{CloseReason, Closed, Initiator};
use peng3dnet_std::client::{Client, ClientError, ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{RunningServer, ServerOptions};
use peng3dnet_test_support::RawPeer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// An echo server with these timers and a channel of its closes.
fn server(
    idle: Option<Duration>,
    keepalive: Option<Duration>,
) -> (RunningServer, mpsc::Receiver<Closed>) {
    let (tx, closes) = mpsc::channel();
    let options = ServerOptions {
        idle_timeout: idle,
        keepalive_interval: keepalive,
        ..ServerOptions::default()
    };
    let running = echo::server(echo::registry(), options)
        .on_close(move |_, closed| {
            let _ = tx.send(closed.clone());
        })
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    (running, closes)
}

fn client_options(idle: Option<Duration>, keepalive: Option<Duration>) -> ClientOptions {
    ClientOptions {
        idle_timeout: idle,
        keepalive_interval: keepalive,
        ..ClientOptions::default()
    }
}

/// Waits on `client` for `span` (its timers run meanwhile); the first event
/// that is not `Connected`, if any.
fn idle_for(client: &mut Client, span: Duration) -> Option<Result<ClientEvent, ClientError>> {
    let until = Instant::now() + span;
    for _ in 0..10_000 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match client.recv(left) {
            Err(ClientError::Timeout) | Ok(ClientEvent::Connected) => {}
            other => return Some(other),
        }
    }
    panic!("idle_for did not end");
}

fn echo_once(client: &mut Client, text: &str) {
    client.send::<Echo>(&text).unwrap();
    for _ in 0..100 {
        match client.recv(LIMIT).unwrap() {
            ClientEvent::Connected => {}
            ClientEvent::Packet(p) => {
                assert_eq!(p.decode::<Echo>().unwrap(), text);
                return;
            }
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    panic!("no echo");
}

#[test]
fn keepalives_keep_an_idle_client_under_the_servers_idle_timeout() {
    let (running, closes) = server(Some(MS(300)), None);
    let addr = running.local_addr();
    let mut silent =
        Client::connect(addr, echo::registry(), client_options(None, None)).expect("connect");
    silent.wait_connected(LIMIT).unwrap();
    // Without keepalives: closed by the server after its idle timeout.
    match idle_for(&mut silent, LIMIT) {
        Some(Ok(ClientEvent::Closed(c))) => {
            assert_eq!(c.reason, CloseReason::IdleTimeout);
            assert_eq!(c.initiator, Initiator::Peer);
        }
        other => panic!("expected the idle timeout, got {other:?}"),
    }
    let closed = closes.recv_timeout(LIMIT).expect("the server's close");
    assert_eq!(
        (closed.reason, closed.initiator),
        (CloseReason::IdleTimeout, Initiator::Local)
    );
    // With them: still connected after more than three idle timeouts. (A
    // blocking client sends them while it is driven: a call that waits.)
    let mut kept = Client::connect(addr, echo::registry(), client_options(None, Some(MS(50))))
        .expect("connect");
    kept.wait_connected(LIMIT).unwrap();

    assert_eq!(
        idle_for(&mut kept, MS(1_000)).map(|r| format!("{r:?}")),
        None
    );
    echo_once(&mut kept, "still here");
    assert!(closes.try_recv().is_err(), "only the silent one closed");
}

/// A TCP relay whose path can be cut while both sockets stay open: once
/// `frozen`, bytes are read and dropped in both directions.
struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        thread::spawn(move || {
            let Ok((down, _)) = listener.accept() else {
                return;
            };
            let up = TcpStream::connect(upstream).unwrap();
            for (mut from, mut to) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                let f = f.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let until = Instant::now() + LIMIT;
                    from.set_read_timeout(Some(MS(50))).unwrap();
                    while Instant::now() < until {
                        match from.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) if !f.load(Ordering::SeqCst) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Relay { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_half_open_connection_is_found_on_both_sides_blocking_client() {
    let (running, closes) = server(Some(MS(400)), Some(MS(100)));
    let relay = Relay::start(running.local_addr());
    let mut client = Client::connect(
        relay.addr,
        echo::registry(),
        client_options(Some(MS(400)), Some(MS(100))),
    )
    .expect("connect");
    client.wait_connected(LIMIT).unwrap();
    // Healthy and idle: keepalives both ways hold both idle timers off.
    assert_eq!(
        idle_for(&mut client, MS(1_000)).map(|r| format!("{r:?}")),
        None
    );
    echo_once(&mut client, "before the cut");
    relay.freeze();
    match idle_for(&mut client, LIMIT) {
        Some(Ok(ClientEvent::Closed(c))) => {
            assert_eq!(
                (c.reason, c.initiator),
                (CloseReason::IdleTimeout, Initiator::Local)
            );
        }
        other => panic!("expected the client's idle timeout, got {other:?}"),
    }
    let closed = closes.recv_timeout(LIMIT).expect("the server's close");
    assert_eq!(
        (closed.reason, closed.initiator),
        (CloseReason::IdleTimeout, Initiator::Local)
    );
}

#[test]
fn a_half_open_connection_is_found_on_both_sides_tokio_client() {
    let (running, closes) = server(Some(MS(400)), Some(MS(100)));
    let relay = Relay::start(running.local_addr());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use peng3dnet_std::tokio_client::Client;
        let client = Client::connect(
            relay.addr,
            echo::registry(),
            client_options(Some(MS(400)), Some(MS(100))),
        )
        .await
        .expect("connect");
        client.wait_connected().await.unwrap();
        // Healthy and idle for a second: nothing but `Connected` arrives.
        let idle = tokio::time::timeout(MS(1_000), async {
            loop {
                match client.recv().await {
                    Ok(ClientEvent::Connected) => {}
                    other => return other,
                }
            }
        })
        .await;
        assert!(idle.is_err(), "nothing while healthy and idle: {idle:?}");
        relay.freeze();
        let closed = tokio::time::timeout(LIMIT, client.wait_closed())
            .await
            .expect("the client closed within the limit");
        assert_eq!(
            (closed.reason, closed.initiator),
            (CloseReason::IdleTimeout, Initiator::Local)
        );
    });
    let closed = closes.recv_timeout(LIMIT).expect("the server's close");
    assert_eq!(
        (closed.reason, closed.initiator),
        (CloseReason::IdleTimeout, Initiator::Local)
    );
}

#[test]
fn the_echo_programs_timeout_bounds_each_answer_not_each_event() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut program = Proc::rust(&["echo", "--timeout", "1", &addr, "never answered"]);
    let until = Instant::now() + LIMIT;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < until => thread::sleep(MS(5)),
            Err(e) => panic!("the program did not connect: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    // A server that completes the handshake and then sends a frame the
    // client ignores every 200 ms, but never the echo.
    let chatter = thread::spawn(move || {
        let mut peer = RawPeer::from_stream(stream, Postcard, LIMIT);
        peer.server_handshake(&echo::registry());
        let until = Instant::now() + LIMIT;
        while Instant::now() < until {
            if peer
                .try_write(&peng3dnet_test_support::frame(200, 0, b""))
                .is_err()
            {
                return;
            }
            thread::sleep(MS(200));
        }
    });
    let (status, _) = program.wait();
    assert!(!status.success(), "no answer came: the program fails");
    assert!(
        program
            .stderr()
            .contains("0 of 1 answers came back before the timeout"),
        "{}",
        program.stderr()
    );
    drop(program);
    chatter.join().unwrap();
}
