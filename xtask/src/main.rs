//! `cargo xtask conformance [--check] [--update] [--verbose]`
//!
//! Runs meshc over the test suites of the reference tools in
//! `../shared/conformance` and scores it per upstream analyzer or checker:
//!
//! - `istio-analyze/expected.json`: the `testGrid` of `istioctl analyze`'s
//!   analyzer tests, evaluated as the Go harness does (its README): the synthetic
//!   ingress gateway Pod and Service are added, objects in system namespaces are
//!   dropped, resources are named `Kind ns/name` or `Kind name` when the YAML has
//!   no namespace, and a case compares the multiset of `(code, resource)` pairs
//!   of the one analyzer it tests.
//! - `kiali/expected.json`: the unit fixtures of Kiali's checkers, with the
//!   context each Go test injects (Services, workloads, namespaces, gateways,
//!   `enableAutoMtls`) synthesised as extra YAML documents, and the integration
//!   assets applied into `bookinfo` beside the bookinfo sample.
//!
//! A finding counts for a case when one of its upstream equivalents names the
//! case's code *and* analyzer or checker. Recall is matched / expected, precision
//! matched / found. `--check` fails when either falls below the ratchet in
//! `xtask/conformance-ratchet.json`; `--update` raises the ratchet (never lowers).
//!
//! Where meshc disagrees with upstream on purpose, the difference is listed
//! in `xtask/conformance-disagreements.json` with the reason. Those entries do
//! not change the scores (a disagreement still counts as a miss or an extra);
//! they sort the differences the report prints into deliberate ones, with
//! their reasons, and unexplained ones. `--check` also fails when an entry no
//! longer happens, so the list stays true.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use meshc_compiler::{Analysis, Input, Options, analyze};
use serde_json::{Value, json};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("conformance") => conformance(&args[1..]),
        _ => bail!("usage: cargo xtask conformance [--check] [--update] [--verbose]"),
    }
}

/// `(code, resource)` pairs with their counts.
type Pairs = BTreeMap<(String, String), usize>;

