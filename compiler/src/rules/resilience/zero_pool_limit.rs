//! `MC0504` zero-pool-limit.

use super::traffic_policies;
use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};

declare_rule! {
    /// ## What it does
    /// Reports a connection-pool limit set to 0 in a DestinationRule
    /// (`tcp.maxConnections`, `http.http1MaxPendingRequests`,
    /// `http.http2MaxRequests`, `http.maxRequestsPerConnection`,
    /// `http.maxRetries`, `http.maxConcurrentStreams`), in any traffic policy.
    ///
    /// ## Why is this bad?
    /// Istio reads 0 as "not set": the limit becomes Envoy's default (about
    /// 4 billion, or unlimited). Whoever wrote 0 meant either "no traffic" or
    /// "no limit", and the circuit breaker they reasoned about does not exist.
    ///
    /// ## Example
    /// ```yaml
    /// trafficPolicy:
    ///   connectionPool: {tcp: {maxConnections: 0}}
    /// ```
    ///
    /// ## Fix
    /// Remove the field for no limit, or set the limit you mean (at least 1).
    pub static ZERO_POOL_LIMIT = {
        code: "MC0504",
        name: "zero-pool-limit",
        group: Resilience,
        severity: Warning,
        summary: "A connection-pool limit of zero means no limit",
        equivalents: [],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        for super::PolicyParts { at, pool, .. } in traffic_policies(dr) {
            let Some(pool) = pool else { continue };
            let mut limits: Vec<(&str, &str, Option<i64>)> = Vec::new();
            if let Some(t) = &pool.tcp {
                limits.push(("tcp", "maxConnections", t.max_connections));
            }
            if let Some(h) = &pool.http {
                limits.extend([
                    (
                        "http",
                        "http1MaxPendingRequests",
                        h.http1_max_pending_requests,
                    ),
                    ("http", "http2MaxRequests", h.http2_max_requests),
                    (
                        "http",
                        "maxRequestsPerConnection",
                        h.max_requests_per_connection,
                    ),
                    ("http", "maxRetries", h.max_retries),
                    ("http", "maxConcurrentStreams", h.max_concurrent_streams),
                ]);
            }
            for (group, field, value) in limits {
                if value != Some(0) {
                    continue;
                }
                out.push(
                    r.diag(
                        &ZERO_POOL_LIMIT,
                        at.join("connectionPool").join(group).join(field),
                        format!(
                            "`{field}: 0` is read as unset: the limit is Envoy's default, not zero"
                        ),
                    )
                    .with_help(
                        "remove the field for no limit, or set the limit you mean (at least 1)",
                    ),
                );
            }
        }
    }
}
