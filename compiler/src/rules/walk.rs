//! Walks over resources that several rules share.

use crate::model::{Destination, RouteDestination, VirtualServiceSpec};
use crate::path;
use crate::yaml::YamlPath;

/// One `route` list of an http, tcp or tls rule.
pub(crate) struct Route<'a> {
    /// Path of the list (`spec.http[0].route`).
    pub path: YamlPath,
    /// Its destinations with their weights, in order.
    pub destinations: Vec<(&'a Destination, Option<i64>)>,
}

/// Every `route` list of a VirtualService: http, then tcp, then tls rules.
pub(crate) fn routes(vs: &VirtualServiceSpec) -> Vec<Route<'_>> {
    fn list<'a>(
        out: &mut Vec<Route<'a>>,
        name: &str,
        rules: impl Iterator<Item = Vec<(&'a Destination, Option<i64>)>>,
    ) {
        for (i, destinations) in rules.enumerate() {
            out.push(Route {
                path: path!["spec", name, i, "route"],
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

/// Every destination a VirtualService sends or mirrors traffic to, with its path.
pub(crate) fn destinations(vs: &VirtualServiceSpec) -> Vec<(YamlPath, &Destination)> {
    let mut out: Vec<(YamlPath, &Destination)> = routes(vs)
        .into_iter()
        .flat_map(|r| {
            let path = r.path;
            r.destinations
                .into_iter()
                .enumerate()
                .map(move |(j, (d, _))| (path.join(j).join("destination"), d))
        })
        .collect();
    for (i, http) in vs.http.iter().flatten().enumerate() {
        if let Some(m) = &http.mirror {
            out.push((path!["spec", "http", i, "mirror"], m));
        }
        for (j, m) in http.mirrors.iter().flatten().enumerate() {
            out.push((
                path!["spec", "http", i, "mirrors", j, "destination"],
                &m.destination,
            ));
        }
    }
    out
}

/// Whether a VirtualService applies to sidecars: no `gateways`, or `mesh`
/// among them.
pub(crate) fn mesh_bound(vs: &VirtualServiceSpec) -> bool {
    vs.gateways
        .as_ref()
        .is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"))
}
