//! Lowering: the analysed Istio resources to `meshc_ir`.
//!
//! Everything here is deterministic whatever the file or document order:
//! resources are visited sorted by (kind, namespace, name), and the IR holds
//! only ordered maps and lists whose order means something (route rules in
//! the order Istio evaluates them). Defaults are made explicit, weights
//! normalized to 100, hosts fully qualified.
//!
//! Istio semantics followed:
//! - several VirtualServices for one host are merged, rules in the order of
//!   the VirtualServices (Istio: creation time; here: namespace, name);
//! - a match's `gateways` narrows a rule to those gateways (`mesh` for
//!   sidecars); a VirtualService without `gateways` is mesh-only;
//! - a `delegate` route is replaced by the delegate's rules, each of its
//!   matches merged into the parent's (one level, as Istio allows);
//! - the DestinationRule of a host is the first (namespace, name) among the
//!   most specific ones covering it; a subset's traffic policy overrides the
//!   host's field by field, and a port-level setting overrides both;
//! - with no DestinationRule TLS mode, auto mTLS uses ISTIO_MUTUAL towards
//!   in-mesh Services whose namespace mode is not DISABLE;
//! - PeerAuthentication: workload > namespace > mesh (root namespace), UNSET
//!   inheriting, port-level overrides from the workload's policy;
//! - AuthorizationPolicy: mesh-wide (root namespace), namespace-wide and
//!   selector policies, grouped CUSTOM, DENY, ALLOW; AUDIT is not enforced.

use std::collections::{BTreeMap, HashMap, HashSet};

use meshc_ir as ir;
use rayon::prelude::*;

use crate::analysis::{Context, HostEntry, Resource, Selection, gateway_key, selects};
use crate::model::{
    AuthorizationAction, AuthorizationPolicySpec, ClientTlsMode, ClientTlsSettings,
    ConnectionPoolSettings, Destination, DestinationRuleHttpH2UpgradePolicy, HttpMatchRequest,
    HttpRoute, LoadBalancerSettings, Map, MutualTlsMode, OutlierDetection, SimpleLb, Spec,
    StringMatch, TrafficPolicy, VirtualServiceSpec,
};
use crate::mtls::MtlsView;
use crate::rules::resilience::duration_secs;

/// Something valid YAML and schema-wise that the IR cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerError {
    /// `Kind namespace/name`.
    pub resource: String,
    /// YAML path inside it.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Where a VirtualService (or one of its rules) applies.
#[derive(Clone, PartialEq, Eq)]
enum Bind {
    Mesh,
    Gateway(String),
}

struct Lowerer<'a, 'm> {
    ctx: &'a Context<'a>,
    mtls: &'m MtlsView<'a>,
    errors: Vec<LowerError>,
    /// Regular expressions already checked, with the verdict: repositories
    /// repeat the same patterns, and compiling one costs tens of microseconds.
    regexes: HashMap<String, Result<ir::Regex, String>>,
}

/// VirtualServices by (namespace, name); built on every compile, hence foldhash.
type Delegates<'a> = foldhash::HashMap<(&'a str, &'a str), &'a Resource>;

/// The VirtualServices by (namespace, name), indexed when the first
/// delegate is looked up: most repositories have none, and a scoped
/// lowering rarely meets one.
struct LazyDelegates<'a> {
    ctx: &'a Context<'a>,
    map: std::sync::OnceLock<Delegates<'a>>,
}

impl<'a> LazyDelegates<'a> {
    fn get(&self, ns: &str, name: &str) -> Option<&'a Resource> {
        let map = self.map.get_or_init(|| {
            self.ctx
                .of_kind(crate::model::Kind::VirtualService)
                .map(|(_, r, _)| ((r.namespace.as_str(), r.name.as_str()), r))
                .collect()
        });
        map.get(&(ns, name)).copied()
    }
}

/// Lower an analysed repository to IR. Fails with what the IR cannot express
/// (an invalid regular expression, a delegate that does not exist); callers
/// must not lower a repository with error diagnostics.
pub fn lower<'a>(ctx: &'a Context<'a>) -> Result<ir::Ir, Vec<LowerError>> {
    lower_kept(ctx, None)
}

/// What a change touched, and the IR of the repository before it: the hosts,
/// workloads (`namespace/name`) and gateways (`namespace/name`) to lower
/// again. Everything else is taken from `previous` as it is.
#[derive(Debug)]
pub struct Scope {
    /// The IR before the change.
    pub previous: ir::Ir,
    /// Hosts to lower again.
    pub hosts: HashSet<String>,
    /// Workloads to lower again.
    pub workloads: HashSet<String>,
    /// Gateways to lower again.
    pub gateways: HashSet<String>,
}

/// Lower only what `scope` names and patch its previous IR with the result:
/// the same IR as [`lower`] when the scope covers everything the change
/// reaches (`crate::incremental` computes it, and its tests check this).
pub fn lower_scoped<'a>(ctx: &'a Context<'a>, scope: Scope) -> Result<ir::Ir, Vec<LowerError>> {
    let Scope {
        mut previous,
        hosts,
        workloads,
        gateways,
    } = scope;
    let keep = Keep {
        hosts: &hosts,
        workloads: &workloads,
        gateways: &gateways,
    };
    let fresh = lower_kept(ctx, Some(&keep))?;
    // The scope names few entries of many: removed one by one.
    for h in &hosts {
        previous.hosts.remove(h);
    }
    previous.hosts.extend(fresh.hosts);
    for w in &workloads {
        previous.workloads.remove(w);
    }
    previous.workloads.extend(fresh.workloads);
    for g in &gateways {
        previous.gateways.remove(g);
    }
    previous.gateways.extend(fresh.gateways);
    previous.mesh = fresh.mesh;
    Ok(previous)
}

/// The parts of the IR a scoped lowering produces.
struct Keep<'s> {
    hosts: &'s HashSet<String>,
    workloads: &'s HashSet<String>,
    gateways: &'s HashSet<String>,
}

/// Whether VirtualService `vs` (resource `r`) may bind to a host or gateway
/// a scoped lowering redoes, found without resolving its hosts when the
/// scope is small: most of a repository's VirtualServices are skipped so.
fn may_reach(keep: &Keep, r: &Resource, vs: &VirtualServiceSpec, domain: &str) -> bool {
    if keep.hosts.len() > 64 {
        return true;
    }
    let gateways = !keep.gateways.is_empty() && vs.gateways.iter().flatten().any(|g| g != "mesh");
    gateways
        || vs.hosts.iter().flatten().any(|h| {
            keep.hosts
                .iter()
                .any(|k| crate::analysis::fqdn_is(k, h, &r.namespace, domain))
        })
}

/// The registry's entries of the hosts `names` (each name's in registry
/// order), or all of them: a scoped lowering looks its few up instead of
/// asking every host.
fn entries<'c, 'n>(
    ctx: &'c Context,
    names: Option<impl Iterator<Item = &'n String>>,
) -> Vec<&'c HostEntry> {
    match names {
        None => ctx.hosts.iter().collect(),
        Some(names) => names.flat_map(|h| ctx.hosts_named(h)).collect(),
    }
}

fn kept(keep: Option<&Keep>, pick: impl Fn(&Keep) -> bool) -> bool {
    keep.is_none_or(pick)
}

