//! The proxy's Prometheus metrics (served as text on the admin port).

use std::hash::Hasher;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::proxy::PerWorker;

/// Label pairs.
pub type Labels = Vec<(&'static str, String)>;

/// The request metrics of one label set (direction, source and destination
/// workload, destination host, route; and the response code for the count),
/// looked up once per request instead of once per metric.
pub struct Handles {
    /// The label values, for checking a cache hit.
    parts: [String; 5],
    code: u16,
    /// The labels without the code.
    pub base: Labels,
    /// Request count (with the code).
    pub requests: Counter,
    /// Duration.
    pub duration: Histogram,
    /// Request body size.
    pub request_bytes: Histogram,
    /// Response body size.
    pub response_bytes: Histogram,
}

const LABELS: [&str; 5] = [
    "direction",
    "source_workload",
    "destination_workload",
    "destination_host",
    "route",
];

/// Every metric the proxy exports, prefixed `meshc_proxy_`.
pub struct Metrics {
    registry: Registry,
    /// Requests by direction, source and destination workload, destination
    /// host, route and response code.
    pub requests: Family<Labels, Counter>,
    /// Request durations in seconds, same labels but the code.
    pub duration: Family<Labels, Histogram>,
    /// Request body bytes.
    pub request_bytes: Family<Labels, Histogram>,
    /// Response body bytes.
    pub response_bytes: Family<Labels, Histogram>,
    /// gRPC responses by `grpc-status`.
    pub grpc: Family<Labels, Counter>,
    /// TCP connections accepted, by direction and worker thread.
    pub connections: Family<Labels, Counter>,
    /// TCP connections open, by direction.
    pub open_connections: Family<Labels, Gauge>,
    /// Connections refused by the inbound mTLS mode, by reason.
    pub refused: Family<Labels, Counter>,
    /// Requests refused because a connection pool was full (503, flag UO).
    pub overflows: Family<Labels, Counter>,
    /// Retries, by destination host.
    pub retries: Family<Labels, Counter>,
    /// Endpoints ejected by outlier detection, by destination host.
    pub ejections: Family<Labels, Counter>,
    /// Mirrored requests sent, by mirror host.
    pub mirrors: Family<Labels, Counter>,
    /// Requests and TCP connections denied by authorization, by deciding policy.
    pub denied: Family<Labels, Counter>,
    /// Opaque TCP streams proxied, by direction, destination, route and
    /// outcome (`ok`, `denied`, `no_route`, `overflow`, `connect_failed`...).
    pub tcp_streams: Family<Labels, Counter>,
    /// Bytes of opaque TCP streams, by direction, destination and flow
    /// (`sent` from the connecting side, `received` back).
    pub tcp_bytes: Family<Labels, Counter>,
    /// The config in force: 1 for its version.
    pub config: Family<Labels, Gauge>,
    /// Configs applied.
    pub config_updates: Counter,
    /// [`Handles`] by a hash of their labels, one cache per worker thread.
    cache: PerWorker<std::sync::Mutex<rustc_hash::FxHashMap<u64, std::sync::Arc<Handles>>>>,
}

fn size_buckets() -> Histogram {
    Histogram::new(exponential_buckets(64.0, 4.0, 10))
}

fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(1)
    }
}

