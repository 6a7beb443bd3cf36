//! Ping a server: the `ping` connection type, as the reference's
//! `peng3dnet.ext.ping.pingServer` does.
//!
//! ```no_run
//! let reply = peng3dnet_std::ping::ping("127.0.0.1:8080", std::time::Duration::from_secs(5))?;
//! println!("{:?} to a server of version {}", reply.delay, reply.version);
//! # Ok::<(), peng3dnet_std::client::ClientError>(())
//! ```

use crate::client::{Client, ClientError, ClientEvent, ClientOptions};
use crate::codec::Value;
use crate::stream::{ReadTimeout, StreamConnection, StreamOptions};
use crate::tls::TlsClientConfig;
use crate::StdRegistry;
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::messages::PingRequest;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// A server's answer to a ping.
#[derive(Clone, Debug, PartialEq)]
pub struct PingReply {
    /// Round trip from sending the request to receiving the answer.
    pub delay: Duration,
    /// The request's `time` as the server echoed it.
    pub time: f64,
    /// The server's software version (`peng3dnet.version`).
    pub version: String,
    /// The server's release (`peng3dnet.release`).
    pub release: String,
    /// The server's protocol version.
    pub protoversion: u32,
    /// The server's own ping data, in its order: strings with postcard, any
    /// value with a self-describing codec.
    pub data: Vec<(String, Value)>,
}

/// Pings the server at `addr` with the native codec and waits up to
/// `timeout` for the answer.
pub fn ping(addr: impl ToSocketAddrs, timeout: Duration) -> Result<PingReply, ClientError> {
    ping_with(addr, Postcard, timeout)
}

/// Pings with the given codec.
pub fn ping_with<C: Codec>(
    addr: impl ToSocketAddrs,
    codec: C,
    timeout: Duration,
) -> Result<PingReply, ClientError> {
    ping_with_options(addr, codec, timeout, None)
}

/// Pings with the given codec, over TLS when `tls` is given.
pub fn ping_with_options<C: Codec>(
    addr: impl ToSocketAddrs,
    codec: C,
    timeout: Duration,
    tls: Option<TlsClientConfig>,
) -> Result<PingReply, ClientError> {
    let deadline = Instant::now() + timeout;
    let options = ClientOptions {
        conntype: peng3dnet_core::CONNTYPE_PING,
        connect_timeout: timeout,
        handshake_timeout: timeout,
        tls,
        ..ClientOptions::default()
    };
    let mut client = Client::connect_with(addr, StdRegistry::new(), codec, options)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv(left)? {
            ClientEvent::Pong { delay, body } => {
                // The codec the server's hello chose.
                let reply = parse_reply(client.codec(), delay, &body)?;
                // The core closes with `pingcomplete`; let the close go out.
                let _ = client.wait_closed(Duration::from_secs(1));
                return Ok(reply);
            }
            ClientEvent::Closed(closed) => return Err(ClientError::Closed(closed)),
            _ => {}
        }
    }
}

