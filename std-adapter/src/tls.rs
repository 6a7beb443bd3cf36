//! TLS for peng3dnet connections, on rustls with the `ring` provider.
//!
//! Three pieces:
//! - [`TlsServerConfig`]: the server's certificate chain and key, optionally a
//!   client CA whose certificates the server then requires and verifies.
//! - [`TlsClientConfig`]: one of [`no_verification`](TlsClientConfig::no_verification)
//!   (encrypt, accept any server certificate), [`verify`](TlsClientConfig::verify)
//!   (server certificate and host name verified), plus
//!   [`with_client_cert`](TlsClientConfig::with_client_cert) for mutual authentication.
//! - [`TlsStream`]: a socket and a rustls connection, driven by the caller with
//!   [`read_plain`](TlsStream::read_plain), [`write_plain`](TlsStream::write_plain)
//!   and [`flush_tls`](TlsStream::flush_tls). It works on a non-blocking socket
//!   (the server's mio loop: `WouldBlock` comes back as
//!   [`io::ErrorKind::WouldBlock`]) and on a blocking one (the client).
//!
//! When the handshake is complete, [`TlsStream::handshake_facts`] says what
//! it verified, as the core's [`TlsFacts`], and [`TlsStream::security_level`]
//! the [`SecurityLevel`] those facts establish for the protocol's
//! `min_sslsec_level` rules ([`TlsFacts::security_level`] has the table,
//! the same for every adapter).
//!
//! # Example
//!
//! A server and a client on loopback, both blocking for brevity:
//!
//! ```
//! use std::net::{TcpListener, TcpStream};
//! use peng3dnet_core::SecurityLevel;
//! use peng3dnet_std::tls::{TlsClientConfig, TlsServerConfig, TlsStream};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A self-signed certificate (any PEM chain and key will do).
//! let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
//! let server_config = TlsServerConfig::from_pem(
//!     cert.cert.pem().as_bytes(),
//!     cert.signing_key.serialize_pem().as_bytes(),
//!     None, // no client certificates required
//! )?;
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let server = std::thread::spawn(move || -> std::io::Result<Option<SecurityLevel>> {
//!     let (socket, _) = listener.accept()?;
//!     let mut tls = TlsStream::server(socket, &server_config).map_err(std::io::Error::other)?;
//!     let mut buf = [0u8; 5];
//!     let n = tls.read_plain(&mut buf)?; // drives the handshake, then decrypts
//!     tls.write_plain(&buf[..n])?;
//!     tls.flush_tls()?;
//!     Ok(tls.security_level())
//! });
//!
//! let client_config = TlsClientConfig::no_verification()?;
//! let mut tls = TlsStream::client(TcpStream::connect(addr)?, &client_config)?;
//! tls.complete_handshake()?;
//! assert_eq!(tls.security_level(), Some(SecurityLevel::Encrypted));
//! tls.write_plain(b"hello")?;
//! let mut buf = [0u8; 5];
//! let mut got = 0;
//! while got < 5 {
//!     got += tls.read_plain(&mut buf[got..])?;
//! }
//! assert_eq!(&buf, b"hello");
//! assert_eq!(server.join().unwrap()?, Some(SecurityLevel::Encrypted));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use peng3dnet_core::{SecurityLevel, TlsFacts};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How many bytes of unsent data a [`TlsStream`] buffers in rustls: plaintext
/// written before the handshake completes, and encrypted records not yet
/// written to the socket. [`TlsStream::write_plain`] returns `WouldBlock` when
/// this is full.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// Which PEM input an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemItem {
    /// A certificate chain (the server's or the client's own).
    CertificateChain,
    /// A private key.
    PrivateKey,
    /// The CA certificates that verify the peer.
    CaCertificates,
}

impl fmt::Display for PemItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemItem::CertificateChain => "certificate chain",
            PemItem::PrivateKey => "private key",
            PemItem::CaCertificates => "CA certificates",
        })
    }
}