#[derive(Default, Clone)]
struct Tally {
    cases: usize,
    passed: usize,
    expected: usize,
    found: usize,
    matched: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.cases += o.cases;
        self.passed += o.passed;
        self.expected += o.expected;
        self.found += o.found;
        self.matched += o.matched;
    }
    fn recall(&self) -> f64 {
        ratio(self.matched, self.expected)
    }
    fn precision(&self) -> f64 {
        ratio(self.matched, self.found)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// A difference from upstream that meshc makes on purpose.
#[derive(serde::Deserialize)]
struct Disagreement {
    suite: String,
    case: String,
    /// `missing` (upstream reports it, meshc does not) or `extra`.
    diff: String,
    code: String,
    resource: String,
    count: usize,
    reason: String,
}

/// One difference in one case.
struct Difference {
    group: String,
    case: String,
    diff: &'static str,
    code: String,
    resource: String,
    count: usize,
}

/// One suite's scores: per analyzer or checker, plus the cases that do not apply.
#[derive(Default)]
struct Suite {
    groups: BTreeMap<String, Tally>,
    not_applicable: Vec<(String, String)>,
    differences: Vec<Difference>,
}

impl Suite {
    fn score(&mut self, group: &str, case: &str, expected: &Pairs, found: &Pairs) {
        let t = self.groups.entry(group.to_string()).or_default();
        let e: usize = expected.values().sum();
        let f: usize = found.values().sum();
        let m: usize = expected
            .iter()
            .map(|(k, n)| (*n).min(found.get(k).copied().unwrap_or(0)))
            .sum();
        t.cases += 1;
        t.expected += e;
        t.found += f;
        t.matched += m;
        if m == e && m == f {
            t.passed += 1;
            return;
        }
        let mut differ = |diff, (code, resource): &(String, String), count| {
            self.differences.push(Difference {
                group: group.to_string(),
                case: case.to_string(),
                diff,
                code: code.clone(),
                resource: resource.clone(),
                count,
            });
        };
        for (k, n) in expected {
            let got = found.get(k).copied().unwrap_or(0);
            if got < *n {
                differ("missing", k, n - got);
            }
        }
        for (k, n) in found {
            let want = expected.get(k).copied().unwrap_or(0);
            if *n > want {
                differ("extra", k, n - want);
            }
        }
    }
    fn total(&self) -> Tally {
        let mut t = Tally::default();
        for g in self.groups.values() {
            t.add(g);
        }
        t
    }
    /// Print the scores and the differences, sorted into deliberate ones
    /// (with their reasons) and unexplained ones; return the entries of
    /// `known` for this suite that no longer happen.
    fn print(
        &self,
        suite: &str,
        title: &str,
        known: &[Disagreement],
        verbose: bool,
    ) -> Vec<String> {
        println!("\n## {title}\n");
        println!(
            "| {:<56} | cases | pass | expected | found | missing | extra | recall | precision |",
            "upstream check"
        );
        println!(
            "|{}|-------|------|----------|-------|---------|-------|--------|-----------|",
            "-".repeat(58)
        );
        for (name, t) in &self.groups {
            row(name, t);
        }
        row("**total**", &self.total());
        if !self.not_applicable.is_empty() {
            println!("\nNot applicable ({}):", self.not_applicable.len());
            let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (case, reason) in &self.not_applicable {
                by_reason.entry(reason).or_default().push(case);
            }
            for (reason, cases) in by_reason {
                println!("- {reason}: {}", cases.join(", "));
            }
        }
        let explain = |d: &Difference| {
            known.iter().find(|k| {
                k.suite == suite
                    && k.case == d.case
                    && k.diff == d.diff
                    && k.code == d.code
                    && k.resource == d.resource
                    && k.count == d.count
            })
        };
        let (deliberate, unexplained): (Vec<&Difference>, Vec<&Difference>) =
            self.differences.iter().partition(|d| explain(d).is_some());
        let line = |d: &Difference| {
            format!(
                "{}: {}: {} {}× {} {}",
                d.group, d.case, d.diff, d.count, d.code, d.resource
            )
        };
        if !deliberate.is_empty() {
            println!(
                "\nDeliberate disagreements ({}, counted in the scores above):",
                deliberate.len()
            );
            for d in &deliberate {
                println!("- {}", line(d));
                if verbose && let Some(k) = explain(d) {
                    println!("  {}", k.reason);
                }
            }
        }
        if !unexplained.is_empty() {
            println!("\nUnexplained differences ({}):", unexplained.len());
            for d in &unexplained {
                println!("- {}", line(d));
            }
        }
        known
            .iter()
            .filter(|k| k.suite == suite)
            .filter(|k| {
                !deliberate
                    .iter()
                    .any(|d| explain(d).is_some_and(|e| std::ptr::eq(e, *k)))
            })
            .map(|k| {
                format!(
                    "{suite}: {}: {} {}× {} {}",
                    k.case, k.diff, k.count, k.code, k.resource
                )
            })
            .collect()
    }
}

fn row(name: &str, t: &Tally) {
    println!(
        "| {:<56} | {:>5} | {:>4} | {:>8} | {:>5} | {:>7} | {:>5} | {:>5.1}% | {:>8.1}% |",
        name,
        t.cases,
        t.passed,
        t.expected,
        t.found,
        t.expected - t.matched,
        t.found - t.matched,
        100.0 * t.recall(),
        100.0 * t.precision()
    );
}

fn conformance(args: &[String]) -> Result<()> {
    let check = args.iter().any(|a| a == "--check");
    let update = args.iter().any(|a| a == "--update");
    let verbose = args.iter().any(|a| a == "--verbose" || a == "-v");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = root.join("../shared/conformance");
    if !corpus.is_dir() {
        bail!("{} is missing", corpus.display());
    }
    let istio = istio_analyze(&corpus.join("istio-analyze"))?;
    let kiali = kiali(&corpus.join("kiali"), &root)?;
    let known_path = root.join("xtask/conformance-disagreements.json");
    let known: Vec<Disagreement> = serde_json::from_str(
        &std::fs::read_to_string(&known_path).with_context(|| known_path.display().to_string())?,
    )
    .with_context(|| known_path.display().to_string())?;
    let mut stale = istio.print(
        "istio-analyze",
        "istioctl analyze (istio-analyze/expected.json)",
        &known,
        verbose,
    );
    stale.extend(kiali.print("kiali", "Kiali (kiali/expected.json)", &known, verbose));
    if !stale.is_empty() {
        println!(
            "\nListed in {} but no longer happening (meshc agrees now: remove them):",
            known_path.display()
        );
        for s in &stale {
            println!("- {s}");
        }
    }

    let current = json!({
        "istio-analyze": scores(&istio.total()),
        "kiali": scores(&kiali.total()),
    });
    let ratchet_path = root.join("xtask/conformance-ratchet.json");
    let ratchet: Value = serde_json::from_str(
        &std::fs::read_to_string(&ratchet_path).unwrap_or_else(|_| "{}".into()),
    )?;
    println!();
    let mut below = Vec::new();
    let mut above = false;
    for suite in ["istio-analyze", "kiali"] {
        for metric in ["recall", "precision"] {
            let now = current[suite][metric].as_f64().unwrap_or(0.0);
            let floor = ratchet[suite][metric].as_f64().unwrap_or(0.0);
            println!(
                "{suite} {metric}: {:.1}% (ratchet {:.1}%)",
                now * 100.0,
                floor * 100.0
            );
            if now + 1e-9 < floor {
                below.push(format!("{suite} {metric} {:.3} < {:.3}", now, floor));
            } else if now > floor + 1e-9 {
                above = true;
            }
        }
    }
    if update {
        let mut next = ratchet.clone();
        for suite in ["istio-analyze", "kiali"] {
            for metric in ["recall", "precision"] {
                let now = current[suite][metric].as_f64().unwrap_or(0.0);
                let floor = ratchet[suite][metric].as_f64().unwrap_or(0.0);
                next[suite][metric] = json!(now.max(floor));
            }
        }
        std::fs::write(&ratchet_path, serde_json::to_string_pretty(&next)? + "\n")?;
        println!("ratchet written to {}", ratchet_path.display());
    } else if above {
        println!("scores are above the ratchet: `cargo xtask conformance --update` raises it");
    }
    if check && !below.is_empty() {
        bail!("conformance fell below the ratchet: {}", below.join("; "));
    }
    if check && !stale.is_empty() {
        bail!(
            "{} lists disagreements that no longer happen",
            known_path.display()
        );
    }
    Ok(())
}

fn scores(t: &Tally) -> Value {
    // Three decimals: stable across platforms, fine enough for a ratchet.
    let r = |x: f64| (x * 1000.0).floor() / 1000.0;
    json!({"recall": r(t.recall()), "precision": r(t.precision())})
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn input(path: &Path, label: &str) -> Result<Input> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(Input::bytes(label, bytes))
}

/// How the analysis names a resource (`Kind ns/name`, the namespace defaulted)
/// → how the upstream harness names it.
fn harness_names(a: &Analysis, default_ns: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for r in &a.resources {
        let name = match (&r.meta.namespace, default_ns) {
            (Some(ns), _) => format!("{} {ns}/{}", r.kind.as_str(), r.name),
            (None, Some(ns)) => format!("{} {ns}/{}", r.kind.as_str(), r.name),
            (None, None) => format!("{} {}", r.kind.as_str(), r.name),
        };
        m.entry(r.display()).or_insert(name);
    }
    m
}

// ---------------------------------------------------------------------------
// istioctl analyze

/// Cluster state the case's verdict depends on that a policy repository does
/// not hold.
fn istio_not_applicable(case: &Value) -> Option<String> {
    if case["skipAll"].as_bool() == Some(true) {
        return Some("analyzer not registered upstream (skipAll)".into());
    }
    if case["dataIncluded"].as_bool() != Some(true) {
        return Some("input YAML not in the corpus".into());
    }
    let live = [
        (
            "Secret",
            "needs TLS Secrets (cluster state, never kept in a policy repo)",
        ),
        ("Node", "needs Node topology labels (cluster state)"),
        ("ConfigMap", "needs the injector ConfigMap (cluster state)"),
        (
            "MutatingWebhookConfiguration",
            "needs webhook configurations (cluster state)",
        ),
        (
            "ValidatingWebhookConfiguration",
            "needs webhook configurations (cluster state)",
        ),
        (
            "CustomResourceDefinition",
            "needs installed CRD versions (cluster state)",
        ),
        ("status", "needs controller-written .status (cluster state)"),
        (
            "istiod-deployment",
            "needs the istiod Deployment and its env (install state)",
        ),
        (
            "mesh-config-file",
            "needs a MeshConfig file (meshc reads meshc.toml)",
        ),
        (
            "mesh-networks-file",
            "needs MeshNetworks (multi-cluster install state)",
        ),
    ];
    for c in case["clusterConcepts"].as_array().into_iter().flatten() {
        if let Some((_, why)) = live.iter().find(|(k, _)| Some(*k) == c.as_str()) {
            return Some((*why).to_string());
        }
    }
    None
}

const ISTIO_HARNESS_DEFAULTS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-dummypod
  namespace: istio-system
  labels: {istio: ingressgateway}
spec:
  containers: [{name: istio-proxy}]
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 80}
  - {name: https, port: 443, targetPort: 443}
  - {name: tcp, port: 31400, targetPort: 31400}
  - {name: tls, port: 15443, targetPort: 15443}
