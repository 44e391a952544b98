//! The validation API and the admission webhook's handler, called as a
//! service (`oneshot`), with real AdmissionReview JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshc_compiler::{Input, Options};
use meshc_validator::service::{Context, MAX_BODY, Policy, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const POLICY: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: app, image: reviews}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
";

fn context() -> Context {
    let policy = Arc::new(Policy::new(
        vec![Input::new("policy.yaml", POLICY)],
        Options::default(),
    ));
    Arc::new(move || Some(policy.clone()))
}

async fn call(req: Request<Body>) -> (StatusCode, Value) {
    let resp = router(context()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

fn post(path: &str, ctype: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", ctype)
        .body(body.into())
        .unwrap()
}

fn codes(report: &Value) -> Vec<String> {
    report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn validate_reports_what_lint_reports() {
    let bad = POLICY.replace("subset: v1}}]\n", "subset: v9}}]\n");
    let (status, report) = call(post("/api/v1/validate", "application/yaml", bad)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(codes(&report), ["MC0101"], "{report}");
    let d = &report["diagnostics"][0];
    assert_eq!(d["file"], "request.yaml");
    assert_eq!(d["path"], "spec.http[0].route[0].destination.subset");
    assert!(d["line"].as_u64().unwrap() > 30);
    assert_eq!(report["summary"]["errors"], 1);

    let (status, report) = call(post("/api/v1/validate", "application/yaml", POLICY)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(codes(&report).is_empty(), "{report}");
}

#[tokio::test]
async fn validate_takes_a_tar_of_a_repository() {
    let mut tar = tar::Builder::new(Vec::new());
    let (good, bad) = POLICY
        .split_once("---\napiVersion: networking.istio.io/v1\nkind: VirtualService")
        .unwrap();
    let bad = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService{}",
        bad.replace("subset: v1}", "subset: v2}")
    );
    for (path, text) in [
        ("base/services.yaml", good.to_string()),
        ("routes/reviews.yml", bad),
        ("README.md", "# not policy".into()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    let bytes = tar.into_inner().unwrap();
    let (status, report) = call(post("/api/v1/validate", "application/x-tar", bytes)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(codes(&report), ["MC0101"], "{report}");
    assert_eq!(report["diagnostics"][0]["file"], "routes/reviews.yml");
    assert_eq!(report["summary"]["files"], 2);

    let (status, body) = call(post(
        "/api/v1/validate",
        "application/x-tar",
        "not a tar at all, just text",
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn the_openapi_description_names_every_route() {
    let (status, doc) = call(
        Request::get("/api/v1/openapi.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/api/v1/validate",
        "/api/v1/admission",
        "/api/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

fn review(operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": object["kind"]},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "namespace": "shop",
            "operation": operation,
            "object": object,
            "dryRun": true
        }
    })
}

fn virtual_service(name: &str, subset: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]}
    })
}

async fn admit(body: Value) -> (StatusCode, Value) {
    call(post(
        "/api/v1/admission",
        "application/json",
        body.to_string(),
    ))
    .await
}

#[tokio::test]
async fn admission_judges_the_resource_in_the_served_policy() {
    // An update of the served VirtualService naming the existing subset:
    // allowed (it replaces its namesake, so it is no duplicate).
    let (status, r) = admit(review("UPDATE", virtual_service("reviews", "v1"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["response"]["allowed"], true, "{r}");

    // The same update naming a subset no DestinationRule defines: denied,
    // with meshc's message and code.
    let (_, r) = admit(review("UPDATE", virtual_service("reviews", "v9"))).await;
    assert_eq!(r["response"]["allowed"], false, "{r}");
    assert_eq!(r["response"]["status"]["code"], 403);
    let message = r["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("MC0101") && message.contains("v9"),
        "{message}"
    );
    assert!(message.contains("VirtualService shop/reviews"), "{message}");

    // A second mesh VirtualService for the same host conflicts with the
    // served one: denied.
    let (_, r) = admit(review("CREATE", virtual_service("reviews-two", "v1"))).await;
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let message = r["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("MC0203"), "{message}");

    // A warning does not deny; it comes back in `warnings`.
    let mut weighted = virtual_service("reviews", "v1");
    weighted["spec"]["http"][0]["route"][0]["weight"] = json!(50);
    let (_, r) = admit(review("UPDATE", weighted)).await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
    let warnings = r["response"]["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("MC0208")),
        "{r}"
    );

    // Deletes are allowed.
    let (_, r) = admit(review("DELETE", Value::Null)).await;
    assert_eq!(r["response"]["allowed"], true);
}

#[tokio::test]
async fn malformed_reviews_are_refused_with_a_reason() {
    let (status, r) = call(post("/api/v1/admission", "application/json", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(r["error"].as_str().unwrap().contains("invalid JSON"), "{r}");
    let (status, r) =
        admit(json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        r["error"].as_str().unwrap().contains("admission.k8s.io/v1"),
        "{r}"
    );
    let mut no_uid = review("CREATE", virtual_service("x", "v1"));
    no_uid["request"]["uid"] = Value::Null;
    let (status, _) = admit(no_uid).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let big = vec![b'#'; MAX_BODY + 1];
    let resp = router(context())
        .oneshot(post("/api/v1/validate", "application/yaml", big))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
