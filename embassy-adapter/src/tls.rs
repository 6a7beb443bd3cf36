//! TLS 1.3 client sessions through [`embedded_tls`] (feature `tls`).
//!
//! Three pieces:
//! - [`TlsClientConfig`], one of [`no_verification`](TlsClientConfig::no_verification)
//!   (encrypt, accept any server), [`verify`](TlsClientConfig::verify) (the
//!   server's certificate chain against one CA certificate and its name
//!   against a host name), plus
//!   [`with_client_cert`](TlsClientConfig::with_client_cert) for mutual
//!   authentication.
//! - [`SharedSocket`], a socket's reader and writer halves (an `embassy-net`
//!   `TcpSocket::split()`, say) behind two async mutexes, so that the TLS
//!   connection can hand one handle to its reader and another to its writer
//!   ([`embedded_tls::TlsConnection::split`] needs a `Clone` socket).
//! - [`TlsClient`], which runs the handshake ([`TlsClient::connect`]), knows which
//!   [`SecurityLevel`] it established ([`TlsClient::facts`]) and runs a
//!   [`Session`] over the encrypted stream ([`TlsClient::run`]), its reader
//!   and writer working at the same time.
//!
//! The board needs no RNG of its own: the caller passes any
//! [`rand_core::CryptoRngCore`] (a hardware RNG, a seeded ChaCha).
//! embedded-tls speaks TLS 1.3 only, with one cipher suite per connection
//! (`TLS_AES_128_GCM_SHA256` by [`TlsClient::connect`]) and key exchange
//! over P-256. A post-handshake message other than a session ticket (a
//! `KeyUpdate`, which rustls sends after 2^24 records) makes embedded-tls
//! 0.19 panic (`unimplemented!`).
//!
//! # What is verified, and the security level
//!
//! The level comes from what the handshake verified, never from the
//! configuration alone: [`TlsClient::facts`] are what embedded-tls verified,
//! and the core's [`TlsFacts::security_level`] (the one table every adapter
//! uses) turns them into the level:
//!
//! | configuration | handshake | level |
//! |---|---|---|
//! | [`no_verification`](TlsClientConfig::no_verification) | any | [`Encrypted`](SecurityLevel::Encrypted) |
//! | [`verify`](TlsClientConfig::verify) | certificate, name and signature verified | [`ServerAuth`](SecurityLevel::ServerAuth) |
//! | `verify` + client certificate | as above, and the server asked for the certificate and got it | [`BothAuth`](SecurityLevel::BothAuth) |
//! | `verify` | the server sent no certificate or no signature | [`ConnectError::ServerNotVerified`], no connection |
//!
//! Without a verifier embedded-tls checks nothing about the server: neither
//! its certificate nor its handshake signature (the protection is against
//! passive eavesdroppers only). With one, embedded-tls's heap-free verifier
//! (`embedded_tls::pki::CertVerifier`) checks, in this version (0.19):
//! - each certificate's signature up the chain to **one** CA certificate
//!   (DER), with ECDSA P-256/SHA-256 only; it does not check basic
//!   constraints, key usage or path length, so any certificate the CA
//!   signed can act as an intermediate: use a CA of your own that signs
//!   only servers you trust;
//! - the validity period only when the configuration has a clock
//!   ([`with_clock`](TlsClientConfig::with_clock)); without one
//!   (a board without a real-time clock), expired certificates pass;
//! - the host name against the leaf certificate's first 3 DNS names (later
//!   ones are ignored) and its common name; IP-address names are not
//!   supported;
//! - the server's `CertificateVerify` signature with the certificate's key
//!   (ECDSA P-256/SHA-256).
//!
//! embedded-tls does not itself insist that a server sends a certificate;
//! [`TlsClient::connect`] does ([`ConnectError::ServerNotVerified`]).
//!
//! A client certificate is presented only by a configuration that verifies
//! the server, as on the std side, so no server counts a connection as
//! both-authenticated whose client verified nothing. In TLS 1.3 the client
//! finishes its handshake before the server has checked its certificate: a
//! server that rejects it answers with an alert, and either
//! [`connect`](TlsClient::connect) fails (the alert came while the client
//! was still writing) or the session's [`run`](TlsClient::run) ends with a
//! read error. The peng3dnet server speaks first (`hello`) and only after
//! its TLS handshake, so a session reaches `ACTIVE`, where application
//! packets may be sent, only after the server accepted the certificate.
//!
//! # Example
//!
//! ```no_run
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//! use embedded_io_async::{Read, Write};
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::connection::Config;
//! use peng3dnet_core::registry::Registry;
//! use peng3dnet_core::{CloseReason, SecurityLevel};
//! use peng3dnet_embassy::tls::{SharedSocket, TlsClient, TlsClientConfig, RECORD_READ_BUFFER};
//! use peng3dnet_embassy::{Resources, Session};
//!
//! async fn talk<R: Read, W: Write<Error = R::Error>>(
//!     reader: R, // a TcpSocket's halves on a board
//!     writer: W,
//!     ca_der: &[u8],
//!     rng: impl peng3dnet_embassy::tls::rand_core::CryptoRngCore,
//! ) {
//!     let socket = SharedSocket::<NoopRawMutex, _, _>::new(reader, writer);
//!     let mut read_buf = [0u8; RECORD_READ_BUFFER];
//!     let mut write_buf = [0u8; 2048];
//!     let tls_config = TlsClientConfig::verify(ca_der, "server.example").unwrap();
//!     let mut tls = TlsClient::connect(socket.handle(), &mut read_buf, &mut write_buf, &tls_config, rng)
//!         .await
//!         .unwrap();
//!     assert_eq!(tls.security_level(), SecurityLevel::ServerAuth);
//!
//!     let config = Config::new();
//!     let mut registry = Registry::<8>::new();
//!     let mut res = Resources::<1024, 1024>::new();
//!     let session: Session<NoopRawMutex, _, 8, _> =
//!         Session::client(&config, &mut registry, Postcard, &mut res, "classic").unwrap();
//!     let app = async {
//!         session.wait_connected().await.unwrap();
//!         session.close(CloseReason::UserRequest);
//!     };
//!     let (_, closed) = embassy_futures::join::join(app, tls.run(&session)).await;
//!     let _ = closed;
//!     let _ = tls.close().await; // close_notify
//! }
//! ```

