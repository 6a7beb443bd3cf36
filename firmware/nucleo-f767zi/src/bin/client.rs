//! NUCLEO-F767ZI as client: gets a DHCP lease, connects to the host's
//! `peng3dnet serve` at `PENG3DNET_SERVER` (ADDR:PORT, given at build
//! time) and runs the shared client scenario ([`scenario::client`]); the
//! outcome goes to defmt (`SUMMARY client: ...` or `FAIL: ...`) and to the
//! LEDs (green: passed, red: failed).
#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_net::StackResources;
use scenario::client::ClientBufs;
use static_cell::{ConstStaticCell, StaticCell};

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    // The echo connection, the ping connection, DHCP.
    static STACK: StaticCell<StackResources<3>> = StaticCell::new();
    let mut board = nucleo_f767zi::init(spawner, nucleo_f767zi::resources(&STACK)).await;
    static BUFS: ConstStaticCell<ClientBufs> = ConstStaticCell::new(ClientBufs::new());
    let ok = scenario::client_role(board.stack, option_env!("PENG3DNET_SERVER"), BUFS.take()).await;
    board.show(ok);
}
