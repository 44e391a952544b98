//! The call graph: which services call which, as far as the policy tells.
//!
//! A policy repository does not list calls, but three kinds of resources
//! state them: an ALLOW AuthorizationPolicy naming a caller's principal, a
//! Sidecar importing an exact host into its workloads' egress, and a
//! VirtualService bound to a Gateway routing to a host. Nodes are hosts (FQDN)
//! and gateways; each edge carries how many tries one request makes on it
//! (1 + the `retries.attempts` of the VirtualService route the caller uses)
//! and the resource that tells meshc the call exists.

use foldhash::HashMap;

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use rayon::prelude::*;

use crate::analysis::{Context, Resource, Workload, parts};
use crate::incremental::Change;
use crate::model::{AuthorizationAction, HttpRoute, Kind, Spec};
use crate::path;
use crate::rules::authorization::{parse_principal, sources};
use crate::yaml::YamlPath;

/// A caller or callee.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A Service or ServiceEntry host, fully qualified.
    Host(String),
    /// A Gateway, `namespace/name`: where outside requests enter.
    Gateway(String),
}

impl Node {
    /// Short form for messages: `reviews.shop` for cluster Services.
    pub fn short(&self, cluster_domain: &str) -> String {
        match self {
            Node::Host(h) => h
                .strip_suffix(&format!(".svc.{cluster_domain}"))
                .unwrap_or(h)
                .to_string(),
            Node::Gateway(g) => format!("gateway {g}"),
        }
    }
}

/// Where in a resource a call or its retries are written; made into a
/// [`YamlPath`] only when a diagnostic needs one (the graph is built for
/// every compile, the paths are read for a few findings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// `spec.http[i].retries.attempts` of a VirtualService.
    Retries(usize),
    /// `spec.http[i].route[j].destination` of a VirtualService.
    Route(usize, usize),
    /// `spec.rules[i].from[j].source.principals[k]` of an AuthorizationPolicy.
    Principal(usize, usize, usize),
    /// `spec.egress[i].hosts[k]` of a Sidecar.
    Egress(usize, usize),
}

impl At {
    /// The YAML path.
    pub fn path(self) -> YamlPath {
        match self {
            At::Retries(i) => path!["spec", "http", i, "retries", "attempts"],
            At::Route(i, j) => path!["spec", "http", i, "route", j, "destination"],
            At::Principal(i, j, k) => {
                path!["spec", "rules", i, "from", j, "source", "principals", k]
            }
            At::Egress(i, k) => path!["spec", "egress", i, "hosts", k],
        }
    }
}

/// A call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Tries per request: 1 + the route's `retries.attempts`.
    pub attempts: u64,
    /// The `retries.attempts` that sets them, when retries are configured.
    pub retries: Option<(&'a Resource, At)>,
    /// The resource that says the call exists.
    pub evidence: (&'a Resource, At),
}

/// The call graph.
pub struct CallGraph<'a> {
    /// Nodes and calls.
    pub graph: DiGraph<Node, Call<'a>>,
    hosts: HashMap<String, NodeIndex>,
    gateways: HashMap<String, NodeIndex>,
    /// The edge of each (caller, callee): a hub calls hundreds of hosts,
    /// and the graph would find one by walking them all.
    edges: HashMap<(NodeIndex, NodeIndex), EdgeIndex>,
}

/// The tries of an http route (1 + its `retries.attempts`), when it retries.
fn tries(route: &HttpRoute) -> Option<u64> {
    let n = route.retries.as_ref()?.attempts?;
    (n > 0).then_some(n as u64 + 1)
}

