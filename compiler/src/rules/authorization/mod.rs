//! Authorization rules (`MC04xx`).

pub mod claim_route;
pub mod denied_allow_rule;
pub mod identity_without_mtls;
pub mod invalid_method;
pub mod unknown_principal;
pub mod unknown_source_namespace;

use crate::model::{AuthorizationPolicySpec, Operation, Source};

/// Every `rules[i].from[j].source` of a policy.
pub(crate) fn sources(
    ap: &AuthorizationPolicySpec,
) -> impl Iterator<Item = (usize, usize, &Source)> {
    ap.rules.iter().flatten().enumerate().flat_map(|(i, rule)| {
        rule.from
            .iter()
            .flatten()
            .enumerate()
            .filter_map(move |(j, f)| f.source.as_deref().map(|s| (i, j, s)))
    })
}

/// Every `rules[i].to[j].operation` of a policy.
pub(crate) fn operations(
    ap: &AuthorizationPolicySpec,
) -> impl Iterator<Item = (usize, usize, &Operation)> {
    ap.rules.iter().flatten().enumerate().flat_map(|(i, rule)| {
        rule.to
            .iter()
            .flatten()
            .enumerate()
            .filter_map(move |(j, t)| t.operation.as_deref().map(|o| (i, j, o)))
    })
}

// The evaluator's principal parsing and string match, so the rules judge
// authorization exactly as the proxy enforces it.
pub(crate) use meshc_ir::eval::{parse_principal, string_match};
