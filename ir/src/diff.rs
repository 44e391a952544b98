//! Semantic diff of two IRs: what changes for traffic, in IR terms, and which
//! workloads each change reaches.
//!
//! Both sides are walked as trees. Lists whose elements have an identity are
//! matched by it rather than by position: route rules and authorization
//! policies by name, destinations by host and subset, authorization rules by
//! what they say. Provenance (`origin`, `origins`) is not behaviour and is
//! left out, so moving a rule to another file, reordering documents or
//! renaming files gives an empty diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::{AuthzRule, Ir, Values};

/// What happened to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Present only after.
    Added,
    /// Present only before.
    Removed,
    /// Present on both sides with different values.
    Changed,
}

/// One semantic change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `host`, `workload` or `gateway`.
    pub scope: &'static str,
    /// The host (shortened: `reviews.default`), workload or gateway.
    pub subject: String,
    /// What inside it changed (`http rule "canary" to v2 weight`).
    pub path: String,
    /// Kind of change.
    pub kind: ChangeKind,
    /// Value before (compact), if any.
    pub before: Option<String>,
    /// Value after (compact), if any.
    pub after: Option<String>,
    /// Workloads (`namespace/name`) whose proxies the change reaches.
    pub reaches: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.subject)?;
        if !self.path.is_empty() {
            write!(f, "{} ", self.path)?;
        }
        match (self.kind, &self.before, &self.after) {
            (ChangeKind::Changed, Some(b), Some(a)) => write!(f, "{b} -> {a}"),
            (ChangeKind::Added, _, Some(a)) => write!(f, "added {a}"),
            (ChangeKind::Removed, Some(b), _) => write!(f, "removed {b}"),
            (k, _, _) => write!(f, "{k:?}"),
        }
    }
}

/// The semantic changes from `a` to `b`, in a stable order.
pub fn diff(a: &Ir, b: &Ir) -> Vec<Change> {
    let mut out = Vec::new();
    let mesh = |ir: &Ir| serde_json::to_value(&ir.mesh).expect("serialisable");
    push_tree(
        &mut out,
        "mesh",
        "mesh".into(),
        &mesh(a),
        &mesh(b),
        Vec::new(),
    );
    entities(
        &mut out,
        "host",
        &a.hosts,
        &b.hosts,
        |h| union(a.clients_of(h), b.clients_of(h)),
        |h| short_host(h, &b.mesh.cluster_domain),
    );
    entities(
        &mut out,
        "workload",
        &a.workloads,
        &b.workloads,
        |w| vec![w.to_string()],
        str::to_string,
    );
    entities(
        &mut out,
        "gateway",
        &a.gateways,
        &b.gateways,
        |g| union(a.gateway_workloads(g), b.gateway_workloads(g)),
        str::to_string,
    );
    out
}

/// The workloads reached on either side, sorted and once each.
fn union(before: Vec<&str>, after: Vec<&str>) -> Vec<String> {
    let all: BTreeSet<&str> = before.into_iter().chain(after).collect();
    all.into_iter().map(String::from).collect()
}

fn entities<T: Serialize>(
    out: &mut Vec<Change>,
    scope: &'static str,
    a: &BTreeMap<String, T>,
    b: &BTreeMap<String, T>,
    reaches: impl Fn(&str) -> Vec<String>,
    subject: impl Fn(&str) -> String,
) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let va = a
            .get(k)
            .map(|v| serde_json::to_value(v).expect("serialisable"));
        let vb = b
            .get(k)
            .map(|v| serde_json::to_value(v).expect("serialisable"));
        if va == vb {
            continue;
        }
        let reach = reaches(k);
        match (va, vb) {
            (Some(_), None) => out.push(Change {
                scope,
                subject: subject(k),
                path: String::new(),
                kind: ChangeKind::Removed,
                before: Some(scope.to_string()),
                after: None,
                reaches: reach,
            }),
            (None, Some(_)) => out.push(Change {
                scope,
                subject: subject(k),
                path: String::new(),
                kind: ChangeKind::Added,
                before: None,
                after: Some(scope.to_string()),
                reaches: reach,
            }),
            (Some(va), Some(vb)) => push_tree(out, scope, subject(k), &va, &vb, reach),
            (None, None) => {}
        }
    }
}