/// Why a TLS configuration or connection could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// PEM input did not parse.
    Pem {
        /// What the input should have held.
        item: PemItem,
        /// What the PEM parser said.
        source: rustls_pki_types::pem::Error,
    },
    /// PEM input held no item of the kind needed (no `CERTIFICATE`, no key).
    Missing(PemItem),
    /// A CA certificate was not accepted as a trust anchor.
    BadCaCertificate(rustls::Error),
    /// The certificate verifier could not be built (for example, no usable CA).
    Verifier(VerifierBuilderError),
    /// rustls refused the configuration (a key it cannot use, a key that does
    /// not match the certificate, no usable protocol version).
    Config(rustls::Error),
    /// The server name to verify is neither a DNS name nor an IP address.
    InvalidServerName(String),
    /// A client certificate was added to a configuration that does not verify
    /// the server. Refused: the server would report both certificates verified
    /// ([`SecurityLevel::BothAuth`]) for a connection whose client verified
    /// nothing.
    ClientCertWithoutVerification,
    /// The peer does not speak TLS: what it sent during the TLS handshake
    /// is not a TLS record (a peng3dnet server without TLS sends its plain
    /// `hello` at once).
    NotTls(rustls::Error),
    /// The TLS handshake failed, with rustls's reason: a certificate that
    /// verification rejected says why (`InvalidCertificate(UnknownIssuer)`,
    /// `NotValidForName`, `Expired`, `Other(..CaUsedAsEndEntity)` for a CA
    /// certificate used as the server's own...), an alert the peer sent
    /// names what it refused (`AlertReceived(CertificateRequired)`...).
    Handshake(rustls::Error),
}

impl TlsError {
    /// The error of a TLS session that failed with `e`: [`NotTls`](Self::NotTls)
    /// when the peer's bytes were not TLS records at all, else
    /// [`Handshake`](Self::Handshake).
    pub fn from_session(e: rustls::Error) -> TlsError {
        use rustls::InvalidMessage;
        match e {
            // A plain peng3dnet frame starts with its length: not a TLS
            // content type, or a record length no TLS peer sends.
            rustls::Error::InvalidMessage(
                InvalidMessage::InvalidContentType
                | InvalidMessage::MessageTooLarge
                | InvalidMessage::UnknownProtocolVersion,
            ) => TlsError::NotTls(e),
            e => TlsError::Handshake(e),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::ReadFile { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem { item, source } => write!(f, "invalid PEM for the {item}: {source}"),
            TlsError::Missing(item) => write!(f, "no {item} found in the PEM input"),
            TlsError::BadCaCertificate(e) => write!(f, "CA certificate not accepted: {e}"),
            TlsError::Verifier(e) => write!(f, "cannot build the certificate verifier: {e}"),
            TlsError::Config(e) => write!(f, "TLS configuration refused: {e}"),
            TlsError::InvalidServerName(name) => write!(f, "invalid server name {name:?}"),
            TlsError::ClientCertWithoutVerification => {
                f.write_str("a client certificate needs a configuration that verifies the server")
            }
            TlsError::NotTls(e) => write!(
                f,
                "the peer does not speak TLS (it sent data that is not TLS: {e}); \
                 is it a server without TLS?"
            ),
            TlsError::Handshake(rustls::Error::InvalidCertificate(c)) => {
                write!(
                    f,
                    "TLS handshake failed: the peer's certificate was rejected: {c:?}"
                )
            }
            TlsError::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::ReadFile { source, .. } => Some(source),
            TlsError::Pem { source, .. } => Some(source),
            TlsError::BadCaCertificate(e)
            | TlsError::Config(e)
            | TlsError::NotTls(e)
            | TlsError::Handshake(e) => Some(e),
            TlsError::Verifier(e) => Some(e),
            TlsError::Missing(_)
            | TlsError::InvalidServerName(_)
            | TlsError::ClientCertWithoutVerification => None,
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        let kind = match &e {
            TlsError::ReadFile { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_certs(pem: &[u8], item: PemItem) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { item, source })?;
    if certs.is_empty() {
        return Err(TlsError::Missing(item));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing(PemItem::PrivateKey),
        source => TlsError::Pem {
            item: PemItem::PrivateKey,
            source,
        },
    })
}

fn parse_roots(pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pem, PemItem::CaCertificates)? {
        roots.add(cert).map_err(TlsError::BadCaCertificate)?;
    }
    Ok(Arc::new(roots))
}

/// The server's TLS configuration: its certificate chain and private key, and
/// optionally a client CA, in which case every client must present a
/// certificate that CA signed.
#[derive(Clone, Debug)]
pub struct TlsServerConfig {
    config: Arc<ServerConfig>,
    requires_client_cert: bool,
}

impl TlsServerConfig {
    /// A configuration from PEM text: `chain_pem` holds the server's
    /// certificate first and then any intermediates, `key_pem` its private key
    /// (PKCS#8, PKCS#1 or SEC1). With `client_ca_pem` (one or more CA
    /// certificates), clients must present a certificate signed by one of
    /// them; without it, no client certificate is asked for.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<TlsServerConfig, TlsError> {
        let chain = parse_certs(chain_pem, PemItem::CertificateChain)?;
        let key = parse_key(key_pem)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let (builder, requires_client_cert) = match client_ca_pem {
            Some(ca_pem) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(parse_roots(ca_pem)?, provider)
                        .build()
                        .map_err(TlsError::Verifier)?;
                (builder.with_client_cert_verifier(verifier), true)
            }
            None => (builder.with_no_client_auth(), false),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(TlsError::Config)?;
        Ok(TlsServerConfig {
            config: Arc::new(config),
            requires_client_cert,
        })
    }

    /// [`from_pem`](Self::from_pem) with the PEM text read from files.
    pub fn from_pem_files(
        chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
        client_ca_path: Option<&Path>,
    ) -> Result<TlsServerConfig, TlsError> {
        let chain = read_file(chain_path.as_ref())?;
        let key = read_file(key_path.as_ref())?;
        let ca = client_ca_path.map(read_file).transpose()?;
        TlsServerConfig::from_pem(&chain, &key, ca.as_deref())
    }

    /// The rustls configuration, for callers that drive rustls themselves.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn requires_client_cert(&self) -> bool {
        self.requires_client_cert
    }
}

