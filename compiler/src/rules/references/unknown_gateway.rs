//! `MC0103` unknown-gateway.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports a gateway named in a VirtualService (`spec.gateways` or a match's
    /// `gateways`) for which the repository has no Gateway. Names are
    /// `namespace/name`, or `name` in the VirtualService's namespace; `mesh`
    /// means the sidecars and is always valid.
    ///
    /// ## Why is this bad?
    /// The routes bind to nothing: the ingress keeps serving 404 for the hosts, and
    /// the mistake only shows when users hit it.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// metadata: {namespace: shop}
    /// spec:
    ///   gateways: [public-gateway]    # the Gateway lives in istio-system
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   gateways: [istio-system/public-gateway]
    /// ```
    pub static UNKNOWN_GATEWAY = {
        code: "MC0103",
        name: "unknown-gateway",
        group: References,
        severity: Error,
        summary: "A VirtualService names a Gateway that does not exist",
        equivalents: [("IST0101", "virtualservice.GatewayAnalyzer"), ("KIA1102", "virtualservices.NoGatewayChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        let mut named: Vec<(YamlPath, &str)> = Vec::new();
        for (i, g) in vs.gateways.iter().flatten().enumerate() {
            named.push((path!["spec", "gateways", i], g));
        }
        for (i, http) in vs.http.iter().flatten().enumerate() {
            for (j, m) in http.r#match.iter().flatten().enumerate() {
                for (k, g) in m.gateways.iter().flatten().enumerate() {
                    named.push((path!["spec", "http", i, "match", j, "gateways", k], g));
                }
            }
        }
        for (path, gw) in named {
            if gw == "mesh" {
                continue;
            }
            let key = resolve(gw, &r.namespace);
            if !ctx.gateways.contains_key(&key) {
                out.push(
                    r.diag(
                        &UNKNOWN_GATEWAY,
                        path,
                        format!("gateway `{gw}` (`{key}`) does not exist"),
                    )
                    .with_help(format!(
                        "declare Gateway `{key}`, or name an existing one as `namespace/name`"
                    )),
                );
            }
        }
    }
}

/// `ns/name`, `name` (own namespace) or the legacy `name.ns.svc...` to `ns/name`.
fn resolve(gw: &str, namespace: &str) -> String {
    if gw.contains('/') {
        return gw.to_string();
    }
    let mut parts = gw.split('.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(ns)) => format!("{ns}/{name}"),
        _ => format!("{namespace}/{gw}"),
    }
}
