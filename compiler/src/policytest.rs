//! Policy unit tests (`meshc test`): requests with expected routing,
//! authorization and mTLS outcomes, checked with `meshc_ir`'s evaluator (the
//! one the proxy runs).
//!
//! ```yaml
//! apiVersion: meshc.dev/v1alpha1
//! kind: PolicyTest
//! tests:
//! - name: jason sees the v2 reviews
//!   request:
//!     host: reviews              # as the caller writes it
//!     path: /reviews/1           # default /
//!     method: GET                # default GET
//!     port: 9080
//!     headers: {end-user: jason}
//!     from: default/productpage-v1   # calling workload (namespace/name)
//!   expect:
//!     route: {subset: v2}        # or weights: {v1: 50, v3: 50}
//!     rule: jason                # the deciding rule's name
//!     allowed: true              # at every workload behind the destination
//!     mtls: STRICT
//! ```

use std::collections::BTreeMap;

use meshc_ir::eval::{self, Decider, Peer, Request, Routed};
use meshc_ir::{HttpAction, Ir, MtlsMode, TlsMode};
use serde::Deserialize;

use crate::source::{FileId, SourceFile};
use crate::yaml::{Limits, Value, load};

/// `apiVersion` of a test document. `meshc lint` skips the kind, so tests
/// can live beside the policy they test.
pub const API_VERSION: &str = "meshc.dev/v1alpha1";
/// `kind` of a test document.
pub const KIND: &str = "PolicyTest";

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What it checks.
    pub name: String,
    /// The request.
    pub request: TestRequest,
    /// The expected outcome.
    pub expect: Expect,
}

/// A request in a test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// Host as the caller writes it (`reviews`, `reviews.default`, an FQDN).
    pub host: String,
    /// Path with an optional query (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// Destination port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` (default) or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The calling workload, `namespace/name`: its namespace, labels and
    /// (over mTLS) identity.
    #[serde(default)]
    pub from: Option<String>,
    /// The caller's principal, `<trust-domain>/ns/<ns>/sa/<sa>` (implies mTLS).
    #[serde(default)]
    pub principal: Option<String>,
    /// The caller's namespace, without a workload.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Enter through this gateway (`namespace/name`).
    #[serde(default)]
    pub gateway: Option<String>,
    /// Check authorization and mTLS at this workload (`namespace/name`)
    /// instead of every workload behind the chosen destinations.
    #[serde(default)]
    pub to: Option<String>,
}

/// Expected outcomes; only what is given is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The single destination (weight 100).
    #[serde(default)]
    pub route: Option<ExpectRoute>,
    /// The split: subset name (or host without subset) → percent.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, u32>>,
    /// The deciding rule's name (`default` when no rule applies).
    #[serde(default)]
    pub rule: Option<String>,
    /// Status of a redirect, direct response, or 404 when no rule matches.
    #[serde(default)]
    pub status: Option<u16>,
    /// Retry attempts.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Allowed or denied.
    #[serde(default)]
    pub allowed: Option<bool>,
    /// The deciding authorization policy (`namespace/name`).
    #[serde(default)]
    pub policy: Option<String>,
    /// Server-side mTLS mode at the destination (`STRICT`, `PERMISSIVE`, `DISABLE`).
    #[serde(default)]
    pub mtls: Option<String>,
}

/// An expected destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectRoute {
    /// Host (short names are qualified in the caller's namespace).
    #[serde(default)]
    pub host: Option<String>,
    /// Subset.
    #[serde(default)]
    pub subset: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// A test case with where it is.
#[derive(Debug, Clone)]
pub struct Located {
    /// `file:line`.
    pub at: String,
    /// The case.
    pub case: TestCase,
}