impl Metrics {
    /// The metrics of a proxy with `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        let mut registry = Registry::with_prefix("meshc_proxy");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_buckets),
            request_bytes: Family::new_with_constructor(size_buckets),
            response_bytes: Family::new_with_constructor(size_buckets),
            grpc: Family::default(),
            connections: Family::default(),
            open_connections: Family::default(),
            refused: Family::default(),
            overflows: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            mirrors: Family::default(),
            denied: Family::default(),
            tcp_streams: Family::default(),
            tcp_bytes: Family::default(),
            config: Family::default(),
            config_updates: Counter::default(),
            cache: PerWorker::new(workers, Default::default),
        };
        let r = &mut registry;
        r.register("requests", "HTTP requests", m.requests.clone());
        r.register(
            "request_duration_seconds",
            "HTTP request duration",
            m.duration.clone(),
        );
        r.register(
            "request_size_bytes",
            "HTTP request body size",
            m.request_bytes.clone(),
        );
        r.register(
            "response_size_bytes",
            "HTTP response body size",
            m.response_bytes.clone(),
        );
        r.register(
            "grpc_responses",
            "gRPC responses by grpc-status",
            m.grpc.clone(),
        );
        r.register(
            "tcp_connections",
            "TCP connections accepted, by direction and worker thread",
            m.connections.clone(),
        );
        r.register(
            "tcp_connections_open",
            "TCP connections open",
            m.open_connections.clone(),
        );
        r.register(
            "tcp_connections_refused",
            "Inbound connections refused by the mTLS mode",
            m.refused.clone(),
        );
        r.register(
            "circuit_breaker_overflows",
            "Requests refused because a connection pool was full",
            m.overflows.clone(),
        );
        r.register("retries", "Retried upstream requests", m.retries.clone());
        r.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection",
            m.ejections.clone(),
        );
        r.register(
            "mirrored_requests",
            "Mirrored requests sent",
            m.mirrors.clone(),
        );
        r.register(
            "authz_denied",
            "Requests denied by authorization",
            m.denied.clone(),
        );
        r.register(
            "tcp_streams",
            "Opaque TCP streams proxied, by outcome",
            m.tcp_streams.clone(),
        );
        r.register(
            "tcp_stream_bytes",
            "Bytes of opaque TCP streams",
            m.tcp_bytes.clone(),
        );
        r.register(
            "config_info",
            "The config version in force",
            m.config.clone(),
        );
        r.register(
            "config_updates",
            "Configs applied",
            m.config_updates.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Count a connection accepted in `direction` by worker thread
    /// `worker`; the gauge of its direction's open connections, raised.
    pub fn accepted(&self, direction: &str, worker: usize) -> Gauge {
        self.connections
            .get_or_create(&vec![
                ("direction", direction.to_string()),
                ("worker", worker.to_string()),
            ])
            .inc();
        let open = self
            .open_connections
            .get_or_create(&vec![("direction", direction.to_string())])
            .clone();
        open.inc();
        open
    }

    /// The request metrics for these label values and response code.
    pub fn handles(&self, parts: [&str; 5], code: u16) -> std::sync::Arc<Handles> {
        // FxHash: a few dozen bytes, hashed once per request, a word at a time.
        let mut hasher = rustc_hash::FxHasher::default();
        for p in parts {
            hasher.write(p.as_bytes());
            hasher.write_u8(0xff);
        }
        hasher.write_u16(code);
        let key = hasher.finish();
        let mut cache = self.cache.get().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = cache.get(&key)
            && h.code == code
            && h.parts.iter().zip(parts).all(|(a, b)| a == b)
        {
            return h.clone();
        }
        let base: Labels = LABELS
            .iter()
            .zip(parts)
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        let mut with_code = base.clone();
        with_code.push(("response_code", code.to_string()));
        let h = std::sync::Arc::new(Handles {
            parts: parts.map(str::to_string),
            code,
            requests: self.requests.get_or_create(&with_code).clone(),
            duration: self.duration.get_or_create(&base).clone(),
            request_bytes: self.request_bytes.get_or_create(&base).clone(),
            response_bytes: self.response_bytes.get_or_create(&base).clone(),
            base,
        });
        cache.insert(key, h.clone());
        h
    }

    /// Count a denial under its deciding policy and rule (`namespace/name[i]`),
    /// or under "no ALLOW policy matched".
    pub fn count_denied(&self, policy: Option<(String, usize)>) {
        let policy = policy.map_or_else(
            || "no ALLOW policy matched".to_string(),
            |(p, i)| format!("{p}[{i}]"),
        );
        self.denied.get_or_create(&vec![("policy", policy)]).inc();
    }

    /// Prometheus text format.
    pub fn text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
