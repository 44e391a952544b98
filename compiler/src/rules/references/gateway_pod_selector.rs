//! `MC0116` selector-on-gateway-pods.

use std::collections::BTreeSet;

use crate::analysis::{Context, Selection};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::Kind;

/// The label Gateway API controllers put on the pods of a Gateway.
const GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";

declare_rule! {
    /// ## What it does
    /// Reports an AuthorizationPolicy, RequestAuthentication, Telemetry or
    /// WasmPlugin whose `selector` picks the pods of a Kubernetes Gateway API
    /// Gateway: the
    /// selector names the `gateway.networking.k8s.io/gateway-name` label, or
    /// matches pods of its namespace that carry it.
    ///
    /// ## Why is this bad?
    /// Istio attaches policy to a Gateway API Gateway through `targetRef`
    /// and ignores workload selectors that pick its pods. The policy is not
    /// in force at the gateway: an AuthorizationPolicy there denies nothing,
    /// a RequestAuthentication validates no token, a Telemetry or WasmPlugin
    /// configures nothing.
    ///
    /// ## Example
    /// ```yaml
    /// kind: AuthorizationPolicy
    /// metadata: {name: edge, namespace: shop}
    /// spec:
    ///   selector: {matchLabels: {gateway.networking.k8s.io/gateway-name: public}}
    ///   action: DENY
    ///   rules: [{from: [{source: {ipBlocks: [203.0.113.0/24]}}]}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// spec:
    ///   targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public}]
    /// ```
    pub static SELECTOR_ON_GATEWAY_PODS = {
        code: "MC0116",
        name: "selector-on-gateway-pods",
        group: References,
        severity: Warning,
        summary: "A policy selects a Kubernetes Gateway's pods instead of targeting the Gateway",
        equivalents: [("IST0166", "k8sgateway.SelectorAnalyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for kind in [
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::WasmPlugin,
    ] {
        for (_, r, _) in ctx.subjects(kind) {
            // `selection` is `None` for a policy attached by `targetRef`.
            let Some(Selection::Labels(labels, at)) = r.selection() else {
                continue;
            };
            let mut gateways: BTreeSet<&str> = BTreeSet::new();
            if let Some(name) = labels.get(GATEWAY_NAME) {
                gateways.insert(name);
            }
            for w in ctx.workloads_matching(&r.namespace, labels) {
                if let Some(name) = w.labels.get(GATEWAY_NAME) {
                    gateways.insert(name);
                }
            }
            if gateways.is_empty() {
                continue;
            }
            let names: Vec<String> = gateways.iter().map(|g| format!("`{g}`")).collect();
            out.push(
                r.diag(
                    &SELECTOR_ON_GATEWAY_PODS,
                    at.path(),
                    format!(
                        "{} selects the pods of Kubernetes Gateway {}; Istio ignores selectors on Gateway pods, so the policy is not in force there",
                        kind.as_str(),
                        names.join(", ")
                    ),
                )
                .with_help("attach it with `targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: ...}]` instead of `selector`"),
            );
        }
    }
}
