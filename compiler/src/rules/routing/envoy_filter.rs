//! `MC0212` envoy-filter-patch-order and `MC0213` envoy-filter-patch-ignored.

use std::collections::BTreeSet;

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{
    EnvoyConfigObjectPatch, EnvoyFilterApplyTo as To, EnvoyFilterPatchOperation as Op, Kind, Spec,
    enum_name,
};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports an EnvoyFilter without a `priority` that patches relative to
    /// something that must already be there: `INSERT_BEFORE` or
    /// `INSERT_AFTER` a filter, `REPLACE` or `REMOVE` one. The message says so
    /// when the same filter is also patched for a particular `proxyVersion`,
    /// by this EnvoyFilter or one before it (EnvoyFilters are taken in
    /// namespace/name order).
    ///
    /// ## Why is this bad?
    /// Without a priority, EnvoyFilters are applied in creation order. A
    /// relative patch whose anchor another EnvoyFilter adds, renames or
    /// removes then works or silently does nothing depending on which was
    /// created first: after a restore from Git, in a new cluster, or during an
    /// upgrade when the version-specific patch stops matching.
    ///
    /// ## Example
    /// ```yaml
    /// kind: EnvoyFilter
    /// spec:
    ///   configPatches:
    ///   - applyTo: HTTP_FILTER
    ///     match: {listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager,
    ///                                                subFilter: {name: envoy.filters.http.router}}}}}
    ///     patch: {operation: INSERT_BEFORE, value: {name: envoy.lua}}
    /// ```
    ///
    /// ## Fix
    /// Set `priority` (lower runs first), or use an absolute operation
    /// (`INSERT_FIRST`, `ADD`).
    pub static ENVOY_FILTER_PATCH_ORDER = {
        code: "MC0212",
        name: "envoy-filter-patch-order",
        group: Routing,
        severity: Warning,
        summary: "An EnvoyFilter patches relative to other patches without a priority",
        equivalents: [
            ("IST0151", "envoyfilter.EnvoyPatchAnalyzer"),
            ("IST0155", "envoyfilter.EnvoyPatchAnalyzer"),
        ],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports an EnvoyFilter patch whose operation does not apply to its
    /// `applyTo`: `ADD` or `REMOVE` on `ROUTE_CONFIGURATION` or `HTTP_ROUTE`,
    /// and `REPLACE` on anything but `HTTP_FILTER`, `NETWORK_FILTER` and
    /// `VIRTUAL_HOST`.
    ///
    /// ## Why is this bad?
    /// Istio skips such a patch: the route configuration is not added, the
    /// route not removed, the cluster not replaced. Nothing rejects the
    /// EnvoyFilter, so the change it was written for never happens and
    /// nobody is told.
    ///
    /// ## Example
    /// ```yaml
    /// kind: EnvoyFilter
    /// spec:
    ///   configPatches:
    ///   - applyTo: CLUSTER
    ///     patch: {operation: REPLACE, value: {name: lua_cluster, type: STRICT_DNS}}
    /// ```
    ///
    /// ## Fix
    /// Use the operation the target supports: `MERGE` or `REMOVE` then `ADD`
    /// for a cluster, `MERGE` for a route configuration.
    pub static ENVOY_FILTER_PATCH_IGNORED = {
        code: "MC0213",
        name: "envoy-filter-patch-ignored",
        group: Routing,
        severity: Error,
        summary: "An EnvoyFilter patch uses an operation its target does not support",
        equivalents: [
            ("IST0152", "envoyfilter.EnvoyPatchAnalyzer"),
            ("IST0153", "envoyfilter.EnvoyPatchAnalyzer"),
            ("IST0154", "envoyfilter.EnvoyPatchAnalyzer"),
        ],
    };
}

/// The name of the filter a patch is about: the patch value's `name`, else
/// the filter its listener match names.
fn patched_name(p: &EnvoyConfigObjectPatch) -> Option<&str> {
    let value = p.patch.as_ref()?.value.as_ref()?.as_object()?;
    match value.get("name") {
        Some(n) => n.as_str(),
        None => p
            .r#match
            .as_ref()?
            .listener
            .as_ref()?
            .filter_chain
            .as_ref()?
            .filter
            .as_ref()?
            .name
            .as_deref(),
    }
}

