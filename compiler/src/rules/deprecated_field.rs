//! `MC0013` deprecated-field.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::Spec;
use crate::path;
use crate::rules::resilience::{PolicyParts, traffic_policies};
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports fields the Istio API has deprecated or no longer reads:
    /// - VirtualService `http[].fault.delay.percent` (use `percentage`);
    /// - VirtualService `http[].mirror_percent` / `mirrorPercent` (use
    ///   `mirrorPercentage`);
    /// - DestinationRule `loadBalancer.warmupDurationSecs` (use `warmup`) and
    ///   `loadBalancer.consistentHash.minimumRingSize` (use
    ///   `consistentHash.ringHash.minimumRingSize`);
    /// - Sidecar `outboundTrafficPolicy.egressProxy`, which Istio ignores.
    ///
    /// ## Why is this bad?
    /// A deprecated field is read for now and dropped in a later Istio release,
    /// when the behaviour it configured silently stops. A field Istio ignores
    /// configures nothing today: the author believes a policy is in force that
    /// is not.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// spec:
    ///   http:
    ///   - fault: {delay: {fixedDelay: 2s, percent: 10}}
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   - fault: {delay: {fixedDelay: 2s, percentage: {value: 10}}}
    /// ```
    pub static DEPRECATED_FIELD = {
        code: "MC0013",
        name: "deprecated-field",
        group: Load,
        severity: Warning,
        summary: "A field is deprecated or ignored by Istio",
        equivalents: [("IST0002", "deprecation.DeprecationAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for r in ctx.all_subjects() {
        let mut found: Vec<(YamlPath, String, &str)> = Vec::new();
        match r.spec.as_deref() {
            Some(Spec::VirtualService(vs)) => {
                for (i, route) in vs.http.iter().flatten().enumerate() {
                    let delay = route.fault.as_ref().and_then(|f| f.delay.as_ref());
                    if delay.is_some_and(|d| d.percent.is_some()) {
                        found.push((
                            path!["spec", "http", i, "fault", "delay", "percent"],
                            "`fault.delay.percent` is deprecated; Istio reads `percentage`".into(),
                            "write `percentage: {value: N}`, which also takes fractions",
                        ));
                    }
                    for (key, set) in [
                        ("mirror_percent", route.mirror_percent.is_some()),
                        ("mirrorPercent", route.mirror_percent_.is_some()),
                    ] {
                        if set {
                            found.push((
                                path!["spec", "http", i, key],
                                format!("`{key}` is deprecated; Istio reads `mirrorPercentage`"),
                                "write `mirrorPercentage: {value: N}`",
                            ));
                        }
                    }
                }
            }
            Some(Spec::DestinationRule(dr)) => {
                for PolicyParts {
                    at, load_balancer, ..
                } in traffic_policies(dr)
                {
                    let Some(lb) = load_balancer else { continue };
                    let at = at.join("loadBalancer");
                    if lb.warmup_duration_secs.is_some() {
                        found.push((
                            at.join("warmupDurationSecs"),
                            "`warmupDurationSecs` is deprecated; Istio reads `warmup`".into(),
                            "write `warmup: {duration: ...}`",
                        ));
                    }
                    if lb
                        .consistent_hash
                        .as_ref()
                        .is_some_and(|c| c.minimum_ring_size.is_some())
                    {
                        found.push((
                            at.join("consistentHash").join("minimumRingSize"),
                            "`consistentHash.minimumRingSize` is deprecated; Istio reads `ringHash.minimumRingSize`".into(),
                            "write `consistentHash.ringHash.minimumRingSize`",
                        ));
                    }
                }
            }
            Some(Spec::Sidecar(sc))
                if sc
                    .outbound_traffic_policy
                    .as_ref()
                    .is_some_and(|o| o.egress_proxy.is_some()) =>
            {
                found.push((
                    path!["spec", "outboundTrafficPolicy", "egressProxy"],
                    "`outboundTrafficPolicy.egressProxy` is ignored: Istio no longer reads it"
                        .into(),
                    "route egress through an egress gateway with a VirtualService instead",
                ));
            }
            _ => {}
        }
        for (at, message, help) in found {
            out.push(r.diag(&DEPRECATED_FIELD, at, message).with_help(help));
        }
    }
}
