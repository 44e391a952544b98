//! Effective mutual TLS, resolved with Istio's precedence.
//!
//! Server side (PeerAuthentication): a workload policy (selector) beats the
//! namespace policy, which beats the mesh policy in the root namespace; with
//! none, Istio's default is PERMISSIVE. `UNSET` inherits from the level above.
//! Client side (DestinationRule `trafficPolicy.tls`): the most specific
//! DestinationRule whose host covers the namespace's Services; with none, the
//! client uses mTLS only when `auto-mtls` is on.

use std::collections::{BTreeMap, HashMap};

use crate::analysis::{Context, Resource, covering, selects};
use crate::model::{ClientTlsMode, Map, MutualTlsMode, Spec};

/// A workload-selecting PeerAuthentication: (resource, selector labels, mode).
type WorkloadPolicy<'a> = (&'a Resource, &'a Map<String, String>, MutualTlsMode);

/// The PeerAuthentications and DestinationRules that decide mTLS, indexed.
/// Built once per registry, on first use ([`crate::analysis::Registry`]
/// holds it), and kept across an incremental compile when no
/// PeerAuthentication or DestinationRule changed; it holds resource indices,
/// not references, for that.
#[derive(Debug, Default, PartialEq)]
pub struct MtlsIndex {
    mesh: Option<(usize, MutualTlsMode)>,
    namespaces: HashMap<String, (usize, MutualTlsMode)>,
    /// Namespace → workload policies (resource, mode), in order.
    workloads: HashMap<String, Vec<(usize, MutualTlsMode)>>,
    /// Namespace → label key → value → the positions, ascending, in
    /// `workloads[namespace]` of the policies whose selector's first label
    /// is that pair. A policy that selects a workload has its first label
    /// among the workload's, so the candidates for a workload are its own
    /// labels' entries, not the whole namespace's list.
    by_label: HashMap<String, HashMap<String, HashMap<String, Vec<usize>>>>,
    /// Resolved host → the first DestinationRule for it (without a workload
    /// selector) that sets a top-level TLS mode.
    client: HashMap<String, (usize, ClientTlsMode)>,
}

/// The selector labels of a workload-selecting PeerAuthentication.
fn pa_selector(r: &Resource) -> Option<&Map<String, String>> {
    match r.spec.as_deref() {
        Some(Spec::PeerAuthentication(p)) => p
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .filter(|l| !l.is_empty()),
        _ => None,
    }
}

/// The mode a PeerAuthentication sets at its top level.
fn pa_mode(r: &Resource) -> MutualTlsMode {
    match r.spec.as_deref() {
        Some(Spec::PeerAuthentication(p)) => p
            .mtls
            .as_ref()
            .and_then(|m| m.mode)
            .unwrap_or(MutualTlsMode::Unset),
        _ => MutualTlsMode::Unset,
    }
}

/// The first of `rules` (DestinationRule indices of one host) without a
/// workload selector that sets a top-level TLS mode.
fn first_client(resources: &[Resource], rules: &[usize]) -> Option<(usize, ClientTlsMode)> {
    rules.iter().find_map(|&i| {
        let Some(Spec::DestinationRule(dr)) = resources[i].spec.as_deref() else {
            return None;
        };
        if dr.workload_selector.is_some() {
            return None;
        }
        let mode = dr.traffic_policy.as_ref()?.tls.as_ref()?.mode?;
        Some((i, mode))
    })
}