";

const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

fn istio_analyze(dir: &Path) -> Result<Suite> {
    let cases = read_json(&dir.join("expected.json"))?;
    let mut suite = Suite::default();
    for case in cases.as_array().context("expected.json is not an array")? {
        let name = format!("#{} {}", case["index"], case["name"].as_str().unwrap_or(""));
        let analyzer = case["analyzer"].as_str().unwrap_or("");
        if let Some(why) = istio_not_applicable(case) {
            suite.not_applicable.push((name, why));
            continue;
        }
        let mut inputs = vec![Input::new("harness-defaults.yaml", ISTIO_HARNESS_DEFAULTS)];
        for f in case["inputs"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap_or("");
            inputs.push(input(&dir.join(f), f)?);
        }
        let a = analyze(inputs, &Options::default());
        let names = harness_names(&a, None);
        let mut found = Pairs::new();
        for d in &a.diagnostics {
            let Some(res) = d.resource.as_ref() else {
                continue;
            };
            let ns = res
                .split_once(' ')
                .and_then(|(_, r)| r.split_once('/'))
                .map(|(ns, _)| ns);
            if ns.is_some_and(|ns| IGNORED_NAMESPACES.contains(&ns)) {
                continue;
            }
            // A finding counts once for each distinct upstream code it stands
            // for under this analyzer.
            let mut codes: Vec<&str> = d
                .upstream
                .iter()
                .filter(|u| {
                    u.code.starts_with("IST")
                        && (u.check == analyzer
                            || analyzer
                                .strip_prefix(u.check)
                                .is_some_and(|r| r.starts_with('.')))
                })
                .map(|u| u.code)
                .collect();
            codes.dedup();
            for code in codes {
                let who = names.get(res).cloned().unwrap_or_else(|| res.clone());
                *found.entry((code.to_string(), who)).or_default() += 1;
            }
        }
        let mut expected = Pairs::new();
        for e in case["expected"].as_array().into_iter().flatten() {
            let k = (
                e["code"].as_str().unwrap_or("").to_string(),
                e["resource"].as_str().unwrap_or("").to_string(),
            );
            *expected.entry(k).or_default() += 1;
        }
        suite.score(analyzer, &name, &expected, &found);
    }
    Ok(suite)
}