fn lower_kept<'a>(ctx: &'a Context<'a>, keep: Option<&Keep>) -> Result<ir::Ir, Vec<LowerError>> {
    let s = ctx.settings;
    let mut out = ir::Ir::new(ir::Mesh {
        trust_domain: s.trust_domain.clone(),
        cluster_domain: s.cluster_domain.clone(),
        root_namespace: s.root_namespace.clone(),
    });
    // The mTLS view is built while the Services' endpoints are looked up.
    let (mtls, services) = rayon::join(
        || MtlsView::new(ctx),
        || {
            let mut services = entries(ctx, keep.map(|k| k.hosts.iter()));
            // By host, namespace, then the declaring resource's kind and
            // name: two ServiceEntries of one namespace may declare a host,
            // and the IR never depends on file or document order.
            fn key<'h>(h: &'h HostEntry, rs: &'h [Resource]) -> (&'h str, &'h str, u8, &'h str) {
                let r = &rs[h.index];
                (&h.host, &h.namespace, r.kind as u8, &r.name)
            }
            services.sort_by(|a, b| key(a, ctx.resources).cmp(&key(b, ctx.resources)));
            services
                .into_par_iter()
                .map(|h| {
                    let endpoints = h
                        .selector
                        .as_ref()
                        .map(|sel| endpoints(ctx, &h.namespace, sel, None))
                        .unwrap_or_default();
                    (h, endpoints, ctx.resources[h.index].display())
                })
                .collect::<Vec<_>>()
        },
    );
    let mut l = Lowerer {
        ctx,
        mtls: &mtls,
        errors: Vec::new(),
        regexes: HashMap::new(),
    };
    let sorted = |kind: crate::model::Kind| {
        let mut v: Vec<&Resource> = ctx.of_kind(kind).map(|(_, r, _)| r).collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    };

    for (h, endpoints, origin) in services {
        let p = out
            .hosts
            .entry(h.host.clone())
            .or_insert_with(|| empty_host(&h.namespace, &h.export_to));
        for port in &h.ports {
            if let Ok(n) = u16::try_from(port.number) {
                p.ports
                    .insert(n, port.protocol.clone().unwrap_or_else(|| "AUTO".into()));
            }
        }
        p.endpoints.extend(endpoints);
        p.origins.push(origin);
    }

    for r in sorted(crate::model::Kind::Gateway) {
        let Some(Spec::Gateway(g)) = r.spec.as_deref() else {
            continue;
        };
        let key = format!("{}/{}", r.namespace, r.name);
        if !kept(keep, |k| k.gateways.contains(&key)) {
            continue;
        }
        let servers = g
            .servers
            .iter()
            .flatten()
            .filter_map(|s| {
                Some(ir::GatewayServer {
                    port: u16::try_from(s.port.number).ok()?,
                    protocol: s.port.protocol.to_ascii_uppercase(),
                    hosts: s
                        .hosts
                        .iter()
                        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
                        .collect(),
                    tls: server_tls_mode(s),
                    termination: s.tls.as_deref().and_then(termination),
                    https_redirect: s.tls.as_ref().and_then(|t| t.https_redirect) == Some(true),
                })
            })
            .collect();
        out.gateways.insert(
            key,
            ir::GatewayPolicy {
                selector: g.selector.clone().unwrap_or_default(),
                servers,
                ..ir::GatewayPolicy::default()
            },
        );
    }

    let virtual_services = || {
        ctx.of_kind(crate::model::Kind::VirtualService)
            .map(|(_, r, _)| r)
    };
    let delegates = LazyDelegates {
        ctx,
        map: std::sync::OnceLock::new(),
    };
    // Each VirtualService with the bindings to lower (a scoped lowering keeps
    // those that reach what it redoes) and its hosts resolved once; only
    // those are sorted. Delegates (no hosts) are lowered where a parent uses
    // them.
    // A scope of workloads only reads no VirtualService.
    let no_routes = keep.is_some_and(|k| k.hosts.is_empty() && k.gateways.is_empty());
    // A scope of a few hosts and no gateway reads only the VirtualServices
    // the naming index says may name one of them.
    let named: Option<Vec<&Resource>> = keep
        .filter(|k| k.hosts.len() <= 64 && k.gateways.is_empty())
        .and_then(|k| ctx.naming().candidates(k.hosts))
        .map(|c| {
            let of = c.into_iter().map(|i| &ctx.resources[i]);
            of.filter(|r| r.kind == crate::model::Kind::VirtualService && r.spec.is_some())
                .collect()
        });
    let listed: Box<dyn Iterator<Item = &Resource>> = match named {
        Some(v) => Box::new(v.into_iter()),
        None => Box::new(virtual_services()),
    };
    let mut vss: Vec<(&Resource, &VirtualServiceSpec, Vec<Bind>, Vec<String>)> = listed
        .take_while(|_| !no_routes)
        .filter(|r| match (keep, r.spec.as_deref()) {
            (Some(k), Some(Spec::VirtualService(vs))) => may_reach(k, r, vs, &s.cluster_domain),
            _ => true,
        })
        .collect::<Vec<_>>()
        .into_par_iter()
        .filter_map(|r| {
            let Some(Spec::VirtualService(vs)) = r.spec.as_deref() else {
                return None;
            };
            if vs.hosts.as_ref().is_none_or(|h| h.is_empty()) {
                return None;
            }
            let fqdns: Vec<String> = vs
                .hosts
                .iter()
                .flatten()
                .map(|h| ctx.fqdn(h, &r.namespace))
                .collect();
            let binds: Vec<Bind> = binds(vs.gateways.as_deref(), &r.namespace)
                .into_iter()
                .filter(|bind| {
                    kept(keep, |k| match bind {
                        Bind::Mesh => fqdns.iter().any(|h| k.hosts.contains(h)),
                        Bind::Gateway(key) => k.gateways.contains(key),
                    })
                })
                .collect();
            (!binds.is_empty()).then_some((r, vs, binds, fqdns))
        })
        .collect();
    vss.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    // Lowered in parallel, each worker with its own regex cache; the rules
    // and the errors are then merged in the sorted order.
    let lowered: Vec<(Vec<LoweredBind>, Vec<LowerError>)> = vss
        .par_iter()
        .map_init(
            || l.fork(),
            |fl, (r, vs, binds, _)| {
                let rules = binds
                    .iter()
                    .map(|bind| {
                        let http = fl.http_rules(r, vs, bind, &delegates);
                        let (tcp, tls) = fl.l4_rules(r, vs, bind);
                        (http, tcp, tls)
                    })
                    .collect();
                (rules, std::mem::take(&mut fl.errors))
            },
        )
        .collect();
    for ((r, vs, binds, fqdns), (rules, errors)) in vss.iter().zip(lowered) {
        l.errors.extend(errors);
        for (bind, (mut http, mut tcp, mut tls)) in binds.iter().zip(rules) {
            // Each host of the VirtualService gets the rules: copies for all
            // but the last, which takes them.
            for (k, fqdn) in fqdns.iter().enumerate() {
                let last = k + 1 == fqdns.len();
                match bind {
                    Bind::Mesh if !kept(keep, |k| k.hosts.contains(fqdn)) => {}
                    Bind::Mesh => {
                        let export = vs.export_to.clone().unwrap_or_default();
                        let p = out
                            .hosts
                            .entry(fqdn.clone())
                            .or_insert_with(|| empty_host(&r.namespace, &export));
                        p.http.append(&mut take_or_copy(&mut http, last));
                        p.tcp.append(&mut take_or_copy(&mut tcp, last));
                        p.tls.append(&mut take_or_copy(&mut tls, last));
                        p.origins.push(r.display());
                    }
                    Bind::Gateway(key) => {
                        let g = out.gateways.entry(key.clone()).or_default();
                        g.hosts
                            .entry(fqdn.clone())
                            .or_default()
                            .append(&mut take_or_copy(&mut http, last));
                        let mut l4 = take_or_copy(&mut tcp, last);
                        l4.append(&mut take_or_copy(&mut tls, last));
                        if !l4.is_empty() {
                            g.l4.entry(fqdn.clone()).or_default().append(&mut l4);
                        }
                    }
                }
            }
        }
    }

    let selectors: HashMap<&str, &Map<String, String>> =
        entries(ctx, keep.map(|_| out.hosts.keys()))
            .into_iter()
            .filter(|h| out.hosts.contains_key(&h.host))
            .filter_map(|h| Some((h.host.as_str(), h.selector.as_ref()?)))
            .collect();
    let lr = &l;
    out.hosts.par_iter_mut().for_each(|(host, p)| {
        let selector = selectors.get(host.as_str()).copied();
        let (tp, subsets) = lr.destination(host, &p.namespace, p.endpoints.is_empty(), selector);
        p.traffic_policy = tp;
        p.subsets = subsets;
        p.origins.sort();
        p.origins.dedup();
        p.endpoints.sort();
        p.endpoints.dedup();
    });
    let by_ns = |v: Vec<&'a Resource>| {
        let mut m: HashMap<&'a str, Vec<&'a Resource>> = HashMap::new();
        for r in v {
            m.entry(r.namespace.as_str()).or_default().push(r);
        }
        m
    };
    let sidecars = by_ns(sorted(crate::model::Kind::Sidecar));
    let root = s.root_namespace.as_str();
    // Each AuthorizationPolicy is lowered once and handed to the workloads it
    // selects (through the label index), so every workload's list keeps the
    // (namespace, name) order they are sorted in.
    // The workloads to lower as (namespace, name), so that asking costs no
    // key to be formatted for every workload of the repository.
    let kept_workloads: Option<std::collections::HashSet<(&str, &str)>> = keep.map(|k| {
        k.workloads
            .iter()
            .filter_map(|w| w.split_once('/'))
            .collect()
    });
    let wanted = |w: &crate::analysis::Workload| {
        kept_workloads.as_ref().is_none_or(|k| {
            k.contains(&(w.namespace.as_str(), ctx.resources[w.index].name.as_str()))
        })
    };
    // The namespaces of the workloads a scoped lowering redoes: policies
    // elsewhere (but in the root namespace) cannot reach them.
    let wanted_namespaces: Option<std::collections::HashSet<&str>> = keep.map(|k| {
        k.workloads
            .iter()
            .filter_map(|w| w.split_once('/').map(|(ns, _)| ns))
            .collect()
    });
    // Policies go to workloads: a scope without any reads none.
    let no_workloads = keep.is_some_and(|k| k.workloads.is_empty());
    let mut policies: Vec<&Resource> = match &wanted_namespaces {
        _ if no_workloads => Vec::new(),
        None => ctx
            .of_kind(crate::model::Kind::AuthorizationPolicy)
            .map(|(_, r, _)| r)
            .collect(),
        // Only the policies of those namespaces and the root namespace.
        Some(namespaces) => {
            let mut at: Vec<usize> = namespaces
                .iter()
                .copied()
                .chain((!namespaces.contains(root)).then_some(root))
                .flat_map(|ns| ctx.in_namespace(ns).iter().copied())
                .collect();
            // In resource order, as the full list: the sort below is
            // stable, and keeps a name declared twice in that order.
            at.sort_unstable();
            at.into_iter()
                .map(|i| &ctx.resources[i])
                .filter(|r| r.kind == crate::model::Kind::AuthorizationPolicy && r.spec.is_some())
                .collect()
        }
    };
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // Each policy's targets and lowered form, worked out in parallel.
    let policies: Vec<(AuthorizationAction, Option<Vec<usize>>, ir::AuthzPolicy)> = policies
        .into_par_iter()
        .filter_map(|r| {
            let Some(Spec::AuthorizationPolicy(ap)) = r.spec.as_deref() else {
                return None;
            };
            let selection = r.selection()?;
            // The workloads of its namespace it selects (`None`: mesh-wide).
            let targets: Option<Vec<usize>> = match selection {
                Selection::Namespace if r.namespace == root => None,
                Selection::Namespace => Some(
                    ctx.workloads_in(&r.namespace)
                        .filter(|w| wanted(w))
                        .map(|w| w.index)
                        .collect(),
                ),
                Selection::Labels(labels, _) => Some(
                    ctx.workloads_matching(&r.namespace, labels)
                        .filter(|w| wanted(w))
                        .map(|w| w.index)
                        .collect(),
                ),
            };
            if targets.as_ref().is_some_and(Vec::is_empty) {
                return None;
            }
            let action = ap.action.unwrap_or(AuthorizationAction::Allow);
            Some((action, targets, authz_policy(r, ap, &s.trust_domain)))
        })
        .collect();
    // A workload gets the mesh-wide policies and those that target it, in
    // the sorted order: positions in `policies`, merged per workload.
    let mut mesh_wide: Vec<usize> = Vec::new();
    let mut targeted: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (_, targets, _)) in policies.iter().enumerate() {
        match targets {
            None => mesh_wide.push(i),
            Some(targets) => {
                for w in targets {
                    targeted.entry(*w).or_default().push(i);
                }
            }
        }
    }
    let authz_of = |w: &crate::analysis::Workload| {
        let mut mine: Vec<usize> = mesh_wide
            .iter()
            .chain(targeted.get(&w.index).into_iter().flatten())
            .copied()
            .collect();
        mine.sort_unstable();
        let mut a = ir::Authz::default();
        for i in mine {
            let (action, _, policy) = &policies[i];
            if let Some(l) = authz_list(&mut a, *action) {
                l.push(policy.clone());
            }
        }
        a
    };
    // A scope's few workloads are looked up in their namespaces, not found
    // by asking every workload of the repository.
    let inbound: Vec<&crate::analysis::Workload> = match &kept_workloads {
        None => ctx.workloads.iter().collect(),
        Some(k) => {
            let mut v: Vec<&crate::analysis::Workload> = k
                .iter()
                .flat_map(|&(ns, name)| {
                    ctx.workloads_in(ns)
                        .filter(move |w| ctx.resources[w.index].name == name)
                })
                .collect();
            v.sort_unstable_by_key(|w| w.index);
            v.dedup_by_key(|w| w.index);
            v
        }
    };
    let lr = &l;
    let policies: Vec<(String, ir::WorkloadPolicy)> = inbound
        .into_par_iter()
        .map(|w| {
            let policy = lr.workload(w, authz_of(w), &near(&sidecars, &w.namespace, root));
            let name = &ctx.resources[w.index].name;
            (format!("{}/{name}", w.namespace), policy)
        })
        .collect();
    // Built in bulk (sorted, then the tree filled at once): inserting the
    // 20,000 workloads of the 10,000-service repository one by one took
    // 10-60 ms.
    out.workloads = policies.into_iter().collect();
    if l.errors.is_empty() {
        Ok(out)
    } else {
        l.errors
            .sort_by(|a, b| (&a.resource, &a.path).cmp(&(&b.resource, &b.path)));
        Err(l.errors)
    }
}

