//! `MC0302` unverified-server.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{ClientTlsMode, ClientTlsSettings, Kind, Spec};
use crate::mtls::client_tls_mode_name;
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports a DestinationRule TLS setting (at the top or per port) with mode
    /// `SIMPLE` or `MUTUAL` that gives the client no CA certificate to verify
    /// the server with: no `caCertificates`, no `insecureSkipVerify: true`, and
    /// no `credentialName` usable by the rule (a `credentialName` is only read by
    /// gateways, so it counts only when the rule has a `workloadSelector`).
    ///
    /// ## Why is this bad?
    /// Without a CA the proxy encrypts but does not check who answers: anyone who
    /// can intercept the connection can present any certificate. The
    /// configuration looks secure and is not.
    ///
    /// ## Example
    /// ```yaml
    /// kind: DestinationRule
    /// spec:
    ///   host: db.example.com
    ///   trafficPolicy:
    ///     tls: {mode: SIMPLE}
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///     tls:
    ///       mode: SIMPLE
    ///       caCertificates: /etc/certs/db-ca.pem
    /// ```
    pub static UNVERIFIED_SERVER = {
        code: "MC0302",
        name: "unverified-server",
        group: Mtls,
        severity: Warning,
        summary: "SIMPLE or MUTUAL TLS to a destination without a CA certificate to verify it",
        equivalents: [("IST0128", "destinationrule.CaCertificateAnalyzer"), ("IST0129", "destinationrule.CaCertificateAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        let Some(tp) = &dr.traffic_policy else {
            continue;
        };
        let selector = dr.workload_selector.is_some();
        if let Some(tls) = &tp.tls
            && unverified(tls, selector)
        {
            out.push(
                r.diag(
                    &UNVERIFIED_SERVER,
                    path!["spec", "trafficPolicy", "tls", "mode"],
                    format!(
                        "TLS mode {} to `{}` without caCertificates: the server is not verified",
                        mode_name(tls),
                        dr.host
                    ),
                )
                .with_help(HELP)
                .with_upstream(&["IST0128"]),
            );
        }
        for (i, p) in tp.port_level_settings.iter().flatten().enumerate() {
            if let Some(tls) = &p.tls
                && unverified(tls, selector)
            {
                let port = p
                    .port
                    .as_ref()
                    .and_then(|p| p.number)
                    .map_or_else(|| "?".to_string(), |n| n.to_string());
                let at: YamlPath = path![
                    "spec",
                    "trafficPolicy",
                    "portLevelSettings",
                    i,
                    "tls",
                    "mode"
                ];
                out.push(
                    r.diag(
                        &UNVERIFIED_SERVER,
                        at,
                        format!(
                            "TLS mode {} to `{}` port {port} without caCertificates: the server is not verified",
                            mode_name(tls),
                            dr.host
                        ),
                    )
                    .with_help(HELP)
                    .with_upstream(&["IST0129"]),
                );
            }
        }
    }
}

const HELP: &str = "set `caCertificates` to the CA that signs the server's certificate (or `credentialName` with a `workloadSelector` on a gateway)";

fn unverified(tls: &ClientTlsSettings, selector: bool) -> bool {
    matches!(
        tls.mode,
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
    ) && tls.ca_certificates.as_deref().is_none_or(str::is_empty)
        && tls.insecure_skip_verify != Some(true)
        && !(selector
            && tls
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty()))
}

fn mode_name(tls: &ClientTlsSettings) -> &'static str {
    tls.mode.map_or("SIMPLE", client_tls_mode_name)
}