/// Accepts any server certificate, but still checks that the server signed the
/// handshake with the key of the certificate it sent (so the session keys are
/// bound to that certificate, whatever it is).
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Hands the client's certificate to rustls when the server asks for one, and
/// records that it did. One per connection (see [`TlsStream::client`]).
#[derive(Debug)]
struct RecordingClientCert {
    key: Arc<CertifiedKey>,
    presented: Arc<AtomicBool>,
}

impl ResolvesClientCert for RecordingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // rustls sends an empty Certificate when the key cannot sign with any
        // scheme the server offered; record only a certificate really sent.
        self.key.key.choose_scheme(sigschemes)?;
        self.presented.store(true, Ordering::Relaxed);
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client's TLS configuration: whether and how the server is verified, the
/// name it is verified against, and optionally a client certificate.
#[derive(Clone, Debug)]
pub struct TlsClientConfig {
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    verifies_server: bool,
    server_name: ServerName<'static>,
    client_key: Option<Arc<CertifiedKey>>,
    config: Arc<ClientConfig>,
}

impl TlsClientConfig {
    fn build(
        provider: Arc<CryptoProvider>,
        verifier: Arc<dyn ServerCertVerifier>,
        verifies_server: bool,
        server_name: ServerName<'static>,
    ) -> Result<TlsClientConfig, TlsError> {
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(TlsClientConfig {
            provider,
            verifier,
            verifies_server,
            server_name,
            client_key: None,
            config: Arc::new(config),
        })
    }

    /// Encrypts, but accepts any server certificate: protects against passive
    /// eavesdroppers only. Connections report [`SecurityLevel::Encrypted`].
    ///
    /// The server's handshake signature is still checked against the
    /// certificate it sent. No server name is sent (no SNI).
    pub fn no_verification() -> Result<TlsClientConfig, TlsError> {
        let provider = provider();
        let verifier = Arc::new(AcceptAnyServerCert {
            provider: provider.clone(),
        });
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        TlsClientConfig::build(provider, verifier, false, name)
    }

