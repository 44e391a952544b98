//! The IR cut into named resources for distribution, and put back together.
//!
//! A proxy's scope ([`Ir::scope`]) is sent as resources so that a change to
//! one host re-sends that host only: `mesh`, `host/<fqdn>`,
//! `workload/<ns>/<name>` and `gateway/<ns>/<name>`, each the canonical
//! encoding of one IR value. A resource's version is the SHA-256 of its body;
//! a scope's version is [`scope_version`] of its (name, version) pairs, so a
//! receiver checks a whole update without re-encoding anything.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Ir, SCHEMA_VERSION, WorkloadPolicy, hash_bytes};

/// The name of the resource listing endpoints: JSON, workload `namespace/name`
/// to an [`EndpointSet`], the addresses its proxies registered and the
/// identity they proved. It is not part of the IR (the policy does not change
/// when a proxy comes or goes), so [`assemble`] skips it.
pub const ENDPOINTS: &str = "endpoints";

/// The registered proxies of one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSet {
    /// The SPIFFE id their certificates carry: a client checks that the peer
    /// at one of `addresses` presents exactly this.
    pub identity: String,
    /// `ip:port` of their inbound listeners, sorted.
    pub addresses: Vec<String>,
}

/// An endpoints resource body.
pub fn endpoints_resource(endpoints: &BTreeMap<String, EndpointSet>) -> Resource {
    Resource::of(ENDPOINTS.to_string(), endpoints)
}

/// One named piece of an IR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `mesh`, `host/<fqdn>`, `workload/<ns>/<name>` or `gateway/<ns>/<name>`.
    pub name: String,
    /// SHA-256 of `body`, lower-case hex.
    pub version: String,
    /// Canonical JSON of the value.
    pub body: Vec<u8>,
}

impl Resource {
    fn of(name: String, value: &impl Serialize) -> Resource {
        let body = serde_json::to_vec(value).expect("IR values always serialise");
        Resource {
            name,
            version: hash_bytes(&body),
            body,
        }
    }

    /// Whether the body is what the version says.
    pub fn is_intact(&self) -> bool {
        hash_bytes(&self.body) == self.version
    }
}

/// The version of a set of resources, from its (name, version) pairs in any
/// order. Two proxies with the same version hold the same bytes.
///
/// It is composed so that a server can compute it cheaply for many proxies
/// that share their hosts: SHA-256 over the line `hosts <host digest>` and
/// then the `name version` lines of the other resources in name order, where
/// the host digest is [`host_digest`] of the `host/...` resources.
pub fn scope_version<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let (hosts, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(name, _)| name.starts_with("host/"));
    compose(&host_digest(hosts), others)
}

/// SHA-256 over the `name version` lines of host resources, in name order.
pub fn host_digest<'a>(hosts: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    hash_bytes(lines(hosts).as_bytes())
}

/// A scope version from its hosts' digest and its other resources.
pub fn compose<'a>(
    host_digest: &str,
    others: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut text = format!("hosts {host_digest}\n");
    text.push_str(&lines(others));
    hash_bytes(text.as_bytes())
}

fn lines<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<(&str, &str)> = entries.into_iter().collect();
    lines.sort_unstable();
    let mut text = String::with_capacity(lines.len() * 100);
    for (name, version) in lines {
        text.push_str(name);
        text.push(' ');
        text.push_str(version);
        text.push('\n');
    }
    text
}

impl Ir {
    /// Every resource of this IR, by name.
    pub fn resources(&self) -> BTreeMap<String, Resource> {
        let mut out = BTreeMap::new();
        let mut put = |r: Resource| {
            out.insert(r.name.clone(), r);
        };
        put(Resource::of("mesh".into(), &self.mesh));
        for (k, v) in &self.hosts {
            put(Resource::of(format!("host/{k}"), v));
        }
        for (k, v) in &self.workloads {
            put(Resource::of(format!("workload/{k}"), v));
        }
        for (k, v) in &self.gateways {
            put(Resource::of(format!("gateway/{k}"), v));
        }
        out
    }

    /// The names of the resources in `workload`'s scope: exactly what
    /// [`Ir::scope`] keeps. `None` when the workload is unknown.
    pub fn scope_names(&self, workload: &str) -> Option<Vec<String>> {
        let w = self.workloads.get(workload)?;
        let mut names = self.own_names(workload)?;
        names.extend(self.visible_hosts(w).map(|h| format!("host/{h}")));
        Some(names)
    }

