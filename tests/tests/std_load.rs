//! Load over 127.0.0.1: 100 clients (one thread and one `Client` each) pipeline
//! 10,000 sequence-numbered messages each to an echo server, as fast as
//! `send` allows while receiving the answers; every answer must come back,
//! once, in order, and the server must see every client's messages in order.
//!
//! Debug builds are slow at this; the test prints its timing. Run it in
//! release with `cargo test --release -p peng3dnet-tests --test std_load`.

use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::server::{ClientId, Runtime, Server};
use peng3dnet_std::StdRegistry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CLIENTS: u32 = 100;
const MESSAGES: u32 = 10_000;
/// The whole test's limit; each single wait has `T`.
const LIMIT: Duration = Duration::from_secs(120);
const T: Duration = Duration::from_secs(30);

/// `(client number, sequence number)`.
struct Seq;
impl Packet for Seq {
    const NAME: &'static str = "load:seq";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = (u32, u32);
}

fn registry() -> StdRegistry {
    let mut r = StdRegistry::new();
    r.register::<Seq>().unwrap();
    r
}

/// Checks one event of client `me`, whose next answer is `next`.
fn check(me: u32, next: &mut u32, event: ClientEvent) -> Result<(), String> {
    match event {
        ClientEvent::Connected => Ok(()),
        ClientEvent::Packet(p) => {
            let got = p
                .decode::<Seq>()
                .map_err(|e| format!("client {me}: decode: {e:?}"))?;
            if got != (me, *next) {
                return Err(format!(
                    "client {me}: answer {got:?}, expected {:?}",
                    (me, *next)
                ));
            }
            *next += 1;
            Ok(())
        }
        other => Err(format!("client {me}: event {other:?}")),
    }
}

/// One client: pipelines its messages, checks every answer; returns its
/// time.
fn run_client(addr: std::net::SocketAddr, me: u32) -> Result<Duration, String> {
    let err = |what: &str, e: &dyn std::fmt::Debug| format!("client {me}: {what}: {e:?}");
    let start = Instant::now();
    let mut c = Client::connect(addr, registry(), ClientOptions::default())
        .map_err(|e| err("connect", &e))?;
    c.wait_connected(T).map_err(|e| err("handshake", &e))?;
    let mut next = 0u32;
    for seq in 0..MESSAGES {
        if start.elapsed() > LIMIT {
            return Err(err("sending", &seq));
        }
        c.send::<Seq>(&(me, seq)).map_err(|e| err("send", &e))?;
        // Take what arrived meanwhile (bounded: at most what was sent).
        for _ in 0..=MESSAGES {
            match c.try_recv().map_err(|e| err("try_recv", &e))? {
                Some(event) => check(me, &mut next, event)?,
                None => break,
            }
        }
    }
    for _ in 0..=2 * MESSAGES {
        if next == MESSAGES {
            break;
        }
        if start.elapsed() > LIMIT {
            return Err(err("receiving", &next));
        }
        let event = c.recv(T).map_err(|e| err("recv", &(e, "after", next)))?;
        check(me, &mut next, event)?;
    }
    if next != MESSAGES {
        return Err(err("answers", &next));
    }
    c.close(CloseReason::UserRequest)
        .map_err(|e| err("close", &e))?;
    Ok(start.elapsed())
}

#[test]
fn hundred_clients_pipeline_ten_thousand_numbered_messages_each() {
    pipeline(Runtime::Mio);
}

#[test]
fn hundred_clients_pipeline_ten_thousand_numbered_messages_each_on_tokio() {
    pipeline(Runtime::Tokio { workers: 2 });
}

/// 100 clients each pipeline 10,000 numbered messages to a server on
/// `runtime`, which answers each: nothing lost or reordered.
fn pipeline(runtime: Runtime) {
    // The server checks each client's order too: it answers every message
    // and counts those out of order.
    let out_of_order = Arc::new(AtomicU64::new(0));
    let received = Arc::new(Mutex::new(HashMap::<ClientId, u32>::new()));
    let (ooo, rec) = (out_of_order.clone(), received.clone());
    let server = Server::builder(registry())
        .on::<Seq>(move |ctx, (client, seq)| {
            let mut map = rec.lock().unwrap();
            let next = map.entry(ctx.client_id()).or_insert(0);
            if seq != *next || client >= CLIENTS {
                ooo.fetch_add(1, Ordering::Relaxed);
            }
            *next = seq + 1;
            drop(map);
            let _ = ctx.send::<Seq>(&(client, seq));
        })
        .spawn_on("127.0.0.1:0", runtime)
        .unwrap();
    let addr = server.local_addr();
    let running = server;

    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    for me in 0..CLIENTS {
        let tx = tx.clone();
        thread::Builder::new()
            .name(format!("load-{me}"))
            .spawn(move || {
                let res = std::panic::catch_unwind(|| run_client(addr, me))
                    .unwrap_or_else(|_| Err(format!("client {me} panicked")));
                let _ = tx.send((me, res));
            })
            .unwrap();
    }
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for done in 0..CLIENTS {
        let left = LIMIT.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((_, Ok(t))) => times.push(t),
            Ok((_, Err(e))) => failures.push(e),
            Err(_) => panic!(
                "only {done} of {CLIENTS} clients finished in {LIMIT:?}; failures: {failures:?}"
            ),
        }
    }
    let elapsed = start.elapsed();
    times.sort();
    eprintln!(
        "{CLIENTS} clients x {MESSAGES} messages: {elapsed:?} in all, per client {:?} .. {:?}",
        times.first(),
        times.last()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );

    running.handle().shutdown();
    let (jtx, jrx) = mpsc::channel();
    thread::spawn(move || {
        let _ = jtx.send(running.join());
    });
    let stats = jrx.recv_timeout(T).unwrap().unwrap();
    assert_eq!(stats.handshakes, CLIENTS as u64);
    assert_eq!(out_of_order.load(Ordering::Relaxed), 0);
    let received = received.lock().unwrap();
    assert_eq!(received.len(), CLIENTS as usize);
    assert!(received.values().all(|n| *n == MESSAGES));
}
