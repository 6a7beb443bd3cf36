//! The embassy adapter on two embassy-net stacks (10.42.0.1 serving, 10.42.0.2
//! connecting) joined by an in-memory Ethernet link: two
//! `embassy-net-driver-channel` drivers whose frames a forwarding future
//! copies across (`peng3dnet_embassy::test_util::with_link`, the link users
//! test with too). Nothing leaves the process. Each test runs on embassy's std
//! executor in a thread of its own; every wait is bounded by an
//! `embassy_time` timeout and each test by a wall-clock limit.
//!
//! Covered: handshake, echo of typed packets, SmartPacket rules refusing a
//! send on both sides and closing the connection, closes with a reason on
//! both ends (client, server, shutdown), ping, handshake timeout, the hooks,
//! broadcast, and the N-slot limit (`serverfull` for the next client, the
//! slot reused after a close); a handler answering in place with no copy
//! buffer (retrying while the client's queue is full), `Server::close` before
//! a handshake, a slot freed at its connection's end although its handler
//! never returned, and a freed slot serving the next client at once while
//! its old socket still lingers on the close. Clients run `Session::run_io`
//! on the sockets.

use embassy_executor::Executor;
use embassy_futures::join::{join, join3};
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{with_timeout, Duration, Instant, Timer};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{Incoming, SendError};
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::rules::{InvalidAction, Rules};
use peng3dnet_core::time::Duration as CoreDuration;
use peng3dnet_core::{CloseReason, Closed, Config, Initiator, Side};
use peng3dnet_embassy::server::{ClientId, Flow, ServerOptions, ServerOutbox, ServerStats};
use peng3dnet_embassy::test_util::{with_link, SERVER_IP};
use peng3dnet_embassy::{Ctx, Handler, Resources, Server, ServerResources, Session};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

const PORT: u16 = 4242;
/// Bound of every single wait.
const STEP: Duration = Duration::from_secs(5);
/// Bound of one client's whole connection.
const LIFE: Duration = Duration::from_secs(20);
/// Bound of a whole test, in wall-clock time.
const WALL: std::time::Duration = std::time::Duration::from_secs(60);
const NR: usize = 16;
const SLOTS: usize = 2;

// ---- packets ----

/// Echoed by the server; the text `broadcast` makes it broadcast instead.
struct Echo;
impl Packet for Echo {
    const NAME: &'static str = "test:echo";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a str;
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
struct Point {
    x: i32,
    y: i32,
}

/// A typed struct: the server answers `{x + 1, y * 2}`.
struct Move;
impl Packet for Move {
    const NAME: &'static str = "test:move";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = Point;
}

/// Received by clients only: the server sends it, a client may not.
struct Notice;
impl Packet for Notice {
    const NAME: &'static str = "test:notice";
    const RULES: Rules = Rules::SMART.side(Side::Client);
    type Message<'a> = &'a str;
}

/// Received by the server only: the server may not send it.
struct Report;
impl Packet for Report {
    const NAME: &'static str = "test:report";
    const RULES: Rules = Rules::SMART.side(Side::Server);
    type Message<'a> = u32;
}

/// Received by clients only, and breaking that closes the connection.
struct Strict;
impl Packet for Strict {
    const NAME: &'static str = "test:strict";
    const RULES: Rules = Rules::SMART
        .side(Side::Client)
        .on_invalid(InvalidAction::Close);
    type Message<'a> = u8;
}

fn registry() -> Registry<NR> {
    let mut r = Registry::new();
    r.register::<Echo>().unwrap();
    r.register::<Move>().unwrap();
    r.register::<Notice>().unwrap();
    r.register::<Report>().unwrap();
    r.register::<Strict>().unwrap();
    r
}

// ---- the executor, one per test ----

/// One task storage per test: a storage is not taken again once its
/// executor stopped (`run_until` returns before the executor polls the
/// finished task once more to release it), so the pool must hold as many
/// as the tests that call [`run_test`].
#[embassy_executor::task(pool_size = 16)]
async fn scenario(fut: Pin<Box<dyn Future<Output = ()>>>, done: Arc<AtomicBool>) {
    fut.await;
    done.store(true, Ordering::SeqCst);
}

/// Runs the future `make` builds on a std embassy executor in a new thread;
/// fails the test on a panic or after [`WALL`].
fn run_test<Fut: Future<Output = ()> + 'static>(name: &str, make: fn() -> Fut) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
            let done = Arc::new(AtomicBool::new(false));
            let flag = done.clone();
            executor.run_until(
                move |spawner| spawner.spawn(scenario(Box::pin(make()), flag).unwrap()),
                move || done.load(Ordering::SeqCst),
            );
            let _ = tx.send(started.elapsed());
        })
        .unwrap();
    match rx.recv_timeout(WALL) {
        Ok(took) => {
            thread.join().unwrap();
            eprintln!("{name}: {took:?}");
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{name}: the executor stopped without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: over the wall-clock limit {WALL:?}")
        }
    }
}

// ---- the in-memory network: `peng3dnet_embassy::test_util::with_link` ----

/// Closes a socket: FIN, wait for the peer's, reset if it does not come.
async fn close_socket(socket: &mut TcpSocket<'_>) {
    socket.close();
    let graceful = with_timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 64];
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        socket.flush().await
    })
    .await;
    if !matches!(graceful, Ok(Ok(()))) {
        socket.abort();
        let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
    }
}

