//! `MC0403` unknown-principal.

use std::collections::HashSet;

use super::{parse_principal, sources};
use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Checks each AuthorizationPolicy source principal of the form
    /// `<trust-domain>/ns/<namespace>/sa/<service-account>` (entries with `*`
    /// are skipped) and reports one that:
    /// - starts with `spiffe://`, which Istio's principals never do;
    /// - names a trust domain other than `meshc.toml`'s `trust-domain` and
    ///   `trust-domain-aliases`;
    /// - names a namespace the repository does not have (when it declares its
    ///   Namespaces);
    /// - names a service account that no workload of that namespace uses and no
    ///   ServiceAccount declares (when the repository has workloads or service
    ///   accounts there; `default` always exists).
    ///
    /// ## Why is this bad?
    /// A principal that no peer presents matches nothing: an ALLOW rule denies
    /// the caller it was written for, a DENY rule protects nothing. Nothing
    /// reports it at runtime.
    ///
    /// ## Example
    /// ```yaml
    /// kind: AuthorizationPolicy
    /// spec:
    ///   rules:
    ///   - from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
    /// ```
    pub static UNKNOWN_PRINCIPAL = {
        code: "MC0403",
        name: "unknown-principal",
        group: Authorization,
        severity: Warning,
        summary: "An AuthorizationPolicy names a principal no workload has",
        equivalents: [("KIA0106", "authorization.PrincipalsChecker"), ("KIA0108", "authorization.PrincipalsChecker")],
    };
}

/// Why `principal` can never be a peer of this repository's mesh.
fn problem(ctx: &Context, accounts: &Accounts, principal: &str) -> Option<(String, &'static str)> {
    if let Some(rest) = principal.strip_prefix("spiffe://") {
        return Some((
            format!(
                "principal `{principal}` starts with `spiffe://`, which Istio principals omit; it never matches (write `{rest}`)"
            ),
            "KIA0106",
        ));
    }
    if principal.contains('*') {
        return None;
    }
    let (td, ns, sa) = parse_principal(principal)?;
    let settings = ctx.settings;
    if td != settings.trust_domain && !settings.trust_domain_aliases.iter().any(|a| a == td) {
        return Some((
            format!(
                "principal `{principal}` is in trust domain `{td}`, not the mesh's `{}`",
                settings.trust_domain
            ),
            "KIA0108",
        ));
    }
    if !ctx.namespaces.is_empty() && !ctx.known_namespaces.contains(ns) {
        return Some((
            format!(
                "principal `{principal}` names namespace `{ns}`, which the repository does not have"
            ),
            "KIA0106",
        ));
    }
    if sa != "default" && !accounts.known(ns, sa) && accounts.has_namespace(ns) {
        return Some((
            format!(
                "principal `{principal}` names service account `{sa}`, which no workload of `{ns}` uses"
            ),
            "KIA0106",
        ));
    }
    None
}

/// The service accounts the repository knows (`namespace/name`, the
/// registry's), and the namespaces that have one, found the first time a
/// principal names an account that is not there: after an edit the rule
/// runs for a few policies, and splitting every account (~2 ms at 10,000
/// services) would cost more than a key per principal.
struct Accounts<'c> {
    all: &'c foldhash::HashSet<String>,
    namespaces: std::cell::OnceCell<HashSet<&'c str>>,
}

impl Accounts<'_> {
    fn known(&self, ns: &str, sa: &str) -> bool {
        self.all.contains(&format!("{ns}/{sa}"))
    }

    fn has_namespace(&self, ns: &str) -> bool {
        self.namespaces
            .get_or_init(|| {
                let split = self.all.iter().filter_map(|s| s.split_once('/'));
                split.map(|(ns, _)| ns).collect()
            })
            .contains(ns)
    }
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let accounts = Accounts {
        all: &ctx.service_accounts,
        namespaces: std::cell::OnceCell::new(),
    };
    for (_, r, spec) in ctx.subjects(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(ap) = spec else {
            continue;
        };
        for (i, j, src) in sources(ap) {
            for (field, list) in [
                ("principals", &src.principals),
                ("notPrincipals", &src.not_principals),
            ] {
                for (k, p) in list.iter().flatten().enumerate() {
                    let Some((message, code)) = problem(ctx, &accounts, p) else {
                        continue;
                    };
                    out.push(
                        r.diag(
                            &UNKNOWN_PRINCIPAL,
                            path!["spec", "rules", i, "from", j, "source", field, k],
                            message,
                        )
                        .with_help("principals are `<trust-domain>/ns/<namespace>/sa/<service-account>` of a workload that calls this one")
                        .with_upstream(&[code]),
                    );
                }
            }
        }
    }
}