    /// Verifies the server's certificate against the CA certificates in
    /// `ca_pem` and its name against `server_name` (a DNS name, checked against
    /// the certificate's DNS names, or an IP address, checked against its IP
    /// addresses). Connections report [`SecurityLevel::ServerAuth`].
    pub fn verify(ca_pem: &[u8], server_name: &str) -> Result<TlsClientConfig, TlsError> {
        let name = ServerName::try_from(server_name)
            .map_err(|_| TlsError::InvalidServerName(server_name.to_owned()))?
            .to_owned();
        let provider = provider();
        let roots = parse_roots(ca_pem)?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(TlsError::Verifier)?;
        TlsClientConfig::build(provider, verifier, true, name)
    }

    /// [`verify`](Self::verify) with the CA certificates read from a file.
    pub fn verify_file(
        ca_path: impl AsRef<Path>,
        server_name: &str,
    ) -> Result<TlsClientConfig, TlsError> {
        TlsClientConfig::verify(&read_file(ca_path.as_ref())?, server_name)
    }

    /// Adds a client certificate (`chain_pem`, the client's certificate first)
    /// and its private key, presented when the server asks for one. A
    /// connection whose server asked for and got it reports
    /// [`SecurityLevel::BothAuth`].
    ///
    /// Fails with [`TlsError::ClientCertWithoutVerification`] on a
    /// [`no_verification`](Self::no_verification) configuration: a client
    /// that does not verify the server never presents a certificate, so that
    /// no server counts such a connection as both-authenticated.
    ///
    /// Session resumption is turned off, so that every handshake shows
    /// whether the certificate was asked for (a resumed TLS 1.3 session does
    /// not send it again).
    pub fn with_client_cert(
        mut self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<TlsClientConfig, TlsError> {
        if !self.verifies_server {
            return Err(TlsError::ClientCertWithoutVerification);
        }
        let chain = parse_certs(chain_pem, PemItem::CertificateChain)?;
        let key = parse_key(key_pem)?;
        let key =
            Arc::new(CertifiedKey::from_der(chain, key, &self.provider).map_err(TlsError::Config)?);
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone())
            .with_client_cert_resolver(Arc::new(RecordingClientCert {
                key: key.clone(),
                presented: Arc::new(AtomicBool::new(false)),
            }));
        config.resumption = Resumption::disabled();
        self.client_key = Some(key);
        self.config = Arc::new(config);
        Ok(self)
    }

