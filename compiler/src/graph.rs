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

use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use rayon::prelude::*;

use crate::analysis::{Context, Resource, Workload};
use crate::model::{AuthorizationAction, AuthorizationPolicySpec, HttpRoute, Kind, Spec};
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

impl<'a> CallGraph<'a> {
    /// Build the graph from the repository.
    pub fn build<'c>(ctx: &'c Context<'a>) -> CallGraph<'a> {
        let mut g = CallGraph {
            graph: DiGraph::new(),
            hosts: HashMap::default(),
            gateways: HashMap::default(),
            edges: HashMap::default(),
        };
        // The most tries a mesh VirtualService route to each host makes.
        let mut host_tries: HashMap<String, (u64, &'a Resource, At)> = HashMap::default();
        for (_, r, spec) in ctx.of_kind(Kind::VirtualService) {
            let Spec::VirtualService(vs) = spec else {
                continue;
            };
            if crate::rules::walk::mesh_bound(vs) {
                let best = vs
                    .http
                    .iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(i, h)| Some((tries(h)?, At::Retries(i))))
                    .max_by_key(|(n, _)| *n);
                if let Some((n, at)) = best {
                    for h in vs.hosts.iter().flatten() {
                        let fqdn = ctx.fqdn(h, &r.namespace);
                        if host_tries.get(&fqdn).is_none_or(|(m, _, _)| *m < n) {
                            host_tries.insert(fqdn, (n, r, at));
                        }
                    }
                }
            }
            // Gateway → destination, with that route's own retries.
            for gw in vs.gateways.iter().flatten().filter(|g| *g != "mesh") {
                let gw = g.gateway_node(&crate::analysis::gateway_key(gw, &r.namespace));
                for (i, http) in vs.http.iter().flatten().enumerate() {
                    let t = tries(http);
                    for (j, d) in http.route.iter().flatten().enumerate() {
                        let callee = g.host_node(&ctx.fqdn(&d.destination.host, &r.namespace));
                        g.add(
                            gw,
                            callee,
                            Call {
                                attempts: t.unwrap_or(1),
                                retries: t.map(|_| (r, At::Retries(i))),
                                evidence: (r, At::Route(i, j)),
                            },
                        );
                    }
                }
            }
        }
        // A call to `callee`: the tries of the mesh routes to it.
        let call = |callee: &str, evidence: (&'a Resource, At)| {
            let t = host_tries.get(callee);
            Call {
                attempts: t.map_or(1, |(n, _, _)| *n),
                retries: t.map(|(_, r, at)| (*r, *at)),
                evidence,
            }
        };
        // The hosts behind each caller workload (by its position in
        // `ctx.workloads`), found once.
        let mut behind: Vec<Option<Vec<NodeIndex>>> = vec![None; ctx.workloads.len()];
        // Workloads by (namespace, service account): a principal's callers.
        let mut by_account: HashMap<(&str, &str), Vec<&'c Workload>> =
            HashMap::with_capacity_and_hasher(ctx.workloads.len(), Default::default());
        for w in &ctx.workloads {
            by_account
                .entry((w.namespace.as_str(), w.service_account.as_str()))
                .or_default()
                .push(w);
        }
        // ALLOW policies: principal's workloads → the policy's workloads.
        // Each policy's callees (the hosts behind the workloads it selects),
        // found in parallel: these are most of the lookups.
        let allows: Vec<(&'a Resource, &'a AuthorizationPolicySpec, Vec<&'c str>)> = ctx
            .indices_of(Kind::AuthorizationPolicy)
            .par_iter()
            .filter_map(|&i| {
                let r: &'a Resource = &ctx.resources[i];
                let Some(Spec::AuthorizationPolicy(ap)) = r.spec.as_deref() else {
                    return None;
                };
                if ap.action.is_some_and(|a| a != AuthorizationAction::Allow)
                    || r.namespace == ctx.settings.root_namespace
                {
                    return None;
                }
                let callees = ctx.selected_workloads(r)?;
                let hosts: Vec<&str> = callees
                    .into_iter()
                    .flat_map(|w| ctx.services_of(w).map(|h| h.host.as_str()))
                    .collect();
                (!hosts.is_empty()).then_some((r, ap, hosts))
            })
            .collect();
        for (r, ap, hosts) in allows {
            // Each callee with the tries of the routes to it; each caller
            // names itself as the call's evidence.
            let callee_hosts: Vec<(NodeIndex, Call<'a>)> = hosts
                .into_iter()
                .map(|h| (g.host_node(h), call(h, (r, At::Retries(0)))))
                .collect();
            for (i, j, src) in sources(ap) {
                for (k, p) in src.principals.iter().flatten().enumerate() {
                    let Some((_, ns, sa)) = parse_principal(p).filter(|_| !p.contains('*')) else {
                        continue;
                    };
                    let evidence = (r, At::Principal(i, j, k));
                    for w in by_account.get(&(ns, sa)).into_iter().flatten() {
                        for &caller in g.behind(ctx, &mut behind, w) {
                            for (callee, c) in &callee_hosts {
                                if caller != *callee {
                                    g.add(caller, *callee, Call { evidence, ..*c });
                                }
                            }
                        }
                    }
                }
            }
        }
        // Sidecars: exact hosts imported into their workloads' egress.
        for (_, r, spec) in ctx.of_kind(Kind::Sidecar) {
            let Spec::Sidecar(sc) = spec else { continue };
            let Some(callers) = ctx.selected_workloads(r) else {
                continue;
            };
            for (i, l) in sc.egress.iter().flatten().enumerate() {
                for (k, entry) in l.hosts.iter().enumerate() {
                    let Some((ns, host)) = entry.split_once('/') else {
                        continue;
                    };
                    let ns = if ns == "." { r.namespace.as_str() } else { ns };
                    if ns == "*" || ns == "~" || host.contains('*') {
                        continue;
                    }
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
    /// request: the product of the attempts of its calls, and the path's edges
    /// from its entry. Cycles are broken at their back edges, found by a
    /// depth-first search that starts from the entries (nodes nobody calls),
    /// so a path never visits a node twice.
    pub fn amplification(&self) -> Vec<(NodeIndex, u64, Vec<EdgeIndex>)> {
        let g = &self.graph;
        let n = g.node_count();
        // Depth-first search marking back edges; entries first.
        let mut back = vec![false; g.edge_count()];
        let mut state = vec![0u8; n]; // 0 new, 1 on the stack, 2 done
        let mut starts: Vec<NodeIndex> = g
            .node_indices()
            .filter(|&v| g.edges_directed(v, Direction::Incoming).next().is_none())
            .collect();
        starts.extend(g.node_indices());
        for s in starts {
            if state[s.index()] != 0 {
                continue;
            }
            state[s.index()] = 1;
            let mut stack: Vec<(NodeIndex, Vec<EdgeIndex>)> =
                vec![(s, g.edges(s).map(|e| e.id()).collect())];
            while let Some((u, pending)) = stack.last_mut() {
                let u = *u;
                let Some(e) = pending.pop() else {
                    state[u.index()] = 2;
                    stack.pop();
                    continue;
                };
                let v = g.edge_endpoints(e).map_or(u, |(_, t)| t);
                match state[v.index()] {
                    0 => {
                        state[v.index()] = 1;
                        stack.push((v, g.edges(v).map(|e| e.id()).collect()));
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
        g.node_indices()
            .map(|v| {
                let mut path = Vec::new();
                let mut at = v;
                while let Some(e) = best[at.index()].1 {
                    path.push(e);
                    at = g.edge_endpoints(e).map_or(at, |(s, _)| s);
                }
                path.reverse();
                (v, best[v.index()].0, path)
            })
            .collect()
    }
}