// ---- clients ----

type ClientSession<'a> = Session<'a, NoopRawMutex, Postcard, NR, &'a mut Registry<NR>>;

/// Connects a client session of `conntype` to the server, runs `app` beside
/// it, and returns what `app` returned and how the session ended.
async fn client<R>(
    stack: Stack<'_>,
    conntype: &str,
    app: impl AsyncFnOnce(&ClientSession<'_>) -> R,
) -> (R, Closed) {
    client_with(&Config::new(), stack, conntype, app).await
}

/// [`client`] with its own config.
async fn client_with<R>(
    config: &Config<'_>,
    stack: Stack<'_>,
    conntype: &str,
    app: impl AsyncFnOnce(&ClientSession<'_>) -> R,
) -> (R, Closed) {
    let mut rx = [0u8; 2048];
    let mut tx = [0u8; 2048];
    let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
    socket.set_nagle_enabled(false);
    with_timeout(STEP, socket.connect((SERVER_IP, PORT)))
        .await
        .expect("connect: timeout")
        .expect("connect");
    let mut registry = registry();
    let mut res = Resources::<1024, 1024>::new();
    let session =
        ClientSession::client(config, &mut registry, Postcard, &mut res, conntype).unwrap();
    let (r, run) = {
        let (reader, writer) = socket.split();
        join(
            app(&session),
            with_timeout(LIFE, session.run_io(reader, writer)),
        )
        .await
    };
    let closed = run.expect("client run: timeout").expect("client transport");
    close_socket(&mut socket).await;
    (r, closed)
}

/// A plain TCP connection to the server (no peng3dnet client on it).
async fn raw_client<'s>(stack: Stack<'s>, rx: &'s mut [u8], tx: &'s mut [u8]) -> TcpSocket<'s> {
    let mut socket = TcpSocket::new(stack, rx, tx);
    with_timeout(STEP, socket.connect((SERVER_IP, PORT)))
        .await
        .expect("connect: timeout")
        .expect("connect");
    socket
}

/// Everything `socket` receives until the server closes it.
async fn read_to_end(socket: &mut TcpSocket<'_>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..10_000 {
        let n = with_timeout(STEP, socket.read(&mut buf))
            .await
            .expect("read: timeout")
            .unwrap_or(0);
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
    panic!("no end after 10,000 reads");
}

/// The next packet the client receives, within [`STEP`].
async fn next<'b>(session: &ClientSession<'_>, buf: &'b mut [u8]) -> Incoming<&'b [u8], Postcard> {
    with_timeout(STEP, session.receive(buf))
        .await
        .expect("receive: timeout")
        .expect("receive")
}

async fn connected(session: &ClientSession<'_>) {
    with_timeout(STEP, session.wait_connected())
        .await
        .expect("handshake: timeout")
        .expect("handshake");
}

async fn closed(session: &ClientSession<'_>) -> Closed {
    with_timeout(STEP, session.wait_closed())
        .await
        .expect("close: timeout")
}

// ---- the server's handler ----

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connect(usize),
    Handshake(usize),
    ServerSendRefused(SendError),
    Broadcast(usize, usize),
    Close(ClientId, CloseReason, Initiator),
}

#[derive(Default)]
struct Recorder {
    seen: RefCell<Vec<Seen>>,
    ids: RefCell<Vec<ClientId>>,
}

impl Recorder {
    fn push(&self, s: Seen) {
        self.seen.borrow_mut().push(s);
    }

    /// The server's `n`th close (from 1), once exactly `n` happened (within
    /// [`STEP`]).
    async fn close_number(&self, n: usize) -> (CloseReason, Initiator) {
        self.until("the server's close", |h| h.closes().len() == n)
            .await;
        self.closes()[n - 1].clone()
    }

    fn closes(&self) -> Vec<(CloseReason, Initiator)> {
        self.seen
            .borrow()
            .iter()
            .filter_map(|s| match s {
                Seen::Close(_, r, i) => Some((r.clone(), *i)),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen.borrow().iter().filter(|s| f(s)).count()
    }

    /// Waits until `f` holds.
    async fn until(&self, what: &str, f: impl Fn(&Recorder) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(start.elapsed() < STEP, "waiting for {what}: timeout");
            Timer::after_millis(5).await;
        }
    }
}

type M = NoopRawMutex;

impl Handler<M, Postcard, NR> for Recorder {
    fn on_connect(&self, ctx: &Ctx<'_, '_, M, Postcard, NR>) {
        self.push(Seen::Connect(ctx.client_id().slot()));
        self.ids.borrow_mut().push(ctx.client_id());
    }

    async fn on_handshake(&self, ctx: &Ctx<'_, '_, M, Postcard, NR>) {
        self.push(Seen::Handshake(ctx.client_id().slot()));
        ctx.send::<Notice>(&"welcome").await.unwrap();
    }

