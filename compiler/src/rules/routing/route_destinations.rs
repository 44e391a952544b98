//! `MC0208` single-destination-weight and `MC0209` duplicate-route-destination.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};

declare_rule! {
    /// ## What it does
    /// Reports a route with a single destination whose `weight` is set to
    /// something other than 100.
    ///
    /// ## Why is this bad?
    /// With one destination Istio sends it all the traffic and ignores the
    /// weight. A `weight: 10` left behind usually means a canary's other half
    /// was deleted, and the author believes 90% still goes elsewhere.
    ///
    /// ## Example
    /// ```yaml
    /// route:
    /// - destination: {host: reviews, subset: v2}
    ///   weight: 10
    /// ```
    ///
    /// ## Fix
    /// Remove the weight, or add back the destinations it was split with.
    pub static SINGLE_DESTINATION_WEIGHT = {
        code: "MC0208",
        name: "single-destination-weight",
        group: Routing,
        severity: Warning,
        summary: "A single route destination has a weight that is not 100",
        equivalents: [("KIA1104", "virtualservices.RouteChecker")],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a route that lists the same destination (host, subset and port)
    /// twice.
    ///
    /// ## Why is this bad?
    /// The weights of the copies add up, so the split is not the one the
    /// numbers next to each entry suggest, and editing one copy leaves the
    /// other behind.
    ///
    /// ## Example
    /// ```yaml
    /// route:
    /// - {destination: {host: reviews, subset: v1}, weight: 50}
    /// - {destination: {host: reviews, subset: v1}, weight: 50}
    /// ```
    ///
    /// ## Fix
    /// Keep one entry per destination with the summed weight, or point the
    /// second one at the subset you meant.
    pub static DUPLICATE_ROUTE_DESTINATION = {
        code: "MC0209",
        name: "duplicate-route-destination",
        group: Routing,
        severity: Warning,
        summary: "A route lists the same destination twice",
        equivalents: [("KIA1105", "virtualservices.RouteChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        for route in crate::rules::walk::routes(vs) {
            if let [(d, Some(w))] = route.destinations[..]
                && w != 100
            {
                out.push(
                    r.diag(
                        &SINGLE_DESTINATION_WEIGHT,
                        route.path().join(0).join("weight"),
                        format!(
                            "the only destination (`{}`) has weight {w}; it gets all the traffic",
                            d.host
                        ),
                    )
                    .with_help("remove the weight, or add back the destinations it was split with"),
                );
            }
            // (host, subset, port) of each destination, hosts resolved.
            let keys: Vec<_> = route
                .destinations
                .iter()
                .map(|(x, _)| {
                    (
                        ctx.fqdn(&x.host, &r.namespace),
                        x.subset.as_deref(),
                        x.port_number(),
                    )
                })
                .collect();
            for (j, (d, _)) in route.destinations.iter().enumerate() {
                let Some(first) = keys[..j].iter().position(|k| *k == keys[j]) else {
                    continue;
                };
                let what = match &d.subset {
                    Some(s) => format!("`{}` subset `{s}`", d.host),
                    None => format!("`{}`", d.host),
                };
                out.push(
                    r.diag(
                        &DUPLICATE_ROUTE_DESTINATION,
                        route.path().join(j).join("destination"),
                        format!("{what} is already destination {first} of this route; their weights add up"),
                    )
                    .with_related(
                        r.label(route.path().join(first).join("destination"))
                            .with_message("first listed here"),
                    )
                    .with_help("keep one entry per destination with the summed weight"),
                );
            }
        }
    }
}