/// Where a policy of `action` goes in a workload's authorization (AUDIT is
/// not enforced: nowhere).
fn authz_list(a: &mut ir::Authz, action: AuthorizationAction) -> Option<&mut Vec<ir::AuthzPolicy>> {
    match action {
        AuthorizationAction::Allow => Some(&mut a.allow),
        AuthorizationAction::Deny => Some(&mut a.deny),
        AuthorizationAction::Custom => Some(&mut a.custom),
        AuthorizationAction::Audit => None,
    }
}

/// The workloads (`namespace/name`, sorted) of namespace `ns` that
/// `selector` picks and, if given, that also carry `labels` (a subset's).
fn endpoints(
    ctx: &Context,
    ns: &str,
    selector: &Map<String, String>,
    labels: Option<&Map<String, String>>,
) -> Vec<String> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<String> = ctx
        .workloads_matching(ns, selector)
        .filter(|w| labels.is_none_or(|l| selects(l, &w.labels)))
        .map(|w| format!("{}/{}", w.namespace, ctx.resources[w.index].name))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The resources of namespace `ns` and of the root namespace, sorted by
/// namespace and name.
fn near<'a>(m: &HashMap<&str, Vec<&'a Resource>>, ns: &str, root: &str) -> Vec<&'a Resource> {
    let mut v: Vec<&Resource> = m.get(ns).into_iter().flatten().copied().collect();
    if ns != root {
        v.extend(m.get(root).into_iter().flatten().copied());
    }
    v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    v
}

/// A TCP or TLS match.
fn l4_match(
    port: Option<i64>,
    sni_hosts: &[String],
    destination_subnets: &Option<Vec<String>>,
    source_labels: &Option<Map<String, String>>,
    source_namespace: &Option<String>,
) -> ir::L4Match {
    ir::L4Match {
        port: port.and_then(|p| u16::try_from(p).ok()),
        sni_hosts: sni_hosts.to_vec(),
        destination_subnets: destination_subnets.clone().unwrap_or_default(),
        source_labels: source_labels.clone().unwrap_or_default(),
        source_namespace: source_namespace.clone(),
    }
}

/// Where a VirtualService applies: no `gateways` means the mesh only.
fn binds(gateways: Option<&[String]>, ns: &str) -> Vec<Bind> {
    let mut out: Vec<Bind> = match gateways {
        None | Some([]) => vec![Bind::Mesh],
        Some(gs) => gs
            .iter()
            .map(|g| {
                if g == "mesh" {
                    Bind::Mesh
                } else {
                    Bind::Gateway(gateway_key(g, ns))
                }
            })
            .collect(),
    };
    out.dedup();
    out
}

/// A gateway server's TLS mode. Unset on an `HTTPS` or `TLS` server that
/// has `tls` settings, it is `PASSTHROUGH` (the enum's zero value, which is
/// what Istio reads); an HTTP server's `tls` (`httpsRedirect`) has no mode.
fn server_tls_mode(s: &crate::model::Server) -> Option<String> {
    let tls = s.tls.as_deref()?;
    match tls.mode {
        Some(m) => Some(crate::model::enum_name(m)),
        None => ["HTTPS", "TLS"]
            .iter()
            .any(|p| s.port.protocol.eq_ignore_ascii_case(p))
            .then(|| "PASSTHROUGH".to_string()),
    }
}