// ---------------------------------------------------------------------------
// Kiali

fn kiali(dir: &Path, root: &Path) -> Result<Suite> {
    let doc = read_json(&dir.join("expected.json"))?;
    let mut suite = Suite::default();
    let fixtures = doc["fixtures"].as_object().context("no fixtures")?;
    for (file, fx) in fixtures {
        let Some(checker) = fx["checker"].as_str() else {
            suite.not_applicable.push((
                file.clone(),
                "orphan fixture: no upstream test uses it".into(),
            ));
            continue;
        };
        if !checker.contains('.') || checker.contains(' ') {
            suite
                .not_applicable
                .push((file.clone(), "helper, not a validation".into()));
            continue;
        }
        let ctx = &fx["context"];
        let cases: Vec<(Option<bool>, &Value)> = if let Some(cs) = fx["cases"].as_array() {
            cs.iter()
                .map(|c| (c["when"]["enableAutoMtls"].as_bool(), &c["expected"]))
                .collect()
        } else {
            vec![(ctx["enableAutoMtls"].as_bool(), &fx["expected"])]
        };
        let text = std::fs::read_to_string(dir.join(file))?;
        for (auto_mtls, expected_v) in cases {
            let mut opts = Options::default();
            opts.settings.auto_mtls = auto_mtls.unwrap_or(true);
            let inputs = vec![
                Input::new(file.clone(), text.clone()),
                Input::new("kiali-context.yaml", kiali_context(ctx)),
            ];
            let a = analyze(inputs, &opts);
            let subject = kiali_subject(ctx, &a);
            let mut found = Pairs::new();
            for d in &a.diagnostics {
                let Some(res) = d.resource.as_ref() else {
                    continue;
                };
                if subject.as_ref().is_some_and(|s| s != res) {
                    continue;
                }
                if let Some(u) = d
                    .upstream
                    .iter()
                    .find(|u| u.code.starts_with("KIA") && u.check == checker)
                {
                    *found.entry((u.code.to_string(), res.clone())).or_default() += 1;
                }
            }
            let mut expected = Pairs::new();
            for e in expected_v.as_array().into_iter().flatten() {
                *expected.entry(kiali_pair(e)).or_default() += 1;
            }
            let case = match auto_mtls {
                Some(v) if fx["cases"].is_array() => format!("{file} (enableAutoMtls={v})"),
                _ => file.clone(),
            };
            suite.score(checker, &case, &expected, &found);
        }
    }
    kiali_integration(dir, root, &doc, &mut suite)?;
    Ok(suite)
}

