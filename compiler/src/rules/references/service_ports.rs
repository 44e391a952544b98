//! `MC0113` port-protocol-conflict and `MC0114` target-port-conflict: the
//! Services that select one workload disagree about its ports.

use std::collections::BTreeMap;

use crate::analysis::{Context, Resource, WORKLOAD_KINDS, Workload, service_port_protocol};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{IntOrString, KubeServicePort, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a workload in the mesh selected by several Services that give the
    /// same port number different protocols (`http` in one, `tcp` in another,
    /// by port name, `appProtocol` or `protocol`). UDP and SCTP ports are
    /// left out: the proxies do not carry them, and a DNS server's port 53 is
    /// rightly both UDP and TCP. A workload counts as in the mesh unless it
    /// opts out of injection or its namespace is declared without it.
    ///
    /// ## Why is this bad?
    /// The sidecar builds one listener per port and gives it one protocol.
    /// Traffic sent through the other Service is handled with the wrong one:
    /// HTTP routes, retries and header matches stop applying, or plain TCP
    /// bytes are parsed as HTTP and the connection is reset.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Service
    /// metadata: {name: details-tcp}
    /// spec: {selector: {app: details}, ports: [{name: tcp, port: 9080}]}
    /// ---
    /// kind: Service
    /// metadata: {name: details-http}
    /// spec: {selector: {app: details}, ports: [{name: http, port: 9080}]}
    /// ```
    ///
    /// ## Fix
    /// Give the port one protocol in every Service that selects the workload,
    /// or serve the second protocol on its own port.
    pub static PORT_PROTOCOL_CONFLICT = {
        code: "MC0113",
        name: "port-protocol-conflict",
        group: References,
        severity: Error,
        summary: "Services selecting one workload give a port different protocols",
        equivalents: [("IST0116", "deployment.MultiServiceAnalyzer")],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a workload in the mesh whose container port is the `targetPort` of
    /// different Service ports (port 9080 in one Service, 9090 in another,
    /// both forwarding to container port 9080).
    ///
    /// ## Why is this bad?
    /// Inbound, the sidecar sees one container port; outbound, clients see two
    /// service ports. Istio keys port-level policy on one or the other
    /// (DestinationRule `portLevelSettings` and VirtualService port matches on
    /// the service port, PeerAuthentication `portLevelMtls` and
    /// AuthorizationPolicy `ports` on the container port), so a policy written
    /// for one Service's port silently misses traffic that arrives through
    /// the other Service.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Service
    /// metadata: {name: api}
    /// spec: {selector: {app: api}, ports: [{name: http, port: 9080, targetPort: 9080}]}
    /// ---
    /// kind: Service
    /// metadata: {name: api-alt}
    /// spec: {selector: {app: api}, ports: [{name: http, port: 9090, targetPort: 9080}]}
    /// ```
    ///
    /// ## Fix
    /// Use the same service port in both Services, or have the workload listen
    /// on a second container port for the second Service.
    pub static TARGET_PORT_CONFLICT = {
        code: "MC0114",
        name: "target-port-conflict",
        group: References,
        severity: Warning,
        summary: "Different Service ports forward to the same container port",
        equivalents: [("IST0137", "deployment.MultiServiceAnalyzer")],
    };
}

/// A port of a Service that selects the workload: the Service's resource, the
/// port's index and the port.
type Port<'a> = (&'a Resource, usize, &'a KubeServicePort);

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let subjects = WORKLOAD_KINDS.iter().flat_map(|&k| ctx.subjects(k));
    for (i, r, _) in subjects {
        let Some(w) = ctx.workload_at(i) else {
            continue;
        };
        // Waypoints are Istio's own proxies, managed by its controller.
        let waypoint = r
            .meta
            .labels
            .as_ref()
            .and_then(|l| l.get("gateway.istio.io/managed"))
            .is_some_and(|v| v == "istio.io-mesh-controller");
        if waypoint || outside_mesh(ctx, w) {
            continue;
        }
        let ports = service_ports(ctx, w);
        if ports.len() < 2 {
            continue;
        }
        protocols(r, &ports, out);
        target_ports(r, &ports, out);
    }
}

/// Whether the workload is known to run without a sidecar: it opts out, or
/// its namespace is declared without injection. A workload whose namespace
/// the repository does not declare is assumed meshed.
fn outside_mesh(ctx: &Context, w: &Workload) -> bool {
    let opt = w
        .annotations
        .get("sidecar.istio.io/inject")
        .or_else(|| w.labels.get("sidecar.istio.io/inject"));
    match opt {
        Some(v) => v != "true",
        None => ctx.namespaces.contains_key(&w.namespace) && !ctx.is_meshed(w),
    }
}

