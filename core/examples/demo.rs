//! The main job until the command-line program exists: a server connection and
//! a client connection run against each other in memory, printing the
//! handshake transcript, a few packets, a refused send and a clean close.
//!
//! Run it with `cargo run -p peng3dnet-core --example demo`.

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{Config, Connection, Event};
use peng3dnet_core::registry::{Packet, Registry, RegistryAccess};
use peng3dnet_core::rules::Rules;
use peng3dnet_core::time::Instant;
use peng3dnet_core::wire::FrameDecoder;
use peng3dnet_core::{CloseReason, Closed, SecurityLevel, Side};

/// `echo:echo` of the reference's echo example: sent back unchanged.
struct Echo;
impl Packet for Echo {
    const NAME: &'static str = "echo:echo";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a str;
}

/// A packet that must only travel over verified TLS; the demo runs on plain
/// memory, so sending it is refused before anything reaches the "wire".
struct Secret;
impl Packet for Secret {
    const NAME: &'static str = "demo:secret";
    const RULES: Rules = Rules::SMART
        .side(Side::Server)
        .min_security(SecurityLevel::ServerAuth);
    type Message<'a> = &'a str;
}

/// Connections over 1 KiB arrays with a registry of 8; a server shares its
/// registry (`&Registry`), a client owns the use of its own (`&mut Registry`).
type Conn<'a, G> = Connection<'a, Postcard, [u8; 1024], [u8; 1024], 8, G>;

fn registry() -> Registry<8> {
    let mut reg = Registry::new();
    reg.register::<Echo>().expect("room for echo:echo");
    reg.register::<Secret>().expect("room for demo:secret");
    reg
}

/// Prints the frames in `bytes` by name.
fn show_frames(arrow: &str, bytes: &[u8], reg: &Registry<8>) {
    let mut storage = vec![0u8; bytes.len().max(16)];
    let mut dec = FrameDecoder::new(&mut storage[..]);
    dec.feed(bytes);
    while let Ok(Some(f)) = dec.next_frame() {
        let name = reg.by_id(f.packet_id).map_or("?", |e| e.name);
        println!(
            "  {arrow} {name} (id {}, {} byte body)",
            f.packet_id,
            f.body.len()
        );
    }
}

/// Moves one side's queued bytes to the other and handles its events.
fn transfer<G1: RegistryAccess<8>, G2: RegistryAccess<8>>(
    from: &mut Conn<'_, G1>,
    to: &mut Conn<'_, G2>,
    arrow: &str,
    now: Instant,
) {
    let bytes = from.poll_transmit().to_vec();
    from.transmitted(bytes.len());
    show_frames(arrow, &bytes, to.registry());
    let side = to.side();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = to.handle_input(rest);
        rest = &rest[n..];
        while let Some(event) = to.poll(now) {
            match event {
                Event::Connected => println!("  {side}: connected, state {}", to.state()),
                Event::Packet(p) => match p.decode::<Echo>() {
                    Ok(text) => {
                        println!("  {side}: echo:echo {text:?}");
                        if side == Side::Server {
                            let text = text.to_string();
                            to.send::<Echo>(&text.as_str()).expect("echo fits");
                        }
                    }
                    Err(e) => println!("  {side}: undecodable packet: {e}"),
                },
                Event::Closed(Closed { reason, initiator }) => {
                    println!("  {side}: closed ({reason}, by {initiator:?})")
                }
                other => println!("  {side}: {other:?}"),
            }
        }
        if n == 0 {
            break;
        }
    }
}

fn main() {
    let config = Config::new();
    let server_reg = registry();
    let mut client_reg = registry();
    let now = Instant::ZERO;
    let mut server: Conn<'_, &Registry<8>> =
        Connection::server(&config, &server_reg, Postcard, [0; 1024], [0; 1024], now)
            .expect("buffers are large enough");
    let mut client: Conn<'_, &mut Registry<8>> = Connection::client(
        &config,
        &mut client_reg,
        Postcard,
        [0; 1024],
        [0; 1024],
        "classic",
        now,
    )
    .expect("classic is built in");

    println!("handshake:");
    for _ in 0..3 {
        transfer(&mut server, &mut client, "server -> client:", now);
        transfer(&mut client, &mut server, "client -> server:", now);
    }

    println!("echoes:");
    for text in ["hello", "peng3dnet", "in Rust"] {
        client.send::<Echo>(&text).expect("connected");
    }
    transfer(&mut client, &mut server, "client -> server:", now);
    transfer(&mut server, &mut client, "server -> client:", now);

    println!("a rule refusing a packet:");
    match client.send::<Secret>(&"password") {
        Ok(()) => println!("  sent (unexpected)"),
        Err(e) => println!(
            "  client: send refused: {e}; queued bytes: {}",
            client.poll_transmit().len()
        ),
    }

    println!("close:");
    client.close(CloseReason::UserRequest);
    transfer(&mut client, &mut server, "client -> server:", now);
    while let Some(event) = client.poll(now) {
        if let Event::Closed(Closed { reason, initiator }) = event {
            println!("  client: closed ({reason}, by {initiator:?})");
        }
    }
    assert!(client.is_finished() && server.is_finished());
}