/// Read a test file: its cases, or errors with `file:line:column`.
pub fn parse(path: &str, text: &str) -> Result<Vec<Located>, Vec<String>> {
    let file = SourceFile::new(path.to_string(), text.to_string());
    let mut diags = Vec::new();
    let docs = load(FileId(0), &file, &Limits::default(), &mut diags);
    let mut errors: Vec<String> = diags
        .iter()
        .map(|d| {
            let lc = file.line_col(d.primary.span.start as usize);
            format!("{path}:{}:{}: {}", lc.line, lc.column, d.message)
        })
        .collect();
    let mut out = Vec::new();
    for doc in docs {
        let Some(root) = doc.root else { continue };
        if root.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            let lc = file.line_col(root.span.start as usize);
            errors.push(format!(
                "{path}:{}:{}: a test document has `apiVersion: {API_VERSION}` and `kind: {KIND}`",
                lc.line, lc.column
            ));
            continue;
        }
        let Some(tests) = root.get("tests") else {
            let lc = file.line_col(root.span.start as usize);
            errors.push(format!(
                "{path}:{}:{}: a test file has a `tests` list",
                lc.line, lc.column
            ));
            continue;
        };
        let Value::Seq(items) = &tests.value else {
            let lc = file.line_col(tests.span.start as usize);
            errors.push(format!(
                "{path}:{}:{}: `tests` must be a list",
                lc.line, lc.column
            ));
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let lc = file.line_col(item.span.start as usize);
            match serde_json::from_value::<TestCase>(item.to_json()) {
                Ok(case) => out.push(Located {
                    at: format!("{path}:{}", lc.line),
                    case,
                }),
                Err(e) => errors.push(format!("{path}:{}:{}: tests[{i}]: {e}", lc.line, lc.column)),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The case's name.
    pub name: String,
    /// `file:line`.
    pub at: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// The expectations that did not hold.
    pub failures: Vec<String>,
    /// What the IR decided, and which rule and policy decided it.
    pub decided: Vec<String>,
}

/// Run one case against `ir`.
pub fn run(ir: &Ir, t: &Located) -> Outcome {
    let mut o = Outcome {
        name: t.case.name.clone(),
        at: t.at.clone(),
        passed: false,
        failures: Vec::new(),
        decided: Vec::new(),
    };
    check(ir, &t.case, &mut o);
    o.passed = o.failures.is_empty();
    o
}

fn check(ir: &Ir, case: &TestCase, o: &mut Outcome) {
    let rq = &case.request;
    let ex = &case.expect;
    let source = match &rq.from {
        Some(w) => match ir.workloads.get(w) {
            Some(w) => Some(w),
            None => {
                o.failures
                    .push(format!("request.from: no workload `{w}` in the policy"));
                return;
            }
        },
        None => None,
    };
    let mut peer = Peer {
        namespace: rq
            .namespace
            .clone()
            .or_else(|| source.map(|w| w.namespace.clone())),
        labels: source.map(|w| w.labels.clone()).unwrap_or_default(),
        principal: None,
        ip: None,
        request_principal: None,
    };
    let req = Request {
        host: rq.host.clone(),
        port: rq.port,
        method: rq.method.clone().unwrap_or_else(|| "GET".into()),
        path: rq.path.clone().unwrap_or_else(|| "/".into()),
        scheme: rq.scheme.clone().map_or("http".into(), Into::into),
        headers: rq
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        gateway: rq.gateway.clone(),
    };
    let Some(d) = eval::route(ir, &req, &peer) else {
        o.failures.push(format!(
            "host `{}` is not in the compiled policy{}",
            rq.host,
            rq.gateway
                .as_ref()
                .map(|g| format!(" of gateway {g}"))
                .unwrap_or_default()
        ));
        return;
    };
    let short = |h: &str| meshc_ir::diff::short_host(h, &ir.mesh.cluster_domain);
    let dests = d.destinations();
    let routed = match d.routed {
        Routed::Rule { rule, .. } => format!("rule \"{}\" ({})", rule.name, rule.origin),
        Routed::Default => "the default route (no VirtualService rule)".to_string(),
        Routed::NoMatch => "no rule matched (404)".to_string(),
    };
    let split: Vec<String> = dests
        .iter()
        .map(|x| {
            let mut s = short(&x.host);
            if let Some(sub) = &x.subset {
                s.push(' ');
                s.push_str(sub);
            }
            format!("{s} {}%", x.weight)
        })
        .collect();
    let status = match (d.routed, d.action()) {
        (Routed::NoMatch, _) => Some(404),
        (_, Some(HttpAction::Redirect(r))) => Some(r.code),
        (_, Some(HttpAction::DirectResponse { status, .. })) => Some(*status),
        _ => None,
    };
    o.decided.push(match status {
        Some(s) if split.is_empty() => format!("{}: {routed} answers {s}", short(d.host)),
        _ => format!("{}: {routed} sends to {}", short(d.host), split.join(", ")),
    });
    let qualify = |h: &str| {
        eval::resolve_host(
            &ir.hosts,
            h,
            peer.namespace.as_deref(),
            &ir.mesh.cluster_domain,
        )
        .map(String::from)
        .unwrap_or_else(|| h.to_string())
    };
    if let Some(r) = &ex.route {
        let hit = dests.len() == 1
            && dests[0].weight == 100
            && r.host.as_ref().is_none_or(|h| qualify(h) == dests[0].host)
            && r.subset
                .as_ref()
                .is_none_or(|s| dests[0].subset.as_ref() == Some(s))
            && r.port.is_none_or(|p| dests[0].port == Some(p));
        if !hit {
            let want = format!(
                "{}{}{}",
                r.host
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "(any host)".into()),
                r.subset
                    .as_ref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default(),
                r.port.map(|p| format!(":{p}")).unwrap_or_default()
            );
            o.failures.push(format!(
                "route: expected {want} 100%, got {}",
                or_none(&split)
            ));
        }
    }
    if let Some(w) = &ex.weights {
        let mut got: BTreeMap<String, u32> = BTreeMap::new();
        for x in dests.iter() {
            let key = x.subset.clone().unwrap_or_else(|| short(&x.host));
            *got.entry(key).or_default() += x.weight;
        }
        got.retain(|_, v| *v > 0);
        let want: BTreeMap<String, u32> = w
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if got != want {
            o.failures.push(format!(
                "weights: expected {}, got {}",
                weights(&want),
                weights(&got)
            ));
        }
    }
    if let Some(rule) = &ex.rule
        && d.rule_name() != rule
    {
        o.failures
            .push(format!("rule: expected \"{rule}\", got {routed}"));
    }
    if let Some(s) = ex.status
        && status != Some(s)
    {
        o.failures.push(format!(
            "status: expected {s}, got {}",
            status.map_or("a forwarded request".to_string(), |s| s.to_string())
        ));
    }
    if let Some(n) = ex.retries {
        let got = d.retries().attempts;
        if got != n {
            o.failures.push(format!("retries: expected {n}, got {got}"));
        }
    }
    if ex.allowed.is_none() && ex.policy.is_none() && ex.mtls.is_none() {
        return;
    }
    // Authorization and mTLS at the workloads behind the destination.
    let targets: Vec<(String, Option<TlsMode>)> = match &rq.to {
        Some(t) => vec![(
            t.clone(),
            d.policy.map(|p| p.traffic_policy.for_port(rq.port).tls),
        )],
        None => dests
            .iter()
            .filter(|x| x.weight > 0)
            .filter_map(|x| {
                let (policy, endpoints) = ir.hosts.get(&x.host)?.target(x.subset.as_deref());
                let tls = policy.for_port(x.port.or(rq.port)).tls;
                Some(endpoints.iter().map(move |e| (e.clone(), Some(tls))))
            })
            .flatten()
            .collect(),
    };
    if targets.is_empty() {
        o.failures.push(
            "no workload behind the chosen destination to check authorization or mTLS at; name one with request.to"
                .into(),
        );
        return;
    }
    for (target, client_tls) in targets {
        let Some(w) = ir.workloads.get(&target) else {
            o.failures
                .push(format!("request.to: no workload `{target}` in the policy"));
            continue;
        };
        let server = w.mtls.mode_on(rq.port);
        let mtls = match (&rq.principal, source) {
            (Some(_), _) => true,
            (None, Some(src)) => src.meshed && client_tls == Some(TlsMode::IstioMutual),
            (None, None) => false,
        } && server != MtlsMode::Disable;
        peer.principal = if mtls {
            rq.principal.clone().or_else(|| {
                source.map(|s| {
                    s.identity
                        .strip_prefix("spiffe://")
                        .unwrap_or(&s.identity)
                        .to_string()
                })
            })
        } else {
            None
        };
        if let Some(m) = &ex.mtls
            && !m.eq_ignore_ascii_case(server.as_str())
        {
            o.failures.push(format!(
                "mtls at {target}: expected {m}, got {}{}",
                server.as_str(),
                w.mtls
                    .decided_by
                    .as_ref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_else(|| " (Istio's default)".into())
            ));
        }
        let (allowed, by, policy) = if server == MtlsMode::Strict && !mtls {
            (
                false,
                "mTLS STRICT refuses the plaintext connection".to_string(),
                None,
            )
        } else {
            let a = eval::authorize(w, &req, &peer);
            let by = match (&a.decider, &a.policy) {
                (Decider::Custom, Some((p, i))) => {
                    format!("CUSTOM {p} rule {i} (external authorizer; the bundled proxy denies)")
                }
                (Decider::Deny, Some((p, i))) => format!("DENY {p} rule {i}"),
                (Decider::Allow, Some((p, i))) => format!("ALLOW {p} rule {i}"),
                (Decider::NoAllowMatched, _) => "no ALLOW policy matched".to_string(),
                _ => "no ALLOW policy applies".to_string(),
            };
            (a.allowed, by, a.policy.map(|(p, _)| p))
        };
        o.decided.push(format!(
            "{target}: {} by {by}; mTLS {}{}",
            if allowed { "allowed" } else { "denied" },
            server.as_str(),
            if mtls {
                ", caller authenticated"
            } else {
                ", caller not authenticated"
            }
        ));
        if let Some(a) = ex.allowed
            && a != allowed
        {
            o.failures.push(format!(
                "allowed at {target}: expected {a}, got {allowed} ({by})"
            ));
        }
        if let Some(p) = &ex.policy
            && policy.as_ref() != Some(p)
        {
            o.failures
                .push(format!("policy at {target}: expected {p}, got {by}"));
        }
    }
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "no destination".into()
    } else {
        v.join(", ")
    }
}

fn weights(w: &BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = w.iter().map(|(k, v)| format!("{k} {v}%")).collect();
    or_none(&parts)
}
