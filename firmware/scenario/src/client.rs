//! The client scenario: connects to `peng3dnet serve` at a given address,
//! completes the handshake, sends 1,000 `echo:echo` messages and checks
//! every answer, pings the server on a second connection, has one packet
//! refused by its rules and closes with `userrequest`.

use core::fmt::{self, Write as _};
use embassy_futures::join::join;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{with_timeout, Duration, Instant};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::SendError;
use peng3dnet_core::registry::Registry;
use peng3dnet_core::{CloseReason, Config, Initiator};
use peng3dnet_embassy::session::SessionConnection;
use peng3dnet_embassy::{Resources, Session};

use crate::echo::{self, Echo, EchoPingMsg, SecureEchoPing};
use crate::{fail, say, Fail, Log};

/// Echoes sent and checked.
pub const ECHOES: usize = 1000;
/// The core's receive and transmit buffers of the echo connection.
pub const RX: usize = 1024;
/// See [`RX`].
pub const TX: usize = 1024;
/// The TCP socket's buffers (each way) of the echo connection.
pub const SOCK: usize = 2048;
/// Bound of a connect, and the sockets' timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) type ClientSession<'a> =
    Session<'a, NoopRawMutex, Postcard, { echo::REGISTRY }, &'a mut Registry<{ echo::REGISTRY }>>;

/// The echo connection's buffers (about 8 KiB): give it a static home
/// (`static_cell::ConstStaticCell`) rather than a task's stack.
pub struct ClientBufs {
    sock_rx: [u8; SOCK],
    sock_tx: [u8; SOCK],
    session: Resources<RX, TX>,
    body: [u8; RX],
}

impl ClientBufs {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        ClientBufs {
            sock_rx: [0; SOCK],
            sock_tx: [0; SOCK],
            session: Resources::new(),
            body: [0; RX],
        }
    }
}

impl Default for ClientBufs {
    fn default() -> Self {
        Self::new()
    }
}

/// What a passed scenario did; its [`Display`](fmt::Display) is the text
/// of the `SUMMARY client:` line.
#[derive(Debug, Clone, Copy)]
pub struct ClientSummary {
    /// Echoes sent and checked.
    pub echoes: usize,
    /// From the first connect to the close.
    pub elapsed: Duration,
}

impl fmt::Display for ClientSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "handshake ok, {} echoes ok, ping ok, 1 packet refused by rules, close userrequest, {} ms in all",
            self.echoes,
            self.elapsed.as_millis()
        )
    }
}

/// Why the build-time server address is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadServer {
    /// The image was built without `PENG3DNET_SERVER`.
    Missing,
    /// It is not `ADDR:PORT` with an IPv4 address.
    Malformed,
}

impl fmt::Display for BadServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadServer::Missing => {
                "built without PENG3DNET_SERVER=ADDR:PORT (the host's peng3dnet serve)"
            }
            BadServer::Malformed => "PENG3DNET_SERVER is not ADDR:PORT with an IPv4 address",
        })
    }
}

/// The server's address as given at build time
/// (`option_env!("PENG3DNET_SERVER")`, `ADDR:PORT` with an IPv4 address):
/// an image built without it, or with a malformed one, says so when run.
pub fn server_from_build_env(value: Option<&str>) -> Result<IpEndpoint, BadServer> {
    let a = value
        .ok_or(BadServer::Missing)?
        .parse::<core::net::SocketAddrV4>()
        .map_err(|_| BadServer::Malformed)?;
    Ok(IpEndpoint::new(IpAddress::Ipv4(*a.ip()), a.port()))
}

async fn connect<'a>(
    stack: Stack<'a>,
    server: IpEndpoint,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
) -> Result<TcpSocket<'a>, Fail> {
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.set_timeout(Some(CONNECT_TIMEOUT));
    socket.set_nagle_enabled(false);
    match with_timeout(CONNECT_TIMEOUT, socket.connect(server)).await {
        Ok(Ok(())) => Ok(socket),
        Ok(Err(e)) => Err(fail!("connect to {}: {:?}", server, e)),
        Err(_) => Err(fail!("connect to {} timed out", server)),
    }
}