    async fn on_packet(&self, ctx: &Ctx<'_, '_, M, Postcard, NR>, p: Incoming<&[u8], Postcard>) {
        if let Ok(text) = p.decode::<Echo>() {
            if text == "broadcast" {
                let report = ctx
                    .broadcast::<Notice>(&"to the others", &[ctx.client_id()])
                    .await
                    .unwrap();
                self.push(Seen::Broadcast(report.sent, report.excepted));
                ctx.send::<Echo>(&"broadcast done").await.unwrap();
            } else {
                ctx.send::<Echo>(&text).await.unwrap();
            }
        } else if let Ok(point) = p.decode::<Move>() {
            // A rule refuses the server's send: only the server receives it.
            if let Err(e) = ctx.try_send::<Report>(&7) {
                self.push(Seen::ServerSendRefused(e));
            }
            let answer = Point {
                x: point.x + 1,
                y: point.y * 2,
            };
            ctx.send::<Move>(&answer).await.unwrap();
        } else if let Ok(n) = p.decode::<Report>() {
            ctx.send::<Echo>(&if n == 1 { "one" } else { "many" })
                .await
                .unwrap();
        }
    }

    fn on_close(&self, client: ClientId, closed: &Closed) {
        self.push(Seen::Close(client, closed.reason.clone(), closed.initiator));
    }
}

type TestServer<'d> = Server<'d, M, Postcard, NR, SLOTS>;

/// Runs a server on the first stack beside `body`, then shuts it down and
/// returns its counters.
async fn with_server(
    config: &Config<'_>,
    stack: Stack<'_>,
    handler: &Recorder,
    body: impl AsyncFnOnce(&TestServer<'_>),
) -> ServerStats {
    let mut resources = ServerResources::<SLOTS, 1024, 1024>::new();
    serve_with(config, stack, handler, &mut resources, body).await
}

/// [`with_server`] with these [`ServerOptions`].
async fn with_server_options(
    config: &Config<'_>,
    options: ServerOptions,
    stack: Stack<'_>,
    handler: &Recorder,
    body: impl AsyncFnOnce(&TestServer<'_>),
) -> ServerStats {
    let mut resources = ServerResources::<SLOTS, 1024, 1024>::new();
    serve_full(config, options, stack, handler, &mut resources, body).await
}

/// [`with_server`] with any handler and slot sizes.
async fn serve_with<
    H: Handler<M, Postcard, NR>,
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
    const BODY: usize,
>(
    config: &Config<'_>,
    stack: Stack<'_>,
    handler: &H,
    resources: &mut ServerResources<SLOTS, RX, TX, SRX, STX, BODY>,
    body: impl AsyncFnOnce(&TestServer<'_>),
) -> ServerStats {
    serve_full(
        config,
        ServerOptions::new(),
        stack,
        handler,
        resources,
        body,
    )
    .await
}

/// [`serve_with`] with these [`ServerOptions`].
async fn serve_full<
    H: Handler<M, Postcard, NR>,
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
    const BODY: usize,
>(
    config: &Config<'_>,
    options: ServerOptions,
    stack: Stack<'_>,
    handler: &H,
    resources: &mut ServerResources<SLOTS, RX, TX, SRX, STX, BODY>,
    body: impl AsyncFnOnce(&TestServer<'_>),
) -> ServerStats {
    let registry = registry();
    let server: TestServer<'_> = Server::new(config, &registry, Postcard).with_options(options);
    let test = async {
        body(&server).await;
        server.shutdown();
    };
    let (stats, ()) = with_timeout(
        LIFE,
        join(server.run(stack, PORT, resources, handler), test),
    )
    .await
    .expect("server: timeout");
    stats.expect("the transmit buffers hold the handshake")
}

// ---- tests ----

#[test]
fn embassy_handshake_echo_rules_close() {
    run_test("embassy_handshake_echo_rules_close", || async {
        let config = Config::new();
        let handler = Recorder::default();
        let stats = with_link(async |server_stack, client_stack| {
            with_server(&config, server_stack, &handler, async |server| {
                // 1. Handshake, echo, a typed struct, rules refusing sends,
                //    close by the client.
                let (_, end) = client(client_stack, "classic", async |s| {
                    connected(s).await;
                    let mut buf = [0u8; 256];
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Notice>().unwrap(), "welcome");
                    for i in 0..20 {
                        let text = format!("hello {i}");
                        s.send::<Echo>(&text.as_str()).await.unwrap();
                    }
                    for i in 0..20 {
                        let p = next(s, &mut buf).await;
                        assert_eq!(p.decode::<Echo>().unwrap(), format!("hello {i}"));
                    }
                    s.send::<Move>(&Point { x: 1, y: 2 }).await.unwrap();
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Move>().unwrap(), Point { x: 2, y: 4 });
                    // A client may not send what only clients receive; the
                    // connection goes on.
                    assert!(matches!(
                        s.send::<Notice>(&"no").await,
                        Err(SendError::Rules { .. })
                    ));
                    s.send::<Report>(&1).await.unwrap();
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Echo>().unwrap(), "one");
                    s.close(CloseReason::UserRequest);
                })
                .await;
                assert_eq!(end.reason, CloseReason::UserRequest);
                assert_eq!(end.initiator, Initiator::Local);
                assert_eq!(
                    handler.close_number(1).await,
                    (CloseReason::UserRequest, Initiator::Peer)
                );
                assert_eq!(
                    handler
                        .count(|s| matches!(s, Seen::ServerSendRefused(SendError::Rules { .. }))),
                    1
                );

                // 2. A rule whose invalid action is `close`: refused and the
                //    connection closed with smartpacketinvalid on both ends.
                let (refused, end) = client(client_stack, "classic", async |s| {
                    connected(s).await;
                    let refused = s.send::<Strict>(&1).await;
                    let end = closed(s).await;
                    (refused, end)
                })
                .await;
                assert!(
                    matches!(refused.0, Err(SendError::Rules { .. })),
                    "{refused:?}"
                );
                assert_eq!(refused.1.reason, CloseReason::SmartPacketInvalid);
                assert_eq!(end.reason, CloseReason::SmartPacketInvalid);
                assert_eq!(end.initiator, Initiator::Local);
                assert_eq!(
                    handler.close_number(2).await,
                    (CloseReason::SmartPacketInvalid, Initiator::Peer)
                );

                // 3. The server closes a client with a reason.
                let (_, end) = client(client_stack, "classic", async |s| {
                    connected(s).await;
                    // Take the welcome first: a `closeconn` queued behind an
                    // application packet nobody received is lost when the
                    // socket closes right after (reported as socketclose).
                    let mut buf = [0u8; 64];
                    assert_eq!(
                        next(s, &mut buf).await.decode::<Notice>().unwrap(),
                        "welcome"
                    );
                    let id = *handler.ids.borrow().last().unwrap();
                    assert!(server.close(id, CloseReason::Command).await);
                })
                .await;
                assert_eq!(end.reason, CloseReason::Command);
                assert_eq!(end.initiator, Initiator::Peer);
                assert_eq!(
                    handler.close_number(3).await,
                    (CloseReason::Command, Initiator::Local)
                );

                // 4. Shutdown closes the connected client with servershutdown.
                let (_, end) = client(client_stack, "classic", async |s| {
                    connected(s).await;
                    let mut buf = [0u8; 64];
                    assert_eq!(
                        next(s, &mut buf).await.decode::<Notice>().unwrap(),
                        "welcome"
                    );
                    server.shutdown();
                })
                .await;
                assert_eq!(end.reason, CloseReason::ServerShutdown);
                assert_eq!(end.initiator, Initiator::Peer);
            })
            .await
        })
        .await;
        assert_eq!(stats.accepted, 4);
        assert_eq!(stats.handshakes, 4);
        assert_eq!(stats.refused, 0);
        assert_eq!(
            handler.closes()[3],
            (CloseReason::ServerShutdown, Initiator::Local)
        );
        assert_eq!(handler.count(|s| matches!(s, Seen::Connect(_))), 4);
        assert_eq!(handler.count(|s| matches!(s, Seen::Handshake(_))), 4);
    });
}

#[test]
fn embassy_ping() {
    run_test("embassy_ping", || async {
        let config = Config::new();
        let handler = Recorder::default();
        let stats = with_link(async |server_stack, client_stack| {
            with_server(&config, server_stack, &handler, async |_| {
                let (pong, end) = client(client_stack, "ping", async |s| {
                    with_timeout(STEP, s.wait_pong())
                        .await
                        .expect("pong: timeout")
                })
                .await;
                let delay = pong.expect("pong");
                assert!(delay < CoreDuration::from_secs(5), "{delay:?}");
                assert_eq!(end.reason, CloseReason::PingComplete);
                assert_eq!(end.initiator, Initiator::Local);
                assert_eq!(
                    handler.close_number(1).await,
                    (CloseReason::PingComplete, Initiator::Peer)
                );
            })
            .await
        })
        .await;
        assert_eq!(stats.accepted, 1);
        // A ping is no handshake.
        assert_eq!(stats.handshakes, 0);
        assert_eq!(handler.count(|s| matches!(s, Seen::Handshake(_))), 0);
    });
}

#[test]
fn embassy_handshake_timeout() {
    run_test("embassy_handshake_timeout", || async {
        let config = Config {
            handshake_timeout: CoreDuration::from_millis(300),
            ..Config::new()
        };
        let handler = Recorder::default();
        with_link(async |server_stack, client_stack| {
            with_server(&config, server_stack, &handler, async |_| {
                // A client that never answers `hello`.
                let mut rx = [0u8; 512];
                let mut tx = [0u8; 512];
                let mut socket = raw_client(client_stack, &mut rx, &mut tx).await;
                let started = Instant::now();
                let got = read_to_end(&mut socket).await;
                let waited = started.elapsed();
                assert!(waited >= Duration::from_millis(250), "{waited:?}");
                assert!(got.windows(16).any(|w| w == b"handshaketimeout"), "{got:?}");
                close_socket(&mut socket).await;
                assert_eq!(
                    handler.close_number(1).await,
                    (CloseReason::HandshakeTimeout, Initiator::Local)
                );
            })
            .await
        })
        .await;
    });
}

#[test]
fn embassy_idle_timeout_and_keepalive() {
    run_test("embassy_idle_timeout_and_keepalive", || async {
        // The server drops what sends nothing for 400 ms.
        let config = Config {
            idle_timeout: CoreDuration::from_millis(400),
            keepalive_interval: CoreDuration::from_millis(100),
            ..Config::new()
        };
        let handler = Recorder::default();
        with_link(async |server_stack, client_stack| {
            with_server(&config, server_stack, &handler, async |_| {
                // A session without keepalives is closed by the server.
                let silent = Config {
                    keepalive_interval: CoreDuration::MAX,
                    ..Config::new()
                };
                let (_, end) = client_with(&silent, client_stack, "classic", async |s| {
                    connected(s).await;
                    let mut buf = [0u8; 256];
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Notice>().unwrap(), "welcome");
                })
                .await;
                assert_eq!(
                    (end.reason, end.initiator),
                    (CloseReason::IdleTimeout, Initiator::Peer)
                );
                assert_eq!(
                    handler.close_number(1).await,
                    (CloseReason::IdleTimeout, Initiator::Local)
                );
                // One that sends keepalives (every 100 ms) stays through
                // more than three idle timeouts, and echoes after them.
                let kept = Config {
                    keepalive_interval: CoreDuration::from_millis(100),
                    ..Config::new()
                };
                let (_, end) = client_with(&kept, client_stack, "classic", async |s| {
                    connected(s).await;
                    let mut buf = [0u8; 256];
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Notice>().unwrap(), "welcome");
                    Timer::after(Duration::from_millis(1_300)).await;
                    assert!(s.is_connected(), "still connected after the idle time");
                    s.send::<Echo>(&"after the idle time").await.unwrap();
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Echo>().unwrap(), "after the idle time");
                    s.close(CloseReason::UserRequest);
                })
                .await;
                assert_eq!(end.reason, CloseReason::UserRequest);
                assert_eq!(
                    handler.close_number(2).await,
                    (CloseReason::UserRequest, Initiator::Peer)
                );
            })
            .await
        })
        .await;
    });
}

