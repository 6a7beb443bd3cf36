//! A chat on tokio: a server that welcomes each client and broadcasts what
//! it says to the others, two clients, and a test of the server's handler.
//!
//! A client is connected once it accepted the server's handshake; the
//! server counts it as connected (and a broadcast reaches it) once that
//! accept arrived. So a client here waits for the server's welcome, sent
//! when the server's side of the handshake is done, before it counts on
//! hearing the others.
//!
//! `cargo run -p peng3dnet-std --example tokio_chat` runs it;
//! `cargo test -p peng3dnet-std --example tokio_chat` runs its test.

use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::CloseReason;
use peng3dnet_std::client::{ClientEvent, ClientOptions};
use peng3dnet_std::server::{Server, ServerHandle};
use peng3dnet_std::tokio_client::Client;
use peng3dnet_std::StdRegistry;
use std::net::SocketAddr;

/// A chat line: sent by a client, broadcast by the server to the others.
struct Say;
impl Packet for Say {
    const NAME: &'static str = "chat:say";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a str;
}

/// The packets both sides know, in the same order.
fn registry() -> StdRegistry {
    let mut registry = StdRegistry::new();
    registry.register::<Say>().expect("room for chat:say");
    registry
}

/// Starts the chat server on the current tokio runtime: its address and a
/// handle that shuts it down.
fn start_server() -> std::io::Result<(SocketAddr, ServerHandle)> {
    let server = Server::builder(registry())
        // A synchronous handler: it runs on the server's worker, at once.
        .on::<Say>(|ctx, text| {
            let me = ctx.client_id();
            let _ = ctx.broadcast::<Say>(&text, &[me]);
        })
        .on_handshake(|ctx| {
            let _ = ctx.send::<Say>(&"welcome");
        })
        .bind_tokio("127.0.0.1:0")?;
    let (addr, handle) = (server.local_addr(), server.handle());
    tokio::spawn(server.run());
    Ok((addr, handle))
}

/// The next chat line `client` hears.
async fn hear(client: &Client) -> Result<String, Box<dyn std::error::Error>> {
    loop {
        match client.recv().await? {
            ClientEvent::Packet(p) => return Ok(p.decode::<Say>()?.to_owned()),
            ClientEvent::Closed(closed) => return Err(format!("closed: {}", closed.reason).into()),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (addr, server) = start_server()?;
    let alice = Client::connect(addr, registry(), ClientOptions::default()).await?;
    let bob = Client::connect(addr, registry(), ClientOptions::default()).await?;
    for client in [&alice, &bob] {
        assert_eq!(hear(client).await?, "welcome");
    }
    alice.send::<Say>(&"hi bob").await?;
    println!("bob heard: {}", hear(&bob).await?);
    alice.close(CloseReason::UserRequest).await?;
    server.shutdown();
    let closed = bob.wait_closed().await;
    println!("bob's connection closed: {}", closed.reason);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn what_one_client_says_reaches_the_others_but_not_itself() {
        let (addr, server) = start_server().unwrap();
        let t = Duration::from_secs(10);
        let alice = Client::connect(addr, registry(), ClientOptions::default())
            .await
            .unwrap();
        let bob = Client::connect(addr, registry(), ClientOptions::default())
            .await
            .unwrap();
        for client in [&alice, &bob] {
            let welcome = tokio::time::timeout(t, hear(client)).await.unwrap();
            assert_eq!(welcome.unwrap(), "welcome");
        }
        alice.send::<Say>(&"hello").await.unwrap();
        let heard = tokio::time::timeout(t, hear(&bob)).await.unwrap().unwrap();
        assert_eq!(heard, "hello");
        // Alice hears nothing of her own line: what she gets before the
        // shutdown's close is no packet.
        server.shutdown();
        loop {
            match tokio::time::timeout(t, alice.recv()).await.unwrap() {
                Ok(ClientEvent::Packet(p)) => panic!("alice heard {:?}", p.decode::<Say>()),
                Ok(ClientEvent::Closed(closed)) => {
                    assert_eq!(closed.reason, CloseReason::ServerShutdown);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("closed without a Closed event: {e}"),
            }
        }
    }
}
