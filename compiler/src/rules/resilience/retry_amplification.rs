//! `MC0501` retry-amplification.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::graph::CallGraph;

declare_rule! {
    /// ## What it does
    /// Follows call paths through the service graph and reports a service that
    /// one client request can reach more times than `max-retry-amplification`
    /// (`meshc.toml`, default 10): the product of the tries of every hop on the
    /// path (1 + the route's `retries.attempts`). Calls come from what the
    /// policy states: ALLOW AuthorizationPolicies naming a caller's principal,
    /// Sidecars importing an exact host, and VirtualServices bound to a
    /// Gateway. Hops without configured retries count as one try (Istio's
    /// default retries only cover connection failures). Cycles in the graph
    /// are broken where a search from the entry points first closes them. The
    /// message shows the path.
    ///
    /// ## Why is this bad?
    /// Retries multiply across hops: three hops with three tries each turn one
    /// failing request into 27 calls on the deepest service, right when it is
    /// already failing. The retry storm keeps it down and spreads the outage up
    /// the call chain.
    ///
    /// ## Example
    /// ```yaml
    /// # gateway → productpage → reviews → ratings, each route with
    /// retries: {attempts: 2}          # 3 tries per hop: ratings sees 27
    /// ```
    ///
    /// ## Fix
    /// Retry at one layer, normally the one directly above the service that
    /// fails, and set the others to `attempts: 0`; or lower the attempts so
    /// their product stays within the bound.
    pub static RETRY_AMPLIFICATION = {
        code: "MC0501",
        name: "retry-amplification",
        group: Resilience,
        severity: Warning,
        summary: "Retries multiply along a call path beyond the configured bound",
        equivalents: [],
    };
}

