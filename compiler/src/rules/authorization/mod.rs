//! Authorization rules (`MC04xx`).

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
            .filter_map(move |(j, f)| f.source.as_ref().map(|s| (i, j, s)))
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
            .filter_map(move |(j, t)| t.operation.as_ref().map(|o| (i, j, o)))
    })
}

/// The parts of a principal `<trust-domain>/ns/<namespace>/sa/<account>`.
pub(crate) fn parse_principal(p: &str) -> Option<(&str, &str, &str)> {
    let (td, rest) = p.split_once("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    Some((td, ns, sa))
}

/// Istio's string match in authorization: `*` (any non-empty), `prefix*`,
/// `*suffix`, or exact.
pub(crate) fn string_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    pattern == value
}
