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
    /// How long one frame may take from its first received byte to its last
    /// before the connection closes with `frametimeout` (30 s): a length
    /// prefix promising more than ever comes (a stalled or corrupted
    /// stream) does not hold the connection forever. [`Duration::MAX`] turns
    /// it off.
    pub frame_timeout: Duration,
    /// How long the peer may send nothing at all before the connection
    /// closes with `idletimeout`. Off ([`Duration::MAX`]) by default; a
    /// server that must free the slots of silent clients sets it, above its
    /// clients' [`keepalive_interval`](Self::keepalive_interval).
    pub idle_timeout: Duration,
    /// On an open connection, when nothing was queued for this long, queue a
    /// keepalive (15 s by default; [`Duration::MAX`] turns it off), so that a
    /// healthy idle peer stays under the other side's
    /// [`idle_timeout`](Self::idle_timeout), and a half-open connection is
    /// found by the idle timeout on both sides. The keepalive is a protocol
    /// packet the Python reference ignores (`docs/PROTOCOL.md`,
    /// "Keepalive").
    pub keepalive_interval: Duration,
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

    /// Compresses the `n`-byte body at the start of `area` in place, with
    /// the rest of `area` as room: the compressed length when it is shorter
    /// (the compressed bytes then start `area`), `None` to send the body
    /// plain. The connection calls it for bodies over the threshold.
    /// Implementations keep this default: it is a method so that its code
    /// is only in an image that has a compressor (a board without one links
    /// none of it).
    fn compress_in_place(&self, area: &mut [u8], n: usize) -> Option<usize> {
        let (body, rest) = area.split_at_mut_checked(n)?;
        match self.compress(body, rest) {
            Some(m) if m < n && m <= rest.len() => {
                area.copy_within(n..n + m, 0);
                Some(m)
            }
            _ => None,
        }
    }
}

impl<'a> Config<'a> {
    /// The defaults: this crate's version, a 10 s handshake timeout, a 30 s
    /// frame timeout, no idle timeout, a keepalive every 15 s, autosync
    /// closing on a mismatch, pings answered, no custom connection type.
    pub const fn new() -> Self {
        Config {
            version: env!("CARGO_PKG_VERSION"),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::MAX,
            keepalive_interval: Duration::from_secs(15),
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
            .field("frame_timeout", &self.frame_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("autosync", &self.autosync)
            .field("sync_policy", &self.sync_policy)
            .field("ping", &self.ping)
            .field("conntypes", &self.conntypes.len())
            .field("decompress", &self.decompress)
            .field("compressor", &self.compressor.map(|c| c.threshold()))
            .finish()
    }
}
