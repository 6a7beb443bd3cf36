//! The `peng3dnet` program: an echo server, a ping and an echo client, and a
//! self-contained demo. Run `peng3dnet --help` for the commands.

use clap::{Args, Parser, Subcommand};
use peng3dnet_core::codec::Codec;
use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::{CloseReason, SecurityLevel, Side};
use peng3dnet_std::client::{Client, ClientError, ClientEvent, ClientOptions};
use peng3dnet_std::codec::{AnyCodec, Value};
use peng3dnet_std::echo::{self, Echo, EchoPing, EchoPingMsg, PingAnswer};
use peng3dnet_std::ping::{ping, ping_stream, ping_with_options, PingReply};
use peng3dnet_std::server::{Runtime, ServerOptions};
use peng3dnet_std::stream::{ReadTimeout, StreamConnection, StreamOptions};
use peng3dnet_std::tls::{TlsClientConfig, TlsServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

/// peng3dnet in Rust: serve, ping and echo over the peng3dnet protocol.
#[derive(Parser)]
#[command(name = "peng3dnet", version, about, long_about = None)]
struct Cli {
    /// Print the connections' lifecycle, refusals, ignored packets and
    /// closes on stderr (`RUST_LOG`, when set, chooses instead, as in
    /// `RUST_LOG=peng3dnet_std=debug`).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// Logs the library's `tracing` events to stderr: what `RUST_LOG` asks
/// for, else debug and up with `--verbose`, else warnings only.
fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ if verbose => EnvFilter::new("peng3dnet_std=debug"),
        _ => EnvFilter::new("warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

#[derive(Subcommand)]
enum Command {
    /// Run an echo server (`echo:echo` sent back unchanged, `echo:ping` with a
    /// server timestamp) that also answers pings.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Body codec: postcard (native) or msgpack (the Python reference's).
        /// Clients find the codec from the server's hello.
        #[arg(long, default_value = "postcard", value_parser = ["postcard", "msgpack"])]
        codec: String,
        /// Most clients at once; the next is refused with `serverfull`.
        #[arg(long, default_value_t = 10_000)]
        max_clients: usize,
        /// Which server runs the service: `mio` (one event loop thread) or
        /// `tokio` (tasks on a multi-thread runtime, --workers threads); the
        /// same service and options on either. The default comes from
        /// `PENG3DNET_RUNTIME` when it is set.
        #[arg(long, env = "PENG3DNET_RUNTIME", default_value = "mio", value_parser = ["mio", "tokio"])]
        runtime: String,
        /// Worker threads of the tokio runtime (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Serve over a serial link instead of TCP, one connection after
        /// another until the link ends: a device or pty path (`/dev/ttyUSB0`),
        /// or `tcp:HOST:PORT` to connect to an emulator's serial socket
        /// (QEMU's `-serial tcp:...,server=on`).
        #[arg(long, value_name = "PATH_OR_ADDR", conflicts_with_all = ["addr", "tls_cert"])]
        serial: Option<String>,
        #[command(flatten)]
        link: SerialOptions,
        #[command(flatten)]
        limits: ServeLimits,
        #[command(flatten)]
        tls: ServerTls,
    },
    /// Ping a server: print the round-trip delay and the server's ping data.
    Ping {
        /// The server's address, host:port (none with --serial).
        #[arg(required_unless_present = "serial")]
        addr: Option<String>,
        /// Ping over a serial link (see `serve --serial`).
        #[arg(long, value_name = "PATH_OR_ADDR", conflicts_with_all = ["addr", "tls", "tls_ca"])]
        serial: Option<String>,
        #[command(flatten)]
        link: SerialOptions,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: ClientTls,
    },
    /// Send each MESSAGE as `echo:echo`, print each answer; exit 0 when all
    /// came back.
    Echo {
        /// The server's address, host:port; with --serial there is none and
        /// every argument is a message.
        addr: String,
        /// Messages to send.
        messages: Vec<String>,
        /// Echo over a serial link (see `serve --serial`).
        #[arg(long, value_name = "PATH_OR_ADDR", conflicts_with_all = ["tls", "tls_ca"])]
        serial: Option<String>,
        #[command(flatten)]
        link: SerialOptions,
        /// Seconds to wait for the handshake and for each answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        #[command(flatten)]
        tls: ClientTls,
    },
    /// A server and a client on an ephemeral 127.0.0.1 port: the handshake,
    /// echoes, a ping, a rule refusing a packet, and a clean close.
    Demo,
}

/// Settings of a serial link (`--serial`).
#[derive(clap::Args)]
struct SerialOptions {
    /// Line rate of a serial device (not used with `tcp:`).
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Seconds to keep trying to open the link (an emulator may still be
    /// starting).
    #[arg(long, default_value_t = 10.0)]
    open_timeout: f64,
}

/// Timer and admission options of `serve` (see the README's close
/// reasons).
#[derive(Args)]
struct ServeLimits {
    /// Refuse a client from an IP address that already holds N clients
    /// (`toomanyconnections`).
    #[arg(long, value_name = "N")]
    max_per_ip: Option<usize>,
    /// Accept at most N new clients a second, on average, in bursts of up to
    /// N (more are refused with `serverbusy`): a bound on the handshakes,
    /// plain and TLS, started a second.
    #[arg(long, value_name = "N")]
    max_accepts_per_sec: Option<u32>,
    /// Close a client that sent nothing for SECS seconds (`idletimeout`),
    /// freeing its slot. Off unless given.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Close a client whose frame, once started, is not complete within SECS
    /// seconds (`frametimeout`).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    frame_timeout: f64,
    /// Send a keepalive to a client that was sent nothing for SECS seconds;
    /// 0 sends none.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    keepalive: f64,
    /// Drop a client whose write queue stays above its read-pause mark (or
    /// that takes no byte at all) for SECS seconds (`writequeuefull`).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    write_stall: f64,
}

impl ServeLimits {
    /// The timers of these limits for a connection over a serial link (the
    /// admission limits are the TCP server's).
    fn stream(&self) -> StreamOptions {
        StreamOptions {
            idle_timeout: self.idle_timeout.map(seconds),
            frame_timeout: seconds(self.frame_timeout),
            keepalive_interval: (self.keepalive > 0.0).then(|| seconds(self.keepalive)),
            ..StreamOptions::default()
        }
    }

    /// These limits in `options`.
    fn apply(&self, options: ServerOptions) -> ServerOptions {
        ServerOptions {
            idle_timeout: self.idle_timeout.map(seconds),
            frame_timeout: seconds(self.frame_timeout),
            keepalive_interval: (self.keepalive > 0.0).then(|| seconds(self.keepalive)),
            max_per_address: self.max_per_ip,
            max_accepts_per_second: self.max_accepts_per_sec,
            write_stall_timeout: seconds(self.write_stall),
            ..options
        }
    }
}

/// TLS options of `serve`.
#[derive(clap::Args)]
struct ServerTls {
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): BOTHAUTH.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

impl ServerTls {
    fn config(&self) -> Result<Option<TlsServerConfig>, Box<dyn std::error::Error>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsServerConfig::from_pem_files(
                cert,
                key,
                self.tls_client_ca.as_deref(),
            )?)),
            _ => Ok(None),
        }
    }
}