/// How a gateway server terminates TLS, for the modes that do: its
/// credentials as written (the first of `credentialNames` when
/// `credentialName` is absent; the proxy reads them) and its client checks.
fn termination(t: &crate::model::ServerTlsSettings) -> Option<ir::Termination> {
    use crate::model::GatewayTlsMode as M;
    if !matches!(
        t.mode?,
        M::Simple | M::Mutual | M::OptionalMutual | M::IstioMutual
    ) {
        return None;
    }
    let some = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    // `tlsCertificates` (up to two chains, RSA and ECDSA): the first.
    let first = t.tls_certificates.as_ref().and_then(|c| c.first());
    let file = |own: &Option<String>, listed: Option<&Option<String>>| {
        some(own).or_else(|| listed.and_then(some))
    };
    Some(ir::Termination {
        credential_name: some(&t.credential_name).or_else(|| {
            t.credential_names
                .as_ref()
                .and_then(|n| n.first().cloned())
                .filter(|v| !v.is_empty())
        }),
        ca_credential_name: some(&t.ca_cert_credential_name),
        server_certificate: file(&t.server_certificate, first.map(|c| &c.server_certificate)),
        private_key: file(&t.private_key, first.map(|c| &c.private_key)),
        ca_certificates: file(&t.ca_certificates, first.map(|c| &c.ca_certificates)),
        ca_crl: some(&t.ca_crl),
        subject_alt_names: t.subject_alt_names.clone().unwrap_or_default(),
        min_protocol_version: t.min_protocol_version.map(crate::model::enum_name),
        max_protocol_version: t.max_protocol_version.map(crate::model::enum_name),
        verify_certificate_hash: t.verify_certificate_hash.clone().unwrap_or_default(),
        verify_certificate_spki: t.verify_certificate_spki.clone().unwrap_or_default(),
        cipher_suites: t.cipher_suites.clone().unwrap_or_default(),
        ecdh_curves: t.ecdh_curves.clone().unwrap_or_default(),
    })
}

fn empty_host(ns: &str, export_to: &[String]) -> ir::HostPolicy {
    let mut export_to: Vec<String> = export_to.to_vec();
    if export_to.is_empty() {
        export_to.push("*".into());
    }
    export_to.sort();
    export_to.dedup();
    ir::HostPolicy {
        export_to,
        ..ir::HostPolicy::new(ns, base_policy(ir::TlsMode::Disable))
    }
}

fn base_policy(tls: ir::TlsMode) -> ir::TrafficPolicy {
    ir::TrafficPolicy {
        load_balancer: ir::LoadBalancer::LeastRequest,
        connection_pool: ir::ConnectionPool::default(),
        outlier_detection: None,
        tls,
        ports: BTreeMap::new(),
    }
}

/// Milliseconds of an Istio duration (`1.5s`, `300ms`); `None` if unreadable.
fn millis(d: &Option<String>) -> Option<u64> {
    d.as_deref()
        .and_then(duration_secs)
        .map(|s| (s * 1000.0).round() as u64)
}

/// A percentage (0–100) in millionths of requests.
fn per_million(p: Option<f64>) -> u32 {
    let p = p.unwrap_or(100.0).clamp(0.0, 100.0);
    (p * 10_000.0).round() as u32
}

/// A limit Istio reads as "not set" when 0 or negative.
fn limit(v: Option<i64>, default: u32) -> u32 {
    match v {
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        _ => default,
    }
}

/// Weights normalized to sum to 100 (largest remainder). One destination
/// gets 100; with no weight given at all, traffic is split evenly.
pub fn normalize_weights(ws: &[Option<i64>]) -> Vec<u32> {
    let n = ws.len();
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![100];
    }
    let raw: Vec<u64> = ws.iter().map(|w| w.unwrap_or(0).max(0) as u64).collect();
    let sum: u64 = raw.iter().sum();
    let raw = if sum == 0 { vec![1; n] } else { raw };
    let sum: u64 = raw.iter().sum();
    let mut out: Vec<u32> = raw.iter().map(|w| (w * 100 / sum) as u32).collect();
    let mut rest = 100 - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..n).collect();
    // Largest remainder first; ties to the earlier destination.
    order.sort_by_key(|&i| (std::cmp::Reverse(raw[i] * 100 % sum), i));
    for i in order {
        if rest == 0 {
            break;
        }
        out[i] += 1;
        rest -= 1;
    }
    out
}

fn header_ops(h: Option<&crate::model::HeaderOperations>) -> ir::HeaderOps {
    let Some(h) = h else {
        return ir::HeaderOps::default();
    };
    let lower = |m: &Option<Map<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    let mut remove: Vec<String> = h
        .remove
        .iter()
        .flatten()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    remove.sort();
    remove.dedup();
    ir::HeaderOps {
        set: lower(&h.set),
        add: lower(&h.add),
        remove,
    }
}

/// `v` itself when this is its `last` use, else a copy.
fn take_or_copy<T: Clone>(v: &mut Vec<T>, last: bool) -> Vec<T> {
    if last { std::mem::take(v) } else { v.clone() }
}

/// One binding's lowered HTTP, TCP and TLS rules.
type LoweredBind = (Vec<ir::HttpRule>, Vec<ir::L4Rule>, Vec<ir::L4Rule>);

impl<'a, 'm> Lowerer<'a, 'm> {
    /// A lowerer for another thread: the same view, no errors, an empty
    /// regex cache.
    fn fork(&self) -> Lowerer<'a, 'm> {
        Lowerer {
            ctx: self.ctx,
            mtls: self.mtls,
            errors: Vec::new(),
            regexes: HashMap::new(),
        }
    }
}

