//! Configuration in two layers: [`ConfigFile`] as written in `meshc.toml`, and
//! [`Settings`], resolved with defaults and command-line overrides, which the
//! rules read.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostic::Severity;
use crate::rules;

/// `meshc.toml` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// Only these codes or code prefixes (`MC01`) run; all when absent.
    pub select: Option<Vec<Spanned<String>>>,
    /// Codes or prefixes that never run.
    #[serde(default)]
    pub ignore: Vec<Spanned<String>>,
    /// Per-code severity: `MC0301 = "error"`.
    #[serde(default)]
    pub severity: BTreeMap<Spanned<String>, Spanned<String>>,
    /// SPIFFE trust domain (default `cluster.local`).
    pub trust_domain: Option<String>,
    /// Istio's root namespace for mesh-wide policy (default `istio-system`).
    pub root_namespace: Option<String>,
    /// DNS suffix of Services (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// Hosts that exist outside the repository (exact or `*.suffix`; `*` for all),
    /// for repos that keep their Services elsewhere.
    #[serde(default)]
    pub known_hosts: Vec<String>,
    /// Istio's `enableAutoMtls` (default true): clients pick mTLS by
    /// themselves when no DestinationRule says otherwise.
    pub auto_mtls: Option<bool>,
    /// Istio's DNS proxy address auto-allocation for ServiceEntries
    /// (`ISTIO_META_DNS_AUTO_ALLOCATE`), default false.
    pub dns_auto_allocate: Option<bool>,
    /// Other trust domains whose identities this mesh accepts (Istio's
    /// `trustDomainAliases`).
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// The most tries one client request may cause at any service along a
    /// call path (the product of each hop's attempts); default 10.
    pub max_retry_amplification: Option<u64>,
}

impl ConfigFile {
    /// Parse `meshc.toml` text.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Selected codes or prefixes (`None`: all).
    pub select: Option<Vec<String>>,
    /// Ignored codes or prefixes.
    pub ignore: Vec<String>,
    /// Severity overrides.
    pub severity: BTreeMap<String, Severity>,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Root namespace.
    pub root_namespace: String,
    /// Cluster DNS suffix.
    pub cluster_domain: String,
    /// Hosts assumed to exist.
    pub known_hosts: Vec<String>,
    /// Istio's `enableAutoMtls`.
    pub auto_mtls: bool,
    /// ServiceEntries get addresses from Istio's DNS proxy.
    pub dns_auto_allocate: bool,
    /// Other trust domains accepted as this mesh's.
    pub trust_domain_aliases: Vec<String>,
    /// Bound on the product of attempts along a call path.
    pub max_retry_amplification: u64,
    /// The namespace of resources that name none (`default`, as for kubectl;
    /// `kubectl apply -n` semantics when set otherwise).
    pub default_namespace: String,
    /// Problems found while resolving (unknown codes, bad severities), as
    /// `(byte range in meshc.toml, message)`; reported as `MC0020`.
    pub problems: Vec<(Range<usize>, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::resolve(&ConfigFile::default())
    }
}

impl Settings {
    /// Resolve a config file with defaults.
    pub fn resolve(file: &ConfigFile) -> Settings {
        let codes = file
            .select
            .iter()
            .flatten()
            .chain(&file.ignore)
            .chain(file.severity.keys());
        let mut problems: Vec<(Range<usize>, String)> = codes
            .filter(|c| !is_known_selector(c.as_ref()))
            .map(|c| (c.span(), format!("`{}` names no rule", c.as_ref())))
            .collect();
        let mut severity = BTreeMap::new();
        for (code, sev) in &file.severity {
            match Severity::parse(sev.as_ref()) {
                Some(s) => {
                    severity.insert(code.as_ref().to_ascii_uppercase(), s);
                }
                None => problems.push((
                    sev.span(),
                    format!(
                        "`{}` is not a severity (error, warning, info)",
                        sev.as_ref()
                    ),
                )),
            }
        }
        Settings {
            select: file
                .select
                .as_ref()
                .map(|v| v.iter().map(|c| c.get_ref().clone()).collect()),
            ignore: file.ignore.iter().map(|c| c.get_ref().clone()).collect(),
            severity,
            trust_domain: file
                .trust_domain
                .clone()
                .unwrap_or_else(|| "cluster.local".into()),
            root_namespace: file
                .root_namespace
                .clone()
                .unwrap_or_else(|| "istio-system".into()),
            cluster_domain: file
                .cluster_domain
                .clone()
                .unwrap_or_else(|| "cluster.local".into()),
            known_hosts: file.known_hosts.clone(),
            auto_mtls: file.auto_mtls.unwrap_or(true),
            dns_auto_allocate: file.dns_auto_allocate.unwrap_or(false),
            trust_domain_aliases: file.trust_domain_aliases.clone(),
            max_retry_amplification: file.max_retry_amplification.unwrap_or(10),
            default_namespace: "default".into(),
            problems,
        }
    }

    /// Whether rule `code` runs under `select` and `ignore`.
    pub fn enabled(&self, code: &str) -> bool {
        let matches = |sel: &String| code.starts_with(&sel.to_ascii_uppercase());
        self.select.as_ref().is_none_or(|s| s.iter().any(matches))
            && !self.ignore.iter().any(matches)
    }

    /// Whether `host` (fully qualified) is declared to exist outside the repo.
    pub fn is_known_host(&self, host: &str) -> bool {
        self.known_hosts
            .iter()
            .any(|p| crate::analysis::host_matches(p, host))
    }
}

/// True when `s` is a rule code or a prefix of one (`MC01`).
pub fn is_known_selector(s: &str) -> bool {
    let s = s.to_ascii_uppercase();
    s.len() >= 2 && rules::ALL.iter().any(|r| r.code.starts_with(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_ignore_and_unknown_codes() {
        let f = ConfigFile::parse("select = [\"MC01\"]\nignore = [\"MC0103\", \"MC9999\"]\n[severity]\nMC0101 = \"warning\"\n").unwrap();
        let s = Settings::resolve(&f);
        assert!(s.enabled("MC0101"));
        assert!(!s.enabled("MC0103"));
        assert!(!s.enabled("MC0201"));
        assert_eq!(s.severity.get("MC0101"), Some(&Severity::Warning));
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].1.contains("MC9999"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(
            ConfigFile::parse("selec = []")
                .unwrap_err()
                .contains("selec")
        );
    }
}