#[test]
fn embassy_server_closes_a_client_before_its_handshake() {
    run_test(
        "embassy_server_closes_a_client_before_its_handshake",
        || async {
            let config = Config::new();
            let handler = Recorder::default();
            with_link(async |server_stack, client_stack| {
                with_server(&config, server_stack, &handler, async |server| {
                    // A client that never answers `hello`, closed by the server
                    // (through its mailbox) with a reason.
                    let mut rx = [0u8; 512];
                    let mut tx = [0u8; 512];
                    let mut socket = raw_client(client_stack, &mut rx, &mut tx).await;
                    handler
                        .until("the connect hook", |h| !h.ids.borrow().is_empty())
                        .await;
                    let id = handler.ids.borrow()[0];
                    assert!(server.close(id, CloseReason::Command).await);
                    let got = read_to_end(&mut socket).await;
                    assert!(got.windows(7).any(|w| w == b"command"), "{got:?}");
                    close_socket(&mut socket).await;
                    assert_eq!(
                        handler.close_number(1).await,
                        (CloseReason::Command, Initiator::Local)
                    );
                    // The client is gone: closing it again reaches nobody.
                    assert!(!server.close(id, CloseReason::Command).await);
                })
                .await
            })
            .await;
        },
    );
}

#[test]
fn embassy_slots_limit_and_broadcast() {
    run_test("embassy_slots_limit_and_broadcast", || async {
        let config = Config::new();
        let handler = Recorder::default();
        let stats = with_link(async |server_stack, client_stack| {
            with_server(&config, server_stack, &handler, async |server| {
                let first_ready = Signal::<M, ()>::new();
                let second_ready = Signal::<M, ()>::new();
                let release_first = Signal::<M, ()>::new();
                let release_second = Signal::<M, ()>::new();
                let outside_sent = Signal::<M, ()>::new();
                // Two clients fill both slots.
                let first = client(client_stack, "classic", async |s| {
                    connected(s).await;
                    let mut buf = [0u8; 256];
                    assert_eq!(
                        next(s, &mut buf).await.decode::<Notice>().unwrap(),
                        "welcome"
                    );
                    first_ready.signal(());
                    // The second client's broadcast reaches this one.
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Notice>().unwrap(), "to the others");
                    // And the server's own broadcast.
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Notice>().unwrap(), "from outside");
                    with_timeout(STEP * 2, release_first.wait()).await.unwrap();
                    s.close(CloseReason::UserRequest);
                });
                let second = client(client_stack, "classic", async |s| {
                    with_timeout(STEP, first_ready.wait()).await.unwrap();
                    connected(s).await;
                    let mut buf = [0u8; 256];
                    assert_eq!(
                        next(s, &mut buf).await.decode::<Notice>().unwrap(),
                        "welcome"
                    );
                    s.send::<Echo>(&"broadcast").await.unwrap();
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Echo>().unwrap(), "broadcast done");
                    second_ready.signal(());
                    with_timeout(STEP, outside_sent.wait()).await.unwrap();
                    let p = next(s, &mut buf).await;
                    assert_eq!(p.decode::<Notice>().unwrap(), "from outside");
                    with_timeout(STEP * 3, release_second.wait()).await.unwrap();
                    s.close(CloseReason::UserRequest);
                });
                let driver = async {
                    with_timeout(STEP * 2, second_ready.wait()).await.unwrap();
                    assert_eq!(handler.count(|s| *s == Seen::Broadcast(1, 1)), 1);
                    let status = server.status();
                    assert_eq!((status.clients, status.connected), (2, 2));
                    assert_eq!(status.listening, 0);
                    let report =
                        with_timeout(STEP, server.broadcast::<Notice>(&"from outside", &[]))
                            .await
                            .unwrap()
                            .unwrap();
                    assert_eq!((report.sent, report.excepted, report.failed), (2, 0, 0));
                    outside_sent.signal(());

                    // A third client is refused with serverfull.
                    let (r, end) = client(client_stack, "classic", async |s| {
                        with_timeout(STEP, s.wait_connected()).await.unwrap()
                    })
                    .await;
                    assert_eq!(end.reason, CloseReason::ServerFull);
                    assert_eq!(end.initiator, Initiator::Peer);
                    assert_eq!(r.unwrap_err().reason, CloseReason::ServerFull);

                    // The first leaves; its slot serves a new client.
                    release_first.signal(());
                    let start = Instant::now();
                    while server.status().listening == 0 {
                        assert!(start.elapsed() < STEP, "slot not freed");
                        Timer::after_millis(5).await;
                    }
                    let (_, end) = client(client_stack, "classic", async |s| {
                        connected(s).await;
                        let mut buf = [0u8; 256];
                        assert_eq!(
                            next(s, &mut buf).await.decode::<Notice>().unwrap(),
                            "welcome"
                        );
                        s.send::<Echo>(&"again").await.unwrap();
                        assert_eq!(next(s, &mut buf).await.decode::<Echo>().unwrap(), "again");
                        s.close(CloseReason::UserRequest);
                    })
                    .await;
                    assert_eq!(end.reason, CloseReason::UserRequest);
                    release_second.signal(());
                };
                let ((_, e1), (_, e2), ()) = join3(first, second, driver).await;
                assert_eq!(e1.reason, CloseReason::UserRequest);
                assert_eq!(e2.reason, CloseReason::UserRequest);
                handler
                    .until("every close", |h| h.closes().len() == 3)
                    .await;
            })
            .await
        })
        .await;
        assert_eq!(stats.accepted, 3);
        assert_eq!(stats.refused, 1);
        assert_eq!(stats.handshakes, 3);
        assert_eq!(stats.peak_clients, 2);
        assert!(handler
            .closes()
            .iter()
            .all(|c| *c == (CloseReason::UserRequest, Initiator::Peer)));
    });
}