impl<'a> Lowerer<'a, '_> {
    fn err(&mut self, r: &Resource, path: String, message: impl Into<String>) {
        self.errors.push(LowerError {
            resource: r.display(),
            path: if r.base.0.is_empty() {
                path
            } else {
                format!("{}.{path}", r.base)
            },
            message: message.into(),
        });
    }

    /// `pattern` as an IR regex, checked (compiled and parsed) once per
    /// distinct pattern; later uses copy the first result.
    fn checked(&mut self, pattern: &str) -> Result<ir::Regex, String> {
        if let Some(verdict) = self.regexes.get(pattern) {
            return verdict.clone();
        }
        let verdict = ir::Regex::checked(pattern);
        self.regexes.insert(pattern.to_string(), verdict.clone());
        verdict
    }

    /// Workloads (`namespace/name`) in `ns` matching `selector` and `labels`.
    fn str_match(&mut self, r: &Resource, path: &str, m: &StringMatch) -> Option<ir::StrMatch> {
        Some(if let Some(e) = &m.exact {
            ir::StrMatch::Exact(e.clone())
        } else if let Some(p) = &m.prefix {
            ir::StrMatch::Prefix(p.clone())
        } else if let Some(re) = &m.regex {
            match self.checked(re) {
                Ok(re) => ir::StrMatch::Regex(re),
                Err(e) => {
                    self.err(
                        r,
                        format!("{path}.regex"),
                        format!("invalid regular expression: {e}"),
                    );
                    return None;
                }
            }
        } else {
            ir::StrMatch::Present
        })
    }

    fn http_match(&mut self, r: &Resource, path: &str, m: &HttpMatchRequest) -> ir::HttpMatch {
        let sm = |this: &mut Self, field: &str, v: &Option<StringMatch>| {
            v.as_ref()
                .and_then(|v| this.str_match(r, &format!("{path}.{field}"), v))
        };
        let uri = sm(self, "uri", &m.uri);
        let scheme = sm(self, "scheme", &m.scheme);
        let method = sm(self, "method", &m.method);
        let authority = sm(self, "authority", &m.authority);
        let map = |this: &mut Self, field: &str, v: &Option<Map<String, StringMatch>>| {
            let mut out = Map::default();
            for (k, v) in v.iter().flatten() {
                if let Some(s) = this.str_match(r, &format!("{path}.{field}.{k}"), v) {
                    out.insert(k.to_ascii_lowercase(), s);
                }
            }
            out
        };
        let headers = map(self, "headers", &m.headers);
        let without_headers = map(self, "withoutHeaders", &m.without_headers);
        let query_params = map(self, "queryParams", &m.query_params);
        ir::HttpMatch {
            name: m.name.clone(),
            uri,
            ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
            scheme,
            method,
            authority,
            headers,
            without_headers,
            query_params,
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            source_labels: m.source_labels.clone().unwrap_or_default(),
            source_namespace: m.source_namespace.clone(),
        }
    }

    /// A rule's matches that apply under `bind`; `None` when none does.
    fn matches_for(
        &mut self,
        r: &Resource,
        base: &str,
        ms: &Option<Vec<HttpMatchRequest>>,
        bind: &Bind,
    ) -> Option<Vec<ir::HttpMatch>> {
        let ms = ms.as_deref().unwrap_or_default();
        if ms.is_empty() {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        for (k, m) in ms.iter().enumerate() {
            let applies = match &m.gateways {
                Some(gs) if !gs.is_empty() => binds(Some(gs), &r.namespace).contains(bind),
                _ => true,
            };
            if applies {
                out.push(self.http_match(r, &format!("{base}.match[{k}]"), m));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn http_rules(
        &mut self,
        r: &Resource,
        vs: &VirtualServiceSpec,
        bind: &Bind,
        delegates: &LazyDelegates<'a>,
    ) -> Vec<ir::HttpRule> {
        let mut out = Vec::new();
        for (i, h) in vs.http.iter().flatten().enumerate() {
            let base = format!("spec.http[{i}]");
            let Some(matches) = self.matches_for(r, &base, &h.r#match, bind) else {
                continue;
            };
            let name = h.name.clone().unwrap_or_else(|| format!("{}[{i}]", r.name));
            let Some(d) = &h.delegate else {
                out.push(self.http_rule(r, &base, h, name, matches));
                continue;
            };
            let ns = d.namespace.as_deref().unwrap_or(&r.namespace);
            let dname = d.name.as_deref().unwrap_or_default();
            let child = delegates
                .get(ns, dname)
                .and_then(|c| match c.spec.as_deref() {
                    Some(Spec::VirtualService(v)) => Some((c, v)),
                    _ => None,
                });
            let Some((c, cvs)) = child else {
                self.err(
                    r,
                    format!("{base}.delegate"),
                    format!("delegate VirtualService {ns}/{dname} does not exist"),
                );
                continue;
            };
            for (j, ch) in cvs.http.iter().flatten().enumerate() {
                let cbase = format!("spec.http[{j}]");
                if ch.delegate.is_some() {
                    self.err(
                        c,
                        format!("{cbase}.delegate"),
                        "a delegate VirtualService cannot delegate again",
                    );
                    continue;
                }
                let cm: Vec<ir::HttpMatch> = ch
                    .r#match
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(k, m)| self.http_match(c, &format!("{cbase}.match[{k}]"), m))
                    .collect();
                let merged = merge_matches(&matches, &cm);
                let cname = ch
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}[{j}]", c.name));
                out.push(self.http_rule(c, &cbase, ch, format!("{name}/{cname}"), merged));
            }
        }
        out
    }

    fn http_rule(
        &mut self,
        r: &Resource,
        base: &str,
        h: &HttpRoute,
        name: String,
        matches: Vec<ir::HttpMatch>,
    ) -> ir::HttpRule {
        let action = if let Some(rd) = &h.redirect {
            ir::HttpAction::Redirect(ir::Redirect {
                uri: rd.uri.clone(),
                authority: rd.authority.clone(),
                port: rd.port.and_then(|p| u16::try_from(p).ok()),
                scheme: rd.scheme.clone(),
                code: rd
                    .redirect_code
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(301),
            })
        } else if let Some(dr) = &h.direct_response {
            ir::HttpAction::DirectResponse {
                status: u16::try_from(dr.status).unwrap_or(500),
                body: dr
                    .body
                    .as_ref()
                    .and_then(|b| b.string.clone().or_else(|| b.bytes.clone())),
            }
        } else {
            ir::HttpAction::Route(
                self.weighted(
                    &r.namespace,
                    h.route
                        .iter()
                        .flatten()
                        .map(|d| (&d.destination, d.weight, d.headers.as_ref())),
                ),
            )
        };
        let rewrite = h.rewrite.as_ref().map(|rw| ir::Rewrite {
            uri: rw.uri.clone(),
            authority: rw.authority.clone(),
            uri_regex: rw.uri_regex_rewrite.as_ref().and_then(|x| {
                let re = ir::Regex::new(x.r#match.as_deref()?).ok()?;
                Some((re, x.rewrite.clone().unwrap_or_default()))
            }),
        });
        if let Some(x) = h
            .rewrite
            .as_ref()
            .and_then(|rw| rw.uri_regex_rewrite.as_ref())
            && let Some(re) = &x.r#match
            && let Err(e) = self.checked(re)
        {
            self.err(
                r,
                format!("{base}.rewrite.uriRegexRewrite.match"),
                format!("invalid regular expression: {e}"),
            );
        }
        let retries = match &h.retries {
            None => ir::Retries::istio_default(),
            Some(rt) => ir::Retries {
                attempts: rt.attempts.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                per_try_timeout_ms: millis(&rt.per_try_timeout),
                retry_on: match rt.retry_on.as_deref() {
                    Some(on) if !on.trim().is_empty() => on
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    _ => ir::Retries::istio_default().retry_on,
                },
            },
        };
        let fault = h.fault.as_ref().map(|f| ir::Fault {
            delay: f.delay.as_ref().and_then(|d| {
                let ms = millis(
                    &d.fixed_delay
                        .clone()
                        .or_else(|| d.exponential_delay.clone()),
                )?;
                let pct = d
                    .percentage
                    .as_ref()
                    .and_then(|p| p.value)
                    .or(d.percent.map(|p| p as f64));
                Some((ms, per_million(pct)))
            }),
            abort: f.abort.as_ref().and_then(|a| {
                let status = u16::try_from(a.http_status?).ok()?;
                Some((
                    status,
                    per_million(a.percentage.as_ref().and_then(|p| p.value)),
                ))
            }),
        });
        let mut mirrors = Vec::new();
        if let Some(m) = &h.mirror {
            let pct = h
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(h.mirror_percent_.or(h.mirror_percent).map(|p| p as f64));
            mirrors.push(self.mirror(m, &r.namespace, per_million(pct)));
        }
        for m in h.mirrors.iter().flatten() {
            let pct = per_million(m.percentage.as_ref().and_then(|p| p.value));
            mirrors.push(self.mirror(&m.destination, &r.namespace, pct));
        }
        let cors = h.cors_policy.as_ref().map(|c| {
            let mut origins: Vec<ir::StrMatch> = c
                .allow_origin
                .iter()
                .flatten()
                .map(|o| ir::StrMatch::Exact(o.clone()))
                .collect();
            for (k, o) in c.allow_origins.iter().flatten().enumerate() {
                if let Some(m) =
                    self.str_match(r, &format!("{base}.corsPolicy.allowOrigins[{k}]"), o)
                {
                    origins.push(m);
                }
            }
            ir::Cors {
                allow_origins: origins,
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                max_age_s: millis(&c.max_age).map(|ms| ms / 1000),
                allow_credentials: c.allow_credentials.unwrap_or(false),
            }
        });
        ir::HttpRule {
            name,
            origin: format!("{} {base}", r.display()),
            matches,
            action,
            rewrite,
            request_headers: header_ops(h.headers.as_ref().and_then(|x| x.request.as_ref())),
            response_headers: header_ops(h.headers.as_ref().and_then(|x| x.response.as_ref())),
            retries,
            timeout_ms: millis(&h.timeout).filter(|&ms| ms > 0),
            fault,
            mirrors,
            cors,
        }
    }

    fn mirror(&self, d: &Destination, ns: &str, percentage: u32) -> ir::Mirror {
        ir::Mirror {
            host: self.ctx.fqdn(&d.host, ns),
            subset: d.subset.clone(),
            port: d.port_number().and_then(|p| u16::try_from(p).ok()),
            percentage,
        }
    }

    /// A route list's destinations, weights normalized to 100, with their
    /// header operations.
    fn weighted<'d>(
        &self,
        ns: &str,
        route: impl Iterator<
            Item = (
                &'d Destination,
                Option<i64>,
                Option<&'d crate::model::Headers>,
            ),
        >,
    ) -> Vec<ir::WeightedDestination> {
        let route: Vec<_> = route.collect();
        let weights = normalize_weights(&route.iter().map(|(_, w, _)| *w).collect::<Vec<_>>());
        route
            .into_iter()
            .zip(weights)
            .map(|((d, _, headers), w)| {
                let mut wd = self.destination_ref(d, ns, w);
                if let Some(hd) = headers {
                    wd.request_headers = header_ops(hd.request.as_ref());
                    wd.response_headers = header_ops(hd.response.as_ref());
                }
                wd
            })
            .collect()
    }

    fn destination_ref(&self, d: &Destination, ns: &str, weight: u32) -> ir::WeightedDestination {
        let host = self.ctx.fqdn(&d.host, ns);
        let labels = d
            .subset
            .as_deref()
            .and_then(|s| {
                self.subset(&host).and_then(|(_, dr)| {
                    dr.subsets
                        .iter()
                        .flatten()
                        .find(|x| x.name == s)
                        .and_then(|x| x.labels.clone())
                })
            })
            .unwrap_or_default();
        ir::WeightedDestination {
            host,
            subset: d.subset.clone(),
            port: d.port_number().and_then(|p| u16::try_from(p).ok()),
            weight,
            labels,
            request_headers: ir::HeaderOps::default(),
            response_headers: ir::HeaderOps::default(),
        }
    }

    /// The DestinationRule that applies to `host`: the first by namespace and
    /// name among the most specific ones, ignoring workload-scoped ones.
    fn subset(&self, host: &str) -> Option<(&'a Resource, &'a crate::model::DestinationRuleSpec)> {
        self.ctx
            .destination_rules_for(host)
            .iter()
            .filter_map(|&i| {
                let dr = self.ctx.destination_rule(i)?;
                dr.workload_selector
                    .is_none()
                    .then_some((&self.ctx.resources[i], dr))
            })
            .min_by(|(a, _), (b, _)| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    }

    fn l4_rules(
        &mut self,
        r: &Resource,
        vs: &VirtualServiceSpec,
        bind: &Bind,
    ) -> (Vec<ir::L4Rule>, Vec<ir::L4Rule>) {
        let applies = |gs: &Option<Vec<String>>| match gs {
            Some(gs) if !gs.is_empty() => binds(Some(gs), &r.namespace).contains(bind),
            _ => true,
        };
        let rule =
            |this: &Self, kind: &str, i: usize, matches, route: &Option<Vec<_>>| ir::L4Rule {
                name: format!("{}.{kind}[{i}]", r.name),
                origin: format!("{} spec.{kind}[{i}]", r.display()),
                matches,
                destinations: this.weighted(
                    &r.namespace,
                    route
                        .iter()
                        .flatten()
                        .map(|d: &crate::model::RouteDestination| (&d.destination, d.weight, None)),
                ),
            };
        let mut tcp = Vec::new();
        for (i, t) in vs.tcp.iter().flatten().enumerate() {
            let ms = t.r#match.as_deref().unwrap_or_default();
            let kept: Vec<ir::L4Match> = ms
                .iter()
                .filter(|m| applies(&m.gateways))
                .map(|m| {
                    l4_match(
                        m.port,
                        &[],
                        &m.destination_subnets,
                        &m.source_labels,
                        &m.source_namespace,
                    )
                })
                .collect();
            if ms.is_empty() || !kept.is_empty() {
                tcp.push(rule(self, "tcp", i, kept, &t.route));
            }
        }
        let mut tls = Vec::new();
        for (i, t) in vs.tls.iter().flatten().enumerate() {
            let kept: Vec<ir::L4Match> = t
                .r#match
                .iter()
                .filter(|m| applies(&m.gateways))
                .map(|m| {
                    l4_match(
                        m.port,
                        &m.sni_hosts,
                        &m.destination_subnets,
                        &m.source_labels,
                        &m.source_namespace,
                    )
                })
                .collect();
            if !kept.is_empty() {
                tls.push(rule(self, "tls", i, kept, &t.route));
            }
        }
        (tcp, tls)
    }

    /// The traffic policy and subsets of `host`.
    fn destination(
        &self,
        host: &str,
        ns: &str,
        external: bool,
        selector: Option<&Map<String, String>>,
    ) -> (ir::TrafficPolicy, BTreeMap<String, ir::SubsetPolicy>) {
        let auto = if self.ctx.settings.auto_mtls
            && !external
            && self.mtls.namespace_mode(ns).0 != MutualTlsMode::Disable
        {
            ir::TlsMode::IstioMutual
        } else {
            ir::TlsMode::Disable
        };
        let base = base_policy(auto);
        let Some((_, dr)) = self.subset(host) else {
            return (base, BTreeMap::new());
        };
        let top = overlay(&base, dr.traffic_policy.as_deref());
        let subsets = dr
            .subsets
            .iter()
            .flatten()
            .map(|s| {
                let endpoints = selector
                    .map(|sel| endpoints(self.ctx, ns, sel, s.labels.as_ref()))
                    .unwrap_or_default();
                (
                    s.name.clone(),
                    ir::SubsetPolicy {
                        labels: s.labels.clone().unwrap_or_default(),
                        traffic_policy: overlay(&top, s.traffic_policy.as_deref()),
                        endpoints,
                    },
                )
            })
            .collect();
        (top, subsets)
    }

    /// A workload's policy; `authz` holds the AuthorizationPolicies that
    /// apply to it.
    fn workload(
        &self,
        w: &crate::analysis::Workload,
        authz: ir::Authz,
        sidecars: &[&Resource],
    ) -> ir::WorkloadPolicy {
        let settings = self.ctx.settings;
        let root = settings.root_namespace.as_str();
        let (mode, by) = self.mtls.server_mode(&w.namespace, Some(&w.labels));
        let mode = ir_mode(mode);
        let ports = self
            .mtls
            .port_modes(&w.namespace, &w.labels)
            .into_iter()
            .map(|(p, m)| (p, ir_mode(m)))
            .collect();
        let sidecar = sidecars
            .iter()
            .find(|r| matches!(r.selection(), Some(Selection::Labels(l, _)) if r.namespace == w.namespace && selects(l, &w.labels)))
            .or_else(|| sidecars.iter().find(|r| r.namespace == w.namespace && r.selection() == Some(Selection::Namespace)))
            .or_else(|| sidecars.iter().find(|r| r.namespace == root && r.selection() == Some(Selection::Namespace)));
        let mut egress: Vec<String> = match sidecar.and_then(|r| r.spec.as_deref()) {
            Some(Spec::Sidecar(s)) => s
                .egress
                .iter()
                .flatten()
                .flat_map(|e| e.hosts.iter().cloned())
                .collect(),
            _ => Vec::new(),
        };
        if egress.is_empty() {
            egress.push("*/*".into());
        }
        egress.sort();
        egress.dedup();
        ir::WorkloadPolicy {
            namespace: w.namespace.clone(),
            service_account: w.service_account.clone(),
            identity: ir::spiffe_id(&settings.trust_domain, &w.namespace, &w.service_account),
            labels: w.labels.clone(),
            meshed: self.ctx.is_meshed(w),
            mtls: ir::Mtls {
                mode,
                ports,
                decided_by: by.map(Resource::display),
            },
            authz,
            egress,
        }
    }
}

fn ir_mode(m: MutualTlsMode) -> ir::MtlsMode {
    match m {
        MutualTlsMode::Disable => ir::MtlsMode::Disable,
        MutualTlsMode::Strict => ir::MtlsMode::Strict,
        MutualTlsMode::Permissive | MutualTlsMode::Unset => ir::MtlsMode::Permissive,
    }
}

/// Parent matches combined with a delegate's: each pair, the child's
/// attributes added to (and overriding) the parent's.
fn merge_matches(parent: &[ir::HttpMatch], child: &[ir::HttpMatch]) -> Vec<ir::HttpMatch> {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_vec(),
        (false, true) => parent.to_vec(),
        (false, false) => {
            let mut out = Vec::new();
            for p in parent {
                for c in child {
                    let mut m = p.clone();
                    m.name = c.name.clone().or(m.name);
                    m.uri = c.uri.clone().or(m.uri);
                    m.ignore_uri_case |= c.ignore_uri_case;
                    m.scheme = c.scheme.clone().or(m.scheme);
                    m.method = c.method.clone().or(m.method);
                    m.authority = c.authority.clone().or(m.authority);
                    m.headers.extend(c.headers.clone());
                    m.without_headers.extend(c.without_headers.clone());
                    m.query_params.extend(c.query_params.clone());
                    m.port = c.port.or(m.port);
                    m.source_labels.extend(c.source_labels.clone());
                    m.source_namespace = c.source_namespace.clone().or(m.source_namespace);
                    out.push(m);
                }
            }
            out
        }
    }
}

/// `base` with the fields `tp` sets overridden, and its port-level settings
/// (which replace the base's when it has any) over the result.
fn overlay(base: &ir::TrafficPolicy, tp: Option<&TrafficPolicy>) -> ir::TrafficPolicy {
    let Some(tp) = tp else {
        return base.clone();
    };
    let head = settings(
        base.for_port(None),
        tp.load_balancer.as_deref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_deref(),
        tp.tls.as_deref(),
    );
    let mut ports = base.ports.clone();
    if tp
        .port_level_settings
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        ports.clear();
    }
    for p in tp.port_level_settings.iter().flatten() {
        let Some(port) = p
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
        else {
            continue;
        };
        let s = settings(
            head.clone(),
            p.load_balancer.as_deref(),
            p.connection_pool.as_ref(),
            p.outlier_detection.as_deref(),
            p.tls.as_deref(),
        );
        ports.insert(port, s);
    }
    ir::TrafficPolicy::new(head, ports)
}

