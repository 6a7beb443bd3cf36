//! `expect::<P>(timeout)` on the blocking and the tokio client against a
//! mio server on 127.0.0.1 that answers `echo:echo` by what it says: the
//! packet itself, another packet, a close, or nothing. Each case checks
//! what `expect` returned and the name its error gives what came instead.

use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{Client, ClientError, ClientOptions, UnexpectedEvent};
use peng3dnet_std::echo::{self, Echo};
use peng3dnet_std::server::{RunningServer, Server};
use peng3dnet_std::StdRegistry;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);
/// How long a case that expects nothing waits.
const QUIET: Duration = Duration::from_millis(300);

/// A packet the server sends instead of an echo.
struct Other;
impl Packet for Other {
    const NAME: &'static str = "test:other";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = u32;
}

fn registry() -> StdRegistry {
    let mut r = echo::registry();
    r.register::<Other>().unwrap();
    r
}

/// "other" is answered with an `Other`, "close" with a close
/// (`serverfull`, a reason no other path gives here), "quiet" with
/// nothing, anything else with its echo.
fn server() -> RunningServer {
    Server::builder(registry())
        .on::<Echo>(|ctx, text| match text {
            "other" => drop(ctx.send::<Other>(&7)),
            "close" => ctx.close(CloseReason::ServerFull),
            "quiet" => {}
            text => drop(ctx.send::<Echo>(&text)),
        })
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

/// What `expect` says came instead, or a panic naming what it returned.
fn instead<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (UnexpectedEvent, String) {
    match r {
        Err(e @ ClientError::Unexpected { expected, .. }) => {
            assert_eq!(expected, Echo::NAME);
            let text = e.to_string();
            let ClientError::Unexpected { got, .. } = e else {
                unreachable!()
            };
            (got, text)
        }
        other => panic!("expected ClientError::Unexpected, got {other:?}"),
    }
}

#[test]
fn blocking_expect_returns_the_packet_and_names_what_came_instead() {
    let running = server();
    let mut client =
        Client::connect(running.local_addr(), registry(), ClientOptions::default()).unwrap();
    // wait_connected leaves the `Connected` event queued: expect skips it.
    client.wait_connected(T).unwrap();
    client.send::<Echo>(&"hi").unwrap();
    let p = client.expect::<Echo>(T).unwrap();
    assert_eq!(p.decode::<Echo>().unwrap(), "hi");

    client.send::<Echo>(&"other").unwrap();
    let (got, text) = instead(client.expect::<Echo>(T));
    assert!(
        matches!(
            got,
            UnexpectedEvent::Packet {
                name: Some("test:other"),
                ..
            }
        ),
        "{got:?}"
    );
    assert!(text.contains("test:other"), "{text}");

    client.send::<Echo>(&"quiet").unwrap();
    let (got, text) = instead(client.expect::<Echo>(QUIET));
    assert_eq!(got, UnexpectedEvent::Nothing(QUIET));
    assert!(text.contains("nothing within 300ms"), "{text}");

    // Still usable after a timeout.
    client.send::<Echo>(&"again").unwrap();
    assert_eq!(
        client.expect::<Echo>(T).unwrap().decode::<Echo>().unwrap(),
        "again"
    );

    client.send::<Echo>(&"close").unwrap();
    let (got, text) = instead(client.expect::<Echo>(T));
    assert!(
        matches!(&got, UnexpectedEvent::Closed(c) if c.reason == CloseReason::ServerFull),
        "{got:?}"
    );
    assert!(text.contains("serverfull"), "{text}");
    // Once closed, it says so again.
    let (got, _) = instead(client.expect::<Echo>(T));
    assert!(matches!(got, UnexpectedEvent::Closed(_)), "{got:?}");
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_expect_returns_the_packet_and_names_what_came_instead() {
    use peng3dnet_std::tokio_client::Client;
    let running = server();
    let client = Client::connect(running.local_addr(), registry(), ClientOptions::default())
        .await
        .unwrap();
    client.wait_connected().await.unwrap();
    client.send::<Echo>(&"hi").await.unwrap();
    let p = client.expect::<Echo>(T).await.unwrap();
    assert_eq!(p.decode::<Echo>().unwrap(), "hi");

    client.send::<Echo>(&"other").await.unwrap();
    let (got, text) = instead(client.expect::<Echo>(T).await);
    assert!(
        matches!(
            got,
            UnexpectedEvent::Packet {
                name: Some("test:other"),
                ..
            }
        ),
        "{got:?}"
    );
    assert!(text.contains("test:other"), "{text}");

    client.send::<Echo>(&"quiet").await.unwrap();
    let (got, text) = instead(client.expect::<Echo>(QUIET).await);
    assert_eq!(got, UnexpectedEvent::Nothing(QUIET));
    assert!(text.contains("nothing within 300ms"), "{text}");

    client.send::<Echo>(&"again").await.unwrap();
    let p = client.expect::<Echo>(T).await.unwrap();
    assert_eq!(p.decode::<Echo>().unwrap(), "again");

    client.send::<Echo>(&"close").await.unwrap();
    let (got, text) = instead(client.expect::<Echo>(T).await);
    assert!(
        matches!(&got, UnexpectedEvent::Closed(c) if c.reason == CloseReason::ServerFull),
        "{got:?}"
    );
    assert!(text.contains("serverfull"), "{text}");
    let (got, _) = instead(client.expect::<Echo>(T).await);
    assert!(matches!(got, UnexpectedEvent::Closed(_)), "{got:?}");
}
