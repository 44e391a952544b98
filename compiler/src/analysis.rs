//! The analysed repository: typed resources plus the registry the rules query
//! (hosts, subsets, gateways, workloads, namespaces).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

// Seeded per process, and several times faster than SipHash on the short
// keys these maps hold.
use foldhash::{HashMap, HashSet};

use crate::config::Settings;
use crate::diagnostic::{Diagnostic, Label};
use crate::incremental::GONE;
use crate::model::{DestinationRuleSpec, Kind, KubeServicePort, Map, ObjectMeta, Spec};
use crate::rules::RuleMeta;
use crate::source::{FileId, Span};
use crate::yaml::{DocAt, Node, YamlPath};
use parts::*;

/// One resource read from the repository.
#[derive(Debug, Clone)]
pub struct Resource {
    /// File it came from.
    pub file: FileId,
    /// Position of its document in the file.
    pub doc: usize,
    /// Where the object sits in its document: empty, or `items[3]` inside a
    /// `kind: List`. Paths in diagnostics are prefixed with it.
    pub base: YamlPath,
    /// Where the object is written.
    pub span: Span,
    /// Its YAML, for locating paths.
    pub(crate) yaml: Yaml,
    /// Kind.
    pub kind: Kind,
    /// `apiVersion` as written.
    pub api_version: String,
    /// Name.
    pub name: String,
    /// Namespace (`Settings::default_namespace`, normally `default`, when absent).
    pub namespace: String,
    /// Metadata.
    pub meta: ObjectMeta,
    /// Typed spec; `None` when it did not deserialise (the schema error is
    /// reported). Boxed: the largest kinds make `Spec` 1.4 KB, and resources
    /// are moved in bulk (gathered from the files, spliced by incremental
    /// compiles).
    pub spec: Option<Box<Spec>>,
}

/// A resource's YAML, read again from its file's text when a diagnostic
/// first needs to locate a path in it. Loading keeps no trees: they are most
/// of a loaded repository's memory, and a clean repository never needs them.
#[derive(Debug, Clone)]
pub(crate) struct Yaml {
    /// The text of the resource's file.
    pub text: Arc<str>,
    /// Where its document is in that text.
    pub at: DocAt,
    /// The document's tree, once read.
    pub tree: OnceLock<Node>,
}

impl Resource {
    /// Its document's YAML tree (not only the resource's, inside a `List`).
    fn document(&self) -> Option<&Node> {
        let y = &self.yaml;
        if let Some(tree) = y.tree.get() {
            return Some(tree);
        }
        let tree = y.at.load(self.file, &y.text)?;
        Some(y.tree.get_or_init(|| tree))
    }

    /// Where `path` (from the document's root, as a [`Label`]'s path is) is
    /// in its document: the deepest existing node on it.
    pub(crate) fn locate(&self, path: &YamlPath) -> Option<Span> {
        self.document().map(|tree| tree.locate(&path.0).0)
    }

    /// The byte range of its document in its file.
    pub(crate) fn document_range(&self) -> std::ops::Range<usize> {
        self.yaml.at.range()
    }

    /// The text of its document.
    pub(crate) fn document_text(&self) -> &str {
        self.yaml.text.get(self.document_range()).unwrap_or("")
    }

    /// What names it in the cluster: kind, namespace and name.
    pub fn identity(&self) -> (Kind, &str, &str) {
        (self.kind, &self.namespace, &self.name)
    }

    /// `Kind namespace/name` (the Gateway API's Gateway qualified by its group).
    pub fn display(&self) -> String {
        format!("{} {}/{}", self.kind.qualified(), self.namespace, self.name)
    }
    /// A label at `path` in this resource (the deepest existing node on it).
    pub fn label(&self, path: YamlPath) -> Label {
        let path = self.base.concat(&path);
        let span = self
            .document()
            .map_or(self.span, |tree| tree.locate(&path.0).0);
        Label::new(span).with_path(path)
    }
    /// A diagnostic of `rule` about this resource at `path`.
    pub fn diag(
        &self,
        rule: &'static RuleMeta,
        path: YamlPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(rule, message, self.label(path)).with_resource(self.display())
    }
    /// The pod labels of a workload resource.
    pub fn labels(&self) -> Map<String, String> {
        self.meta.labels.clone().unwrap_or_default()
    }
}

/// A workload (Deployment, StatefulSet, DaemonSet or Pod).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Index of the resource that declares it.
    pub index: usize,
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: Map<String, String>,
    /// Pod annotations.
    pub annotations: Map<String, String>,
    /// Service account (`default` when unset).
    pub service_account: String,
}

/// A port of a Service or ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Port number.
    pub number: i64,
    /// Port name, when given.
    pub name: Option<String>,
    /// Protocol: the ServiceEntry's `protocol`, or the Service's `appProtocol`
    /// or the protocol prefix of its port name (`http-web` → `HTTP`).
    pub protocol: Option<String>,
}

/// A host something can route to: a Service's FQDN or a ServiceEntry host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEntry {
    /// The host as declared (FQDN for Services; possibly `*.suffix` for ServiceEntries).
    pub host: String,
    /// Index of the Service or ServiceEntry resource.
    pub index: usize,
    /// Its namespace.
    pub namespace: String,
    /// Where it is visible (`exportTo`, or the Service's
    /// `networking.istio.io/exportTo` annotation); empty means everywhere.
    pub export_to: Vec<String>,
    /// Its ports.
    pub ports: Vec<HostPort>,
    /// The Service's selector (none for ServiceEntries).
    pub selector: Option<Map<String, String>>,
}

/// Everything the rules read: the resources, the registry built from them,
/// and which of them a rule run is about.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// All resources.
    pub resources: &'a [Resource],
    /// Settings.
    pub settings: &'a Settings,
    /// The registry of `resources`.
    registry: &'a Registry,
    /// When set, the indices (sorted) of the only resources rules report
    /// on: see [`Context::subjects`].
    focus: Option<&'a [usize]>,
}

impl std::ops::Deref for Context<'_> {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        self.registry
    }
}

/// The index of a repository the rules and the lowering query: hosts,
/// DestinationRules by host, gateways, workloads, namespaces, service
/// accounts. It holds resource indices and what it copied from the resources
/// (see [`same_contribution`]), never references, so an incremental compile can
/// keep it across an edit that leaves every contribution as it was, and
/// patch it (`Registry::patch`) across one that changes only what it
/// copies of resources that stay where they were.
#[derive(Debug, Default)]
pub struct Registry {
    /// Every Service FQDN and ServiceEntry host.
    pub hosts: Vec<HostEntry>,
    /// Exact host → indices into `hosts`.
    exact_hosts: HashMap<String, Vec<usize>>,
    /// Indices into `hosts` of wildcard ServiceEntry hosts.
    wildcard_hosts: Vec<usize>,
    /// Namespace → indices into `hosts` of its Services that have a selector.
    selecting_services: HashMap<String, Vec<usize>>,
    /// Namespace → key → value of the first label of each selector →
    /// indices into `hosts`: a workload's candidate Services are those whose
    /// selector starts with one of its labels. Nested, as
    /// `workloads_by_label`, so a lookup builds no key.
    services_by_label: LabelIndex,
    /// Resolved DestinationRule host → resource indices, in input order.
    pub destination_rules: HashMap<String, Vec<usize>>,
    /// Gateways by `namespace/name` → resource index.
    pub gateways: HashMap<String, usize>,
    /// Gateway API Gateways by `namespace/name` → listener hostnames.
    pub gateway_api: HashMap<String, Vec<String>>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Namespace → indices into `workloads`.
    workloads_by_ns: HashMap<String, Vec<usize>>,
    /// Namespace → label key → label value → indices into `workloads`: a
    /// selector's candidates are the workloads with its first label. Nested,
    /// so a lookup borrows its keys instead of building a tuple of strings.
    workloads_by_label: LabelIndex,
    /// Namespaces declared in the repository, with their labels.
    pub namespaces: HashMap<String, Map<String, String>>,
    /// Namespaces declared or used by any resource.
    pub known_namespaces: HashSet<String>,
    /// Service accounts as `namespace/name`: declared, or used by a workload.
    pub service_accounts: HashSet<String>,
    /// Indices of the Sidecar resources with a spec, for [`Context::imports`].
    sidecars: Vec<usize>,
    /// Indices of the resources of each kind (by `Kind as usize`), in order.
    by_kind: [Vec<usize>; Kind::ALL.len()],
    /// Indices of the resources of each namespace, in order: what a scoped
    /// lowering or a rule run for a few namespaces reads instead of every
    /// resource of a kind.
    by_namespace: HashMap<String, Vec<usize>>,
    /// The mTLS index, built on first use ([`Context::mtls`]). It reads
    /// PeerAuthentications and DestinationRules: an incremental compile that
    /// keeps the registry drops it when one of those changed.
    pub(crate) mtls: OnceLock<crate::mtls::MtlsIndex>,
    /// The naming index ([`crate::naming`]), built on first use: which
    /// VirtualServices and DestinationRules name each host. An incremental
    /// compile that keeps the registry moves the changed ones in it.
    naming: OnceLock<crate::naming::NamingIndex>,
    /// The call index ([`crate::graph::CallIndex`]), built on first use:
    /// what MC0501's call graph is assembled from. An incremental compile
    /// that keeps the registry reads the changed resources into it again.
    calls: OnceLock<crate::graph::CallIndex>,
    /// The principal index ([`crate::principals`]), built on first use:
    /// which AuthorizationPolicies name each service account. An
    /// incremental compile that keeps the registry moves the changed ones.
    principals: OnceLock<crate::principals::PrincipalIndex>,
    /// Resource indices by identity, built on first use
    /// ([`Context::identities`]). A registry is kept across an edit only
    /// when every resource keeps its identity at its index, so this needs
    /// no patch.
    identities: OnceLock<Identities>,
}

/// Resource indices by a hash of their identity (kind, namespace, name):
/// a lookup compares the identities of the few it gives.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Identities {
    /// The index of the first resource with each hash.
    first: HashMap<u64, usize>,
    /// Every index, in order, of a hash that more than one resource has
    /// (the same identity declared twice, or two that collide).
    pub(crate) more: HashMap<u64, Vec<usize>>,
}

impl Identities {
    /// Move every index to its new position (`map`, old index → new or
    /// [`GONE`]), dropping the gone ones, and put the resources at `added`
    /// in.
    fn shift(&mut self, map: &[u32], added: &[usize], resources: &[Resource]) {
        for v in self.more.values_mut() {
            shift_sorted(v, map);
        }
        let more = &self.more;
        self.first.retain(|h, first| match map[*first] {
            GONE => match more.get(h).and_then(|v| v.first()) {
                Some(&k) => {
                    *first = k;
                    true
                }
                None => false,
            },
            to => {
                *first = to as usize;
                true
            }
        });
        self.more.retain(|_, v| v.len() > 1);
        for &i in added {
            let h = Identities::hash(resources[i].identity());
            if let Some(v) = self.more.get_mut(&h) {
                insert_sorted(v, i);
                self.first.insert(h, v[0]);
            } else if let Some(first) = self.first.get_mut(&h) {
                let mut v = vec![*first, i];
                v.sort_unstable();
                *first = v[0];
                self.more.insert(h, v);
            } else {
                self.first.insert(h, i);
            }
        }
    }

