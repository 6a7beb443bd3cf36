//! The baseline: embassy-executor and embassy-net with one `TcpSocket` that
//! connects, writes and reads, answering each 4-byte number (a `u32`) with
//! the next one until the connection ends. No library: what
//! `peng3dnet.rs` adds to this is what peng3dnet costs on a board.
#![no_std]
#![no_main]

use embassy_executor::{Executor, Spawner};
use embassy_net::tcp::TcpSocket;
use footprint::{SERVER, SOCKET_BUFFER};
use static_cell::{ConstStaticCell, StaticCell};

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
    let mut number = [0u8; 4];
    let mut have = 0;
    loop {
        match socket.read(&mut number[have..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
        if have == number.len() {
            have = 0;
            let next = u32::from_le_bytes(number).wrapping_add(1).to_le_bytes();
            if socket.write(&next).await.is_err() {
                break;
            }
        }
    }
    socket.close();
    let _ = socket.flush().await;
}
