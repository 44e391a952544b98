//! `MC0214` conflicting-listeners and `MC0215` duplicate-gateway-address:
//! Gateway API Gateways that claim the same thing.

use std::collections::BTreeMap;

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports Gateway API listeners that claim the same hostname and port:
    /// two listeners of one Gateway with the same hostname, port and
    /// protocol, or listeners of different Gateways with the same hostname
    /// and port. A listener without `hostname` claims every host.
    ///
    /// ## Why is this bad?
    /// Within one Gateway the listeners conflict and the controller refuses
    /// one of them, with its routes. Across Gateways each is its own
    /// deployment and address, but DNS sends a hostname to one of them: the
    /// routes attached to the other serve no client.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// metadata: {name: public, namespace: infra}
    /// spec:
    ///   gatewayClassName: istio
    ///   listeners: [{name: web, hostname: shop.example.com, port: 80, protocol: HTTP}]
    /// ---
    /// kind: Gateway
    /// metadata: {name: promo, namespace: infra}
    /// spec:
    ///   gatewayClassName: istio
    ///   listeners: [{name: web, hostname: shop.example.com, port: 80, protocol: HTTP}]
    /// ```
    ///
    /// ## Fix
    /// Serve each hostname and port from one listener of one Gateway, and
    /// attach every route for it there.
    pub static CONFLICTING_LISTENERS = {
        code: "MC0214",
        name: "conflicting-listeners",
        group: Routing,
        severity: Warning,
        summary: "Gateway API listeners claim the same hostname and port",
        equivalents: [
            ("KIA1501", "k8sgateways.MultiMatchChecker"),
            ("KIA1503", "k8sgateways.UniqueListenerChecker"),
        ],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports Gateway API Gateways that request the same address
    /// (`spec.addresses`, same type and value).
    ///
    /// ## Why is this bad?
    /// An address is given to one Gateway; the others wait unprogrammed (or,
    /// with a manually deployed gateway, several Gateways program one proxy
    /// and fight over its listeners).
    ///
    /// ## Example
    /// ```yaml
    /// kind: Gateway
    /// metadata: {name: a}
    /// spec: {gatewayClassName: istio, addresses: [{type: IPAddress, value: 192.0.2.10}], listeners: [...]}
    /// ---
    /// kind: Gateway
    /// metadata: {name: b}
    /// spec: {gatewayClassName: istio, addresses: [{type: IPAddress, value: 192.0.2.10}], listeners: [...]}
    /// ```
    ///
    /// ## Fix
    /// Give each Gateway its own address, or merge their listeners into one
    /// Gateway.
    pub static DUPLICATE_GATEWAY_ADDRESS = {
        code: "MC0215",
        name: "duplicate-gateway-address",
        group: Routing,
        severity: Warning,
        summary: "Two Gateway API Gateways request the same address",
        equivalents: [("KIA1502", "k8sgateways.MultiMatchChecker")],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    // (hostname, port) → (gateway, listener index, protocol)
    type Claim<'a> = (&'a Resource, usize, &'a str);
    let mut claims: BTreeMap<(&str, i64), Vec<Claim>> = BTreeMap::new();
    // (type, value) → (gateway, address index)
    let mut addresses: BTreeMap<(&str, &str), Vec<(&Resource, usize)>> = BTreeMap::new();
    for (_, r, spec) in ctx.of_kind(Kind::K8sGateway) {
        let Spec::K8sGateway(g) = spec else { continue };
        for (i, l) in g.listeners.iter().flatten().enumerate() {
            let host = l.hostname.as_deref().unwrap_or("*");
            claims
                .entry((host, l.port))
                .or_default()
                .push((r, i, &l.protocol));
        }
        for (i, a) in g.addresses.iter().flatten().enumerate() {
            let type_ = a.type_.as_deref().unwrap_or("IPAddress");
            addresses.entry((type_, &a.value)).or_default().push((r, i));
        }
    }
    for ((host, port), listeners) in &claims {
        for (k, &(r, i, protocol)) in listeners.iter().enumerate() {
            let same_gateway: Vec<_> = listeners
                .iter()
                .enumerate()
                .filter(|&(m, &(o, _, p))| m != k && std::ptr::eq(o, r) && p == protocol)
                .map(|(_, l)| *l)
                .collect();
            let others: Vec<_> = listeners
                .iter()
                .filter(|(o, _, _)| !std::ptr::eq(*o, r))
                .copied()
                .collect();
            let at = path!["spec", "listeners", i];
            if !same_gateway.is_empty() {
                let mut d = r
                    .diag(
                        &CONFLICTING_LISTENERS,
                        at.clone(),
                        format!(
                            "another listener of this Gateway also serves `{host}` on port {port} over {protocol}: the listeners conflict and one is refused"
                        ),
                    )
                    .with_help("keep one listener per hostname, port and protocol")
                    .with_upstream(&["KIA1503"]);
                for (_, m, _) in &same_gateway {
                    d = d.with_related(
                        r.label(path!["spec", "listeners", *m])
                            .with_message("same hostname, port and protocol"),
                    );
                }
                out.push(d);
            }
            if !others.is_empty() {
                let mut names: Vec<String> = others
                    .iter()
                    .map(|(o, _, _)| format!("{}/{}", o.namespace, o.name))
                    .collect();
                names.dedup();
                let mut d = r
                    .diag(
                        &CONFLICTING_LISTENERS,
                        at,
                        format!(
                            "`{host}` on port {port} is also served by Gateway {}: DNS sends the hostname to one of them, and the other's routes serve no client",
                            names.join(", ")
                        ),
                    )
                    .with_help("serve the hostname from one Gateway and attach its routes there")
                    .with_upstream(&["KIA1501"]);
                for (o, m, _) in others {
                    d = d.with_related(
                        o.label(path!["spec", "listeners", m])
                            .with_message("same hostname and port"),
                    );
                }
                out.push(d);
            }
        }
    }
    for ((_, value), users) in &addresses {
        for &(r, i) in users {
            let others: Vec<&(&Resource, usize)> =
                users.iter().filter(|(o, _)| !std::ptr::eq(*o, r)).collect();
            if others.is_empty() {
                continue;
            }
            let names: Vec<String> = others
                .iter()
                .map(|(o, _)| format!("{}/{}", o.namespace, o.name))
                .collect();
            let mut d = r
                .diag(
                    &DUPLICATE_GATEWAY_ADDRESS,
                    path!["spec", "addresses", i, "value"],
                    format!(
                        "address `{value}` is also requested by Gateway {}: only one of them gets it",
                        names.join(", ")
                    ),
                )
                .with_help("give each Gateway its own address, or merge their listeners");
            for (o, m) in others {
                d = d.with_related(
                    o.label(path!["spec", "addresses", *m, "value"])
                        .with_message("same address"),
                );
            }
            out.push(d);
        }
    }
}