    fn hash(id: (Kind, &str, &str)) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0).hash_one(id)
    }

    fn new(resources: &[Resource]) -> Self {
        let mut ix = Identities {
            first: HashMap::with_capacity_and_hasher(resources.len(), Default::default()),
            more: HashMap::default(),
        };
        for (i, r) in resources.iter().enumerate() {
            let h = Identities::hash(r.identity());
            match ix.first.entry(h) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(e) => {
                    ix.more.entry(h).or_insert_with(|| vec![*e.get()]).push(i);
                }
            }
        }
        ix
    }
}

/// Namespace → label key → label value → indices, in order.
type LabelIndex = HashMap<String, ByLabel>;
/// Label key → label value → indices, in order.
type ByLabel = HashMap<String, HashMap<String, Vec<usize>>>;

/// Take `i` out of the list at `k: v`, dropping what empties.
fn unindex_label(by_key: &mut ByLabel, k: &str, v: &str, i: usize) {
    let Some(values) = by_key.get_mut(k) else {
        return;
    };
    if values.get_mut(v).is_some_and(|l| remove_sorted(l, i)) {
        values.remove(v);
    }
    if values.is_empty() {
        by_key.remove(k);
    }
}

/// The index of namespace `ns`, made when missing (the key copied only
/// then).
fn of_namespace<'m>(ix: &'m mut LabelIndex, ns: &str) -> &'m mut ByLabel {
    if !ix.contains_key(ns) {
        ix.insert(ns.to_string(), ByLabel::default());
    }
    ix.get_mut(ns).expect("inserted when missing")
}

/// Put `i` in the list at `k: v`.
fn index_label(by_key: &mut ByLabel, k: &str, v: &str, i: usize) {
    let values = match by_key.get_mut(k) {
        Some(values) => values,
        None => by_key.entry(k.to_string()).or_default(),
    };
    match values.get_mut(v) {
        Some(l) => insert_sorted(l, i),
        None => {
            values.insert(v.to_string(), vec![i]);
        }
    }
}

/// The kinds that select workloads by labels ([`Resource::selection`]).
pub(crate) const SELECTING_KINDS: &[Kind] = &[
    Kind::Sidecar,
    Kind::PeerAuthentication,
    Kind::AuthorizationPolicy,
    Kind::RequestAuthentication,
    Kind::Telemetry,
    Kind::WasmPlugin,
    Kind::Gateway,
];

/// The kinds that declare workloads.
pub const WORKLOAD_KINDS: &[Kind] = &[
    Kind::Deployment,
    Kind::StatefulSet,
    Kind::DaemonSet,
    Kind::Pod,
];

/// Whether `a` and `b`, at the same index, give [`Registry::new`] the same
/// registry: the same kind, namespace and name (of every kind: documents
/// reordered in a file move the registry), whether they have a typed
/// spec, and what the registry copies of them: a Service's ports (number,
/// name, protocol), selector and `exportTo` annotation; a ServiceEntry's
/// hosts, ports and `exportTo`; a workload's pod labels, annotations and
/// service account; a Namespace's labels; a DestinationRule's host; a
/// Gateway API Gateway's listener hostnames. Of an Istio Gateway and a
/// Sidecar it keeps only the index, and reads the spec again when asked
/// ([`Context::gateway_hosts`], [`Context::imports`]). A rule that reads
/// more of a Service, ServiceEntry, workload or Namespace than this, or
/// reads Gateways or Sidecars other than its subjects, declares the kind in
/// its `crate::rules::Deps`. Every field `Registry::new` reads is covered
/// (`tests/incremental.rs` compiles random edits both ways).
pub(crate) fn same_contribution(a: &Resource, b: &Resource) -> bool {
    // The same identity at each index: what holds indices (the registry,
    // the mTLS index) finds the same resources where it left them.
    if a.identity() != b.identity() || a.spec.is_some() != b.spec.is_some() {
        return false;
    }
    match (a.spec.as_deref(), b.spec.as_deref()) {
        (Some(Spec::DestinationRule(x)), Some(Spec::DestinationRule(y))) => x.host == y.host,
        (Some(Spec::Service(x)), Some(Spec::Service(y))) => {
            x.selector == y.selector
                && service_ports(x) == service_ports(y)
                && export_annotation(a) == export_annotation(b)
        }
        (Some(Spec::ServiceEntry(x)), Some(Spec::ServiceEntry(y))) => {
            x.hosts == y.hosts && x.export_to == y.export_to && entry_ports(x) == entry_ports(y)
        }
        (Some(Spec::Workload(_) | Spec::Pod(_)), _) => workload(0, a) == workload(0, b),
        (Some(Spec::K8sGateway(x)), Some(Spec::K8sGateway(y))) => {
            listener_hosts(x) == listener_hosts(y)
        }
        _ if a.kind == Kind::Namespace => a.labels() == b.labels(),
        _ => true,
    }
}

/// What the registry copies of a Gateway API Gateway: its listeners'
/// hostnames (`*` for a listener without one).
fn listener_hosts(g: &crate::model::K8sGatewaySpec) -> Vec<String> {
    g.listeners
        .iter()
        .flatten()
        .map(|l| l.hostname.clone().unwrap_or_else(|| "*".into()))
        .collect()
}

/// What the registry copies of a Service's ports.
fn service_ports(svc: &crate::model::ServiceSpec) -> Vec<HostPort> {
    svc.ports
        .iter()
        .flatten()
        .map(|p| HostPort {
            number: p.port,
            name: p.name.clone(),
            protocol: service_port_protocol(p).map(str::to_string),
        })
        .collect()
}

/// What the registry copies of a ServiceEntry's ports.
fn entry_ports(se: &crate::model::ServiceEntrySpec) -> Vec<HostPort> {
    se.ports
        .iter()
        .flatten()
        .map(|p| HostPort {
            number: p.number,
            name: Some(p.name.clone()),
            protocol: p.protocol.as_ref().map(|s| s.to_ascii_uppercase()),
        })
        .collect()
}

