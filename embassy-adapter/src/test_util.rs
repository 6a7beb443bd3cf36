//! An in-memory network for host tests of your [`Handler`](crate::Handler)s
//! and [`Session`](crate::Session)s (feature `test-util`, off by default):
//! two `embassy-net` stacks, [`SERVER_IP`] and [`CLIENT_IP`], joined by an
//! Ethernet link of two `embassy-net-driver-channel` drivers whose frames
//! [`with_link`] copies across. Nothing leaves the process, nothing is
//! allocated (the stacks and the link live in [`with_link`]'s future), and
//! the code is the same `no_std` code as on a board: the N-slot
//! [`Server`](crate::Server) listens on the server stack, clients connect
//! `TcpSocket`s of the client stack to `(SERVER_IP, port)` and run
//! [`Session::run_io`](crate::Session::run_io) on them.
//!
//! On a host, run it on embassy's std executor (`embassy-executor` with
//! `platform-std` and `executor-thread`) with `embassy-time`'s `std`
//! feature for the clock; `embassy-adapter/tests/user_handler.rs` is a
//! complete example (a user's handler on the server, a client session
//! against it, and a server-side `Session` on an accepted socket).
//!
//! For one [`Session`](crate::Session) against another, two
//! `embassy_sync::pipe::Pipe`s are a link too (no stacks; see the crate
//! docs' example).

use embassy_futures::join::{join, join3};
use embassy_futures::select::{select, Either};
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_driver_channel as ch;

/// The link's MTU: an Ethernet frame.
pub const MTU: usize = 1514;
/// The server stack's address (10.42.0.1/24).
pub const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 42, 0, 1);
/// The client stack's address (10.42.0.2/24).
pub const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 42, 0, 2);
/// Sockets each stack has room for (a server of `N` slots takes `N + 1`).
pub const SOCKETS: usize = 8;

/// Copies every frame one driver sends into the other's receive queue.
async fn forward(mut from: ch::TxRunner<'_, MTU>, mut to: ch::RxRunner<'_, MTU>) {
    loop {
        let frame = from.tx_buf().await;
        let buf = to.rx_buf().await;
        let n = frame.len();
        buf[..n].copy_from_slice(frame);
        to.rx_done(n);
        from.tx_done();
    }
}

fn ip_config(ip: Ipv4Address) -> embassy_net::Config {
    embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    })
}

/// Runs `body` with a server stack ([`SERVER_IP`]) and a client stack
/// ([`CLIENT_IP`]) on one in-memory link, both up, and returns what it
/// returned. The stacks and the link run while `body` runs (all in this
/// future: no task is spawned) and end with it.
///
/// ```ignore
/// let stats = with_link(async |server_stack, client_stack| {
///     join(server.run(server_stack, PORT, &mut resources, &handler), clients(client_stack)).await
/// })
/// .await;
/// ```
pub async fn with_link<R>(body: impl AsyncFnOnce(Stack<'_>, Stack<'_>) -> R) -> R {
    let mut state_a = ch::State::<MTU, 4, 4>::new();
    let mut state_b = ch::State::<MTU, 4, 4>::new();
    let mac_a = ch::driver::HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, 1]);
    let mac_b = ch::driver::HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, 2]);
    let (runner_a, device_a) = ch::new(&mut state_a, mac_a);
    let (runner_b, device_b) = ch::new(&mut state_b, mac_b);
    let (link_a, rx_a, tx_a) = runner_a.split();
    let (link_b, rx_b, tx_b) = runner_b.split();
    link_a.set_link_state(ch::driver::LinkState::Up);
    link_b.set_link_state(ch::driver::LinkState::Up);
    let mut res_a = StackResources::<SOCKETS>::new();
    let mut res_b = StackResources::<SOCKETS>::new();
    let (stack_a, mut net_a) = embassy_net::new(device_a, ip_config(SERVER_IP), &mut res_a, 1);
    let (stack_b, mut net_b) = embassy_net::new(device_b, ip_config(CLIENT_IP), &mut res_b, 2);
    let network = join3(
        net_a.run(),
        net_b.run(),
        join(forward(tx_a, rx_b), forward(tx_b, rx_a)),
    );
    let body = async {
        // Static configurations: up as soon as the runners ran once.
        join(stack_a.wait_config_up(), stack_b.wait_config_up()).await;
        body(stack_a, stack_b).await
    };
    match select(network, body).await {
        // Both runners and both forwarders loop forever: only `body` ends.
        Either::First(_) => unreachable!("the network runs forever"),
        Either::Second(r) => r,
    }
}
