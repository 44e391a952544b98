//! `MC0401` identity-without-mtls.

use crate::analysis::{Context, Selection};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{AuthorizationPolicySpec, ClientTlsMode, Kind, MutualTlsMode, Spec};
use crate::mtls::{MtlsView, client_tls_mode_name};
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports an AuthorizationPolicy that decides on peer identity (`principals`,
    /// `notPrincipals`, `namespaces`, `notNamespaces`, or `when` keys
    /// `source.principal`, `source.namespace`, `connection.sni`) for workloads
    /// whose traffic does not carry one: their effective PeerAuthentication
    /// (workload, then namespace, then mesh) disables mTLS, or clients do not
    /// send it (a DestinationRule sets another TLS mode, or none does and
    /// `auto-mtls` is off in `meshc.toml`).
    ///
    /// ## Why is this bad?
    /// Without mTLS there is no peer identity: an ALLOW rule on principals
    /// never matches, so legitimate traffic is denied, and a DENY rule on
    /// principals never matches either, so what it meant to block gets in.
    ///
    /// ## Example
    /// ```yaml
    /// kind: PeerAuthentication
    /// metadata: {name: default, namespace: shop}
    /// spec: {mtls: {mode: DISABLE}}
    /// ---
    /// kind: AuthorizationPolicy
    /// metadata: {name: reviews, namespace: shop}
    /// spec:
    ///   rules:
    ///   - from:
    ///     - source: {principals: ["cluster.local/ns/shop/sa/frontend"]}
    /// ```
    ///
    /// ## Fix
    /// Turn mTLS on for the workloads (`mode: STRICT`, or PERMISSIVE with
    /// clients sending ISTIO_MUTUAL), or authorize on something else.
    pub static IDENTITY_WITHOUT_MTLS = {
        code: "MC0401",
        name: "identity-without-mtls",
        group: Authorization,
        severity: Error,
        summary: "An AuthorizationPolicy uses peer identities where mTLS is off",
        equivalents: [("KIA0105", "authorization.MtlsEnabledChecker")],
    };
}

/// The first place a policy relies on peer identity.
fn identity_use(ap: &AuthorizationPolicySpec) -> Option<YamlPath> {
    for (i, rule) in ap.rules.iter().flatten().enumerate() {
        for (j, f) in rule.from.iter().flatten().enumerate() {
            let Some(s) = &f.source else { continue };
            let fields = [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
            ];
            if let Some((k, _)) = fields
                .iter()
                .find(|(_, v)| v.as_ref().is_some_and(|v| !v.is_empty()))
            {
                return Some(path!["spec", "rules", i, "from", j, "source", *k]);
            }
        }
        for (k, c) in rule.when.iter().flatten().enumerate() {
            if matches!(
                c.key.as_str(),
                "source.principal" | "source.namespace" | "connection.sni"
            ) {
                return Some(path!["spec", "rules", i, "when", k, "key"]);
            }
        }
    }
    None
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let view = MtlsView::new(ctx);
    for (_, r, spec) in ctx.subjects(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(ap) = spec else {
            continue;
        };
        let Some(at) = identity_use(ap) else { continue };
        let labels = match r.selection() {
            Some(Selection::Labels(l, _)) => Some(l),
            _ => None,
        };
        let ns = &r.namespace;
        if view.enabled(ns, labels) {
            continue;
        }
        let (server, by) = view.server_mode(ns, labels);
        let (why, related) = match view.client_mode(ns, labels) {
            _ if server == MutualTlsMode::Disable => (
                format!(
                    "mTLS is disabled by {}",
                    by.map_or("default".to_string(), |b| b.display())
                ),
                by.map(|b| {
                    b.label(path!["spec", "mtls", "mode"])
                        .with_message("disables mTLS")
                }),
            ),
            Some((mode, dr)) if mode != ClientTlsMode::IstioMutual => (
                format!(
                    "clients use TLS mode {} from {}",
                    client_tls_mode_name(mode),
                    dr.display()
                ),
                Some(
                    dr.label(path!["spec", "trafficPolicy", "tls", "mode"])
                        .with_message("clients do not send mTLS"),
                ),
            ),
            Some(_) => (
                "auto mTLS is off and no PeerAuthentication enables mTLS for them".to_string(),
                None,
            ),
            None => (
                "auto mTLS is off and no DestinationRule makes clients use ISTIO_MUTUAL"
                    .to_string(),
                None,
            ),
        };
        let mut d = r
            .diag(
                &IDENTITY_WITHOUT_MTLS,
                at,
                format!("this policy matches on peer identity, but its workloads get no identities: {why}"),
            )
            .with_help("enable mTLS for these workloads (STRICT, or clients with ISTIO_MUTUAL), or authorize on request attributes instead");
        if let Some(l) = related {
            d = d.with_related(l);
        }
        out.push(d);
    }
}
