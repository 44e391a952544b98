//! The control plane's JSON HTTP API, push webhooks and Prometheus metrics.
//!
//! Reads need nothing; `POST` actions need `Authorization: Bearer <token>`
//! and are logged with who asked. Webhooks are verified: GitHub's
//! `X-Hub-Signature-256` (HMAC-SHA256 of the body); GitLab's signed
//! `webhook-signature` (the Standard Webhooks scheme GitLab's signing tokens
//! use: HMAC-SHA256 of id, timestamp and body, with a replay window) or, from
//! GitLab without a signing token, `X-Gitlab-Token` (the shared secret). Every
//! comparison is in constant time.

// Handlers return early with a ready `Response`, as axum code does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::control::{Control, SyncState};
use crate::distribution::constant_time_eq;
use crate::store::Version;

/// What the handlers share.
pub struct Api {
    /// The control plane.
    pub control: Arc<Control>,
    /// Token for `POST` actions (none: actions are refused).
    pub token: Option<String>,
    /// Webhook secret (none: webhooks are refused).
    pub webhook_secret: Option<String>,
    /// The branch followed (webhooks for other refs are ignored).
    pub branch: String,
}

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/versions", get(versions))
        .route("/api/v1/versions/{id}", get(version))
        .route("/api/v1/proxies", get(proxies))
        .route("/api/v1/drift", get(drift))
        .route("/api/v1/events", get(events))
        .route("/api/v1/sync", post(sync))
        .route("/api/v1/rollback", post(rollback))
        .route("/api/v1/unpin", post(unpin))
        .route("/api/v1/webhooks/github", post(github))
        .route("/api/v1/webhooks/gitlab", post(gitlab))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(api)
}

type Shared = State<Arc<Api>>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("{e}");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn summary(v: &Version) -> Value {
    json!({
        "id": v.id, "commit": v.commit, "branch": v.branch, "author": v.author,
        "email": v.email, "message": v.message, "committed_at": v.committed_at,
        "recorded_at": v.recorded_at, "verdict": v.verdict, "reason": v.reason,
        "ir_hash": v.ir_hash, "errors": v.errors, "warnings": v.warnings,
    })
}

fn served(control: &Control) -> Value {
    match control.current() {
        Some(s) => json!({
            "id": s.version.id, "commit": s.version.commit, "ir_hash": s.version.ir_hash,
            "pin": s.pin,
        }),
        None => Value::Null,
    }
}

async fn versions(State(api): Shared) -> Response {
    match api.control.store.versions(1000) {
        Ok(vs) => Json(json!({
            "served": served(&api.control),
            "versions": vs.iter().map(summary).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn version(State(api): Shared, Path(id): Path<String>) -> Response {
    let v = match api.control.store.find(&id) {
        Ok(Some(v)) => v,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no version `{id}`")),
        Err(e) => return internal(e),
    };
    let ir = match v.ir_hash.as_deref().map(|h| api.control.store.ir(h)) {
        Some(Ok(Some(bytes))) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Some(Err(e)) => return internal(e),
        _ => Value::Null,
    };
    let changes = match api.control.store.changes(v.id) {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut body = summary(&v);
    body["diagnostics"] = v.diagnostics;
    body["ir"] = ir;
    // The semantic changes against the accepted version before it, for
    // accepted versions recorded since meshc keeps them.
    if let Some(changes) = changes {
        body["changes"] = json!(changes);
    }
    Json(body).into_response()
}

async fn proxies(State(api): Shared) -> Response {
    Json(json!({ "proxies": api.control.proxies() })).into_response()
}

async fn drift(State(api): Shared) -> Response {
    let all = api.control.proxies();
    let connected: Vec<_> = all.iter().filter(|p| p.connected).collect();
    let count = |s: SyncState| connected.iter().filter(|p| p.state == s).count();
    let drifted: Vec<_> = connected.iter().filter(|p| p.drifted()).collect();
    Json(json!({
        "served": served(&api.control),
        "summary": {
            "connected": connected.len(),
            "synced": count(SyncState::Synced),
            "stale": count(SyncState::Stale),
            "not_sent": count(SyncState::NotSent),
            "error": count(SyncState::Error),
            "drifted": drifted.len(),
        },
        "drifted": drifted,
    }))
    .into_response()
}

async fn events(State(api): Shared) -> Response {
    match api.control.store.events(200) {
        Ok(e) => Json(json!({ "events": e })).into_response(),
        Err(e) => internal(e),
    }
}

/// The bearer token check for actions.
fn authorized(api: &Api, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &api.token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "actions are disabled: no API token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        ))
    }
}

async fn sync(State(api): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    tracing::info!("sync requested through the API");
    api.control.sync_now.notify_one();
    (StatusCode::ACCEPTED, Json(json!({"sync": "requested"}))).into_response()
}

#[derive(Deserialize)]
struct RollbackBody {
    /// Version id, commit or IR hash.
    version: String,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct UnpinBody {
    #[serde(default)]
    by: Option<String>,
}

async fn rollback(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    let b: RollbackBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"version\", \"by\", \"reason\"}}: {e}"),
            );
        }
    };
    let by = b.by.unwrap_or_else(|| "api".to_string());
    let reason = b.reason.unwrap_or_default();
    match api.control.rollback(&b.version, &by, &reason) {
        Ok(v) => Json(json!({"pinned": summary(&v), "by": by, "reason": reason})).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn unpin(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&api, &headers) {
        return r;
    }
    let b: UnpinBody = serde_json::from_slice(&body).unwrap_or_default();
    let by = b.by.unwrap_or_else(|| "api".to_string());
    match api.control.unpin(&by) {
        Ok(had) => Json(json!({"unpinned": had, "served": served(&api.control)})).into_response(),
        Err(e) => internal(e),
    }
}

/// Whether a push payload is for the followed branch.
fn for_branch(api: &Api, body: &[u8]) -> Result<bool, Response> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("payload is not JSON: {e}")))?;
    Ok(v.get("ref").and_then(Value::as_str) == Some(&format!("refs/heads/{}", api.branch)))
}

