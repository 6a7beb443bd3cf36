//! The mio server's `on_ignored` hook and `RunningServer`'s address and
//! shutdown on drop, on 127.0.0.1, every wait bounded.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::IgnoreCause;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::ServerOptions;
use peng3dnet_test_support::RawPeer;
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn a_dropped_packet_reaches_on_ignored_and_the_connection_stays_open() {
    let (tx, rx) = mpsc::channel();
    let running = echo::server(echo::registry(), ServerOptions::default())
        .on_ignored(move |id, packet_id, cause| {
            let _ = tx.send((id, packet_id, cause));
        })
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    let mut peer = RawPeer::connect(running.local_addr(), Postcard, T);
    peer.handshake();
    // An id nobody registered: dropped, reported, the connection stays.
    peer.send_as(200, &"nobody's");
    let (_, packet_id, cause) = rx.recv_timeout(T).expect("on_ignored was called");
    assert_eq!(packet_id, 200);
    assert_eq!(cause, IgnoreCause::UnknownId);
    peer.send::<Echo>(&"still here");
    let id = peer.id("echo:echo");
    let body = peer.expect(id);
    assert_eq!(body, peer.enc(&"still here"));
    assert!(rx.try_recv().is_err(), "an echo is not an ignored packet");
}

#[test]
fn dropping_a_running_server_shuts_it_down() {
    let running = echo::server(echo::registry(), ServerOptions::default())
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    let addr = running.local_addr();
    assert_ne!(addr.port(), 0);
    let mut client = Client::connect(addr, echo::registry(), ClientOptions::default()).unwrap();
    client.wait_connected(T).unwrap();
    client.send::<Echo>(&"before").unwrap();
    loop {
        match client.recv(T).unwrap() {
            ClientEvent::Connected => {}
            ClientEvent::Packet(p) => {
                assert_eq!(p.decode::<Echo>().unwrap(), "before");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    drop(running);
    // The drop returned after the server's thread ended: the client was
    // told, and nothing listens any more.
    let closed = client.wait_closed(T).unwrap();
    assert_eq!(closed.reason, CloseReason::ServerShutdown);
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}