/// Runs the scenario against `server` on `stack` (whose IPv4 configuration
/// must be up: `stack.wait_config_up().await`), writing its progress to
/// `log`. The stack needs 2 free TCP sockets (the echo connection and the
/// ping). The caller bounds the whole run (`with_timeout`) if it wants to.
pub async fn run<L: Log>(
    stack: Stack<'_>,
    server: IpEndpoint,
    bufs: &mut ClientBufs,
    log: &L,
) -> Result<ClientSummary, Fail> {
    match stack.config_v4() {
        Some(c) => say!(log, "client: {} up, connecting to {}", c.address, server),
        None => say!(log, "client: connecting to {}", server),
    }
    let ClientBufs {
        sock_rx,
        sock_tx,
        session: session_res,
        body,
    } = bufs;

    let config = Config::new();
    let mut registry = echo::client_registry().map_err(|e| fail!("registry: {}", e))?;
    let t0 = Instant::now();
    let mut socket = connect(stack, server, sock_rx, sock_tx).await?;
    let session: ClientSession<'_> =
        Session::client(&config, &mut registry, Postcard, session_res, "classic")
            .map_err(|e| fail!("session: {:?}", e))?;

    let (reader, writer) = socket.split();
    let app = async {
        handshake(&session, log, t0).await?;
        echoes(&session, &mut body[..], log).await?;

        // A ping on a second connection while this one stays open.
        let rtt = ping(stack, server).await?;
        say!(
            log,
            "client: ping answered in {} us, closed with pingcomplete",
            rtt
        );

        refusal(&session, &mut body[..], log).await?;
        session.close(CloseReason::UserRequest);
        Ok::<(), Fail>(())
    };
    let (outcome, app_result) = join(session.run_io(reader, writer), app).await;
    app_result?;
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
    say!(log, "client: closed with {} (by us)", closed.reason);
    say!(
        log,
        "client: RAM per connection: {} + {} bytes of buffers, session {} bytes (the core connection {}), registry {} bytes",
        RX,
        TX,
        core::mem::size_of::<ClientSession<'static>>(),
        core::mem::size_of::<SessionConnection<'static, Postcard, { echo::REGISTRY }, &'static mut Registry<{ echo::REGISTRY }>>>(),
        core::mem::size_of::<Registry<{ echo::REGISTRY }>>()
    );
    Ok(ClientSummary {
        echoes: ECHOES,
        elapsed: t0.elapsed(),
    })
}

/// Waits for the handshake of the echo connection (started at `t0`) and
/// logs the ids the registry sync gave.
pub(crate) async fn handshake<L: Log>(
    session: &ClientSession<'_>,
    log: &L,
    t0: Instant,
) -> Result<(), Fail> {
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
    say!(
        log,
        "client: handshake complete in {} ms, registry synced (echo:echo = {:?}, echo:ping = {:?})",
        handshake.as_millis(),
        ids.0,
        ids.1
    );
    Ok(())
}

/// [`ECHOES`] echoes, pipelined: the sender waits only for room in the
/// transmit buffer; the receiver checks every answer in order.
pub(crate) async fn echoes<L: Log>(
    session: &ClientSession<'_>,
    body: &mut [u8],
    log: &L,
) -> Result<(), Fail> {
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
    say!(
        log,
        "client: {} echoes sent and checked in {} ms ({} us per round trip, pipelined)",
        ECHOES,
        echo_time.as_millis(),
        echo_time.as_micros() / ECHOES as u64
    );
    Ok(())
}

/// The rule: echo:ping may only be sent over a verified TLS connection;
/// this one is not. Checks the send is refused and that nothing reached
/// the wire (the next packet is the answer to a later echo).
pub(crate) async fn refusal<L: Log>(
    session: &ClientSession<'_>,
    body: &mut [u8],
    log: &L,
) -> Result<(), Fail> {
    let msg = EchoPingMsg {
        client_timestamp: Instant::now().as_micros() as f64 / 1e6,
        server_timestamp: None,
    };
    match session.send::<SecureEchoPing>(&msg).await {
        Err(SendError::Rules { violation: v, .. }) => say!(
            log,
            "client: echo:ping refused by its rules before the wire ({:?})",
            v
        ),
        other => return Err(fail!("echo:ping was not refused: {:?}", other)),
    }
    session
        .send::<Echo>(&"after the refusal")
        .await
        .map_err(|e| fail!("send: {:?}", e))?;
    let p = session
        .receive(body)
        .await
        .map_err(|e| fail!("receive: {:?}", e))?;
    if p.decode::<Echo>() != Ok("after the refusal") {
        return Err(fail!("unexpected packet {} after the refusal", p.packet_id));
    }
    Ok(())
}

/// A `ping` connection: returns the round trip in microseconds.
async fn ping(stack: Stack<'_>, server: IpEndpoint) -> Result<u64, Fail> {
    let mut rx = [0u8; 512];
    let mut tx = [0u8; 256];
    let mut socket = connect(stack, server, &mut rx, &mut tx).await?;
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
