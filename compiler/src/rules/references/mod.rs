//! Reference rules (`MC01xx`): names that must resolve to something.

pub mod dangling_subset;
pub mod unknown_gateway;
pub mod unknown_host;

use crate::model::{Destination, VirtualServiceSpec};
use crate::path;
use crate::yaml::YamlPath;

/// Every destination a VirtualService sends or mirrors traffic to, with its path.
pub(crate) fn destinations(vs: &VirtualServiceSpec) -> Vec<(YamlPath, &Destination)> {
    let mut out = Vec::new();
    for (i, http) in vs.http.iter().flatten().enumerate() {
        for (j, route) in http.route.iter().flatten().enumerate() {
            out.push((
                path!["spec", "http", i, "route", j, "destination"],
                &route.destination,
            ));
        }
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
    for (i, tcp) in vs.tcp.iter().flatten().enumerate() {
        for (j, route) in tcp.route.iter().flatten().enumerate() {
            out.push((
                path!["spec", "tcp", i, "route", j, "destination"],
                &route.destination,
            ));
        }
    }
    for (i, tls) in vs.tls.iter().flatten().enumerate() {
        for (j, route) in tls.route.iter().flatten().enumerate() {
            out.push((
                path!["spec", "tls", i, "route", j, "destination"],
                &route.destination,
            ));
        }
    }
    out
}
