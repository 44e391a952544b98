//! `MC0112` gateway-port-not-exposed.

use std::collections::HashSet;

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{IntOrString, Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a Gateway server port that no Service of the gateway's workloads
    /// exposes. It runs when the repository declares the workloads the Gateway
    /// selects; the ports counted are the Services' TCP ports and target ports.
    ///
    /// ## Why is this bad?
    /// The gateway proxy listens on the port, but nothing outside reaches it: the
    /// load balancer in front of the gateway only forwards the Service's ports.
    /// Users get connection refused or time out while the configuration looks
    /// accepted.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// spec:
    ///   selector: {istio: ingressgateway}   # its Service exposes 80 and 443
    ///   servers: [{port: {number: 8443, name: https, protocol: HTTPS}, hosts: ["*"]}]
    /// ```
    ///
    /// ## Fix
    /// Use a port the gateway Service exposes (its `port` or `targetPort`), or
    /// add the port to the Service.
    pub static GATEWAY_PORT_NOT_EXPOSED = {
        code: "MC0112",
        name: "gateway-port-not-exposed",
        group: References,
        severity: Warning,
        summary: "A Gateway listens on a port its workloads' Services do not expose",
        equivalents: [("IST0162", "gateway.IngressGatewayPortAnalyzer")],
    };
}

/// What the rule reads of a Service beyond the registry: its ports'
/// numbers, transport protocols and numeric target ports.
pub(crate) fn project(r: &Resource) -> String {
    match r.spec.as_deref() {
        Some(Spec::Service(svc)) => {
            let ports: Vec<_> = svc
                .ports
                .iter()
                .flatten()
                .map(|p| (p.port, &p.protocol, &p.target_port))
                .collect();
            format!("{ports:?}")
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let empty = crate::model::Map::default();
    for (_, r, spec) in ctx.of_kind(Kind::Gateway) {
        let Spec::Gateway(gw) = spec else { continue };
        let selector = gw.selector.as_ref().unwrap_or(&empty);
        let mut matched = false;
        // Ports reachable through a Service: service ports and target ports.
        let mut exposed: HashSet<i64> = HashSet::new();
        for w in ctx.workloads_matching_anywhere(selector) {
            matched = true;
            for h in ctx.services_of(w) {
                let Some(Spec::Service(svc)) = ctx.resources[h.index].spec.as_deref() else {
                    continue;
                };
                for p in svc.ports.iter().flatten() {
                    if p.protocol.as_deref().is_some_and(|p| p != "TCP") {
                        continue;
                    }
                    exposed.insert(p.port);
                    if let Some(IntOrString::Int(t)) = p.target_port {
                        exposed.insert(t);
                    }
                }
            }
        }
        if !matched {
            continue; // MC0107 reports a selector matching nothing
        }
        for (i, server) in gw.servers.iter().flatten().enumerate() {
            let port = server.port.number;
            if exposed.contains(&port) {
                continue;
            }
            let mut known: Vec<i64> = exposed.iter().copied().collect();
            known.sort_unstable();
            let list = if known.is_empty() {
                "no TCP port".to_string()
            } else {
                known
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(
                r.diag(
                    &GATEWAY_PORT_NOT_EXPOSED,
                    path!["spec", "servers", i, "port", "number"],
                    format!(
                        "port {port} is not exposed by the Services of the gateway workloads (they expose {list})"
                    ),
                )
                .with_help("use a port the gateway Service exposes, or add this port to the Service"),
            );
        }
    }
}
