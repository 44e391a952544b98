//! Mesh TLS with the SPIFFE certificates the control plane's CA issues.
//!
//! Both sides verify the peer's chain up to the mesh CA. A mesh certificate
//! names its workload only in a URI SAN (`spiffe://<td>/ns/<ns>/sa/<sa>`),
//! not in a DNS name, so the client checks that SAN instead of a host name,
//! and the server reads the peer's identity from it for authorization.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::client::Credentials;

/// The TLS settings of one certificate: a server side for the inbound
/// listener and client sides (HTTP/1.1, HTTP/2 and opaque TCP by ALPN) for
/// upstreams.
#[derive(Clone)]
pub struct MeshTls {
    /// Inbound: a client certificate from the mesh CA is required.
    pub server: Arc<ServerConfig>,
    /// Outbound over HTTP/1.1.
    pub client_h1: Arc<ClientConfig>,
    /// Outbound over HTTP/2.
    pub client_h2: Arc<ClientConfig>,
    /// Outbound opaque TCP ([`TCP_ALPN`]).
    pub client_tcp: Arc<ClientConfig>,
}

/// The ALPN protocol of an opaque TCP stream between proxies: the inbound
/// side hands the connection's bytes to the application as they are instead
/// of reading HTTP from them (Linkerd marks its opaque transport likewise).
pub const TCP_ALPN: &[u8] = b"meshc-tcp";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors in `ca_pem`.
pub fn roots(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("reading the CA certificate")?)
            .context("adding the CA certificate")?;
    }
    if roots.is_empty() {
        return Err(anyhow!("no CA certificate in the PEM"));
    }
    Ok(roots)
}

impl MeshTls {
    /// Settings whose certificate, for `spiffe_id`, comes from a CA of
    /// their own that only they trust: a peer from outside the mesh (the
    /// tests' foreign client, a stalled upstream's caller).
    pub fn self_issued(spiffe_id: &str) -> Result<MeshTls> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
        leaf.subject_alt_names = vec![rcgen::SanType::URI(spiffe_id.try_into()?)];
        let leaf = leaf.signed_by(&key, &issuer)?;
        let credentials = Credentials {
            certificate_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
            not_after: 0,
        };
        MeshTls::new(&ca_cert.pem(), &credentials)
    }

    /// TLS settings for `credentials`, trusting `ca_pem`.
    pub fn new(ca_pem: &str, credentials: &Credentials) -> Result<MeshTls> {
        let roots = Arc::new(roots(ca_pem)?);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(credentials.certificate_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("reading the proxy certificate")?;
        let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())
            .context("reading the proxy key")?;
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("building the client verifier")?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .context("the proxy certificate")?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), TCP_ALPN.to_vec()];
        let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>> {
            let mut c = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SpiffeVerifier {
                    roots: roots.clone(),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .context("the proxy certificate")?;
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(MeshTls {
            server: Arc::new(server),
            client_h1: client(b"http/1.1")?,
            client_h2: client(b"h2")?,
            client_tcp: client(TCP_ALPN)?,
        })
    }
}

/// Accepts a server certificate chained to the mesh CA that carries a SPIFFE
/// identity, whatever name the client dialled (endpoints are addresses).
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if spiffe_id(end_entity).is_none() {
            return Err(rustls::Error::General(
                "the peer certificate has no SPIFFE identity".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The `spiffe://` URI SAN of a certificate (a URI SAN only: a DNS name
/// spelled like one is not an identity).
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// The subject alternative names of a certificate: DNS names, URIs and IP
/// addresses, as text.
pub fn subject_alt_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::URI(u) => Some(u.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether a client certificate is one of those pinned by a gateway
/// server: its SHA-256 digest among `hashes` (hex, plain or with colons,
/// either case), or its public key's (the DER SubjectPublicKeyInfo) among
/// `spkis` (base64), as Envoy checks `verify_certificate_hash` and
/// `verify_certificate_spki`. With neither list, every certificate is.
pub fn pinned(cert: &CertificateDer<'_>, hashes: &[String], spkis: &[String]) -> bool {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    if hashes.is_empty() && spkis.is_empty() {
        return true;
    }
    let digest = Sha256::digest(cert.as_ref());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let by_hash = hashes
        .iter()
        .any(|h| h.replace(':', "").eq_ignore_ascii_case(&hex));
    by_hash
        || x509_parser::parse_x509_certificate(cert.as_ref()).is_ok_and(|(_, parsed)| {
            let spki = base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(parsed.tbs_certificate.subject_pki.raw));
            spkis.iter().any(|s| s.trim() == spki)
        })
}

/// The authorization principal (`<td>/ns/<ns>/sa/<sa>`) of a SPIFFE id.
pub fn principal(spiffe_id: &str) -> Option<String> {
    spiffe_id.strip_prefix("spiffe://").map(str::to_string)
}
