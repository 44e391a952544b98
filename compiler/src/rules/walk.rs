//! Walks over resources that several rules share.

use crate::model::{Destination, VirtualServiceSpec};
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
    let mut out = Vec::new();
    for (i, h) in vs.http.iter().flatten().enumerate() {
        let destinations = h
            .route
            .iter()
            .flatten()
            .map(|d| (&d.destination, d.weight))
            .collect();
        out.push(Route {
            path: path!["spec", "http", i, "route"],
            destinations,
        });
    }
    for (i, t) in vs.tcp.iter().flatten().enumerate() {
        let destinations = t
            .route
            .iter()
            .flatten()
            .map(|d| (&d.destination, d.weight))
            .collect();
        out.push(Route {
            path: path!["spec", "tcp", i, "route"],
            destinations,
        });
    }
    for (i, t) in vs.tls.iter().flatten().enumerate() {
        let destinations = t
            .route
            .iter()
            .flatten()
            .map(|d| (&d.destination, d.weight))
            .collect();
        out.push(Route {
            path: path!["spec", "tls", i, "route"],
            destinations,
        });
    }
    out
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
