//! The servers' `on_ignored` hook, `RunningServer`'s address and shutdown
//! on drop, and `ServerHandle`'s refusals, on 127.0.0.1, every wait bounded;
//! each test runs on the mio server and on the tokio server.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::IgnoreCause;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{Runtime, ServerOptions};
use peng3dnet_test_support::RawPeer;
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Every test runs on each.
const RUNTIMES: [Runtime; 2] = [Runtime::Mio, Runtime::Tokio { workers: 2 }];

#[test]
fn a_dropped_packet_reaches_on_ignored_and_the_connection_stays_open() {
    for runtime in RUNTIMES {
        a_dropped_packet_reaches_on_ignored_and_the_connection_stays_open_on(runtime);
    }
}

fn a_dropped_packet_reaches_on_ignored_and_the_connection_stays_open_on(runtime: Runtime) {
    let (tx, rx) = mpsc::channel();
    let running = echo::server(echo::registry(), ServerOptions::default())
        .on_ignored(move |id, packet_id, cause| {
            let _ = tx.send((id, packet_id, cause));
        })
        .spawn_on("127.0.0.1:0", runtime)
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
    for runtime in RUNTIMES {
        dropping_a_running_server_shuts_it_down_on(runtime);
    }
}

fn dropping_a_running_server_shuts_it_down_on(runtime: Runtime) {
    let running = echo::server(echo::registry(), ServerOptions::default())
        .spawn_on("127.0.0.1:0", runtime)
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

/// Only the server may send it, and only to a client in LOGGEDIN.
struct AfterLogin;
impl peng3dnet_core::registry::Packet for AfterLogin {
    const NAME: &'static str = "test:afterlogin";
    const RULES: peng3dnet_core::rules::Rules =
        peng3dnet_core::rules::Rules::SMART.state(peng3dnet_core::State::LoggedIn);
    type Message<'a> = &'a str;
}

/// Never registered with the server.
struct Unknown;
impl peng3dnet_core::registry::Packet for Unknown {
    const NAME: &'static str = "test:unknown";
    const RULES: peng3dnet_core::rules::Rules = peng3dnet_core::rules::Rules::SMART;
    type Message<'a> = &'a str;
}

#[test]
fn the_handle_reports_what_the_rules_refuse() {
    for runtime in RUNTIMES {
        the_handle_reports_what_the_rules_refuse_on(runtime);
    }
}

fn the_handle_reports_what_the_rules_refuse_on(runtime: Runtime) {
    use peng3dnet_core::connection::SendError;
    use peng3dnet_std::server::HandleError;
    let mut registry = echo::registry();
    registry.register::<AfterLogin>().unwrap();
    let (tx, connected) = mpsc::channel();
    let running = echo::server(registry.clone(), ServerOptions::default())
        .on_handshake(move |ctx| {
            let _ = tx.send(ctx.client_id());
        })
        .spawn_on("127.0.0.1:0", runtime)
        .unwrap();
    let handle = running.handle().clone();
    let mut client =
        Client::connect(running.local_addr(), registry, ClientOptions::default()).unwrap();
    client.wait_connected(T).unwrap();
    let id = connected.recv_timeout(T).unwrap();
    // Allowed: queued and delivered.
    handle.send::<Echo>(id, &"from the handle").unwrap();
    // The rules refuse it (the client is ACTIVE, not LOGGEDIN).
    match handle.send::<AfterLogin>(id, &"too early") {
        Err(HandleError::Send(e @ SendError::Rules { .. })) => {
            assert!(e.to_string().contains("LOGGEDIN"), "{e}");
            assert!(e.to_string().contains("test:afterlogin"), "{e}");
        }
        other => panic!("expected a rule refusal, got {other:?}"),
    }
    let report = handle.broadcast::<AfterLogin>(&"too early", &[]).unwrap();
    assert_eq!((report.sent, report.failed), (0, 1));
    assert!(matches!(report.first_error, Some(SendError::Rules { .. })));
    let report = handle.broadcast::<Echo>(&"to all", &[]).unwrap();
    assert_eq!((report.sent, report.failed), (1, 0));
    assert_eq!(
        handle.send::<Unknown>(id, &"?"),
        Err(HandleError::NotRegistered("test:unknown"))
    );
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match client.recv(T).unwrap() {
            ClientEvent::Packet(p) => texts.push(p.decode::<Echo>().unwrap().to_owned()),
            ClientEvent::Connected => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(texts, ["from the handle", "to all"]);
}

#[test]
fn a_waiting_handle_call_on_the_servers_own_thread_is_an_error() {
    for runtime in RUNTIMES {
        a_waiting_handle_call_on_the_servers_own_thread_is_an_error_on(runtime);
    }
}

fn a_waiting_handle_call_on_the_servers_own_thread_is_an_error_on(runtime: Runtime) {
    use peng3dnet_std::server::{HandleError, ServerHandle};
    use std::sync::{Arc, Mutex};
    // A hook that got hold of its own server's handle (through a slot
    // filled after bind) and calls it on the loop's thread.
    let slot: Arc<Mutex<Option<ServerHandle>>> = Arc::default();
    let (tx, got) = mpsc::channel();
    let in_hook = Arc::clone(&slot);
    let bound = echo::server(echo::registry(), ServerOptions::default()).on_connect(move |ctx| {
        let handle = in_hook.lock().unwrap().clone();
        if let Some(h) = handle {
            let _ = tx.send((h.send::<Echo>(ctx.client_id(), &"x"), h.status().err()));
        }
    });
    let running = match runtime {
        Runtime::Mio => {
            let bound = bound.bind("127.0.0.1:0").unwrap();
            *slot.lock().unwrap() = Some(bound.handle());
            bound.spawn().unwrap()
        }
        Runtime::Tokio { workers } => {
            let bound = bound.bind_tokio("127.0.0.1:0").unwrap();
            *slot.lock().unwrap() = Some(bound.handle());
            bound.spawn_with_workers(workers).unwrap()
        }
    };
    let _client = Client::connect(
        running.local_addr(),
        echo::registry(),
        ClientOptions::default(),
    )
    .unwrap();
    let (send, status) = got.recv_timeout(T).expect("the hook ran and did not hang");
    assert_eq!(send, Err(HandleError::OnServerThread));
    assert_eq!(status, Some(HandleError::OnServerThread));
    // From another thread the same handle answers.
    assert!(running.handle().status().is_ok());
}