/// TLS options of the client commands.
#[derive(clap::Args)]
struct ClientTls {
    /// Speak TLS without verifying the server (ENCRYPTED).
    #[arg(long)]
    tls: bool,
    /// Speak TLS and verify the server against this CA (PEM) and host name
    /// (SERVERAUTH).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The host name to verify (default: the host of ADDR).
    #[arg(long, requires = "tls_ca")]
    tls_name: Option<String>,
    /// Present this client certificate chain (PEM); needs --tls-ca and
    /// --tls-client-key (BOTHAUTH when the server verifies it).
    #[arg(long, requires_all = ["tls_ca", "tls_client_key"])]
    tls_client_cert: Option<PathBuf>,
    /// The private key of --tls-client-cert (PEM).
    #[arg(long, requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
}

impl ClientTls {
    fn config(&self, addr: &str) -> Result<Option<TlsClientConfig>, Box<dyn std::error::Error>> {
        if let Some(ca) = &self.tls_ca {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let name = self.tls_name.as_deref().unwrap_or(host);
            let mut config = TlsClientConfig::verify_file(ca, name)?;
            if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
                config = config.with_client_cert_files(cert, key)?;
            }
            return Ok(Some(config));
        }
        if self.tls {
            return Ok(Some(TlsClientConfig::no_verification()?));
        }
        Ok(None)
    }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.001, 86_400.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Serve {
            serial: Some(target),
            codec,
            link,
            limits,
            ..
        } => serve_serial(&target, &codec, &link, &limits),
        Command::Serve {
            addr,
            codec,
            max_clients,
            runtime,
            workers,
            limits,
            tls,
            ..
        } => {
            let runtime = match runtime.parse::<Runtime>() {
                Ok(Runtime::Tokio { .. }) => Ok(Runtime::Tokio { workers }),
                other => other.map_err(Into::into),
            };
            runtime
                .and_then(|runtime| Ok((runtime, tls.config()?)))
                .and_then(|(runtime, tls)| serve(addr, &codec, max_clients, runtime, &limits, tls))
        }
        Command::Ping {
            serial: Some(target),
            timeout,
            json,
            link,
            ..
        } => ping_serial(&target, seconds(timeout), json, &link),
        Command::Ping {
            addr,
            timeout,
            json,
            tls,
            ..
        } => {
            let addr = addr.unwrap_or_default();
            tls.config(&addr)
                .and_then(|tls| run_ping(&addr, seconds(timeout), json, tls))
        }
        Command::Echo {
            serial: Some(target),
            addr,
            messages,
            timeout,
            link,
            ..
        } => {
            // No address with --serial: the first argument is a message.
            let messages: Vec<String> = std::iter::once(addr).chain(messages).collect();
            echo_serial(&target, &messages, seconds(timeout), &link)
        }
        Command::Echo {
            addr,
            messages,
            timeout,
            tls,
            ..
        } => {
            if messages.is_empty() {
                Err("no MESSAGE given".into())
            } else {
                tls.config(&addr)
                    .and_then(|tls| run_echo(&addr, &messages, seconds(timeout), tls))
            }
        }
        Command::Demo => demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peng3dnet: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn serve(
    addr: SocketAddr,
    codec: &str,
    max_clients: usize,
    runtime: Runtime,
    limits: &ServeLimits,
    tls: Option<TlsServerConfig>,
) -> Res {
    let codec = AnyCodec::from_name(codec).ok_or("unknown codec")?;
    let transport = match &tls {
        Some(t) if t.requires_client_cert() => "TLS, client certificates required",
        Some(_) => "TLS",
        None => "plain TCP",
    };
    let options = limits.apply(ServerOptions {
        max_clients,
        tls,
        ..ServerOptions::default()
    });
    let builder = echo::server_with_codec(codec, echo::registry(), options);
    let listening = |addr: SocketAddr, on: &str| {
        println!(
            "peng3dnet: listening on {addr} (codec {}, {transport}, at most {max_clients} clients, {on})",
            codec.name()
        )
    };
    match runtime {
        Runtime::Mio => {
            let server = builder.bind(addr)?;
            listening(server.local_addr(), "mio");
            server.run()?;
        }
        Runtime::Tokio { workers } => {
            let server = builder.bind_tokio(addr)?;
            listening(server.local_addr(), "tokio");
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if workers > 0 {
                rt.worker_threads(workers);
            }
            rt.enable_all().build()?.block_on(server.run())?;
        }
    }
    Ok(())
}

