//! The analysed repository: typed resources plus the registry the rules query
//! (hosts, subsets, gateways, workloads, namespaces).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::Settings;
use crate::diagnostic::{Diagnostic, Label};
use crate::model::{Kind, ObjectMeta, Spec};
use crate::rules::RuleMeta;
use crate::source::FileId;
use crate::yaml::{Node, YamlPath};

/// One resource read from the repository.
#[derive(Debug, Clone)]
pub struct Resource {
    /// File it came from.
    pub file: FileId,
    /// Position of its document in the file.
    pub doc: usize,
    /// Its YAML, for locating paths.
    pub root: Node,
    /// Kind.
    pub kind: Kind,
    /// `apiVersion` as written.
    pub api_version: String,
    /// Name.
    pub name: String,
    /// Namespace (`default` when absent).
    pub namespace: String,
    /// Metadata.
    pub meta: ObjectMeta,
    /// Typed spec; `None` when it did not deserialise (the schema error is reported).
    pub spec: Option<Spec>,
}

impl Resource {
    /// `Kind namespace/name`.
    pub fn display(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
    /// A label at `path` in this resource (the deepest existing node on it).
    pub fn label(&self, path: YamlPath) -> Label {
        let (span, _) = self.root.locate(&path.0);
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
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.meta.labels.clone().unwrap_or_default()
    }
}

/// A workload (Deployment, StatefulSet, DaemonSet or Pod).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// Service account (`default` when unset).
    pub service_account: String,
}

/// Everything the rules read.
pub struct Context<'a> {
    /// All resources.
    pub resources: &'a [Resource],
    /// Settings.
    pub settings: &'a Settings,
    /// FQDN → index of the Service resource.
    pub services: HashMap<String, usize>,
    /// ServiceEntry hosts (possibly wildcards) → index of the ServiceEntry.
    pub service_entry_hosts: Vec<(String, usize)>,
    /// Gateways by `namespace/name`.
    pub gateways: HashSet<String>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Namespaces declared in the repository, with their labels.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
}

impl<'a> Context<'a> {
    /// Index the resources.
    pub fn new(resources: &'a [Resource], settings: &'a Settings) -> Self {
        let mut ctx = Context {
            resources,
            settings,
            services: HashMap::new(),
            service_entry_hosts: Vec::new(),
            gateways: HashSet::new(),
            workloads: Vec::new(),
            namespaces: HashMap::new(),
        };
        for (i, r) in resources.iter().enumerate() {
            match (&r.kind, &r.spec) {
                (Kind::Service, Some(_)) => {
                    ctx.services.insert(
                        format!("{}.{}.svc.{}", r.name, r.namespace, settings.cluster_domain),
                        i,
                    );
                }
                (Kind::ServiceEntry, Some(Spec::ServiceEntry(se))) => {
                    for h in &se.hosts {
                        ctx.service_entry_hosts.push((h.clone(), i));
                    }
                }
                (Kind::Gateway, _) => {
                    ctx.gateways.insert(format!("{}/{}", r.namespace, r.name));
                }
                (Kind::Namespace, _) => {
                    ctx.namespaces.insert(r.name.clone(), r.labels());
                }
                (
                    Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet,
                    Some(Spec::Workload(w)),
                ) => {
                    let t = &w.template;
                    ctx.workloads.push(Workload {
                        namespace: r.namespace.clone(),
                        labels: t.metadata.labels.clone().unwrap_or_default(),
                        annotations: t.metadata.annotations.clone().unwrap_or_default(),
                        service_account: t
                            .spec
                            .service_account_name
                            .clone()
                            .or_else(|| t.spec.service_account.clone())
                            .unwrap_or_else(|| "default".into()),
                    });
                }
                (Kind::Pod, Some(Spec::Pod(p))) => ctx.workloads.push(Workload {
                    namespace: r.namespace.clone(),
                    labels: r.labels(),
                    annotations: r.meta.annotations.clone().unwrap_or_default(),
                    service_account: p
                        .service_account_name
                        .clone()
                        .or_else(|| p.service_account.clone())
                        .unwrap_or_else(|| "default".into()),
                }),
                _ => {}
            }
        }
        ctx
    }

    /// Resources of one kind with a typed spec, with their indices.
    pub fn of_kind(
        &self,
        kind: Kind,
    ) -> impl Iterator<Item = (usize, &'a Resource, &'a Spec)> + '_ {
        self.resources
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.kind == kind)
            .filter_map(|(i, r)| r.spec.as_ref().map(|s| (i, r, s)))
    }

    /// Istio's host resolution: a name without dots is a Service in `namespace`.
    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        if host.contains('.') || host == "*" {
            host.to_string()
        } else {
            format!("{host}.{namespace}.svc.{}", self.settings.cluster_domain)
        }
    }

    /// Whether a (resolved) host names something: a Service in the repo, a
    /// ServiceEntry host, or a host configured as known. Wildcard hosts count as
    /// known when they cover at least one of those.
    pub fn host_exists(&self, fqdn: &str) -> bool {
        if self.settings.is_known_host(fqdn) || self.services.contains_key(fqdn) {
            return true;
        }
        if self
            .service_entry_hosts
            .iter()
            .any(|(h, _)| host_matches(h, fqdn) || host_matches(fqdn, h))
        {
            return true;
        }
        fqdn.starts_with('*') && self.services.keys().any(|s| host_matches(fqdn, s))
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

    /// Whether the namespace is declared with sidecar injection on.
    pub fn namespace_injected(&self, ns: &str) -> bool {
        self.namespaces.get(ns).is_some_and(|l| {
            l.get("istio-injection").is_some_and(|v| v == "enabled")
                || l.contains_key("istio.io/rev")
        })
    }
}

/// Whether `pattern` (exact, `*`, or `*.suffix`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

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
}
