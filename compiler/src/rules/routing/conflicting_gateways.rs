//! `MC0206` conflicting-gateways.

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports two Gateways that configure the same gateway workloads (the same
    /// selector, or selectors that both match one of the repository's
    /// workloads) with a server on the same port for the same host and `bind`.
    ///
    /// ## Why is this bad?
    /// A gateway proxy has one listener per port. When two Gateways claim the same
    /// host on it, Istio keeps the server of one and drops the other's with only a
    /// log line in istiod: the routes bound to the dropped Gateway answer 404, or
    /// take the other Gateway's TLS settings.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// metadata: {name: public, namespace: shop}
    /// spec:
    ///   selector: {istio: ingressgateway}
    ///   servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
    /// ---
    /// kind: Gateway
    /// metadata: {name: promo, namespace: shop}
    /// spec:
    ///   selector: {istio: ingressgateway}
    ///   servers: [{port: {number: 80, name: http2, protocol: HTTP}, hosts: [shop.example.com]}]
    /// ```
    ///
    /// ## Fix
    /// Serve each host on a port from one Gateway, and bind every VirtualService
    /// for that host to it.
    pub static CONFLICTING_GATEWAYS = {
        code: "MC0206",
        name: "conflicting-gateways",
        group: Routing,
        severity: Error,
        summary: "Two Gateways serve the same host on the same port of the same workloads",
        equivalents: [("IST0145", "gateway.ConflictingGatewayAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let empty = crate::model::Map::default();
    let gateways = ctx.istio_gateways();
    // The workloads each Gateway configures (resource indices, sorted), so
    // pairs compare two short lists instead of rescanning every workload.
    let selected: Vec<Vec<usize>> = gateways
        .iter()
        .map(|(_, gw)| {
            let mut v: Vec<usize> = ctx
                .workloads_matching_anywhere(gw.selector.as_ref().unwrap_or(&empty))
                .map(|w| w.index)
                .collect();
            v.sort_unstable();
            v
        })
        .collect();
    // Two Gateways configure the same proxies when their selectors are equal
    // or some workload of the repository matches both.
    let same_workloads = |a: usize, b: usize| {
        gateways[a].1.selector == gateways[b].1.selector
            || selected[a]
                .iter()
                .any(|w| selected[b].binary_search(w).is_ok())
    };
    for (gi, (r, gw)) in gateways.iter().enumerate() {
        for (si, server) in gw.servers.iter().flatten().enumerate() {
            let port = server.port.number;
            let bind = server.bind.as_deref().unwrap_or("");
            let mut rivals: Vec<(&Resource, usize, &str)> = Vec::new();
            for (oj, (o, other)) in gateways.iter().enumerate() {
                if gi == oj || !same_workloads(gi, oj) {
                    continue;
                }
                for (oi, os) in other.servers.iter().flatten().enumerate() {
                    if os.port.number != port || os.bind.as_deref().unwrap_or("") != bind {
                        continue;
                    }
                    if let Some(h) = server.hosts.iter().find(|h| os.hosts.contains(h)) {
                        rivals.push((o, oi, h));
                    }
                }
            }
            let Some((_, _, host)) = rivals.first() else {
                continue;
            };
            let names: Vec<String> = rivals
                .iter()
                .map(|(o, _, _)| format!("{}/{}", o.namespace, o.name))
                .collect();
            let mut d = r
                .diag(
                    &CONFLICTING_GATEWAYS,
                    path!["spec", "servers", si, "port", "number"],
                    format!(
                        "port {port} with host `{host}` is also served by Gateway {} on the same workloads; Istio keeps only one of them",
                        names.join(", ")
                    ),
                )
                .with_help("serve each host on a port from one Gateway and bind its VirtualServices to it");
            for (o, oi, _) in &rivals {
                d = d.with_related(
                    o.label(path!["spec", "servers", *oi, "port", "number"])
                        .with_message("also serves it"),
                );
            }
            out.push(d);
        }
    }
}
