//! The tokio server's own parts, on 127.0.0.1 with every wait bounded:
//! async handlers (in order per client, back-pressure in `AsyncCtx::send`,
//! cancel-safety of a dropped send, dropped when their client closes), a
//! `ServerHandle` from a synchronous handler, and the server run on the
//! caller's runtime. (The whole behaviour suite runs against it too:
//! `tests/tests/tokio_server.rs`.)

use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{ClientEvent, ClientOptions};
use peng3dnet_std::server::{HandleError, Server};
use peng3dnet_std::tokio_client::Client;
use peng3dnet_std::StdRegistry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// A number; the server answers it after a delay that shrinks as it grows.
struct Num;
impl Packet for Num {
    const NAME: &'static str = "test:num";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = u32;
}

/// Asks the server for `n` blobs of 64 KiB.
struct Ask;
impl Packet for Ask {
    const NAME: &'static str = "test:ask";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = u32;
}

struct Blob;
impl Packet for Blob {
    const NAME: &'static str = "test:blob";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a [u8];
}

/// `n` bytes that zlib cannot shrink (the server compresses large bodies).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn registry() -> StdRegistry {
    let mut r = StdRegistry::new();
    r.register::<Num>().unwrap();
    r.register::<Ask>().unwrap();
    r.register::<Blob>().unwrap();
    r
}