fn run_ping(addr: &str, timeout: Duration, json: bool, tls: Option<TlsClientConfig>) -> Res {
    let reply = ping_with_options(addr, AnyCodec::default(), timeout, tls)?;
    print_reply(addr, &reply, json);
    Ok(())
}

/// Prints a ping answer as `ping` does.
fn print_reply(addr: &str, reply: &PingReply, json: bool) {
    if json {
        println!("{}", reply_json(reply));
    } else {
        println!(
            "{addr}: {:.3} ms, peng3dnet {} (release {}, protocol {})",
            reply.delay.as_secs_f64() * 1000.0,
            reply.version,
            reply.release,
            reply.protoversion
        );
        for (k, v) in &reply.data {
            println!("  {k}: {}", value_json(v));
        }
    }
}

/// A ping reply as JSON, with the reference's key names and `delay` in
/// seconds.
fn reply_json(reply: &PingReply) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("delay".into(), reply.delay.as_secs_f64().into());
    map.insert("oldmsg".into(), serde_json::json!({ "time": reply.time }));
    map.insert(
        "peng3dnet".into(),
        serde_json::json!({
            "version": reply.version,
            "release": reply.release,
            "protoversion": reply.protoversion,
        }),
    );
    for (k, v) in &reply.data {
        map.insert(k.clone(), value_json(v));
    }
    serde_json::Value::Object(map)
}

