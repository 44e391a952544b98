//! `MC0503` outlier-ejects-all.

use super::traffic_policies;
use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};

declare_rule! {
    /// ## What it does
    /// Reports outlier detection with `maxEjectionPercent: 100` and no
    /// `minHealthPercent`, in a DestinationRule's traffic policy, its
    /// port-level settings or a subset's.
    ///
    /// ## Why is this bad?
    /// Every endpoint may be ejected at once. When a bad deploy or a shared
    /// dependency makes all of them fail for a moment, the proxy ejects them all
    /// and answers `503 no healthy upstream` for the whole ejection time, well
    /// after the backends have recovered. Istio sets no panic threshold unless
    /// `minHealthPercent` is given.
    ///
    /// ## Example
    /// ```yaml
    /// trafficPolicy:
    ///   outlierDetection: {consecutive5xxErrors: 5, maxEjectionPercent: 100}
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   outlierDetection: {consecutive5xxErrors: 5, maxEjectionPercent: 50}
    ///   # or keep 100 and add minHealthPercent: 50
    /// ```
    pub static OUTLIER_EJECTS_ALL = {
        code: "MC0503",
        name: "outlier-ejects-all",
        group: Resilience,
        severity: Warning,
        summary: "Outlier detection may eject every endpoint",
        equivalents: [],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        for super::PolicyParts { at, outlier, .. } in traffic_policies(dr) {
            let Some(o) = outlier else { continue };
            if o.max_ejection_percent == Some(100) && o.min_health_percent.unwrap_or(0) == 0 {
                out.push(
                    r.diag(
                        &OUTLIER_EJECTS_ALL,
                        at.join("outlierDetection").join("maxEjectionPercent"),
                        format!(
                            "outlier detection may eject every endpoint of `{}`; then all requests fail with 503",
                            dr.host
                        ),
                    )
                    .with_help("lower maxEjectionPercent, or set minHealthPercent so the proxy keeps routing when too few endpoints are healthy"),
                );
            }
        }
    }
}
