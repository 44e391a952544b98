//! `MC0110` undeclared-port-protocol and `MC0111` external-name-port.

use crate::analysis::{Context, service_port_protocol};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a Service port whose protocol Istio cannot tell: no `appProtocol`,
    /// and a name that does not start with a protocol Istio knows (`http`,
    /// `http2`, `https`, `grpc`, `grpc-web`, `tcp`, `tls`, `mongo`, `mysql`,
    /// `redis`, `udp`, optionally followed by `-suffix`). Istio's own Services
    /// (labelled `istio` or `release: istio`) and Services managed by a Gateway
    /// API controller are skipped.
    ///
    /// ## Why is this bad?
    /// Istio then sniffs the protocol from the first bytes of each connection:
    /// server-first protocols (MySQL, SMTP...) stall until a timeout, and HTTP
    /// policy (routes, retries, header matches) silently does not apply when
    /// sniffing decides TCP.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Service
    /// spec:
    ///   ports: [{name: web, port: 8080}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   ports: [{name: http-web, port: 8080}]     # or appProtocol: http
    /// ```
    pub static UNDECLARED_PORT_PROTOCOL = {
        code: "MC0110",
        name: "undeclared-port-protocol",
        group: References,
        severity: Info,
        summary: "A Service port declares no protocol Istio knows",
        equivalents: [("IST0118", "service.PortNameAnalyzer")],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a port of an `ExternalName` Service whose name is `tcp` or declares
    /// no protocol Istio knows.
    ///
    /// ## Why is this bad?
    /// An `ExternalName` Service has no endpoints of its own: Istio forwards its
    /// traffic by protocol. For TCP-named or unnamed ports the proxies cannot
    /// tell the destination apart from other TCP traffic on the port and may
    /// drop or misroute it.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Service
    /// spec:
    ///   type: ExternalName
    ///   externalName: api.example.com
    ///   ports: [{name: tcp, port: 443}]
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   ports: [{name: https, port: 443}]
    /// ```
    pub static EXTERNAL_NAME_PORT = {
        code: "MC0111",
        name: "external-name-port",
        group: References,
        severity: Warning,
        summary: "A port of an ExternalName Service is TCP or has no protocol",
        equivalents: [("IST0150", "service.PortNameAnalyzer")],
    };
}

/// Gateway API controllers' values of `gateway.istio.io/managed`.
const MANAGED: &[&str] = &[
    "istio.io-gateway-controller",
    "istio.io-mesh-controller",
    "istio.io-eastwest-controller",
];

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    for (_, r, spec) in ctx.subjects(Kind::Service) {
        let Spec::Service(svc) = spec else { continue };
        let labels = r.meta.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        if label("istio").is_some()
            || label("release") == Some("istio")
            || label("gateway.istio.io/managed").is_some_and(|v| MANAGED.contains(&v))
        {
            continue;
        }
        let external = svc.type_.as_deref() == Some("ExternalName");
        for (i, port) in svc.ports.iter().flatten().enumerate() {
            let protocol = service_port_protocol(port);
            let name = port.name.as_deref().unwrap_or("");
            let at = if port.name.is_some() {
                path!["spec", "ports", i, "name"]
            } else {
                path!["spec", "ports", i]
            };
            let shown = if name.is_empty() {
                "an unnamed port".to_string()
            } else {
                format!("port name `{name}`")
            };
            if external && (protocol.is_none() || name == "tcp") {
                out.push(
                    r.diag(
                        &EXTERNAL_NAME_PORT,
                        at,
                        format!(
                            "{shown} (port {}) of ExternalName Service `{}` does not declare an application protocol",
                            port.port, r.name
                        ),
                    )
                    .with_help("name the port after its protocol, such as `https` or `http-api`"),
                );
            } else if protocol.is_none() {
                out.push(
                    r.diag(
                        &UNDECLARED_PORT_PROTOCOL,
                        at,
                        format!(
                            "{shown} (port {}) declares no protocol; Istio will sniff it",
                            port.port
                        ),
                    )
                    .with_help("name the port `<protocol>[-<suffix>]` (`http-web`, `grpc`, `tcp-db`) or set `appProtocol`"),
                );
            }
        }
    }
}
