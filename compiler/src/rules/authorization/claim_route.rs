//! `MC0406` claim-route-without-jwt.

use crate::analysis::{Context, Resource, Selection, Workload, gateway_key, selects};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Map, Spec, VirtualServiceSpec};
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports a VirtualService bound to a Gateway that matches on a JWT
    /// claim (a `headers` or `withoutHeaders` key `@request.auth.claims.…`)
    /// when no RequestAuthentication applies to the gateway's workloads: none
    /// in the mesh root namespace or the workloads' namespace that selects
    /// them. When the repository declares no workload the Gateway selects,
    /// a RequestAuthentication counts if it is in the root namespace or the
    /// Gateway's and its selector asks for no label the Gateway's does not.
    ///
    /// ## Why is this bad?
    /// Claims exist only after a RequestAuthentication has validated the
    /// token. Without one, a `headers` match on a claim never succeeds (the
    /// route is dead, requests fall through to later rules) and a
    /// `withoutHeaders` match always does (the route meant for users without
    /// the claim takes everyone).
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// spec:
    ///   hosts: [shop.example.com]
    ///   gateways: [istio-system/public]
    ///   http:
    ///   - match: [{headers: {"@request.auth.claims.group": {exact: beta}}}]
    ///     route: [{destination: {host: shop, subset: beta}}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// kind: RequestAuthentication
    /// metadata: {name: public-jwt, namespace: istio-system}
    /// spec:
    ///   selector: {matchLabels: {istio: ingressgateway}}
    ///   jwtRules: [{issuer: https://auth.example.com, jwksUri: https://auth.example.com/jwks}]
    /// ```
    pub static CLAIM_ROUTE_WITHOUT_JWT = {
        code: "MC0406",
        name: "claim-route-without-jwt",
        group: Authorization,
        severity: Error,
        summary: "A gateway route matches a JWT claim no RequestAuthentication provides",
        equivalents: [("IST0149", "virtualservice.JWTClaimRouteAnalyzer")],
    };
}

const CLAIM: &str = "@request.auth.claims.";

/// The first claim key a VirtualService matches on, with its path.
fn claim_key(vs: &VirtualServiceSpec) -> Option<(&str, YamlPath)> {
    for (i, http) in vs.http.iter().flatten().enumerate() {
        for (j, m) in http.r#match.iter().flatten().enumerate() {
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                if let Some(k) = map
                    .iter()
                    .flatten()
                    .map(|(k, _)| k)
                    .find(|k| k.starts_with(CLAIM))
                {
                    return Some((k, path!["spec", "http", i, "match", j, field, k.as_str()]));
                }
            }
        }
    }
    None
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let root = ctx.settings.root_namespace.as_str();
    let authns: Vec<&Resource> = ctx
        .of_kind(Kind::RequestAuthentication)
        .map(|(_, r, _)| r)
        .collect();
    // A RequestAuthentication of namespace `ns`, or of the root namespace,
    // that applies to pods with these labels. One attached by `targetRef`
    // counts as applying: meshc does not resolve targets.
    let applies = |ns: &str, labels: &Map<String, String>| {
        authns.iter().any(|ra| {
            (ra.namespace == root || ra.namespace == ns)
                && match ra.selection() {
                    None | Some(Selection::Namespace) => true,
                    Some(Selection::Labels(l, _)) => selects(l, labels),
                }
        })
    };
    let empty = crate::model::Map::default();
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        // Only routes through a Gateway: most VirtualServices are left
        // before their matches are read.
        if vs.gateways.iter().flatten().all(|g| g == "mesh") {
            continue;
        }
        let Some((key, at)) = claim_key(vs) else {
            continue;
        };
        for gw in vs.gateways.iter().flatten().filter(|g| *g != "mesh") {
            let Some(&gi) = ctx.gateways.get(&gateway_key(gw, &r.namespace)) else {
                continue;
            };
            let g = &ctx.resources[gi];
            let Some(Spec::Gateway(spec)) = g.spec.as_deref() else {
                continue;
            };
            let selector = spec.selector.as_ref().unwrap_or(&empty);
            let pods: Vec<&Workload> = ctx.workloads_matching_anywhere(selector).collect();
            let uncovered: Vec<&Workload> = pods
                .iter()
                .copied()
                .filter(|w| !applies(&w.namespace, &w.labels))
                .collect();
            let why = if pods.is_empty() {
                if applies(&g.namespace, selector) {
                    continue;
                }
                "no RequestAuthentication applies to its workloads".to_string()
            } else if uncovered.is_empty() {
                continue;
            } else {
                format!(
                    "no RequestAuthentication applies to its workload{} {}",
                    if uncovered.len() > 1 { "s" } else { "" },
                    uncovered
                        .iter()
                        .map(|w| format!("`{}`", ctx.resources[w.index].name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            out.push(
                r.diag(
                    &CLAIM_ROUTE_WITHOUT_JWT,
                    at.clone(),
                    format!(
                        "routes on JWT claim `{key}` through Gateway `{}/{}`, but {why}: the claim is never set",
                        g.namespace, g.name
                    ),
                )
                .with_related(g.label(path!["spec", "selector"]).with_message("the gateway's workloads"))
                .with_help("add a RequestAuthentication with the token's issuer for the gateway's workloads, in the root namespace or theirs"),
            );
        }
    }
}
