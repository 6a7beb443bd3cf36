//! The blocking `Client` against the echo server over 127.0.0.1: its waits
//! end at their timeouts, `try_recv` sees what arrived, and `send` keeps
//! reading while answers pile up. A client call that never returns would
//! hang the test, so each runs on its own thread under a watchdog.

use peng3dnet_core::{CloseReason, Closed, Initiator};
use peng3dnet_std::client::{Client, ClientError, ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{ClientId, RunningServer, ServerOptions};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

struct EchoServer {
    addr: SocketAddr,
    running: Option<RunningServer>,
    shook: Receiver<ClientId>,
}

impl Drop for EchoServer {
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

fn echo_server() -> EchoServer {
    let (tx, shook) = mpsc::channel();
    let server = echo::server(echo::registry(), ServerOptions::default())
        .on_handshake(move |ctx| {
            let _ = tx.send(ctx.client_id());
        })
        .bind("127.0.0.1:0")
        .unwrap();
    EchoServer {
        addr: server.local_addr(),
        running: Some(server.spawn().unwrap()),
        shook,
    }
}

/// Runs `f` on a thread and waits up to `limit` for it. A call that spins
/// forever fails the test here (its thread is left behind).
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the client call returned in time")
}

fn connect(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr, echo::registry(), ClientOptions::default()).unwrap();
    c.wait_connected(T).unwrap();
    c
}

/// Bug (since "std client: skip reads that readiness says would block"):
/// `try_recv` calls `pump` with a deadline of now, which returns before
/// polling; once a short read cleared `readable`, nothing sets it again, so
/// `try_recv` never reads another byte.
#[test]
fn try_recv_returns_an_answer_that_arrived() {
    let s = echo_server();
    let mut c = connect(s.addr);
    assert_eq!(c.recv(T).unwrap(), ClientEvent::Connected);
    c.send::<Echo>(&"ping").unwrap();
    let start = Instant::now();
    let mut got = None;
    for _ in 0..1000 {
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
        if let Some(e) = c.try_recv().unwrap() {
            got = Some(e);
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let Some(ClientEvent::Packet(p)) = got else {
        panic!("try_recv saw nothing in 3 s: {got:?}");
    };
    assert_eq!(p.decode::<Echo>().unwrap(), "ping");
}

/// Bug: `pump` returns at once while the event queue is not empty, without
/// checking the deadline; `wait_closed` (and `wait_connected`, and `send`
/// waiting for room) never empties the queue, so they loop. Before
/// "skip reads that readiness says would block" they spun at 100% CPU but
/// read; now they read nothing and spin forever, past their timeout.
#[test]
fn wait_closed_returns_while_events_are_queued() {
    let s = echo_server();
    let mut c = connect(s.addr);
    // The `Connected` event stays queued.
    let id = s.shook.recv_timeout(T).unwrap();
    let handle = s.running.as_ref().unwrap().handle().clone();
    let res = within(2 * T, move || {
        let start = Instant::now();
        thread::sleep(Duration::from_millis(50));
        handle.close(id, CloseReason::Command).unwrap();
        (c.wait_closed(T), start.elapsed())
    });
    assert_eq!(
        res.0.unwrap(),
        Closed {
            reason: CloseReason::Command,
            initiator: Initiator::Peer
        }
    );
    assert!(res.1 < T);
}

#[test]
fn wait_closed_times_out_while_events_are_queued() {
    let s = echo_server();
    let mut c = connect(s.addr);
    let res = within(3 * T, move || {
        let start = Instant::now();
        (c.wait_closed(Duration::from_millis(500)), start.elapsed())
    });
    assert!(matches!(res.0, Err(ClientError::Timeout)), "{:?}", res.0);
    assert!(res.1 < Duration::from_secs(5));
}

/// `send` waits for room while the server's answers queue up unread: it
/// must keep reading them, or both ends stop.
#[test]
fn send_keeps_reading_while_answers_queue_up() {
    let s = echo_server();
    let addr = s.addr;
    let n = within(3 * T, move || {
        let options = ClientOptions {
            max_write_queue: 16 * 1024,
            ..ClientOptions::default()
        };
        let mut c = Client::connect(addr, echo::registry(), options).unwrap();
        c.wait_connected(T).unwrap();
        let text = "x".repeat(100);
        let start = Instant::now();
        for _ in 0..50_000 {
            assert!(start.elapsed() < 2 * T, "too slow");
            c.send::<Echo>(&text.as_str()).unwrap();
        }
        let mut n = 0;
        for _ in 0..50_001 {
            match c.recv(T).unwrap() {
                ClientEvent::Connected => {}
                ClientEvent::Packet(p) => {
                    assert_eq!(p.decode::<Echo>().unwrap(), text);
                    n += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        n
    });
    assert_eq!(n, 50_000);
}

#[test]
fn a_failed_connect_names_the_address() {
    // A port nobody listens on (bound, then closed).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    match Client::connect(addr, echo::registry(), ClientOptions::default()) {
        Err(e @ ClientError::Connect { .. }) => {
            let ClientError::Connect { addr: tried, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*tried, addr);
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}
