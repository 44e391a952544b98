//! `MC0115` sidecar-in-ambient.

use crate::analysis::{Context, Selection, Workload};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::Kind;
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a Sidecar resource that no sidecar proxy will read: its
    /// namespace runs in ambient mode (`istio.io/dataplane-mode: ambient`,
    /// without `istio-injection: enabled` or an `istio.io/rev` label), or every
    /// workload its `workloadSelector` picks is an ambient pod
    /// (`ambient.istio.io/redirection: enabled`, or the pod label
    /// `istio.io/dataplane-mode: ambient`).
    ///
    /// ## Why is this bad?
    /// Ambient workloads have no sidecar: ztunnel and waypoints carry their
    /// traffic and ignore the Sidecar resource. Its egress limits, ingress
    /// listeners and outbound policy are not in force, although the repository
    /// says they are.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Namespace
    /// metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
    /// ---
    /// kind: Sidecar
    /// metadata: {name: default, namespace: shop}
    /// spec: {egress: [{hosts: ["./*", "istio-system/*"]}]}
    /// ```
    ///
    /// ## Fix
    /// Delete the Sidecar, or express the intent with what ambient reads: an
    /// AuthorizationPolicy on a waypoint, or the namespace back in sidecar
    /// mode.
    pub static SIDECAR_IN_AMBIENT = {
        code: "MC0115",
        name: "sidecar-in-ambient",
        group: References,
        severity: Warning,
        summary: "A Sidecar resource applies only to ambient workloads, which have no sidecar",
        equivalents: [("IST0167", "sidecar.SelectorAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, _) in ctx.of_kind(Kind::Sidecar) {
        let Some(selection) = r.selection() else {
            continue;
        };
        let (at, why) = if namespace_ambient(ctx, &r.namespace) {
            (
                path!["metadata", "namespace"],
                format!("namespace `{}` runs in ambient mode", r.namespace),
            )
        } else if let Selection::Labels(labels, at) = selection {
            let selected: Vec<&Workload> = ctx.workloads_matching(&r.namespace, labels).collect();
            if selected.is_empty() || !selected.iter().all(|w| pod_ambient(w)) {
                continue;
            }
            (
                at.path(),
                format!(
                    "every workload it selects ({}) runs in ambient mode",
                    selected
                        .iter()
                        .map(|w| format!("`{}`", ctx.resources[w.index].name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else {
            continue;
        };
        out.push(
            r.diag(
                &SIDECAR_IN_AMBIENT,
                at,
                format!("Sidecar `{}` has no effect: {why}, without sidecars", r.name),
            )
            .with_help("delete it, or move the workloads back to sidecar mode (`istio-injection: enabled`)"),
        );
    }
}

/// Istio's reading of a namespace's labels: ambient unless sidecar injection
/// is asked for as well.
fn namespace_ambient(ctx: &Context, ns: &str) -> bool {
    let Some(labels) = ctx.namespaces.get(ns) else {
        return false;
    };
    let label = |k: &str| labels.get(k).map(String::as_str);
    label("istio.io/dataplane-mode") == Some("ambient")
        && label("istio-injection") != Some("enabled")
        && label("istio.io/rev").is_none_or(str::is_empty)
}

fn pod_ambient(w: &Workload) -> bool {
    w.annotations
        .get("ambient.istio.io/redirection")
        .is_some_and(|v| v == "enabled")
        || w.labels
            .get("istio.io/dataplane-mode")
            .is_some_and(|v| v == "ambient")
}