/// A value of a ping answer as JSON.
fn value_json(v: &Value) -> serde_json::Value {
    // Cannot fail: a decoded `Value` holds only what JSON holds (string
    // keys, finite floats, integers of i64 or u64).
    serde_json::to_value(v).expect("a codec value is JSON")
}

fn run_echo(
    addr: &str,
    messages: &[String],
    timeout: Duration,
    tls: Option<TlsClientConfig>,
) -> Res {
    let options = ClientOptions {
        connect_timeout: timeout,
        tls,
        ..ClientOptions::default()
    };
    let mut client = Client::connect_with(addr, echo::registry(), AnyCodec::default(), options)?;
    client.wait_connected(timeout)?;
    echo_messages(&mut client, messages, timeout)?;
    client.close(CloseReason::UserRequest)?;
    Ok(())
}

/// Sends every message as `echo:echo` and prints each answer; fails when
/// one differs or does not come back within `timeout`.
fn echo_messages(peer: &mut impl EchoPeer, messages: &[String], timeout: Duration) -> Res {
    for m in messages {
        peer.send_echo(m)?;
    }
    let mut answered = 0;
    // Each answer within `timeout` of the last (or of the sends): other
    // frames in between do not restart it.
    let mut deadline = std::time::Instant::now() + timeout;
    while answered < messages.len() {
        match peer.next_event(deadline) {
            Ok(ClientEvent::Packet(p)) if p.is::<Echo>() => {
                let text = p.decode::<Echo>()?;
                println!("{text}");
                if text != messages[answered] {
                    return Err(format!("answer {answered} differs: {text:?}").into());
                }
                answered += 1;
                deadline = std::time::Instant::now() + timeout;
            }
            Ok(_) => {}
            Err(ClientError::Timeout) => {
                return Err(format!(
                    "{} of {} answers came back before the timeout",
                    answered,
                    messages.len()
                )
                .into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What `echo` needs of a connection: the TCP client or one over a
/// serial link.
trait EchoPeer {
    fn send_echo(&mut self, text: &str) -> Result<(), ClientError>;
    fn next_event(
        &mut self,
        deadline: std::time::Instant,
    ) -> Result<ClientEvent<AnyCodec>, ClientError>;
}

impl EchoPeer for Client<AnyCodec> {
    fn send_echo(&mut self, text: &str) -> Result<(), ClientError> {
        self.send::<Echo>(&text)
    }
    fn next_event(
        &mut self,
        deadline: std::time::Instant,
    ) -> Result<ClientEvent<AnyCodec>, ClientError> {
        self.recv_until(deadline)
    }
}

impl EchoPeer for StreamConnection<Link, AnyCodec> {
    fn send_echo(&mut self, text: &str) -> Result<(), ClientError> {
        self.send::<Echo>(&text)
    }
    fn next_event(
        &mut self,
        deadline: std::time::Instant,
    ) -> Result<ClientEvent<AnyCodec>, ClientError> {
        self.recv_until(deadline)
    }
}

/// A serial link: a device (or pty), or a 127.0.0.1 socket standing for
/// one (an emulator's serial port).
enum Link {
    Tcp(std::net::TcpStream),
    Port(Box<dyn serialport::SerialPort>),
}

impl Link {
    /// Opens `target` (`tcp:HOST:PORT` or a device path), trying again
    /// for up to `open_timeout` seconds.
    fn open(target: &str, options: &SerialOptions) -> Result<Link, Box<dyn std::error::Error>> {
        let deadline = std::time::Instant::now() + seconds(options.open_timeout);
        loop {
            let attempt: Result<Link, Box<dyn std::error::Error>> =
                match target.strip_prefix("tcp:") {
                    Some(addr) => std::net::TcpStream::connect(addr)
                        .and_then(|s| s.set_nodelay(true).map(|()| s))
                        .map(Link::Tcp)
                        .map_err(Into::into),
                    None => serialport::new(target, options.baud)
                        .timeout(Duration::from_secs(1))
                        .open()
                        .map(Link::Port)
                        .map_err(Into::into),
                };
            match attempt {
                Ok(link) => return Ok(link),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(format!("cannot open the serial link {target}: {e}").into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl std::io::Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Tcp(s) => s.read(buf),
            Link::Port(p) => p.read(buf),
        }
    }
}

impl std::io::Write for Link {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Link::Tcp(s) => s.write(buf),
            Link::Port(p) => p.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Tcp(s) => s.flush(),
            Link::Port(p) => p.flush(),
        }
    }
}

impl ReadTimeout for Link {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Link::Tcp(s) => ReadTimeout::set_read_timeout(s, timeout),
            Link::Port(p) => p.set_read_timeout(timeout),
        }
    }
}

/// `serve --serial`: the echo service of `serve` for one peer at a time
/// over the link, one connection after another until the link ends.
fn serve_serial(target: &str, codec: &str, options: &SerialOptions, limits: &ServeLimits) -> Res {
    let codec = AnyCodec::from_name(codec).ok_or("unknown codec")?;
    let mut link = Link::open(target, options)?;
    println!(
        "peng3dnet: serving over the serial link {target} (codec {}, one connection at a time)",
        codec.name()
    );
    for n in 1u64.. {
        let mut conn = StreamConnection::server(link, echo::registry(), codec, limits.stream())?;
        let closed = loop {
            match conn.recv(Duration::from_secs(60)) {
                Ok(ClientEvent::Packet(p)) if p.is::<Echo>() => {
                    let _ = conn.send_encoded(p.packet_id, &p.body);
                }
                Ok(ClientEvent::Packet(p)) if p.is::<EchoPing>() => {
                    let codec = *conn.connection().codec();
                    let _ = match echo::stamp_ping(&codec, &p.body) {
                        Some(PingAnswer::Any(map)) => conn.send::<echo::EchoPingAny>(&map),
                        Some(PingAnswer::Msg(msg)) => conn.send::<EchoPing>(&msg),
                        None => {
                            conn.connection_mut().close(CloseReason::MalformedPacket);
                            Ok(())
                        }
                    };
                }
                Ok(ClientEvent::Closed(closed)) | Err(ClientError::Closed(closed)) => break closed,
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(e) => return Err(e.into()),
            }
        };
        println!("peng3dnet: serial connection {n} {closed}");
        if conn.stream_ended() {
            println!("peng3dnet: the serial link ended");
            return Ok(());
        }
        link = conn.into_stream();
    }
    Ok(())
}

/// `echo --serial`.
fn echo_serial(target: &str, messages: &[String], timeout: Duration, link: &SerialOptions) -> Res {
    let options = StreamOptions {
        handshake_timeout: timeout,
        ..StreamOptions::default()
    };
    let stream = Link::open(target, link)?;
    let mut conn =
        StreamConnection::client(stream, echo::registry(), AnyCodec::default(), options)?;
    conn.wait_connected(timeout)?;
    echo_messages(&mut conn, messages, timeout)?;
    conn.close(CloseReason::UserRequest)?;
    Ok(())
}

/// `ping --serial`.
fn ping_serial(target: &str, timeout: Duration, json: bool, link: &SerialOptions) -> Res {
    let stream = Link::open(target, link)?;
    let (reply, _) = ping_stream(stream, AnyCodec::default(), timeout)?;
    print_reply(target, &reply, json);
    Ok(())
}

/// A packet that may only be sent over TLS with a verified server; the demo
/// runs on plain TCP, so the client's send is refused before the wire.
struct Secret;
impl Packet for Secret {
    const NAME: &'static str = "demo:secret";
    const RULES: Rules = Rules::SMART
        .side(Side::Server)
        .min_security(SecurityLevel::ServerAuth);
    type Message<'a> = &'a str;
}

fn demo() -> Res {
    let t = Duration::from_secs(5);
    let (log_tx, log_rx) = mpsc::channel::<String>();
    let mut registry = echo::registry();
    registry.register::<Secret>()?;
    let (l1, l2, l3) = (log_tx.clone(), log_tx.clone(), log_tx.clone());
    let server = echo::server(registry.clone(), ServerOptions::default())
        .on_connect(move |ctx| {
            let _ = l1.send(format!(
                "server: client {} accepted, hello sent",
                ctx.client_id()
            ));
        })
        .on_handshake(move |ctx| {
            let _ = l2.send(format!(
                "server: client {} completed the handshake (state {})",
                ctx.client_id(),
                ctx.state()
            ));
        })
        .on_close(move |id, closed| {
            let _ = l3.send(format!("server: client {id} {closed}"));
        });
    let server = server.bind("127.0.0.1:0")?;
    let addr = server.local_addr();
    let running = server.spawn()?;
    let flush_log = || {
        while let Ok(line) = log_rx.recv_timeout(Duration::from_millis(50)) {
            println!("  {line}");
        }
    };
    println!("peng3dnet demo: server on {addr}");

    println!("handshake (classic):");
    let mut client = Client::connect(addr, registry, ClientOptions::default())?;
    println!("  client: connected over TCP, waiting for hello");
    client.wait_connected(t)?;
    flush_log();
    println!(
        "  client: handshake complete (state {}), registry synced: echo:echo = {}, echo:ping = {}",
        client.state(),
        client.registry().id_of::<Echo>().unwrap_or(0),
        client.registry().id_of::<EchoPing>().unwrap_or(0)
    );

    println!("echoes:");
    for text in ["hello", "peng3dnet", "in Rust"] {
        client.send::<Echo>(&text)?;
        println!("  client -> echo:echo {text:?}");
    }
    client.send::<EchoPing>(&EchoPingMsg {
        client_timestamp: echo::unix_time(),
        server_timestamp: None,
    })?;
    println!("  client -> echo:ping");
    let mut answers = 0;
    while answers < 4 {
        if let ClientEvent::Packet(p) = client.recv(t)? {
            if let Ok(text) = p.decode::<Echo>() {
                println!("  client <- echo:echo {text:?}");
            } else if let Ok(m) = p.decode::<EchoPing>() {
                let lag = m.server_timestamp.unwrap_or(0.0) - m.client_timestamp;
                println!(
                    "  client <- echo:ping, server stamped it {:.3} ms later",
                    lag * 1000.0
                );
            }
            answers += 1;
        }
    }

    println!("ping (a second connection of type `ping`):");
    let reply = ping(addr, t)?;
    println!(
        "  {:.3} ms round trip, server peng3dnet {} protocol {}",
        reply.delay.as_secs_f64() * 1000.0,
        reply.version,
        reply.protoversion
    );
    flush_log();

    println!("a rule refusing a packet:");
    match client.send::<Secret>(&"password") {
        Ok(()) => println!("  sent (unexpected!)"),
        Err(e) => println!("  client: demo:secret refused before the wire: {e}"),
    }

    println!("close:");
    client.close(CloseReason::UserRequest)?;
    println!("  client: closed (userrequest)");
    std::thread::sleep(Duration::from_millis(100));
    flush_log();
    running.handle().shutdown();
    let stats = running.join()?;
    println!(
        "server stopped: {} connections accepted, {} handshakes",
        stats.accepted, stats.handshakes
    );
    Ok(())
}
