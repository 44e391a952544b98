//! `MC0404` invalid-method.

use super::operations;
use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an AuthorizationPolicy operation `methods` or `notMethods` entry
    /// that no HTTP request method can match: not an upper-case HTTP method
    /// (`GET`, `POST`...), nor `*`, nor a `prefix*` or `*suffix` of one. Lower
    /// case is reported too: the match is case-sensitive.
    ///
    /// ## Why is this bad?
    /// The operation matches no request: an ALLOW rule denies everything it was
    /// meant to let through, a DENY rule never fires. gRPC methods are not HTTP
    /// methods (gRPC always uses `POST`); they belong in `paths`.
    ///
    /// ## Example
    /// ```yaml
    /// kind: AuthorizationPolicy
    /// spec:
    ///   rules:
    ///   - to: [{operation: {methods: [get, "/shop.Cart/Add"]}}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   - to: [{operation: {methods: [GET]}}, {operation: {paths: ["/shop.Cart/Add"]}}]
    /// ```
    pub static INVALID_METHOD = {
        code: "MC0404",
        name: "invalid-method",
        group: Authorization,
        severity: Error,
        summary: "An AuthorizationPolicy method matches no HTTP method",
        equivalents: [("KIA0102", "authorization.NamespaceMethodChecker")],
    };
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Whether the pattern matches some HTTP method, case-sensitively.
fn matches_a_method(m: &str) -> bool {
    if m == "*" {
        return true;
    }
    if let Some(suffix) = m.strip_prefix('*') {
        return !suffix.is_empty() && METHODS.iter().any(|x| x.ends_with(suffix));
    }
    if let Some(prefix) = m.strip_suffix('*') {
        return !prefix.is_empty() && METHODS.iter().any(|x| x.starts_with(prefix));
    }
    METHODS.contains(&m)
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(ap) = spec else {
            continue;
        };
        for (i, j, op) in operations(ap) {
            for (field, list) in [("methods", &op.methods), ("notMethods", &op.not_methods)] {
                for (k, m) in list.iter().flatten().enumerate() {
                    if matches_a_method(m) {
                        continue;
                    }
                    let hint = if matches_a_method(&m.to_ascii_uppercase()) {
                        format!(
                            "methods are matched case-sensitively; write `{}`",
                            m.to_ascii_uppercase()
                        )
                    } else if m.starts_with('/') {
                        "gRPC methods go in `paths` (`/package.Service/Method`); gRPC requests are POST".to_string()
                    } else {
                        format!("use one of {}", METHODS.join(", "))
                    };
                    out.push(
                        r.diag(
                            &INVALID_METHOD,
                            path!["spec", "rules", i, "to", j, "operation", field, k],
                            format!("`{m}` matches no HTTP method"),
                        )
                        .with_help(hint),
                    );
                }
            }
        }
    }
}