/// The freed-slot cases' server: a 300 ms handshake timeout frees silent
/// clients' slots, and a 3 s linger keeps their sockets closing meanwhile.
fn freed_slot_setup() -> (Config<'static>, ServerOptions) {
    let config = Config {
        handshake_timeout: CoreDuration::from_millis(300),
        ..Config::new()
    };
    let options = ServerOptions {
        linger: Duration::from_secs(3),
        ..ServerOptions::new()
    };
    (config, options)
}

/// Issue 13, point 5: a slot whose client finished serves the next client at
/// once, although the socket it had still lingers on the close (3 s here: the
/// silent client never sends its FIN). Before, the slot's socket listened only
/// after the linger, and the next client was refused with `serverfull` while
/// the core had room. A client arriving while both slots really are busy is
/// still refused with `serverfull` (and the status says so: no client
/// would be served, although the spare socket listens).
#[test]
fn embassy_freed_slot_serves_the_next_client_at_once() {
    run_test(
        "embassy_freed_slot_serves_the_next_client_at_once",
        || async {
            let (config, options) = freed_slot_setup();
            let handler = Recorder::default();
            let stats = with_link(async |server_stack, client_stack| {
                with_server_options(&config, options, server_stack, &handler, async |server| {
                    let first_ready = Signal::<M, ()>::new();
                    let release_first = Signal::<M, ()>::new();
                    // One client holds a slot for the whole test.
                    let first = client(client_stack, "classic", async |s| {
                        connected(s).await;
                        first_ready.signal(());
                        with_timeout(LIFE, release_first.wait()).await.unwrap();
                        s.close(CloseReason::UserRequest);
                    });
                    let rest = async {
                        with_timeout(STEP, first_ready.wait()).await.unwrap();
                        // A silent client takes the other slot; the handshake
                        // timeout closes it, and it never closes its side.
                        let mut rx = [0u8; 512];
                        let mut tx = [0u8; 512];
                        let mut silent = raw_client(client_stack, &mut rx, &mut tx).await;
                        assert_eq!(
                            handler.close_number(1).await,
                            (CloseReason::HandshakeTimeout, Initiator::Local)
                        );
                        let freed = Instant::now();
                        // Right after: the next client is served.
                        let (r, end) = client(client_stack, "classic", async |s| {
                            let r = with_timeout(STEP, s.wait_connected()).await.unwrap();
                            if r.is_ok() {
                                let mut buf = [0u8; 256];
                                let p = next(s, &mut buf).await;
                                assert_eq!(p.decode::<Notice>().unwrap(), "welcome");
                                s.close(CloseReason::UserRequest);
                            }
                            (r, freed.elapsed())
                        })
                        .await;
                        let (r, took) = r;
                        assert!(r.is_ok(), "the next client was refused: {r:?}, {end:?}");
                        assert_eq!(end.reason, CloseReason::UserRequest);
                        // Within the linger: the old socket was still closing.
                        assert!(took < Duration::from_secs(3), "{took:?}");
                        close_socket(&mut silent).await;

                        // Both slots really busy (the first client and a new
                        // one), no socket closing: the next is refused.
                        let second_ready = Signal::<M, ()>::new();
                        let release_second = Signal::<M, ()>::new();
                        let second = client(client_stack, "classic", async |s| {
                            connected(s).await;
                            second_ready.signal(());
                            with_timeout(LIFE, release_second.wait()).await.unwrap();
                            s.close(CloseReason::UserRequest);
                        });
                        let refused = async {
                            with_timeout(STEP, second_ready.wait()).await.unwrap();
                            let start = Instant::now();
                            while server.status().closing > 0 {
                                assert!(start.elapsed() < STEP, "a socket stays closing");
                                Timer::after_millis(5).await;
                            }
                            let status = server.status();
                            assert_eq!((status.clients, status.listening), (2, 0));
                            let (r, end) = client(client_stack, "classic", async |s| {
                                with_timeout(STEP, s.wait_connected()).await.unwrap()
                            })
                            .await;
                            assert_eq!(r.unwrap_err().reason, CloseReason::ServerFull);
                            assert_eq!(end.reason, CloseReason::ServerFull);
                            release_second.signal(());
                        };
                        let ((_, end), ()) = join(second, refused).await;
                        assert_eq!(end.reason, CloseReason::UserRequest);
                        release_first.signal(());
                    };
                    let ((_, end), ()) = join(first, rest).await;
                    assert_eq!(end.reason, CloseReason::UserRequest);
                })
                .await
            })
            .await;
            assert_eq!(stats.accepted, 4);
            assert_eq!(stats.refused, 1);
            assert_eq!(stats.handshakes, 3);
            assert_eq!(stats.peak_clients, 2);
        },
    );
}

