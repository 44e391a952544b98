//! `MC0201` unreachable-rule.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{HttpMatchRequest, HttpRoute, Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an HTTP rule of a VirtualService that can never match: it follows a
    /// rule that matches every request (no `match`, or an empty match), or every
    /// one of its matches repeats a match of an earlier rule exactly. A single
    /// match that repeats an earlier one is reported too. Istio evaluates rules in
    /// order and the first match wins.
    ///
    /// ## Why is this bad?
    /// The rule looks active in review but receives no traffic. It is usually a
    /// catch-all added above a canary or a header route, silently disabling it.
    ///
    /// ## Example
    /// ```yaml
    /// http:
    /// - route:
    ///   - destination: {host: reviews, subset: v1}
    /// - match:
    ///   - headers: {end-user: {exact: jason}}
    ///   route:
    ///   - destination: {host: reviews, subset: v2}
    /// ```
    ///
    /// ## Fix
    /// Put specific rules before the catch-all:
    /// ```yaml
    /// http:
    /// - match:
    ///   - headers: {end-user: {exact: jason}}
    ///   route:
    ///   - destination: {host: reviews, subset: v2}
    /// - route:
    ///   - destination: {host: reviews, subset: v1}
    /// ```
    pub static UNREACHABLE_RULE = {
        code: "MC0201",
        name: "unreachable-rule",
        group: Routing,
        severity: Warning,
        summary: "An HTTP rule can never match because earlier rules catch its traffic",
        equivalents: [("IST0130", "schema.ValidationAnalyzer.VirtualService")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        let rules = vs.http.as_deref().unwrap_or_default();
        let mut catch_all: Option<usize> = None;
        let mut earlier: Vec<(usize, usize, HttpMatchRequest)> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let name = rule_name(rule, i);
            if let Some(c) = catch_all {
                out.push(
                    r.diag(
                        &UNREACHABLE_RULE,
                        path!["spec", "http", i],
                        format!(
                            "rule {name} is unreachable: rule {} before it matches every request",
                            rule_name(&rules[c], c)
                        ),
                    )
                    .with_related(
                        r.label(path!["spec", "http", c])
                            .with_message("matches every request"),
                    )
                    .with_help("move the catch-all rule to the end of `http`"),
                );
                continue;
            }
            let matches = rule.r#match.as_deref().unwrap_or_default();
            let mut repeated = Vec::new();
            for (j, m) in matches.iter().enumerate() {
                let norm = normalized(m);
                if let Some((ei, ej, _)) = earlier.iter().find(|(_, _, e)| *e == norm) {
                    repeated.push((j, *ei, *ej));
                }
            }
            if !matches.is_empty() && repeated.len() == matches.len() {
                let (_, ei, ej) = repeated[0];
                out.push(
                    r.diag(&UNREACHABLE_RULE, path!["spec", "http", i], format!("rule {name} is unreachable: each of its matches repeats an earlier rule's match"))
                        .with_related(r.label(path!["spec", "http", ei, "match", ej]).with_message("already matched here"))
                        .with_help("remove the rule, or make its matches more specific than the earlier ones"),
                );
            } else {
                for (j, ei, ej) in repeated {
                    out.push(
                        r.diag(&UNREACHABLE_RULE, path!["spec", "http", i, "match", j], format!("match {j} of rule {name} is never used: rule {} has the same match", rule_name(&rules[ei], ei)))
                            .with_related(r.label(path!["spec", "http", ei, "match", ej]).with_message("same match here"))
                            .with_help("remove the duplicate match"),
                    );
                }
            }
            if matches.is_empty()
                || matches
                    .iter()
                    .any(|m| normalized(m) == HttpMatchRequest::default())
            {
                catch_all = Some(i);
            }
            earlier.extend(
                matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| (i, j, normalized(m))),
            );
        }
    }
}

/// A match without its name (names do not affect matching).
fn normalized(m: &HttpMatchRequest) -> HttpMatchRequest {
    HttpMatchRequest {
        name: None,
        ..m.clone()
    }
}

fn rule_name(rule: &HttpRoute, i: usize) -> String {
    match &rule.name {
        Some(n) => format!("{i} (`{n}`)"),
        None => i.to_string(),
    }
}