fn push_tree(
    out: &mut Vec<Change>,
    scope: &'static str,
    subject: String,
    a: &Value,
    b: &Value,
    reaches: Vec<String>,
) {
    let mut found = Vec::new();
    walk(&mut Vec::new(), a, b, &mut found);
    for (path, kind, before, after) in found {
        out.push(Change {
            scope,
            subject: subject.clone(),
            path,
            kind,
            before,
            after,
            reaches: reaches.clone(),
        });
    }
}

type Found = (String, ChangeKind, Option<String>, Option<String>);

/// Fields that say where something came from, not what it does.
const PROVENANCE: [&str; 2] = ["origin", "origins"];

fn walk(path: &mut Vec<String>, a: &Value, b: &Value, out: &mut Vec<Found>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) if same_variant(ma, mb) => {
            let keys: Vec<&String> = ma
                .keys()
                .chain(mb.keys().filter(|k| !ma.contains_key(*k)))
                .collect();
            for k in keys {
                if PROVENANCE.contains(&k.as_str()) {
                    continue;
                }
                let (va, vb) = (
                    ma.get(k).unwrap_or(&Value::Null),
                    mb.get(k).unwrap_or(&Value::Null),
                );
                match segment(k) {
                    Some(seg) => {
                        path.push(seg);
                        walk(path, va, vb, out);
                        path.pop();
                    }
                    None => walk(path, va, vb, out),
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) if keyed(xa) && keyed(xb) => {
            let ka: Vec<(String, &Value)> = xa.iter().map(|v| (key_of(v), v)).collect();
            let kb: Vec<(String, &Value)> = xb.iter().map(|v| (key_of(v), v)).collect();
            for (k, va) in &ka {
                match kb.iter().find(|(kk, _)| kk == k) {
                    Some((_, vb)) => {
                        path.push(k.clone());
                        walk(path, va, vb, out);
                        path.pop();
                    }
                    None => {
                        let (label, what) = element(k, va);
                        out.push((joined(path, label), ChangeKind::Removed, Some(what), None));
                    }
                }
            }
            for (k, vb) in &kb {
                if !ka.iter().any(|(kk, _)| kk == k) {
                    let (label, what) = element(k, vb);
                    out.push((joined(path, label), ChangeKind::Added, None, Some(what)));
                }
            }
            let order_a: Vec<&String> = ka
                .iter()
                .map(|(k, _)| k)
                .filter(|k| kb.iter().any(|(x, _)| x == *k))
                .collect();
            let order_b: Vec<&String> = kb
                .iter()
                .map(|(k, _)| k)
                .filter(|k| ka.iter().any(|(x, _)| x == *k))
                .collect();
            if order_a != order_b {
                out.push((
                    joined(path, "order"),
                    ChangeKind::Changed,
                    Some(list(&order_a)),
                    Some(list(&order_b)),
                ));
            }
        }
        (Value::Null, v) => out.push((path.join(" "), ChangeKind::Added, None, Some(compact(v)))),
        (v, Value::Null) => out.push((path.join(" "), ChangeKind::Removed, Some(compact(v)), None)),
        _ => out.push((
            path.join(" "),
            ChangeKind::Changed,
            Some(compact(a)),
            Some(compact(b)),
        )),
    }
}

