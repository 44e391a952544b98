//! `MC0303` mtls-mode-conflict.

use crate::analysis::Context;
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{ClientTlsMode, MutualTlsMode};
use crate::mtls::{HostScope, MtlsView, client_tls_mode_name};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Compares what clients send, from DestinationRule TLS modes, with what
    /// servers accept, from PeerAuthentications resolved with Istio's
    /// precedence (workload, namespace, mesh root namespace), and reports the
    /// combinations that fail every connection:
    /// - a server scope that DISABLEs mTLS while a DestinationRule covering it
    ///   makes clients send ISTIO_MUTUAL (reported on the PeerAuthentication);
    /// - a DestinationRule for in-mesh Services that sends plaintext or
    ///   non-Istio TLS to servers that are STRICT (reported on the
    ///   DestinationRule);
    /// - a STRICT scope that no DestinationRule sends ISTIO_MUTUAL to while
    ///   `auto-mtls` is off in `meshc.toml` (reported on the
    ///   PeerAuthentication).
    ///
    /// ## Why is this bad?
    /// The two ends disagree on the protocol: the server resets the
    /// connection or the client fails the handshake, and every request between
    /// them fails with 503 until one side changes.
    ///
    /// ## Example
    /// ```yaml
    /// kind: PeerAuthentication
    /// metadata: {name: default, namespace: shop}
    /// spec: {mtls: {mode: STRICT}}
    /// ---
    /// kind: DestinationRule
    /// metadata: {name: shop-plaintext, namespace: shop}
    /// spec:
    ///   host: "*.shop.svc.cluster.local"
    ///   trafficPolicy: {tls: {mode: DISABLE}}
    /// ```
    ///
    /// ## Fix
    /// Make both ends agree: ISTIO_MUTUAL (or no TLS settings, with auto mTLS)
    /// towards STRICT or PERMISSIVE servers, DISABLE only towards servers that
    /// accept plaintext.
    pub static MTLS_MODE_CONFLICT = {
        code: "MC0303",
        name: "mtls-mode-conflict",
        group: Mtls,
        severity: Error,
        summary: "Clients' TLS mode contradicts the servers' PeerAuthentication",
        equivalents: [
            ("KIA0207", "destinationrules.DisabledNamespaceWideMTLSChecker"),
            ("KIA0208", "destinationrules.DisabledMeshWideMTLSChecker"),
            ("KIA0401", "peerauthentications.MeshMtlsChecker"),
            ("KIA0501", "peerauthentications.NamespaceMtlsChecker"),
            ("KIA0505", "peerauthentications.DisabledNamespaceWideChecker"),
            ("KIA0506", "peerauthentications.DisabledMeshWideChecker"),
        ],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let view = MtlsView::new(ctx);
    // Server scopes against the clients that reach them.
    for (pa, ns, mode) in view.scope_policies() {
        let client = match ns {
            Some(ns) => view.client_mode(ns, None),
            None => view.mesh_client_mode(),
        };
        let scope = ns.map_or("mesh-wide".to_string(), |n| format!("in namespace `{n}`"));
        let mode_path = path!["spec", "mtls", "mode"];
        match (mode, client) {
            (MutualTlsMode::Disable, Some((ClientTlsMode::IstioMutual, dr))) => {
                out.push(
                    pa.diag(
                        &MTLS_MODE_CONFLICT,
                        mode_path,
                        format!(
                            "mTLS is disabled {scope}, but {} makes clients send ISTIO_MUTUAL: their requests fail",
                            dr.display()
                        ),
                    )
                    .with_related(
                        dr.label(path!["spec", "trafficPolicy", "tls", "mode"])
                            .with_message("clients send mTLS"),
                    )
                    .with_help("add a DestinationRule with `tls: {mode: DISABLE}` for the same hosts, or keep mTLS on")
                    .with_upstream(&[if ns.is_some() { "KIA0505" } else { "KIA0506" }]),
                );
            }
            (MutualTlsMode::Strict, None) if !ctx.settings.auto_mtls => {
                out.push(
                    pa.diag(
                        &MTLS_MODE_CONFLICT,
                        mode_path,
                        format!(
                            "mTLS is STRICT {scope}, but auto mTLS is off and no DestinationRule makes clients send ISTIO_MUTUAL: plaintext requests are refused"
                        ),
                    )
                    .with_help("add a DestinationRule with `tls: {mode: ISTIO_MUTUAL}` for these hosts, or enable auto mTLS")
                    .with_upstream(&[if ns.is_some() { "KIA0501" } else { "KIA0401" }]),
                );
            }
            _ => {}
        }
    }
    // DestinationRules against the servers they send to.
    for (host, r, client) in view.client_rules() {
        if client == ClientTlsMode::IstioMutual {
            continue;
        }
        let (server, by, code) = match view.host_scope(host) {
            HostScope::Mesh => {
                let (m, by) = view.mesh_mode();
                (m, by, "KIA0208")
            }
            HostScope::Namespace(ns) => {
                let (m, by) = view.namespace_mode(ns);
                (m, by, "KIA0207")
            }
            HostScope::Host => {
                // One in-mesh Service: its workloads' mode.
                let Some(svc) = ctx
                    .lookup(host, &r.namespace)
                    .into_iter()
                    .find(|h| h.selector.as_ref().is_some_and(|s| !s.is_empty()))
                else {
                    continue;
                };
                let (m, by) = view.server_mode(&svc.namespace, svc.selector.as_ref());
                (m, by, "KIA0207")
            }
        };
        if server != MutualTlsMode::Strict {
            continue;
        }
        let Some(by) = by else { continue };
        out.push(
            r.diag(
                &MTLS_MODE_CONFLICT,
                path!["spec", "trafficPolicy", "tls", "mode"],
                format!(
                    "clients of `{host}` use TLS mode {} but {} requires mTLS (STRICT): every request fails",
                    client_tls_mode_name(client),
                    by.display()
                ),
            )
            .with_related(
                by.label(path!["spec", "mtls", "mode"])
                    .with_message("accepts only mTLS"),
            )
            .with_help("use `tls: {mode: ISTIO_MUTUAL}` (or no TLS settings, with auto mTLS) towards in-mesh servers")
            .with_upstream(&[code]),
        );
    }
}