/// A Service's `networking.istio.io/exportTo` annotation, split.
fn export_annotation(r: &Resource) -> Vec<String> {
    r.meta
        .annotations
        .as_ref()
        .and_then(|a| a.get("networking.istio.io/exportTo"))
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

/// The workload resource `r` (at index `i`) declares, if it is one.
pub(crate) fn workload(i: usize, r: &Resource) -> Option<Workload> {
    match (&r.kind, r.spec.as_deref()) {
        (Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet, Some(Spec::Workload(w))) => {
            let t = &w.template;
            Some(Workload {
                index: i,
                namespace: r.namespace.clone(),
                labels: t.metadata.labels.clone().unwrap_or_default(),
                annotations: t.metadata.annotations.clone().unwrap_or_default(),
                service_account: t
                    .spec
                    .service_account_name
                    .clone()
                    .or_else(|| t.spec.service_account.clone())
                    .unwrap_or_else(|| "default".into()),
            })
        }
        (Kind::Pod, Some(Spec::Pod(p))) => Some(Workload {
            index: i,
            namespace: r.namespace.clone(),
            labels: r.labels(),
            annotations: r.meta.annotations.clone().unwrap_or_default(),
            service_account: p
                .service_account_name
                .clone()
                .or_else(|| p.service_account.clone())
                .unwrap_or_else(|| "default".into()),
        }),
        _ => None,
    }
}

/// Append `i` to the list at `key`, copying the key only when it is new.
/// The host entries resource `i` (`r`) gives the registry: a Service's
/// FQDN, a ServiceEntry's hosts; none for any other.
fn host_entries(i: usize, r: &Resource, domain: &str) -> Vec<HostEntry> {
    match (&r.kind, r.spec.as_deref()) {
        (Kind::Service, Some(Spec::Service(svc))) => vec![HostEntry {
            host: format!("{}.{}.svc.{domain}", r.name, r.namespace),
            index: i,
            namespace: r.namespace.clone(),
            export_to: export_annotation(r),
            ports: service_ports(svc),
            selector: svc.selector.clone(),
        }],
        (Kind::ServiceEntry, Some(Spec::ServiceEntry(se))) => {
            let ports = entry_ports(se);
            let entry = |h: &String| HostEntry {
                host: h.clone(),
                index: i,
                namespace: r.namespace.clone(),
                export_to: se.export_to.clone().unwrap_or_default(),
                ports: ports.clone(),
                selector: None,
            };
            se.hosts.iter().map(entry).collect()
        }
        _ => Vec::new(),
    }
}

/// The entries of `old` (in the order of the resources they come from,
/// `index` of each) moved to their resources' new positions (`map`, old
/// index → new or [`GONE`]), those of gone resources dropped, and `new`
/// (entries of new resources, in order) merged in where their resources
/// are. Gives the list, each old entry's new place in it (or [`GONE`]), and
/// the places of the new entries.
fn merge_entries<T>(
    old: Vec<T>,
    new: Vec<T>,
    map: &[u32],
    at: impl Fn(&T) -> usize,
    set: impl Fn(&mut T, usize),
) -> (Vec<T>, Vec<u32>, Vec<usize>) {
    let mut out = Vec::with_capacity(old.len() + new.len());
    let mut moved = Vec::with_capacity(old.len());
    let mut placed = Vec::with_capacity(new.len());
    let mut new = new.into_iter().peekable();
    for mut e in old {
        let to = map[at(&e)];
        if to == GONE {
            moved.push(GONE);
            continue;
        }
        set(&mut e, to as usize);
        while let Some(n) = new.next_if(|n| at(n) < to as usize) {
            placed.push(out.len());
            out.push(n);
        }
        moved.push(out.len() as u32);
        out.push(e);
    }
    for n in new {
        placed.push(out.len());
        out.push(n);
    }
    (out, moved, placed)
}

fn push_at(map: &mut HashMap<String, Vec<usize>>, key: &str, i: usize) {
    match map.get_mut(key) {
        Some(v) => v.push(i),
        None => {
            map.insert(key.to_string(), vec![i]);
        }
    }
}

impl Registry {
    /// Index `resources`.
    pub fn new(resources: &[Resource], settings: &Settings) -> Self {
        let mut ctx = Registry {
            hosts: Vec::new(),
            exact_hosts: HashMap::default(),
            wildcard_hosts: Vec::new(),
            selecting_services: HashMap::default(),
            services_by_label: HashMap::default(),
            destination_rules: HashMap::default(),
            gateways: HashMap::default(),
            gateway_api: HashMap::default(),
            workloads: Vec::new(),
            workloads_by_ns: HashMap::default(),
            workloads_by_label: HashMap::default(),
            namespaces: HashMap::default(),
            known_namespaces: HashSet::default(),
            service_accounts: HashSet::default(),
            sidecars: Vec::new(),
            by_kind: Default::default(),
            by_namespace: HashMap::default(),
            mtls: OnceLock::new(),
            naming: OnceLock::new(),
            calls: OnceLock::new(),
            principals: OnceLock::new(),
            identities: OnceLock::new(),
        };
        for (i, r) in resources.iter().enumerate() {
            ctx.by_kind[r.kind as usize].push(i);
            match ctx.by_namespace.get_mut(r.namespace.as_str()) {
                Some(v) => v.push(i),
                None => {
                    ctx.by_namespace.insert(r.namespace.clone(), vec![i]);
                    ctx.known_namespaces.insert(r.namespace.clone());
                }
            }
            match (&r.kind, r.spec.as_deref()) {
                (Kind::Service, Some(Spec::Service(_)))
                | (Kind::ServiceEntry, Some(Spec::ServiceEntry(_))) => {
                    for h in host_entries(i, r, &settings.cluster_domain) {
                        ctx.add_host(h);
                    }
                }
                (Kind::DestinationRule, Some(Spec::DestinationRule(dr))) => {
                    let host = fqdn(&dr.host, &r.namespace, &settings.cluster_domain);
                    ctx.destination_rules.entry(host).or_default().push(i);
                }
                (Kind::Sidecar, Some(Spec::Sidecar(_))) => ctx.sidecars.push(i),
                (Kind::Gateway | Kind::K8sGateway, _) => {}
                (Kind::Namespace, _) => {
                    ctx.namespaces.insert(r.name.clone(), r.labels());
                    ctx.known_namespaces.insert(r.name.clone());
                }
                (Kind::ServiceAccount, _) => {
                    ctx.service_accounts
                        .insert(format!("{}/{}", r.namespace, r.name));
                }
                _ => {
                    if let Some(w) = workload(i, r) {
                        ctx.add_workload(w);
                    }
                }
            }
        }
        ctx.index_gateways(resources);
        ctx
    }

    /// The gateway names and Gateway API listener hostnames, gathered from
    /// the Gateways of `by_kind` (the last of a name wins).
    fn index_gateways(&mut self, resources: &[Resource]) {
        let key = |r: &Resource| format!("{}/{}", r.namespace, r.name);
        let of = |k: Kind| self.by_kind[k as usize].iter().map(|&i| (i, &resources[i]));
        self.gateways = of(Kind::Gateway).map(|(i, r)| (key(r), i)).collect();
        self.gateway_api = of(Kind::K8sGateway)
            .filter_map(|(_, r)| match r.spec.as_deref() {
                Some(Spec::K8sGateway(g)) => Some((key(r), listener_hosts(g))),
                _ => None,
            })
            .collect();
    }

    fn add_host(&mut self, h: HostEntry) {
        let i = self.hosts.len();
        self.hosts.push(h);
        self.index_host(i);
        self.index_selector(i);
    }

    fn add_workload(&mut self, w: Workload) {
        self.service_accounts
            .insert(format!("{}/{}", w.namespace, w.service_account));
        let i = self.workloads.len();
        push_at(&mut self.workloads_by_ns, &w.namespace, i);
        let by_key = of_namespace(&mut self.workloads_by_label, &w.namespace);
        for (k, v) in &w.labels {
            index_label(by_key, k, v, i);
        }
        self.workloads.push(w);
    }
}

/// Count a resource giving an account (a workload, a ServiceAccount) that
/// came to namespace `ns` or went from it.
fn count_giver(givers: &mut HashMap<String, (usize, usize)>, ns: &str, gone: bool) {
    let (gained, lost) = match givers.get_mut(ns) {
        Some(n) => n,
        None => givers.entry(ns.to_string()).or_default(),
    };
    if gone {
        *lost += 1;
    } else {
        *gained += 1;
    }
}

/// What patching the registry in place changed ([`Registry::patch`]): which
/// of its parts ([`parts`]), the hosts whose entries changed (Service FQDNs
/// and ServiceEntry hosts, and DestinationRule hosts before and after), and
/// the namespaces of the changed resources (a Namespace's own name). Rules
/// say which parts they read and how far a change of them reaches
/// (`crate::rules::Deps`).
#[derive(Debug, Default)]
pub(crate) struct RegistryDelta {
    pub parts: u16,
    pub hosts: Vec<String>,
    pub namespaces: Vec<String>,
    /// Service accounts (`namespace/name`) a workload left or took.
    pub accounts: Vec<String>,
}

impl RegistryDelta {
    /// Its hosts, namespaces and accounts sorted, each once: how rules
    /// look them up.
    pub(crate) fn settle(&mut self) {
        for list in [&mut self.hosts, &mut self.namespaces, &mut self.accounts] {
            list.sort_unstable();
            list.dedup();
        }
    }
}

/// The parts of the registry a patch can change, as bits.
pub(crate) mod parts {
    /// A Service's `exportTo` annotation.
    pub const SVC_EXPORT: u16 = 1;
    /// A Service's ports.
    pub const SVC_PORTS: u16 = 1 << 1;
    /// A Service's selector.
    pub const SVC_SELECTOR: u16 = 1 << 2;
    /// A ServiceEntry's `exportTo`.
    pub const SE_EXPORT: u16 = 1 << 3;
    /// A ServiceEntry's ports.
    pub const SE_PORTS: u16 = 1 << 4;
    /// A workload's pod labels or annotations.
    pub const WL_LABELS: u16 = 1 << 5;
    /// Which selectors pick a workload: its new labels are not selected as
    /// its old ones were by some Service or ServiceEntry of its namespace,
    /// some Sidecar, PeerAuthentication, AuthorizationPolicy,
    /// RequestAuthentication, Telemetry or WasmPlugin of its namespace or
    /// the root namespace, or some Gateway. Set with [`WL_LABELS`]; a rule
    /// that reads workloads only through those selections (not a label's
    /// value, not an annotation, not a subset's labels) names this part
    /// instead, and an edit of a label nothing selects on leaves it alone.
    pub const WL_SELECTED: u16 = 1 << 9;
    /// A workload's service account (and so the known service accounts).
    pub const WL_SA: u16 = 1 << 6;
    /// A namespace's standing: its labels, whether the repository declares
    /// it or uses it, whether it has a service account.
    pub const NS_LABELS: u16 = 1 << 7;
    /// A DestinationRule's host.
    pub const DR_HOST: u16 = 1 << 8;
    /// A ServiceEntry's hosts: which hosts exist, and which namespaces own
    /// one (a Sidecar's `./*` imports its namespace's).
    pub const SE_HOSTS: u16 = 1 << 10;
    /// Where hosts are visible, and which ServiceEntry hosts exist.
    pub const HOST_EXPORT: u16 = SVC_EXPORT | SE_EXPORT | SE_HOSTS;
    /// Hosts' ports.
    pub const HOST_PORTS: u16 = SVC_PORTS | SE_PORTS;
    /// What MC0501's call graph is assembled from: set with a change of
    /// what selects what or who runs as whom when the call index, read
    /// again where it reached, differs, or a Sidecar's workloads may
    /// (`crate::graph::CallIndex`), or when the index was not there to
    /// tell. Set by the index's patch or move, not by the registry's.
    pub const CALLS: u16 = 1 << 11;
}

/// An index kept with the registry (`index`, when it was built), after
/// `patch` brought it up to date: kept when it could be, else left to be
/// built again by the first to ask. With `fresh` (in debug builds, for small
/// repositories), a patched index is compared with one built afresh.
fn patched<T: PartialEq>(
    index: Option<T>,
    patch: impl FnOnce(&mut T) -> bool,
    fresh: Option<impl FnOnce() -> T>,
    what: &str,
) -> OnceLock<T> {
    let out = OnceLock::new();
    if let Some(mut ix) = index
        && patch(&mut ix)
    {
        debug_assert!(
            fresh.is_none_or(|f| ix == f()),
            "a patched {what} differs from one built afresh"
        );
        let _ = out.set(ix);
    }
    out
}

/// Insert `i` into a sorted list, keeping it sorted.
pub(crate) fn insert_sorted(v: &mut Vec<usize>, i: usize) {
    if let Err(at) = v.binary_search(&i) {
        v.insert(at, i);
    }
}

/// Move the indices of a sorted list to their new positions (`map`, old
/// index → new or [`GONE`]), dropping the gone ones: the map keeps order,
/// so the list stays sorted.
pub(crate) fn shift_sorted(v: &mut Vec<usize>, map: &[u32]) {
    // One pass, in place: most lists are a few entries long and there are
    // tens of thousands of them, so the per-list cost is what counts.
    let mut kept = 0;
    for r in 0..v.len() {
        let to = map[v[r]];
        if to != GONE {
            v[kept] = to as usize;
            kept += 1;
        }
    }
    v.truncate(kept);
}

/// [`shift_sorted`] for every list of a label index, dropping what empties.
fn shift_labels(ix: &mut LabelIndex, map: &[u32]) {
    for by_key in ix.values_mut() {
        for values in by_key.values_mut() {
            for v in values.values_mut() {
                shift_sorted(v, map);
            }
            values.retain(|_, v| !v.is_empty());
        }
        by_key.retain(|_, values| !values.is_empty());
    }
    ix.retain(|_, by_key| !by_key.is_empty());
}

/// Remove `i` from a sorted list; whether the list is now empty.
pub(crate) fn remove_sorted(v: &mut Vec<usize>, i: usize) -> bool {
    if let Ok(at) = v.binary_search(&i) {
        v.remove(at);
    }
    v.is_empty()
}

impl Registry {
    /// Bring the registry up to date in place after edits that keep every
    /// resource's identity where it was and change only what it copies of
    /// some: `pairs` are each such resource before, with its index in
    /// `resources` (the new list). Gives what changed, or `None` (the
    /// registry is then unusable and must be built again) for an edit it
    /// cannot patch: a resource that stopped or started declaring a
    /// workload. A ServiceEntry's hosts replace its host entries where they
    /// were ([`Registry::replace_entries`]).
    pub(crate) fn patch(
        &mut self,
        pairs: &[(Resource, usize)],
        resources: &[Resource],
        settings: &Settings,
    ) -> Option<RegistryDelta> {
        let mut delta = RegistryDelta::default();
        // Workloads whose labels changed: (namespace, before, after).
        type Relabelled = (String, Map<String, String>, Map<String, String>);
        let mut relabelled: Vec<Relabelled> = Vec::new();
        for (old, i) in pairs {
            let (i, new) = (*i, &resources[*i]);
            if old.identity() != new.identity() {
                return None;
            }
            let ns = new.namespace.clone();
            match (old.spec.as_deref(), new.spec.as_deref()) {
                (Some(Spec::Service(a)), Some(Spec::Service(b))) => {
                    let host = format!("{}.{ns}.svc.{}", new.name, settings.cluster_domain);
                    let k = *self
                        .exact_hosts
                        .get(&host)?
                        .iter()
                        .find(|&&k| self.hosts[k].index == i)?;
                    let (export, ports) = (export_annotation(new), service_ports(b));
                    let entry = &self.hosts[k];
                    for (changed, bit) in [
                        (entry.export_to != export, parts::SVC_EXPORT),
                        (entry.ports != ports, parts::SVC_PORTS),
                        (a.selector != b.selector, parts::SVC_SELECTOR),
                    ] {
                        if changed {
                            delta.parts |= bit;
                        }
                    }
                    self.unindex_selector(k);
                    let entry = &mut self.hosts[k];
                    entry.export_to = export;
                    entry.ports = ports;
                    entry.selector = b.selector.clone();
                    self.index_selector(k);
                    delta.hosts.push(host);
                }
                (Some(Spec::ServiceEntry(a)), Some(Spec::ServiceEntry(b))) => {
                    let (export, ports) = (b.export_to.clone().unwrap_or_default(), entry_ports(b));
                    if a.export_to != b.export_to {
                        delta.parts |= parts::SE_EXPORT;
                    }
                    if entry_ports(a) != ports {
                        delta.parts |= parts::SE_PORTS;
                    }
                    if a.hosts != b.hosts {
                        delta.parts |= parts::SE_HOSTS;
                        delta.hosts.extend(a.hosts.iter().cloned());
                        let entries = b.hosts.iter().map(|h| HostEntry {
                            host: h.clone(),
                            index: i,
                            namespace: ns.clone(),
                            export_to: export.clone(),
                            ports: ports.clone(),
                            selector: None,
                        });
                        self.replace_entries(i, entries.collect());
                    } else {
                        for h in self.hosts.iter_mut().filter(|h| h.index == i) {
                            h.export_to = export.clone();
                            h.ports = ports.clone();
                        }
                    }
                    delta.hosts.extend(b.hosts.iter().cloned());
                }
                (Some(Spec::DestinationRule(a)), Some(Spec::DestinationRule(b))) => {
                    let before = fqdn(&a.host, &ns, &settings.cluster_domain);
                    let after = fqdn(&b.host, &ns, &settings.cluster_domain);
                    if before != after {
                        delta.parts |= parts::DR_HOST;
                        if self
                            .destination_rules
                            .get_mut(&before)
                            .is_some_and(|v| remove_sorted(v, i))
                        {
                            self.destination_rules.remove(&before);
                        }
                        insert_sorted(self.destination_rules.entry(after.clone()).or_default(), i);
                        delta.hosts.extend([before, after]);
                    }
                }
                (Some(Spec::K8sGateway(_)), Some(Spec::K8sGateway(b))) => {
                    // Its rules read Gateway API Gateways (`Deps`): no part.
                    self.gateway_api
                        .insert(format!("{ns}/{}", new.name), listener_hosts(b));
                    continue;
                }
                _ if new.kind == Kind::Namespace => {
                    self.namespaces.insert(new.name.clone(), new.labels());
                    delta.parts |= parts::NS_LABELS;
                    delta.namespaces.push(new.name.clone());
                    continue;
                }
                (a, b) => match (workload(i, old), workload(i, new)) {
                    (Some(before), Some(after)) => {
                        if before.labels != after.labels {
                            relabelled.push((
                                ns.clone(),
                                before.labels.clone(),
                                after.labels.clone(),
                            ));
                        }
                        self.patch_workload(before, after, resources, &mut delta)?
                    }
                    (None, None) if a.is_some() == b.is_some() => continue,
                    _ => return None,
                },
            }
            delta.namespaces.push(ns);
        }
        delta.settle();
        // Judged on the patched registry, with every selector as it is now:
        // one that changed in the same edit is a changed resource itself.
        let root = settings.root_namespace.as_str();
        if relabelled
            .iter()
            .any(|(ns, a, b)| !self.selected_alike(ns, a, b, resources, root))
        {
            delta.parts |= parts::WL_SELECTED;
        }
        Some(delta)
    }

    /// Whether pods of namespace `ns` with labels `a` and pods there with
    /// labels `b` are picked by the same selectors ([`parts::WL_SELECTED`]).
    fn selected_alike(
        &self,
        ns: &str,
        a: &Map<String, String>,
        b: &Map<String, String>,
        resources: &[Resource],
        root: &str,
    ) -> bool {
        let alike = |selector: &Map<String, String>| selects(selector, a) == selects(selector, b);
        let services = self
            .selecting_services(ns)
            .filter_map(|h| h.selector.as_ref())
            .all(alike);
        // Policies select in their namespace (the root namespace's: in
        // every one), Gateways in any.
        let by = |kind: &Kind| self.by_kind[*kind as usize].iter().map(|&i| &resources[i]);
        let selectors = SELECTING_KINDS.iter().flat_map(by).all(|r| {
            let reaches = r.kind == Kind::Gateway || r.namespace == ns || r.namespace == root;
            !reaches || !matches!(r.selection(), Some(Selection::Labels(l, _)) if !alike(l))
        });
        services && selectors
    }

    /// Replace workload `before` with `after` (the same resource).
    fn patch_workload(
        &mut self,
        before: Workload,
        after: Workload,
        resources: &[Resource],
        delta: &mut RegistryDelta,
    ) -> Option<()> {
        let w = self
            .workloads
            .binary_search_by_key(&after.index, |w| w.index)
            .ok()?;
        if before.labels != after.labels || before.annotations != after.annotations {
            delta.parts |= parts::WL_LABELS;
        }
        let by_key = self.workloads_by_label.get_mut(&after.namespace)?;
        for (k, v) in &before.labels {
            unindex_label(by_key, k, v, w);
        }
        for (k, v) in &after.labels {
            index_label(by_key, k, v, w);
        }
        if before.service_account != after.service_account {
            delta.parts |= parts::WL_SA;
            let ns = after.namespace.clone();
            let old = before.service_account.as_str();
            self.workloads[w] = after;
            delta.accounts.push(format!("{ns}/{old}"));
            delta
                .accounts
                .push(format!("{ns}/{}", self.workloads[w].service_account));
            let used = self.workloads_in(&ns).any(|o| o.service_account == old)
                || self.by_kind[Kind::ServiceAccount as usize]
                    .iter()
                    .any(|&r| resources[r].namespace == ns && resources[r].name == old);
            if !used {
                self.service_accounts.remove(&format!("{ns}/{old}"));
            }
            let w = &self.workloads[w];
            self.service_accounts
                .insert(format!("{}/{}", w.namespace, w.service_account));
        } else {
            self.workloads[w] = after;
        }
        Some(())
    }

    /// The Services of namespace `ns` that have a selector.
    pub fn selecting_services<'s>(&'s self, ns: &str) -> impl Iterator<Item = &'s HostEntry> + 's {
        self.selecting_services
            .get(ns)
            .into_iter()
            .flatten()
            .map(|&i| &self.hosts[i])
    }

    /// The workloads of namespace `ns`.
    pub fn workloads_in<'s>(&'s self, ns: &str) -> impl Iterator<Item = &'s Workload> + 's {
        self.workloads_by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .map(|&i| &self.workloads[i])
    }

    /// Replace the host entries of resource `i` (a ServiceEntry's, which
    /// have no selector) with `entries`, where they were: the entries after
    /// them move by the difference, and every index of the host entries
    /// with them.
    fn replace_entries(&mut self, i: usize, entries: Vec<HostEntry>) {
        let start = self.hosts.partition_point(|h| h.index < i);
        let end = self.hosts.partition_point(|h| h.index <= i);
        for k in start..end {
            self.unindex_host(k);
        }
        let added = entries.len();
        let shift = |k: &mut usize| {
            if *k >= end {
                *k = *k + added - (end - start);
            }
        };
        self.exact_hosts.values_mut().flatten().for_each(shift);
        self.wildcard_hosts.iter_mut().for_each(shift);
        self.selecting_services
            .values_mut()
            .flatten()
            .for_each(shift);
        self.services_by_label
            .values_mut()
            .flat_map(|by_key| by_key.values_mut())
            .flat_map(|by_value| by_value.values_mut())
            .flatten()
            .for_each(shift);
        self.hosts.splice(start..end, entries);
        for k in start..start + added {
            self.index_host(k);
        }
    }

    /// Host entry `k`, put in the exact or wildcard host index.
    fn index_host(&mut self, k: usize) {
        let host = &self.hosts[k].host;
        if host.starts_with('*') {
            insert_sorted(&mut self.wildcard_hosts, k);
        } else {
            match self.exact_hosts.get_mut(host) {
                Some(v) => insert_sorted(v, k),
                None => {
                    self.exact_hosts.insert(host.clone(), vec![k]);
                }
            }
        }
    }

    /// Host entry `k`, taken out of the exact or wildcard host index.
    fn unindex_host(&mut self, k: usize) {
        let host = &self.hosts[k].host;
        if host.starts_with('*') {
            remove_sorted(&mut self.wildcard_hosts, k);
        } else if self
            .exact_hosts
            .get_mut(host)
            .is_some_and(|v| remove_sorted(v, k))
        {
            self.exact_hosts.remove(host);
        }
    }

    /// Host entry `k`'s selector, taken out of the selector indices.
    fn unindex_selector(&mut self, k: usize) {
        let h = &self.hosts[k];
        let Some((key, value)) = h.selector.as_ref().and_then(|s| s.iter().next()) else {
            return;
        };
        if self
            .selecting_services
            .get_mut(&h.namespace)
            .is_some_and(|v| remove_sorted(v, k))
        {
            self.selecting_services.remove(&h.namespace);
        }
        if let Some(by_key) = self.services_by_label.get_mut(&h.namespace) {
            unindex_label(by_key, key, value, k);
            if by_key.is_empty() {
                self.services_by_label.remove(&h.namespace);
            }
        }
    }

    /// Host entry `k`'s selector, put in the selector indices.
    fn index_selector(&mut self, k: usize) {
        let h = &self.hosts[k];
        let Some((key, value)) = h.selector.as_ref().and_then(|s| s.iter().next()) else {
            return;
        };
        match self.selecting_services.get_mut(&h.namespace) {
            Some(v) => insert_sorted(v, k),
            None => {
                self.selecting_services.insert(h.namespace.clone(), vec![k]);
            }
        }
        let by_key = of_namespace(&mut self.services_by_label, &h.namespace);
        index_label(by_key, key, value, k);
    }
}