/// One level of client settings (a traffic policy or a port-level setting)
/// over `base`: each field it sets wins.
fn settings(
    base: ir::PortPolicy,
    load_balancer: Option<&LoadBalancerSettings>,
    connection_pool: Option<&ConnectionPoolSettings>,
    outlier_detection: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) -> ir::PortPolicy {
    ir::PortPolicy {
        load_balancer: lb(load_balancer).unwrap_or(base.load_balancer),
        connection_pool: pool(&base.connection_pool, connection_pool),
        outlier_detection: outlier_detection.map(outlier).or(base.outlier_detection),
        tls: tls.and_then(|t| t.mode).map(tls_mode).unwrap_or(base.tls),
    }
}

fn tls_mode(m: ClientTlsMode) -> ir::TlsMode {
    match m {
        ClientTlsMode::Disable => ir::TlsMode::Disable,
        ClientTlsMode::Simple => ir::TlsMode::Simple,
        ClientTlsMode::Mutual => ir::TlsMode::Mutual,
        ClientTlsMode::IstioMutual => ir::TlsMode::IstioMutual,
    }
}

fn lb(l: Option<&LoadBalancerSettings>) -> Option<ir::LoadBalancer> {
    let l = l?;
    if let Some(ch) = &l.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            ir::HashKey::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            ir::HashKey::Cookie(c.name.clone())
        } else if let Some(q) = &ch.http_query_parameter_name {
            ir::HashKey::QueryParameter(q.clone())
        } else {
            ir::HashKey::SourceIp
        };
        return Some(ir::LoadBalancer::ConsistentHash(key));
    }
    Some(match l.simple? {
        SimpleLb::RoundRobin => ir::LoadBalancer::RoundRobin,
        SimpleLb::Random => ir::LoadBalancer::Random,
        SimpleLb::Passthrough => ir::LoadBalancer::Passthrough,
        SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => {
            ir::LoadBalancer::LeastRequest
        }
    })
}