/// Both slots freed at once (two silent clients closed by the handshake
/// timeout, which never close their side, so both sockets linger for the 3-s
/// linger): two clients arriving one after the other are both served. The
/// spare socket takes the first; for the second, a lingering socket whose
/// peer acknowledged everything gives up its close and listens again (else
/// no socket would listen, and the connect would be reset).
#[test]
fn embassy_slots_freed_together_serve_the_next_clients() {
    run_test(
        "embassy_slots_freed_together_serve_the_next_clients",
        || async {
            let (config, options) = freed_slot_setup();
            let handler = Recorder::default();
            let stats = with_link(async |server_stack, client_stack| {
                with_server_options(&config, options, server_stack, &handler, async |server| {
                    let (mut rx0, mut tx0) = ([0u8; 512], [0u8; 512]);
                    let (mut rx1, mut tx1) = ([0u8; 512], [0u8; 512]);
                    let mut silent0 = raw_client(client_stack, &mut rx0, &mut tx0).await;
                    let mut silent1 = raw_client(client_stack, &mut rx1, &mut tx1).await;
                    handler
                        .until("both handshake timeouts", |h| h.closes().len() == 2)
                        .await;
                    assert!(handler
                        .closes()
                        .iter()
                        .all(|c| *c == (CloseReason::HandshakeTimeout, Initiator::Local)));
                    let freed = Instant::now();
                    let first_ready = Signal::<M, ()>::new();
                    let release = Signal::<M, ()>::new();
                    let first = client(client_stack, "classic", async |s| {
                        connected(s).await;
                        first_ready.signal(());
                        with_timeout(STEP, release.wait()).await.unwrap();
                        s.close(CloseReason::UserRequest);
                    });
                    let second = async {
                        with_timeout(STEP, first_ready.wait()).await.unwrap();
                        let (took, end) = client(client_stack, "classic", async |s| {
                            connected(s).await;
                            let took = freed.elapsed();
                            // Both are there (the server may not have taken
                            // this one's last handshake packet yet).
                            assert_eq!(server.status().clients, 2);
                            s.close(CloseReason::UserRequest);
                            took
                        })
                        .await;
                        release.signal(());
                        (took, end)
                    };
                    let ((_, end1), (took, end2)) = join(first, second).await;
                    assert_eq!(end1.reason, CloseReason::UserRequest);
                    assert_eq!(end2.reason, CloseReason::UserRequest);
                    // Both within the linger of the two old sockets.
                    assert!(took < Duration::from_secs(3), "{took:?}");
                    close_socket(&mut silent0).await;
                    close_socket(&mut silent1).await;
                })
                .await
            })
            .await;
            assert_eq!(stats.accepted, 4);
            assert_eq!(stats.refused, 0);
            assert_eq!(stats.handshakes, 2);
            assert_eq!(stats.peak_clients, 2);
        },
    );
}

