//! The `test-util` helpers: a server on 127.0.0.1:0 whose guard shuts it
//! down when dropped, and the in-memory stream pair.

use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientError, ClientOptions, UnexpectedEvent};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::ServerOptions;
use peng3dnet_std::stream::StreamOptions;
use peng3dnet_std::test_util::{spawn_server, stream_pair};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn the_spawned_server_echoes_and_dropping_it_shuts_it_down() {
    let server = spawn_server(echo::server(echo::registry(), ServerOptions::default())).unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    let mut client = Client::connect(addr, echo::registry(), ClientOptions::default()).unwrap();
    client.wait_connected(T).unwrap();
    client.send::<Echo>(&"ping").unwrap();
    assert_eq!(
        client.expect::<Echo>(T).unwrap().decode::<Echo>().unwrap(),
        "ping"
    );
    drop(server);
    // The drop returned after the server closed its clients and stopped.
    match client.expect::<Echo>(T) {
        Err(ClientError::Unexpected {
            got: UnexpectedEvent::Closed(c),
            ..
        }) => assert_eq!(c.reason, CloseReason::ServerShutdown),
        other => panic!("expected the server's shutdown, got {other:?}"),
    }
    let again = Client::connect(addr, echo::registry(), ClientOptions::default());
    assert!(
        matches!(again, Err(ClientError::Connect { .. })),
        "{:?}",
        again.err()
    );
}

#[cfg(unix)]
#[test]
fn the_stream_pair_connects_and_echoes() {
    let (mut client, mut server) = stream_pair(echo::registry(), StreamOptions::default()).unwrap();
    let server = std::thread::spawn(move || -> Result<CloseReason, ClientError> {
        let p = server.expect::<Echo>(T)?;
        server.send_encoded(p.packet_id, &p.body)?;
        match server.expect::<Echo>(T) {
            Err(ClientError::Unexpected {
                got: UnexpectedEvent::Closed(c),
                ..
            }) => Ok(c.reason),
            other => panic!("expected the client's close, got {other:?}"),
        }
    });
    client.wait_connected(T).unwrap();
    client.send::<Echo>(&"in memory").unwrap();
    assert_eq!(
        client.expect::<Echo>(T).unwrap().decode::<Echo>().unwrap(),
        "in memory"
    );
    client.close(CloseReason::UserRequest).unwrap();
    assert_eq!(server.join().unwrap().unwrap(), CloseReason::UserRequest);
}