impl MtlsIndex {
    /// Index the policies of the repository.
    pub fn new(ctx: &Context) -> Self {
        let mut v = MtlsIndex::default();
        for (host, rules) in &ctx.destination_rules {
            if let Some(first) = first_client(ctx.resources, rules) {
                v.client.insert(host.clone(), first);
            }
        }
        // Istio takes the oldest policy when several compete; meshc has no
        // creation times and takes the first by namespace and name, so the
        // answer never depends on file or document order.
        let mut policies: Vec<(usize, &Resource)> = ctx
            .of_kind(crate::model::Kind::PeerAuthentication)
            .map(|(i, r, _)| (i, r))
            .collect();
        policies.sort_by(|(_, a), (_, b)| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for (i, r) in policies {
            let mode = pa_mode(r);
            match pa_selector(r) {
                Some(l) => {
                    let list = v.workloads.entry(r.namespace.clone()).or_default();
                    let (k, val) = l.iter().next().expect("the selector is not empty");
                    v.by_label
                        .entry(r.namespace.clone())
                        .or_default()
                        .entry(k.clone())
                        .or_default()
                        .entry(val.clone())
                        .or_default()
                        .push(list.len());
                    list.push((i, mode));
                }
                None if r.namespace == ctx.settings.root_namespace => {
                    v.mesh.get_or_insert((i, mode));
                }
                None => {
                    v.namespaces.entry(r.namespace.clone()).or_insert((i, mode));
                }
            }
        }
        v
    }

    /// Bring the index up to date after `change`, which keeps the registry
    /// (every resource has the identity it had at its index), without
    /// building it again: a changed PeerAuthentication whose selector is as
    /// it was has its mode replaced where the index holds it, and the hosts
    /// of changed DestinationRules find their first client rule again
    /// (`destination_rules` is the registry's, `domain` the cluster domain).
    /// `false` when the change is more than that: build the index again.
    pub(crate) fn patch(
        &mut self,
        change: &crate::incremental::Change,
        resources: &[Resource],
        destination_rules: &foldhash::HashMap<String, Vec<usize>>,
        domain: &str,
    ) -> bool {
        use crate::model::Kind;
        let (Some(policies), Some(rules)) = (
            change.pairs(Kind::PeerAuthentication, resources),
            change.pairs(Kind::DestinationRule, resources),
        ) else {
            return false;
        };
        // The registry is kept, so a changed policy sits where it sat: the
        // index holds it at the same place.
        for &(old, i) in &policies {
            let new = &resources[i];
            if new.spec.is_none() || pa_selector(old) != pa_selector(new) {
                return false;
            }
        }
        for (_, i) in policies {
            let mode = pa_mode(&resources[i]);
            let slots = self
                .mesh
                .iter_mut()
                .chain(self.namespaces.values_mut())
                .chain(self.workloads.values_mut().flatten());
            for slot in slots.filter(|s| s.0 == i) {
                slot.1 = mode;
            }
        }
        for (_, i) in rules {
            let r = &resources[i];
            let Some(Spec::DestinationRule(dr)) = r.spec.as_deref() else {
                continue;
            };
            let host = crate::analysis::fqdn(&dr.host, &r.namespace, domain);
            self.find_client(host, resources, destination_rules);
        }
        true
    }
}

impl MtlsIndex {
    /// Move every index to its resource's new position (`map`: old index
    /// → new, or [`crate::incremental::GONE`]) after `change`, in which
    /// only resources that give the registry nothing but their position
    /// came or went; the hosts of changed DestinationRules, and those whose
    /// first client rule is gone, find it again in `destination_rules`
    /// (the registry's, moved). `false` when a PeerAuthentication changed:
    /// build it again.
    pub(crate) fn shift(
        &mut self,
        change: &crate::incremental::Change,
        map: &[u32],
        resources: &[Resource],
        destination_rules: &foldhash::HashMap<String, Vec<usize>>,
        domain: &str,
    ) -> bool {
        use crate::incremental::GONE;
        use crate::model::Kind;
        if change.touches(&[Kind::PeerAuthentication]) {
            return false;
        }
        let slots = self
            .mesh
            .iter_mut()
            .chain(self.namespaces.values_mut())
            .chain(self.workloads.values_mut().flatten());
        for slot in slots {
            match map[slot.0] {
                GONE => return false,
                to => slot.0 = to as usize,
            }
        }
        let mut hosts: Vec<String> = Vec::new();
        for (host, slot) in &mut self.client {
            match map[slot.0] {
                GONE => hosts.push(host.clone()),
                to => slot.0 = to as usize,
            }
        }
        let changed = change
            .removed()
            .iter()
            .chain(change.added().iter().map(|&i| &resources[i]));
        for r in changed {
            if let Some(Spec::DestinationRule(dr)) = r.spec.as_deref() {
                hosts.push(crate::analysis::fqdn(&dr.host, &r.namespace, domain));
            }
        }
        for host in hosts {
            self.find_client(host, resources, destination_rules);
        }
        true
    }

    /// Find `host`'s first client rule again among `destination_rules`
    /// (the registry's).
    fn find_client(
        &mut self,
        host: String,
        resources: &[Resource],
        destination_rules: &foldhash::HashMap<String, Vec<usize>>,
    ) {
        match destination_rules
            .get(&host)
            .and_then(|v| first_client(resources, v))
        {
            Some(first) => {
                self.client.insert(host, first);
            }
            None => {
                self.client.remove(&host);
            }
        }
    }
}

/// What the mTLS view reads of a resource (`crate::rules::Deps`): of a
/// DestinationRule its host, whether it selects workloads, and its
/// top-level TLS mode; all of a PeerAuthentication.
pub(crate) fn project(r: &Resource) -> String {
    match r.spec.as_deref() {
        Some(Spec::DestinationRule(dr)) => format!(
            "{:?}",
            (
                &dr.host,
                dr.workload_selector.is_some(),
                dr.traffic_policy
                    .as_ref()
                    .and_then(|t| t.tls.as_ref())
                    .and_then(|t| t.mode),
            )
        ),
        other => format!("{other:?}"),
    }
}

/// The mTLS of a repository: its [`MtlsIndex`] read with the resources.
#[derive(Clone, Copy)]
pub struct MtlsView<'a> {
    ctx: &'a Context<'a>,
    ix: &'a MtlsIndex,
}

