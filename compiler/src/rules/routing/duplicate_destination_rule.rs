//! `MC0205` duplicate-destination-rule.

use std::collections::HashMap;

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports DestinationRules without a `workloadSelector` that configure the
    /// same host, or the same subset of a host, and are visible together in some
    /// namespace (their `exportTo` lists overlap) whose proxies import the
    /// host: a namespace whose Sidecar `egress.hosts` leave the host out never
    /// applies either rule.
    ///
    /// ## Why is this bad?
    /// Istio uses one DestinationRule per host for a client: the oldest wins for
    /// the traffic policy, so TLS, load balancing or circuit breaking silently
    /// come from the other file, and which one wins changes when resources are
    /// recreated.
    ///
    /// ## Example
    /// ```yaml
    /// kind: DestinationRule
    /// metadata: {name: reviews, namespace: shop}
    /// spec: {host: reviews, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
    /// ---
    /// kind: DestinationRule
    /// metadata: {name: reviews-lb, namespace: shop}
    /// spec: {host: reviews, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}
    /// ```
    ///
    /// ## Fix
    /// Merge them into one DestinationRule per host.
    pub static DUPLICATE_DESTINATION_RULE = {
        code: "MC0205",
        name: "duplicate-destination-rule",
        group: Routing,
        severity: Warning,
        summary: "Several DestinationRules configure the same host or subset",
        equivalents: [("KIA0201", "destinationrules.MultiMatchChecker")],
    };
}

/// What the rule reads of a DestinationRule (`crate::rules::Deps`): its
/// host, whether it selects workloads, its subsets' names and `exportTo`.
pub(crate) fn project(r: &crate::analysis::Resource) -> String {
    match r.spec.as_deref() {
        Some(crate::model::Spec::DestinationRule(dr)) => {
            let subsets: Vec<&str> = dr
                .subsets
                .iter()
                .flatten()
                .map(|s| s.name.as_str())
                .collect();
            format!(
                "{:?}",
                (
                    &dr.host,
                    dr.workload_selector.is_some(),
                    subsets,
                    &dr.export_to
                )
            )
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    // Per resolved host, the rules without a workload selector with their
    // subset names and exportTo.
    type Rule<'a> = (usize, Vec<&'a str>, &'a [String]);
    let mut by_host: HashMap<&String, Vec<Rule>> = HashMap::new();
    for (host, rules) in &ctx.destination_rules {
        // One rule for a host duplicates nothing.
        if rules.len() < 2 {
            continue;
        }
        for &i in rules {
            let Some(dr) = ctx
                .destination_rule(i)
                .filter(|dr| dr.workload_selector.is_none())
            else {
                continue;
            };
            let subsets = dr
                .subsets
                .iter()
                .flatten()
                .map(|s| s.name.as_str())
                .collect();
            by_host.entry(host).or_default().push((
                i,
                subsets,
                dr.export_to.as_deref().unwrap_or_default(),
            ));
        }
    }
    let mut hosts: Vec<&String> = by_host.keys().copied().collect();
    hosts.sort();
    for host in hosts {
        let group = &by_host[host];
        if group.len() < 2 {
            continue;
        }
        for (a, (i, subs, exp)) in group.iter().enumerate() {
            let r = &ctx.resources[*i];
            let mut rivals: Vec<(usize, Vec<&str>)> = Vec::new();
            for (b, (j, other, exp2)) in group.iter().enumerate() {
                let rj = &ctx.resources[*j];
                if a == b {
                    continue;
                }
                // Both apply only where both are exported, and only to
                // proxies that import the host.
                if !ctx.applied_together(exp, &r.namespace, exp2, &rj.namespace, host) {
                    continue;
                }
                let shared: Vec<&str> =
                    subs.iter().copied().filter(|s| other.contains(s)).collect();
                if (subs.is_empty() && other.is_empty()) || !shared.is_empty() {
                    rivals.push((*j, shared));
                }
            }
            if rivals.is_empty() {
                continue;
            }
            let names: Vec<String> = rivals
                .iter()
                .map(|(j, _)| format!("{}/{}", ctx.resources[*j].namespace, ctx.resources[*j].name))
                .collect();
            let what = match rivals.iter().flat_map(|(_, s)| s.iter()).next() {
                Some(s) => format!("subset `{s}` of host `{host}`"),
                None => format!("host `{host}`"),
            };
            let mut d = r
                .diag(
                    &DUPLICATE_DESTINATION_RULE,
                    path!["spec", "host"],
                    format!(
                        "{what} is also configured by {}; only one DestinationRule applies",
                        names.join(", ")
                    ),
                )
                .with_help("merge them into one DestinationRule per host");
            for (j, _) in &rivals {
                d = d.with_related(
                    ctx.resources[*j]
                        .label(path!["spec", "host"])
                        .with_message("also configures it"),
                );
            }
            out.push(d);
        }
    }
}