/// Pings the server at `addr` from async code, with the [tokio
/// client](crate::tokio_client) (over TLS when `tls` is given): the same
/// answer as [`ping_with_options`], with `timeout` bounding the whole wait.
///
/// ```no_run
/// # async fn f() -> Result<(), peng3dnet_std::client::ClientError> {
/// use peng3dnet_core::codec::Postcard;
/// use std::time::Duration;
/// let reply = peng3dnet_std::ping::ping_async("127.0.0.1:8080", Postcard, Duration::from_secs(5), None).await?;
/// println!("{:?} to a server of version {}", reply.delay, reply.version);
/// # Ok(()) }
/// ```
#[cfg(feature = "tokio")]
pub async fn ping_async<C: Codec + Send + 'static>(
    addr: impl tokio::net::ToSocketAddrs,
    codec: C,
    timeout: Duration,
    tls: Option<TlsClientConfig>,
) -> Result<PingReply, ClientError> {
    let options = ClientOptions {
        conntype: peng3dnet_core::CONNTYPE_PING,
        connect_timeout: timeout,
        handshake_timeout: timeout,
        tls,
        ..ClientOptions::default()
    };
    let ping = async {
        let client =
            crate::tokio_client::Client::connect_with(addr, StdRegistry::new(), codec, options)
                .await?;
        loop {
            match client.recv().await? {
                ClientEvent::Pong { delay, body } => {
                    let reply = parse_reply(&client.codec(), delay, &body)?;
                    // The core closes with `pingcomplete`; let the close go
                    // out (bounded).
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), client.wait_closed()).await;
                    return Ok(reply);
                }
                ClientEvent::Closed(closed) => return Err(ClientError::Closed(closed)),
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, ping)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// Pings the server at the other end of a byte stream (a serial link; see
/// [`crate::stream`]): a `ping` connection over `stream`, waiting up to
/// `timeout` for the answer. The stream is handed back for the next
/// connection.
pub fn ping_stream<S, C>(
    stream: S,
    codec: C,
    timeout: Duration,
) -> Result<(PingReply, S), ClientError>
where
    S: std::io::Read + std::io::Write + ReadTimeout,
    C: Codec,
{
    let deadline = Instant::now() + timeout;
    let options = StreamOptions {
        conntype: peng3dnet_core::CONNTYPE_PING,
        handshake_timeout: timeout,
        ..StreamOptions::default()
    };
    let mut conn = StreamConnection::client(stream, StdRegistry::new(), codec, options)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv(left)? {
            ClientEvent::Pong { delay, body } => {
                let reply = parse_reply(conn.connection().codec(), delay, &body)?;
                let _ = conn.wait_closed(Duration::from_secs(1));
                return Ok((reply, conn.into_stream()));
            }
            ClientEvent::Closed(closed) => return Err(ClientError::Closed(closed)),
            _ => {}
        }
    }
}

/// A ping answer's body, decoded with the codec the server's hello chose.
fn parse_reply<C: Codec>(
    codec: &C,
    delay: Duration,
    body: &[u8],
) -> Result<PingReply, ClientError> {
    let self_describing = codec.self_describing();
    let reply = codec
        .decode_seed(ReplySeed { self_describing }, body)
        .map_err(|e| ClientError::Decode(peng3dnet_core::connection::DecodeError::Codec(e)))?;
    Ok(PingReply {
        delay,
        time: reply.time,
        version: reply.version,
        release: reply.release,
        protoversion: reply.protoversion,
        data: reply.data,
    })
}

struct Reply {
    time: f64,
    version: String,
    release: String,
    protoversion: u32,
    data: Vec<(String, Value)>,
}

#[derive(Deserialize)]
struct Info {
    version: String,
    release: String,
    protoversion: u32,
}

/// Decodes a ping answer: a map with `oldmsg`, `peng3dnet` and the server's
/// entries (strings with postcard; any value with a self-describing codec).
struct ReplySeed {
    self_describing: bool,
}

impl<'de> DeserializeSeed<'de> for ReplySeed {
    type Value = Reply;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Reply, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ReplySeed {
    type Value = Reply;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ping answer map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reply, A::Error> {
        use serde::de::Error;
        let (mut time, mut info, mut data) = (None, None, Vec::new());
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "oldmsg" => time = Some(map.next_value::<PingRequest>()?.time),
                "peng3dnet" => info = Some(map.next_value::<Info>()?),
                _ if self.self_describing => {
                    let v: Value = map.next_value()?;
                    data.push((key, v));
                }
                _ => {
                    let v: String = map.next_value()?;
                    data.push((key, Value::String(v)));
                }
            }
            if data.len() > 1024 {
                // Bounded: skip the rest of an oversized answer.
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                break;
            }
        }
        let info = info.ok_or_else(|| A::Error::missing_field("peng3dnet"))?;
        Ok(Reply {
            time: time.ok_or_else(|| A::Error::missing_field("oldmsg"))?,
            version: info.version,
            release: info.release,
            protoversion: info.protoversion,
            data,
        })
    }
}