/// What the rule reads of a resource (`crate::rules::Deps`): of a
/// VirtualService its hosts, gateways and each http route's retry attempts
/// and destination hosts; of an AuthorizationPolicy its action, what it
/// selects and each source's principals.
pub(crate) fn project(r: &crate::analysis::Resource) -> String {
    match r.spec.as_deref() {
        Some(crate::model::Spec::VirtualService(vs)) => {
            let http: Vec<_> = vs
                .http
                .iter()
                .flatten()
                .map(|h| {
                    let hosts: Vec<&str> = h
                        .route
                        .iter()
                        .flatten()
                        .map(|d| d.destination.host.as_str())
                        .collect();
                    (h.retries.as_ref().and_then(|x| x.attempts), hosts)
                })
                .collect();
            format!("{:?}", (&vs.hosts, &vs.gateways, http))
        }
        Some(crate::model::Spec::AuthorizationPolicy(ap)) => {
            let from: Vec<Vec<_>> = ap
                .rules
                .iter()
                .flatten()
                .map(|rule| {
                    rule.from
                        .iter()
                        .flatten()
                        .map(|f| f.source.as_ref().map(|s| &s.principals))
                        .collect()
                })
                .collect();
            format!(
                "{:?}",
                (
                    ap.action,
                    &ap.selector,
                    &ap.target_ref,
                    &ap.target_refs,
                    from
                )
            )
        }
        // A Sidecar makes call edges only with the exact hosts it imports
        // (`ns/*` makes none), from the workloads it selects.
        Some(crate::model::Spec::Sidecar(sc)) => {
            let exact: Vec<_> = crate::graph::exact_egress(sc).collect();
            format!("{:?}", (&sc.workload_selector, exact))
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let bound = ctx.settings.max_retry_amplification;
    let graph = CallGraph::build(ctx);
    if graph.graph.edge_count() == 0 {
        return;
    }
    let g = &graph.graph;
    let domain = &ctx.settings.cluster_domain;
    let best = graph.amplification();
    let mut found: Vec<Diagnostic> = Vec::new();
    for node in g.node_indices() {
        // Report where the bound is first crossed on the path.
        let (product, last) = best[node.index()];
        let Some(last) = last else { continue };
        let Some((prev, _)) = g.edge_endpoints(last) else {
            continue;
        };
        if product <= bound || best[prev.index()].0 > bound {
            continue;
        }
        let path = graph.path(&best, node);
        let node = &node;
        let Some((first, _)) = path.first().and_then(|e| g.edge_endpoints(*e)) else {
            continue;
        };
        let mut route = g[first].short(domain);
        for e in &path {
            let call = &g[*e];
            let target = g.edge_endpoints(*e).map(|(_, t)| t).unwrap_or(*node);
            route.push_str(&format!(
                " → {} ({}×)",
                g[target].short(domain),
                call.attempts
            ));
        }
        // The diagnostic sits at the last hop that retries.
        let Some((r, at)) = path.iter().rev().find_map(|e| g[*e].retries) else {
            continue;
        };
        let mut d = r
            .diag(
                &RETRY_AMPLIFICATION,
                at.path(),
                format!(
                    "one request can reach `{}` {product} times, over the bound of {bound}: {route}",
                    g[*node].short(domain)
                ),
            )
            .with_help("retry at one layer only (attempts: 0 elsewhere), or raise `max-retry-amplification` in meshc.toml");
        for e in &path {
            let call = &g[*e];
            let (from, to) = g
                .edge_endpoints(*e)
                .map(|(a, b)| (g[a].short(domain), g[b].short(domain)))
                .unwrap_or_default();
            let (er, ep) = &call.evidence;
            d = d.with_related(
                er.label(ep.path())
                    .with_message(format!("{from} calls {to}")),
            );
            if let Some((rr, rp)) = call
                .retries
                .as_ref()
                .filter(|(rr, rp)| !(std::ptr::eq(*rr, r) && *rp == at))
            {
                d = d.with_related(
                    rr.label(rp.path())
                        .with_message(format!("{} tries to {to}", call.attempts)),
                );
            }
        }
        found.push(d);
    }
    out.extend(found);
}

#[cfg(test)]
mod tests {
    use crate::{Input, Options, analyze};

    fn service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: n}}\nspec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: n, labels: {{app: {name}}}}}\nspec: {{serviceAccountName: {name}, containers: [{{name: c, image: i}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: n}}\nspec: {{hosts: [{name}], http: [{{route: [{{destination: {{host: {name}}}}}], retries: {{attempts: 2}}}}]}}\n---\n"
        )
    }
    fn allow(callee: &str, caller: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {callee}-from-{caller}, namespace: n}}\nspec: {{selector: {{matchLabels: {{app: {callee}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/n/sa/{caller}]}}}}]}}]}}\n---\n"
        )
    }
    fn messages(text: String) -> Vec<String> {
        analyze(vec![Input::new("t.yaml", text)], &Options::default())
            .diagnostics
            .into_iter()
            .filter(|d| d.code() == "MC0501")
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn the_bound_is_crossed_once_on_the_worst_path() {
        // a → b → c → d with 3 tries per hop: b sees 3, c 9, d 27.
        let text = ["a", "b", "c", "d"].map(service).concat()
            + &allow("b", "a")
            + &allow("c", "b")
            + &allow("d", "c");
        let m = messages(text);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("`d.n` 27 times"), "{m:?}");
        assert!(
            m[0].contains("a.n → b.n (3×) → c.n (3×) → d.n (3×)"),
            "{m:?}"
        );
    }

    #[test]
    fn two_hops_stay_under_the_bound() {
        let text = ["a", "b", "c"].map(service).concat() + &allow("b", "a") + &allow("c", "b");
        assert!(
            messages(text).is_empty(),
            "9 tries are within the bound of 10"
        );
    }

    #[test]
    fn cycles_are_broken_not_ignored() {
        // a → b → c → d → a: the search breaks the cycle at d → a and still
        // finds a → b → c → d.
        let text = ["a", "b", "c", "d"].map(service).concat()
            + &allow("b", "a")
            + &allow("c", "b")
            + &allow("d", "c")
            + &allow("a", "d");
        let m = messages(text);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("27 times"), "{m:?}");
    }
}
