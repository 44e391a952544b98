//! `MC0210` duplicate-gateway-certificate.

use std::collections::BTreeMap;

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::ServerTlsSettings;
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports a Gateway server that presents the same certificate (the same
    /// `credentialName`, or the same `serverCertificate` and `privateKey`
    /// files) as a server of another Gateway on the same gateway workloads.
    /// The other Gateway counts as on the same workloads when its selector
    /// includes every label of this one's, so each pod it configures is
    /// configured by this Gateway too (Istio's rule).
    ///
    /// ## Why is this bad?
    /// Browsers and HTTP/2 clients reuse one connection for every host a
    /// certificate covers. The gateway picked that connection's routes by the
    /// first request's SNI, from one Gateway; requests for the other Gateway's
    /// hosts then arrive on it and get 404.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// metadata: {name: shop, namespace: istio-system}
    /// spec:
    ///   selector: {istio: ingressgateway}
    ///   servers: [{port: {number: 443, name: https, protocol: HTTPS},
    ///              tls: {mode: SIMPLE, credentialName: wildcard-cert}, hosts: [shop.example.com]}]
    /// ---
    /// kind: Gateway
    /// metadata: {name: blog, namespace: istio-system}
    /// spec:
    ///   selector: {istio: ingressgateway}
    ///   servers: [{port: {number: 443, name: https, protocol: HTTPS},
    ///              tls: {mode: SIMPLE, credentialName: wildcard-cert}, hosts: [blog.example.com]}]
    /// ```
    ///
    /// ## Fix
    /// Serve the hosts that share a certificate from one Gateway (one server
    /// may list several hosts), or give each Gateway its own certificate.
    pub static DUPLICATE_GATEWAY_CERTIFICATE = {
        code: "MC0210",
        name: "duplicate-gateway-certificate",
        group: Routing,
        severity: Warning,
        summary: "Two Gateways on the same workloads present the same certificate",
        equivalents: [("IST0138", "gateway.CertificateAnalyzer")],
    };
}

/// The certificates a server presents, as comparable keys, with the field
/// that names each.
fn certificates(tls: &ServerTlsSettings) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if let Some(c) = tls.credential_name.as_deref().filter(|c| !c.is_empty()) {
        out.push((format!("secret {c}"), "credentialName"));
    }
    for c in tls.credential_names.iter().flatten() {
        out.push((format!("secret {c}"), "credentialNames"));
    }
    if out.is_empty()
        && let (Some(cert), Some(key)) = (&tls.server_certificate, &tls.private_key)
        && !cert.is_empty()
        && !key.is_empty()
    {
        out.push((format!("files {cert} {key}"), "serverCertificate"));
    }
    out
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let empty = crate::model::Map::default();
    let gateways = ctx.istio_gateways();
    // certificate → the (gateway, server, field) that present it
    let mut by_cert: BTreeMap<String, Vec<(usize, usize, &'static str)>> = BTreeMap::new();
    for (gi, (_, gw)) in gateways.iter().enumerate() {
        for (si, server) in gw.servers.iter().flatten().enumerate() {
            for (key, field) in server.tls.as_deref().map(certificates).unwrap_or_default() {
                by_cert.entry(key).or_default().push((gi, si, field));
            }
        }
    }
    let at = |si: usize, field: &str| -> YamlPath { path!["spec", "servers", si, "tls", field] };
    // (gateway, server) → the other gateways' servers sharing its certificate
    type Server = (usize, usize, &'static str);
    let mut shared: BTreeMap<Server, Vec<Server>> = BTreeMap::new();
    for users in by_cert.values() {
        for &(gi, si, field) in users {
            let mine = gateways[gi].1.selector.as_ref().unwrap_or(&empty);
            for &(oj, oi, ofield) in users {
                let theirs = gateways[oj].1.selector.as_ref().unwrap_or(&empty);
                let covers = mine.iter().all(|(k, v)| theirs.get(k) == Some(v));
                if oj != gi && covers {
                    shared
                        .entry((gi, si, field))
                        .or_default()
                        .push((oj, oi, ofield));
                }
            }
        }
    }
    for ((gi, si, field), others) in shared {
        let (r, _) = gateways[gi];
        let mut names: Vec<String> = others
            .iter()
            .map(|(oj, _, _)| format!("{}/{}", gateways[*oj].0.namespace, gateways[*oj].0.name))
            .collect();
        names.dedup();
        let mut d = r
            .diag(
                &DUPLICATE_GATEWAY_CERTIFICATE,
                at(si, field),
                format!(
                    "this certificate is also presented by Gateway {} on the same workloads; HTTP/2 clients that reuse a connection across its hosts get 404",
                    names.join(", ")
                ),
            )
            .with_help("serve the hosts that share a certificate from one Gateway, or give each Gateway its own certificate");
        for (oj, oi, ofield) in others {
            d = d.with_related(
                gateways[oj]
                    .0
                    .label(at(oi, ofield))
                    .with_message("same certificate"),
            );
        }
        out.push(d);
    }
}