use core::marker::PhantomData;

use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::mutex::Mutex;
use embedded_io_async::{ErrorType, Read, Write};
use embedded_tls::pki::CertVerifier;
use embedded_tls::{
    Certificate, CertificateRef, CertificateVerifyRef, CryptoProvider, SignatureScheme,
    TlsCipherSuite, TlsConfig, TlsConnection, TlsContext, TlsReader, TlsVerifier, TlsWriter,
};
use p256::ecdsa::{signature::SignerMut, DerSignature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::registry::RegistryAccess;
use peng3dnet_core::{SecurityLevel, TlsFacts};
use rand_core::CryptoRngCore;

use crate::session::{RunError, Session};
use peng3dnet_core::Closed;

/// embedded-tls itself, for its cipher suites and flush policy.
pub use embedded_tls;
pub use embedded_tls::{Aes128GcmSha256, Aes256GcmSha384, NoClock, TlsClock, TlsError};
/// The RNG traits the TLS client takes (rand_core 0.6, as embedded-tls).
pub use rand_core;

/// The smallest safe size of the record read buffer: one full TLS record
/// (16 KiB of plaintext plus its overhead). Servers other than embedded ones
/// do not honour the max-fragment-length extension, so a smaller buffer fails
/// on the first large record.
pub const RECORD_READ_BUFFER: usize = 16_640;

/// The longest host name the verifier takes (embedded-tls keeps it in 64
/// bytes).
pub const MAX_SERVER_NAME: usize = 64;

/// Why a [`TlsClientConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// The host name is empty, longer than [`MAX_SERVER_NAME`], holds a
    /// character other than letters, digits, `-` and `.`, or is an IPv4
    /// address (embedded-tls verifies DNS names only).
    InvalidServerName,
    /// The client key is neither PKCS#8 nor SEC1 DER of a P-256 key.
    InvalidClientKey,
    /// A client certificate was added to a configuration that does not
    /// verify the server. Refused: the server would report both certificates
    /// verified ([`SecurityLevel::BothAuth`]) for a connection whose client
    /// verified nothing.
    ClientCertWithoutVerification,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::InvalidServerName => "invalid server name (a DNS name is needed)",
            ConfigError::InvalidClientKey => {
                "the client key is not a P-256 key in PKCS#8 or SEC1 DER"
            }
            ConfigError::ClientCertWithoutVerification => {
                "a client certificate needs a configuration that verifies the server"
            }
        })
    }
}

