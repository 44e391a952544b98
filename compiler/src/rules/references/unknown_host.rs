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
    for (_, r, spec) in ctx.subjects(Kind::VirtualService) {
        let Spec::VirtualService(vs) = spec else {
            continue;
        };
        let viewers = viewers(vs.export_to.as_deref(), &r.namespace);
        for (path, dest) in crate::rules::walk::destinations(vs) {
            let fqdn = ctx.fqdn(&dest.host, &r.namespace);
            if ctx.settings.is_known_host(&fqdn) {
                continue;
            }
            let blind: Vec<&str> = viewers
                .iter()
                .copied()
                .filter(|ns| ctx.lookup(&fqdn, ns).is_empty())
                .collect();
            if blind.is_empty() {
                continue;
            }
            let message = if blind.len() == viewers.len() && blind == [r.namespace.as_str()] {
                let hidden = ctx
                    .hosts
                    .iter()
                    .any(|h| h.host != "*" && crate::analysis::host_matches(&h.host, &fqdn));
                if hidden {
                    format!(
                        "destination host `{}` is not exported to namespace `{}`",
                        dest.host, r.namespace
                    )
                } else {
                    format!(
                        "destination host `{}` resolves to `{fqdn}`, which no Service or ServiceEntry defines",
                        dest.host
                    )
                }
            } else {
                format!(
                    "destination host `{}` is not visible from namespace{} {} that this VirtualService is exported to",
                    dest.host,
                    if blind.len() == 1 { "" } else { "s" },
                    blind
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            out.push(
                r.diag(&UNKNOWN_HOST, path.join("host"), message)
                    .with_help(help(&dest.host, &fqdn))
                    .with_upstream(&["IST0101", "KIA1101"]),
            );
        }
    }
    for (_, r, spec) in ctx.subjects(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = spec else {
            continue;
        };
        let fqdn = ctx.fqdn(&dr.host, &r.namespace);
        if !ctx.host_exists(&fqdn, &r.namespace) {
            out.push(
                r.diag(
                    &UNKNOWN_HOST,
                    path!["spec", "host"],
                    format!(
                        "host `{}` resolves to `{fqdn}`, which no Service or ServiceEntry defines",
                        dr.host
                    ),
                )
                .with_help(help(&dr.host, &fqdn))
                .with_upstream(&["IST0174", "KIA0202"]),
            );
        }
    }
}

/// The namespaces a resource with this `exportTo` is seen from: its own when
/// the list is absent, `.` or `*`, plus every namespace it names.
pub(crate) fn viewers<'a>(export_to: Option<&'a [String]>, own: &'a str) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for e in export_to.unwrap_or_default() {
        let ns = match e.as_str() {
            "." | "*" => own,
            "~" => continue,
            other => other,
        };
        if !v.contains(&ns) {
            v.push(ns);
        }
    }
    if export_to.is_none_or(|e| e.is_empty()) {
        v.push(own);
    }
    v
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
