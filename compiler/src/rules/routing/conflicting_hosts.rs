//! `MC0203` conflicting-virtual-services.

use std::collections::HashMap;

use crate::analysis::{Context, Resource, host_matches};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports VirtualServices bound to the sidecars (`gateways` absent or
    /// containing `mesh`) that claim the same host, or overlapping hosts
    /// (`*.shop.svc.cluster.local` and `reviews.shop.svc.cluster.local`), and
    /// are visible together in some namespace (their `exportTo` lists overlap)
    /// whose proxies import the host (its Sidecar `egress.hosts` do not leave
    /// it out).
    ///
    /// ## Why is this bad?
    /// Istio merges such VirtualServices in an order nobody controls (creation
    /// time), so which routes win can change on the next apply. The usual cause
    /// is a copy in a second namespace or a leftover from a migration.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// metadata: {name: reviews, namespace: shop}
    /// spec: {hosts: [reviews.shop.svc.cluster.local], http: [...]}
    /// ---
    /// kind: VirtualService
    /// metadata: {name: reviews-canary, namespace: shop}
    /// spec: {hosts: [reviews], http: [...]}
    /// ```
    ///
    /// ## Fix
    /// Merge the routes into one VirtualService per host, or narrow `exportTo`
    /// so that no namespace sees both.
    pub static CONFLICTING_VIRTUAL_SERVICES = {
        code: "MC0203",
        name: "conflicting-virtual-services",
        group: Routing,
        severity: Error,
        summary: "Several mesh VirtualServices claim the same host in the same scope",
        equivalents: [("IST0109", "virtualservice.ConflictingMeshGatewayHostsAnalyzer")],
    };
}

struct Claim<'a> {
    res: &'a Resource,
    index: usize,
    host_index: usize,
    host: String,
    export_to: &'a [String],
}

/// What the rule reads of a resource: a VirtualService's hosts, gateways
/// and `exportTo` (`crate::rules::Deps`).
pub(crate) fn project(r: &crate::analysis::Resource) -> String {
    match r.spec.as_deref() {
        Some(Spec::VirtualService(vs)) => format!("{:?}", (&vs.hosts, &vs.gateways, &vs.export_to)),
        other => format!("{other:?}"),
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    // Only VirtualServices that share a host with another can conflict: the
    // naming index, when a session has built it, gives them without
    // reading every VirtualService's hosts (a Sidecar edit runs this rule).
    let all = ctx.indices_of(Kind::VirtualService);
    let sharing = ctx.naming_if_built().and_then(|ix| ix.sharing(all));
    let mut claims: Vec<Claim> = Vec::new();
    for &i in sharing.as_deref().unwrap_or(all) {
        let r = &ctx.resources[i];
        let Some(Spec::VirtualService(vs)) = r.spec.as_deref() else {
            continue;
        };
        if !crate::rules::walk::mesh_bound(vs) {
            continue;
        }
        for (j, h) in vs.hosts.iter().flatten().enumerate() {
            claims.push(Claim {
                res: r,
                index: i,
                host_index: j,
                host: ctx.fqdn(h, &r.namespace),
                export_to: vs.export_to.as_deref().unwrap_or_default(),
            });
        }
    }
    let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut wild: Vec<usize> = Vec::new();
    for (k, c) in claims.iter().enumerate() {
        if c.host.starts_with('*') {
            wild.push(k);
        } else {
            exact.entry(c.host.as_str()).or_default().push(k);
        }
    }
    // One finding per VirtualService at its first conflicting host, counting
    // the others (istioctl also reports each VirtualService once).
    let mut findings: Vec<(usize, Diagnostic, usize)> = Vec::new();
    let mut by_vs: HashMap<usize, usize> = HashMap::new();
    for (k, c) in claims.iter().enumerate() {
        let rivals = rivals_of(ctx, &claims, &exact, &wild, k);
        if rivals.is_empty() {
            continue;
        }
        if let Some(&at) = by_vs.get(&c.index) {
            findings[at].2 += 1;
            continue;
        }
        by_vs.insert(c.index, findings.len());
        let names: Vec<String> = rivals
            .iter()
            .map(|&i| {
                let r = &ctx.resources[i];
                format!("{}/{}", r.namespace, r.name)
            })
            .collect();
        let mut d = c.res.diag(
            &CONFLICTING_VIRTUAL_SERVICES,
            path!["spec", "hosts", c.host_index],
            format!(
                "host `{}` is also claimed for the mesh by {}; Istio merges them in no defined order",
                c.host,
                names.join(", ")
            ),
        );
        for &i in &rivals {
            let r = &ctx.resources[i];
            d = d.with_related(
                r.label(path!["spec", "hosts"])
                    .with_message("also claims it"),
            );
        }
        d = d.with_help(
            "merge the routes into one VirtualService per host, or narrow exportTo so that no namespace sees both",
        );
        findings.push((c.index, d, 0));
    }
    for (_, mut d, more) in findings {
        if more > 0 {
            d.message += &format!(
                " ({more} more host{} conflict too)",
                if more == 1 { "" } else { "s" }
            );
        }
        out.push(d);
    }
}

/// The other VirtualServices (resource indices, sorted) whose mesh hosts
/// overlap claim `k`'s in a namespace that sees both and imports the host.
fn rivals_of(
    ctx: &Context,
    claims: &[Claim],
    exact: &HashMap<&str, Vec<usize>>,
    wild: &[usize],
    k: usize,
) -> Vec<usize> {
    let c = &claims[k];
    let candidates: Box<dyn Iterator<Item = &usize>> = if c.host.starts_with('*') {
        Box::new(exact.values().flatten().chain(wild))
    } else {
        Box::new(exact.get(c.host.as_str()).into_iter().flatten().chain(wild))
    };
    let mut rivals: Vec<usize> = Vec::new();
    for &o in candidates {
        let d = &claims[o];
        if o == k || d.index == c.index || rivals.contains(&d.index) {
            continue;
        }
        let overlap = host_matches(&c.host, &d.host) || host_matches(&d.host, &c.host);
        let host = if c.host.starts_with('*') {
            &d.host
        } else {
            &c.host
        };
        if overlap
            && ctx.applied_together(
                c.export_to,
                &c.res.namespace,
                d.export_to,
                &d.res.namespace,
                host,
            )
        {
            rivals.push(d.index);
        }
    }
    rivals.sort_unstable();
    rivals
}