/// Registries are equal when they index the same (the mTLS index, built on
/// demand, is not compared): how a patched registry is checked against one
/// built afresh.
impl PartialEq for Registry {
    fn eq(&self, o: &Self) -> bool {
        self.hosts == o.hosts
            && self.exact_hosts == o.exact_hosts
            && self.wildcard_hosts == o.wildcard_hosts
            && self.selecting_services == o.selecting_services
            && self.services_by_label == o.services_by_label
            && self.destination_rules == o.destination_rules
            && self.gateways == o.gateways
            && self.gateway_api == o.gateway_api
            && self.workloads == o.workloads
            && self.workloads_by_ns == o.workloads_by_ns
            && self.workloads_by_label == o.workloads_by_label
            && self.namespaces == o.namespaces
            && self.known_namespaces == o.known_namespaces
            && self.service_accounts == o.service_accounts
            && self.sidecars == o.sidecars
            && self.by_kind == o.by_kind
            && self.by_namespace == o.by_namespace
    }
}

impl Registry {
    /// Whether `self`, built before an edit that added, removed or moved
    /// resources, holds what `new`, built after it, holds, apart from where
    /// the resources are and from what only resources of some kind give it:
    /// the DestinationRules of each host, the Sidecars, which resource is
    /// each kind's. A rule reads those through a kind its `Deps` names, or
    /// through `DR_HOST`, and runs again where the changed resources of that
    /// kind reach; what it reads through no kind (which hosts, workloads,
    /// namespaces, service accounts and gateway names exist, and what each
    /// gives) must be as it was.
    pub(crate) fn same_but_positions(&self, new: &Registry) -> bool {
        let host = |(a, b): (&HostEntry, &HostEntry)| {
            a.host == b.host
                && a.namespace == b.namespace
                && a.export_to == b.export_to
                && a.ports == b.ports
                && a.selector == b.selector
        };
        let workload = |(a, b): (&Workload, &Workload)| {
            a.namespace == b.namespace
                && a.labels == b.labels
                && a.annotations == b.annotations
                && a.service_account == b.service_account
        };
        // The indices into `hosts` and `workloads` follow from those lists.
        self.hosts.len() == new.hosts.len()
            && self.hosts.iter().zip(&new.hosts).all(host)
            && self.workloads.len() == new.workloads.len()
            && self.workloads.iter().zip(&new.workloads).all(workload)
            && self.gateways.len() == new.gateways.len()
            && self.gateways.keys().all(|k| new.gateways.contains_key(k))
            && self.gateway_api == new.gateway_api
            && self.namespaces == new.namespaces
            && self.known_namespaces == new.known_namespaces
            && self.service_accounts == new.service_accounts
    }

