//! The baseline's job through peng3dnet: a client [`Session`] over the same
//! `TcpSocket` (`run_io`, 512-byte buffers, `Registry<8>`, the handshake
//! and registry sync with the server) answers each `fp:number` packet (a
//! `u32`) with the next number, in place (`receive_with`), until the
//! connection ends.
#![no_std]
#![no_main]

use embassy_executor::{Executor, Spawner};
use embassy_futures::join::join;
use embassy_net::tcp::TcpSocket;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use footprint::{SERVER, SOCKET_BUFFER};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{SendError, Take};
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::Config;
use peng3dnet_embassy::{Resources, Session};
use static_cell::{ConstStaticCell, StaticCell};

/// The one message type: a number, answered with the next one.
struct Number;
impl Packet for Number {
    const NAME: &'static str = "fp:number";
    type Message<'a> = u32;
}

#[cortex_m_rt::entry]
fn main() -> ! {
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR.init(Executor::new()).run(|spawner| {
        if let Ok(token) = app(spawner) {
            spawner.spawn(token);
        }
    })
}

#[embassy_executor::task]
async fn app(spawner: Spawner) {
    let Some(stack) = footprint::start(spawner) else {
        return;
    };
    stack.wait_config_up().await;
    static BUFS: ConstStaticCell<[[u8; SOCKET_BUFFER]; 2]> =
        ConstStaticCell::new([[0; SOCKET_BUFFER]; 2]);
    let [rx, tx] = BUFS.take();
    let mut socket = TcpSocket::new(stack, rx, tx);
    if socket.connect(SERVER).await.is_err() {
        return;
    }

    let config = Config::new();
    let mut registry = Registry::<8>::new();
    if registry.register::<Number>().is_err() {
        return;
    }
    static RES: ConstStaticCell<Resources<512, 512>> = ConstStaticCell::new(Resources::new());
    let Ok(session) = Session::<NoopRawMutex, Postcard, 8, _>::client(
        &config,
        &mut registry,
        Postcard,
        RES.take(),
        "classic",
    ) else {
        return;
    };
    let (reader, writer) = socket.split();
    let answer = async {
        loop {
            let sent = session.receive_with(|packet, outbox| {
                let Ok(n) = packet.decode::<Number>() else {
                    return (Take::Consume, true);
                };
                match outbox.send::<Number>(&n.wrapping_add(1)) {
                    Err(SendError::WouldBlock { .. }) => (Take::Keep, false),
                    _ => (Take::Consume, true),
                }
            });
            match sent.await {
                Ok(true) => {}
                Ok(false) => session.wait_sent().await,
                Err(_closed) => break,
            }
        }
    };
    let _ = join(session.run_io(reader, writer), answer).await;
    socket.close();
    let _ = socket.flush().await;
}
