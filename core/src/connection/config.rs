//! A connection's settings: [`Config`], the ping answer a server gives
//! ([`PingServerConfig`]) and the [`Compressor`] a host lends for outgoing
//! bodies.

use super::conntype::CustomConnType;
use crate::registry::SyncPolicy;
use crate::time::Duration;
use core::fmt;

/// What a server answers to pings with (the reference's `PingableServerMixin`).
#[derive(Clone, Copy, Debug)]
pub struct PingServerConfig<'a> {
    /// The release string under `peng3dnet.release`.
    pub release: &'a str,
    /// Further entries of the answer (the reference's `pingdata`).
    pub data: &'a [(&'a str, &'a str)],
}

/// Settings shared by every connection of an endpoint. Build it once (it can
/// be a `static`) and lend it to each connection.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    /// Software version sent in `hello`, `handshake` and ping answers.
    pub version: &'a str,
    /// How long a connection may take from its start to [`Event::Connected`](super::Event::Connected)
    /// (or, on a ping connection, to its end) before it closes with
    /// `handshaketimeout`.
    pub handshake_timeout: Duration,
    /// Whether a client adopts the server's registry ids (the reference's
    /// `net.registry.autosync`, on by default).
    pub autosync: bool,
    /// What a client does when the registries hold other names.
    pub sync_policy: SyncPolicy,
    /// On a server: answer `ping` connections with this; `None` refuses the
    /// `ping` connection type with `unknownconntype`.
    pub ping: Option<PingServerConfig<'a>>,
    /// Connection types beyond `classic` and `ping`, in a table of the
    /// caller's size.
    pub conntypes: &'a [CustomConnType<'a>],
    /// Accept zlib-compressed frames (needs the `zlib` feature; on by default
    /// with it). Without, a compressed frame closes with
    /// `compressionnotenabled`.
    pub decompress: bool,
    /// Compress bodies larger than its threshold before sending, as the
    /// reference does above 8,192 bytes. `None` sends everything plain.
    pub compressor: Option<&'a (dyn Compressor + Sync)>,
}

/// Compresses outgoing bodies (zlib, RFC 1950). The core has no compressor of
/// its own (a deflater needs a heap); a host adapter provides one.
pub trait Compressor {
    /// Bodies longer than this are compressed.
    fn threshold(&self) -> usize;

    /// Compresses `input` into `out` as one zlib stream and returns its
    /// length, or `None` if it does not fit (the body is then sent plain).
    fn compress(&self, input: &[u8], out: &mut [u8]) -> Option<usize>;
}

impl<'a> Config<'a> {
    /// The defaults: this crate's version, a 10 s handshake timeout, autosync
    /// closing on a mismatch, pings answered, no custom connection type.
    pub const fn new() -> Self {
        Config {
            version: env!("CARGO_PKG_VERSION"),
            handshake_timeout: Duration::from_secs(10),
            autosync: true,
            sync_policy: SyncPolicy::CloseConnection,
            ping: Some(PingServerConfig {
                release: env!("CARGO_PKG_VERSION"),
                data: &[],
            }),
            conntypes: &[],
            decompress: cfg!(feature = "zlib"),
            compressor: None,
        }
    }
}

impl Default for Config<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Config<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("version", &self.version)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("autosync", &self.autosync)
            .field("sync_policy", &self.sync_policy)
            .field("ping", &self.ping)
            .field("conntypes", &self.conntypes.len())
            .field("decompress", &self.decompress)
            .field("compressor", &self.compressor.map(|c| c.threshold()))
            .finish()
    }
}
