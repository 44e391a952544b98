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

/// One rule of a list (http, tcp or tls) reduced to what shadowing needs.
struct RuleView {
    /// Display name (`2 (`canary`)`).
    name: String,
    /// Number of match entries (0: matches everything).
    matches: usize,
}

/// Shadowing over one ordered list of rules. `covers(o, (ri, mi), (rj, mj))`
/// says whether match `mi` of rule `ri` covers match `mj` of rule `rj`;
/// `catch_all(ri, mi)` whether a match accepts everything.
fn shadowing(
    r: &Resource,
    list: &str,
    rules: &[RuleView],
    catch_all: &mut dyn FnMut(usize, usize) -> bool,
    covers: &mut dyn FnMut((usize, usize), (usize, usize)) -> bool,
    out: &mut Vec<Diagnostic>,
) {
    let mut first_catch_all: Option<usize> = None;
    for (i, rule) in rules.iter().enumerate() {
        if let Some(c) = first_catch_all {
            out.push(
                r.diag(
                    &UNREACHABLE_RULE,
                    path!["spec", list, i],
                    format!(
                        "rule {} is unreachable: rule {} before it matches every request",
                        rule.name, rules[c].name
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
        if rule.matches == 0 || (0..rule.matches).any(|j| catch_all(i, j)) {
            first_catch_all = Some(i);
            continue;
        }
        // For each match, the first earlier match (earlier rule, or earlier in
        // this rule) that covers it.
        let mut covered: Vec<(usize, (usize, usize))> = Vec::new();
        for j in 0..rule.matches {
            let by = (0..=i).find_map(|ei| {
                let upto = if ei == i { j } else { rules[ei].matches };
                (0..upto)
                    .find(|&ej| covers((ei, ej), (i, j)))
                    .map(|ej| (ei, ej))
            });
            if let Some(by) = by {
                covered.push((j, by));
            }
        }
        let all_by_earlier =
            covered.len() == rule.matches && covered.iter().all(|(_, (ei, _))| *ei < i);
        if all_by_earlier {
            let (_, (ei, ej)) = covered[0];
            let what = if covered.iter().all(|(_, b)| b.0 == ei) {
                format!("rule {}", rules[ei].name)
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
                        rule.name,
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
                format!("rule {} (match {ej})", rules[ei].name)
            };
            out.push(
                r.diag(
                    &UNREACHABLE_RULE,
                    path!["spec", list, i, "match", j],
                    format!(
                        "match {j} of rule {} is never used: {by} catches everything it matches",
                        rule.name
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
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        if let Some(http) = vs.http.as_deref() {
            let views: Vec<RuleView> = http
                .iter()
                .enumerate()
                .map(|(i, h)| RuleView {
                    name: rule_name(h.name.as_deref(), i),
                    matches: h.r#match.as_ref().map_or(0, Vec::len),
                })
                .collect();
            let m = |i: usize, j: usize| &http[i].r#match.as_ref().expect("counted")[j];
            shadowing(
                r,
                "http",
                &views,
                &mut |i, j| http_is_catch_all(m(i, j)),
                &mut |(ai, aj), (bi, bj)| http_covers(&mut oracle, m(ai, aj), m(bi, bj)),
                out,
            );
        }
        if let Some(tcp) = vs.tcp.as_deref() {
            let views: Vec<RuleView> = tcp
                .iter()
                .enumerate()
                .map(|(i, t)| RuleView {
                    name: rule_name(None, i),
                    matches: t.r#match.as_ref().map_or(0, Vec::len),
                })
                .collect();
            let m = |i: usize, j: usize| &tcp[i].r#match.as_ref().expect("counted")[j];
            shadowing(
                r,
                "tcp",
                &views,
                &mut |i, j| tcp_covers(m(i, j), &L4MatchAttributes::default()),
                &mut |(ai, aj), (bi, bj)| tcp_covers(m(ai, aj), m(bi, bj)),
                out,
            );
        }
        if let Some(tls) = vs.tls.as_deref() {
            let views: Vec<RuleView> = tls
                .iter()
                .enumerate()
                .map(|(i, t)| RuleView {
                    name: rule_name(None, i),
                    matches: t.r#match.len(),
                })
                .collect();
            let m = |i: usize, j: usize| &tls[i].r#match[j];
            shadowing(
                r,
                "tls",
                &views,
                &mut |_, _| false,
                &mut |(ai, aj), (bi, bj)| tls_covers(m(ai, aj), m(bi, bj)),
                out,
            );
        }
    }
}

fn rule_name(name: Option<&str>, i: usize) -> String {
    match name {
        Some(n) => format!("{i} (`{n}`)"),
        None => i.to_string(),
    }
}
