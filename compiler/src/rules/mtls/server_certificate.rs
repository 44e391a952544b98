//! `MC0304` gateway-server-without-certificate.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{GatewayTlsMode, Kind, ServerTlsSettings, Spec};
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports an Istio Gateway server that must terminate TLS and is not
    /// given what it needs:
    /// - an `HTTPS` server with no `tls` settings;
    /// - `SIMPLE`, `MUTUAL` or `OPTIONAL_MUTUAL` with no certificate: no
    ///   `credentialName`, `credentialNames` or `tlsCertificates`, and not
    ///   both `serverCertificate` and `privateKey`;
    /// - `MUTUAL` or `OPTIONAL_MUTUAL` with certificate files and no CA to
    ///   check clients with (`caCertificates` or `caCertCredentialName`; a
    ///   Secret named by `credentialName` may hold the CA itself).
    ///
    /// ## Why is this bad?
    /// Istio's validation rejects such a Gateway, so it never reaches the
    /// cluster; `meshc proxy` cannot serve the port either. The host is
    /// unreachable over HTTPS until someone notices.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// spec:
    ///   servers:
    ///   - port: {number: 443, name: https, protocol: HTTPS}
    ///     hosts: [shop.example.com]
    ///     tls: {mode: SIMPLE}
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///     tls: {mode: SIMPLE, credentialName: shop-example-com-cert}
    /// ```
    pub static GATEWAY_SERVER_WITHOUT_CERTIFICATE = {
        code: "MC0304",
        name: "gateway-server-without-certificate",
        group: Mtls,
        severity: Error,
        summary: "A Gateway server that terminates TLS has no certificate, or no CA for mutual TLS",
        equivalents: [],
    };
}

const NO_CERTIFICATE_HELP: &str = "name the certificate's Secret in `credentialName` (the gateway reads tls.crt and tls.key from it), or set `serverCertificate` and `privateKey`";
const NO_CA_HELP: &str = "set `caCertificates` to the CA that signs the clients' certificates, or `caCertCredentialName` to the Secret that holds it";
const NO_TLS_HELP: &str = "add `tls: {mode: SIMPLE, credentialName: <Secret>}`, or declare the port `HTTP` if it is plaintext";

/// What a terminating server lacks, and the help for it.
fn lacks(tls: &ServerTlsSettings) -> Option<(&'static str, &'static str)> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    let mode = tls.mode?;
    let mutual = matches!(
        mode,
        GatewayTlsMode::Mutual | GatewayTlsMode::OptionalMutual
    );
    if !mutual && mode != GatewayTlsMode::Simple {
        return None;
    }
    let named = set(&tls.credential_name)
        || tls.credential_names.as_ref().is_some_and(|n| !n.is_empty())
        || tls.tls_certificates.as_ref().is_some_and(|c| !c.is_empty());
    let files = set(&tls.server_certificate) && set(&tls.private_key);
    if !(named || files) {
        return Some(("no certificate", NO_CERTIFICATE_HELP));
    }
    let ca_listed = tls
        .tls_certificates
        .iter()
        .flatten()
        .any(|c| set(&c.ca_certificates));
    if mutual
        && !set(&tls.credential_name)
        && tls.credential_names.as_ref().is_none_or(|n| n.is_empty())
        && !set(&tls.ca_certificates)
        && !set(&tls.ca_cert_credential_name)
        && !ca_listed
    {
        return Some(("no CA to check client certificates with", NO_CA_HELP));
    }
    None
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::Gateway) {
        let Spec::Gateway(g) = spec else {
            continue;
        };
        for (i, s) in g.servers.iter().flatten().enumerate() {
            let port = s.port.number;
            let found = match s.tls.as_deref() {
                None if s.port.protocol.eq_ignore_ascii_case("HTTPS") => Some((
                    path!["spec", "servers", i, "port", "protocol"],
                    format!("HTTPS server on port {port} without tls settings"),
                    NO_TLS_HELP,
                )),
                None => None,
                Some(tls) => lacks(tls).map(|(what, help)| {
                    let mode = tls.mode.map(crate::model::enum_name).unwrap_or_default();
                    let at: YamlPath = path!["spec", "servers", i, "tls", "mode"];
                    (at, format!("{mode} server on port {port} has {what}"), help)
                }),
            };
            if let Some((at, message, help)) = found {
                out.push(
                    r.diag(&GATEWAY_SERVER_WITHOUT_CERTIFICATE, at, message)
                        .with_help(help),
                );
            }
        }
    }
}