    /// Move the registry to the resources' new positions after an edit in
    /// which resources came or went (`change` says which, and where every
    /// old resource is now): the gone ones' contributions leave and the new
    /// ones' come in (host entries and workloads where their resources are,
    /// with every index into those lists moved), every other resource index
    /// moves, and so do the indices kept with it (naming, principal, call,
    /// identity and mTLS; one that cannot move is dropped, to be built again
    /// by the first to ask). Gives what changed as a [`RegistryDelta`], as a
    /// patch of the resources that came and went would: a Service's host
    /// with every part a Service gives (which Service hosts exist is read
    /// through `SVC_EXPORT`; its FQDN names its own namespace, so `imports`
    /// and `SE_HOSTS` do not change), a ServiceEntry's hosts with every part
    /// it gives, a DestinationRule's host, a workload's namespace and
    /// service account with every workload part, a service account, a
    /// Namespace's name with `NS_LABELS` (a Gateway gives no part: the rules
    /// reading which gateways exist name the kind); and a namespace that
    /// came into use or went out of it, was declared or no longer is, or got
    /// its first service account or lost its last, with `NS_LABELS`.
    pub(crate) fn shift(
        &mut self,
        change: &crate::incremental::Change,
        resources: &[Resource],
        settings: &Settings,
    ) -> RegistryDelta {
        let map = change.positions().expect("a shift knows the positions");
        let domain = settings.cluster_domain.as_str();
        let added = change.added();
        let mut delta = RegistryDelta::default();
        // Service accounts a gone workload ran as, or a gone ServiceAccount
        // declared: (namespace, name).
        let mut left: Vec<(String, String)> = Vec::new();
        // Namespaces whose resources giving an account (workloads and
        // ServiceAccounts) came or went: how many came, how many went.
        let mut givers: HashMap<String, (usize, usize)> = HashMap::default();
        let (mut hosts_changed, mut workloads_changed) = (false, false);
        let (mut gateways_changed, mut namespaces_changed) = (false, false);
        let changed = change
            .removed()
            .iter()
            .map(|r| (r, true))
            .chain(added.iter().map(|&i| (&resources[i], false)));
        for (r, gone) in changed {
            let ns = &r.namespace;
            match (r.kind, r.spec.as_deref()) {
                (Kind::Service | Kind::ServiceEntry, _) => {
                    delta.parts |= match r.kind {
                        Kind::Service => SVC_EXPORT | SVC_PORTS | SVC_SELECTOR,
                        _ => SE_EXPORT | SE_PORTS | SE_HOSTS,
                    };
                    let entries = host_entries(0, r, domain);
                    hosts_changed |= !entries.is_empty();
                    delta.hosts.extend(entries.into_iter().map(|h| h.host));
                }
                (Kind::DestinationRule, Some(Spec::DestinationRule(dr))) => {
                    delta.parts |= DR_HOST;
                    delta.hosts.push(fqdn(&dr.host, ns, domain));
                }
                (Kind::ServiceAccount, _) => {
                    delta.parts |= WL_SA;
                    delta.accounts.push(format!("{ns}/{}", r.name));
                    count_giver(&mut givers, ns, gone);
                    if gone {
                        left.push((ns.clone(), r.name.clone()));
                    }
                }
                // Which gateways exist: the rules that read it name the kind
                // (`Deps`), so no part says it.
                (Kind::Gateway | Kind::K8sGateway, _) => {
                    gateways_changed = true;
                    continue;
                }
                // A namespace declared or no longer: its labels changed, as
                // a patch says of a Namespace edited.
                (Kind::Namespace, _) => {
                    delta.parts |= NS_LABELS;
                    delta.namespaces.push(r.name.clone());
                    namespaces_changed = true;
                    continue;
                }
                _ => match workload(0, r) {
                    Some(w) => {
                        delta.parts |= WL_LABELS | WL_SELECTED | WL_SA;
                        delta.accounts.push(format!("{ns}/{}", w.service_account));
                        workloads_changed = true;
                        count_giver(&mut givers, ns, gone);
                        if gone {
                            left.push((ns.clone(), w.service_account));
                        }
                    }
                    None => continue,
                },
            }
            delta.namespaces.push(ns.clone());
        }
        if hosts_changed {
            let new = added
                .iter()
                .flat_map(|&i| host_entries(i, &resources[i], domain));
            let hosts = std::mem::take(&mut self.hosts);
            let (hosts, moved, placed) =
                merge_entries(hosts, new.collect(), map, |h| h.index, |h, i| h.index = i);
            self.hosts = hosts;
            for v in self.exact_hosts.values_mut() {
                shift_sorted(v, &moved);
            }
            self.exact_hosts.retain(|_, v| !v.is_empty());
            shift_sorted(&mut self.wildcard_hosts, &moved);
            for v in self.selecting_services.values_mut() {
                shift_sorted(v, &moved);
            }
            self.selecting_services.retain(|_, v| !v.is_empty());
            shift_labels(&mut self.services_by_label, &moved);
            for k in placed {
                self.index_host(k);
                self.index_selector(k);
            }
        } else {
            self.hosts
                .iter_mut()
                .for_each(|h| h.index = map[h.index] as usize);
        }
        if workloads_changed {
            let new = added.iter().filter_map(|&i| workload(i, &resources[i]));
            let workloads = std::mem::take(&mut self.workloads);
            let (workloads, moved, placed) = merge_entries(
                workloads,
                new.collect(),
                map,
                |w| w.index,
                |w, i| w.index = i,
            );
            self.workloads = workloads;
            for v in self.workloads_by_ns.values_mut() {
                shift_sorted(v, &moved);
            }
            self.workloads_by_ns.retain(|_, v| !v.is_empty());
            shift_labels(&mut self.workloads_by_label, &moved);
            for k in placed {
                self.index_workload(k);
            }
        } else {
            let workloads = self.workloads.iter_mut();
            workloads.for_each(|w| w.index = map[w.index] as usize);
        }
        if !gateways_changed {
            self.gateways
                .values_mut()
                .for_each(|k| *k = map[*k] as usize);
        }
        for v in self.destination_rules.values_mut() {
            shift_sorted(v, map);
        }
        self.destination_rules.retain(|_, v| !v.is_empty());
        shift_sorted(&mut self.sidecars, map);
        for v in &mut self.by_kind {
            shift_sorted(v, map);
        }
        for v in self.by_namespace.values_mut() {
            shift_sorted(v, map);
        }
        self.by_namespace.retain(|_, v| !v.is_empty());
        // Namespaces that came into use or went out of it, or were declared
        // or no longer: `NS_LABELS`, which every rule reading which
        // namespaces exist names.
        let mut standing: Vec<String> = Vec::new();
        for &i in added {
            let r = &resources[i];
            insert_sorted(&mut self.by_kind[r.kind as usize], i);
            match self.by_namespace.get_mut(r.namespace.as_str()) {
                Some(v) => insert_sorted(v, i),
                None => {
                    self.by_namespace.insert(r.namespace.clone(), vec![i]);
                }
            }
            match r.spec.as_deref() {
                Some(Spec::DestinationRule(dr)) => {
                    let host = fqdn(&dr.host, &r.namespace, domain);
                    insert_sorted(self.destination_rules.entry(host).or_default(), i);
                }
                Some(Spec::Sidecar(_)) => insert_sorted(&mut self.sidecars, i),
                _ if r.kind == Kind::ServiceAccount => {
                    self.service_accounts
                        .insert(format!("{}/{}", r.namespace, r.name));
                }
                _ => {}
            }
            if !self.known_namespaces.contains(r.namespace.as_str()) {
                self.known_namespaces.insert(r.namespace.clone());
                standing.push(r.namespace.clone());
            }
        }
        // Gateways and Namespaces are few: what they give is gathered again
        // (the last of a name wins, as in `Registry::new`).
        if gateways_changed {
            self.index_gateways(resources);
        }
        if namespaces_changed {
            self.namespaces = self.by_kind[Kind::Namespace as usize]
                .iter()
                .map(|&i| (resources[i].name.clone(), resources[i].labels()))
                .collect();
            for &i in added {
                let r = &resources[i];
                if r.kind == Kind::Namespace && !self.known_namespaces.contains(r.name.as_str()) {
                    self.known_namespaces.insert(r.name.clone());
                    standing.push(r.name.clone());
                }
            }
        }
        for (ns, sa) in left {
            let used = self.workloads_in(&ns).any(|w| w.service_account == sa)
                || self.by_kind[Kind::ServiceAccount as usize]
                    .iter()
                    .any(|&r| resources[r].namespace == ns && resources[r].name == sa);
            if !used {
                self.service_accounts.remove(&format!("{ns}/{sa}"));
            }
        }
        for r in change.removed() {
            let declared = (r.kind == Kind::Namespace).then_some(r.name.as_str());
            for ns in std::iter::once(r.namespace.as_str()).chain(declared) {
                if self.known_namespaces.contains(ns)
                    && !self.namespaces.contains_key(ns)
                    && !self.by_namespace.contains_key(ns)
                {
                    self.known_namespaces.remove(ns);
                    standing.push(ns.to_string());
                }
            }
        }
        // A namespace whose first account came or last went: whether it has
        // any decides what MC0403 says of every principal naming it.
        for (ns, (gained, lost)) in givers {
            let declared = self.by_namespace.get(&ns).map_or(0, |v| {
                let of_kind = |&&i: &&usize| resources[i].kind == Kind::ServiceAccount;
                v.iter().filter(of_kind).count()
            });
            let now = self.workloads_by_ns.get(&ns).map_or(0, Vec::len) + declared;
            if (now == 0) != (now + lost == gained) {
                standing.push(ns);
            }
        }
        if !standing.is_empty() {
            delta.parts |= NS_LABELS;
            delta.namespaces.extend(standing);
        }
        delta.settle();
        // Tests compile small repositories: check every move there.
        let check = resources.len() <= 5_000;
        let identities = self.identities.take();
        self.identities = patched(
            identities,
            |ix| {
                ix.shift(map, added, resources);
                true
            },
            check.then_some(|| Identities::new(resources)),
            "moved identity index",
        );
        let mtls = self.mtls.take();
        let rules = &self.destination_rules;
        let fresh_mtls = || {
            let ctx = Context::new(resources, settings, self);
            crate::mtls::MtlsIndex::new(&ctx)
        };
        let mtls = patched(
            mtls,
            |ix| ix.shift(change, map, resources, rules, domain),
            check.then_some(fresh_mtls),
            "moved mTLS index",
        );
        self.mtls = mtls;
        let calls_changed = self.mend_indices(
            resources,
            settings,
            |ix| {
                ix.shift(map, added, resources, domain);
                true
            },
            |ix| {
                ix.shift(map, added, resources);
                true
            },
            |ix, ctx| ix.shift(ctx, map, added, &delta),
        );
        if calls_changed {
            delta.parts |= CALLS;
        }
        delta
    }

