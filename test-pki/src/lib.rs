//! Certificates for the TLS tests of `peng3dnet-std` and `peng3dnet-tests`,
//! made fresh with `rcgen` (ECDSA P-256, which both rustls and embedded-tls
//! take).
//!
//! ```
//! let pki = peng3dnet_test_pki::Pki::generate(&["localhost"]);
//! assert!(pki.server.pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! assert!(!pki.ca.der.is_empty());
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate in DER and PEM, with its private key (PKCS#8) in both.
pub struct Cert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: String,
    /// The private key, DER.
    pub key_der: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: String,
}

/// A CA with a server certificate, an expired server certificate and a
/// client certificate; another CA with a client certificate of its own.
pub struct Pki {
    /// The CA the server and client certificates chain to.
    pub ca: Cert,
    /// A CA nobody trusts.
    pub other_ca: Cert,
    /// A server certificate (`serverAuth`) for the names given.
    pub server: Cert,
    /// The same, valid only in the year 2000.
    pub expired_server: Cert,
    /// A client certificate (`clientAuth`).
    pub client: Cert,
    /// A client certificate signed by `other_ca`.
    pub stranger: Cert,
}

impl Pki {
    /// A new set, the server certificates for `server_names` (DNS names or IP
    /// addresses).
    pub fn generate(server_names: &[&str]) -> Pki {
        let (ca1, ca_cert) = ca("peng3dnet test CA");
        let (ca2, other_ca) = ca("some other CA");
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        Pki {
            server: leaf(&ca1, server_names, server.clone(), false),
            expired_server: leaf(&ca1, server_names, server, true),
            client: leaf(&ca1, &[], client.clone(), false),
            stranger: leaf(&ca2, &[], client, false),
            ca: ca_cert,
            other_ca,
        }
    }
}

fn ca(name: &str) -> (CertifiedIssuer<'static, KeyPair>, Cert) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let (key_der, key_pem) = (key.serialize_der(), key.serialize_pem());
    let issuer = CertifiedIssuer::self_signed(params, key).unwrap();
    let cert = Cert {
        der: issuer.der().to_vec(),
        pem: issuer.pem(),
        key_der,
        key_pem,
    };
    (issuer, cert)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> Cert {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "peng3dnet test");
    params.extended_key_usages = vec![usage];
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &**issuer).unwrap();
    Cert {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}
