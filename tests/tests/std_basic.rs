//! The std server and client over loopback TCP: handshake, echo, close.

use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::{CloseReason, Initiator};
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::server::Server;
use peng3dnet_std::StdRegistry;
use std::sync::mpsc;
use std::time::Duration;

struct Echo;
impl Packet for Echo {
    const NAME: &'static str = "echo:echo";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = (u32, &'a str);
}

fn registry() -> StdRegistry {
    let mut r = StdRegistry::new();
    r.register::<Echo>().unwrap();
    r
}

const T: Duration = Duration::from_secs(10);

#[test]
fn echo_and_close_over_loopback() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let server = Server::builder(registry())
        .on::<Echo>(|ctx, msg| {
            ctx.send::<Echo>(&msg).unwrap();
        })
        .on_close(move |_, closed| {
            let _ = closed_tx.send((closed.reason.clone(), closed.initiator));
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let running = server.spawn().unwrap();

    let mut client = Client::connect(addr, registry(), ClientOptions::default()).unwrap();
    client.wait_connected(T).unwrap();
    for i in 0..100 {
        client.send::<Echo>(&(i, "hello")).unwrap();
    }
    let mut next = 0;
    while next < 100 {
        match client.recv(T).unwrap() {
            ClientEvent::Connected => {}
            ClientEvent::Packet(p) => {
                assert_eq!(p.decode::<Echo>().unwrap(), (next, "hello"));
                next += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    client.close(CloseReason::UserRequest).unwrap();
    assert_eq!(
        closed_rx.recv_timeout(T).unwrap(),
        (CloseReason::UserRequest, Initiator::Peer)
    );
    running.handle().shutdown();
    let stats = running.join().unwrap();
    assert_eq!((stats.accepted, stats.handshakes), (1, 1));
}

struct Blob;
impl Packet for Blob {
    const NAME: &'static str = "test:blob";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a [u8];
}

#[test]
fn a_client_that_never_reads_is_dropped_with_writequeuefull() {
    let mut reg = registry();
    reg.register::<Blob>().unwrap();
    let (closed_tx, closed_rx) = mpsc::channel();
    let server = Server::builder(reg.clone())
        .with_options(|o| {
            o.max_write_queue = 64 << 20;
            o.write_stall_timeout = Duration::from_millis(300);
            o.compression = None;
        })
        .on_close(move |_, closed| {
            let _ = closed_tx.send((closed.reason.clone(), closed.initiator));
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let running = server.spawn().unwrap();
    let mut sleeper = Client::connect(addr, reg.clone(), ClientOptions::default()).unwrap();
    sleeper.wait_connected(T).unwrap();
    // 16 MiB towards a client that reads nothing: more than the kernel's
    // socket buffers, less than the queue's maximum, so only the stall
    // timer can end it.
    let blob = vec![7u8; 64 << 10];
    for _ in 0..256 {
        running
            .handle()
            .broadcast::<Blob>(&blob.as_slice(), &[])
            .unwrap();
    }
    assert_eq!(
        closed_rx.recv_timeout(T).unwrap(),
        (CloseReason::WriteQueueFull, Initiator::Local)
    );
    // Memory is given back: no client is left.
    let status = running.handle().status().unwrap();
    assert_eq!(status.clients, 0);
    drop(sleeper);
    running.handle().shutdown();
    running.join().unwrap();
}
