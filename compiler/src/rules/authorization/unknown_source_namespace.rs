//! `MC0402` unknown-source-namespace.

use super::{sources, string_match};
use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an AuthorizationPolicy source `namespaces` or `notNamespaces`
    /// entry (exact, `prefix*` or `*suffix`) that matches no namespace of the
    /// repository. It runs only when the repository declares its Namespaces.
    ///
    /// ## Why is this bad?
    /// A misspelt namespace in an ALLOW rule denies the callers it meant to let
    /// in; in a DENY rule or under `notNamespaces` it silently protects nothing.
    ///
    /// ## Example
    /// ```yaml
    /// kind: AuthorizationPolicy
    /// spec:
    ///   rules:
    ///   - from: [{source: {namespaces: [frontned]}}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   - from: [{source: {namespaces: [frontend]}}]
    /// ```
    pub static UNKNOWN_SOURCE_NAMESPACE = {
        code: "MC0402",
        name: "unknown-source-namespace",
        group: Authorization,
        severity: Warning,
        summary: "An AuthorizationPolicy names a source namespace that does not exist",
        equivalents: [("IST0101", "auth.AuthorizationPoliciesAnalyzer"), ("KIA0101", "authorization.NamespaceMethodChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    if ctx.namespaces.is_empty() {
        return;
    }
    for (_, r, spec) in ctx.subjects(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(ap) = spec else {
            continue;
        };
        for (i, j, src) in sources(ap) {
            for (field, list) in [
                ("namespaces", &src.namespaces),
                ("notNamespaces", &src.not_namespaces),
            ] {
                for (k, ns) in list.iter().flatten().enumerate() {
                    if ctx.known_namespaces.contains(ns)
                        || (ns.contains('*')
                            && ctx.known_namespaces.iter().any(|n| string_match(ns, n)))
                    {
                        continue;
                    }
                    let mut d = r
                        .diag(
                            &UNKNOWN_SOURCE_NAMESPACE,
                            path!["spec", "rules", i, "from", j, "source", field, k],
                            format!(
                                "source namespace `{ns}` matches no namespace of the repository"
                            ),
                        )
                        .with_help("fix the name, or declare the Namespace in the repository");
                    if field == "notNamespaces" {
                        d = d.with_upstream(&["IST0101"]);
                    }
                    out.push(d);
                }
            }
        }
    }
}