async fn next_packet(
    c: &Client,
) -> peng3dnet_core::connection::Incoming<Vec<u8>, peng3dnet_core::codec::Postcard> {
    loop {
        match timeout(T, c.recv())
            .await
            .expect("an event in time")
            .unwrap()
        {
            ClientEvent::Packet(p) => return p,
            ClientEvent::Connected => {}
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

/// Watches handlers for two of them running at once.
#[derive(Default)]
struct OneAtATime {
    running: AtomicUsize,
    overlapped: AtomicBool,
}

impl OneAtATime {
    fn enter(&self) {
        if self.running.fetch_add(1, Ordering::SeqCst) > 0 {
            self.overlapped.store(true, Ordering::SeqCst);
        }
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn assert_never_overlapped(&self) {
        assert!(
            !self.overlapped.load(Ordering::SeqCst),
            "two handlers of one client ran at once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_answer_one_packet_at_a_time_in_order() {
    let watch = Arc::new(OneAtATime::default());
    let w = Arc::clone(&watch);
    let server = Server::builder(registry())
        .bind_tokio("127.0.0.1:0")
        .unwrap()
        .on_async::<Num, _, _>(move |ctx, packet| {
            let w = Arc::clone(&w);
            async move {
                w.enter();
                let n = packet.decode::<Num>().unwrap();
                // Earlier packets wait longer: out of order if they ran
                // side by side.
                tokio::time::sleep(Duration::from_millis(u64::from(20 - n))).await;
                w.leave();
                ctx.send::<Num>(&n).await.unwrap();
            }
        });
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let client = Client::connect(addr, registry(), ClientOptions::default())
        .await
        .unwrap();
    client.wait_connected().await.unwrap();
    for n in 0..20 {
        client.send::<Num>(&n).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(next_packet(&client).await.decode::<Num>().unwrap());
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    watch.assert_never_overlapped();
    handle.shutdown();
    let stats = timeout(T, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.handshakes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_that_finish_at_once_answer_a_burst_in_order() {
    // Handlers that finish without waiting are run one after another in a
    // pass of the client's task: 5,000 pipelined packets, each answered
    // once, in order, and never two handlers of the client at once.
    const N: u32 = 5_000;
    let watch = Arc::new(OneAtATime::default());
    let w = Arc::clone(&watch);
    let server = Server::builder(registry())
        .bind_tokio("127.0.0.1:0")
        .unwrap()
        .on_async::<Num, _, _>(move |ctx, packet| {
            let w = Arc::clone(&w);
            async move {
                w.enter();
                let n = packet.decode::<Num>().unwrap();
                w.leave();
                ctx.send::<Num>(&(n * 2)).await.unwrap();
            }
        });
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let client = Client::connect(addr, registry(), ClientOptions::default())
        .await
        .unwrap();
    client.wait_connected().await.unwrap();
    let (sender, receiver) = client.split();
    let sending = tokio::spawn(async move {
        for n in 0..N {
            sender.send::<Num>(&n).await.unwrap();
        }
        sender
    });
    let mut n = 0;
    while n < N {
        match timeout(T, receiver.recv()).await.expect("an event in time") {
            Ok(ClientEvent::Packet(p)) => {
                assert_eq!(p.decode::<Num>().unwrap(), n * 2, "answer {n}");
                n += 1;
            }
            Ok(ClientEvent::Connected) => {}
            other => panic!("expected a packet, got {other:?}"),
        }
    }
    let _sender = timeout(T, sending).await.unwrap().unwrap();
    watch.assert_never_overlapped();
    handle.shutdown();
    let stats = timeout(T, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.handshakes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_send_waits_for_room_and_nothing_is_lost_or_closed() {
    // A queue of 256 KiB; the handler sends 64 blobs of 64 KiB (4 MiB) to a
    // client that reads nothing for half a second: a synchronous send would
    // have closed it with `writequeuefull`.
    let server = Server::builder(registry())
        .with_options(|o| {
            o.max_write_queue = 256 * 1024;
            o.max_frame = 128 * 1024;
        })
        .bind_tokio("127.0.0.1:0")
        .unwrap()
        .on_async::<Ask, _, _>(|ctx, packet| async move {
            let n = packet.decode::<Ask>().unwrap();
            let blob = noise(64 * 1024, 7);
            for _ in 0..n {
                ctx.send::<Blob>(&blob.as_slice()).await.unwrap();
            }
        });
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let options = ClientOptions {
        max_frame: 128 * 1024,
        ..ClientOptions::default()
    };
    let client = Client::connect(addr, registry(), options).await.unwrap();
    client.wait_connected().await.unwrap();
    client.send::<Ask>(&64).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = handle.status().unwrap();
    assert!(
        status.buffer_bytes <= 2 * 256 * 1024 + 128 * 1024,
        "the server buffered {} bytes for a client that did not read",
        status.buffer_bytes
    );
    for _ in 0..64 {
        let p = next_packet(&client).await;
        assert_eq!(p.decode::<Blob>().unwrap(), noise(64 * 1024, 7).as_slice());
    }
    assert!(client.is_connected());
    handle.shutdown();
    timeout(T, serving).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_async_send_queues_nothing() {
    // The handler sends until one send does not finish within 50 ms (the
    // client reads nothing until then: the queue has no room for it), drops
    // that send, and sends a marker with the count of those that finished.
    let outcome = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&outcome);
    let waited = Arc::new(tokio::sync::Notify::new());
    let w = Arc::clone(&waited);
    let server = Server::builder(registry())
        .with_options(|o| {
            o.max_write_queue = 256 * 1024;
            o.max_frame = 128 * 1024;
        })
        .bind_tokio("127.0.0.1:0")
        .unwrap()
        .on_async::<Ask, _, _>(move |ctx, _| {
            let out = Arc::clone(&out);
            let w = Arc::clone(&w);
            async move {
                let blob = noise(100 * 1024, 1);
                let blob = blob.as_slice();
                // Fill the queue and the sockets until a send waits.
                let mut sent = 0u32;
                loop {
                    let send = ctx.send::<Blob>(&blob);
                    match timeout(Duration::from_millis(50), send).await {
                        Ok(r) => {
                            r.unwrap();
                            sent += 1;
                        }
                        Err(_) => break,
                    }
                    assert!(sent < 10_000, "a send never waited");
                }
                out.lock().unwrap().push(sent);
                w.notify_one();
                ctx.send::<Num>(&sent).await.unwrap();
            }
        });
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let options = ClientOptions {
        max_frame: 128 * 1024,
        ..ClientOptions::default()
    };
    let client = Client::connect(addr, registry(), options).await.unwrap();
    client.wait_connected().await.unwrap();
    client.send::<Ask>(&0).await.unwrap();
    timeout(T, waited.notified())
        .await
        .expect("a send waited while the client read nothing");
    // Exactly the blobs whose sends returned, then the marker.
    let mut blobs = 0u32;
    let marker = loop {
        let p = next_packet(&client).await;
        match p.decode::<Blob>() {
            Ok(b) => {
                assert_eq!(b.len(), 100 * 1024);
                blobs += 1;
            }
            Err(_) => break p.decode::<Num>().unwrap(),
        }
    };
    assert_eq!(blobs, marker, "a dropped send queued its blob");
    assert_eq!(outcome.lock().unwrap().as_slice(), [marker]);
    handle.shutdown();
    timeout(T, serving).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_still_running_when_its_client_closes_is_dropped() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let (d, s) = (Arc::clone(&dropped), Arc::clone(&started));
    let server = Server::builder(registry())
        .bind_tokio("127.0.0.1:0")
        .unwrap()
        .on_async::<Num, _, _>(move |_, _| {
            let flag = Flag(Arc::clone(&d));
            let s = Arc::clone(&s);
            async move {
                let _flag = flag;
                s.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let client = Client::connect(addr, registry(), ClientOptions::default())
        .await
        .unwrap();
    client.wait_connected().await.unwrap();
    client.send::<Num>(&1).await.unwrap();
    timeout(T, started.notified()).await.unwrap();
    assert!(!dropped.load(Ordering::SeqCst));
    client.close(CloseReason::UserRequest).await.unwrap();
    for _ in 0..200 {
        if dropped.load(Ordering::SeqCst) && handle.status().unwrap().clients == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler outlived its client"
    );
    assert_eq!(handle.status().unwrap().clients, 0);
    handle.shutdown();
    timeout(T, serving).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_used_inside_a_synchronous_handler_is_an_error_not_a_deadlock() {
    let slot: Arc<Mutex<Option<peng3dnet_std::server::ServerHandle>>> = Arc::default();
    let seen = Arc::new(Mutex::new(None));
    let (in_handler, s) = (Arc::clone(&slot), Arc::clone(&seen));
    let server = Server::builder(registry())
        .on::<Num>(move |ctx, _| {
            let h = in_handler.lock().unwrap().clone().unwrap();
            *s.lock().unwrap() = Some(h.send::<Num>(ctx.client_id(), &1));
            let _ = ctx.send::<Num>(&2);
        })
        .bind_tokio("127.0.0.1:0")
        .unwrap();
    *slot.lock().unwrap() = Some(server.handle());
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let client = Client::connect(addr, registry(), ClientOptions::default())
        .await
        .unwrap();
    client.wait_connected().await.unwrap();
    client.send::<Num>(&0).await.unwrap();
    assert_eq!(next_packet(&client).await.decode::<Num>().unwrap(), 2);
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some(Err(HandleError::OnServerThread))
    );
    handle.shutdown();
    timeout(T, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(handle.status(), Err(HandleError::Stopped));
}

#[test]
fn the_server_runs_on_the_callers_current_thread_runtime_too() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::builder(registry())
            .with_options(|o| o.shutdown_grace = Duration::from_secs(1))
            .on::<Num>(|ctx, n| {
                let _ = ctx.send::<Num>(&(n + 1));
            })
            .bind_tokio("127.0.0.1:0")
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let serving = tokio::spawn(server.run());
        let client = Client::connect(addr, registry(), ClientOptions::default())
            .await
            .unwrap();
        client.wait_connected().await.unwrap();
        client.send::<Num>(&41).await.unwrap();
        assert_eq!(next_packet(&client).await.decode::<Num>().unwrap(), 42);
        handle.shutdown();
        let closed = timeout(T, client.wait_closed()).await.unwrap();
        assert_eq!(closed.reason, CloseReason::ServerShutdown);
        let stats = timeout(T, serving).await.unwrap().unwrap().unwrap();
        assert_eq!((stats.accepted, stats.handshakes), (1, 1));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_async_gets_the_tokio_servers_ping_data() {
    use peng3dnet_std::server::PingData;
    let server = Server::builder(registry())
        .with_options(|o| {
            o.ping = Some(PingData {
                release: "9.9".into(),
                entries: vec![("motd".into(), "hello".into())],
            })
        })
        .bind_tokio("127.0.0.1:0")
        .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = tokio::spawn(server.run());
    let reply = peng3dnet_std::ping::ping_async(addr, peng3dnet_core::codec::Postcard, T, None)
        .await
        .unwrap();
    assert_eq!(reply.release, "9.9");
    assert_eq!(reply.protoversion, 2);
    assert_eq!(reply.data.len(), 1);
    assert_eq!(reply.data[0].0, "motd");
    assert!(reply.delay < T);
    handle.shutdown();
    let stats = timeout(T, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.accepted, 1);
}

/// A server built without a listener serves clients through memory
/// (`StreamAcceptor::connect_memory`) and over a Unix socket pair
/// (`StreamAcceptor::serve`): the same handlers and counters as over TCP,
/// and its acceptor fails with `Stopped` once its run ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_listener_serves_memory_and_unix_streams() {
    let connects = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&connects);
    let server = Server::builder(registry())
        .on_connect(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .on::<Num>(|ctx, n| {
            let _ = ctx.send::<Num>(&(n * 2));
        })
        .build_tokio()
        .unwrap();
    assert_eq!(server.local_addr(), peng3dnet_std::tokio_server::UNBOUND);
    let (acceptor, handle) = (server.acceptor(), server.handle());
    let serving = tokio::spawn(server.run());

    let memory = acceptor
        .connect_memory(registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, memory.wait_connected()).await.unwrap().unwrap();
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    acceptor.serve(theirs, None).await.unwrap();
    let unix = Client::over(ours, registry(), ClientOptions::default()).unwrap();
    timeout(T, unix.wait_connected()).await.unwrap().unwrap();
    for (client, n) in [(&memory, 21), (&unix, 50)] {
        for i in 0..100 {
            client.send::<Num>(&(n + i)).await.unwrap();
        }
        for i in 0..100 {
            assert_eq!(
                next_packet(client).await.decode::<Num>().unwrap(),
                2 * (n + i)
            );
        }
    }
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    for client in [&memory, &unix] {
        let closed = timeout(T, client.close(CloseReason::UserRequest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(closed.reason, CloseReason::UserRequest);
    }
    handle.shutdown();
    let stats = timeout(T, serving).await.unwrap().unwrap().unwrap();
    assert_eq!((stats.accepted, stats.handshakes), (2, 2));
    let (_, late) = tokio::io::duplex(64);
    assert_eq!(acceptor.serve(late, None).await, Err(HandleError::Stopped));
}

/// Streams given to the acceptor go through the server's admission: with
/// `max_clients` 1, a second in-memory client is refused `serverfull` (and
/// a stream without an address is not counted against an address limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_admitted_like_tcp_clients() {
    let options = peng3dnet_std::server::ServerOptions {
        max_clients: 1,
        max_per_address: Some(1),
        ..Default::default()
    };
    let server = Server::builder(registry())
        .options(options)
        .build_tokio()
        .unwrap();
    let (acceptor, handle) = (server.acceptor(), server.handle());
    let serving = tokio::spawn(server.run());
    let first = acceptor
        .connect_memory(registry(), ClientOptions::default())
        .await
        .unwrap();
    timeout(T, first.wait_connected()).await.unwrap().unwrap();
    let second = acceptor
        .connect_memory(registry(), ClientOptions::default())
        .await
        .unwrap();
    match timeout(T, second.wait_connected()).await.unwrap() {
        Err(peng3dnet_std::client::ClientError::Closed(c)) => {
            assert_eq!(c.reason, CloseReason::ServerFull, "{c}")
        }
        other => panic!("{other:?}"),
    }
    drop(first);
    handle.shutdown();
    let stats = timeout(T, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.accepted, 1);
}