// ---- answering in place ----

/// Answers `Echo` where it lies (retrying while the client's queue is full)
/// and defers every other packet, which a slot without a copy buffer drops.
#[derive(Default)]
struct InPlace {
    echoed: std::cell::Cell<u32>,
    retries: std::cell::Cell<u32>,
    deferred: std::cell::Cell<u32>,
}

impl Handler<M, Postcard, NR> for InPlace {
    fn on_packet_in_place(
        &self,
        _client: ClientId,
        outbox: &mut ServerOutbox<'_, '_, Postcard, NR>,
        packet: Incoming<&[u8], Postcard>,
    ) -> Flow {
        let Ok(text) = packet.decode::<Echo>() else {
            return Flow::Defer;
        };
        match outbox.send::<Echo>(&text) {
            Ok(()) => {
                self.echoed.set(self.echoed.get() + 1);
                Flow::Handled
            }
            Err(SendError::WouldBlock { .. }) => {
                self.retries.set(self.retries.get() + 1);
                Flow::Retry
            }
            Err(e) => panic!("echo refused: {e}"),
        }
    }

    async fn on_packet(
        &self,
        _ctx: &Ctx<'_, '_, M, Postcard, NR>,
        _packet: Incoming<&[u8], Postcard>,
    ) {
        self.deferred.set(self.deferred.get() + 1);
    }
}