impl core::error::Error for ConfigError {}

/// Why [`TlsClient::connect`] failed. The connection is unusable then; the
/// socket was consumed (close it through the [`SharedSocket`]).
#[derive(Debug, Clone, Copy)]
pub enum ConnectError {
    /// The handshake failed: a server certificate that does not verify
    /// (`InvalidCertificate`, `InvalidSignature`, `InvalidSignatureScheme`),
    /// an alert from the server (`HandshakeAborted`), the transport
    /// (`Io`, `IoError` for an end of stream).
    Tls(TlsError),
    /// The configuration verifies the server, but the handshake completed
    /// without the server's certificate or its signature (embedded-tls
    /// does not require them). Refused rather than reported as unverified.
    ServerNotVerified,
}

impl From<TlsError> for ConnectError {
    fn from(e: TlsError) -> Self {
        ConnectError::Tls(e)
    }
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e:?}"),
            ConnectError::ServerNotVerified => {
                f.write_str("the server completed the handshake without a verified certificate")
            }
        }
    }
}

impl core::error::Error for ConnectError {}

fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[derive(Clone)]
struct ServerCheck<'a> {
    ca_der: &'a [u8],
    name: &'a str,
}

#[derive(Clone)]
struct ClientIdentity<'a> {
    cert_der: &'a [u8],
    key: SigningKey,
}

/// The client's TLS configuration: whether and how the server is verified,
/// and optionally a client certificate.
///
/// `Clock` gives the time for checking certificate validity periods
/// ([`NoClock`]: not checked); `CHAIN` is the room for the server's
/// certificate chain as sent (bytes), kept during the handshake.
pub struct TlsClientConfig<'a, Clock = NoClock, const CHAIN: usize = 4096> {
    server: Option<ServerCheck<'a>>,
    client: Option<ClientIdentity<'a>>,
    clock: PhantomData<fn() -> Clock>,
}

impl<Clock, const CHAIN: usize> Clone for TlsClientConfig<'_, Clock, CHAIN> {
    fn clone(&self) -> Self {
        TlsClientConfig {
            server: self.server.clone(),
            client: self.client.clone(),
            clock: PhantomData,
        }
    }
}

impl<Clock, const CHAIN: usize> core::fmt::Debug for TlsClientConfig<'_, Clock, CHAIN> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("server_name", &self.server_name())
            .field("client_cert", &self.has_client_cert())
            .finish_non_exhaustive()
    }
}

impl<'a> TlsClientConfig<'a> {
    /// Encrypts, but checks nothing about the server (not even its handshake
    /// signature): protects against passive eavesdroppers only. Connections
    /// report [`SecurityLevel::Encrypted`]. No server name is sent.
    pub fn no_verification() -> Self {
        TlsClientConfig {
            server: None,
            client: None,
            clock: PhantomData,
        }
    }

