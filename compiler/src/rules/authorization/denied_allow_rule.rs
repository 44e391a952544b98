//! `MC0405` denied-allow-rule.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::{Context, Resource, Selection, selects};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{AuthorizationAction, AuthorizationPolicySpec, AuthorizationRule, Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an ALLOW rule of an AuthorizationPolicy that a DENY policy
    /// covers entirely: the DENY applies to every workload the ALLOW does, and
    /// one of its rules matches every request the ALLOW rule matches (sources,
    /// operations and conditions, with `*`, `prefix*` and `*suffix` patterns;
    /// IP blocks compare as written). The message shows Istio's evaluation
    /// order: CUSTOM, then DENY, then ALLOW.
    ///
    /// ## Why is this bad?
    /// Istio evaluates DENY before ALLOW, so the ALLOW rule never lets anything
    /// through. Whoever wrote it believes those callers have access; either it
    /// is dead configuration or the DENY is broader than intended and is
    /// blocking legitimate traffic.
    ///
    /// ## Example
    /// ```yaml
    /// kind: AuthorizationPolicy
    /// metadata: {name: deny-writes, namespace: shop}
    /// spec: {action: DENY, rules: [{to: [{operation: {methods: [POST, PUT]}}]}]}
    /// ---
    /// kind: AuthorizationPolicy
    /// metadata: {name: cart-writes, namespace: shop}
    /// spec:
    ///   selector: {matchLabels: {app: cart}}
    ///   rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}], to: [{operation: {methods: [POST]}}]}]
    /// ```
    ///
    /// ## Fix
    /// Narrow the DENY (for example with `notPrincipals`), or remove the ALLOW
    /// rule if the denial is intended.
    pub static DENIED_ALLOW_RULE = {
        code: "MC0405",
        name: "denied-allow-rule",
        group: Authorization,
        severity: Warning,
        summary: "A DENY policy covers an ALLOW rule entirely, so it never allows anything",
        equivalents: [],
    };
}

/// The string-list fields of a source or operation, by YAML name.
fn fields<T: Serialize>(x: &T) -> BTreeMap<String, Vec<String>> {
    let Ok(serde_json::Value::Object(m)) = serde_json::to_value(x) else {
        return BTreeMap::new();
    };
    m.into_iter()
        .filter_map(|(k, v)| {
            let list: Vec<String> = serde_json::from_value(v).ok()?;
            Some((k, list))
        })
        .collect()
}

/// Whether every string pattern `a` matches is matched by pattern `d`.
fn pattern_covers(d: &str, a: &str) -> bool {
    if d == "*" || d == a {
        return true;
    }
    if a == "*" {
        return false;
    }
    if let Some(prefix) = d.strip_suffix('*') {
        return match a.strip_suffix('*') {
            Some(p) => p.starts_with(prefix),
            None => !a.starts_with('*') && a.starts_with(prefix),
        };
    }
    if let Some(suffix) = d.strip_prefix('*') {
        return match a.strip_prefix('*') {
            Some(s) => s.ends_with(suffix),
            None => !a.ends_with('*') && a.ends_with(suffix),
        };
    }
    false
}

/// Whether a clause (source or operation) `d` matches everything clause `a` does.
fn clause_covers(d: &BTreeMap<String, Vec<String>>, a: &BTreeMap<String, Vec<String>>) -> bool {
    d.iter().all(|(k, dv)| {
        let av = a.get(k).filter(|v| !v.is_empty());
        if k.starts_with("not") {
            // `a` must exclude at least what `d` excludes.
            av.is_some_and(|av| dv.iter().all(|x| av.contains(x)))
        } else if k.contains("Blocks") {
            av.is_some_and(|av| av.iter().all(|x| dv.contains(x)))
        } else {
            av.is_some_and(|av| av.iter().all(|x| dv.iter().any(|p| pattern_covers(p, x))))
        }
    })
}

/// Whether a list of alternatives `d` (absent: anything) matches everything
/// the alternatives `a` (absent: anything) match.
fn any_covers(
    d: Option<Vec<BTreeMap<String, Vec<String>>>>,
    a: Option<Vec<BTreeMap<String, Vec<String>>>>,
) -> bool {
    match (d, a) {
        (None, _) => true,
        (Some(d), None) => d.iter().any(BTreeMap::is_empty),
        (Some(d), Some(a)) => a.iter().all(|ac| d.iter().any(|dc| clause_covers(dc, ac))),
    }
}

