//! `MC0109` subset-selects-nothing.

use crate::analysis::{Context, Resource, selects};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Map, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// For a DestinationRule whose host is a Service or ServiceEntry of the
    /// repository, checks each subset against the endpoints behind it: the
    /// workloads the Service (or the ServiceEntry's `workloadSelector`)
    /// selects, or the ServiceEntry's inline `endpoints`. A subset whose
    /// labels match none of them is reported, and so is a subset without
    /// labels (it selects every endpoint, so it is not a subset at all).
    /// Workloads are checked only in repositories that declare some.
    ///
    /// ## Why is this bad?
    /// Traffic routed to a subset with no endpoints fails with 503
    /// (`NoHealthyUpstream`). The usual cause is a version label that was
    /// changed on the Deployment but not in the DestinationRule.
    ///
    /// ## Example
    /// ```yaml
    /// kind: DestinationRule
    /// metadata: {name: reviews, namespace: shop}
    /// spec:
    ///   host: reviews
    ///   subsets:
    ///   - name: v3
    ///     labels: {version: v3}     # no reviews pod has version=v3
    /// ```
    ///
    /// ## Fix
    /// Match the labels of a running version (`version: v2`), or deploy the
    /// version before routing to it.
    pub static SUBSET_SELECTS_NOTHING = {
        code: "MC0109",
        name: "subset-selects-nothing",
        group: References,
        severity: Error,
        summary: "A DestinationRule subset selects none of its Service's workloads",
        equivalents: [
            ("IST0173", "destinationrule.SubsetSelectPodAnalyzer"),
            ("KIA0203", "destinationrules.NoDestinationChecker"),
            ("KIA0209", "destinationrules.NoDestinationChecker"),
        ],
    };
}

/// The label sets of the endpoints behind a host, as far as the repository
/// says: the workloads its Services select, the inline `endpoints` of its
/// ServiceEntries and the workloads their `workloadSelector` picks. `None`
/// when the repository does not say (no Service with a selector, no
/// ServiceEntry with endpoints; workloads count only in repositories that
/// declare some).
fn endpoint_labels<'a>(
    ctx: &'a Context,
    fqdn: &str,
    from: &str,
) -> Option<(Vec<&'a Map<String, String>>, &'static str)> {
    let mut known = false;
    let mut sets = Vec::new();
    let mut what = "workloads";
    let workloads = ctx.has_workloads();
    for h in ctx.lookup(fqdn, from) {
        let r = &ctx.resources[h.index];
        match r.spec.as_deref() {
            Some(Spec::Service(_)) if workloads => {
                let Some(sel) = h.selector.as_ref().filter(|s| !s.is_empty()) else {
                    continue;
                };
                known = true;
                sets.extend(ctx.workloads_matching(&h.namespace, sel).map(|w| &w.labels));
            }
            Some(Spec::ServiceEntry(se)) => {
                if let Some(endpoints) = se.endpoints.as_ref().filter(|e| !e.is_empty()) {
                    known = true;
                    what = "endpoints";
                    sets.extend(endpoints.iter().filter_map(|e| e.labels.as_ref()));
                } else if workloads
                    && let Some(sel) = se
                        .workload_selector
                        .as_ref()
                        .and_then(|w| w.labels.as_ref())
                        .filter(|l| !l.is_empty())
                {
                    known = true;
                    sets.extend(ctx.workloads_matching(&h.namespace, sel).map(|w| &w.labels));
                }
            }
            _ => {}
        }
    }
    known.then_some((sets, what))
}

/// What the rule reads of a ServiceEntry beyond the registry: its
/// endpoints' labels and its workload selector.
pub(crate) fn project(r: &Resource) -> String {
    match r.spec.as_deref() {
        Some(Spec::ServiceEntry(se)) => {
            let endpoints: Option<Vec<_>> = se
                .endpoints
                .as_ref()
                .map(|e| e.iter().map(|e| &e.labels).collect());
            let selector = se.workload_selector.as_ref().map(|w| &w.labels);
            format!("{endpoints:?} {selector:?}")
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        let fqdn = ctx.fqdn(&dr.host, &r.namespace);
        if fqdn.starts_with('*') {
            continue;
        }
        let Some((endpoints, what)) = endpoint_labels(ctx, &fqdn, &r.namespace) else {
            continue;
        };
        for (i, subset) in dr.subsets.iter().flatten().enumerate() {
            let labels = subset.labels.clone().unwrap_or_default();
            if labels.is_empty() {
                out.push(
                    r.diag(
                        &SUBSET_SELECTS_NOTHING,
                        path!["spec", "subsets", i],
                        format!(
                            "subset `{}` has no labels: it selects every endpoint of `{}`",
                            subset.name, dr.host
                        ),
                    )
                    .with_help(
                        "give the subset the labels that distinguish its version (`version: v1`)",
                    )
                    .with_upstream(&["KIA0209"]),
                );
                continue;
            }
            if !endpoints.iter().any(|e| selects(&labels, e)) {
                let shown = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                out.push(
                    r.diag(
                        &SUBSET_SELECTS_NOTHING,
                        path!["spec", "subsets", i, "labels"],
                        format!("subset `{}` (`{shown}`) selects none of the {what} behind `{}`", subset.name, dr.host),
                    )
                    .with_help("match the labels of a deployed version, or deploy the version before routing to it")
                    .with_upstream(&["IST0173", "KIA0203"]),
                );
            }
        }
    }
}
