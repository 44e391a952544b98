//! `MC0207` service-entry-needs-addresses.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a ServiceEntry without `addresses` that has a TCP port (protocol
    /// `TCP` or none). Silent when `meshc.toml` sets `dns-auto-allocate = true`
    /// (Istio's DNS proxy then gives each ServiceEntry an address).
    ///
    /// ## Why is this bad?
    /// For opaque TCP the proxy can only tell destinations apart by IP and port.
    /// Without addresses the ServiceEntry becomes a listener on `0.0.0.0:<port>`
    /// that captures all outbound TCP traffic on that port, for every host,
    /// or collides with another such ServiceEntry.
    ///
    /// ## Example
    /// ```yaml
    /// kind: ServiceEntry
    /// spec:
    ///   hosts: [db.example.com]
    ///   ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
    ///   resolution: DNS
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   addresses: [203.0.113.10/32]     # or enable DNS auto-allocation
    /// ```
    pub static SERVICE_ENTRY_NEEDS_ADDRESSES = {
        code: "MC0207",
        name: "service-entry-needs-addresses",
        group: Routing,
        severity: Warning,
        summary: "A TCP ServiceEntry has no addresses",
        equivalents: [("IST0134", "serviceentry.Analyzer")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    if ctx.settings.dns_auto_allocate {
        return;
    }
    for (_, r, spec) in ctx.subjects(Kind::ServiceEntry) {
        let Spec::ServiceEntry(se) = spec else {
            continue;
        };
        if se.addresses.as_ref().is_some_and(|a| !a.is_empty()) {
            continue;
        }
        for (i, port) in se.ports.iter().flatten().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("");
            if !(protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP")) {
                continue;
            }
            let what = if protocol.is_empty() {
                "has no protocol (TCP)"
            } else {
                "is TCP"
            };
            out.push(
                r.diag(
                    &SERVICE_ENTRY_NEEDS_ADDRESSES,
                    path!["spec", "ports", i],
                    format!(
                        "port {} {what} but the ServiceEntry has no `addresses`; it captures all TCP traffic to port {}",
                        port.number, port.number
                    ),
                )
                .with_help("add `addresses`, declare an application protocol (HTTP, TLS...), or set `dns-auto-allocate = true` in meshc.toml if Istio allocates them"),
            );
        }
    }
}
