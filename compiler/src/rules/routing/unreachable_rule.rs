//! `MC0201` unreachable-rule.

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, L4MatchAttributes, Spec};
use crate::path;
use crate::rules::routing::matchset::{
    Oracle, http_covers, http_is_catch_all, tcp_covers, tls_covers,
};

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
        equivalents: [("IST0130", "schema.ValidationAnalyzer.VirtualService"), ("IST0131", "schema.ValidationAnalyzer.VirtualService")],
    };
}

/// One rule of a list (http, tcp or tls): its display name (`2 (`canary`)`)
/// and its matches (none: it matches everything).
type Rule<'m, M> = (String, &'m [M]);

/// Shadowing over one ordered list of rules: `covers(a, b)` says whether
/// match `a` accepts everything match `b` does, `catch_all(m)` whether a
/// match accepts everything.
fn shadowing<M>(
    r: &Resource,
    list: &str,
    rules: &[Rule<'_, M>],
    catch_all: impl Fn(&M) -> bool,
    mut covers: impl FnMut(&M, &M) -> bool,
    out: &mut Vec<Diagnostic>,
) {
    let mut first_catch_all: Option<usize> = None;
    for (i, (name, matches)) in rules.iter().enumerate() {
        if let Some(c) = first_catch_all {
            out.push(
                r.diag(
                    &UNREACHABLE_RULE,
                    path!["spec", list, i],
                    format!(
                        "rule {} is unreachable: rule {} before it matches every request",
                        name, rules[c].0
                    ),
                )
                .with_related(
                    r.label(path!["spec", list, c])
                        .with_message("matches every request"),
                )
                .with_help("move the catch-all rule to the end, or give it a match")
                .with_upstream(&["IST0130"]),
            );
            continue;
        }
        if matches.is_empty() || matches.iter().any(&catch_all) {
            first_catch_all = Some(i);
            continue;
        }
        // For each match, the first earlier match (earlier rule, or earlier in
        // this rule) that covers it.
        let mut covered: Vec<(usize, (usize, usize))> = Vec::new();
        for (j, m) in matches.iter().enumerate() {
            let by = (0..=i).find_map(|ei| {
                let earlier = if ei == i { &matches[..j] } else { rules[ei].1 };
                earlier.iter().position(|e| covers(e, m)).map(|ej| (ei, ej))
            });
            if let Some(by) = by {
                covered.push((j, by));
            }
        }
        let all_by_earlier =
            covered.len() == matches.len() && covered.iter().all(|(_, (ei, _))| *ei < i);
        if all_by_earlier {
            let (_, (ei, ej)) = covered[0];
            let what = if covered.iter().all(|(_, b)| b.0 == ei) {
                format!("rule {}", rules[ei].0)
            } else {
                "earlier rules".to_string()
            };
            // istioctl reports a fully shadowed rule twice: the rule is unused
            // (IST0130) and its match is ineffective (IST0131).
            let upstream: &[&str] = &["IST0130", "IST0131"];
            out.push(
                r.diag(
                    &UNREACHABLE_RULE,
                    path!["spec", list, i],
                    format!(
                        "rule {} is unreachable: {what} before it already match{} everything it matches",
                        name,
                        if what.starts_with("rule") { "es" } else { "" }
                    ),
                )
                .with_related(r.label(path!["spec", list, ei, "match", ej]).with_message("already matched here"))
                .with_help("remove the rule, or move it above the broader rule that catches its traffic")
                .with_upstream(upstream),
            );
            continue;
        }
        for (j, (ei, ej)) in covered {
            let by = if ei == i {
                format!("match {ej} of the same rule")
            } else {
                format!("rule {} (match {ej})", rules[ei].0)
            };
            out.push(
                r.diag(
                    &UNREACHABLE_RULE,
                    path!["spec", list, i, "match", j],
                    format!(
                        "match {j} of rule {name} is never used: {by} catches everything it matches"
                    ),
                )
                .with_related(
                    r.label(path!["spec", list, ei, "match", ej])
                        .with_message("catches it"),
                )
                .with_help("remove the match, or make the earlier match narrower")
                .with_upstream(&["IST0131"]),
            );
        }
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let mut oracle = Oracle::default();
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        if let Some(http) = vs.http.as_deref() {
            let rules: Vec<Rule<'_, _>> = http
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    (
                        rule_name(h.name.as_deref(), i),
                        h.r#match.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            shadowing(
                r,
                "http",
                &rules,
                http_is_catch_all,
                |a, b| http_covers(&mut oracle, a, b),
                out,
            );
        }
        if let Some(tcp) = vs.tcp.as_deref() {
            let rules: Vec<Rule<'_, _>> = tcp
                .iter()
                .enumerate()
                .map(|(i, t)| (rule_name(None, i), t.r#match.as_deref().unwrap_or_default()))
                .collect();
            let everything = L4MatchAttributes::default();
            shadowing(
                r,
                "tcp",
                &rules,
                |m| tcp_covers(m, &everything),
                tcp_covers,
                out,
            );
        }
        if let Some(tls) = vs.tls.as_deref() {
            let rules: Vec<Rule<'_, _>> = tls
                .iter()
                .enumerate()
                .map(|(i, t)| (rule_name(None, i), t.r#match.as_slice()))
                .collect();
            shadowing(r, "tls", &rules, |_| false, tls_covers, out);
        }
    }
}

fn rule_name(name: Option<&str>, i: usize) -> String {
    match name {
        Some(n) => format!("{i} (`{n}`)"),
        None => i.to_string(),
    }
}