    /// Verifies the server's certificate chain against the CA certificate
    /// `ca_der` (DER), its name against `server_name` (a DNS name, also sent
    /// as SNI) and its handshake signature. Connections report
    /// [`SecurityLevel::ServerAuth`]. See the [module](self) for what
    /// embedded-tls checks.
    pub fn verify(ca_der: &'a [u8], server_name: &'a str) -> Result<Self, ConfigError> {
        if !valid_server_name(server_name) {
            return Err(ConfigError::InvalidServerName);
        }
        Ok(TlsClientConfig {
            server: Some(ServerCheck {
                ca_der,
                name: server_name,
            }),
            client: None,
            clock: PhantomData,
        })
    }
}

impl<'a, Clock: TlsClock, const CHAIN: usize> TlsClientConfig<'a, Clock, CHAIN> {
    /// Adds a client certificate (`cert_der`, DER) and its P-256 private key
    /// (`key_der`, PKCS#8 or SEC1 DER), presented when the server asks for
    /// one. A connection whose server asked for it and got it reports
    /// [`SecurityLevel::BothAuth`].
    ///
    /// Fails with [`ConfigError::ClientCertWithoutVerification`] on a
    /// [`no_verification`](TlsClientConfig::no_verification) configuration.
    pub fn with_client_cert(
        mut self,
        cert_der: &'a [u8],
        key_der: &[u8],
    ) -> Result<Self, ConfigError> {
        if self.server.is_none() {
            return Err(ConfigError::ClientCertWithoutVerification);
        }
        let secret = p256::SecretKey::from_pkcs8_der(key_der)
            .or_else(|_| p256::SecretKey::from_sec1_der(key_der))
            .map_err(|_| ConfigError::InvalidClientKey)?;
        self.client = Some(ClientIdentity {
            cert_der,
            key: SigningKey::from(&secret),
        });
        Ok(self)
    }

    /// Checks certificate validity periods against `C::now()` (seconds since
    /// the Unix epoch; `None` skips the check).
    pub fn with_clock<C: TlsClock>(self) -> TlsClientConfig<'a, C, CHAIN> {
        TlsClientConfig {
            server: self.server,
            client: self.client,
            clock: PhantomData,
        }
    }

    /// Room for `M` bytes of server certificate chain (default 4,096): a
    /// longer chain fails the handshake with `OutOfMemory`.
    pub fn with_chain_capacity<const M: usize>(self) -> TlsClientConfig<'a, Clock, M> {
        TlsClientConfig {
            server: self.server,
            client: self.client,
            clock: PhantomData,
        }
    }
}

impl<Clock, const CHAIN: usize> TlsClientConfig<'_, Clock, CHAIN> {
    /// Whether the server's certificate, name and signature are verified.
    pub fn verifies_server(&self) -> bool {
        self.server.is_some()
    }

    /// Whether a client certificate is configured.
    pub fn has_client_cert(&self) -> bool {
        self.client.is_some()
    }

    /// The name the server is verified against.
    pub fn server_name(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.name)
    }
}

/// embedded-tls's verifier, recording what it verified, and refusing what it
/// would otherwise accept or panic on (a second certificate, a signature
/// without a certificate).
struct RecordingVerifier<'a, CS: TlsCipherSuite, Clock: TlsClock, const CHAIN: usize> {
    inner: CertVerifier<'a, CS, Clock, CHAIN>,
    name_set: bool,
    certificate_ok: bool,
    signature_ok: bool,
}

impl<CS: TlsCipherSuite, Clock: TlsClock, const CHAIN: usize> TlsVerifier<CS>
    for RecordingVerifier<'_, CS, Clock, CHAIN>
{
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        self.inner.set_hostname_verification(hostname)?;
        self.name_set = true;
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &CS::Hash,
        cert: CertificateRef,
    ) -> Result<(), TlsError> {
        if self.certificate_ok || !self.name_set {
            return Err(TlsError::InvalidHandshake);
        }
        self.inner.verify_certificate(transcript, cert)?;
        self.certificate_ok = true;
        Ok(())
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef) -> Result<(), TlsError> {
        if !self.certificate_ok || self.signature_ok {
            return Err(TlsError::InvalidHandshake);
        }
        self.inner.verify_signature(verify)?;
        self.signature_ok = true;
        Ok(())
    }
}