    /// Workload `k`, put in the namespace and label indices, and its
    /// service account among the known ones.
    fn index_workload(&mut self, k: usize) {
        let w = &self.workloads[k];
        let account = format!("{}/{}", w.namespace, w.service_account);
        self.service_accounts.insert(account);
        match self.workloads_by_ns.get_mut(&w.namespace) {
            Some(v) => insert_sorted(v, k),
            None => {
                self.workloads_by_ns.insert(w.namespace.clone(), vec![k]);
            }
        }
        let by_key = of_namespace(&mut self.workloads_by_label, &w.namespace);
        for (key, value) in &w.labels {
            index_label(by_key, key, value, k);
        }
    }

    /// Bring the naming, principal and call indices kept with the registry
    /// up to date (each closure gives whether it could; the call index's
    /// also whether what it read again differs), each dropped when it
    /// could not and, in debug builds for small repositories, compared
    /// with one built afresh. Gives whether the call graph may differ
    /// ([`parts::CALLS`]): the call index said so, or was not there to
    /// tell.
    fn mend_indices(
        &mut self,
        resources: &[Resource],
        settings: &Settings,
        naming: impl FnOnce(&mut crate::naming::NamingIndex) -> bool,
        principals: impl FnOnce(&mut crate::principals::PrincipalIndex) -> bool,
        calls: impl FnOnce(&mut crate::graph::CallIndex, &Context) -> Option<bool>,
    ) -> bool {
        let domain = settings.cluster_domain.as_str();
        // Tests compile small repositories: check every patch there.
        let check = resources.len() <= 5_000;
        let index = self.naming.take();
        self.naming = patched(
            index,
            naming,
            check.then_some(|| {
                crate::naming::NamingIndex::new(resources, &self.naming_indices(), domain)
            }),
            "naming index",
        );
        let index = self.principals.take();
        let policies = &self.by_kind[Kind::AuthorizationPolicy as usize];
        self.principals = patched(
            index,
            principals,
            check.then_some(|| crate::principals::PrincipalIndex::new(resources, policies)),
            "principal index",
        );
        let index = self.calls.take();
        let ctx = Context::new(resources, settings, self);
        let mut changed = true;
        self.calls = patched(
            index,
            |ix| {
                let patched = calls(ix, &ctx);
                changed = patched.unwrap_or(true);
                patched.is_some()
            },
            check.then_some(|| crate::graph::CallIndex::new(&ctx)),
            "call index",
        );
        changed
    }

    /// The indices of the resources the naming index holds.
    fn naming_indices(&self) -> Vec<usize> {
        let of = |k: Kind| self.by_kind[k as usize].iter().copied();
        crate::naming::NAMING.into_iter().flat_map(of).collect()
    }

    /// Mend what an edit made stale in a registry kept across it (the
    /// change leaves every contribution as it was): the naming index moves
    /// the changed VirtualServices and DestinationRules
    /// ([`crate::naming::NamingIndex::patch`]); the mTLS index, when what it
    /// reads of a PeerAuthentication or DestinationRule changed, is patched
    /// ([`crate::mtls::MtlsIndex::patch`]); the call index reads the changed
    /// VirtualServices and AuthorizationPolicies, and the policies of the
    /// namespaces a patch reached, again ([`crate::graph::CallIndex::patch`]).
    /// Each is dropped, to be built again by the first to ask, when it
    /// cannot be patched. Gives whether the call graph may differ for what
    /// the registry patch changed ([`parts::CALLS`]).
    pub(crate) fn forget_stale(
        &mut self,
        change: &crate::incremental::Change,
        resources: &[Resource],
        settings: &Settings,
    ) -> bool {
        let domain = settings.cluster_domain.as_str();
        let calls_changed = self.mend_indices(
            resources,
            settings,
            |ix| ix.patch(change, resources, domain),
            |ix| ix.patch(change, resources),
            |ix, ctx| ix.patch(ctx, change),
        );
        let reads = [Kind::PeerAuthentication, Kind::DestinationRule];
        if !change.touches(&reads)
            || change.same_projection(&reads, crate::mtls::project, resources)
        {
            return calls_changed;
        }
        let patched = match self.mtls.get_mut() {
            Some(ix) => ix.patch(
                change,
                resources,
                &self.destination_rules,
                &settings.cluster_domain,
            ),
            None => true,
        };
        if !patched {
            self.mtls = OnceLock::new();
        }
        calls_changed
    }
}

impl<'a> Context<'a> {
    /// The context of `resources` indexed by `registry` (built from them, or
    /// from resources that contribute alike: [`same_contribution`]).
    pub fn new(resources: &'a [Resource], settings: &'a Settings, registry: &'a Registry) -> Self {
        Context {
            resources,
            settings,
            registry,
            focus: None,
        }
    }

    /// The same context with rules reporting only on the resources at
    /// `focus` (sorted indices).
    pub(crate) fn focused(self, focus: &'a [usize]) -> Self {
        Context {
            focus: Some(focus),
            ..self
        }
    }

