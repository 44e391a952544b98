//! `MC0101` dangling-subset.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};

declare_rule! {
    /// ## What it does
    /// Reports a VirtualService route or mirror that names a `subset` which no
    /// DestinationRule for that host defines.
    ///
    /// ## Why is this bad?
    /// The proxy has no cluster for the subset, so every request the route takes
    /// fails with 503 (`NR`, no route), the classic broken canary.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// spec:
    ///   hosts: [reviews]
    ///   http:
    ///   - route:
    ///     - destination: {host: reviews, subset: v4}   # no DestinationRule defines v4
    /// ```
    ///
    /// ## Fix
    /// Define the subset in the host's DestinationRule, or route to one that exists:
    /// ```yaml
    /// kind: DestinationRule
    /// spec:
    ///   host: reviews
    ///   subsets:
    ///   - name: v4
    ///     labels: {version: v4}
    /// ```
    pub static DANGLING_SUBSET = {
        code: "MC0101",
        name: "dangling-subset",
        group: References,
        severity: Error,
        summary: "A route names a subset that no DestinationRule defines",
        equivalents: [("IST0101", "virtualservice.DestinationRuleAnalyzer"), ("KIA1107", "virtualservices.SubsetPresenceChecker")],
    };
}

/// What the rule reads of a DestinationRule (`crate::rules::Deps`; its
/// host is the registry's): its subsets' names.
pub(crate) fn project(r: &crate::analysis::Resource) -> String {
    match r.spec.as_deref() {
        Some(Spec::DestinationRule(dr)) => {
            let names: Vec<&str> = dr
                .subsets
                .iter()
                .flatten()
                .map(|s| s.name.as_str())
                .collect();
            format!("{names:?}")
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let subsets = |i: usize| -> Vec<&str> {
        ctx.destination_rule(i)
            .map(|dr| {
                dr.subsets
                    .iter()
                    .flatten()
                    .map(|s| s.name.as_str())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        for (path, dest) in crate::rules::walk::destinations(vs) {
            let Some(subset) = dest.subset.as_deref() else {
                continue;
            };
            let host = ctx.fqdn(&dest.host, &r.namespace);
            // Istio applies the most specific DestinationRule whose host covers this one.
            let candidates = ctx.destination_rules_for(&host);
            if candidates.iter().any(|&i| subsets(i).contains(&subset)) {
                continue;
            }
            let mut d = r.diag(
                &DANGLING_SUBSET,
                path.join("subset"),
                format!(
                    "subset `{subset}` of host `{}` is not defined by any DestinationRule",
                    dest.host
                ),
            );
            for &i in candidates {
                let dr = &ctx.resources[i];
                let subsets = subsets(i);
                let known = if subsets.is_empty() {
                    "defines no subsets".to_string()
                } else {
                    format!(
                        "defines {}",
                        subsets
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                d = d.with_related(
                    dr.label(crate::path!["spec", "subsets"])
                        .with_message(format!("{} {known}", dr.display())),
                );
            }
            d = d.with_help(if candidates.is_empty() {
                format!(
                    "add a DestinationRule for `{}` that defines subset `{subset}`",
                    dest.host
                )
            } else {
                format!(
                    "add subset `{subset}` to the DestinationRule, or route to a subset it defines"
                )
            });
            out.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Input, Options, analyze};

    #[test]
    fn the_most_specific_wildcard_destination_rule_applies() {
        let dr = |name: &str, host: &str, subset: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  host: \"{host}\"\n  subsets: [{{name: {subset}}}]\n---\n"
            )
        };
        let vs = |subset: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: shop}}\nspec:\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
            )
        };
        let run = |subset: &str| {
            let text =
                dr("all", "*", "v9") + &dr("shop", "*.shop.svc.cluster.local", "v1") + &vs(subset);
            let a = analyze(vec![Input::new("t.yaml", text)], &Options::default());
            a.diagnostics
                .iter()
                .filter(|d| d.code() == "MC0101")
                .count()
        };
        assert_eq!(run("v1"), 0, "*.shop.svc.cluster.local defines v1");
        assert_eq!(run("v9"), 1, "the less specific `*` rule does not apply");
    }

    #[test]
    fn covering_goes_from_specific_to_general() {
        let hosts: Vec<String> = crate::analysis::covering("a.b.c")
            .map(|h| h.into_owned())
            .collect();
        assert_eq!(hosts, ["a.b.c", "*.b.c", "*.c", "*"]);
    }
}
