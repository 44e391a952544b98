//! `MC0202` weight-sum.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};

declare_rule! {
    /// ## What it does
    /// Reports a route with more than one destination whose weights do not add up
    /// to 100. A destination without `weight` counts as 0, as in Istio.
    ///
    /// ## Why is this bad?
    /// Istio's admission webhook rejects it (`total destination weight 120 != 100`),
    /// so the rollout stops at apply time; where validation is off, the split that
    /// reaches the proxies is not the one the author wrote.
    ///
    /// ## Example
    /// ```yaml
    /// route:
    /// - destination: {host: reviews, subset: v1}
    ///   weight: 90
    /// - destination: {host: reviews, subset: v2}
    ///   weight: 20
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// route:
    /// - destination: {host: reviews, subset: v1}
    ///   weight: 80
    /// - destination: {host: reviews, subset: v2}
    ///   weight: 20
    /// ```
    pub static WEIGHT_SUM = {
        code: "MC0202",
        name: "weight-sum",
        group: Routing,
        severity: Error,
        summary: "Route weights do not sum to 100",
        equivalents: [("IST0106", "schema.ValidationAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        for route in crate::rules::walk::routes(vs) {
            let weights: Vec<Option<i64>> = route.destinations.iter().map(|(_, w)| *w).collect();
            let path = route.path();
            if weights.len() < 2 {
                continue;
            }
            let total: i64 = weights.iter().map(|w| w.unwrap_or(0)).sum();
            if total == 100 {
                continue;
            }
            let shown = weights
                .iter()
                .map(|w| w.map_or("unset".to_string(), |w| w.to_string()))
                .collect::<Vec<_>>()
                .join(" + ");
            let mut d = r.diag(
                &WEIGHT_SUM,
                path.clone(),
                format!("destination weights sum to {total}, not 100 ({shown})"),
            );
            for (j, w) in weights.iter().enumerate() {
                if w.is_none() {
                    d = d
                        .with_related(r.label(path.join(j)).with_message("no weight: counts as 0"));
                }
            }
            out.push(d.with_help("adjust the weights so they add up to exactly 100"));
        }
    }
}
