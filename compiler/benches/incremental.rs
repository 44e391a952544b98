//! Benchmark: recompiling a generated repository after a one-file change
//! (one VirtualService's timeout) with an incremental `Session`, against a
//! full compile of the same files; and, in the 10,000-service repository,
//! after one edit of each other kind (`edit_kinds`). The generated
//! repository gets an ingress Gateway (with its pods and Service) that
//! `svc-00000` is bound to, a namespace-wide Sidecar and a ServiceEntry in
//! `ns-000`. The first six edits, and the Gateway's and the Sidecar's, keep
//! the registry: what they change (a Service's target port, a Deployment's
//! replicas, a Gateway's server hosts, a Sidecar's egress) is not what it
//! copies. The others change what it copies (a Service's port name, that
//! is its protocol; a pod's labels; a Service's selector; a pod's service
//! account; a ServiceEntry's hosts): the registry is patched in place and
//! the rules reading that part of it run again for what it reaches.
//!
//! Run: `cargo bench -p meshc-compiler --bench incremental`.

use meshc_compiler::incremental::{Lowered, Session};
use meshc_compiler::{Input, Options, compile, synth};

fn main() {
    divan::main();
}

fn inputs(files: &[(String, String)]) -> Vec<Input> {
    files
        .iter()
        .map(|(p, t)| Input::new(p.clone(), t.clone()))
        .collect()
}

/// The inputs with ids, as the reconciler gives them (Git blob ids, which
/// Git has without reading the files): here the text's length and a
/// version number that every edit of the file bumps.
fn identified(files: &[(String, String)], versions: &[u64]) -> Vec<Input> {
    inputs(files)
        .into_iter()
        .zip(versions)
        .map(|(i, v)| {
            let len = i.content.as_ref().map_or(0, Vec::len) as u64;
            i.with_id([len.to_le_bytes(), v.to_le_bytes()].concat())
        })
        .collect()
}

