//! NUCLEO-F767ZI as server: gets a DHCP lease and serves the shared echo
//! server role ([`scenario::server`]) with 4 slots on port 4242 until a
//! client sends `!shutdown`; a fifth concurrent client is refused with
//! `serverfull`. The counters go to defmt (`SUMMARY server: ...`), the
//! outcome to the LEDs.
#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_net::StackResources;
use scenario::server::EchoResources;
use static_cell::{ConstStaticCell, StaticCell};

const SLOTS: usize = 4;
/// Per slot: the connection's receive and transmit buffers and the TCP
/// socket's (as on the emulated board).
const RX: usize = 512;
const TX: usize = 512;
const SOCK_RX: usize = 1024;
const SOCK_TX: usize = 1024;

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    // A socket per slot, the refuser's, DHCP.
    static STACK: StaticCell<StackResources<{ SLOTS + 2 }>> = StaticCell::new();
    let mut board = nucleo_f767zi::init(spawner, nucleo_f767zi::resources(&STACK)).await;
    static RESOURCES: ConstStaticCell<EchoResources<SLOTS, RX, TX, SOCK_RX, SOCK_TX>> =
        ConstStaticCell::new(EchoResources::new());
    let ok = scenario::server_role(board.stack, RESOURCES.take()).await;
    board.show(ok);
}