/// What the call graph is built from, found once and kept with the
/// registry (`Registry::calls`), so that a compile after an edit assembles
/// the graph from it instead of walking every VirtualService and asking the
/// registry for every policy's workloads again: per VirtualService, the
/// tries of its mesh routes and its gateway routes; per ALLOW
/// AuthorizationPolicy, the hosts behind the workloads it selects and the
/// principals it names; per principal's service account, the hosts behind
/// its workloads. Hosts are numbered ([`Host`]), so the assembly hashes no
/// name. Entries are in resource order, so the graph comes out node for
/// node as a walk of the resources would make it.
#[derive(Debug, Default)]
pub(crate) struct CallIndex {
    /// Host number → name.
    names: Vec<String>,
    /// Host name → number.
    numbers: HashMap<String, Host>,
    /// Each VirtualService: its resource index and, when it has a spec, its
    /// calls.
    services: Vec<(usize, Option<ServiceCalls>)>,
    /// Each AuthorizationPolicy: its resource index, namespace and, when it
    /// is an ALLOW policy outside the root namespace whose workloads some
    /// Service selects, its calls.
    allows: Vec<(usize, String, Option<AllowCalls>)>,
    /// Service account (namespace → name) → its number in `callers`.
    accounts: HashMap<String, HashMap<String, usize>>,
    /// Per service account a principal names: the hosts behind its
    /// workloads, each once.
    callers: Vec<Vec<Host>>,
}

/// A host's number in a [`CallIndex`].
type Host = u32;

/// What a VirtualService says of calls.
#[derive(Debug)]
struct ServiceCalls {
    /// When bound to the mesh and retrying: the most tries of its http
    /// routes, where they are set, and its hosts.
    mesh: Option<(u64, At, Vec<Host>)>,
    /// The Gateways (`namespace/name`) it binds.
    gateways: Vec<String>,
    /// Each http route's tries when it retries, and its destination hosts,
    /// for the gateways' calls.
    routes: Vec<(Option<u64>, Vec<Host>)>,
}

/// What an ALLOW AuthorizationPolicy says of calls.
#[derive(Debug, PartialEq)]
struct AllowCalls {
    /// The hosts behind the workloads it selects (callees), in order.
    callees: Vec<Host>,
    /// Its exact principals (callers): where, and the service account's
    /// number in [`CallIndex::callers`].
    principals: Vec<(At, usize)>,
}

/// The registry parts the hosts behind workloads read: which workloads a
/// policy selects, which Services select those, which workloads run as a
/// service account.
const SELECTIONS: u16 = parts::WL_LABELS | parts::WL_SELECTED | parts::SVC_SELECTOR | parts::WL_SA;

impl CallIndex {
    /// The index of the repository.
    pub(crate) fn new(ctx: &Context) -> CallIndex {
        let mut ix = CallIndex::default();
        ix.services = ctx
            .indices_of(Kind::VirtualService)
            .iter()
            .map(|&i| (i, ix.service(ctx, &ctx.resources[i])))
            .collect();
        // The policies' lookups in parallel: they are most of the work.
        let found: Vec<(usize, Option<Vec<&str>>)> = ctx
            .indices_of(Kind::AuthorizationPolicy)
            .par_iter()
            .map(|&i| (i, callees(ctx, &ctx.resources[i])))
            .collect();
        ix.allows = found
            .into_iter()
            .map(|(i, hosts)| ix.allow(ctx, i, hosts))
            .collect();
        ix
    }

    fn number(&mut self, host: &str) -> Host {
        if let Some(&n) = self.numbers.get(host) {
            return n;
        }
        let n = self.names.len() as Host;
        self.names.push(host.to_string());
        self.numbers.insert(host.to_string(), n);
        n
    }

    fn service(&mut self, ctx: &Context, r: &Resource) -> Option<ServiceCalls> {
        let Some(Spec::VirtualService(vs)) = r.spec.as_deref() else {
            return None;
        };
        let http = || vs.http.iter().flatten().enumerate();
        let best = http()
            .filter_map(|(i, h)| Some((tries(h)?, At::Retries(i))))
            .max_by_key(|(n, _)| *n);
        let mesh = best
            .filter(|_| crate::rules::walk::mesh_bound(vs))
            .map(|(n, at)| {
                let hosts = vs.hosts.iter().flatten();
                let hosts = hosts.map(|h| self.number(&ctx.fqdn(h, &r.namespace)));
                (n, at, hosts.collect())
            });
        let gateways: Vec<String> = vs
            .gateways
            .iter()
            .flatten()
            .filter(|g| *g != "mesh")
            .map(|gw| crate::analysis::gateway_key(gw, &r.namespace))
            .collect();
        let routes = match gateways.is_empty() {
            true => Vec::new(),
            false => http()
                .map(|(_, h)| {
                    let hosts = h.route.iter().flatten();
                    let hosts =
                        hosts.map(|d| self.number(&ctx.fqdn(&d.destination.host, &r.namespace)));
                    (tries(h), hosts.collect())
                })
                .collect(),
        };
        Some(ServiceCalls {
            mesh,
            gateways,
            routes,
        })
    }