fn kiali_pair(e: &Value) -> (String, String) {
    let o = &e["object"];
    (
        e["code"].as_str().unwrap_or("").to_string(),
        format!(
            "{} {}/{}",
            o["kind"].as_str().unwrap_or(""),
            o["namespace"].as_str().unwrap_or(""),
            o["name"].as_str().unwrap_or("")
        ),
    )
}

/// The one object a Go test checks, when the context names one.
fn kiali_subject(ctx: &Value, a: &Analysis) -> Option<String> {
    let s = ctx["subject"].as_str()?;
    if let Some(kind) = s
        .strip_prefix("first ")
        .and_then(|r| r.strip_suffix(" in file"))
    {
        return a
            .resources
            .iter()
            .find(|r| r.kind.as_str() == kind)
            .map(|r| r.display());
    }
    Some(s.to_string())
}

/// The context a Go test injects, as YAML: Services, workloads (as Pods),
/// namespaces and gateways. `istio-system` is always declared; namespaces that
/// the fixture's own objects use are known to meshc without declaring them.
fn kiali_context(ctx: &Value) -> String {
    let mut docs = Vec::new();
    let mut namespaces: Vec<String> = Vec::new();
    for key in ["namespaces", "knownNamespaces"] {
        for n in ctx[key].as_array().into_iter().flatten() {
            if let Some(n) = n.as_str() {
                namespaces.push(n.to_string());
            }
        }
    }
    for s in ctx["services"].as_array().into_iter().flatten() {
        docs.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": s["name"], "namespace": s["namespace"]},
            "spec": {"selector": s["selector"], "ports": [{"name": "http", "port": 9080}]},
        }));
        if let Some(ns) = s["namespace"].as_str() {
            namespaces.push(ns.to_string());
        }
    }
    for (i, w) in ctx["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        docs.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{}-{i}", w["name"].as_str().unwrap_or("w")), "namespace": w["namespace"], "labels": w["labels"]},
            "spec": {"containers": [{"name": "app"}]},
        }));
    }
    for g in ctx["existingGateways"].as_array().into_iter().flatten() {
        let g = g.as_str().unwrap_or("");
        let (ns, name) = g.split_once('/').unwrap_or(("default", g));
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
        }));
    }
    namespaces.push("istio-system".into());
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    docs.iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The integration assets: applied into `bookinfo` beside the bookinfo sample
/// (its namespaces and workloads from `policies-examples/bookinfo`); codes that
/// must be present count towards recall, codes that must be absent and are
/// found count against precision.
fn kiali_integration(dir: &Path, root: &Path, doc: &Value, suite: &mut Suite) -> Result<()> {
    // The bookinfo sample, read once.
    let mut sample: Vec<(String, String)> = Vec::new();
    for f in ["namespaces.yaml", "workloads.yaml"] {
        let p = root.join("policies-examples/bookinfo").join(f);
        let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
        sample.push((p.display().to_string(), text));
    }
    for (file, spec) in doc["integration_assets"].as_object().into_iter().flatten() {
        let mut inputs = vec![input(&dir.join(file), file)?];
        inputs.extend(sample.iter().map(|(p, t)| Input::new(p.clone(), t.clone())));
        // `kubectl apply -n <applyNamespace>`.
        let mut opts = Options::default();
        opts.settings.default_namespace = spec["applyNamespace"]
            .as_str()
            .unwrap_or("bookinfo")
            .to_string();
        let a = analyze(inputs, &opts);
        let mut found_all = Pairs::new();
        for d in &a.diagnostics {
            let Some(res) = d.resource.as_ref() else {
                continue;
            };
            // Kiali writes the Gateway API's Gateway `Gateway(group)`.
            let res = res.replace(
                "Gateway.gateway.networking.k8s.io ",
                "Gateway(gateway.networking.k8s.io) ",
            );
            for u in d.upstream.iter().filter(|u| u.code.starts_with("KIA")) {
                *found_all
                    .entry((u.code.to_string(), res.clone()))
                    .or_default() += 1;
            }
        }
        let mut expected = Pairs::new();
        let mut found = Pairs::new();
        for e in spec["expect_present"].as_array().into_iter().flatten() {
            let k = kiali_pair(e);
            *expected.entry(k.clone()).or_default() += 1;
            if found_all.contains_key(&k) {
                *found.entry(k).or_default() += 1;
            }
        }
        for e in spec["expect_absent"].as_array().into_iter().flatten() {
            let k = kiali_pair(e);
            let any_code = k.0 == "*";
            for (fk, n) in &found_all {
                if fk.1 == k.1 && (any_code || fk.0 == k.0) {
                    *found.entry(fk.clone()).or_default() += n;
                }
            }
        }
        suite.score("integration (bookinfo assets)", file, &expected, &found);
    }
    Ok(())
}
