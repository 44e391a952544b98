//! `MC0106` host-not-in-gateway.

use crate::analysis::{Context, gateway_key, host_matches};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// For a VirtualService bound to Gateways, checks that each of its hosts is
    /// served by at least one of them: some server host (or Gateway API
    /// listener hostname) equals it or covers it with a wildcard, and the
    /// server's namespace part (`ns/host`, `./host`, `*/host`) admits the
    /// VirtualService's namespace.
    ///
    /// ## Why is this bad?
    /// A gateway only takes traffic for the hosts its servers list. Routes for
    /// any other host are never used: requests for it get 404 at the edge, and
    /// the VirtualService looks right to anyone reading it.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// metadata: {name: public, namespace: istio-system}
    /// spec:
    ///   servers:
    ///   - port: {number: 80, name: http, protocol: HTTP}
    ///     hosts: ["shop.example.com"]
    /// ---
    /// kind: VirtualService
    /// spec:
    ///   hosts: [api.example.com]         # not served by `public`
    ///   gateways: [istio-system/public]
    /// ```
    ///
    /// ## Fix
    /// Add the host to a server of the Gateway (`hosts: ["shop.example.com",
    /// "api.example.com"]`), or bind the VirtualService to a Gateway that serves it.
    pub static HOST_NOT_IN_GATEWAY = {
        code: "MC0106",
        name: "host-not-in-gateway",
        group: References,
        severity: Warning,
        summary: "A VirtualService host is not served by any of its Gateways",
        equivalents: [("IST0132", "virtualservice.GatewayAnalyzer")],
    };
}

/// Whether a server host entry (`[ns/]host`) of a Gateway in `gw_ns` admits
/// `host` of a VirtualService in `vs_ns`.
fn admits(entry: &str, gw_ns: &str, host: &str, vs_ns: &str) -> bool {
    let (ns, h) = entry.split_once('/').unwrap_or(("*", entry));
    let ns_ok = match ns {
        "*" => true,
        "." => gw_ns == vs_ns,
        other => other == vs_ns,
    };
    ns_ok && (host_matches(h, host) || host_matches(host, h))
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        // Per bound gateway, the server host entries with the gateway's
        // namespace. When a gateway does not exist MC0103 reports it and this
        // rule stays quiet about the VirtualService.
        let mut bindings: Vec<(usize, String, Vec<String>)> = Vec::new();
        let mut missing = false;
        for (gi, gw) in vs.gateways.iter().flatten().enumerate() {
            if gw == "mesh" {
                continue;
            }
            let key = gateway_key(gw, &r.namespace);
            let Some(entries) = ctx.gateway_hosts(&key) else {
                missing = true;
                continue;
            };
            bindings.push((gi, key, entries));
        }
        if bindings.is_empty() || missing {
            continue;
        }
        let hosts: Vec<&String> = vs.hosts.iter().flatten().collect();
        let serves = |key: &str, entries: &[String], host: &str| {
            let gw_ns = key.split('/').next().unwrap_or("");
            entries.iter().any(|e| admits(e, gw_ns, host, &r.namespace))
        };
        // A binding that serves none of the hosts is useless (istioctl's check).
        let mut useless = false;
        for (gi, key, entries) in &bindings {
            if hosts.iter().any(|h| serves(key, entries, h)) {
                continue;
            }
            useless = true;
            let list = hosts
                .iter()
                .map(|h| format!("`{h}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut d = r
                .diag(
                    &HOST_NOT_IN_GATEWAY,
                    path!["spec", "gateways", *gi],
                    format!("gateway `{key}` serves none of this VirtualService's hosts ({list})"),
                )
                .with_help("add the hosts to a server of the Gateway, or bind the VirtualService to a Gateway that serves them");
            if let Some(&i) = ctx.gateways.get(key) {
                d = d.with_related(
                    ctx.resources[i]
                        .label(path!["spec", "servers"])
                        .with_message("its servers"),
                );
            }
            out.push(d);
        }
        if useless {
            continue;
        }
        // Every binding serves something: report hosts that none serves.
        for (i, host) in hosts.iter().enumerate() {
            if bindings
                .iter()
                .any(|(_, key, entries)| serves(key, entries, host))
            {
                continue;
            }
            out.push(
                r.diag(
                    &HOST_NOT_IN_GATEWAY,
                    path!["spec", "hosts", i],
                    format!("host `{host}` is not served by any of this VirtualService's gateways"),
                )
                .with_help(
                    "add the host to a server of the Gateway, or remove it from the VirtualService",
                )
                .with_upstream(&[]),
            );
        }
    }
}
