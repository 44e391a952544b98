//! `MC0107` selector-matches-nothing.

use crate::analysis::{Context, Selection};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::Kind;
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a Sidecar, PeerAuthentication, AuthorizationPolicy,
    /// RequestAuthentication or Gateway whose workload selector matches no
    /// workload (Deployment, StatefulSet, DaemonSet or Pod) of its namespace; in
    /// the root namespace, and for Gateways, of any namespace (Gateways only
    /// when the repository declares workloads in the root namespace, as it
    /// then holds the mesh install). An
    /// AuthorizationPolicy without a selector in a namespace that has no
    /// workloads is reported too. The rule runs only in repositories that declare workloads.
    ///
    /// ## Why is this bad?
    /// The policy protects or configures nothing. Usually a label was renamed
    /// (`app: reviews` became `app.kubernetes.io/name: reviews`) or the policy
    /// sits in the wrong namespace, and the workload it was written for runs
    /// without it.
    ///
    /// ## Example
    /// ```yaml
    /// kind: AuthorizationPolicy
    /// metadata: {name: reviews-viewer, namespace: shop}
    /// spec:
    ///   selector:
    ///     matchLabels: {app: reveiws}
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///     matchLabels: {app: reviews}
    /// ```
    pub static SELECTOR_MATCHES_NOTHING = {
        code: "MC0107",
        name: "selector-matches-nothing",
        group: References,
        severity: Warning,
        summary: "A policy's workload selector matches no workload",
        equivalents: [
            ("IST0127", "auth.AuthorizationPoliciesAnalyzer"),
            ("IST0101", "sidecar.SelectorAnalyzer"),
            ("IST0101", "gateway.IngressGatewayPortAnalyzer"),
            ("KIA0004", "authorization.WorkloadSelectorChecker"),
            ("KIA0004", "peerauthentications.WorkloadSelectorChecker"),
            ("KIA0004", "sidecars.WorkloadSelectorChecker"),
            ("KIA0302", "gateways.SelectorChecker"),
        ],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    if !ctx.has_workloads() {
        return;
    }
    for r in ctx.all_subjects() {
        let Some(sel) = r.selection() else { continue };
        // Gateway workloads come with the mesh install; check them only in
        // repositories that declare workloads in the root namespace.
        if r.kind == Kind::Gateway && !ctx.has_workloads_in(&ctx.settings.root_namespace) {
            continue;
        }
        let anywhere = r.kind == Kind::Gateway || r.namespace == ctx.settings.root_namespace;
        let (found, path, what) = match sel {
            Selection::Namespace => {
                // Only an AuthorizationPolicy is worth reporting here: it is
                // the one kind people write namespace-wide for a purpose.
                if anywhere || r.kind != Kind::AuthorizationPolicy {
                    continue;
                }
                let any = ctx.has_workloads_in(&r.namespace);
                (
                    any,
                    path!["metadata", "namespace"],
                    format!(
                        "namespace `{}` has no workloads for it to apply to",
                        r.namespace
                    ),
                )
            }
            Selection::Labels(labels, path) => {
                let any = if anywhere {
                    ctx.workloads_matching_anywhere(labels).next().is_some()
                } else {
                    ctx.workloads_matching(&r.namespace, labels)
                        .next()
                        .is_some()
                };
                let shown = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let scope = if anywhere {
                    "any namespace".to_string()
                } else {
                    format!("namespace `{}`", r.namespace)
                };
                (
                    any,
                    path.path(),
                    format!("selector `{shown}` matches no workload in {scope}"),
                )
            }
        };
        if found {
            continue;
        }
        // One rule, several upstream checks: the one for this kind.
        let checks: &[&str] = match r.kind {
            Kind::AuthorizationPolicy => &[
                "auth.AuthorizationPoliciesAnalyzer",
                "authorization.WorkloadSelectorChecker",
            ],
            Kind::Sidecar => &[
                "sidecar.SelectorAnalyzer",
                "sidecars.WorkloadSelectorChecker",
            ],
            Kind::PeerAuthentication => &["peerauthentications.WorkloadSelectorChecker"],
            Kind::Gateway => &[
                "gateway.IngressGatewayPortAnalyzer",
                "gateways.SelectorChecker",
            ],
            _ => &[],
        };
        let d = r
            .diag(
                &SELECTOR_MATCHES_NOTHING,
                path,
                format!("{} {what}", r.kind.as_str()),
            )
            .with_upstream_checks(checks);
        out.push(d.with_help(
            "check the labels against the workloads' pod template labels, and the namespace",
        ));
    }
}