    /// [`with_client_cert`](Self::with_client_cert) with the PEM text read
    /// from files.
    pub fn with_client_cert_files(
        self,
        chain_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<TlsClientConfig, TlsError> {
        let chain = read_file(chain_path.as_ref())?;
        let key = read_file(key_path.as_ref())?;
        self.with_client_cert(&chain, &key)
    }

    /// The rustls configuration, for callers that drive rustls themselves.
    /// [`TlsStream::client`] uses a per-connection copy of it that records
    /// whether the client certificate was presented; a connection made
    /// directly from this configuration cannot tell.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name the server is verified against (a placeholder address, neither
    /// sent nor checked, for [`no_verification`](Self::no_verification)).
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Whether the server's certificate and name are verified.
    pub fn verifies_server(&self) -> bool {
        self.verifies_server
    }

    /// Whether a client certificate is configured.
    pub fn has_client_cert(&self) -> bool {
        self.client_key.is_some()
    }
}

/// What a [`TlsStream`] knows about its configuration, to derive its facts.
#[derive(Debug)]
enum Role {
    Client {
        verifies_server: bool,
        presented: Option<Arc<AtomicBool>>,
    },
    Server {
        requires_client_cert: bool,
    },
}

/// A socket carrying a TLS connection (client or server), driven by the
/// caller.
///
/// On a non-blocking socket (the server's mio loop), every method returns
/// [`io::ErrorKind::WouldBlock`] only when the socket itself did, so an
/// edge-triggered loop is woken again. After each call, when
/// [`wants_write`](Self::wants_write) is true, wait for the socket to be
/// writable and call [`flush_tls`](Self::flush_tls); when it is readable, call
/// [`read_plain`](Self::read_plain) until it returns `WouldBlock`.
///
/// On a blocking socket (the client), `read_plain` blocks until plaintext
/// arrives and `write_plain` until its records are written; call
/// [`complete_handshake`](Self::complete_handshake) first to learn the
/// security level before sending.
///
/// Any error other than `WouldBlock` and `Interrupted` means the connection is
/// broken; a TLS error (a bad certificate, an alert from the peer) comes as
/// [`io::ErrorKind::InvalidData`] wrapping the [`rustls::Error`].
#[derive(Debug)]
pub struct TlsStream<S> {
    sock: S,
    conn: Connection,
    role: Role,
    failed: Option<rustls::Error>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: Read + Write> TlsStream<S> {
    fn new(sock: S, mut conn: Connection, role: Role) -> TlsStream<S> {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        TlsStream {
            sock,
            conn,
            role,
            failed: None,
        }
    }

    /// The server's end of a connection accepted on `sock`. The handshake
    /// runs as the stream is read.
    pub fn server(sock: S, config: &TlsServerConfig) -> Result<TlsStream<S>, TlsError> {
        let conn = ServerConnection::new(config.rustls_config()).map_err(TlsError::Config)?;
        Ok(TlsStream::new(
            sock,
            conn.into(),
            Role::Server {
                requires_client_cert: config.requires_client_cert,
            },
        ))
    }

    /// The client's end of a connection on `sock`, connected to the server
    /// that `config` names. The `ClientHello` is queued at once and sent by the
    /// first read, write or flush.
    pub fn client(sock: S, config: &TlsClientConfig) -> Result<TlsStream<S>, TlsError> {
        let (rustls_config, presented) = match &config.client_key {
            Some(key) => {
                let presented = Arc::new(AtomicBool::new(false));
                let mut own = (*config.config).clone();
                own.client_auth_cert_resolver = Arc::new(RecordingClientCert {
                    key: key.clone(),
                    presented: presented.clone(),
                });
                (Arc::new(own), Some(presented))
            }
            None => (config.config.clone(), None),
        };
        let conn = ClientConnection::new(rustls_config, config.server_name.clone())
            .map_err(TlsError::Config)?;
        Ok(TlsStream::new(
            sock,
            conn.into(),
            Role::Client {
                verifies_server: config.verifies_server,
                presented,
            },
        ))
    }

    /// Reads decrypted bytes into `buf`, reading and processing TLS records
    /// from the socket as needed (handshake messages included, answering them
    /// first).
    ///
    /// Returns `Ok(0)` only when the peer closed the TLS session cleanly
    /// (`close_notify`) and everything before it was read, or when `buf` is
    /// empty. A socket EOF without `close_notify` is
    /// [`io::ErrorKind::UnexpectedEof`] (once all plaintext was read).
    /// `WouldBlock` when the socket has nothing more and no plaintext is
    /// available, also during the handshake.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            // Plaintext already decrypted comes first, even after an error:
            // it arrived before the bad record.
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if let Some(e) = &self.failed {
                return Err(tls_error(e.clone()));
            }
            // An EOF makes the reader report `UnexpectedEof` (or `Ok(0)`
            // after `close_notify`) on the next turn.
            self.pull()?;
        }
    }

