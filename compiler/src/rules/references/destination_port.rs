//! `MC0104` destination-port.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};

declare_rule! {
    /// ## What it does
    /// Checks the port of each VirtualService destination against the ports of
    /// the Service or ServiceEntry it resolves to: a `port.number` the host does
    /// not expose is reported, and so is a destination without a port when the
    /// host exposes several.
    ///
    /// ## Why is this bad?
    /// A route to a port the Service does not expose matches no cluster and
    /// fails with 503. When the host has several ports and the destination names
    /// none, Istio cannot tell which one is meant and the route is ambiguous.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Service
    /// metadata: {name: reviews, namespace: shop}
    /// spec:
    ///   ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]
    /// ---
    /// kind: VirtualService
    /// metadata: {name: reviews, namespace: shop}
    /// spec:
    ///   hosts: [reviews]
    ///   http:
    ///   - route:
    ///     - destination: {host: reviews}          # which port?
    ///   - route:
    ///     - destination: {host: reviews, port: {number: 8080}}   # not exposed
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///     - destination: {host: reviews, port: {number: 9080}}
    /// ```
    pub static DESTINATION_PORT = {
        code: "MC0104",
        name: "destination-port",
        group: References,
        severity: Error,
        summary: "A destination names a port its host does not expose, or no port when the host has several",
        equivalents: [("IST0101", "virtualservice.DestinationHostAnalyzer"), ("IST0112", "virtualservice.DestinationHostAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        for (path, dest) in crate::rules::walk::destinations(vs) {
            let fqdn = ctx.fqdn(&dest.host, &r.namespace);
            if fqdn.starts_with('*') {
                continue;
            }
            let targets = ctx.lookup(&fqdn, &r.namespace);
            // Only hosts whose ports are all known (every target declares some).
            if targets.is_empty() || targets.iter().any(|t| t.ports.is_empty()) {
                continue;
            }
            let mut ports: Vec<i64> = targets
                .iter()
                .flat_map(|t| t.ports.iter().map(|p| p.number))
                .collect();
            ports.sort_unstable();
            ports.dedup();
            let list = ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match dest.port_number() {
                Some(n) if !ports.contains(&n) => out.push(
                    r.diag(
                        &DESTINATION_PORT,
                        path.join("port").join("number"),
                        format!("port {n} is not exposed by `{}` (ports: {list})", dest.host),
                    )
                    .with_help(format!(
                        "route to one of the ports `{}` exposes: {list}",
                        dest.host
                    ))
                    .with_upstream(&["IST0101"]),
                ),
                None if ports.len() > 1 => out.push(
                    r.diag(
                        &DESTINATION_PORT,
                        path.path(),
                        format!(
                            "`{}` exposes several ports ({list}); the destination must name one",
                            dest.host
                        ),
                    )
                    .with_help(format!(
                        "add `port: {{number: {}}}` (or another of {list})",
                        ports[0]
                    ))
                    .with_upstream(&["IST0112"]),
                ),
                _ => {}
            }
        }
    }
}
