//! The demo application `meshc up` runs behind each proxy: it answers every
//! request with its service, version and what it received, over HTTP/1.1 and
//! HTTP/2 (gRPC requests get their body back with `grpc-status` trailers).
//!
//! Request headers let a caller make it misbehave, to watch the mesh react:
//! - `x-echo-status: 503`: answer with that status;
//! - `x-echo-fail-version: v1`: answer 503 when this instance is that version;
//! - `x-echo-fail-first: 2` with `x-echo-key: k`: the first 2 requests with
//!   key `k` answer 503, later ones 200 (to see retries succeed);
//! - `x-echo-delay-ms: 300`: wait before answering;
//! - `x-echo-grpc-status: 14`: the gRPC status to end with;
//! - `Connection: upgrade` with `Upgrade: <protocol>` (a WebSocket handshake,
//!   say): answer 101, then echo every byte of the upgraded connection.
//!
//! With `--tcp` it speaks no HTTP: each connection gets one line,
//! `<service> <version>`, and then every byte it sends back (a stand-in for
//! a database or a message broker behind the mesh).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::http::{BoxError, ProxyBody};

/// Who the echo application says it is.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoSettings {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Service name it reports.
    #[arg(long)]
    pub service: String,
    /// Version it reports.
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Speak raw TCP instead of HTTP: a `<service> <version>` line, then an echo.
    #[arg(long)]
    pub tcp: bool,
}

/// A running echo application.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Echo {
    /// Stop it.
    pub fn stop(self) {
        self.task.abort();
    }
}

struct State {
    service: String,
    version: String,
    failures: Mutex<HashMap<String, u32>>,
}

/// Start the echo application.
pub async fn start(settings: EchoSettings) -> Result<Echo> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;
    if settings.tcp {
        let banner = format!("{} {}\n", settings.service, settings.version);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let banner = banner.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let (mut r, mut w) = tcp.into_split();
                    if w.write_all(banner.as_bytes()).await.is_ok() {
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
            }
        });
        return Ok(Echo { addr, task });
    }
    let state = Arc::new(State {
        service: settings.service,
        version: settings.version,
        failures: Mutex::new(HashMap::new()),
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(Echo { addr, task })
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn answer(state: &State, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let h = req.headers().clone();
    // An HTTP/1.1 upgrade (a WebSocket handshake, say): switch, then send
    // back every byte that arrives, until the peer closes.
    if let Some(protocol) = header(&h, "upgrade").map(str::to_string) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        if let Ok(v) = HeaderValue::from_str(&protocol) {
            resp.headers_mut().insert(http::header::UPGRADE, v);
        }
        return resp;
    }
    if let Some(ms) = header(&h, "x-echo-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut status = header(&h, "x-echo-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if header(&h, "x-echo-fail-version") == Some(state.version.as_str()) {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if let (Some(n), Some(key)) = (
        header(&h, "x-echo-fail-first").and_then(|v| v.parse::<u32>().ok()),
        header(&h, "x-echo-key"),
    ) {
        let mut f = state.failures.lock().expect("not poisoned");
        let seen = f.entry(key.to_string()).or_insert(0);
        *seen += 1;
        if *seen <= n {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let method = req.method().to_string();
    let protocol = format!("{:?}", req.version());
    let path = req.uri().to_string();
    let grpc = header(&h, "content-type").is_some_and(|c| c.starts_with("application/grpc"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut resp = if grpc {
        let code = header(&h, "x-echo-grpc-status").unwrap_or("0").to_string();
        let mut trailers = HeaderMap::new();
        trailers.insert(
            "grpc-status",
            HeaderValue::from_str(&code).unwrap_or(HeaderValue::from_static("2")),
        );
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
        let mut r = Response::new(StreamBody::new(tokio_stream::iter(frames)).boxed());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r
    } else {
        let headers: std::collections::BTreeMap<&str, &str> = h
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let text = serde_json::json!({
            "service": state.service,
            "version": state.version,
            "method": method,
            "path": path,
            "protocol": protocol,
            "headers": headers,
            "body_bytes": body.len(),
        })
        .to_string();
        let mut r = Response::new(
            Full::new(Bytes::from(text + "\n"))
                .map_err(|never| match never {})
                .boxed(),
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    *resp.status_mut() = status;
    for (name, v) in [
        ("x-echo-service", &state.service),
        ("x-echo-version", &state.version),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}
