//! The std server and clients report lifecycle, ignored packets and closes
//! as `tracing` events in a span per connection, on the mio server and on
//! the tokio server. One test: it installs the process's global subscriber
//! (the servers log from their own threads).

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientOptions};
use peng3dnet_std::echo;
use peng3dnet_std::server::{Runtime, ServerOptions};
use peng3dnet_test_support::RawPeer;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Everything the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until a line holds every one of `parts`.
    fn wait_for(&self, parts: &[&str]) -> String {
        let end = Instant::now() + T;
        loop {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_owned();
            }
            assert!(Instant::now() < end, "no line with {parts:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn lifecycle_ignored_packets_and_closes_are_traced_per_connection() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    for runtime in [Runtime::Mio, Runtime::Tokio { workers: 2 }] {
        // What the last server wrote does not count for this one.
        captured.0.lock().unwrap().clear();
        traced_on(&captured, runtime);
    }
}

fn traced_on(captured: &Captured, runtime: Runtime) {
    let running = echo::server(echo::registry(), ServerOptions::default())
        .spawn_on("127.0.0.1:0", runtime)
        .unwrap();
    let addr = running.local_addr();

    // A raw peer sends a packet nobody registered: the server drops it.
    let mut peer = RawPeer::connect(addr, Postcard, T);
    let peer_port = peer.stream.local_addr().unwrap().port();
    peer.handshake();
    peer.send_as(200, &"nobody's");
    let line = captured.wait_for(&["packet ignored", "packet_id=200"]);
    // In the connection's span: its id and address.
    assert!(line.contains("peng3dnet_client{client=ClientId("), "{line}");
    assert!(
        line.contains(&format!("peer=127.0.0.1:{peer_port}")),
        "{line}"
    );
    assert!(
        line.contains("cause=no packet of this id is registered"),
        "{line}"
    );
    captured.wait_for(&["client accepted", &format!("127.0.0.1:{peer_port}")]);
    captured.wait_for(&["handshake complete", &format!("127.0.0.1:{peer_port}")]);

    // A client's own events: its handshake and the close it asked for, in a
    // span with the server's address; the server sees the same close.
    let mut client = Client::connect(addr, echo::registry(), ClientOptions::default()).unwrap();
    client.wait_connected(T).unwrap();
    client.close(CloseReason::UserRequest).unwrap();
    let server_side = format!("server={addr}");
    captured.wait_for(&["handshake complete", &server_side]);
    let line = captured.wait_for(&["connection closed", &server_side]);
    assert!(
        line.contains("reason=userrequest") && line.contains("Local"),
        "{line}"
    );
    let line = captured.wait_for(&["connection closed", "peer=127.0.0.1", "Peer"]);
    assert!(line.contains("reason=userrequest"), "{line}");
    drop(peer);
    drop(running);
}
