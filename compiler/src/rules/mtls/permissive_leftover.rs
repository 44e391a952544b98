//! `MC0301` permissive-leftover.

use std::collections::HashMap;

use crate::analysis::{Context, Resource};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, MutualTlsMode, PeerAuthenticationSpec, Spec};
use crate::path;

declare_rule! {
    /// ## What it does
    /// Reports a PeerAuthentication that sets `PERMISSIVE` (for a namespace, a
    /// workload, or a port) where the mode it overrides is `STRICT`, following
    /// Istio's precedence: port level over workload over namespace over the mesh
    /// policy in the root namespace. It also reports a namespace-wide `PERMISSIVE`
    /// in a namespace whose workloads are all meshed (injection on, none opting
    /// out), where nothing inside needs plaintext any more.
    ///
    /// ## Why is this bad?
    /// `PERMISSIVE` accepts plaintext. It is the migration step towards `STRICT`
    /// and is meant to be removed; forgotten, it lets any pod talk to the workload
    /// without an identity, which also defeats principal-based authorization.
    ///
    /// ## Example
    /// ```yaml
    /// kind: PeerAuthentication
    /// metadata: {name: default, namespace: istio-system}
    /// spec:
    ///   mtls: {mode: STRICT}
    /// ---
    /// kind: PeerAuthentication
    /// metadata: {name: default, namespace: payments}
    /// spec:
    ///   mtls: {mode: PERMISSIVE}      # left over from the migration
    /// ```
    ///
    /// ## Fix
    /// Delete the override, or set it to `STRICT`. If one legacy client still needs
    /// plaintext, keep `PERMISSIVE` on that workload's port only and suppress this
    /// rule there with `meshc.dev/ignore: MC0301` and a comment saying why.
    /// ```yaml
    /// spec:
    ///   mtls: {mode: STRICT}
    /// ```
    pub static PERMISSIVE_LEFTOVER = {
        code: "MC0301",
        name: "permissive-leftover",
        group: Mtls,
        severity: Warning,
        summary: "A PERMISSIVE mTLS override weakens a STRICT policy above it",
        equivalents: [],
    };
}

fn mode(pa: &PeerAuthenticationSpec) -> Option<MutualTlsMode> {
    pa.mtls
        .as_ref()
        .and_then(|m| m.mode)
        .filter(|m| *m != MutualTlsMode::Unset)
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let pas: Vec<(&Resource, &PeerAuthenticationSpec)> = ctx
        .of_kind(Kind::PeerAuthentication)
        .filter_map(|(_, r, s)| {
            if let Spec::PeerAuthentication(p) = s {
                Some((r, p))
            } else {
                None
            }
        })
        .collect();
    let is_wide = |p: &PeerAuthenticationSpec| {
        p.selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_none_or(|l| l.is_empty())
    };
    let mesh = pas
        .iter()
        .find(|(r, p)| r.namespace == ctx.settings.root_namespace && is_wide(p));
    let mesh_mode = mesh.and_then(|(_, p)| mode(p));
    // Namespace-wide policies by namespace (the first one, as Istio takes the oldest).
    let mut by_namespace: HashMap<&str, &(&Resource, &PeerAuthenticationSpec)> = HashMap::new();
    for pa in pas
        .iter()
        .filter(|(r, p)| is_wide(p) && r.namespace != ctx.settings.root_namespace)
    {
        by_namespace.entry(pa.0.namespace.as_str()).or_insert(pa);
    }
    let namespace_pa = |ns: &str| by_namespace.get(ns).copied();

    let subjects = ctx
        .subjects(Kind::PeerAuthentication)
        .filter_map(|(_, r, s)| match s {
            Spec::PeerAuthentication(p) => Some((r, p)),
            _ => None,
        });
    for (r, p) in subjects {
        let own = mode(p);
        let wide = is_wide(p);
        let is_mesh = wide && r.namespace == ctx.settings.root_namespace;
        // The mode this policy overrides, and the resource that sets it.
        let (parent_mode, parent) = if is_mesh {
            (None, None)
        } else if wide {
            (mesh_mode, mesh.map(|m| m.0))
        } else {
            match namespace_pa(&r.namespace).and_then(|(nr, np)| mode(np).map(|m| (m, *nr))) {
                Some((m, nr)) => (Some(m), Some(nr)),
                None => (mesh_mode, mesh.map(|m| m.0)),
            }
        };
        let effective = own.or(parent_mode);
        if own == Some(MutualTlsMode::Permissive) && parent_mode == Some(MutualTlsMode::Strict) {
            let parent = parent.expect("a parent mode comes from a parent policy");
            out.push(
                r.diag(
                    &PERMISSIVE_LEFTOVER,
                    path!["spec", "mtls", "mode"],
                    format!(
                        "{} sets PERMISSIVE under STRICT {}",
                        scope(r, p),
                        parent.display()
                    ),
                )
                .with_related(
                    parent
                        .label(path!["spec", "mtls", "mode"])
                        .with_message("STRICT here"),
                )
                .with_help(
                    "remove the override or set it to STRICT once every client has a sidecar",
                ),
            );
        } else if own == Some(MutualTlsMode::Permissive) && wide && !is_mesh {
            let workloads: Vec<_> = ctx.workloads_in(&r.namespace).collect();
            if !workloads.is_empty()
                && ctx.namespace_injected(&r.namespace)
                && workloads.iter().all(|w| ctx.is_meshed(w))
            {
                out.push(
                    r.diag(
                        &PERMISSIVE_LEFTOVER,
                        path!["spec", "mtls", "mode"],
                        format!(
                            "namespace `{}` is PERMISSIVE but all {} of its workloads are meshed",
                            r.namespace,
                            workloads.len()
                        ),
                    )
                    .with_help("set the mode to STRICT; every workload here already has a sidecar"),
                );
            }
        }
        for (port, m) in p.port_level_mtls.iter().flatten() {
            if m.mode == Some(MutualTlsMode::Permissive) && effective == Some(MutualTlsMode::Strict)
            {
                let mut d = r.diag(
                    &PERMISSIVE_LEFTOVER,
                    path!["spec", "portLevelMtls", port.as_str(), "mode"],
                    format!("port {port} is PERMISSIVE while {} is STRICT", scope(r, p)),
                );
                if own.is_none()
                    && let Some(parent) = parent
                {
                    d = d.with_related(
                        parent
                            .label(path!["spec", "mtls", "mode"])
                            .with_message("STRICT here"),
                    );
                }
                out.push(
                    d.with_help("remove the port-level override once the port's clients use mTLS"),
                );
            }
        }
    }
}

fn scope(r: &Resource, p: &PeerAuthenticationSpec) -> String {
    let labels = p
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .filter(|l| !l.is_empty());
    match labels {
        Some(labels) => {
            let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("the workload policy for {}", shown.join(","))
        }
        None => format!("the namespace policy of `{}`", r.namespace),
    }
}