/// How Istio reads a patch's operation on its target.
enum Verdict {
    /// Applied without depending on other patches.
    Absolute,
    /// Applied relative to something another patch may add or remove.
    Relative,
    /// Skipped; the upstream code that says so.
    Ignored(&'static str),
}

fn verdict(to: Option<To>, op: Option<Op>) -> Verdict {
    let route = matches!(to, Some(To::RouteConfiguration | To::HttpRoute));
    match op {
        Some(Op::Add) if route => Verdict::Ignored("IST0153"),
        Some(Op::Remove) if route => Verdict::Ignored("IST0154"),
        Some(Op::Remove) => Verdict::Relative,
        Some(Op::Replace)
            if !matches!(
                to,
                Some(To::HttpFilter | To::NetworkFilter | To::VirtualHost)
            ) =>
        {
            Verdict::Ignored("IST0152")
        }
        Some(Op::Replace | Op::InsertBefore | Op::InsertAfter) => Verdict::Relative,
        _ => Verdict::Absolute,
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let mut filters: Vec<&Resource> = ctx.of_kind(Kind::EnvoyFilter).map(|(_, r, _)| r).collect();
    filters.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // Filters patched for a particular proxy version so far.
    let mut versioned: BTreeSet<&str> = BTreeSet::new();
    for r in filters {
        let Some(Spec::EnvoyFilter(ef)) = r.spec.as_deref() else {
            continue;
        };
        let unprioritised = ef.priority.unwrap_or(0) == 0;
        // (patch index, named filter also patched per proxy version)
        let mut relative: Vec<(usize, Option<&str>)> = Vec::new();
        for (i, p) in ef.config_patches.iter().flatten().enumerate() {
            let Some(patch) = &p.patch else { break };
            let name = patched_name(p);
            match verdict(p.apply_to, patch.operation) {
                Verdict::Ignored(code) => out.push(
                    r.diag(
                        &ENVOY_FILTER_PATCH_IGNORED,
                        path!["spec", "configPatches", i, "patch", "operation"],
                        format!(
                            "{} does not apply to {}: Istio skips this patch",
                            patch.operation.map_or("this operation".into(), enum_name),
                            p.apply_to.map_or("an unset applyTo".into(), enum_name)
                        ),
                    )
                    .with_related(
                        r.label(path!["spec", "configPatches", i, "applyTo"])
                            .with_message("the target"),
                    )
                    .with_help(match code {
                        "IST0152" => "REPLACE works on HTTP_FILTER, NETWORK_FILTER and VIRTUAL_HOST; use MERGE, or REMOVE and ADD, elsewhere",
                        _ => "route configurations and routes are changed with MERGE",
                    })
                    .with_upstream(&[code]),
                ),
                Verdict::Relative if unprioritised => {
                    let shadowed = name.filter(|n| versioned.contains(n));
                    relative.push((i, shadowed));
                }
                _ => {}
            }
            let has_version = p
                .r#match
                .as_ref()
                .and_then(|m| m.proxy.as_ref())
                .and_then(|p| p.proxy_version.as_deref())
                .is_some_and(|v| !v.is_empty());
            if has_version && let Some(n) = name {
                versioned.insert(n);
            }
        }
        // One finding per kind of problem and filter, listing its patches.
        let (plain, versioned_too): (Vec<_>, Vec<_>) = relative
            .into_iter()
            .partition(|(_, shadowed)| shadowed.is_none());
        for (group, code) in [(plain, "IST0151"), (versioned_too, "IST0155")] {
            let Some(&(first, shadowed)) = group.first() else {
                continue;
            };
            let at = |i: usize| path!["spec", "configPatches", i, "patch", "operation"];
            let which = group
                .iter()
                .map(|(i, _)| format!("configPatches[{i}]"))
                .collect::<Vec<_>>()
                .join(", ");
            let message = match shadowed {
                None => format!(
                    "EnvoyFilter has no priority, and {which} {} relative to what other patches may add or remove: whether {} depends on the order EnvoyFilters were created",
                    if group.len() > 1 { "patch" } else { "patches" },
                    if group.len() > 1 {
                        "they apply"
                    } else {
                        "it applies"
                    }
                ),
                Some(n) => format!(
                    "EnvoyFilter has no priority, and {which} {} `{n}` relatively while a patch for a particular proxyVersion also changes it: the result changes during an upgrade",
                    if group.len() > 1 { "patch" } else { "patches" }
                ),
            };
            let mut d = r
                .diag(&ENVOY_FILTER_PATCH_ORDER, at(first), message)
                .with_help("set `priority`, or use INSERT_FIRST or ADD")
                .with_upstream(&[code]);
            for (i, _) in group.iter().skip(1) {
                d = d.with_related(r.label(at(*i)).with_message("also relative"));
            }
            out.push(d);
        }
    }
}