    /// The entry of AuthorizationPolicy `i`, whose callees are `hosts`
    /// ([`callees`]).
    fn allow(
        &mut self,
        ctx: &Context,
        i: usize,
        hosts: Option<Vec<&str>>,
    ) -> (usize, String, Option<AllowCalls>) {
        let r = &ctx.resources[i];
        let calls = hosts.map(|hosts| self.allow_calls(ctx, r, &hosts));
        (i, r.namespace.clone(), calls)
    }

    /// The calls of ALLOW policy `r`, whose callees are `hosts`.
    fn allow_calls(&mut self, ctx: &Context, r: &Resource, hosts: &[&str]) -> AllowCalls {
        let callees = hosts.iter().map(|h| self.number(h)).collect();
        let mut principals = Vec::new();
        if let Some(Spec::AuthorizationPolicy(ap)) = r.spec.as_deref() {
            for (i, j, src) in sources(ap) {
                for (k, p) in src.principals.iter().flatten().enumerate() {
                    if let Some((_, ns, sa)) = parse_principal(p).filter(|_| !p.contains('*')) {
                        let account = self.account(ctx, ns, sa);
                        principals.push((At::Principal(i, j, k), account));
                    }
                }
            }
        }
        AllowCalls {
            callees,
            principals,
        }
    }

    /// The number of service account `sa` of `ns`, its callers found when
    /// it is new.
    fn account(&mut self, ctx: &Context, ns: &str, sa: &str) -> usize {
        if let Some(&n) = self.accounts.get(ns).and_then(|m| m.get(sa)) {
            return n;
        }
        let hosts = self.behind_account(ctx, ns, sa);
        self.callers.push(hosts);
        let n = self.callers.len() - 1;
        let of_ns = self.accounts.entry(ns.to_string()).or_default();
        of_ns.insert(sa.to_string(), n);
        n
    }

