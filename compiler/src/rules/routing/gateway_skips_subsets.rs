//! `MC0211` gateway-skips-subsets.

use std::collections::BTreeMap;

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::rules::walk::{DestAt, destinations, mesh_bound, routes};

declare_rule! {
    /// ## What it does
    /// Reports a route of a VirtualService bound to an ingress Gateway that
    /// sends traffic to a host without naming a subset, when a mesh
    /// VirtualService for that host splits its traffic by subset (a canary,
    /// a version pin).
    ///
    /// ## Why is this bad?
    /// A gateway applies only the VirtualServices bound to it. The mesh
    /// VirtualService's split is made by sidecars, for traffic between
    /// services, and never sees requests from the gateway: those go to every
    /// pod of the host, whatever version the split was meant to pin. The
    /// canary gets its share of external traffic from day one, or the old
    /// version keeps getting it after the cut-over.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// metadata: {name: ingress}
    /// spec:
    ///   hosts: [shop.example.com]
    ///   gateways: [istio-system/public]
    ///   http: [{route: [{destination: {host: ratings}}]}]
    /// ---
    /// kind: VirtualService
    /// metadata: {name: ratings}
    /// spec:
    ///   hosts: [ratings]
    ///   http: [{route: [{destination: {host: ratings, subset: v1}}]}]
    /// ```
    ///
    /// ## Fix
    /// Name the subsets in the gateway's route as well, or bind the mesh
    /// VirtualService to the gateway too (`gateways: [mesh, istio-system/public]`)
    /// and delegate to it.
    pub static GATEWAY_SKIPS_SUBSETS = {
        code: "MC0211",
        name: "gateway-skips-subsets",
        group: Routing,
        severity: Warning,
        summary: "A gateway route ignores the subset split the mesh applies to its host",
        equivalents: [("IST0140", "virtualservice.DestinationHostAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    // The hosts that gateway-bound VirtualServices route to without a
    // subset: only those can be reported, and most repositories have few.
    let mut unsplit: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        if !vs.gateways.iter().flatten().any(|g| g != "mesh") {
            continue;
        }
        for (at, d) in destinations(vs) {
            if matches!(at, DestAt::Route(..)) && d.subset.as_deref().is_none_or(str::is_empty) {
                unsplit.insert(ctx.fqdn(&d.host, &r.namespace));
            }
        }
    }
    if unsplit.is_empty() {
        return;
    }
    // host → the mesh VirtualServices that split their own host by subset
    let mut splitting: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        if !mesh_bound(vs) {
            continue;
        }
        let hosts: Vec<String> = vs
            .hosts
            .iter()
            .flatten()
            .map(|h| ctx.fqdn(h, &r.namespace))
            .filter(|h| unsplit.contains(h))
            .collect();
        if hosts.is_empty() {
            continue;
        }
        for route in routes(vs) {
            for (d, _) in route.destinations {
                let host = ctx.fqdn(&d.host, &r.namespace);
                if d.subset.as_deref().is_some_and(|s| !s.is_empty()) && hosts.contains(&host) {
                    let vss = splitting.entry(host).or_default();
                    if !vss.iter().any(|v| std::ptr::eq(*v, r)) {
                        vss.push(r);
                    }
                }
            }
        }
    }
    if splitting.is_empty() {
        return;
    }
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        let Some(gateway) = vs.gateways.iter().flatten().find(|g| *g != "mesh") else {
            continue;
        };
        for (at, d) in destinations(vs) {
            if !matches!(at, DestAt::Route(..))
                || d.subset.as_deref().is_some_and(|s| !s.is_empty())
            {
                continue;
            }
            let host = ctx.fqdn(&d.host, &r.namespace);
            let Some(vss) = splitting.get(&host) else {
                continue;
            };
            let others: Vec<&&Resource> = vss.iter().filter(|v| !std::ptr::eq(**v, r)).collect();
            if others.is_empty() {
                continue;
            }
            let names: Vec<String> = others
                .iter()
                .map(|v| format!("{}/{}", v.namespace, v.name))
                .collect();
            let mut diag = r
                .diag(
                    &GATEWAY_SKIPS_SUBSETS,
                    at.join("host"),
                    format!(
                        "requests from gateway `{gateway}` go to every pod of `{}`: {} {} {} it by subset, but only for traffic between sidecars",
                        d.host,
                        if names.len() > 1 { "VirtualServices" } else { "VirtualService" },
                        names.join(", "),
                        if names.len() > 1 { "split" } else { "splits" }
                    ),
                )
                .with_help("name the subsets in this route too, or bind the mesh VirtualService to the gateway as well");
            for v in others {
                diag = diag.with_related(
                    v.label(crate::path!["spec", "hosts"])
                        .with_message("splits this host by subset"),
                );
            }
            out.push(diag);
        }
    }
}
