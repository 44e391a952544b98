//! `MC0105` unknown-export-namespace.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::Spec;
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an `exportTo` entry of a VirtualService, DestinationRule or
    /// ServiceEntry that names a namespace the repository does not have. `.`,
    /// `*` and `~` are always valid. The rule runs only in repositories that
    /// declare their Namespaces, so it never guesses; a namespace counts as
    /// existing when it is declared or when any resource lives in it.
    ///
    /// ## Why is this bad?
    /// `exportTo` is an allow-list: a misspelt namespace silently hides the
    /// resource from the namespace that needed it, and routing there falls back
    /// to defaults.
    ///
    /// ## Example
    /// ```yaml
    /// kind: DestinationRule
    /// metadata: {name: reviews, namespace: shop}
    /// spec:
    ///   host: reviews
    ///   exportTo: [".", "fronted"]     # meant `frontend`
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   exportTo: [".", "frontend"]
    /// ```
    pub static UNKNOWN_EXPORT_NAMESPACE = {
        code: "MC0105",
        name: "unknown-export-namespace",
        group: References,
        severity: Warning,
        summary: "exportTo names a namespace that does not exist",
        equivalents: [("KIA0005", "common.ExportToNamespaceChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    if ctx.namespaces.is_empty() {
        return;
    }
    for r in ctx.all_subjects() {
        let export_to = match r.spec.as_deref() {
            Some(Spec::VirtualService(s)) => &s.export_to,
            Some(Spec::DestinationRule(s)) => &s.export_to,
            Some(Spec::ServiceEntry(s)) => &s.export_to,
            _ => continue,
        };
        for (i, ns) in export_to.iter().flatten().enumerate() {
            if matches!(ns.as_str(), "." | "*" | "~") || ctx.known_namespaces.contains(ns) {
                continue;
            }
            out.push(
                r.diag(
                    &UNKNOWN_EXPORT_NAMESPACE,
                    path!["spec", "exportTo", i],
                    format!("exportTo names namespace `{ns}`, which does not exist"),
                )
                .with_help("check the spelling, or declare the Namespace in the repository"),
            );
        }
    }
}