/// Whether DENY rule `d` matches every request ALLOW rule `a` matches.
fn rule_covers(d: &AuthorizationRule, a: &AuthorizationRule) -> bool {
    let sources = |r: &AuthorizationRule| {
        r.from.as_ref().filter(|f| !f.is_empty()).map(|f| {
            f.iter()
                .map(|x| x.source.as_ref().map(fields).unwrap_or_default())
                .collect()
        })
    };
    let operations = |r: &AuthorizationRule| {
        r.to.as_ref().filter(|t| !t.is_empty()).map(|t| {
            t.iter()
                .map(|x| x.operation.as_ref().map(fields).unwrap_or_default())
                .collect()
        })
    };
    if !any_covers(sources(d), sources(a)) || !any_covers(operations(d), operations(a)) {
        return false;
    }
    // Every condition of `d` is implied by a condition of `a` on the same key.
    d.when.iter().flatten().all(|dc| {
        a.when.iter().flatten().any(|ac| {
            ac.key == dc.key
                && dc.values.as_ref().is_none_or(|dv| {
                    ac.values.as_ref().is_some_and(|av| {
                        !av.is_empty() && av.iter().all(|x| dv.iter().any(|p| pattern_covers(p, x)))
                    })
                })
                && dc.not_values.as_ref().is_none_or(|dn| {
                    ac.not_values
                        .as_ref()
                        .is_some_and(|an| dn.iter().all(|x| an.contains(x)))
                })
        })
    })
}

/// Whether the DENY policy applies to every workload the ALLOW policy does.
fn scope_covers(ctx: &Context, deny: &Resource, allow: &Resource) -> bool {
    let mesh_wide = deny.namespace == ctx.settings.root_namespace;
    if !mesh_wide && deny.namespace != allow.namespace {
        return false;
    }
    match (deny.selection(), allow.selection()) {
        (Some(Selection::Namespace), Some(_)) => mesh_wide || deny.namespace == allow.namespace,
        (Some(Selection::Labels(d, _)), Some(Selection::Labels(a, _))) => selects(d, a),
        _ => false,
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let policies: Vec<(&Resource, &AuthorizationPolicySpec)> = ctx
        .of_kind(Kind::AuthorizationPolicy)
        .filter_map(|(_, r, s)| match s {
            Spec::AuthorizationPolicy(ap) => Some((r, ap)),
            _ => None,
        })
        .collect();
    let denies: Vec<&(&Resource, &AuthorizationPolicySpec)> = policies
        .iter()
        .filter(|(_, ap)| ap.action == Some(AuthorizationAction::Deny))
        .collect();
    if denies.is_empty() {
        return;
    }
    for (r, ap) in &policies {
        if ap.action.is_some_and(|a| a != AuthorizationAction::Allow) {
            continue;
        }
        for (i, rule) in ap.rules.iter().flatten().enumerate() {
            let cover = denies.iter().find_map(|(dr, dap)| {
                if !scope_covers(ctx, dr, r) {
                    return None;
                }
                dap.rules
                    .iter()
                    .flatten()
                    .position(|d| rule_covers(d, rule))
                    .map(|j| (*dr, j))
            });
            let Some((dr, j)) = cover else { continue };
            out.push(
                r.diag(
                    &DENIED_ALLOW_RULE,
                    path!["spec", "rules", i],
                    format!(
                        "rule {i} of this ALLOW policy never allows a request: DENY policy {} (rule {j}) matches every request it does, and Istio evaluates CUSTOM, then DENY, then ALLOW",
                        dr.display()
                    ),
                )
                .with_related(
                    dr.label(path!["spec", "rules", j])
                        .with_message("denies these requests first"),
                )
                .with_help("narrow the DENY rule (for example with notPrincipals), or remove this ALLOW rule"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pattern_covers;

    #[test]
    fn patterns() {
        assert!(pattern_covers("*", "GET"));
        assert!(pattern_covers("/api/*", "/api/v1/*"));
        assert!(pattern_covers("/api/*", "/api/x"));
        assert!(!pattern_covers("/api/*", "/ap*"));
        assert!(!pattern_covers("/api/*", "*/api"));
        assert!(pattern_covers("*.local", "a.local"));
        assert!(pattern_covers("*.local", "*.b.local"));
        assert!(!pattern_covers("GET", "*"));
        assert!(!pattern_covers("GET", "POST"));
    }
}