/// What a DestinationRule host covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostScope<'h> {
    /// Every namespace: `*.svc.cluster.local`, `*.local`, `*`...
    Mesh,
    /// Every Service of one namespace: `*.<ns>.svc.cluster.local`.
    Namespace(&'h str),
    /// Anything else: one host, or a wildcard outside the cluster domain.
    Host,
}

/// A server-side mode with the resource that sets it (`None`: Istio's default).
pub type ServerMode<'a> = (MutualTlsMode, Option<&'a Resource>);

/// A DestinationRule TLS mode as written in YAML.
pub fn client_tls_mode_name(mode: ClientTlsMode) -> &'static str {
    match mode {
        ClientTlsMode::Disable => "DISABLE",
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
    }
}

impl<'a> MtlsView<'a> {
    /// The view of `ctx`'s repository, its index built on first use.
    pub fn new(ctx: &'a Context<'a>) -> Self {
        MtlsView {
            ctx,
            ix: ctx.mtls(),
        }
    }

    fn resource(&self, i: usize) -> &'a Resource {
        &self.ctx.resources[i]
    }

    /// The mesh-wide policy's mode (root namespace, no selector).
    pub fn mesh_mode(&self) -> ServerMode<'a> {
        match self.ix.mesh {
            Some((r, m)) if m != MutualTlsMode::Unset => (m, Some(self.resource(r))),
            _ => (MutualTlsMode::Permissive, None),
        }
    }

    /// The namespace's effective mode (its own policy, else the mesh's).
    pub fn namespace_mode(&self, ns: &str) -> ServerMode<'a> {
        match self.ix.namespaces.get(ns) {
            Some((r, m)) if *m != MutualTlsMode::Unset => (*m, Some(self.resource(*r))),
            _ => self.mesh_mode(),
        }
    }

    /// The effective mode for workloads in `ns` with `labels` (`None`: the
    /// namespace as a whole).
    pub fn server_mode(&self, ns: &str, labels: Option<&Map<String, String>>) -> ServerMode<'a> {
        if let Some(labels) = labels
            && let Some((r, _, m)) =
                self.first_selecting(ns, labels, |(_, _, m)| *m != MutualTlsMode::Unset)
        {
            return (m, Some(r));
        }
        self.namespace_mode(ns)
    }

    /// The first workload policy of `ns` (in namespace and name order) that
    /// selects `labels` and passes `keep`.
    fn first_selecting(
        &self,
        ns: &str,
        labels: &Map<String, String>,
        keep: impl Fn(&WorkloadPolicy<'a>) -> bool,
    ) -> Option<WorkloadPolicy<'a>> {
        let list = self.ix.workloads.get(ns)?;
        let by_key = self.ix.by_label.get(ns)?;
        let policy = |i: usize| -> Option<WorkloadPolicy<'a>> {
            let (r, m) = list[i];
            let r = self.resource(r);
            Some((r, pa_selector(r)?, m))
        };
        let mut first: Option<usize> = None;
        for (k, v) in labels {
            let Some(candidates) = by_key.get(k).and_then(|m| m.get(v)) else {
                continue;
            };
            for &i in candidates {
                if first.is_some_and(|f| f <= i) {
                    break;
                }
                if policy(i).is_some_and(|p| keep(&p) && selects(p.1, labels)) {
                    first = Some(i);
                    break;
                }
            }
        }
        first.and_then(policy)
    }

    /// The port-level modes for workloads in `ns` with `labels`: the
    /// `portLevelMtls` of the first workload policy selecting them, `UNSET`
    /// ports left out (they inherit [`Self::server_mode`]).
    pub fn port_modes(
        &self,
        ns: &str,
        labels: &Map<String, String>,
    ) -> BTreeMap<u16, MutualTlsMode> {
        let own = self.first_selecting(ns, labels, |_| true);
        let Some((r, _, _)) = own else {
            return BTreeMap::new();
        };
        let Some(Spec::PeerAuthentication(pa)) = r.spec.as_deref() else {
            return BTreeMap::new();
        };
        pa.port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(port, m)| Some((port.parse::<u16>().ok()?, m.mode?)))
            .filter(|(_, m)| *m != MutualTlsMode::Unset)
            .collect()
    }

    /// The DestinationRule TLS mode clients use towards workloads in `ns`
    /// (with `labels`): a DestinationRule for a Service that selects them wins,
    /// else the one with the most specific wildcard covering the namespace.
    pub fn client_mode(
        &self,
        ns: &str,
        labels: Option<&Map<String, String>>,
    ) -> Option<(ClientTlsMode, &'a Resource)> {
        if let Some(labels) = labels {
            let exact = self
                .ctx
                .services_selecting(ns, labels)
                .find_map(|h| self.ix.client.get(h.host.as_str()));
            if let Some((r, m)) = exact {
                return Some((*m, self.resource(*r)));
            }
        }
        let probe = format!("x.{ns}.svc.{}", self.ctx.settings.cluster_domain);
        covering(&probe)
            .skip(1)
            .find_map(|h| self.ix.client.get(h.as_ref()))
            .map(|(r, m)| (*m, self.resource(*r)))
    }

    /// What a DestinationRule host covers, by the same wildcards as
    /// [`Self::client_mode`] and [`Self::mesh_client_mode`].
    pub fn host_scope<'h>(&self, host: &'h str) -> HostScope<'h> {
        let suffix = format!(".svc.{}", self.ctx.settings.cluster_domain);
        if let Some(ns) = host
            .strip_prefix("*.")
            .and_then(|h| h.strip_suffix(suffix.as_str()))
            .filter(|n| !n.contains('.'))
        {
            return HostScope::Namespace(ns);
        }
        let probe = format!("x.y{suffix}");
        if covering(&probe).skip(2).any(|c| c == host) {
            HostScope::Mesh
        } else {
            HostScope::Host
        }
    }

    /// Every host's client TLS mode: the first DestinationRule for it
    /// (without a workload selector) that sets a top-level mode.
    pub fn client_rules(
        &self,
    ) -> impl Iterator<Item = (&'a str, &'a Resource, ClientTlsMode)> + '_ {
        self.ix
            .client
            .iter()
            .map(|(h, (r, m))| (h.as_str(), self.resource(*r), *m))
    }

    /// The TLS mode clients use mesh-wide: the most specific DestinationRule
    /// whose wildcard host covers every namespace (`*.svc.cluster.local`,
    /// `*.local`, `*`...).
    pub fn mesh_client_mode(&self) -> Option<(ClientTlsMode, &'a Resource)> {
        let probe = format!("x.y.svc.{}", self.ctx.settings.cluster_domain);
        covering(&probe)
            .skip(2)
            .find_map(|h| self.ix.client.get(h.as_ref()))
            .map(|(r, m)| (*m, self.resource(*r)))
    }

    /// The namespace-wide policies (no selector), with the mesh-wide one
    /// first: (resource, namespace it governs or `None` for the mesh, mode).
    pub fn scope_policies(&self) -> Vec<(&'a Resource, Option<&'a str>, MutualTlsMode)> {
        let mut out: Vec<_> = self
            .ix
            .mesh
            .iter()
            .map(|(r, m)| (self.resource(*r), None, *m))
            .collect();
        let mut ns: Vec<_> = self
            .ix
            .namespaces
            .iter()
            .map(|(n, (r, m))| (self.resource(*r), Some(n.as_str()), *m))
            .collect();
        ns.sort_by_key(|(_, n, _)| *n);
        out.extend(ns);
        out
    }

    /// Whether traffic to workloads in `ns` (with `labels`) carries peer
    /// identities. With auto mTLS, unless a PeerAuthentication disables it or
    /// a DestinationRule makes clients use another TLS mode. Without, only
    /// when a PeerAuthentication enables it explicitly (STRICT or PERMISSIVE)
    /// and a DestinationRule makes clients use ISTIO_MUTUAL.
    pub fn enabled(&self, ns: &str, labels: Option<&Map<String, String>>) -> bool {
        let (server, by) = self.server_mode(ns, labels);
        if server == MutualTlsMode::Disable {
            return false;
        }
        match self.client_mode(ns, labels) {
            Some((ClientTlsMode::IstioMutual, _)) => self.ctx.settings.auto_mtls || by.is_some(),
            Some(_) => false,
            None => self.ctx.settings.auto_mtls,
        }
    }
}
