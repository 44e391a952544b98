//! TLS termination on a gateway's servers (`tls.mode` `SIMPLE`, `MUTUAL`,
//! `OPTIONAL_MUTUAL`, `ISTIO_MUTUAL`).
//!
//! A policy repository holds no keys, so a server's certificate comes from
//! the gateway's host:
//! - `credentialName: NAME`: the Secret `NAME` in the credentials directory
//!   (`--gateway-credentials`), laid out as Kubernetes mounts a Secret:
//!   `DIR/NAME/tls.crt` and `tls.key` (or Istio's generic keys `cert` and
//!   `key`). For mutual TLS, the CA is `ca.crt` (or `cacert`) in the Secret
//!   `caCertCredentialName`, else in `NAME` itself, else in `NAME-cacert`,
//!   as Istio looks for it.
//! - `serverCertificate`, `privateKey`, `caCertificates`: PEM files.
//! - `ISTIO_MUTUAL`: the proxy's own mesh certificate, and clients must
//!   present one from the mesh CA.
//!
//! Settings are built once per server and built again when a file they were
//! read from changes (its modification time or size), so a rotated
//! certificate is served from the next handshake without a restart, as
//! Istio's SDS does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use meshc_ir::Termination;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::tls::{MeshTls, roots};

/// Settings kept at the most (a gateway has a few servers; more means
/// configs have come and gone).
const MAX_CACHED: usize = 256;

/// How a file looked when settings were read from it.
type Stamp = (PathBuf, Option<(SystemTime, u64)>);

struct Cached {
    stamps: Vec<Stamp>,
    config: Arc<ServerConfig>,
}

/// The gateway's credentials directory and the settings built from it.
pub(crate) struct GatewayCredentials {
    dir: Option<PathBuf>,
    cache: Mutex<HashMap<String, Cached>>,
}

/// The files one server's settings are read from.
struct Files {
    certificate: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    /// Revocation lists for client certificates: `caCrl`, else `ca.crl`
    /// beside a CA that came from a Secret.
    crl: Option<PathBuf>,
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        meta.and_then(|m| Some((m.modified().ok()?, m.len()))),
    )
}

impl GatewayCredentials {
    pub(crate) fn new(dir: Option<PathBuf>) -> GatewayCredentials {
        GatewayCredentials {
            dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The server-side TLS settings of a server in `mode` with
    /// `termination`; `mesh`: the proxy's mesh TLS, for `ISTIO_MUTUAL`.
    pub(crate) fn config(
        &self,
        mode: &str,
        t: &Termination,
        mesh: Option<&MeshTls>,
    ) -> Result<Arc<ServerConfig>> {
        let mode = mode.to_ascii_uppercase();
        if mode == "ISTIO_MUTUAL" {
            return mesh
                .map(|m| m.server.clone())
                .ok_or_else(|| anyhow!("ISTIO_MUTUAL: the proxy has no mesh certificate yet"));
        }
        let key = serde_json::to_string(&(&mode, t)).expect("the IR serialises");
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key)
            && c.stamps.iter().all(|(p, s)| stamp(p).1 == *s)
        {
            return Ok(c.config.clone());
        }
        let mutual = mode == "MUTUAL" || mode == "OPTIONAL_MUTUAL";
        let files = self.files(t, mutual)?;
        let mut stamps = vec![stamp(&files.certificate), stamp(&files.key)];
        stamps.extend(files.ca.as_deref().map(stamp));
        stamps.extend(files.crl.as_deref().map(stamp));
        let config = Arc::new(build(&mode, t, &files)?);
        // Servers of configs long gone are not kept for ever.
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            key,
            Cached {
                stamps,
                config: config.clone(),
            },
        );
        Ok(config)
    }