/// The crypto provider of one handshake: the caller's RNG, the verifier
/// when configured, the client certificate; it records what happened.
struct Provider<'a, CS: TlsCipherSuite, RNG, Clock: TlsClock, const CHAIN: usize> {
    rng: RNG,
    verifier: Option<RecordingVerifier<'a, CS, Clock, CHAIN>>,
    client: Option<ClientIdentity<'a>>,
    cert_requested: bool,
    cert_signed: bool,
}

impl<CS: TlsCipherSuite, RNG: CryptoRngCore, Clock: TlsClock, const CHAIN: usize> CryptoProvider
    for Provider<'_, CS, RNG, Clock, CHAIN>
{
    type CipherSuite = CS;
    type Signature = DerSignature;

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<CS>, TlsError> {
        // `Unimplemented` is how embedded-tls learns that nothing is verified.
        self.verifier.as_mut().ok_or(TlsError::Unimplemented)
    }

    fn signer(&mut self) -> Result<(impl SignerMut<DerSignature>, SignatureScheme), TlsError> {
        let key = self
            .client
            .as_ref()
            .ok_or(TlsError::InvalidPrivateKey)?
            .key
            .clone();
        self.cert_signed = true;
        Ok((key, SignatureScheme::EcdsaSecp256r1Sha256))
    }

    fn client_cert(&mut self) -> Option<Certificate<impl AsRef<[u8]>>> {
        // Called only when the server sent a CertificateRequest.
        self.cert_requested = true;
        self.client.as_ref().map(|c| Certificate::X509(c.cert_der))
    }
}

/// A socket's reader and writer halves behind two async mutexes, handing
/// out [`SharedSocketRef`]s: `Clone` handles that read through one half and
/// write through the other. [`TlsClient`] needs one to split its connection
/// into a reader and a writer that work at the same time.
///
/// The reader's mutex is taken only by reads and the writer's only by
/// writes; after the handshake the TLS reader is the only one to read and
/// the TLS writer the only one to write, so neither lock is ever contended.
/// `M` is the mutex kind (`NoopRawMutex` when the session's tasks share one
/// executor).
pub struct SharedSocket<M: RawMutex, R, W> {
    reader: Mutex<M, R>,
    writer: Mutex<M, W>,
}

impl<M: RawMutex, R, W> SharedSocket<M, R, W> {
    /// Shares `reader` and `writer` (a `TcpSocket`'s halves, say).
    pub const fn new(reader: R, writer: W) -> Self {
        SharedSocket {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        }
    }

    /// A handle that reads through the reader and writes through the writer.
    pub fn handle(&self) -> SharedSocketRef<'_, M, R, W> {
        SharedSocketRef {
            reader: &self.reader,
            writer: &self.writer,
        }
    }

    /// The halves back.
    pub fn into_inner(self) -> (R, W) {
        (self.reader.into_inner(), self.writer.into_inner())
    }
}

/// A handle of a [`SharedSocket`]: an `embedded_io_async` reader and writer
/// that can be cloned.
pub struct SharedSocketRef<'s, M: RawMutex, R, W> {
    reader: &'s Mutex<M, R>,
    writer: &'s Mutex<M, W>,
}

impl<M: RawMutex, R, W> Clone for SharedSocketRef<'_, M, R, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: RawMutex, R, W> Copy for SharedSocketRef<'_, M, R, W> {}

impl<M: RawMutex, R: ErrorType, W: ErrorType<Error = R::Error>> ErrorType
    for SharedSocketRef<'_, M, R, W>
{
    type Error = R::Error;
}