    /// The resources of `workload`'s scope that are not hosts: `mesh`, its
    /// workload and the gateways it runs. `None` when the workload is unknown.
    pub fn own_names(&self, workload: &str) -> Option<Vec<String>> {
        let w = self.workloads.get(workload)?;
        let mut names = vec!["mesh".to_string(), format!("workload/{workload}")];
        names.extend(self.gateways_run_by(w).map(|g| format!("gateway/{g}")));
        Some(names)
    }

    /// The hosts `w`'s proxy sees, in order. Depends only on the workload's
    /// namespace and egress, so proxies alike can share the answer.
    pub fn visible_hosts<'a>(&'a self, w: &'a WorkloadPolicy) -> impl Iterator<Item = &'a str> {
        self.hosts
            .iter()
            .filter(|(h, p)| w.sees(h, p))
            .map(|(h, _)| h.as_str())
    }

    /// The gateways `w` runs, in order.
    pub fn gateways_run_by<'a>(&'a self, w: &'a WorkloadPolicy) -> impl Iterator<Item = &'a str> {
        self.gateways
            .iter()
            .filter(|(_, g)| g.runs_on(w))
            .map(|(n, _)| n.as_str())
    }
}

/// Rebuild an IR from resources (a proxy's current set). Fails on a body that
/// does not match its version, an unknown resource name, or a missing `mesh`.
pub fn assemble<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Result<Ir, String> {
    assemble_over(None, resources)
}

/// [`assemble`], taking the entries of resources that `previous` (an IR and
/// the resources it was assembled from) already had at the same version from
/// that IR instead of checking and decoding their bodies again: an update of
/// one host in a thousand-host scope decodes one body, not a thousand.
///
/// Every entry is an exact-size copy: JSON arrays decode into vectors grown
/// by doubling, which left a decoded IR about twice its size.
pub fn assemble_over<'a>(
    previous: Option<(&Ir, &BTreeMap<String, Resource>)>,
    resources: impl IntoIterator<Item = &'a Resource>,
) -> Result<Ir, String> {
    /// The previous IR's entry when there is one, else `r` decoded; either
    /// way an exact-size copy.
    fn entry<T: serde::de::DeserializeOwned + Clone>(
        kept: Option<&T>,
        r: &Resource,
    ) -> Result<T, String> {
        if let Some(kept) = kept {
            return Ok(kept.clone());
        }
        let decoded: T =
            serde_json::from_slice(&r.body).map_err(|e| format!("resource `{}`: {e}", r.name))?;
        Ok(decoded.clone())
    }
    // The previous IR, when it has this very resource.
    let kept = |r: &Resource| {
        previous
            .filter(|(_, held)| held.get(&r.name).is_some_and(|h| h.version == r.version))
            .map(|(ir, _)| ir)
    };
    let mut mesh = None;
    let mut ir = Ir {
        schema: SCHEMA_VERSION,
        mesh: crate::Mesh {
            trust_domain: String::new(),
            cluster_domain: String::new(),
            root_namespace: String::new(),
        },
        hosts: BTreeMap::new(),
        workloads: BTreeMap::new(),
        gateways: BTreeMap::new(),
    };
    for r in resources {
        let kept = kept(r);
        if kept.is_none() && !r.is_intact() {
            return Err(format!(
                "resource `{}`: body does not match version {}",
                r.name, r.version
            ));
        }
        let (kind, key) = r.name.split_once('/').unwrap_or((&r.name, ""));
        match (kind, key) {
            ("mesh", "") => mesh = Some(entry(kept.map(|ir| &ir.mesh), r)?),
            (ENDPOINTS, "") => {}
            ("host", k) if !k.is_empty() => {
                let p = entry(kept.and_then(|ir| ir.hosts.get(k)), r)?;
                ir.hosts.insert(k.to_string(), p);
            }
            ("workload", k) if k.contains('/') => {
                let w = entry(kept.and_then(|ir| ir.workloads.get(k)), r)?;
                ir.workloads.insert(k.to_string(), w);
            }
            ("gateway", k) if k.contains('/') => {
                let g = entry(kept.and_then(|ir| ir.gateways.get(k)), r)?;
                ir.gateways.insert(k.to_string(), g);
            }
            _ => return Err(format!("unknown resource name `{}`", r.name)),
        }
    }
    ir.mesh = mesh.ok_or("no `mesh` resource")?;
    Ok(ir)
}
