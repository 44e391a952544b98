//! `MC0109` subset-selects-nothing.

use crate::analysis::{Context, selects};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// For a DestinationRule whose host is a Service of the repository, checks
    /// each subset against the workloads that Service selects: a subset whose
    /// labels match none of them is reported, and so is a subset without labels
    /// (it selects every endpoint, so it is not a subset at all). The rule runs
    /// only in repositories that declare workloads.
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

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    if !ctx.has_workloads() {
        return;
    }
    for (_, r, spec) in ctx.of_kind(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        let fqdn = ctx.fqdn(&dr.host, &r.namespace);
        if fqdn.starts_with('*') {
            continue;
        }
        let services: Vec<_> = ctx
            .lookup(&fqdn, &r.namespace)
            .into_iter()
            .filter(|h| h.selector.as_ref().is_some_and(|s| !s.is_empty()))
            .collect();
        if services.is_empty() {
            continue;
        }
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
            let any = services.iter().any(|svc| {
                let sel = svc.selector.as_ref().expect("filtered");
                ctx.workloads_matching(&svc.namespace, sel)
                    .any(|w| selects(&labels, &w.labels))
            });
            if !any {
                let shown = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                out.push(
                    r.diag(
                        &SUBSET_SELECTS_NOTHING,
                        path!["spec", "subsets", i, "labels"],
                        format!("subset `{}` (`{shown}`) selects none of the workloads behind `{}`", subset.name, dr.host),
                    )
                    .with_help("match the labels of a deployed version, or deploy the version before routing to it")
                    .with_upstream(&["IST0173", "KIA0203"]),
                );
            }
        }
    }
}