fn pool(base: &ir::ConnectionPool, p: Option<&ConnectionPoolSettings>) -> ir::ConnectionPool {
    let Some(p) = p else {
        return base.clone();
    };
    let tcp = p.tcp.as_ref();
    let http = p.http.as_ref();
    ir::ConnectionPool {
        max_connections: limit(tcp.and_then(|t| t.max_connections), base.max_connections),
        connect_timeout_ms: millis(&tcp.and_then(|t| t.connect_timeout.clone()))
            .filter(|&ms| ms > 0)
            .unwrap_or(base.connect_timeout_ms),
        http1_max_pending_requests: limit(
            http.and_then(|h| h.http1_max_pending_requests),
            base.http1_max_pending_requests,
        ),
        http2_max_requests: limit(
            http.and_then(|h| h.http2_max_requests),
            base.http2_max_requests,
        ),
        max_requests_per_connection: limit(
            http.and_then(|h| h.max_requests_per_connection),
            base.max_requests_per_connection,
        ),
        max_retries: limit(http.and_then(|h| h.max_retries), base.max_retries),
        h2_upgrade: match http.and_then(|h| h.h2_upgrade_policy) {
            Some(DestinationRuleHttpH2UpgradePolicy::DoNotUpgrade) => false,
            Some(DestinationRuleHttpH2UpgradePolicy::Upgrade) => true,
            Some(DestinationRuleHttpH2UpgradePolicy::Default) | None => base.h2_upgrade,
        },
        idle_timeout_ms: millis(&http.and_then(|h| h.idle_timeout.clone()))
            .or(base.idle_timeout_ms),
        tcp_idle_timeout_ms: millis(&tcp.and_then(|t| t.idle_timeout.clone()))
            .or(base.tcp_idle_timeout_ms),
    }
}

fn outlier(o: &OutlierDetection) -> ir::OutlierDetection {
    let count =
        |v: Option<i64>, d: u32| v.map_or(d, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    ir::OutlierDetection {
        consecutive_5xx_errors: count(o.consecutive5xx_errors.or(o.consecutive_errors), 5),
        consecutive_gateway_errors: count(o.consecutive_gateway_errors, 0),
        interval_ms: millis(&o.interval).unwrap_or(10_000),
        base_ejection_time_ms: millis(&o.base_ejection_time).unwrap_or(30_000),
        max_ejection_percent: count(o.max_ejection_percent, 10).min(100),
        min_health_percent: count(o.min_health_percent, 0).min(100),
    }
}

fn values(v: &Option<Vec<String>>, not: &Option<Vec<String>>) -> ir::Values {
    ir::Values {
        values: v.clone(),
        not_values: not.clone().unwrap_or_default(),
    }
}

/// Principals without the `spiffe://` prefix Istio accepts.
fn principals(v: &Option<Vec<String>>) -> Option<Vec<String>> {
    v.as_ref().map(|ps| {
        ps.iter()
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p).to_string())
            .collect()
    })
}

/// `serviceAccounts: [ns/sa]` as principals in any trust domain.
fn account_principals<'s>(
    sas: impl IntoIterator<Item = &'s String>,
) -> impl Iterator<Item = String> {
    sas.into_iter().filter_map(|sa| {
        let (ns, name) = sa.split_once('/')?;
        Some(format!("*/ns/{ns}/sa/{name}"))
    })
}

fn authz_policy(r: &Resource, ap: &AuthorizationPolicySpec, _td: &str) -> ir::AuthzPolicy {
    let rules = ap
        .rules
        .iter()
        .flatten()
        .map(|rule| ir::AuthzRule {
            from: rule
                .from
                .iter()
                .flatten()
                .filter_map(|f| f.source.as_ref())
                .map(|s| {
                    let mut ps = principals(&s.principals);
                    if let Some(sas) = &s.service_accounts {
                        ps.get_or_insert_with(Vec::new)
                            .extend(account_principals(sas));
                    }
                    let mut not_ps = principals(&s.not_principals).unwrap_or_default();
                    not_ps.extend(account_principals(s.not_service_accounts.iter().flatten()));
                    let ips = match (&s.ip_blocks, &s.remote_ip_blocks) {
                        (None, None) => None,
                        (a, b) => Some(a.iter().chain(b).flatten().cloned().collect()),
                    };
                    let not_ips: Vec<String> = s
                        .not_ip_blocks
                        .iter()
                        .chain(&s.not_remote_ip_blocks)
                        .flatten()
                        .cloned()
                        .collect();
                    ir::SourceMatch {
                        principals: ir::Values {
                            values: ps,
                            not_values: not_ps,
                        },
                        namespaces: values(&s.namespaces, &s.not_namespaces),
                        ip_blocks: ir::Values {
                            values: ips,
                            not_values: not_ips,
                        },
                        request_principals: values(
                            &s.request_principals,
                            &s.not_request_principals,
                        ),
                    }
                })
                .collect(),
            to: rule
                .to
                .iter()
                .flatten()
                .filter_map(|t| t.operation.as_ref())
                .map(|o| ir::OperationMatch {
                    hosts: values(&o.hosts, &o.not_hosts),
                    ports: values(&o.ports, &o.not_ports),
                    methods: values(&o.methods, &o.not_methods),
                    paths: values(&o.paths, &o.not_paths),
                })
                .collect(),
            when: rule
                .when
                .iter()
                .flatten()
                .map(|c| ir::Condition {
                    key: c.key.clone(),
                    values: values(&c.values, &c.not_values),
                })
                .collect(),
        })
        .collect();
    ir::AuthzPolicy {
        name: format!("{}/{}", r.namespace, r.name),
        provider: ap.provider.as_ref().and_then(|p| p.name.clone()),
        rules,
    }
}