    /// The naming index of the repository, built by the first to ask.
    pub(crate) fn naming(&self) -> &'a crate::naming::NamingIndex {
        let registry: &'a Registry = self.registry;
        registry.naming.get_or_init(|| {
            let indices = registry.naming_indices();
            crate::naming::NamingIndex::new(self.resources, &indices, &self.settings.cluster_domain)
        })
    }

    /// The naming index when it is already built (a session builds it with
    /// every registry), without building it.
    pub(crate) fn naming_if_built(&self) -> Option<&'a crate::naming::NamingIndex> {
        let registry: &'a Registry = self.registry;
        registry.naming.get()
    }

    /// The resources by identity, indexed by the first to ask.
    pub(crate) fn identities(&self) -> &'a Identities {
        let registry: &'a Registry = self.registry;
        registry
            .identities
            .get_or_init(|| Identities::new(self.resources))
    }

    /// The indices of the resources with identity `id`, in order.
    pub(crate) fn with_identity(&self, id: (Kind, &str, &str)) -> Vec<usize> {
        let ix = self.identities();
        let h = Identities::hash(id);
        let found: Vec<usize> = match ix.more.get(&h) {
            Some(v) => v.clone(),
            None => ix.first.get(&h).map(|&i| vec![i]).unwrap_or_default(),
        };
        let same = |&i: &usize| self.resources[i].identity() == id;
        found.into_iter().filter(same).collect()
    }

    /// The principal index of the repository, built by the first to ask.
    pub(crate) fn principals(&self) -> &'a crate::principals::PrincipalIndex {
        let registry: &'a Registry = self.registry;
        registry.principals.get_or_init(|| {
            let indices = &registry.by_kind[Kind::AuthorizationPolicy as usize];
            crate::principals::PrincipalIndex::new(self.resources, indices)
        })
    }

    /// The call index of the repository, built by the first to ask.
    pub(crate) fn calls(&self) -> &'a crate::graph::CallIndex {
        let registry: &'a Registry = self.registry;
        registry
            .calls
            .get_or_init(|| crate::graph::CallIndex::new(self))
    }

    /// The mTLS index of the repository, built by the first to ask.
    pub fn mtls(&self) -> &'a crate::mtls::MtlsIndex {
        let registry: &'a Registry = self.registry;
        registry
            .mtls
            .get_or_init(|| crate::mtls::MtlsIndex::new(self))
    }

    /// Every resource a rule reports on: all of them, or those of the focus.
    pub fn all_subjects(&self) -> impl Iterator<Item = &'a Resource> + '_ {
        let resources = self.resources;
        let all = self.focus.is_none().then(|| resources.iter());
        let focused = self.focus.map(|f| f.iter().map(move |&i| &resources[i]));
        all.into_iter()
            .flatten()
            .chain(focused.into_iter().flatten())
    }

    /// The resources of one kind with a typed spec that a rule reports on:
    /// all of them ([`Context::of_kind`]), or those of the focus. A rule
    /// that iterates its subjects with this must report on each only what
    /// the subject, the registry and the resources it declares it reads
    /// decide (`crate::rules::Deps`).
    pub fn subjects(
        &self,
        kind: Kind,
    ) -> impl Iterator<Item = (usize, &'a Resource, &'a Spec)> + '_ {
        let all = self.focus.is_none().then(|| self.of_kind(kind));
        let focused = self.focus.map(move |f| {
            f.iter().filter_map(move |&i| {
                let r = &self.resources[i];
                match r.spec.as_deref() {
                    Some(s) if r.kind == kind => Some((i, r, s)),
                    _ => None,
                }
            })
        });
        all.into_iter()
            .flatten()
            .chain(focused.into_iter().flatten())
    }

    /// Resources of one kind with a typed spec, with their indices.
    pub fn of_kind(
        &self,
        kind: Kind,
    ) -> impl Iterator<Item = (usize, &'a Resource, &'a Spec)> + '_ {
        self.by_kind[kind as usize].iter().filter_map(|&i| {
            let r = &self.resources[i];
            r.spec.as_deref().map(|s| (i, r, s))
        })
    }

    /// The DestinationRule spec of resource `i`.
    pub fn destination_rule(&self, i: usize) -> Option<&'a DestinationRuleSpec> {
        match self.resources[i].spec.as_deref() {
            Some(Spec::DestinationRule(dr)) => Some(dr),
            _ => None,
        }
    }

    /// The DestinationRules Istio applies to `host`: those of the most specific
    /// host covering it (`a.b.c`, then `*.b.c`, `*.c`, `*`).
    pub fn destination_rules_for(&self, host: &str) -> &[usize] {
        covering(host)
            .find_map(|h| self.destination_rules.get(h.as_ref()))
            .map_or(&[], Vec::as_slice)
    }

    /// The server host entries (`[namespace/]host`) of gateway `key`
    /// (`namespace/name`): an Istio Gateway's servers, or a Gateway API
    /// Gateway's listener hostnames, which admit any namespace. `None` when no
    /// such gateway exists; a Gateway whose spec did not load admits anything,
    /// so nothing is reported against it.
    pub fn gateway_hosts(&self, key: &str) -> Option<Vec<String>> {
        if let Some(&i) = self.gateways.get(key) {
            return Some(match self.resources[i].spec.as_deref() {
                Some(Spec::Gateway(g)) => g
                    .servers
                    .iter()
                    .flatten()
                    .flat_map(|s| s.hosts.iter().cloned())
                    .collect(),
                _ => vec!["*/*".to_string()],
            });
        }
        self.gateway_api
            .get(key)
            .map(|hosts| hosts.iter().map(|h| format!("*/{h}")).collect())
    }

    /// Istio's host resolution: a name without dots is a Service in `namespace`.
    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        fqdn(host, namespace, &self.settings.cluster_domain)
    }

    /// The Services and ServiceEntries that define `fqdn` and are visible from
    /// namespace `from` (their `exportTo` lets it see them). A wildcard `fqdn`
    /// finds every visible host it covers. Exact hosts come first.
    pub fn lookup(&self, fqdn: &str, from: &str) -> Vec<&HostEntry> {
        let visible = |h: &&HostEntry| visible_from(&h.export_to, &h.namespace, from);
        let mut out: Vec<&HostEntry> = self
            .exact_hosts
            .get(fqdn)
            .into_iter()
            .flatten()
            .map(|&i| &self.hosts[i])
            .filter(visible)
            .collect();
        out.extend(
            self.wildcard_hosts
                .iter()
                .map(|&i| &self.hosts[i])
                .filter(|h| host_matches(&h.host, fqdn) || host_matches(fqdn, &h.host))
                .filter(visible),
        );
        if fqdn.starts_with('*') {
            out.extend(
                self.exact_hosts
                    .iter()
                    .filter(|(h, _)| host_matches(fqdn, h))
                    .flat_map(|(_, v)| v.iter().map(|&i| &self.hosts[i]))
                    .filter(visible),
            );
        }
        out
    }

    /// The host entries whose host is `name` exactly (a wildcard one
    /// written as `name`), whatever their visibility, in registry order.
    pub fn hosts_named<'s>(&'s self, name: &str) -> Vec<&'s HostEntry> {
        let exact = self.exact_hosts.get(name).into_iter().flatten();
        let wild = self
            .wildcard_hosts
            .iter()
            .filter(|_| name.starts_with('*'))
            .filter(|&&i| self.hosts[i].host == name);
        let mut v: Vec<usize> = exact.chain(wild).copied().collect();
        v.sort_unstable();
        v.into_iter().map(|i| &self.hosts[i]).collect()
    }

    /// Whether `fqdn` names something visible from namespace `from`: a Service,
    /// a ServiceEntry host, or a host configured as known.
    pub fn host_exists(&self, fqdn: &str, from: &str) -> bool {
        self.settings.is_known_host(fqdn) || !self.lookup(fqdn, from).is_empty()
    }

    /// Workloads in `namespace` whose labels include all of `selector`.
    pub fn workloads_matching<'s>(
        &'s self,
        namespace: &str,
        selector: &'s Map<String, String>,
    ) -> impl Iterator<Item = &'s Workload> + 's {
        let candidates = match selector.iter().next() {
            Some((k, v)) => self
                .workloads_by_label
                .get(namespace)
                .and_then(|m| m.get(k))
                .and_then(|m| m.get(v)),
            None => self.workloads_by_ns.get(namespace),
        };
        candidates
            .into_iter()
            .flatten()
            .map(|&i| &self.workloads[i])
            .filter(move |w| selects(selector, &w.labels))
    }

    /// The Services that select workload `w` (Services only select pods of
    /// their own namespace).
    pub fn services_of<'s>(&'s self, w: &'s Workload) -> impl Iterator<Item = &'s HostEntry> + 's {
        self.services_selecting(&w.namespace, &w.labels)
    }

    /// The Services of namespace `ns` whose selector matches pods with
    /// `labels`, in registry order (as a scan of the namespace gives them),
    /// found through the index of each selector's first label.
    pub fn services_selecting<'s>(
        &'s self,
        ns: &str,
        labels: &'s Map<String, String>,
    ) -> impl Iterator<Item = &'s HostEntry> + 's {
        let mut candidates: Vec<usize> = Vec::new();
        if let Some(by_key) = self.services_by_label.get(ns) {
            for (k, v) in labels {
                let found = by_key.get(k).and_then(|m| m.get(v));
                candidates.extend(found.into_iter().flatten());
            }
        }
        candidates.sort_unstable();
        candidates
            .into_iter()
            .map(|i| &self.hosts[i])
            .filter(|h| h.selector.as_ref().is_some_and(|s| selects(s, labels)))
    }

    /// The workloads a policy applies to in its own namespace: those its
    /// selector matches, or all of them for a namespace-wide policy (`None`
    /// when it is attached by `targetRef` or is not a policy).
    pub fn selected_workloads<'s>(&'s self, r: &'s Resource) -> Option<Vec<&'s Workload>> {
        Some(match r.selection()? {
            Selection::Labels(l, _) => self.workloads_matching(&r.namespace, l).collect(),
            Selection::Namespace => self.workloads_in(&r.namespace).collect(),
        })
    }

    /// Workloads anywhere whose labels include all of `selector`, in order:
    /// the candidates are those with its first label in each namespace (an
    /// empty selector's are all).
    pub fn workloads_matching_anywhere<'s>(
        &'s self,
        selector: &'s Map<String, String>,
    ) -> impl Iterator<Item = &'s Workload> + 's {
        let candidates: Option<Vec<usize>> = selector.iter().next().map(|(k, v)| {
            let mut c: Vec<usize> = self
                .workloads_by_label
                .values()
                .filter_map(|m| m.get(k)?.get(v))
                .flatten()
                .copied()
                .collect();
            c.sort_unstable();
            c
        });
        let all = candidates.is_none().then(|| self.workloads.iter());
        let some = candidates.into_iter().flatten().map(|i| &self.workloads[i]);
        all.into_iter()
            .flatten()
            .chain(some)
            .filter(move |w| selects(selector, &w.labels))
    }

    /// The indices of the resources of `kind`, in order.
    pub(crate) fn indices_of(&self, kind: Kind) -> &[usize] {
        &self.by_kind[kind as usize]
    }

    /// The indices of the resources of namespace `ns`, in order.
    pub(crate) fn in_namespace(&self, ns: &str) -> &[usize] {
        self.by_namespace.get(ns).map_or(&[], Vec::as_slice)
    }

    /// The workload resource `index` declares, if it declares one.
    pub fn workload_at(&self, index: usize) -> Option<&Workload> {
        // Workloads are added in resource order.
        self.workloads
            .binary_search_by_key(&index, |w| w.index)
            .ok()
            .map(|i| &self.workloads[i])
    }

    /// Whether the repository declares any workload (Deployment, Pod...): rules
    /// about selectors matching nothing only run when it does, so repositories
    /// that keep workloads elsewhere get no false positives.
    pub fn has_workloads(&self) -> bool {
        !self.workloads.is_empty()
    }

    /// Whether namespace `ns` has any workload.
    pub fn has_workloads_in(&self, ns: &str) -> bool {
        self.workloads_by_ns.get(ns).is_some_and(|v| !v.is_empty())
    }

    /// Whether the workload is meshed: its namespace (declared in the repo) has
    /// injection on and the pod does not opt out.
    pub fn is_meshed(&self, w: &Workload) -> bool {
        let opt = w
            .annotations
            .get("sidecar.istio.io/inject")
            .or_else(|| w.labels.get("sidecar.istio.io/inject"));
        if let Some(v) = opt {
            return v == "true";
        }
        self.namespace_injected(&w.namespace)
    }

    /// Whether proxies of namespace `ns` may import `host` (an FQDN), as
    /// their Sidecar resources' `egress.hosts` say: `false` only when the
    /// namespace-wide Sidecar of `ns` (or, without one, the mesh-wide one of
    /// the root namespace) leaves it out and no workload Sidecar of `ns`
    /// imports it. The host's namespace is the one its Service name carries,
    /// or those of the ServiceEntries that declare it.
    pub fn imports(&self, ns: &str, host: &str) -> bool {
        let sidecars = || {
            self.sidecars
                .iter()
                .filter_map(|&i| match self.resources[i].spec.as_deref() {
                    Some(Spec::Sidecar(s)) => Some((&self.resources[i], s)),
                    _ => None,
                })
        };
        let wide =
            |n: &str| sidecars().find(|(r, s)| r.namespace == n && s.workload_selector.is_none());
        let Some((_, default)) = wide(ns).or_else(|| wide(&self.settings.root_namespace)) else {
            return true;
        };
        let service_ns = host
            .strip_suffix(&format!(".svc.{}", self.settings.cluster_domain))
            .and_then(|h| h.rsplit_once('.'))
            .map(|(_, n)| n);
        let mut owners: Vec<&str> = service_ns.into_iter().collect();
        owners.extend(
            self.exact_hosts
                .get(host)
                .into_iter()
                .flatten()
                .map(|&i| self.hosts[i].namespace.as_str()),
        );
        let imported_by = |s: &crate::model::SidecarSpec| {
            s.egress
                .iter()
                .flatten()
                .flat_map(|e| &e.hosts)
                .any(|entry| {
                    let (ns_pat, host_pat) = entry.split_once('/').unwrap_or(("*", entry));
                    let ns_ok = match ns_pat {
                        "*" => true,
                        "~" => false,
                        "." => owners.contains(&ns),
                        n => owners.contains(&n),
                    };
                    ns_ok && host_matches(host_pat, host)
                })
        };
        imported_by(default)
            || sidecars()
                .any(|(r, s)| r.namespace == ns && s.workload_selector.is_some() && imported_by(s))
    }

    /// Whether two resources configuring `host`, exported as `a` (from
    /// namespace `a_ns`) and `b`, apply together anywhere: in some namespace
    /// that sees both and whose proxies import the host ([`Self::imports`];
    /// a wildcard host is taken as imported).
    pub fn applied_together(
        &self,
        a: &[String],
        a_ns: &str,
        b: &[String],
        b_ns: &str,
        host: &str,
    ) -> bool {
        match shared_scope(a, a_ns, b, b_ns) {
            None => true,
            Some(namespaces) => namespaces
                .iter()
                .any(|n| host.starts_with('*') || self.imports(n, host)),
        }
    }

    /// Every Istio Gateway with its spec, in resource order.
    pub fn istio_gateways(&self) -> Vec<(&'a Resource, &'a crate::model::GatewaySpec)> {
        self.of_kind(Kind::Gateway)
            .filter_map(|(_, r, spec)| match spec {
                Spec::Gateway(g) => Some((r, g)),
                _ => None,
            })
            .collect()
    }

    /// Whether the namespace is declared with sidecar injection on.
    pub fn namespace_injected(&self, ns: &str) -> bool {
        self.namespaces.get(ns).is_some_and(|l| {
            l.get("istio-injection").is_some_and(|v| v == "enabled")
                || l.contains_key("istio.io/rev")
        })
    }
}

