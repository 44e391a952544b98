//! Validation over HTTP: `POST /api/v1/validate` (YAML documents or a tar of
//! a repository, answered with `meshc lint --format json`'s report), the
//! Kubernetes admission webhook (`POST /api/v1/admission`, AdmissionReview
//! `admission.k8s.io/v1`), and the OpenAPI description of both
//! (`GET /api/v1/openapi.json`).
//!
//! The webhook judges an incoming Istio resource in the context of a policy
//! (the control plane's current accepted version): the resource replaces its
//! namesake there, the whole is analysed, and the resource's own findings
//! decide. Errors deny (with meshc's messages), warnings are returned as
//! admission warnings. Nothing is written anywhere, so dry runs are safe.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshc_compiler::diagnostic::Severity;
use meshc_compiler::model::Kind;
use meshc_compiler::{Input, Options, analyze};
use serde_json::{Value, json};

use crate::json::{JsonDiagnostic, report};

/// The largest request body accepted (Kubernetes caps objects at 1.5 MiB;
/// a repository tar may be larger).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where a document is: (input, start byte, end byte).
type Place = (usize, usize, usize);

/// The policy admission requests are judged against (the version being
/// served), analysed once when it is prepared: each request then analyses
/// only once, with the incoming resource in place of its namesake.
pub struct Policy {
    inputs: Vec<Input>,
    options: Options,
    /// Where each resource's document is: (kind, namespace, name) to
    /// (input, byte range).
    places: std::collections::HashMap<(Kind, String, String), Vec<Place>>,
}

impl Policy {
    /// Prepare `inputs` with `options`.
    pub fn new(inputs: Vec<Input>, options: Options) -> Policy {
        let analysis = analyze(inputs.clone(), &options);
        let mut places: std::collections::HashMap<_, Vec<_>> = Default::default();
        for r in &analysis.resources {
            // Files are numbered in input order.
            let i = r.file.0 as usize;
            places
                .entry((r.kind, r.namespace.clone(), r.name.clone()))
                .or_default()
                .push((i, r.span.start as usize, r.span.end as usize));
        }
        Policy {
            inputs,
            options,
            places,
        }
    }

    /// The inputs with the document defining `kind namespace/name` blanked
    /// out (an update replaces it), every other line where it was.
    fn without(&self, kind: Option<Kind>, namespace: &str, name: &str) -> Vec<Input> {
        let mut inputs = self.inputs.clone();
        let Some(kind) = kind else { return inputs };
        let key = (kind, namespace.to_string(), name.to_string());
        for &(i, start, end) in self.places.get(&key).into_iter().flatten() {
            if let Ok(bytes) = &mut inputs[i].content
                && end <= bytes.len()
            {
                for b in &mut bytes[start..end] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
            }
        }
        inputs
    }
}

/// The policy being served, if any (none: the resource is judged alone).
pub type Context = Arc<dyn Fn() -> Option<Arc<Policy>> + Send + Sync>;

/// The validation routes, over `context`.
pub fn router(context: Context) -> Router {
    Router::new()
        .route("/api/v1/validate", post(validate))
        .route("/api/v1/admission", post(admission))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(context)
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

fn problem(status: StatusCode, message: String) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// The inputs of a request body: a tar's `.yaml`/`.yml` files, or the body
/// as one YAML stream.
pub fn inputs_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Input>, String> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/x-tar") {
        return Ok(vec![Input::bytes("request.yaml", body.to_vec())]);
    }
    let mut inputs = Vec::new();
    let mut archive = tar::Archive::new(body);
    for entry in archive
        .entries()
        .map_err(|e| format!("reading the tar: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("reading the tar: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| format!("a tar entry's path: {e}"))?
            .to_string_lossy()
            .into_owned();
        if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .map_err(|e| format!("reading {path} from the tar: {e}"))?;
        inputs.push(Input::bytes(path, bytes));
    }
    if inputs.is_empty() {
        return Err("the tar holds no .yaml or .yml file".into());
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inputs)
}

async fn validate(headers: HeaderMap, body: Bytes) -> Response {
    let inputs = match inputs_of(&headers, &body) {
        Ok(i) => i,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    // Analysis is CPU work: off the async threads.
    let analysis = tokio::task::spawn_blocking(move || analyze(inputs, &Options::default())).await;
    match analysis {
        Ok(a) => json_response(StatusCode::OK, &report(&a)),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// The path the admitted object gets in diagnostics.
const ADMITTED: &str = "admission-request.yaml";

/// Judge an admission request. Returns the AdmissionReview response; a
/// malformed review is an `Err` (answered 400).
pub fn review(review: &Value, context: Option<&Policy>) -> Result<Value, String> {
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err("expected an admission.k8s.io/v1 AdmissionReview".into());
    }
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or("request.uid is missing")?
        .to_string();
    let answer = |allowed: bool, message: Option<String>, warnings: Vec<String>| {
        let mut response = json!({ "uid": uid, "allowed": allowed });
        if let Some(m) = message {
            response["status"] = json!({
                "code": if allowed { 200 } else { 403 },
                "message": m,
            });
        }
        if !warnings.is_empty() {
            response["warnings"] = json!(warnings);
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
    };
    let operation = request["operation"].as_str().unwrap_or("");
    if operation == "DELETE" || operation == "CONNECT" {
        return Ok(answer(true, None, Vec::new()));
    }
    let mut object = request["object"].clone();
    if !object.is_object() {
        return Err("request.object is missing".into());
    }
    // The namespace comes from the request when the object omits it.
    if object["metadata"]["namespace"].is_null()
        && let Some(ns) = request["namespace"].as_str()
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("namespace".into(), Value::String(ns.to_string()));
    }
    // The kind as meshc models it (`Gateway` is two kinds, told apart by group).
    let group = object["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    let kind = Kind::lookup(group, object["kind"].as_str().unwrap_or(""));
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    // JSON is YAML: the object is analysed as it came.
    let text = serde_json::to_string_pretty(&object).map_err(|e| e.to_string())?;
    let (mut inputs, options) = match context {
        Some(p) => (p.without(kind, &namespace, &name), p.options.clone()),
        None => (Vec::new(), Options::default()),
    };
    inputs.push(Input::new(ADMITTED, text));
    let analysis = analyze(inputs, &options);
    let mine: Vec<JsonDiagnostic> = report(&analysis)
        .diagnostics
        .into_iter()
        .filter(|d| d.file == ADMITTED)
        .collect();
    let line = |d: &JsonDiagnostic| {
        let path = d
            .path
            .as_deref()
            .map(|p| format!(" at {p}"))
            .unwrap_or_default();
        format!("{} {}{}", d.code, d.message, path)
    };
    let errors: Vec<String> = mine
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(line)
        .collect();
    let warnings: Vec<String> = mine
        .iter()
        .filter(|d| d.severity != Severity::Error)
        .map(line)
        .collect();
    if errors.is_empty() {
        Ok(answer(true, None, warnings))
    } else {
        Ok(answer(
            false,
            Some(format!(
                "meshc: {} {namespace}/{name} is refused: {}",
                object["kind"].as_str().unwrap_or(""),
                errors.join("; ")
            )),
            warnings,
        ))
    }
}

async fn admission(State(context): State<Context>, body: Bytes) -> Response {
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview (invalid JSON: {e})"),
            );
        }
    };
    let outcome = tokio::task::spawn_blocking(move || review(&parsed, context().as_deref())).await;
    match outcome {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => problem(StatusCode::BAD_REQUEST, e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