fn trigger(api: &Api, body: &[u8], from: &str) -> Response {
    match for_branch(api, body) {
        Ok(true) => {
            tracing::info!("{from} push webhook: fetching now");
            api.control.sync_now.notify_one();
            (StatusCode::ACCEPTED, Json(json!({"sync": "requested"}))).into_response()
        }
        Ok(false) => Json(json!({"sync": "ignored: another ref"})).into_response(),
        Err(r) => r,
    }
}

/// The webhook secret, or the refusal when none is configured.
fn webhook_secret(api: &Api) -> Result<&str, Response> {
    api.webhook_secret.as_deref().ok_or_else(|| {
        error(
            StatusCode::FORBIDDEN,
            "webhooks are disabled: no secret is configured",
        )
    })
}

async fn github(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let secret = match webhook_secret(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(hex_decode);
    let Some(signature) = signature else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or malformed X-Hub-Signature-256",
        );
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        tracing::warn!("GitHub webhook with a bad signature");
        return error(StatusCode::UNAUTHORIZED, "bad signature");
    }
    match headers.get("x-github-event").and_then(|v| v.to_str().ok()) {
        Some("ping") => Json(json!({"pong": true})).into_response(),
        _ => trigger(&api, &body, "GitHub"),
    }
}

async fn gitlab(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let secret = match webhook_secret(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if headers.contains_key("webhook-signature") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return match standard_webhook(secret, &headers, &body, now) {
            Ok(()) => trigger(&api, &body, "GitLab"),
            Err(why) => {
                tracing::warn!("GitLab webhook refused: {why}");
                error(StatusCode::UNAUTHORIZED, why)
            }
        };
    }
    let token = headers
        .get("x-gitlab-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(token.as_bytes(), secret.as_bytes()) {
        tracing::warn!("GitLab webhook with a bad token");
        return error(StatusCode::UNAUTHORIZED, "bad X-Gitlab-Token");
    }
    trigger(&api, &body, "GitLab")
}

/// How far a signed webhook's timestamp may be from now, in seconds (the
/// Standard Webhooks recommendation); older deliveries are replays.
const SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// Verify a Standard Webhooks signature (what GitLab sends for a webhook with
/// a signing token): `webhook-signature` holds space-separated `v1,<base64>`
/// HMAC-SHA256 digests of `{webhook-id}.{webhook-timestamp}.{body}`. The key
/// is the secret's base64 part when it has the `whsec_` form GitLab issues,
/// otherwise the secret's bytes.
fn standard_webhook(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(), &'static str> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return Err("a signed webhook needs webhook-id, webhook-timestamp and webhook-signature");
    };
    let Ok(sent) = timestamp.trim().parse::<u64>() else {
        return Err("webhook-timestamp is not a number of seconds");
    };
    if sent.abs_diff(now) > SIGNATURE_TOLERANCE_SECS {
        return Err("webhook-timestamp is more than five minutes from now (a replay?)");
    }
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD
            .decode(encoded)
            .map_err(|_| "the configured whsec_ secret is not base64")?,
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let matches = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .any(|given| constant_time_eq(&given, &expected));
    if matches {
        Ok(())
    } else {
        Err("bad webhook-signature")
    }
}

async fn metrics(State(api): Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.control.metrics_text(),
    )
        .into_response()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const AT: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, at: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", at.parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    #[test]
    fn standard_webhook_signatures() {
        let at = AT.to_string();
        let good = headers(ID, &at, SIGNATURE);
        assert_eq!(standard_webhook(SECRET, &good, BODY, AT + 10), Ok(()));
        // One of several space-separated signatures is enough (key rotation).
        let rotated = headers(ID, &at, &format!("v1,AAAA {SIGNATURE}"));
        assert_eq!(standard_webhook(SECRET, &rotated, BODY, AT), Ok(()));
        // A changed body, id or key fails.
        assert!(standard_webhook(SECRET, &good, br#"{"test": 1}"#, AT).is_err());
        assert!(standard_webhook(SECRET, &headers("msg_other", &at, SIGNATURE), BODY, AT).is_err());
        assert!(standard_webhook("whsec_AAAA", &good, BODY, AT).is_err());
        // The plain secret is a different key from its whsec_ form.
        assert!(standard_webhook("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &good, BODY, AT).is_err());
        // Replays outside five minutes are refused, in either direction.
        assert!(standard_webhook(SECRET, &good, BODY, AT + 301).is_err());
        assert!(standard_webhook(SECRET, &good, BODY, AT - 301).is_err());
        // Other versions and missing headers.
        let v2 = headers(ID, &at, &SIGNATURE.replace("v1,", "v2,"));
        assert!(standard_webhook(SECRET, &v2, BODY, AT).is_err());
        let mut partial = good.clone();
        partial.remove("webhook-id");
        assert!(standard_webhook(SECRET, &partial, BODY, AT).is_err());
    }
}
