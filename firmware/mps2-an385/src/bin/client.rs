//! Firmware as client: through QEMU's user network to `peng3dnet serve` on
//! the host (`guestfwd` maps 10.0.2.100:4242 to the host's 127.0.0.1:PORT,
//! one relay per connection). It completes the handshake, sends 1,000
//! `echo:echo` messages and checks every answer, pings the server on a
//! second connection, has one packet refused by its rules, closes with
//! `userrequest`, prints a summary and exits QEMU with status 0 (1 on any
//! failure).
#![no_std]
#![no_main]

use core::fmt::Write as _;
use embassy_executor::{Executor, Spawner};
use embassy_futures::join::join;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Ipv4Address, StackResources};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{with_timeout, Duration, Instant};
use mps2_an385::echo::{self, Echo, EchoPingMsg, SecureEchoPing};
use mps2_an385::{exit, net, println};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::registry::Registry;
use peng3dnet_core::{CloseReason, Config, Initiator};
use peng3dnet_embassy::{Resources, Session};
use static_cell::StaticCell;

/// The server as the board sees it (QEMU's `guestfwd`).
const SERVER: IpEndpoint = IpEndpoint::new(
    embassy_net::IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 100)),
    4242,
);
const ECHOES: usize = 1000;
/// Bound of the whole scenario (QEMU's `timeout` on the host is the outer one).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// One connection's buffers: the core's receive/transmit buffers.
const RX: usize = 1024;
const TX: usize = 1024;
/// The TCP socket's buffers.
const SOCK: usize = 2048;

type Fail = heapless::String<160>;
type ClientSession<'a> =
    Session<'a, NoopRawMutex, Postcard, { echo::REGISTRY }, &'a mut Registry<{ echo::REGISTRY }>>;

macro_rules! fail {
    ($($arg:tt)*) => {{
        let mut s = Fail::new();
        let _ = write!(s, $($arg)*);
        s
    }};
}

#[cortex_m_rt::entry]
fn main() -> ! {
    mps2_an385::time::init();
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR
        .init(Executor::new())
        .run(|spawner| spawner.spawn(app(spawner).expect("app task")))
}

#[embassy_executor::task]
async fn app(spawner: Spawner) {
    println!("client: booted, bringing up the LAN9118");
    let ok = match with_timeout(SCENARIO_TIMEOUT, run(spawner)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            println!("FAIL: {}", e.as_str());
            false
        }
        Err(_) => {
            println!(
                "FAIL: scenario timed out after {} s",
                SCENARIO_TIMEOUT.as_secs()
            );
            false
        }
    };
    exit(ok)
}

struct Bufs {
    sock_rx: [u8; SOCK],
    sock_tx: [u8; SOCK],
    session: Resources<RX, TX>,
    body: [u8; RX],
}

async fn connect<'a>(
    stack: embassy_net::Stack<'a>,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
) -> Result<TcpSocket<'a>, Fail> {
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.set_timeout(Some(Duration::from_secs(20)));
    socket.set_nagle_enabled(false);
    match with_timeout(Duration::from_secs(20), socket.connect(SERVER)).await {
        Ok(Ok(())) => Ok(socket),
        Ok(Err(e)) => Err(fail!("connect to {}: {:?}", SERVER, e)),
        Err(_) => Err(fail!("connect to {} timed out", SERVER)),
    }
}

