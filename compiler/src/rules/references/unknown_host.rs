//! `MC0102` unknown-host.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a VirtualService destination host, or a DestinationRule host, that
    /// resolves to no Service and no ServiceEntry in the repository. Short names
    /// resolve in the resource's own namespace (`reviews` in `shop` is
    /// `reviews.shop.svc.cluster.local`), as Istio resolves them; names with dots
    /// are taken as written. Repositories that keep their Services elsewhere list
    /// them in `meshc.toml` under `known-hosts` (exact, `*.suffix`, or `*`).
    ///
    /// ## Why is this bad?
    /// Traffic routed to a host that does not exist fails with 503, and a
    /// DestinationRule for such a host applies to nothing. A typo (`reveiws`) or a
    /// short name used from another namespace is the usual cause.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// metadata: {namespace: frontend}
    /// spec:
    ///   http:
    ///   - route:
    ///     - destination: {host: ratings}   # ratings lives in namespace backend
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///     - destination: {host: ratings.backend.svc.cluster.local}
    /// ```
    pub static UNKNOWN_HOST = {
        code: "MC0102",
        name: "unknown-host",
        group: References,
        severity: Error,
        summary: "A destination or DestinationRule host resolves to no Service or ServiceEntry",
        equivalents: [("IST0101", "virtualservice.DestinationHostAnalyzer"), ("IST0174", "destinationrule.SubsetSelectPodAnalyzer"), ("KIA1101", "virtualservices.NoHostChecker"), ("KIA0202", "destinationrules.NoDestinationChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        for (path, dest) in crate::rules::walk::destinations(vs) {
            let fqdn = ctx.fqdn(&dest.host, &r.namespace);
            if !ctx.host_exists(&fqdn) {
                out.push(
                    r.diag(&UNKNOWN_HOST, path.join("host"), format!("destination host `{}` resolves to `{fqdn}`, which no Service or ServiceEntry defines", dest.host))
                        .with_help(help(&dest.host, &fqdn)),
                );
            }
        }
    }
    for (_, r, spec) in ctx.of_kind(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        let fqdn = ctx.fqdn(&dr.host, &r.namespace);
        if !ctx.host_exists(&fqdn) {
            out.push(
                r.diag(
                    &UNKNOWN_HOST,
                    path!["spec", "host"],
                    format!(
                        "host `{}` resolves to `{fqdn}`, which no Service or ServiceEntry defines",
                        dr.host
                    ),
                )
                .with_help(help(&dr.host, &fqdn)),
            );
        }
    }
}

fn help(host: &str, fqdn: &str) -> String {
    if host.contains('.') && !host.ends_with(".svc.cluster.local") && host.split('.').count() == 2 {
        format!(
            "names with dots are not expanded; write `{host}.svc.cluster.local`, or add a ServiceEntry or `known-hosts` entry"
        )
    } else {
        format!(
            "check the spelling and namespace, add a ServiceEntry for `{fqdn}`, or list it under `known-hosts` in meshc.toml"
        )
    }
}