impl<M: RawMutex, R: Read, W: Write<Error = R::Error>> Read for SharedSocketRef<'_, M, R, W> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.reader.lock().await.read(buf).await
    }
}

impl<M: RawMutex, R: Read, W: Write<Error = R::Error>> Write for SharedSocketRef<'_, M, R, W> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.writer.lock().await.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.flush().await
    }
}

/// The reading half of a [`TlsClient`] ([`TlsClient::split`]). The server's
/// `close_notify` reads as the end of the stream (`Ok(0)`); any other alert
/// is an error (embedded-tls reports it as `InternalError`).
pub struct TlsReadHalf<'t, S, CS: TlsCipherSuite + 'static>(TlsReader<'t, S, CS>);

impl<S, CS: TlsCipherSuite + 'static> ErrorType for TlsReadHalf<'_, S, CS> {
    type Error = TlsError;
}

impl<'t, S: Read + 't, CS: TlsCipherSuite + 'static> Read for TlsReadHalf<'t, S, CS> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        match self.0.read(buf).await {
            Err(TlsError::ConnectionClosed) => Ok(0),
            other => other,
        }
    }
}

/// The writing half of a [`TlsClient`] ([`TlsClient::split`]). Every write
/// is sealed into a record and sent at once (embedded-tls would otherwise
/// hold it until its buffer fills or someone flushes), so bytes never wait
/// while the writer is idle.
pub struct TlsWriteHalf<'t, S, CS: TlsCipherSuite + 'static>(TlsWriter<'t, S, CS>);

impl<S, CS: TlsCipherSuite + 'static> ErrorType for TlsWriteHalf<'_, S, CS> {
    type Error = TlsError;
}

impl<'t, S: Write + 't, CS: TlsCipherSuite + 'static> Write for TlsWriteHalf<'t, S, CS> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, TlsError> {
        let n = self.0.write(buf).await?;
        self.0.flush().await?;
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), TlsError> {
        self.0.flush().await
    }
}

/// An established TLS 1.3 client connection over the socket `S` (usually a
/// [`SharedSocketRef`]) with cipher suite `CS`, and what its handshake
/// verified.
pub struct TlsClient<'a, S: Read + Write + 'a, CS: TlsCipherSuite + 'static = Aes128GcmSha256> {
    conn: TlsConnection<'a, S, CS>,
    facts: TlsFacts,
    client_cert_requested: bool,
}

impl<'a, S: Read + Write + 'a> TlsClient<'a, S, Aes128GcmSha256> {
    /// Runs the TLS handshake over `socket` with `TLS_AES_128_GCM_SHA256`
    /// (see [`connect_with_suite`](TlsClient::connect_with_suite)).
    ///
    /// `read_buf` holds one received record (at least
    /// [`RECORD_READ_BUFFER`] bytes for a server that sends full records),
    /// `write_buf` one record to send (a few hundred bytes more than the
    /// largest write; the larger of the two also encodes the handshake
    /// messages, the client certificate included). `rng` makes the key
    /// share and the client random.
    ///
    /// Not bounded in time: wrap it in a timeout
    /// (`embassy_time::with_timeout`) against a server that stalls.
    pub async fn connect<RNG: CryptoRngCore, Clock: TlsClock, const CHAIN: usize>(
        socket: S,
        read_buf: &'a mut [u8],
        write_buf: &'a mut [u8],
        config: &TlsClientConfig<'_, Clock, CHAIN>,
        rng: RNG,
    ) -> Result<Self, ConnectError> {
        Self::connect_with_suite(socket, read_buf, write_buf, config, rng).await
    }
}

