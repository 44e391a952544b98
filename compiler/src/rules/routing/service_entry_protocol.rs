//! `MC0204` service-entry-protocol-conflict.

use std::collections::{BTreeSet, HashMap};

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::Kind;
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports ServiceEntries that declare the same host and port with different
    /// protocols while some namespace sees both of them (their `exportTo` lists
    /// overlap) and imports the host (its Sidecar `egress.hosts` do not leave
    /// it out).
    ///
    /// ## Why is this bad?
    /// A port has one protocol in Envoy's listener: one of the ServiceEntries
    /// wins and the other's traffic is handled as the wrong protocol, so HTTPS
    /// is parsed as HTTP or the other way round, and connections fail.
    ///
    /// ## Example
    /// ```yaml
    /// kind: ServiceEntry
    /// metadata: {name: api-http}
    /// spec:
    ///   hosts: [api.example.com]
    ///   ports: [{number: 8443, name: http, protocol: HTTP}]
    /// ---
    /// kind: ServiceEntry
    /// metadata: {name: api-https}
    /// spec:
    ///   hosts: [api.example.com]
    ///   ports: [{number: 8443, name: https, protocol: HTTPS}]
    /// ```
    ///
    /// ## Fix
    /// Keep one ServiceEntry per host and port, with the protocol the server
    /// speaks, or scope them apart with `exportTo`.
    pub static SERVICE_ENTRY_PROTOCOL = {
        code: "MC0204",
        name: "service-entry-protocol-conflict",
        group: Routing,
        severity: Warning,
        summary: "ServiceEntries declare one host and port with different protocols",
        equivalents: [("IST0177", "serviceentry.ConflictingServiceEntryProtocolAnalyzer"), ("KIA1212", "serviceentries.ProtocolChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    // (host, port) → (host entry index, protocol)
    let mut by_key: HashMap<(&str, i64), Vec<(usize, String)>> = HashMap::new();
    for (k, h) in ctx.hosts.iter().enumerate() {
        if ctx.resources[h.index].kind != Kind::ServiceEntry {
            continue;
        }
        for p in &h.ports {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            by_key
                .entry((h.host.as_str(), p.number))
                .or_default()
                .push((k, proto));
        }
    }
    let mut keys: Vec<_> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut seen: BTreeSet<(usize, &str, i64)> = BTreeSet::new();
    for key in keys {
        let entries = &by_key[&key];
        for (a, pa) in entries {
            let ha = &ctx.hosts[*a];
            let rivals: Vec<(usize, &String)> = entries
                .iter()
                .filter(|(b, pb)| {
                    let hb = &ctx.hosts[*b];
                    hb.index != ha.index
                        && pb != pa
                        && ctx.applied_together(
                            &ha.export_to,
                            &ha.namespace,
                            &hb.export_to,
                            &hb.namespace,
                            &ha.host,
                        )
                })
                .map(|(b, pb)| (ctx.hosts[*b].index, pb))
                .collect();
            if rivals.is_empty() || !seen.insert((ha.index, key.0, key.1)) {
                continue;
            }
            let r = &ctx.resources[ha.index];
            let others: Vec<String> = rivals
                .iter()
                .map(|(i, p)| {
                    let n = format!("{}/{}", ctx.resources[*i].namespace, ctx.resources[*i].name);
                    if rivals.len() == 1 {
                        n
                    } else {
                        format!("{n} ({p})")
                    }
                })
                .collect();
            let mut d = r
                .diag(
                    &SERVICE_ENTRY_PROTOCOL,
                    path!["spec", "ports"],
                    format!(
                        "host `{}` port {} is {pa} here but {} in {}",
                        key.0,
                        key.1,
                        if rivals.len() == 1 {
                            rivals[0].1.as_str()
                        } else {
                            "other protocols"
                        },
                        others.join(", ")
                    ),
                )
                .with_help("declare each host and port once, with the protocol the server speaks");
            for (i, _) in &rivals {
                d = d.with_related(
                    ctx.resources[*i]
                        .label(path!["spec", "ports"])
                        .with_message("declared here"),
                );
            }
            out.push(d);
        }
    }
}
