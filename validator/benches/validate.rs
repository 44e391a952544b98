//! The validation API's work per request, without the HTTP around it:
//! one document linted alone (`POST /api/v1/validate`), and an admission
//! review judged in the context of bookinfo (`POST /api/v1/admission`).
//! Issue 7's target: a single-document request under 5 ms.
//!
//! Run: `cargo bench -p meshc-validator --bench validate`.

use meshc_compiler::{Input, Options, analyze};
use serde_json::json;

fn main() {
    divan::main();
}

const DOC: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
";

#[divan::bench]
fn one_document() -> usize {
    let a = analyze(vec![Input::new("request.yaml", DOC)], &Options::default());
    meshc_validator::json_report(&a).diagnostics.len()
}

fn bookinfo() -> Vec<Input> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies-examples/bookinfo");
    let mut inputs: Vec<Input> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml")
                .then(|| Input::bytes(p.display().to_string(), std::fs::read(&p).unwrap()))
        })
        .collect();
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    inputs
}

#[divan::bench]
fn admission_in_bookinfo(bencher: divan::Bencher) {
    let policy = meshc_validator::service::Policy::new(bookinfo(), Options::default());
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1",
            "namespace": "bookinfo",
            "operation": "UPDATE",
            "object": {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "ratings"},
                "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings", "subset": "v1"}}]}]}
            }
        }
    });
    bencher.bench_local(|| {
        let r = meshc_validator::service::review(&review, Some(&policy)).unwrap();
        assert_eq!(r["response"]["allowed"], true, "{r}");
    });
}
