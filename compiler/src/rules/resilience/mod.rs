//! Resilience rules (`MC05xx`): retries, timeouts, circuit breaking.

pub mod outlier_ejects_all;
pub mod retry_amplification;
pub mod retry_timeout;
pub mod zero_pool_limit;

use crate::model::{
    ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};
use crate::path;
use crate::yaml::YamlPath;

/// A protobuf duration as Istio writes it (`1s`, `0.5s`, `250ms`, `1m30s`,
/// `1h`), in seconds.
pub(crate) fn duration_secs(text: &str) -> Option<f64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Some(total)
}

/// One traffic policy of a DestinationRule, with its place.
pub(crate) struct PolicyParts<'a> {
    /// `spec.trafficPolicy`, `spec.subsets[i].trafficPolicy`, or one of their
    /// `portLevelSettings[j]`.
    pub at: YamlPath,
    pub pool: Option<&'a ConnectionPoolSettings>,
    pub outlier: Option<&'a OutlierDetection>,
    pub load_balancer: Option<&'a LoadBalancerSettings>,
}

/// Every traffic policy of a DestinationRule: top level, its port-level
/// settings, each subset's and their port-level settings.
pub(crate) fn traffic_policies(dr: &DestinationRuleSpec) -> Vec<PolicyParts<'_>> {
    fn add<'a>(out: &mut Vec<PolicyParts<'a>>, base: YamlPath, tp: &'a TrafficPolicy) {
        for (i, p) in tp.port_level_settings.iter().flatten().enumerate() {
            out.push(PolicyParts {
                at: base.join("portLevelSettings").join(i),
                pool: p.connection_pool.as_ref(),
                outlier: p.outlier_detection.as_deref(),
                load_balancer: p.load_balancer.as_deref(),
            });
        }
        out.push(PolicyParts {
            at: base,
            pool: tp.connection_pool.as_ref(),
            outlier: tp.outlier_detection.as_deref(),
            load_balancer: tp.load_balancer.as_deref(),
        });
    }
    let mut out = Vec::new();
    if let Some(tp) = &dr.traffic_policy {
        add(&mut out, path!["spec", "trafficPolicy"], tp);
    }
    for (i, s) in dr.subsets.iter().flatten().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            add(&mut out, path!["spec", "subsets", i, "trafficPolicy"], tp);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::duration_secs;

    #[test]
    fn durations() {
        assert_eq!(duration_secs("1s"), Some(1.0));
        assert_eq!(duration_secs("250ms"), Some(0.25));
        assert_eq!(duration_secs("1m30s"), Some(90.0));
        assert_eq!(duration_secs("0.5s"), Some(0.5));
        assert_eq!(duration_secs("1h"), Some(3600.0));
        assert_eq!(duration_secs("10"), None);
        assert_eq!(duration_secs("s"), None);
        assert_eq!(duration_secs(""), None);
    }
}
