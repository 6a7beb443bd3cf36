//! The two roles of the peng3dnet firmware, shared by every board (QEMU's
//! `mps2-an385`, the NUCLEO-F767ZI, the Raspberry Pi Pico W):
//!
//! * [`client`]: the echo client scenario against the host's
//!   `peng3dnet serve` (handshake, 1,000 checked echoes, a ping on a second
//!   connection, a packet refused by its rules, a close with a reason);
//! * [`server`]: `peng3dnet-embassy`'s N-slot server with the echo
//!   service, until a client sends `!shutdown` (or a time limit);
//! * [`stream`]: the client scenario over any `embedded-io-async` byte
//!   stream (a UART), with no network stack;
//! * [`echo`]: the packets of `peng3dnet serve`'s echo service.
//!
//! A board brings up its network (any `embassy-net` [`Stack`](embassy_net::Stack)
//! with a configured IPv4 address) and its output (a [`Log`]), then calls
//! [`client::run`] or [`server::run`] and reports the summary they return.
#![no_std]

pub mod client;
pub mod echo;
pub mod server;
pub mod stream;

use core::fmt;

/// Where a role writes its progress lines: semihosting on QEMU, defmt over
/// RTT on the boards. One call is one line, without its newline.
pub trait Log {
    /// Writes one line.
    fn line(&self, args: fmt::Arguments<'_>);
}

/// Writes one line to a [`Log`]: `say!(log, "format {}", args)`.
#[macro_export]
macro_rules! say {
    ($log:expr, $($arg:tt)*) => {
        $crate::Log::line($log, format_args!($($arg)*))
    };
}

/// Why a role failed, in words (the first failure ends the scenario).
pub type Fail = heapless::String<160>;

/// Formats a [`Fail`] (cut at its capacity).
macro_rules! fail {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut s = $crate::Fail::new();
        let _ = write!(s, $($arg)*);
        s
    }};
}
pub(crate) use fail;

/// The roles' [`Log`] on a board with defmt: each line is formatted into
/// a 192-byte buffer (a longer line is cut, ending in `...`) and logged at
/// level info.
#[cfg(feature = "defmt")]
pub struct Defmt;

#[cfg(feature = "defmt")]
impl Log for Defmt {
    fn line(&self, args: fmt::Arguments<'_>) {
        use core::fmt::Write as _;
        let mut s = heapless::String::<192>::new();
        if s.write_fmt(args).is_err() {
            while s.len() > 189 {
                s.pop();
            }
            let _ = s.push_str("...");
        }
        defmt::info!("{=str}", s.as_str());
    }
}

/// The client role on a board that logs with defmt: the scenario against
/// `server` (the build-time `PENG3DNET_SERVER`, see
/// [`client::server_from_build_env`]), its outcome logged as
/// `SUMMARY client: ...` or `FAIL: ...`; true when it passed.
#[cfg(feature = "defmt")]
pub async fn client_role(
    stack: embassy_net::Stack<'_>,
    server: Option<&str>,
    bufs: &mut client::ClientBufs,
) -> bool {
    // black_box: an image built without the variable still holds the whole
    // scenario (its footprint is the real one).
    let outcome = match client::server_from_build_env(core::hint::black_box(server)) {
        Ok(server) => client::run(stack, server, bufs, &Defmt).await,
        Err(e) => Err(fail!("{}", e)),
    };
    match &outcome {
        Ok(summary) => defmt::info!("SUMMARY client: {}", defmt::Display2Format(summary)),
        Err(e) => defmt::error!("FAIL: {=str}", e.as_str()),
    }
    outcome.is_ok()
}

/// The server role on a board that logs with defmt: serves until a client
/// sends [`server::SHUTDOWN`], then logs `SUMMARY server: ...` (or
/// `FAIL: ...`); true when it stopped without an error.
#[cfg(feature = "defmt")]
pub async fn server_role<
    const SLOTS: usize,
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
>(
    stack: embassy_net::Stack<'_>,
    resources: &mut server::EchoResources<SLOTS, RX, TX, SRX, STX>,
) -> bool {
    match server::run(stack, resources, None, &Defmt).await {
        Ok(summary) => {
            defmt::info!("SUMMARY server: {}", defmt::Display2Format(&summary));
            true
        }
        Err(e) => {
            defmt::error!("FAIL: {=str}", e.as_str());
            false
        }
    }
}

/// The `main` of a board's image, written once for every board with
/// defmt: `scenario::board_main!(client, my_board);` or
/// `scenario::board_main!(server, my_board);` in `src/bin/<role>.rs`.
///
/// The board crate (`my_board`) provides `init::<N>(spawner, resources) ->
/// Board`, which brings the network up on a stack of `N` sockets and returns
/// once its IPv4 configuration is up, a `stack` field on `Board`, and
/// `Board::show(&mut self, ok: bool)` (async) for the outcome. The image
/// crate depends on `embassy-executor` (with its `main` macro),
/// `embassy-net` and `static_cell`.
///
/// * `client`: a stack of 3 sockets (the echo connection, the ping, DHCP),
///   [`client_role`] against the build-time `PENG3DNET_SERVER`.
/// * `server`: 4 slots with the QEMU image's buffers (512 + 512 connection,
///   1,024 + 1,024 socket), a stack of 6 sockets (the slots, the spare lane,
///   DHCP), [`server_role`] until `!shutdown`.
#[cfg(feature = "defmt")]
#[macro_export]
macro_rules! board_main {
    (client, $board:ident) => {
        #[embassy_executor::main]
        async fn main(spawner: embassy_executor::Spawner) {
            static STACK: static_cell::StaticCell<embassy_net::StackResources<3>> =
                static_cell::StaticCell::new();
            let mut board =
                $board::init(spawner, STACK.init(embassy_net::StackResources::new())).await;
            static BUFS: static_cell::ConstStaticCell<$crate::client::ClientBufs> =
                static_cell::ConstStaticCell::new($crate::client::ClientBufs::new());
            let server = option_env!("PENG3DNET_SERVER");
            let ok = $crate::client_role(board.stack, server, BUFS.take()).await;
            board.show(ok).await;
        }
    };
    (server, $board:ident) => {
        #[embassy_executor::main]
        async fn main(spawner: embassy_executor::Spawner) {
            static STACK: static_cell::StaticCell<embassy_net::StackResources<6>> =
                static_cell::StaticCell::new();
            let mut board =
                $board::init(spawner, STACK.init(embassy_net::StackResources::new())).await;
            static RESOURCES: static_cell::ConstStaticCell<
                $crate::server::EchoResources<4, 512, 512, 1024, 1024>,
            > = static_cell::ConstStaticCell::new($crate::server::EchoResources::new());
            let ok = $crate::server_role(board.stack, RESOURCES.take()).await;
            board.show(ok).await;
        }
    };
}
