//! Walks over resources that several rules share.

use crate::model::{Destination, RouteDestination, VirtualServiceSpec};
use crate::path;
use crate::yaml::YamlPath;

/// One `route` list of an http, tcp or tls rule.
pub(crate) struct Route<'a> {
    /// `http`, `tcp` or `tls`, and the rule's index.
    list: &'static str,
    index: usize,
    /// Its destinations with their weights, in order.
    pub destinations: Vec<(&'a Destination, Option<i64>)>,
}

impl Route<'_> {
    /// Path of the list (`spec.http[0].route`).
    pub fn path(&self) -> YamlPath {
        path!["spec", self.list, self.index, "route"]
    }
}

/// Every `route` list of a VirtualService: http, then tcp, then tls rules.
pub(crate) fn routes(vs: &VirtualServiceSpec) -> Vec<Route<'_>> {
    fn list<'a>(
        out: &mut Vec<Route<'a>>,
        name: &'static str,
        rules: impl Iterator<Item = Vec<(&'a Destination, Option<i64>)>>,
    ) {
        for (index, destinations) in rules.enumerate() {
            out.push(Route {
                list: name,
                index,
                destinations,
            });
        }
    }
    let mut out = Vec::new();
    list(
        &mut out,
        "http",
        vs.http.iter().flatten().map(|h| {
            h.route
                .iter()
                .flatten()
                .map(|d| (&d.destination, d.weight))
                .collect()
        }),
    );
    list(
        &mut out,
        "tcp",
        vs.tcp.iter().flatten().map(|t| weighted(&t.route)),
    );
    list(
        &mut out,
        "tls",
        vs.tls.iter().flatten().map(|t| weighted(&t.route)),
    );
    out
}

/// The destinations of a TCP or TLS `route` list with their weights.
fn weighted(route: &Option<Vec<RouteDestination>>) -> Vec<(&Destination, Option<i64>)> {
    route
        .iter()
        .flatten()
        .map(|d| (&d.destination, d.weight))
        .collect()
}

/// Where a destination is written; a [`YamlPath`] only when a diagnostic
/// needs one (every VirtualService's destinations are walked by several
/// rules on every compile).
#[derive(Debug, Clone, Copy)]
pub(crate) enum DestAt {
    /// `spec.<list>[i].route[j].destination`.
    Route(&'static str, usize, usize),
    /// `spec.http[i].mirror`.
    Mirror(usize),
    /// `spec.http[i].mirrors[j].destination`.
    Mirrors(usize, usize),
}

impl DestAt {
    /// The path of the destination.
    pub fn path(self) -> YamlPath {
        match self {
            DestAt::Route(list, i, j) => path!["spec", list, i, "route", j, "destination"],
            DestAt::Mirror(i) => path!["spec", "http", i, "mirror"],
            DestAt::Mirrors(i, j) => path!["spec", "http", i, "mirrors", j, "destination"],
        }
    }
    /// The path of a field of the destination.
    pub fn join(self, key: &str) -> YamlPath {
        self.path().join(key)
    }
}

/// Every destination a VirtualService sends or mirrors traffic to, with
/// where it is.
pub(crate) fn destinations(vs: &VirtualServiceSpec) -> Vec<(DestAt, &Destination)> {
    let mut out: Vec<(DestAt, &Destination)> = routes(vs)
        .into_iter()
        .flat_map(|r| {
            let (list, i) = (r.list, r.index);
            r.destinations
                .into_iter()
                .enumerate()
                .map(move |(j, (d, _))| (DestAt::Route(list, i, j), d))
        })
        .collect();
    for (i, http) in vs.http.iter().flatten().enumerate() {
        if let Some(m) = &http.mirror {
            out.push((DestAt::Mirror(i), m));
        }
        for (j, m) in http.mirrors.iter().flatten().enumerate() {
            out.push((DestAt::Mirrors(i, j), &m.destination));
        }
    }
    out
}

/// The hosts of [`destinations`], without building the list: for scans of
/// every VirtualService.
pub(crate) fn destination_hosts(vs: &VirtualServiceSpec) -> impl Iterator<Item = &str> {
    let http = vs.http.iter().flatten().flat_map(|h| {
        let routed = h.route.iter().flatten().map(|d| &d.destination);
        let mirrors = h.mirrors.iter().flatten().map(|m| &m.destination);
        routed.chain(h.mirror.iter()).chain(mirrors)
    });
    let tcp = vs
        .tcp
        .iter()
        .flatten()
        .flat_map(|t| t.route.iter().flatten());
    let tls = vs
        .tls
        .iter()
        .flatten()
        .flat_map(|t| t.route.iter().flatten());
    http.chain(tcp.chain(tls).map(|d| &d.destination))
        .map(|d| d.host.as_str())
}

/// Whether a VirtualService applies to sidecars: no `gateways`, or `mesh`
/// among them.
pub(crate) fn mesh_bound(vs: &VirtualServiceSpec) -> bool {
    vs.gateways
        .as_ref()
        .is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"))
}
