//! Gateway API references: `MC0117` unknown-route-parent, `MC0118`
//! unknown-route-backend, `MC0119` missing-reference-grant and `MC0120`
//! unknown-grant-namespace.

use crate::analysis::{Context, Resource, selects};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{K8sGatewaySpec, Kind, Listener, ReferenceGrantSpec, RouteSpec, Spec};
use crate::path;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

declare_rule! {
    /// ## What it does
    /// Reports an HTTPRoute or GRPCRoute `parentRefs` entry that attaches to
    /// nothing: a Gateway the repository does not define, a `sectionName` no
    /// listener of it has, a Gateway none of whose listeners accept routes
    /// from the route's namespace (`allowedRoutes.namespaces.from` is `Same`
    /// unless set), or, for a mesh route, a Service that does not exist.
    ///
    /// ## Why is this bad?
    /// A route that attaches to no parent is not programmed anywhere: its
    /// matches, filters and backends do nothing, and the only sign is a
    /// condition in the route's status, which a Git review never shows.
    ///
    /// ## Example
    /// ```yaml
    /// kind: HTTPRoute
    /// metadata: {name: shop, namespace: shop}
    /// spec:
    ///   parentRefs: [{name: public, namespace: infra}]   # listeners allow only `infra`
    ///   rules: [{backendRefs: [{name: shop, port: 8080}]}]
    /// ```
    ///
    /// ## Fix
    /// Name an existing Gateway and listener, and let the listener accept the
    /// route (`allowedRoutes: {namespaces: {from: All}}`, or `Selector`).
    pub static UNKNOWN_ROUTE_PARENT = {
        code: "MC0117",
        name: "unknown-route-parent",
        group: References,
        severity: Error,
        summary: "A Gateway API route attaches to a parent that does not exist or refuses it",
        equivalents: [("KIA1401", "k8sroutes.NoK8sGatewayChecker")],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports an HTTPRoute or GRPCRoute `backendRefs` entry naming a Service
    /// (or, with `kind: Hostname` of `networking.istio.io`, a ServiceEntry
    /// host) the repository does not define, or a port that Service does not
    /// expose. A backend of weight 0 receives no request and is not checked.
    ///
    /// ## Why is this bad?
    /// Requests the rule sends there fail with 500 (Gateway API's answer for
    /// an unresolved backend), or take the share of a weighted split that was
    /// meant for a working version.
    ///
    /// ## Example
    /// ```yaml
    /// kind: HTTPRoute
    /// spec:
    ///   rules: [{backendRefs: [{name: reviews-v3, port: 9080}]}]   # no such Service
    /// ```
    ///
    /// ## Fix
    /// Name an existing Service and one of its ports.
    pub static UNKNOWN_ROUTE_BACKEND = {
        code: "MC0118",
        name: "unknown-route-backend",
        group: References,
        severity: Error,
        summary: "A Gateway API route sends traffic to a Service or port that does not exist",
        equivalents: [("KIA1402", "k8sroutes.NoHostChecker")],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a route `backendRefs` entry in another namespace when no
    /// ReferenceGrant in that namespace lets routes of this kind and
    /// namespace refer to the Service. A consumer mesh route (one attached to
    /// a Service of that namespace) needs no grant to send there.
    ///
    /// ## Why is this bad?
    /// The Gateway API refuses cross-namespace references unless the target
    /// namespace grants them: the backend is treated as unresolved and its
    /// requests fail with 500, however correct the name is.
    ///
    /// ## Example
    /// ```yaml
    /// kind: HTTPRoute
    /// metadata: {name: web, namespace: edge}
    /// spec:
    ///   rules: [{backendRefs: [{name: shop, namespace: shop, port: 8080}]}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// kind: ReferenceGrant
    /// metadata: {name: from-edge, namespace: shop}
    /// spec:
    ///   from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: edge}]
    ///   to: [{group: "", kind: Service}]
    /// ```
    pub static MISSING_REFERENCE_GRANT = {
        code: "MC0119",
        name: "missing-reference-grant",
        group: References,
        severity: Error,
        summary: "A route refers to a Service in another namespace that grants it nothing",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a ReferenceGrant whose `from` names a namespace the repository
    /// neither declares nor uses.
    ///
    /// ## Why is this bad?
    /// The grant opens this namespace to routes of a namespace that does not
    /// exist, usually a typo: the routes it was written for stay refused,
    /// and the grant waits for whoever creates a namespace of that name.
    ///
    /// ## Example
    /// ```yaml
    /// kind: ReferenceGrant
    /// metadata: {name: from-edge, namespace: shop}
    /// spec:
    ///   from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: egde}]
    ///   to: [{group: "", kind: Service}]
    /// ```
    ///
    /// ## Fix
    /// Correct the namespace (`edge`).
    pub static UNKNOWN_GRANT_NAMESPACE = {
        code: "MC0120",
        name: "unknown-grant-namespace",
        group: References,
        severity: Error,
        summary: "A ReferenceGrant admits routes from a namespace that does not exist",
        equivalents: [("KIA1601", "k8sreferencegrants.NamespaceChecker")],
    };
}

/// Whether `listener` of a Gateway in `gateway_ns` accepts routes from
/// namespace `ns`. A selector meshc cannot judge (expressions, or a namespace
/// the repository does not declare) counts as accepting.
fn accepts(ctx: &Context, listener: &Listener, gateway_ns: &str, ns: &str) -> bool {
    let namespaces = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => gateway_ns == ns,
        "Selector" => {
            let selector = namespaces.and_then(|n| n.selector.as_ref());
            let Some(labels) = ctx.namespaces.get(ns) else {
                return true;
            };
            match selector {
                Some(s) if s.match_expressions.is_some() => true,
                Some(s) => selects(
                    s.match_labels.as_ref().unwrap_or(&Default::default()),
                    labels,
                ),
                None => true,
            }
        }
        _ => true,
    }
}

fn gateway<'a>(
    ctx: &'a Context,
    ns: &str,
    name: &str,
) -> Option<(&'a Resource, &'a K8sGatewaySpec)> {
    ctx.of_kind(Kind::K8sGateway)
        .find_map(|(_, r, spec)| match spec {
            Spec::K8sGateway(g) if r.namespace == ns && r.name == name => Some((r, g)),
            _ => None,
        })
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for kind in [Kind::HttpRoute, Kind::GrpcRoute] {
        for (_, r, spec) in ctx.of_kind(kind) {
            let Spec::Route(route) = spec else { continue };
            parents(ctx, r, route, out);
            backends(ctx, r, route, out);
        }
    }
    for (_, r, spec) in ctx.of_kind(Kind::ReferenceGrant) {
        let Spec::ReferenceGrant(grant) = spec else {
            continue;
        };
        for (i, from) in grant.from.iter().enumerate() {
            if from.namespace.is_empty() || ctx.known_namespaces.contains(&from.namespace) {
                continue;
            }
            out.push(
                r.diag(
                    &UNKNOWN_GRANT_NAMESPACE,
                    path!["spec", "from", i, "namespace"],
                    format!(
                        "namespace `{}` is neither declared nor used in the repository: the grant admits no route",
                        from.namespace
                    ),
                )
                .with_help("name the namespace the routes live in"),
            );
        }
    }
}

fn parents(ctx: &Context, r: &Resource, route: &RouteSpec, out: &mut Vec<Diagnostic>) {
    for (i, p) in route.parent_refs.iter().flatten().enumerate() {
        let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        let ns = p.namespace.as_deref().unwrap_or(&r.namespace);
        let at = path!["spec", "parentRefs", i, "name"];
        let problem = match (group, kind) {
            (GATEWAY_GROUP, "Gateway") => match gateway(ctx, ns, &p.name) {
                None => Some(format!("Gateway `{ns}/{}` does not exist", p.name)),
                Some((_, g)) => {
                    let listeners: Vec<&Listener> = g
                        .listeners
                        .iter()
                        .flatten()
                        .filter(|l| p.section_name.as_ref().is_none_or(|s| *s == l.name))
                        .collect();
                    if let (Some(section), true) = (&p.section_name, listeners.is_empty()) {
                        Some(format!(
                            "Gateway `{ns}/{}` has no listener `{section}`",
                            p.name
                        ))
                    } else if !listeners.is_empty()
                        && !listeners.iter().any(|l| accepts(ctx, l, ns, &r.namespace))
                    {
                        Some(format!(
                            "no listener of Gateway `{ns}/{}` accepts routes from namespace `{}` (see `allowedRoutes`)",
                            p.name, r.namespace
                        ))
                    } else {
                        None
                    }
                }
            },
            ("", "Service") => {
                let fqdn = format!("{}.{ns}.svc.{}", p.name, ctx.settings.cluster_domain);
                (!ctx.host_exists(&fqdn, ns))
                    .then(|| format!("Service `{ns}/{}` does not exist", p.name))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            out.push(
                r.diag(
                    &UNKNOWN_ROUTE_PARENT,
                    at,
                    format!("{} attaches to nothing here: {problem}", r.kind.as_str()),
                )
                .with_help("name an existing Gateway (and listener) that accepts routes from this namespace"),
            );
        }
    }
}

fn backends(ctx: &Context, r: &Resource, route: &RouteSpec, out: &mut Vec<Diagnostic>) {
    for (i, rule) in route.rules.iter().flatten().enumerate() {
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            let group = b.group.as_deref().unwrap_or("");
            let kind = b.kind.as_deref().unwrap_or("Service");
            let ns = b.namespace.as_deref().unwrap_or(&r.namespace);
            let at = |k: &str| path!["spec", "rules", i, "backendRefs", j, k];
            // A backend of weight 0 gets no request, resolved or not.
            if b.weight == Some(0) {
                continue;
            }
            let host = match (group, kind) {
                ("", "Service") => format!("{}.{ns}.svc.{}", b.name, ctx.settings.cluster_domain),
                ("networking.istio.io", "Hostname") => b.name.clone(),
                _ => continue,
            };
            let entries = ctx.lookup(&host, ns);
            let problem = if entries.is_empty() {
                Some((
                    at("name"),
                    format!("{kind} `{}` does not exist in namespace `{ns}`", b.name),
                ))
            } else if let Some(port) = b.port
                && !entries
                    .iter()
                    .any(|e| e.ports.is_empty() || e.ports.iter().any(|p| p.number == port))
            {
                Some((at("port"), format!("`{}` exposes no port {port}", b.name)))
            } else {
                None
            };
            if let Some((at, problem)) = problem {
                out.push(
                    r.diag(&UNKNOWN_ROUTE_BACKEND, at, format!("backend {problem}"))
                        .with_help("name an existing Service and one of its ports"),
                );
                continue;
            }
            // A consumer mesh route (attached to a Service of another
            // namespace) may send to that namespace without a grant.
            let producer = route.parent_refs.iter().flatten().any(|p| {
                p.group.as_deref() == Some("")
                    && p.kind.as_deref() == Some("Service")
                    && p.namespace.as_deref() == Some(ns)
            });
            if ns != r.namespace && kind == "Service" && !producer && !granted(ctx, r, ns, &b.name)
            {
                out.push(
                    r.diag(
                        &MISSING_REFERENCE_GRANT,
                        at("namespace"),
                        format!(
                            "no ReferenceGrant in namespace `{ns}` lets {}s of `{}` refer to Service `{}`: the backend is refused",
                            r.kind.as_str(),
                            r.namespace,
                            b.name
                        ),
                    )
                    .with_help(format!(
                        "add a ReferenceGrant in `{ns}` from {{group: gateway.networking.k8s.io, kind: {}, namespace: {}}} to {{group: \"\", kind: Service}}",
                        r.kind.as_str(),
                        r.namespace
                    )),
                );
            }
        }
    }
}

/// Whether a ReferenceGrant of `ns` lets route `r` refer to Service `name`.
fn granted(ctx: &Context, r: &Resource, ns: &str, name: &str) -> bool {
    ctx.of_kind(Kind::ReferenceGrant).any(|(_, g, spec)| {
        let Spec::ReferenceGrant(ReferenceGrantSpec { from, to }) = spec else {
            return false;
        };
        g.namespace == ns
            && from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == r.kind.as_str() && f.namespace == r.namespace
            })
            && to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}