    /// Drives the handshake until it is complete, without consuming any
    /// plaintext (application data that arrives with the handshake stays
    /// buffered for [`read_plain`](Self::read_plain)). `Ok(())` at once when
    /// the handshake is already done; `WouldBlock` on a non-blocking socket
    /// that has nothing more to read. On a non-blocking socket, call
    /// `read_plain` after it returns `Ok(())` even without a new readiness
    /// event: the socket may have been drained into rustls' buffer.
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if let Some(e) = &self.failed {
                return Err(tls_error(e.clone()));
            }
            if !self.pull()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
        self.flush_tls().map(|_| ())
    }

    /// One read from the socket, processed. Pending records are written
    /// first (the peer may wait for them) and after (answers, alerts), as far
    /// as the socket takes them; write errors are left for
    /// [`flush_tls`](Self::flush_tls) to report, so that what the peer sent
    /// before it went away can still be read. `Ok(false)` on EOF.
    fn pull(&mut self) -> io::Result<bool> {
        let _ = self.flush_tls();
        let n = loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if let Err(e) = self.conn.process_new_packets() {
            // rustls queued an alert for the peer; send what the socket takes.
            let _ = self.flush_tls();
            self.failed = Some(e.clone());
            return Err(tls_error(e));
        }
        let _ = self.flush_tls();
        Ok(n > 0)
    }

    /// Hands plaintext to rustls to encrypt (buffered until the handshake
    /// completes) and tries to write the resulting records. Returns how many
    /// bytes of `buf` were taken; `Ok(0)` only for an empty `buf`.
    ///
    /// At most [`BUFFER_LIMIT`] bytes are buffered: when the buffer is full
    /// and the socket takes nothing, `WouldBlock`. Before the handshake
    /// completes, records cannot be written, so more than `BUFFER_LIMIT`
    /// bytes written then also give `WouldBlock` (on a blocking socket too:
    /// use [`complete_handshake`](Self::complete_handshake) first).
    pub fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = &self.failed {
            return Err(tls_error(e.clone()));
        }
        let mut n = self.conn.writer().write(buf)?;
        if n == 0 {
            // Full: make room by writing records out, then try once more.
            if !self.flush_tls()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            n = self.conn.writer().write(buf)?;
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        self.flush_tls()?;
        Ok(n)
    }

    /// Writes pending TLS records to the socket. `Ok(true)` when nothing is
    /// pending any more, `Ok(false)` when the socket would block first.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match self.sock.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues a `close_notify` alert (the peer's reads then end with `Ok(0)`)
    /// and writes what the socket takes; [`wants_write`](Self::wants_write)
    /// tells whether the rest needs [`flush_tls`](Self::flush_tls). Write
    /// errors are ignored: the connection is ending.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_tls();
    }
}

impl<S> TlsStream<S> {
    /// Whether TLS records wait to be written: wait for writability and call
    /// [`flush_tls`](Self::flush_tls).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// What the completed handshake verified; `None` until the handshake is
    /// complete, and after a TLS error.
    ///
    /// A client's `client_cert_sent` is true when rustls asked this
    /// connection's certificate resolver for the certificate (the server
    /// asked for one) and the key could sign with a scheme the server
    /// offered; a client that does not verify the server never has one
    /// ([`TlsClientConfig::with_client_cert`]). (A [`TlsServerConfig`] asks
    /// for a client certificate only when it requires one.) A server's
    /// `client_cert_verified` is true when its configuration requires client
    /// certificates and the client sent one: the verifier is mandatory then,
    /// so a completed handshake with a certificate means it was verified.
    pub fn handshake_facts(&self) -> Option<TlsFacts> {
        if self.conn.is_handshaking() || self.failed.is_some() {
            return None;
        }
        Some(match &self.role {
            Role::Client {
                verifies_server,
                presented,
            } => TlsFacts::Client {
                server_verified: *verifies_server,
                client_cert_sent: *verifies_server
                    && presented
                        .as_ref()
                        .is_some_and(|p| p.load(Ordering::Relaxed)),
            },
            Role::Server {
                requires_client_cert,
            } => TlsFacts::Server {
                client_cert_verified: *requires_client_cert
                    && self.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            },
        })
    }

    /// The security level the handshake established, from its
    /// [`handshake_facts`](Self::handshake_facts) by the core's one table
    /// ([`TlsFacts::security_level`]); `None` until the handshake is
    /// complete, and after a TLS error (such as a TLS 1.3 server rejecting the
    /// client's certificate after the client's handshake completed).
    pub fn security_level(&self) -> Option<SecurityLevel> {
        self.handshake_facts().map(TlsFacts::security_level)
    }

    /// The rustls connection (peer certificates, negotiated version and
    /// cipher suite).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.sock
    }

    /// The socket, mutably (to register it with mio). Reading or writing it
    /// directly corrupts the TLS stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// The socket, and the rustls connection with whatever it still buffers.
    pub fn into_parts(self) -> (S, Connection) {
        (self.sock, self.conn)
    }
}