#[test]
fn embassy_server_answers_in_place() {
    // 48 echoes of 150 bytes (7.4 KB) are more than the path back to the
    // client holds while it does not read (its 1,024 + 2,048 bytes of receive
    // buffers, the server's 1,024 socket and 512 connection transmit bytes):
    // the handler has to retry until the client reads, and every echo
    // arrives, in order.
    const ECHOES: usize = 48;
    run_test("embassy_server_answers_in_place", || async {
        let config = Config::new();
        let handler = InPlace::default();
        let stats = with_link(async |server_stack, client_stack| {
            // No copy buffer (BODY = 0), a small transmit buffer.
            let mut resources = ServerResources::<SLOTS, 1024, 512, 1024, 1024, 0>::new();
            serve_with(
                &config,
                server_stack,
                &handler,
                &mut resources,
                async |_| {
                    let (_, end) = client(client_stack, "classic", async |s| {
                        connected(s).await;
                        // Deferred, and dropped: the slot has no copy buffer.
                        s.send::<Move>(&Point { x: 1, y: 2 }).await.unwrap();
                        let texts: Vec<String> = (0..ECHOES)
                            .map(|i| format!("{i:03}{}", "x".repeat(147)))
                            .collect();
                        let send = async {
                            for text in &texts {
                                s.send::<Echo>(&text.as_str()).await.unwrap();
                            }
                        };
                        let receive = async {
                            // Reads only once the path back had time to fill up.
                            Timer::after_millis(300).await;
                            let mut buf = [0u8; 256];
                            for text in &texts {
                                let p = next(s, &mut buf).await;
                                assert_eq!(p.decode::<Echo>().unwrap(), text.as_str());
                            }
                        };
                        join(send, receive).await;
                        s.close(CloseReason::UserRequest);
                    })
                    .await;
                    assert_eq!(end.reason, CloseReason::UserRequest);
                },
            )
            .await
        })
        .await;
        assert_eq!(handler.echoed.get(), ECHOES as u32);
        assert!(
            handler.retries.get() > 0,
            "the transmit buffer never filled"
        );
        assert_eq!(handler.deferred.get(), 0);
        assert_eq!(stats.dropped, 1);
    });
}

/// Never finishes handling a packet.
#[derive(Default)]
struct Stuck {
    closes: RefCell<Vec<(CloseReason, Initiator)>>,
}

impl Handler<M, Postcard, NR> for Stuck {
    async fn on_packet(
        &self,
        _ctx: &Ctx<'_, '_, M, Postcard, NR>,
        _packet: Incoming<&[u8], Postcard>,
    ) {
        std::future::pending::<()>().await;
    }

    fn on_close(&self, _client: ClientId, closed: &Closed) {
        self.closes
            .borrow_mut()
            .push((closed.reason.clone(), closed.initiator));
    }
}

#[test]
fn embassy_connection_end_drops_a_running_handler() {
    run_test("embassy_connection_end_drops_a_running_handler", || async {
        let config = Config::new();
        let handler = Stuck::default();
        let stats = with_link(async |server_stack, client_stack| {
            let mut resources = ServerResources::<SLOTS, 1024, 1024>::new();
            serve_with(
                &config,
                server_stack,
                &handler,
                &mut resources,
                async |server| {
                    let (_, end) = client(client_stack, "classic", async |s| {
                        connected(s).await;
                        s.send::<Echo>(&"never answered").await.unwrap();
                        Timer::after_millis(100).await;
                        s.close(CloseReason::UserRequest);
                    })
                    .await;
                    assert_eq!(end.reason, CloseReason::UserRequest);
                    // The slot is free again although its handler never returned.
                    let start = Instant::now();
                    while server.status().clients > 0 {
                        assert!(start.elapsed() < STEP, "the slot was not freed");
                        Timer::after_millis(5).await;
                    }
                },
            )
            .await
        })
        .await;
        assert_eq!(stats.handshakes, 1);
        assert_eq!(
            *handler.closes.borrow(),
            [(CloseReason::UserRequest, Initiator::Peer)]
        );
    });
}

/// A slot transmit buffer too small for the `handshake` (the whole
/// registry) is found before anyone connects, with both sizes (issue 13,
/// point 7); `run` starts with this check.
#[test]
fn the_server_checks_its_transmit_buffers_against_the_handshake() {
    use peng3dnet_core::connection::{server_tx_required, NewConnectionError};
    let config = Config::new();
    let mut registry = Registry::<NR>::new();
    for i in 0..10 {
        let name: &'static str =
            Box::leak(format!("t:a-long-name-to-make-the-handshake-large.{i:02}").into_boxed_str());
        registry.register_raw(name, None, Rules::NONE).unwrap();
    }
    let required = server_tx_required(&config, &registry, &Postcard).unwrap();
    let server: TestServer<'_> = Server::new(&config, &registry, Postcard);
    assert_eq!(
        server.check_tx_capacity(required - 1),
        Err(NewConnectionError::HandshakeTooLarge {
            required,
            capacity: required - 1
        })
    );
    assert_eq!(server.check_tx_capacity(required), Ok(()));
}