    /// The Secret `name`'s directory.
    fn secret(&self, name: &str) -> Result<PathBuf> {
        let Some(dir) = &self.dir else {
            bail!(
                "the server's credential `{name}` is a Secret, and this proxy has no \
                 credentials directory (--gateway-credentials)"
            );
        };
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            bail!("`{name}` is not a Secret name");
        }
        Ok(dir.join(name))
    }

    fn files(&self, t: &Termination, mutual: bool) -> Result<Files> {
        let first =
            |dir: &Path, names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
        let ca_in = |name: &str| -> Result<Option<PathBuf>> {
            Ok(first(&self.secret(name)?, &["ca.crt", "cacert"]))
        };
        let (certificate, key, mut ca) = match &t.credential_name {
            Some(name) => {
                let dir = self.secret(name)?;
                let missing = || {
                    anyhow!(
                        "the Secret `{name}` ({}) has no tls.crt and tls.key (or cert and key)",
                        dir.display()
                    )
                };
                let certificate = first(&dir, &["tls.crt", "cert"]).ok_or_else(missing)?;
                let key = first(&dir, &["tls.key", "key"]).ok_or_else(missing)?;
                let ca = if mutual && t.ca_credential_name.is_none() {
                    match ca_in(name)? {
                        Some(ca) => Some(ca),
                        None => ca_in(&format!("{name}-cacert"))?,
                    }
                } else {
                    None
                };
                (certificate, key, ca)
            }
            None => match (&t.server_certificate, &t.private_key) {
                (Some(c), Some(k)) => (
                    PathBuf::from(c),
                    PathBuf::from(k),
                    t.ca_certificates.as_ref().map(PathBuf::from),
                ),
                _ => bail!(
                    "the server names no certificate: set credentialName, or \
                     serverCertificate and privateKey"
                ),
            },
        };
        if mutual && let Some(name) = &t.ca_credential_name {
            ca = Some(ca_in(name)?.ok_or_else(|| {
                anyhow!("the Secret `{name}` has no ca.crt (or cacert) for client certificates")
            })?);
        }
        if mutual && ca.is_none() {
            bail!(
                "mutual TLS needs a CA for client certificates: ca.crt in the Secret, \
                 caCertCredentialName, or caCertificates"
            );
        }
        // A CA from a Secret may come with its revocation list (`ca.crl`,
        // as Istio reads it); `caCrl` names a file instead.
        let crl = match &t.ca_crl {
            Some(path) => Some(PathBuf::from(path)),
            None if t.credential_name.is_some() || t.ca_credential_name.is_some() => ca
                .as_deref()
                .and_then(Path::parent)
                .map(|d| d.join("ca.crl"))
                .filter(|p| p.is_file()),
            None => None,
        };
        Ok(Files {
            certificate,
            key,
            ca: ca.filter(|_| mutual),
            crl: crl.filter(|_| mutual),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Server settings from the files: the versions the server allows, its
/// certificate, and for mutual TLS the client check.
fn build(mode: &str, t: &Termination, files: &Files) -> Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.certificate)?)
            .collect::<Result<_, _>>()
            .with_context(|| format!("the certificates in {}", files.certificate.display()))?;
    if chain.is_empty() {
        bail!("no certificate in {}", files.certificate.display());
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .with_context(|| format!("the key in {}", files.key.display()))?;
    let provider = provider(t)?;
    let mut versions = versions(t)?;
    // `cipherSuites` may leave no TLS 1.2 suite: then TLS 1.3 only.
    let tls12 = |s: &rustls::SupportedCipherSuite| s.version() == &rustls::version::TLS12;
    if !provider.cipher_suites.iter().any(tls12) {
        versions.retain(|v| v.version != rustls::ProtocolVersion::TLSv1_2);
        if versions.is_empty() {
            bail!(
                "none of cipherSuites ({}) is a TLS 1.2 suite the proxy supports ({}), and TLS 1.3 is not allowed",
                t.cipher_suites.join(", "),
                TLS12_SUITES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let provider = Arc::new(provider);
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match &files.ca {
        Some(ca) => {
            let pem = String::from_utf8(read(ca)?)
                .with_context(|| format!("{} is not PEM", ca.display()))?;
            let roots = Arc::new(roots(&pem).with_context(|| ca.display().to_string())?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if let Some(crl) = &files.crl {
                let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&read(crl)?)
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("the revocation lists in {}", crl.display()))?;
                if crls.is_empty() {
                    bail!("no revocation list in {}", crl.display());
                }
                verifier = verifier.with_crls(crls);
            }
            let verifier = if mode == "OPTIONAL_MUTUAL" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS 1.2 cipher suites the proxy has (ring's), by their OpenSSL names,
/// as Envoy's `cipherSuites` lists them.
const TLS12_SUITES: &[(&str, rustls::CipherSuite)] = {
    use rustls::CipherSuite as S;
    &[
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
};

/// The key-exchange groups the proxy has, by the names `ecdhCurves` uses.
const GROUPS: &[(&[&str], rustls::NamedGroup)] = {
    use rustls::NamedGroup as G;
    &[
        (&["X25519"], G::X25519),
        (&["P-256", "secp256r1", "prime256v1"], G::secp256r1),
        (&["P-384", "secp384r1"], G::secp384r1),
    ]
};

/// ring's provider, narrowed to the TLS 1.2 suites of `cipherSuites` (an
/// OpenSSL name, or the IANA one; `[A|B]` groups count as their members;
/// TLS 1.3 suites are kept, as Envoy cannot configure them either) and the
/// groups of `ecdhCurves`. Names the proxy does not have are left out with
/// a warning (Envoy's list has CBC suites rustls does not implement).
fn provider(t: &Termination) -> Result<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let names: Vec<&str> = t
            .cipher_suites
            .iter()
            .flat_map(|s| {
                s.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split('|')
            })
            .map(str::trim)
            .collect();
        let suite = |name: &str| {
            TLS12_SUITES
                .iter()
                .find(|(n, s)| *n == name || format!("{s:?}") == name)
                .map(|(_, s)| *s)
        };
        let unknown: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| suite(n).is_none())
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(
                suites = %unknown.join(", "),
                "cipherSuites names suites the proxy does not have; they are left out"
            );
        }
        let wanted: Vec<rustls::CipherSuite> = names.iter().filter_map(|n| suite(n)).collect();
        p.cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13 || wanted.contains(&s.suite()));
    }
    if !t.ecdh_curves.is_empty() {
        let wanted: Vec<rustls::NamedGroup> = t
            .ecdh_curves
            .iter()
            .filter_map(|c| {
                let group = GROUPS.iter().find(|(names, _)| names.contains(&c.trim()));
                if group.is_none() {
                    tracing::warn!(curve = %c, "ecdhCurves names a group the proxy does not have; it is left out");
                }
                group.map(|(_, g)| *g)
            })
            .collect();
        p.kx_groups.retain(|g| wanted.contains(&g.name()));
        if p.kx_groups.is_empty() {
            bail!(
                "none of ecdhCurves ({}) is a group the proxy supports (X25519, P-256, P-384)",
                t.ecdh_curves.join(", ")
            );
        }
    }
    Ok(p)
}

/// The protocol versions between `minProtocolVersion` and
/// `maxProtocolVersion`: rustls speaks TLS 1.2 and 1.3 only, so a minimum
/// below 1.2 means 1.2.
fn versions(t: &Termination) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let rank = |v: &Option<String>, default: u8| match v.as_deref() {
        None | Some("TLS_AUTO") => Ok(default),
        Some("TLSV1_0" | "TLSV1_1") => Ok(1),
        Some("TLSV1_2") => Ok(2),
        Some("TLSV1_3") => Ok(3),
        Some(other) => Err(anyhow!("unknown TLS version `{other}`")),
    };
    let (lo, hi) = (
        rank(&t.min_protocol_version, 2)?.max(2),
        rank(&t.max_protocol_version, 3)?,
    );
    if hi < 2 {
        bail!("maxProtocolVersion below TLS 1.2: the proxy speaks TLS 1.2 and 1.3 only");
    }
    let all = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)];
    let out: Vec<_> = all
        .into_iter()
        .filter(|(r, _)| (lo..=hi).contains(r))
        .map(|(_, v)| v)
        .collect();
    if out.is_empty() {
        bail!("minProtocolVersion is above maxProtocolVersion");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn termination(min: Option<&str>, max: Option<&str>) -> Termination {
        Termination {
            min_protocol_version: min.map(str::to_string),
            max_protocol_version: max.map(str::to_string),
            ..Termination::default()
        }
    }

    #[test]
    fn versions_follow_min_and_max() {
        let v = |min, max| {
            versions(&termination(min, max))
                .map(|v| v.iter().map(|v| v.version).collect::<Vec<_>>())
        };
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(v(None, None).unwrap(), vec![TLSv1_2, TLSv1_3]);
        assert_eq!(v(Some("TLSV1_0"), None).unwrap(), vec![TLSv1_2, TLSv1_3]);
        assert_eq!(v(Some("TLSV1_3"), None).unwrap(), vec![TLSv1_3]);
        assert_eq!(v(None, Some("TLSV1_2")).unwrap(), vec![TLSv1_2]);
        assert!(v(Some("TLSV1_3"), Some("TLSV1_2")).is_err());
        assert!(v(Some("SSLV3"), None).is_err());
        let e = v(None, Some("TLSV1_1")).unwrap_err().to_string();
        assert!(e.contains("1.2 and 1.3 only"), "{e}");
    }

    /// A self-signed certificate for `localhost` written where `build`
    /// reads it, and the certificate (the client's root).
    fn files(tag: &str) -> (Files, CertificateDer<'static>) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("meshc-gw-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (certificate, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&certificate, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let files = Files {
            certificate,
            key,
            ca: None,
            crl: None,
        };
        (files, c.cert.der().clone())
    }

    /// A real handshake over an in-memory pipe between `server` and a
    /// client offering only `suites` and `groups` (all when empty), TLS
    /// 1.3 too when `tls13`: the suite agreed, or `None` when it failed.
    async fn handshake(
        server: ServerConfig,
        root: CertificateDer<'static>,
        suites: &[rustls::CipherSuite],
        groups: &[rustls::NamedGroup],
        tls13: bool,
    ) -> Option<rustls::CipherSuite> {
        let mut p = rustls::crypto::ring::default_provider();
        if !suites.is_empty() {
            p.cipher_suites.retain(|s| suites.contains(&s.suite()));
        }
        if !groups.is_empty() {
            p.kx_groups.retain(|g| groups.contains(&g.name()));
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12]
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(p))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (s, c) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        let (_, c) = (s.ok()?, c.ok()?);
        c.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
    }

    #[tokio::test]
    async fn cipher_suites_and_curves_narrow_what_a_handshake_may_agree() {
        use rustls::CipherSuite as S;
        use rustls::NamedGroup as G;
        let (files, root) = files("suites");
        let server = |suites: &[&str], curves: &[&str], max: Option<&str>| {
            let t = Termination {
                cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
                ecdh_curves: curves.iter().map(|s| s.to_string()).collect(),
                ..termination(None, max)
            };
            build("SIMPLE", &t, &files)
        };
        let (aes128, aes256) = (
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        );
        // TLS 1.2 with one suite allowed: a client without it is refused.
        let one = || server(&["ECDHE-ECDSA-AES128-GCM-SHA256"], &[], Some("TLSV1_2")).unwrap();
        assert_eq!(
            handshake(one(), root.clone(), &[aes256], &[], false).await,
            None
        );
        assert_eq!(
            handshake(one(), root.clone(), &[aes256, aes128], &[], false).await,
            Some(aes128)
        );
        // Without the list, the client's first choice is taken.
        let any = server(&[], &[], Some("TLSV1_2")).unwrap();
        assert_eq!(
            handshake(any, root.clone(), &[aes256], &[], false).await,
            Some(aes256)
        );
        // An equal-preference group, and an IANA name, count as their members.
        let group = server(
            &["[ECDHE-ECDSA-CHACHA20-POLY1305|TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]"],
            &[],
            Some("TLSV1_2"),
        )
        .unwrap();
        assert_eq!(
            handshake(group, root.clone(), &[aes256], &[], false).await,
            Some(aes256)
        );
        // TLS 1.3 suites are not narrowed (Envoy cannot narrow them either):
        // only suites the proxy lacks leave TLS 1.3 alone.
        let cbc = server(&["AES128-SHA"], &[], None).unwrap();
        let tls13 = handshake(cbc, root.clone(), &[], &[], true).await;
        assert!(
            tls13.is_some_and(|s| format!("{s:?}").starts_with("TLS13_")),
            "{tls13:?}"
        );
        let cbc12 = server(&["AES128-SHA"], &[], Some("TLSV1_2"))
            .unwrap_err()
            .to_string();
        assert!(
            cbc12.contains("AES128-SHA") && cbc12.contains("TLS 1.3 is not allowed"),
            "{cbc12}"
        );
        // Curves: a client with only X25519 meets a server allowing P-256.
        let p256 = || server(&[], &["P-256"], None).unwrap();
        assert_eq!(
            handshake(p256(), root.clone(), &[], &[G::X25519], true).await,
            None
        );
        assert!(
            handshake(p256(), root.clone(), &[], &[G::secp256r1], true)
                .await
                .is_some()
        );
        let none = server(&[], &["brainpoolP256r1"], None)
            .unwrap_err()
            .to_string();
        assert!(none.contains("brainpoolP256r1"), "{none}");
    }

    #[test]
    fn a_secret_name_cannot_leave_the_directory() {
        let c = GatewayCredentials::new(Some("/creds".into()));
        for bad in ["../etc", "a/b", "", ".hidden"] {
            assert!(c.secret(bad).is_err(), "{bad}");
        }
        assert_eq!(
            c.secret("shop-cert").unwrap(),
            Path::new("/creds/shop-cert")
        );
        let none = GatewayCredentials::new(None);
        let e = none.secret("shop-cert").unwrap_err().to_string();
        assert!(e.contains("--gateway-credentials"), "{e}");
    }
}
