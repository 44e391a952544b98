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

use crate::{Ir, SCHEMA_VERSION, hash_bytes};

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

/// The version of a set of resources: SHA-256 over its `name version` lines in
/// name order. Two proxies with the same version hold the same bytes.
pub fn scope_version<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<(&str, &str)> = entries.into_iter().collect();
    lines.sort_unstable();
    let mut text = String::with_capacity(lines.len() * 100);
    for (name, version) in lines {
        text.push_str(name);
        text.push(' ');
        text.push_str(version);
        text.push('\n');
    }
    hash_bytes(text.as_bytes())
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
        let mut names = vec!["mesh".to_string(), format!("workload/{workload}")];
        names.extend(
            self.hosts
                .iter()
                .filter(|(h, p)| w.sees(h, p))
                .map(|(h, _)| format!("host/{h}")),
        );
        names.extend(
            self.gateways
                .iter()
                .filter(|(_, g)| g.runs_on(w))
                .map(|(n, _)| format!("gateway/{n}")),
        );
        Some(names)
    }
}

/// Rebuild an IR from resources (a proxy's current set). Fails on a body that
/// does not match its version, an unknown resource name, or a missing `mesh`.
pub fn assemble<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Result<Ir, String> {
    fn decode<T: serde::de::DeserializeOwned>(r: &Resource) -> Result<T, String> {
        serde_json::from_slice(&r.body).map_err(|e| format!("resource `{}`: {e}", r.name))
    }
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
        if !r.is_intact() {
            return Err(format!(
                "resource `{}`: body does not match version {}",
                r.name, r.version
            ));
        }
        let (kind, key) = r.name.split_once('/').unwrap_or((&r.name, ""));
        match (kind, key) {
            ("mesh", "") => mesh = Some(decode(r)?),
            ("host", k) if !k.is_empty() => {
                ir.hosts.insert(k.to_string(), decode(r)?);
            }
            ("workload", k) if k.contains('/') => {
                ir.workloads.insert(k.to_string(), decode(r)?);
            }
            ("gateway", k) if k.contains('/') => {
                ir.gateways.insert(k.to_string(), decode(r)?);
            }
            _ => return Err(format!("unknown resource name `{}`", r.name)),
        }
    }
    ir.mesh = mesh.ok_or("no `mesh` resource")?;
    Ok(ir)
}