/// The TCP ports of the Services that select `w`, in registry order.
fn service_ports<'a>(ctx: &'a Context, w: &'a Workload) -> Vec<Port<'a>> {
    let mut ports = Vec::new();
    for h in ctx.services_of(w) {
        let svc = &ctx.resources[h.index];
        let Some(Spec::Service(spec)) = svc.spec.as_deref() else {
            continue;
        };
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let transport = p.protocol.as_deref().unwrap_or("TCP");
            if !transport.eq_ignore_ascii_case("UDP") && !transport.eq_ignore_ascii_case("SCTP") {
                ports.push((svc, i, p));
            }
        }
    }
    ports
}

/// The protocol a port is given: Istio's reading of its name or
/// `appProtocol`, else its `protocol` field.
fn protocol(p: &KubeServicePort) -> String {
    service_port_protocol(p)
        .map(str::to_string)
        .unwrap_or_else(|| p.protocol.as_deref().unwrap_or("TCP").to_ascii_uppercase())
}

fn protocols(r: &Resource, ports: &[Port], out: &mut Vec<Diagnostic>) {
    // port number → protocol → the ports that give it
    let mut by_number: BTreeMap<i64, BTreeMap<String, Vec<&Port>>> = BTreeMap::new();
    for p in ports {
        by_number
            .entry(p.2.port)
            .or_default()
            .entry(protocol(p.2))
            .or_default()
            .push(p);
    }
    for (number, by_protocol) in by_number {
        if by_protocol.len() < 2 {
            continue;
        }
        let shown: Vec<String> = by_protocol
            .iter()
            .map(|(proto, ps)| format!("{proto} in {}", services(ps.iter().copied())))
            .collect();
        let mut d = r
            .diag(
                &PORT_PROTOCOL_CONFLICT,
                path!["metadata", "name"],
                format!(
                    "{} `{}` is selected by Services that give port {number} different protocols: {}",
                    r.kind.as_str(),
                    r.name,
                    shown.join("; ")
                ),
            )
            .with_help("give the port one protocol in every Service that selects this workload, or move one protocol to another port");
        for (proto, ps) in &by_protocol {
            for (svc, i, _) in ps {
                d = d.with_related(
                    svc.label(path!["spec", "ports", *i])
                        .with_message(format!("{proto} here")),
                );
            }
        }
        out.push(d);
    }
}

fn target_ports(r: &Resource, ports: &[Port], out: &mut Vec<Diagnostic>) {
    // target port → service port number → the ports that forward there
    let mut by_target: BTreeMap<String, BTreeMap<i64, Vec<&Port>>> = BTreeMap::new();
    for p in ports {
        let target = match &p.2.target_port {
            Some(IntOrString::Int(n)) if *n != 0 => n.to_string(),
            Some(IntOrString::String(s)) if !s.is_empty() => s.clone(),
            _ => p.2.port.to_string(),
        };
        by_target
            .entry(target)
            .or_default()
            .entry(p.2.port)
            .or_default()
            .push(p);
    }
    for (target, by_port) in by_target {
        if by_port.len() < 2 {
            continue;
        }
        let numbers: Vec<String> = by_port.keys().map(i64::to_string).collect();
        let mut d = r
            .diag(
                &TARGET_PORT_CONFLICT,
                path!["metadata", "name"],
                format!(
                    "container port {target} of {} `{}` is the target of service ports {} ({})",
                    r.kind.as_str(),
                    r.name,
                    numbers.join(", "),
                    services(by_port.values().flatten().copied())
                ),
            )
            .with_help("use one service port for this container port in every Service, or listen on a second container port");
        for ps in by_port.values() {
            for (svc, i, p) in ps {
                d = d.with_related(
                    svc.label(path!["spec", "ports", *i])
                        .with_message(format!("port {} forwards to {target}", p.port)),
                );
            }
        }
        out.push(d);
    }
}

/// `Service a, b`, each named once, in order.
fn services<'a>(ports: impl Iterator<Item = &'a Port<'a>>) -> String {
    let mut names: Vec<String> = Vec::new();
    for (svc, _, _) in ports {
        let n = format!("`{}`", svc.name);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    format!(
        "Service{} {}",
        if names.len() > 1 { "s" } else { "" },
        names.join(", ")
    )
}