/// The scope of a change: what must be lowered again after `changed` (the
/// resources of the changed files, as they were and as they are) on top of
/// `previous`, or `None` when the change reaches everything (a mesh-wide
/// PeerAuthentication, a wildcard DestinationRule). This is the dependency
/// knowledge of the lowering above, kept next to it:
/// - a host's policy reads its Services and ServiceEntries, the
///   VirtualServices naming it (and their delegates), the DestinationRules
///   of its destinations (subset labels), its own DestinationRule, its
///   namespace's PeerAuthentication (auto mTLS) and the workloads its
///   selector picks (endpoints: of its namespace);
/// - a workload's policy reads itself, its namespace (injection), and the
///   PeerAuthentications, AuthorizationPolicies and Sidecars of its namespace
///   and of the root namespace;
/// - a gateway's policy reads the Gateway, the VirtualServices bound to it and
///   the DestinationRules of their destinations.
pub(crate) fn touched(ctx: &Context, previous: ir::Ir, changed: &[&Resource]) -> Option<Scope> {
    let root = ctx.settings.root_namespace.as_str();
    let mut hosts: HashSet<String> = HashSet::new();
    let mut workloads: HashSet<String> = HashSet::new();
    let mut gateways: HashSet<String> = HashSet::new();
    let mut host_namespaces: HashSet<&str> = HashSet::new();
    let mut workload_namespaces: HashSet<&str> = HashSet::new();
    let mut destinations: HashSet<String> = HashSet::new();
    let mut virtual_services: HashSet<(&str, &str)> = HashSet::new();
    let vs_targets = |vs: &VirtualServiceSpec,
                      ns: &str,
                      hosts: &mut HashSet<String>,
                      gateways: &mut HashSet<String>| {
        for bind in binds(vs.gateways.as_deref(), ns) {
            match bind {
                Bind::Mesh => hosts.extend(vs.hosts.iter().flatten().map(|h| ctx.fqdn(h, ns))),
                Bind::Gateway(key) => {
                    gateways.insert(key);
                }
            }
        }
        // Match-level gateways name binds of their own.
        for m in vs
            .http
            .iter()
            .flatten()
            .flat_map(|h| h.r#match.iter().flatten())
        {
            for bind in binds(m.gateways.as_deref(), ns) {
                if let Bind::Gateway(key) = bind {
                    gateways.insert(key);
                }
            }
        }
    };
    for r in changed {
        let ns = r.namespace.as_str();
        match r.spec.as_deref() {
            Some(Spec::Service(_)) => {
                hosts.insert(format!(
                    "{}.{ns}.svc.{}",
                    r.name, ctx.settings.cluster_domain
                ));
            }
            Some(Spec::ServiceEntry(se)) => hosts.extend(se.hosts.iter().cloned()),
            Some(Spec::VirtualService(vs)) => {
                vs_targets(vs, ns, &mut hosts, &mut gateways);
                virtual_services.insert((ns, r.name.as_str()));
            }
            Some(Spec::DestinationRule(dr)) => {
                let host = ctx.fqdn(&dr.host, ns);
                if host.starts_with('*') {
                    return None;
                }
                destinations.insert(host.clone());
                hosts.insert(host);
            }
            Some(Spec::PeerAuthentication(_)) => match r.selection() {
                Some(Selection::Namespace) if ns == root => return None,
                Some(Selection::Namespace) => {
                    host_namespaces.insert(ns);
                    workload_namespaces.insert(ns);
                }
                // A workload policy reaches the workloads it selects.
                Some(Selection::Labels(labels, _)) => {
                    selected(ctx, ns, labels, &mut workloads);
                }
                None => {
                    workload_namespaces.insert(ns);
                }
            },
            Some(Spec::AuthorizationPolicy(_)) if ns != root => match r.selection() {
                Some(Selection::Labels(labels, _)) => {
                    selected(ctx, ns, labels, &mut workloads);
                }
                _ => {
                    workload_namespaces.insert(ns);
                }
            },
            Some(Spec::AuthorizationPolicy(_) | Spec::Sidecar(_)) => {
                if ns == root {
                    return None;
                }
                workload_namespaces.insert(ns);
            }
            Some(Spec::Workload(_) | Spec::Pod(_)) => {
                workloads.insert(format!("{ns}/{}", r.name));
                // The hosts it is an endpoint of: those whose selector picks
                // its labels (as they were, and as they are: both versions
                // are among `changed`).
                if let Some(w) = crate::analysis::workload(0, r) {
                    hosts.extend(
                        ctx.services_selecting(ns, &w.labels)
                            .map(|h| h.host.clone()),
                    );
                }
            }
            Some(Spec::None) if r.kind == crate::model::Kind::Namespace => {
                workload_namespaces.insert(r.name.as_str());
            }
            Some(Spec::Gateway(_)) => {
                gateways.insert(format!("{ns}/{}", r.name));
            }
            Some(_) => {}
            // A resource that did not type had an error: nothing was lowered.
            None => return None,
        }
    }
    // Parents of changed VirtualServices inline them as delegates.
    if !virtual_services.is_empty() {
        for (_, r, spec) in ctx.of_kind(crate::model::Kind::VirtualService) {
            let Spec::VirtualService(vs) = spec else {
                continue;
            };
            let delegates = vs.http.iter().flatten().filter_map(|h| h.delegate.as_ref());
            let parent = delegates.into_iter().any(|d| {
                let dns = d.namespace.as_deref().unwrap_or(&r.namespace);
                virtual_services.contains(&(dns, d.name.as_deref().unwrap_or_default()))
            });
            if parent {
                vs_targets(vs, &r.namespace, &mut hosts, &mut gateways);
            }
        }
    }
    // The scans below find nothing when their sets are empty, as they are
    // after most edits (a route, a policy): skipped, they cost nothing.
    // Every host's rules are read when a DestinationRule changed: in parallel.
    if !host_namespaces.is_empty() || !destinations.is_empty() {
        let routing: Vec<&String> = previous
            .hosts
            .par_iter()
            .filter(|(_, h)| {
                is_one_of(&host_namespaces, &h.namespace)
                    || routes_to(&h.http, &h.tcp, &h.tls, &destinations)
            })
            .map(|(name, _)| name)
            .collect();
        hosts.extend(routing.into_iter().cloned());
    }
    if !host_namespaces.is_empty() {
        for h in &ctx.hosts {
            if is_one_of(&host_namespaces, &h.namespace) {
                hosts.insert(h.host.clone());
            }
        }
    }
    if !destinations.is_empty() {
        for (name, g) in &previous.gateways {
            let l4: Vec<&ir::L4Rule> = g.l4.values().flatten().collect();
            let routed = g
                .hosts
                .values()
                .any(|rules| routes_to(rules, &[], &[], &destinations))
                || l4.iter().any(|r| {
                    r.destinations
                        .iter()
                        .any(|d| destinations.contains(&d.host))
                });
            if routed {
                gateways.insert(name.clone());
            }
        }
    }
    // A namespace's workloads, as they were (keys `namespace/name`: one
    // range of the map) and as they are (the registry's index by namespace),
    // not a scan of every workload.
    let everything = Map::default();
    for ns in workload_namespaces {
        let (from, to) = (format!("{ns}/"), format!("{ns}0"));
        workloads.extend(
            previous
                .workloads
                .range(from..to)
                .map(|(name, _)| name.clone()),
        );
        selected(ctx, ns, &everything, &mut workloads);
    }
    Some(Scope {
        previous,
        hosts,
        workloads,
        gateways,
    })
}

/// Whether `s` is in `set`, which is usually one or two namespaces:
/// compared, not hashed (std's SipHash per entry of a 10,000-entry scan
/// cost milliseconds).
fn is_one_of(set: &HashSet<&str>, s: &str) -> bool {
    if set.len() <= 4 {
        set.iter().any(|x| *x == s)
    } else {
        set.contains(s)
    }
}

/// Add the workloads of namespace `ns` that `labels` selects, as
/// `namespace/name`, to `out`.
fn selected(ctx: &Context, ns: &str, labels: &Map<String, String>, out: &mut HashSet<String>) {
    for w in ctx.workloads_matching(ns, labels) {
        out.insert(format!("{ns}/{}", ctx.resources[w.index].name));
    }
}

/// Whether any of these rules routes to one of `hosts`.
fn routes_to(
    http: &[ir::HttpRule],
    tcp: &[ir::L4Rule],
    tls: &[ir::L4Rule],
    hosts: &HashSet<String>,
) -> bool {
    if hosts.is_empty() {
        return false;
    }
    // Usually one or two hosts: compared, not hashed.
    let is = |h: &String| {
        if hosts.len() <= 4 {
            hosts.iter().any(|x| x == h)
        } else {
            hosts.contains(h)
        }
    };
    let http = http.iter().any(|r| match &r.action {
        ir::HttpAction::Route(ds) => ds.iter().any(|d| is(&d.host)),
        _ => false,
    });
    http || tcp
        .iter()
        .chain(tls)
        .any(|r| r.destinations.iter().any(|d| is(&d.host)))
}