impl<'a, S: Read + Write + 'a, CS: TlsCipherSuite + 'static> TlsClient<'a, S, CS> {
    /// [`connect`](TlsClient::connect) offering the cipher suite `CS`
    /// ([`Aes256GcmSha384`], say) instead.
    pub async fn connect_with_suite<RNG: CryptoRngCore, Clock: TlsClock, const CHAIN: usize>(
        socket: S,
        read_buf: &'a mut [u8],
        write_buf: &'a mut [u8],
        config: &TlsClientConfig<'_, Clock, CHAIN>,
        rng: RNG,
    ) -> Result<Self, ConnectError> {
        let mut tls_config = TlsConfig::new();
        if let Some(server) = &config.server {
            tls_config = tls_config.with_server_name(server.name);
        }
        let mut provider = Provider::<CS, RNG, Clock, CHAIN> {
            rng,
            verifier: config.server.as_ref().map(|s| RecordingVerifier {
                inner: CertVerifier::new(Certificate::X509(s.ca_der)),
                name_set: false,
                certificate_ok: false,
                signature_ok: false,
            }),
            client: config.client.clone(),
            cert_requested: false,
            cert_signed: false,
        };
        let mut conn = TlsConnection::new(socket, read_buf, write_buf);
        conn.open(TlsContext::new(&tls_config, &mut provider))
            .await?;
        let server_verified = provider
            .verifier
            .as_ref()
            .is_some_and(|v| v.name_set && v.certificate_ok && v.signature_ok);
        if config.server.is_some() && !server_verified {
            return Err(ConnectError::ServerNotVerified);
        }
        let facts = TlsFacts::Client {
            server_verified,
            client_cert_sent: server_verified
                && provider.cert_requested
                && provider.cert_signed
                && config.client.is_some(),
        };
        Ok(TlsClient {
            conn,
            facts,
            client_cert_requested: provider.cert_requested,
        })
    }

    /// What the handshake verified, as the core's [`TlsFacts::Client`]:
    /// `server_verified` when the certificate chain, the name and the
    /// signature all verified (see the [module](self)), `client_cert_sent`
    /// when the server asked for a certificate and the client sent its own
    /// and signed the handshake with its key (only ever with
    /// `server_verified`).
    pub fn facts(&self) -> TlsFacts {
        self.facts
    }

    /// Whether the server asked for a client certificate, whether or not
    /// this client had one to send. The level does not depend on it; it
    /// tells a server that asked and got nothing (a client without a
    /// certificate, which such a server then refuses) from one that never
    /// asked.
    pub fn client_cert_requested(&self) -> bool {
        self.client_cert_requested
    }

    /// The security level the handshake established, from its
    /// [`facts`](Self::facts) by the core's one table
    /// ([`TlsFacts::security_level`]).
    pub fn security_level(&self) -> SecurityLevel {
        self.facts.security_level()
    }

    /// A reader and a writer of plaintext that work at the same time (for
    /// [`Session::run`]). Needs a `Clone` socket: a [`SharedSocketRef`].
    pub fn split(&mut self) -> (TlsReadHalf<'_, S, CS>, TlsWriteHalf<'_, S, CS>)
    where
        S: Clone,
    {
        let (r, w) = self.conn.split();
        (TlsReadHalf(r), TlsWriteHalf(w))
    }

    /// Sets `session`'s security level from this handshake's facts and runs
    /// it over this connection until it closed (see [`Session::run`]).
    pub async fn run<M: RawMutex, C: Codec, const N: usize, G: RegistryAccess<N>>(
        &mut self,
        session: &Session<'_, M, C, N, G>,
    ) -> Result<Closed, RunError<TlsError, TlsError>>
    where
        S: Clone,
    {
        session.set_security_level(self.security_level());
        let (reader, writer) = self.split();
        session.run(reader, writer).await
    }

    /// The embedded-tls connection (its flush policy, unsplit reads and
    /// writes).
    pub fn connection(&mut self) -> &mut TlsConnection<'a, S, CS> {
        &mut self.conn
    }

    /// Sends `close_notify` and returns the socket.
    pub async fn close(self) -> Result<S, (S, TlsError)> {
        self.conn.close().await
    }
}