fn list(keys: &[&String]) -> String {
    format!(
        "[{}]",
        keys.iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn joined(path: &[String], last: &str) -> String {
    let mut p = path.to_vec();
    p.push(last.to_string());
    p.join(" ")
}

/// Two objects are the same enum variant unless both are single-key objects
/// with different keys (`{"route": ...}` vs `{"redirect": ...}`).
fn same_variant(a: &serde_json::Map<String, Value>, b: &serde_json::Map<String, Value>) -> bool {
    !(a.len() == 1 && b.len() == 1 && a.keys().next() != b.keys().next())
}

/// How a field reads in a change's path; `None` for wrappers that add
/// nothing for the reader (`action`, `authz`, `rules`).
fn segment(k: &str) -> Option<String> {
    Some(match k {
        "action" | "authz" | "rules" => return None,
        "http" => "http rule".into(),
        "route" => "to".into(),
        "allow" | "deny" | "custom" => k.to_ascii_uppercase(),
        "mtls" => "mTLS".into(),
        "ports" => "port".into(),
        _ => k.to_string(),
    })
}

/// A list is keyed when its elements are objects with an identity.
fn keyed(xs: &[Value]) -> bool {
    !xs.is_empty()
        && xs.iter().all(|v| {
            v.as_object().is_some_and(|o| {
                o.contains_key("name")
                    || (o.contains_key("host") && o.contains_key("weight"))
                    || o.contains_key("from")
            })
        })
}

fn key_of(v: &Value) -> String {
    let o = v.as_object().expect("keyed lists hold objects");
    if let Some(Value::String(n)) = o.get("name") {
        return format!("{n:?}");
    }
    if o.contains_key("from") {
        return match serde_json::from_value::<AuthzRule>(v.clone()) {
            Ok(r) => format!("rule ({})", describe_rule(&r)),
            Err(_) => compact(v),
        };
    }
    let host = o.get("host").and_then(Value::as_str).unwrap_or("");
    let mut k = host.split('.').take(2).collect::<Vec<_>>().join(".");
    if let Some(Value::String(s)) = o.get("subset") {
        k.push(' ');
        k.push_str(s);
    }
    if let Some(Value::Number(p)) = o.get("port") {
        k.push_str(&format!(":{p}"));
    }
    k
}

/// A whole element that comes or goes, keyed `k`: its label in the path and
/// a short summary. An authorization rule's key is already its description.
fn element<'k>(k: &'k str, v: &Value) -> (&'k str, String) {
    if let Some(desc) = k.strip_prefix("rule (").and_then(|d| d.strip_suffix(')')) {
        return ("rule", desc.to_string());
    }
    (k, summary(v))
}

/// A short summary of a whole added or removed destination or value.
fn summary(v: &Value) -> String {
    if let Some(o) = v.as_object()
        && o.contains_key("weight")
    {
        return format!("{}%", o["weight"]);
    }
    compact(v)
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An authorization rule in a few words: `from ns shop, principal td/ns/shop/sa/cart to POST /pay`.
pub fn describe_rule(r: &AuthzRule) -> String {
    fn vals(label: &str, v: &Values, out: &mut Vec<String>) {
        if let Some(vs) = &v.values {
            out.push(format!("{label} {}", vs.join("|")));
        }
        if !v.not_values.is_empty() {
            out.push(format!("{label} not {}", v.not_values.join("|")));
        }
    }
    let mut from = Vec::new();
    for s in &r.from {
        vals("principal", &s.principals, &mut from);
        vals("ns", &s.namespaces, &mut from);
        vals("ip", &s.ip_blocks, &mut from);
        vals("jwt", &s.request_principals, &mut from);
    }
    let mut to = Vec::new();
    for o in &r.to {
        vals("", &o.methods, &mut to);
        vals("path", &o.paths, &mut to);
        vals("port", &o.ports, &mut to);
        vals("host", &o.hosts, &mut to);
    }
    let mut s = if from.is_empty() {
        "from anyone".to_string()
    } else {
        format!("from {}", from.join(", "))
    };
    if !to.is_empty() {
        s.push_str(" to ");
        s.push_str(
            to.iter()
                .map(|t| t.trim())
                .collect::<Vec<_>>()
                .join(", ")
                .as_str(),
        );
    }
    for c in &r.when {
        s.push_str(&format!(" when {}", c.key));
        if let Some(v) = &c.values.values {
            s.push_str(&format!(" in {}", v.join("|")));
        }
        if !c.values.not_values.is_empty() {
            s.push_str(&format!(" not in {}", c.values.not_values.join("|")));
        }
    }
    s
}

/// `reviews.default.svc.cluster.local` → `reviews.default`.
pub fn short_host(host: &str, cluster_domain: &str) -> String {
    host.strip_suffix(cluster_domain)
        .and_then(|h| h.strip_suffix(".svc."))
        .unwrap_or(host)
        .to_string()
}