    /// The hosts behind the workloads of namespace `ns` running as `sa`, in
    /// workload order, each once.
    fn behind_account(&mut self, ctx: &Context, ns: &str, sa: &str) -> Vec<Host> {
        let mut out: Vec<Host> = Vec::new();
        for w in ctx.workloads_in(ns).filter(|w| w.service_account == sa) {
            for h in ctx.services_of(w) {
                let h = self.number(&h.host);
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        out
    }

    /// Bring the index up to date after `change`, which kept the registry
    /// (patched, when it was, before this): the changed VirtualServices and
    /// AuthorizationPolicies (each where its old version sat) are read
    /// again, and so are, where a registry patch changed what selects what
    /// or who runs as whom, the policies and service accounts of the
    /// namespaces it reached. Gives whether what the registry patch reached
    /// reads differently now ([`CallIndex::reread`]), or `None` when a
    /// changed one has no single partner or the resources of those kinds
    /// moved: build it again.
    pub(crate) fn patch(&mut self, ctx: &Context, change: &Change) -> Option<bool> {
        let reread = change.delta().is_some_and(|d| self.reread(ctx, d));
        let kinds = [Kind::VirtualService, Kind::AuthorizationPolicy];
        let pairs = change.pairs_of(&kinds, ctx.resources)?;
        for (old, i) in pairs {
            let service = old.kind == Kind::VirtualService;
            let found = if service {
                self.services.binary_search_by_key(&i, |e| e.0)
            } else {
                self.allows.binary_search_by_key(&i, |e| e.0)
            };
            let Ok(k) = found else { return None };
            if service {
                self.services[k].1 = self.service(ctx, &ctx.resources[i]);
            } else {
                self.read_allow(ctx, k);
            }
        }
        let same =
            |v: &mut dyn Iterator<Item = usize>, kind| v.eq(ctx.indices_of(kind).iter().copied());
        let same = same(&mut self.services.iter().map(|e| e.0), Kind::VirtualService)
            && same(
                &mut self.allows.iter().map(|e| e.0),
                Kind::AuthorizationPolicy,
            );
        same.then_some(reread)
    }

    /// Where a registry patch or move (`d`) changed what selects what or
    /// who runs as whom, read the policies and service accounts of the
    /// namespaces it reached again. Gives whether the call graph may differ
    /// for it ([`parts::CALLS`]): something read again differs, or, when
    /// what selects what changed, a Sidecar (whose workloads the graph finds
    /// in the registry itself) is of a namespace it reached or of the root
    /// namespace.
    fn reread(&mut self, ctx: &Context, d: &crate::analysis::RegistryDelta) -> bool {
        if d.parts & SELECTIONS == 0 {
            return false;
        }
        // A Sidecar's callers are the workloads it selects and the Services
        // that select those: only what selects what changes them.
        let root = ctx.settings.root_namespace.as_str();
        let selecting = d.parts & (parts::WL_SELECTED | parts::SVC_SELECTOR) != 0;
        let mut changed = selecting
            && ctx.of_kind(Kind::Sidecar).any(|(_, r, _)| {
                r.namespace == root || d.namespaces.binary_search(&r.namespace).is_ok()
            });
        let reached: Vec<(String, String, usize)> = d
            .namespaces
            .iter()
            .filter_map(|ns| Some((ns, self.accounts.get(ns)?)))
            .flat_map(|(ns, m)| m.iter().map(move |(sa, &n)| (ns.clone(), sa.clone(), n)))
            .collect();
        for (ns, sa, n) in reached {
            let hosts = self.behind_account(ctx, &ns, &sa);
            changed |= hosts != self.callers[n];
            self.callers[n] = hosts;
        }
        for k in 0..self.allows.len() {
            if d.namespaces.contains(&self.allows[k].1) {
                let before = self.allows[k].2.take();
                self.read_allow(ctx, k);
                changed |= before != self.allows[k].2;
            }
        }
        changed
    }

    /// Move every entry to its resource's new position (`map`: old index →
    /// new, or [`crate::incremental::GONE`]), dropping the gone ones, read
    /// the new VirtualServices and AuthorizationPolicies at `added` in, and
    /// read again what the registry's move (`delta`) reached (`ctx` holds
    /// the registry, moved); gives whether that reads differently now.
    pub(crate) fn shift(
        &mut self,
        ctx: &Context,
        map: &[u32],
        added: &[usize],
        delta: &crate::analysis::RegistryDelta,
    ) -> Option<bool> {
        use crate::incremental::GONE;
        self.services.retain(|e| map[e.0] != GONE);
        self.services
            .iter_mut()
            .for_each(|e| e.0 = map[e.0] as usize);
        self.allows.retain(|e| map[e.0] != GONE);
        self.allows.iter_mut().for_each(|e| e.0 = map[e.0] as usize);
        for &i in added {
            let r = &ctx.resources[i];
            match r.kind {
                Kind::VirtualService => {
                    let entry = (i, self.service(ctx, r));
                    let at = self.services.partition_point(|e| e.0 < i);
                    self.services.insert(at, entry);
                }
                Kind::AuthorizationPolicy => {
                    let entry = self.allow(ctx, i, callees(ctx, r));
                    let at = self.allows.partition_point(|e| e.0 < i);
                    self.allows.insert(at, entry);
                }
                _ => {}
            }
        }
        Some(self.reread(ctx, delta))
    }

    /// Read the policy of `allows[k]` again.
    fn read_allow(&mut self, ctx: &Context, k: usize) {
        let i = self.allows[k].0;
        self.allows[k] = self.allow(ctx, i, callees(ctx, &ctx.resources[i]));
    }

    /// What the index says, by name: what it is compared by (a patched
    /// index numbers hosts in another order than a fresh one).
    fn named(&self) -> impl PartialEq + std::fmt::Debug + '_ {
        let names = |v: &[Host]| -> Vec<&str> {
            v.iter().map(|&h| self.names[h as usize].as_str()).collect()
        };
        let services: Vec<_> = self
            .services
            .iter()
            .map(|(i, s)| {
                let s = s.as_ref().map(|s| {
                    let mesh = s.mesh.as_ref().map(|(n, at, h)| (*n, *at, names(h)));
                    let routes: Vec<_> = s.routes.iter().map(|(t, h)| (*t, names(h))).collect();
                    (mesh, &s.gateways, routes)
                });
                (*i, s)
            })
            .collect();
        let allows: Vec<_> = self
            .allows
            .iter()
            .map(|(i, ns, a)| {
                let a = a.as_ref().map(|a| {
                    let principals: Vec<_> = a
                        .principals
                        .iter()
                        .map(|(at, n)| (*at, names(&self.callers[*n])))
                        .collect();
                    (names(&a.callees), principals)
                });
                (*i, ns, a)
            })
            .collect();
        (services, allows)
    }
}

impl PartialEq for CallIndex {
    fn eq(&self, o: &Self) -> bool {
        self.named() == o.named()
    }
}

/// The hosts behind the workloads ALLOW policy `r` selects (its callees),
/// when it is one outside the root namespace and they are some.
fn callees<'c>(ctx: &'c Context, r: &'c Resource) -> Option<Vec<&'c str>> {
    let Some(Spec::AuthorizationPolicy(ap)) = r.spec.as_deref() else {
        return None;
    };
    if ap.action.is_some_and(|a| a != AuthorizationAction::Allow)
        || r.namespace == ctx.settings.root_namespace
    {
        return None;
    }
    let hosts: Vec<&str> = ctx
        .selected_workloads(r)?
        .into_iter()
        .flat_map(|w| ctx.services_of(w).map(|h| h.host.as_str()))
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

impl<'a> CallGraph<'a> {
    /// Build the graph from the repository's call index.
    pub fn build<'c>(ctx: &'c Context<'a>) -> CallGraph<'a> {
        let index = ctx.calls();
        let resource = |i: usize| -> &'a Resource { &ctx.resources[i] };
        // About a node per numbered host, and as many calls.
        let n = index.names.len();
        let mut g = CallGraph {
            graph: DiGraph::with_capacity(n, n),
            hosts: HashMap::with_capacity_and_hasher(n, Default::default()),
            gateways: HashMap::default(),
            edges: HashMap::with_capacity_and_hasher(n, Default::default()),
        };
        // Each numbered host's node, once made.
        let mut nodes: Vec<Option<NodeIndex>> = vec![None; index.names.len()];
        let mut node = |g: &mut CallGraph<'a>, h: Host| -> NodeIndex {
            *nodes[h as usize].get_or_insert_with(|| g.host_node(&index.names[h as usize]))
        };
        // The most tries a mesh VirtualService route to each host makes.
        let mut host_tries: Vec<Option<(u64, &'a Resource, At)>> = vec![None; index.names.len()];
        for (i, vs) in &index.services {
            let Some(vs) = vs else { continue };
            if let Some((n, at, hosts)) = &vs.mesh {
                for &h in hosts {
                    let t = &mut host_tries[h as usize];
                    if t.is_none_or(|(m, _, _)| m < *n) {
                        *t = Some((*n, resource(*i), *at));
                    }
                }
            }
            // Gateway → destination, with that route's own retries.
            for gw in &vs.gateways {
                let gw = g.gateway_node(gw);
                for (k, (t, hosts)) in vs.routes.iter().enumerate() {
                    for (j, &callee) in hosts.iter().enumerate() {
                        let callee = node(&mut g, callee);
                        let r = resource(*i);
                        g.add(
                            gw,
                            callee,
                            Call {
                                attempts: t.unwrap_or(1),
                                retries: t.map(|_| (r, At::Retries(k))),
                                evidence: (r, At::Route(k, j)),
                            },
                        );
                    }
                }
            }
        }
        // A call to host `callee`: the tries of the mesh routes to it.
        let call = |callee: Option<Host>, evidence: (&'a Resource, At)| {
            let t = callee.and_then(|h| host_tries[h as usize]);
            Call {
                attempts: t.map_or(1, |(n, _, _)| n),
                retries: t.map(|(_, r, at)| (r, at)),
                evidence,
            }
        };
        // ALLOW policies: principal's workloads → the policy's workloads.
        for (i, _, allow) in &index.allows {
            let Some(allow) = allow else { continue };
            let r = resource(*i);
            // Each callee with the tries of the routes to it; each caller
            // names itself as the call's evidence.
            let callee_hosts: Vec<(NodeIndex, Call<'a>)> = allow
                .callees
                .iter()
                .map(|&h| (node(&mut g, h), call(Some(h), (r, At::Retries(0)))))
                .collect();
            for &(at, account) in &allow.principals {
                for &caller in &index.callers[account] {
                    let caller = node(&mut g, caller);
                    for (callee, c) in &callee_hosts {
                        if caller != *callee {
                            g.add(
                                caller,
                                *callee,
                                Call {
                                    evidence: (r, at),
                                    ..*c
                                },
                            );
                        }
                    }
                }
            }
        }
        // The hosts behind each caller workload (by its position in
        // `ctx.workloads`), found once.
        let mut behind: Vec<Option<Vec<NodeIndex>>> = vec![None; ctx.workloads.len()];
        let call = |name: &str, evidence| call(index.numbers.get(name).copied(), evidence);
        // Sidecars: exact hosts imported into their workloads' egress.
        for (_, r, spec) in ctx.of_kind(Kind::Sidecar) {
            let Spec::Sidecar(sc) = spec else { continue };
            let Some(callers) = ctx.selected_workloads(r) else {
                continue;
            };
            for (i, k, (ns, host)) in exact_egress(sc) {
                let ns = if ns == "." { r.namespace.as_str() } else { ns };
                let name = ctx.fqdn(host, ns);
                let callee = g.host_node(&name);
                let c = call(&name, (r, At::Egress(i, k)));
                for w in &callers {
                    for &caller in g.behind(ctx, &mut behind, w) {
                        if caller != callee {
                            g.add(caller, callee, c);
                        }
                    }
                }
            }
        }
        g
    }

    /// The hosts behind workload `w` (the Services that select it), found
    /// once per workload in `memo`.
    fn behind<'m>(
        &mut self,
        ctx: &Context<'a>,
        memo: &'m mut [Option<Vec<NodeIndex>>],
        w: &Workload,
    ) -> &'m [NodeIndex] {
        let at = ctx
            .workloads
            .binary_search_by_key(&w.index, |o| o.index)
            .expect("a workload of the registry");
        memo[at].get_or_insert_with(|| {
            ctx.services_of(w)
                .map(|h| self.host_node(&h.host))
                .collect()
        })
    }

    fn host_node(&mut self, host: &str) -> NodeIndex {
        if let Some(&i) = self.hosts.get(host) {
            return i;
        }
        let i = self.graph.add_node(Node::Host(host.to_string()));
        self.hosts.insert(host.to_string(), i);
        i
    }

    fn gateway_node(&mut self, key: &str) -> NodeIndex {
        if let Some(&i) = self.gateways.get(key) {
            return i;
        }
        let i = self.graph.add_node(Node::Gateway(key.to_string()));
        self.gateways.insert(key.to_string(), i);
        i
    }

    /// Add a call, keeping one edge per pair: the one with the most tries.
    fn add(&mut self, a: NodeIndex, b: NodeIndex, call: Call<'a>) {
        match self.edges.get(&(a, b)) {
            Some(&e) if self.graph[e].attempts >= call.attempts => {}
            Some(&e) => self.graph[e] = call,
            None => {
                let e = self.graph.add_edge(a, b, call);
                self.edges.insert((a, b), e);
            }
        }
    }

    /// For every node, the call path into it with the most tries per client
    /// request: the product of the attempts of its calls, and the path's last
    /// edge (`None` for a node no path reaches; [`CallGraph::path`] gives
    /// the whole path). Cycles are broken at their back edges, found by a
    /// depth-first search that starts from the entries (nodes nobody calls),
    /// so a path never visits a node twice.
    pub fn amplification(&self) -> Vec<(u64, Option<EdgeIndex>)> {
        let g = &self.graph;
        let n = g.node_count();
        // Each node's calls in one list (`at[v]..at[v + 1]`), in the order
        // the search takes them: the reverse of `edges`'.
        let mut at = vec![0usize; n + 1];
        let mut called = vec![false; n];
        for e in g.raw_edges() {
            at[e.source().index() + 1] += 1;
            called[e.target().index()] = true;
        }
        for v in 0..n {
            at[v + 1] += at[v];
        }
        let mut calls = vec![EdgeIndex::end(); g.edge_count()];
        for v in g.node_indices() {
            let end = at[v.index() + 1];
            for (k, e) in g.edges(v).enumerate() {
                calls[end - 1 - k] = e.id();
            }
        }
        // Depth-first search marking back edges; entries first.
        let mut back = vec![false; g.edge_count()];
        let mut state = vec![0u8; n]; // 0 new, 1 on the stack, 2 done
        let entries = g.node_indices().filter(|v| !called[v.index()]);
        let mut stack: Vec<(NodeIndex, usize)> = Vec::new();
        for s in entries.chain(g.node_indices()) {
            if state[s.index()] != 0 {
                continue;
            }
            state[s.index()] = 1;
            stack.push((s, at[s.index()]));
            while let Some((u, next)) = stack.last_mut() {
                let u = *u;
                if *next == at[u.index() + 1] {
                    state[u.index()] = 2;
                    stack.pop();
                    continue;
                }
                let e = calls[*next];
                *next += 1;
                let v = g.edge_endpoints(e).map_or(u, |(_, t)| t);
                match state[v.index()] {
                    0 => {
                        state[v.index()] = 1;
                        stack.push((v, at[v.index()]));
                    }
                    1 => back[e.index()] = true,
                    _ => {}
                }
            }
        }
        // Kahn's order over the remaining edges, then the best product.
        let mut indegree = vec![0usize; n];
        for e in g.edge_references().filter(|e| !back[e.id().index()]) {
            indegree[e.target().index()] += 1;
        }
        let mut queue: std::collections::VecDeque<NodeIndex> = g
            .node_indices()
            .filter(|v| indegree[v.index()] == 0)
            .collect();
        let mut best: Vec<(u64, Option<EdgeIndex>)> = vec![(1, None); n];
        while let Some(u) = queue.pop_front() {
            for e in g.edges(u).filter(|e| !back[e.id().index()]) {
                let v = e.target();
                let p = best[u.index()].0.saturating_mul(e.weight().attempts);
                if p > best[v.index()].0 {
                    best[v.index()] = (p, Some(e.id()));
                }
                indegree[v.index()] -= 1;
                if indegree[v.index()] == 0 {
                    queue.push_back(v);
                }
            }
        }
        best
    }

    /// The edges of the path into `v` that [`CallGraph::amplification`]
    /// (`best`) found, from its entry.
    pub fn path(&self, best: &[(u64, Option<EdgeIndex>)], v: NodeIndex) -> Vec<EdgeIndex> {
        let mut path = Vec::new();
        let mut at = v;
        while let Some(e) = best[at.index()].1 {
            path.push(e);
            at = self.graph.edge_endpoints(e).map_or(at, |(s, _)| s);
        }
        path.reverse();
        path
    }
}

/// The egress entries of a Sidecar that import one exact host (the others,
/// `ns/*`, `*/host`, `~/...`, make no call edge): `spec.egress[i].hosts[k]`
/// with its namespace (`.` as written) and host.
pub(crate) fn exact_egress(
    sc: &crate::model::SidecarSpec,
) -> impl Iterator<Item = (usize, usize, (&str, &str))> {
    sc.egress.iter().flatten().enumerate().flat_map(|(i, l)| {
        l.hosts.iter().enumerate().filter_map(move |(k, entry)| {
            let (ns, host) = entry.split_once('/')?;
            (ns != "*" && ns != "~" && !host.contains('*')).then_some((i, k, (ns, host)))
        })
    })
}