/// The workloads a policy resource applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<'a> {
    /// No selector: every workload of its namespace (of the mesh, in the root
    /// namespace).
    Namespace,
    /// Workloads whose labels include these, at this YAML path.
    Labels(&'a Map<String, String>, SelectorAt),
}

/// Where a selector's labels are written (`spec.selector.matchLabels`...),
/// made into a [`YamlPath`] only when a diagnostic needs it: selections are
/// read in hot loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorAt(&'static [&'static str]);

impl SelectorAt {
    /// The YAML path.
    pub fn path(self) -> YamlPath {
        YamlPath(
            self.0
                .iter()
                .map(|k| crate::yaml::PathSeg::from(*k))
                .collect(),
        )
    }
}

impl Resource {
    /// The workload selection of a Sidecar, PeerAuthentication,
    /// AuthorizationPolicy, RequestAuthentication or Gateway (`None` for other
    /// kinds and for policies attached by `targetRef`).
    pub fn selection(&self) -> Option<Selection<'_>> {
        let targeted = |one: &Option<_>, many: &Option<Vec<_>>| {
            one.is_some() || many.as_ref().is_some_and(|t: &Vec<_>| !t.is_empty())
        };
        const MATCH_LABELS: SelectorAt = SelectorAt(&["spec", "selector", "matchLabels"]);
        let (labels, path) = match self.spec.as_deref()? {
            Spec::Sidecar(s) => (
                s.workload_selector.as_ref().and_then(|w| w.labels.as_ref()),
                SelectorAt(&["spec", "workloadSelector", "labels"]),
            ),
            Spec::PeerAuthentication(s) => (
                s.selector.as_ref().and_then(|w| w.match_labels.as_ref()),
                MATCH_LABELS,
            ),
            Spec::AuthorizationPolicy(s) if !targeted(&s.target_ref, &s.target_refs) => (
                s.selector.as_ref().and_then(|w| w.match_labels.as_ref()),
                MATCH_LABELS,
            ),
            Spec::RequestAuthentication(s) if !targeted(&s.target_ref, &s.target_refs) => (
                s.selector.as_ref().and_then(|w| w.match_labels.as_ref()),
                MATCH_LABELS,
            ),
            Spec::Telemetry(s) if !targeted(&s.target_ref, &s.target_refs) => (
                s.selector.as_ref().and_then(|w| w.match_labels.as_ref()),
                MATCH_LABELS,
            ),
            Spec::WasmPlugin(s) if !targeted(&s.target_ref, &s.target_refs) => (
                s.selector.as_ref().and_then(|w| w.match_labels.as_ref()),
                MATCH_LABELS,
            ),
            Spec::Gateway(g) => (g.selector.as_ref(), SelectorAt(&["spec", "selector"])),
            _ => return None,
        };
        Some(match labels {
            Some(l) if !l.is_empty() => Selection::Labels(l, path),
            _ => Selection::Namespace,
        })
    }
}

/// `host` written in `namespace`, fully qualified: a short name gets
/// `.<namespace>.svc.<domain>`; a name with a dot or a wildcard stays.
pub fn fqdn(host: &str, namespace: &str, domain: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        return host.to_string();
    }
    // Every rule resolves every destination: no formatting machinery.
    let mut fqdn = String::with_capacity(host.len() + namespace.len() + domain.len() + 6);
    for part in [host, ".", namespace, ".svc.", domain] {
        fqdn.push_str(part);
    }
    fqdn
}

/// Whether `host` written in `namespace` is `target` once fully qualified
/// ([`fqdn`]), found without building the name.
pub fn fqdn_is(target: &str, host: &str, namespace: &str, domain: &str) -> bool {
    if host.contains('.') || host.starts_with('*') {
        return target == host;
    }
    target
        .strip_prefix(host)
        .and_then(|t| t.strip_prefix('.'))
        .and_then(|t| t.strip_prefix(namespace))
        .and_then(|t| t.strip_prefix(".svc."))
        == Some(domain)
}

/// A VirtualService's gateway reference as `namespace/name`: `ns/name`, `name`
/// (the VirtualService's namespace) or the legacy `name.ns.svc...`.
pub fn gateway_key(gw: &str, namespace: &str) -> String {
    if gw.contains('/') {
        return gw.to_string();
    }
    let mut parts = gw.split('.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(ns)) => format!("{ns}/{name}"),
        _ => format!("{namespace}/{gw}"),
    }
}

/// `host` itself, then the wildcards covering it from the most specific:
/// `a.b.c`, `*.b.c`, `*.c`, `*`.
pub fn covering(host: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let suffixes = host
        .match_indices('.')
        .map(move |(i, _)| Cow::Owned(format!("*{}", &host[i..])));
    std::iter::once(Cow::Borrowed(host))
        .chain(suffixes)
        .chain(std::iter::once(Cow::Borrowed("*")))
}

/// Whether `selector` (all key/value pairs) is contained in `labels`.
pub fn selects(selector: &Map<String, String>, labels: &Map<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Istio's `exportTo` visibility: an empty list or `*` is everywhere, `.` the
/// owner's namespace, `~` nowhere, other entries name namespaces.
pub fn visible_from(export_to: &[String], owner: &str, from: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == from || (e == "." && owner == from))
}

/// The namespaces an `exportTo` list makes a resource visible in; `None` is
/// everywhere (an empty list or `*`).
fn export_scope<'a>(l: &'a [String], own: &'a str) -> Option<Vec<&'a str>> {
    if l.is_empty() || l.iter().any(|e| e == "*") {
        return None;
    }
    Some(
        l.iter()
            .filter(|e| *e != "~")
            .map(|e| if e == "." { own } else { e.as_str() })
            .collect(),
    )
}

/// Whether some namespace sees both of two resources (by their `exportTo`
/// lists and namespaces).
pub fn scopes_overlap(a: &[String], a_ns: &str, b: &[String], b_ns: &str) -> bool {
    shared_scope(a, a_ns, b, b_ns).is_none_or(|v| !v.is_empty())
}

/// The namespaces two `exportTo` scopes share: `None` when that is every
/// namespace.
pub fn shared_scope<'a>(
    a: &'a [String],
    a_ns: &'a str,
    b: &'a [String],
    b_ns: &'a str,
) -> Option<Vec<&'a str>> {
    match (export_scope(a, a_ns), export_scope(b, b_ns)) {
        (None, None) => None,
        (None, Some(v)) | (Some(v), None) => Some(v),
        (Some(x), Some(y)) => Some(x.into_iter().filter(|n| y.contains(n)).collect()),
    }
}

/// The protocol Istio gives a Service port, upper-case (`HTTP`, `GRPC-WEB`,
/// `TCP`...): UDP for UDP ports; else from `appProtocol` when set, or the port
/// name's `<protocol>[-<suffix>]` prefix; else TCP on the ports where protocol
/// sniffing is off (SMTP, DNS, MySQL, MongoDB). `None` means Istio sniffs it.
pub fn service_port_protocol(port: &KubeServicePort) -> Option<&'static str> {
    if port.protocol.as_deref() == Some("UDP") {
        return Some("UDP");
    }
    let name = port
        .app_protocol
        .as_deref()
        .or(port.name.as_deref())
        .unwrap_or("");
    match name {
        "kubernetes.io/h2c" => return Some("HTTP2"),
        "kubernetes.io/ws" => return Some("HTTP"),
        "kubernetes.io/wss" => return Some("HTTPS"),
        _ => {}
    }
    let is_grpc_web = name
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("grpc-web"));
    let prefix = if is_grpc_web {
        "grpc-web"
    } else {
        name.split('-').next().unwrap_or(name)
    };
    const KNOWN: &[&str] = &[
        "TCP",
        "UDP",
        "GRPC",
        "GRPC-WEB",
        "HTTP",
        "HTTP_PROXY",
        "HTTP2",
        "HTTPS",
        "TLS",
        "MONGO",
        "REDIS",
        "MYSQL",
    ];
    KNOWN
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(prefix))
        .or_else(|| matches!(port.port, 25 | 53 | 3306 | 27017).then_some("TCP"))
}

/// Whether `pattern` (exact, `*`, or `*.suffix`) covers `host`: the IR's
/// host matching, so rules and the evaluator agree.
pub use meshc_ir::host_pattern_matches as host_matches;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(host_matches("*", "a.b"));
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("a.b", "a.b"));
        assert!(!host_matches("a.b", "a.c"));
    }

    /// `by_kind` is indexed by `Kind as usize`: `Kind::ALL` lists every kind
    /// in declaration order.
    #[test]
    fn fqdn_is_agrees_with_fqdn() {
        let domain = "cluster.local";
        let hosts = ["web", "web.shop", "*.shop.svc.cluster.local", "a.b.c", "w"];
        let targets = [
            "web.shop.svc.cluster.local",
            "web.ops.svc.cluster.local",
            "web.shop",
            "*.shop.svc.cluster.local",
            "a.b.c",
            "web.shop.svc.cluster.localx",
            "w.shop.svc.cluster.local",
        ];
        for h in hosts {
            for t in targets {
                assert_eq!(
                    fqdn_is(t, h, "shop", domain),
                    fqdn(h, "shop", domain) == t,
                    "{h} {t}"
                );
            }
        }
    }

    #[test]
    fn kinds_index_their_own_slot() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }
}