/// The ingress: pods, their Service and a Gateway, to which `svc-00000`'s
/// VirtualService is bound.
const INGRESS: &str = "apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  template:
    metadata: {labels: {istio: ingressgateway}}
    spec: {containers: [{name: istio-proxy, image: istio/proxyv2}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [ns-000/shop.example.com]
";

/// `ns-000`'s proxies import their namespace's hosts and the root's.
const SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: ns-000}
spec:
  egress:
  - hosts: [./*, istio-system/*]
";

/// `ns-000`'s calls out of the mesh.
const EGRESS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: ns-000}
spec:
  hosts: [api.partner.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
";

/// A generated repository of `services` with the ingress, the Sidecar and
/// the ServiceEntry above, a session that compiled it, and the index of
/// the file the benchmarks edit.
fn compiled(services: usize) -> (Vec<(String, String)>, Session, usize) {
    let mut files = synth::repository(services);
    let bound = "  hosts:\n  - svc-00000\n";
    let first = files
        .iter_mut()
        .find(|(p, _)| p.ends_with("svc-00000.yaml"))
        .expect("generated service");
    assert!(first.1.contains(bound));
    first.1 = first.1.replacen(
        bound,
        "  hosts:\n  - svc-00000\n  - shop.example.com\n  gateways: [mesh, istio-system/ingress]\n",
        1,
    );
    files.push(("istio-system/ingress.yaml".into(), INGRESS.into()));
    files.push(("ns-000/sidecar.yaml".into(), SIDECAR.into()));
    files.push(("ns-000/egress.yaml".into(), EGRESS.into()));
    let mut session = Session::new(Options::default());
    assert!(
        session
            .compile(identified(&files, &vec![0; files.len()]))
            .ir
            .is_ok()
    );
    let edited = files
        .iter()
        .position(|(p, _)| p.ends_with("svc-00042.yaml"))
        .expect("generated service");
    (files, session, edited)
}

/// `ids`: whether the inputs carry ids ([`identified`]); without, the
/// session compares every file's bytes with the last compile's.
#[divan::bench(
    args = [(1_000, true), (10_000, true), (10_000, false)],
    sample_count = 5,
    sample_size = 1
)]
fn one_file_changed(bencher: divan::Bencher, (services, ids): (usize, bool)) {
    let (mut files, mut session, edited) = compiled(services);
    let mut versions = vec![0; files.len()];
    let mut flip = false;
    bencher
        .with_inputs(|| {
            flip = !flip;
            let (from, to) = if flip { ("2s", "3s") } else { ("3s", "2s") };
            let text =
                files[edited]
                    .1
                    .replacen(&format!("timeout: {from}"), &format!("timeout: {to}"), 1);
            files[edited].1 = text;
            versions[edited] += 1;
            if ids {
                identified(&files, &versions)
            } else {
                inputs(&files)
            }
        })
        .bench_local_values(|inputs| {
            assert!(session.compile(inputs).ir.is_ok());
            assert!(matches!(
                session.stats().lowered,
                Lowered::Scoped { hosts: 1, .. }
            ));
        });
}

/// Each edit flips one value of `svc-00042.yaml` back and forth (or of the
/// file its name says).
const EDITS: &[(&str, &str, &str)] = &[
    ("VirtualService", "timeout: 2s", "timeout: 3s"),
    (
        "DestinationRule",
        "maxConnections: 200",
        "maxConnections: 300",
    ),
    (
        "AuthorizationPolicy",
        r#"methods: ["GET", "POST"]"#,
        r#"methods: ["GET", "PUT"]"#,
    ),
    ("PeerAuthentication", "mode: STRICT", "mode: PERMISSIVE"),
    ("Service", "targetPort: 8080", "targetPort: 8081"),
    ("Deployment", "replicas: 3", "replicas: 4"),
    // What the registry copies: it is patched.
    ("Service port name", "- name: http\n", "- name: grpc\n"),
    (
        "pod labels",
        "        version: v2\n",
        "        version: v2\n        tier: canary\n",
    ),
    (
        "Service selector",
        "  selector:\n    app: ",
        "  selector:\n    tier: web\n    app: ",
    ),
    (
        "service account",
        "      serviceAccountName: svc-00042\n",
        "      serviceAccountName: svc-00042-v2\n",
    ),
    // Kept: the registry reads these specs again when asked.
    (
        "Gateway (ingress.yaml)",
        "hosts: [ns-000/shop.example.com]",
        "hosts: [ns-000/shop.example.com, ns-000/www.example.com]",
    ),
    (
        "Sidecar (sidecar.yaml)",
        "hosts: [./*, istio-system/*]",
        "hosts: [./*, istio-system/*, ns-001/*]",
    ),
    // Patched: the registry copies a ServiceEntry's hosts.
    (
        "ServiceEntry hosts (egress.yaml)",
        "hosts: [api.partner.example.com]",
        "hosts: [api.partner.example.com, auth.partner.example.com]",
    ),
];

#[divan::bench(
    args = ["VirtualService", "DestinationRule", "AuthorizationPolicy", "PeerAuthentication", "Service", "Deployment", "Service port name", "pod labels", "Service selector", "service account", "Gateway (ingress.yaml)", "Sidecar (sidecar.yaml)", "ServiceEntry hosts (egress.yaml)"],
    sample_count = 5,
    sample_size = 1
)]
fn edit_kinds(bencher: divan::Bencher, kind: &str) {
    let (_, a, b) = EDITS.iter().find(|(k, _, _)| *k == kind).expect("an edit");
    let (mut files, mut session, edited) = compiled(10_000);
    let edited = match kind.split_once('(') {
        Some((_, file)) => {
            let file = file.trim_end_matches(')');
            files
                .iter()
                .position(|(p, _)| p.ends_with(file))
                .expect("the edited file")
        }
        None => edited,
    };
    assert!(files[edited].1.contains(a), "{kind}: `{a}` not in the file");
    let mut versions = vec![0; files.len()];
    let mut flip = false;
    bencher
        .with_inputs(|| {
            flip = !flip;
            let (from, to) = if flip { (a, b) } else { (b, a) };
            files[edited].1 = files[edited].1.replacen(from, to, 1);
            versions[edited] += 1;
            identified(&files, &versions)
        })
        .bench_local_values(|inputs| {
            let c = session.compile(inputs);
            assert!(c.ir.is_ok() || !c.analysis.diagnostics.is_empty());
            if std::env::var_os("MESHC_BENCH_STATS").is_some() {
                eprintln!("{kind}: {:?}", session.stats());
            }
        });
}

#[divan::bench(args = [1_000, 10_000], sample_count = 3, sample_size = 1)]
fn full_compile(bencher: divan::Bencher, services: usize) {
    let files = synth::repository(services);
    bencher
        .with_inputs(|| inputs(&files))
        .bench_values(|inputs| assert!(compile(inputs, &Options::default()).ir.is_ok()));
}

/// A policy file added, then removed again, alternately: a new document
/// changes how many resources there are; a policy gives the registry only
/// its position, so the registry and its indices move to the new positions
/// (`Stats::registry` is `Shifted`), the rules run where the policy reaches
/// and lowering stays scoped.
#[divan::bench(sample_count = 6, sample_size = 1)]
fn file_added_or_removed(bencher: divan::Bencher) {
    const ADDED: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: ns-000}
spec:
  selector: {matchLabels: {app: svc-00042}}
  action: DENY
  rules:
  - to:
    - operation: {paths: [/debug/*]}
";
    added_and_removed(bencher, "ns-000/deny-debug.yaml", ADDED);
}

/// A new service's file (a Service and its Deployment) added, then removed
/// again, alternately: which hosts and workloads exist changes; the
/// registry moves and takes them in (`Shifted`), and the rules run where
/// the host, the namespace and the account reach.
#[divan::bench(sample_count = 6, sample_size = 1)]
fn service_added_or_removed(bencher: divan::Bencher) {
    const ADDED: &str = "apiVersion: v1
kind: Service
metadata: {name: svc-new, namespace: ns-000}
spec:
  selector: {app: svc-new}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: svc-new, namespace: ns-000}
spec:
  selector: {matchLabels: {app: svc-new}}
  template:
    metadata: {labels: {app: svc-new, version: v1}}
    spec: {containers: [{name: app, image: app}]}
";
    added_and_removed(bencher, "ns-000/svc-new.yaml", ADDED);
}

/// An ingress Gateway's file added, then removed again, alternately: which
/// gateways exist changes; the registry moves (`Shifted`), and the rules
/// reading Gateways run.
#[divan::bench(sample_count = 6, sample_size = 1)]
fn gateway_added_or_removed(bencher: divan::Bencher) {
    const ADDED: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*/*.example.com']
";
    added_and_removed(bencher, "istio-system/public-gateway.yaml", ADDED);
}

/// A Namespace of a new name declared, then no longer, alternately: which
/// namespaces exist changes; the registry moves (`Shifted`), and the rules
/// reading which namespaces exist (`NS_LABELS`) run in full.
#[divan::bench(sample_count = 6, sample_size = 1)]
fn namespace_added_or_removed(bencher: divan::Bencher) {
    const ADDED: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: ns-new
  labels: {istio-injection: enabled}
";
    added_and_removed(bencher, "ns-new/namespace.yaml", ADDED);
}

/// Two documents of a service's file swapped, then swapped back,
/// alternately: nothing but their order changed, and which of two comes
/// first decides some of what rules and the lowering say, so the registry
/// is built again, every rule runs and the lowering is whole
/// (`Change::reordered`).
#[divan::bench(sample_count = 6, sample_size = 1)]
fn documents_swapped(bencher: divan::Bencher) {
    let (mut files, mut session, edited) = compiled(10_000);
    let mut versions = vec![0; files.len()];
    bencher
        .with_inputs(|| {
            let text = &files[edited].1;
            let docs: Vec<&str> = text.split("\n---\n").collect();
            // Two documents in the middle: each keeps its text exactly.
            let mut swapped = docs.clone();
            swapped.swap(1, 2);
            files[edited].1 = swapped.join("\n---\n");
            versions[edited] += 1;
            identified(&files, &versions)
        })
        .bench_local_values(|inputs| compile_timed(&mut session, inputs, "swapped"));
}

/// File `path` with `text` added to the 10,000-service repository, then
/// removed again, alternately, each compiled by the session.
fn added_and_removed(bencher: divan::Bencher, path: &str, text: &str) {
    let (mut files, mut session, _) = compiled(10_000);
    let mut versions = vec![0; files.len()];
    bencher
        .with_inputs(|| {
            match files.iter().position(|(p, _)| p == path) {
                Some(i) => {
                    files.remove(i);
                    versions.remove(i);
                }
                None => {
                    files.push((path.into(), text.into()));
                    versions.push(0);
                }
            }
            identified(&files, &versions)
        })
        .bench_local_values(|inputs| compile_timed(&mut session, inputs, path));
}

/// Compile `inputs` in `session`, which must give an IR; with
/// `MESHC_BENCH_STATS` set, print how long it took and the session's stats.
fn compile_timed(session: &mut Session, inputs: Vec<Input>, what: &str) {
    let at = std::time::Instant::now();
    let c = session.compile(inputs);
    assert!(c.ir.is_ok());
    if std::env::var_os("MESHC_BENCH_STATS").is_some() {
        eprintln!("{what} in {:?}: {:?}", at.elapsed(), session.stats());
    }
}
