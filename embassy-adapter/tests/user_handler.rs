//! How to test your own code on the in-memory link of `test_util` (feature
//! `test-util`), on embassy's std executor: a user's [`Handler`] on the
//! N-slot [`Server`] with client [`Session`]s against it, and a server-side
//! [`Session`] on an accepted socket. Every wait is bounded by an
//! `embassy_time` timeout, each test by a wall-clock limit.

use embassy_executor::Executor;
use embassy_futures::join::join;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{with_timeout, Duration};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::Incoming;
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::rules::Rules;
use peng3dnet_core::{CloseReason, Closed, Config};
use peng3dnet_embassy::server::ClientId;
use peng3dnet_embassy::test_util::{with_link, SERVER_IP};
use peng3dnet_embassy::{Ctx, Handler, Resources, Server, ServerResources, Session};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

const PORT: u16 = 4242;
const NR: usize = 8;
const SLOTS: usize = 2;
/// Bound of every single wait.
const STEP: Duration = Duration::from_secs(5);
/// Bound of a whole test, in wall-clock time.
const WALL: std::time::Duration = std::time::Duration::from_secs(60);

type M = NoopRawMutex;

/// The packet under test: the server answers it in capitals.
struct Say;
impl Packet for Say {
    const NAME: &'static str = "test:say";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a str;
}

fn registry() -> Registry<NR> {
    let mut r = Registry::new();
    r.register::<Say>().unwrap();
    r
}

// ---- running a test on embassy's std executor ----

#[embassy_executor::task(pool_size = 2)]
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
            let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
            let done = Arc::new(AtomicBool::new(false));
            let flag = done.clone();
            executor.run_until(
                move |spawner| spawner.spawn(scenario(Box::pin(make()), flag).unwrap()),
                move || done.load(Ordering::SeqCst),
            );
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(WALL) {
        Ok(()) => thread.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{name}: the executor stopped without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: over {WALL:?}"),
    }
}

// ---- the user's handler ----

/// Answers every `Say` in capitals; records the closes it saw.
#[derive(Default)]
struct Shout {
    closes: RefCell<Vec<(ClientId, Closed)>>,
}

impl Handler<M, Postcard, NR> for Shout {
    async fn on_packet(&self, ctx: &Ctx<'_, '_, M, Postcard, NR>, p: Incoming<&[u8], Postcard>) {
        if let Ok(text) = p.decode::<Say>() {
            let loud = text.to_uppercase();
            let _ = ctx.send::<Say>(&loud.as_str()).await;
        }
    }

    fn on_close(&self, client: ClientId, closed: &Closed) {
        self.closes.borrow_mut().push((client, closed.clone()));
    }
}

/// A client session on `stack`: connects to the server, says `text`,
/// returns the answer, and closes with `userrequest`.
async fn say(stack: Stack<'_>, text: &str) -> String {
    let mut rx = [0u8; 2048];
    let mut tx = [0u8; 2048];
    let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
    with_timeout(STEP, socket.connect((SERVER_IP, PORT)))
        .await
        .expect("connect: timeout")
        .expect("connect");
    let config = Config::new();
    let mut registry = registry();
    let mut res = Resources::<1024, 1024>::new();
    let session: Session<M, _, NR, _> =
        Session::client(&config, &mut registry, Postcard, &mut res, "classic").unwrap();
    let app = async {
        with_timeout(STEP, session.wait_connected())
            .await
            .expect("handshake: timeout")
            .expect("handshake");
        session.send::<Say>(&text).await.unwrap();
        let mut buf = [0u8; 256];
        let p = with_timeout(STEP, session.receive(&mut buf))
            .await
            .expect("answer: timeout")
            .expect("answer");
        let answer = p.decode::<Say>().unwrap().to_owned();
        session.close(CloseReason::UserRequest);
        answer
    };
    let (answer, run) = {
        let (reader, writer) = socket.split();
        join(app, with_timeout(STEP, session.run_io(reader, writer))).await
    };
    let closed = run.expect("client run: timeout").expect("client transport");
    assert_eq!(closed.reason, CloseReason::UserRequest);
    close_socket(&mut socket).await;
    answer
}

/// Closes a socket: FIN, wait for the peer's, reset if it does not come
/// (a socket dropped at once resets, and the peer may still be reading).
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

#[test]
fn a_user_handler_on_the_server_answers_two_clients() {
    run_test(
        "a_user_handler_on_the_server_answers_two_clients",
        || async {
            let handler = Shout::default();
            let config = Config::new();
            let registry = registry();
            let stats = with_link(async |server_stack, client_stack| {
                let mut resources = ServerResources::<SLOTS, 1024, 1024>::new();
                let server: Server<'_, M, Postcard, NR, SLOTS> =
                    Server::new(&config, &registry, Postcard);
                let clients = async {
                    assert_eq!(say(client_stack, "hello").await, "HELLO");
                    assert_eq!(say(client_stack, "again").await, "AGAIN");
                    // The handler saw both closes before the server stops.
                    with_timeout(STEP, async {
                        while handler.closes.borrow().len() < 2 {
                            embassy_time::Timer::after_millis(5).await;
                        }
                    })
                    .await
                    .expect("both closes seen");
                    server.shutdown();
                };
                let (stats, ()) = with_timeout(
                    Duration::from_secs(20),
                    join(
                        server.run(server_stack, PORT, &mut resources, &handler),
                        clients,
                    ),
                )
                .await
                .expect("server: timeout");
                stats.expect("the transmit buffers hold the handshake")
            })
            .await;
            assert_eq!(stats.accepted, 2);
            assert_eq!(stats.handshakes, 2);
            let closes = handler.closes.borrow();
            assert!(
                closes
                    .iter()
                    .all(|(_, c)| c.reason == CloseReason::UserRequest),
                "{closes:?}"
            );
        },
    );
}

#[test]
fn a_server_side_session_on_an_accepted_socket() {
    run_test("a_server_side_session_on_an_accepted_socket", || async {
        let (answer, closed) = with_link(async |server_stack, client_stack| {
            let serve = async {
                let mut rx = [0u8; 2048];
                let mut tx = [0u8; 2048];
                let mut socket = TcpSocket::new(server_stack, &mut rx, &mut tx);
                with_timeout(STEP, socket.accept(PORT))
                    .await
                    .expect("accept: timeout")
                    .expect("accept");
                let config = Config::new();
                let registry = registry();
                let mut res = Resources::<1024, 1024>::new();
                let session: Session<M, _, NR, _> =
                    Session::server(&config, &registry, Postcard, &mut res).unwrap();
                let app = async {
                    let mut buf = [0u8; 256];
                    let p = with_timeout(STEP, session.receive(&mut buf))
                        .await
                        .expect("packet: timeout")
                        .expect("packet");
                    let loud = p.decode::<Say>().unwrap().to_uppercase();
                    session.send::<Say>(&loud.as_str()).await.unwrap();
                };
                let (reader, writer) = socket.split();
                let ((), run) = join(app, with_timeout(STEP, session.run_io(reader, writer))).await;
                let closed = run.expect("server run: timeout").expect("server transport");
                close_socket(&mut socket).await;
                closed
            };
            join(say(client_stack, "from a session"), serve).await
        })
        .await;
        assert_eq!(answer, "FROM A SESSION");
        assert_eq!(closed.reason, CloseReason::UserRequest);
    });
}