async fn run(spawner: Spawner) -> Result<(), Fail> {
    let eth = net::init_eth().map_err(|e| fail!("LAN9118: {}", e))?;
    static STACK: StaticCell<StackResources<3>> = StaticCell::new();
    let stack = net::start(spawner, eth, net::resources(&STACK));
    stack.wait_config_up().await;
    println!("client: 10.0.2.15/24 up, connecting to {}", SERVER);

    static BUFS: StaticCell<Bufs> = StaticCell::new();
    let bufs = BUFS.init(Bufs {
        sock_rx: [0; SOCK],
        sock_tx: [0; SOCK],
        session: Resources::new(),
        body: [0; RX],
    });
    let Bufs {
        sock_rx,
        sock_tx,
        session: session_res,
        body,
    } = bufs;

    let config = Config::new();
    let mut registry = echo::client_registry().map_err(|e| fail!("registry: {}", e))?;
    let t0 = Instant::now();
    let mut socket = connect(stack, sock_rx, sock_tx).await?;
    let session: ClientSession<'_> =
        Session::client(&config, &mut registry, Postcard, session_res, "classic")
            .map_err(|e| fail!("session: {:?}", e))?;

    let (reader, writer) = socket.split();
    let app = async {
        session
            .wait_connected()
            .await
            .map_err(|c| fail!("handshake: closed ({}, {:?})", c.reason, c.initiator))?;
        let handshake = t0.elapsed();
        let ids = session.with_connection(|c| {
            (
                c.registry().id_of::<Echo>(),
                c.registry().id_of::<SecureEchoPing>(),
            )
        });
        println!(
            "client: handshake complete in {} ms, registry synced (echo:echo = {:?}, echo:ping = {:?})",
            handshake.as_millis(),
            ids.0,
            ids.1
        );

        // 1,000 echoes, pipelined: the sender waits only for room in the
        // transmit buffer; the receiver checks every answer in order.
        let e0 = Instant::now();
        let sender = async {
            let mut text = heapless::String::<32>::new();
            for i in 0..ECHOES {
                text.clear();
                let _ = write!(text, "echo #{i} from the board");
                session
                    .send::<Echo>(&text.as_str())
                    .await
                    .map_err(|e| fail!("send echo {}: {:?}", i, e))?;
            }
            Ok::<(), Fail>(())
        };
        let receiver = async {
            let mut expect = heapless::String::<32>::new();
            for i in 0..ECHOES {
                let p = session
                    .receive(&mut body[..])
                    .await
                    .map_err(|e| fail!("echo {}: {:?}", i, e))?;
                let got = p
                    .decode::<Echo>()
                    .map_err(|e| fail!("echo {}: {:?}", i, e))?;
                expect.clear();
                let _ = write!(expect, "echo #{i} from the board");
                if got != expect.as_str() {
                    return Err(fail!("echo {} came back as {:?}", i, got));
                }
            }
            Ok::<(), Fail>(())
        };
        let (s, r) = join(sender, receiver).await;
        s?;
        r?;
        let echo_time = e0.elapsed();
        println!(
            "client: {} echoes sent and checked in {} ms ({} us per round trip, pipelined)",
            ECHOES,
            echo_time.as_millis(),
            echo_time.as_micros() / ECHOES as u64
        );

        // A ping on a second connection while this one stays open.
        let rtt = ping(stack).await?;
        println!(
            "client: ping answered in {} us, closed with pingcomplete",
            rtt
        );

        // The rule: echo:ping may only be sent over a verified TLS
        // connection; this one is plain TCP.
        let msg = EchoPingMsg {
            client_timestamp: Instant::now().as_micros() as f64 / 1e6,
            server_timestamp: None,
        };
        match session.send::<SecureEchoPing>(&msg).await {
            Err(SendError::Rules(v)) => {
                println!(
                    "client: echo:ping refused by its rules before the wire ({:?})",
                    v
                )
            }
            other => return Err(fail!("echo:ping was not refused: {:?}", other)),
        }
        // Nothing reached the wire: the next packet is the answer to this
        // echo, not an echo:ping.
        session
            .send::<Echo>(&"after the refusal")
            .await
            .map_err(|e| fail!("send: {:?}", e))?;
        let p = session
            .receive(&mut body[..])
            .await
            .map_err(|e| fail!("receive: {:?}", e))?;
        if p.decode::<Echo>() != Ok("after the refusal") {
            return Err(fail!("unexpected packet {} after the refusal", p.packet_id));
        }

        session.close(CloseReason::UserRequest);
        Ok::<(), Fail>(())
    };
    let (outcome, app_result) = join(session.run_io(reader, writer), app).await;
    if let Err(e) = app_result {
        return Err(e);
    }
    let closed = outcome.map_err(|e| fail!("transport: {:?}", e))?;
    if closed.reason != CloseReason::UserRequest || closed.initiator != Initiator::Local {
        return Err(fail!(
            "closed with {} by {:?}, expected userrequest by us",
            closed.reason,
            closed.initiator
        ));
    }
    socket.close();
    let _ = with_timeout(Duration::from_secs(2), socket.flush()).await;
    println!("client: closed with {} (by us)", closed.reason);
    println!(
        "client: RAM per connection: {} + {} bytes of buffers, session {} bytes (the core connection {}), registry {} bytes",
        RX,
        TX,
        core::mem::size_of::<ClientSession<'static>>(),
        core::mem::size_of::<peng3dnet_embassy::session::SessionConnection<'static, Postcard, { echo::REGISTRY }, &'static mut Registry<{ echo::REGISTRY }>>>(),
        core::mem::size_of::<Registry<{ echo::REGISTRY }>>()
    );
    println!(
        "SUMMARY client: handshake ok, {} echoes ok, ping ok, 1 packet refused by rules, close userrequest, {} ms in all, {} spurious interrupts",
        ECHOES,
        t0.elapsed().as_millis(),
        net::SPURIOUS.load(core::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// A `ping` connection: returns the round trip in microseconds.
async fn ping(stack: embassy_net::Stack<'_>) -> Result<u64, Fail> {
    let mut rx = [0u8; 512];
    let mut tx = [0u8; 256];
    let mut socket = connect(stack, &mut rx, &mut tx).await?;
    let config = Config::new();
    let mut registry = Registry::<{ echo::REGISTRY }>::new();
    let mut res = Resources::<512, 256>::new();
    let session: Session<'_, NoopRawMutex, Postcard, { echo::REGISTRY }, _> =
        Session::client(&config, &mut registry, Postcard, &mut res, "ping")
            .map_err(|e| fail!("ping session: {:?}", e))?;
    let (reader, writer) = socket.split();
    let (outcome, pong) = join(session.run_io(reader, writer), session.wait_pong()).await;
    let rtt = pong.map_err(|c| fail!("ping: closed ({}, {:?})", c.reason, c.initiator))?;
    let closed = outcome.map_err(|e| fail!("ping transport: {:?}", e))?;
    if closed.reason != CloseReason::PingComplete {
        return Err(fail!("ping closed with {}", closed.reason));
    }
    socket.close();
    let _ = with_timeout(Duration::from_secs(2), socket.flush()).await;
    Ok(rtt.as_micros())
}
