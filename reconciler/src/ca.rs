//! The built-in CA: issues short-lived SPIFFE certificates
//! (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) from CSRs, and the control
//! plane's own serving certificate.
//!
//! The CA key and certificate live in the data directory (`ca.key`, mode
//! 0600, and `ca.pem`) so that a restarted control plane keeps trusting the
//! certificates it issued.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// The CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    trust_domain: String,
    ttl: Duration,
}

/// An issued certificate.
pub struct Issued {
    /// Leaf, PEM.
    pub certificate_pem: String,
    /// Expiry, seconds since the epoch.
    pub not_after: i64,
}

impl Ca {
    /// Load the CA from `dir`, or create one there. Leaves live `ttl`.
    pub fn load_or_create(dir: &Path, trust_domain: &str, ttl: Duration) -> Result<Ca> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let (pem, key) = if cert_path.is_file() && key_path.is_file() {
            let pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("reading {}", cert_path.display()))?;
            let key_pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            (pem, KeyPair::from_pem(&key_pem).context("ca.key")?)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, format!("meshc CA ({trust_domain})"));
            dn.push(DnType::OrganizationName, "meshc");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = now + time::Duration::days(3650);
            let cert = params.self_signed(&key)?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem())
                .with_context(|| format!("writing {}", cert_path.display()))?;
            (cert.pem(), key)
        };
        let issuer = Issuer::from_ca_cert_pem(&pem, key).context("ca.pem")?;
        Ok(Ca {
            issuer,
            pem,
            trust_domain: trust_domain.to_string(),
            ttl,
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The SPIFFE id for a namespace and service account.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        meshc_ir::spiffe_id(&self.trust_domain, namespace, service_account)
    }

    /// Sign `csr_pem` for `namespace`/`service_account`. Whatever the CSR asks
    /// for, the leaf gets exactly one URI SAN, the SPIFFE id, and client and
    /// server authentication; it is valid from one minute ago for the TTL.
    pub fn issue(&self, csr_pem: &str, namespace: &str, service_account: &str) -> Result<Issued> {
        for (what, v) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                bail!("invalid {what} `{v}`");
            }
        }
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("bad CSR: {e}"))?;
        let id = self.spiffe_id(namespace, service_account);
        let now = OffsetDateTime::now_utc();
        let not_after = now + self.ttl;
        let p = &mut csr.params;
        p.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        p.distinguished_name = DistinguishedName::new();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = not_after;
        p.use_authority_key_identifier_extension = true;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            not_after: not_after.unix_timestamp(),
        })
    }

    /// A serving certificate for the control plane itself, for `names` (DNS
    /// names or IP addresses), with a fresh key: (certificate PEM, key PEM).
    pub fn serving(&self, names: &[String]) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "meshc control plane");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(365);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The SPIFFE ids (URI SANs starting with `spiffe://`) of a DER certificate.
pub fn spiffe_ids(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
            _ => None,
        })
        .collect()
}
