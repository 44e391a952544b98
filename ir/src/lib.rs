//! meshc's IR: the contract between the control plane and the data plane.
//!
//! The IR is mesh-neutral, typed and normalized: every default is explicit,
//! weights sum to 100, hosts are fully qualified, matches are compiled. It is
//! deterministic (built only from ordered maps and lists whose order means
//! something) and content-addressed: [`Ir::hash`] is the SHA-256 of
//! [`Ir::encode`], the canonical encoding (compact JSON with fields in
//! declaration order and map keys sorted). That encoding is also the wire
//! encoding: a proxy can check the hash of what it received.
//!
//! - outbound, per host ([`HostPolicy`]): ordered HTTP, TCP and TLS route rules
//!   and the destination traffic policy (with subsets and port-level
//!   overrides);
//! - inbound, per workload ([`WorkloadPolicy`]): the SPIFFE identity, the
//!   effective mTLS mode per port, and authorization in CUSTOM, DENY, ALLOW
//!   order;
//! - ingress, per gateway ([`GatewayPolicy`]): servers and the routes bound to
//!   them.
//!
//! [`eval::route`] and [`eval::authorize`] are the one evaluator: `meshc test`
//! and the proxy both call them. [`Ir::scope`] gives a proxy its view;
//! [`diff::diff`] compares two versions semantically.
//!
//! This crate parses no YAML and does no I/O.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod diff;
pub mod eval;
pub mod resources;

/// The distribution protocol (`proto/meshc/distribution/v1`): messages and the
/// tonic service, generated at build time.
#[cfg(feature = "grpc")]
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("meshc.distribution.v1");
}
mod map;
mod matcher;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use map::Map;
pub use matcher::{Regex, StrMatch};

/// Version of the IR's schema; part of the hash.
pub const SCHEMA_VERSION: u32 = 1;

/// Percentages are kept as integers in millionths of a request (1% = 10,000),
/// so the encoding has no floats.
pub const PER_MILLION: u32 = 1_000_000;

/// The whole compiled policy of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ir {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Mesh-wide facts.
    pub mesh: Mesh,
    /// Outbound policy by fully qualified host (a Service FQDN, a ServiceEntry
    /// host, or a VirtualService host such as `*.example.com`).
    pub hosts: BTreeMap<String, HostPolicy>,
    /// Inbound policy by workload `namespace/name`.
    pub workloads: BTreeMap<String, WorkloadPolicy>,
    /// Ingress by gateway `namespace/name`.
    pub gateways: BTreeMap<String, GatewayPolicy>,
}

/// Mesh-wide facts the evaluator needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    /// Trust domain of workload identities.
    pub trust_domain: String,
    /// Cluster DNS domain (`cluster.local`), to qualify short names.
    pub cluster_domain: String,
    /// Root namespace of mesh-wide policy.
    pub root_namespace: String,
}

/// Where a piece of IR came from: `Kind namespace/name` and a YAML path.
/// File names are deliberately absent: renaming a file changes nothing.
pub type Origin = String;

/// Outbound policy for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPolicy {
    /// Namespace that declares the host (for visibility).
    pub namespace: String,
    /// Namespaces that may see it; `["*"]` means every namespace.
    pub export_to: Vec<String>,
    /// Declared ports and their protocols (`HTTP`, `GRPC`, `TCP`, ...).
    pub ports: BTreeMap<u16, String>,
    /// HTTP route rules in evaluation order. Empty: the default route.
    pub http: Vec<HttpRule>,
    /// TCP route rules in order.
    pub tcp: Vec<L4Rule>,
    /// TLS (SNI) route rules in order.
    pub tls: Vec<L4Rule>,
    /// Traffic policy towards this host.
    pub traffic_policy: TrafficPolicy,
    /// Subsets by name.
    pub subsets: BTreeMap<String, SubsetPolicy>,
    /// Workloads behind the host (`namespace/name`), from the Service's selector.
    pub endpoints: Vec<String>,
    /// Resources that shaped this host.
    pub origins: Vec<Origin>,
}

/// A named subset of a host's workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetPolicy {
    /// Labels a workload must carry.
    pub labels: Map<String, String>,
    /// The host's policy with the subset's overrides merged in.
    pub traffic_policy: TrafficPolicy,
    /// Workloads (`namespace/name`) it selects.
    pub endpoints: Vec<String>,
}

/// One HTTP route rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// The rule's name, or `<virtualservice>[<index>]` when it has none.
    pub name: String,
    /// Where it is defined.
    pub origin: Origin,
    /// Alternatives: the rule applies when any matches. Empty: every request.
    pub matches: Vec<HttpMatch>,
    /// What happens to a matching request.
    pub action: HttpAction,
    /// URI and authority rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Header operations on the request.
    pub request_headers: HeaderOps,
    /// Header operations on the response.
    pub response_headers: HeaderOps,
    /// Retry policy (Istio's default when the rule sets none).
    pub retries: Retries,
    /// Overall timeout in milliseconds; `None`: no timeout.
    pub timeout_ms: Option<u64>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Traffic mirrors.
    pub mirrors: Vec<Mirror>,
    /// CORS policy.
    pub cors: Option<Cors>,
}

/// One HTTP match: every attribute given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// Name of the match, if any.
    pub name: Option<String>,
    /// Path (without query) match.
    pub uri: Option<StrMatch>,
    /// Compare the path case-insensitively.
    pub ignore_uri_case: bool,
    /// `http`/`https`.
    pub scheme: Option<StrMatch>,
    /// HTTP method.
    pub method: Option<StrMatch>,
    /// Authority (host header).
    pub authority: Option<StrMatch>,
    /// Request headers (names lower-case) that must match.
    pub headers: Map<String, StrMatch>,
    /// Request headers that must not match.
    pub without_headers: Map<String, StrMatch>,
    /// Query parameters.
    pub query_params: Map<String, StrMatch>,
    /// Destination port.
    pub port: Option<u16>,
    /// Labels the calling workload must carry.
    pub source_labels: Map<String, String>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<String>,
}

/// What a rule does with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAction {
    /// Forward to weighted destinations (weights sum to 100).
    Route(Vec<WeightedDestination>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body.
        body: Option<String>,
    },
}

/// A destination with its share of traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedDestination {
    /// Fully qualified host.
    pub host: String,
    /// Subset name.
    pub subset: Option<String>,
    /// Port, when the route names one.
    pub port: Option<u16>,
    /// Percentage of traffic, 0–100; a rule's weights sum to 100.
    pub weight: u32,
    /// The subset's workload labels (empty without a subset).
    pub labels: Map<String, String>,
    /// Header operations for this destination.
    pub request_headers: HeaderOps,
    /// Response header operations for this destination.
    pub response_headers: HeaderOps,
}

/// Header operations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Overwrite.
    pub set: Map<String, String>,
    /// Append.
    pub add: Map<String, String>,
    /// Remove.
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// Whether it does nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Replacement path.
    pub uri: Option<String>,
    /// Replacement authority.
    pub authority: Option<String>,
    /// Replacement port.
    pub port: Option<u16>,
    /// Replacement scheme.
    pub scheme: Option<String>,
    /// Status code (301 by default).
    pub code: u16,
}

/// A rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replace the matched prefix (or the whole path for an exact match).
    pub uri: Option<String>,
    /// Replace the authority.
    pub authority: Option<String>,
    /// Regex rewrite: pattern and substitution.
    pub uri_regex: Option<(Regex, String)>,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first try (0: none).
    pub attempts: u32,
    /// Timeout per try in milliseconds.
    pub per_try_timeout_ms: Option<u64>,
    /// Conditions, as Envoy names them (`5xx`, `connect-failure`, `503`...).
    pub retry_on: Vec<String>,
}

impl Retries {
    /// Istio's default: 2 retries on connection failures, refused streams and
    /// `unavailable`/`cancelled`/`503`.
    pub fn istio_default() -> Self {
        Retries {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "503",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Fault injection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Delay: milliseconds and share of requests in millionths.
    pub delay: Option<(u64, u32)>,
    /// Abort: HTTP status and share of requests in millionths.
    pub abort: Option<(u16, u32)>,
}

/// A mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Fully qualified host.
    pub host: String,
    /// Subset.
    pub subset: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Share of requests mirrored, in millionths.
    pub percentage: u32,
}

/// CORS policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins.
    pub allow_origins: Vec<StrMatch>,
    /// Allowed methods.
    pub allow_methods: Vec<String>,
    /// Allowed headers.
    pub allow_headers: Vec<String>,
    /// Exposed headers.
    pub expose_headers: Vec<String>,
    /// Max age in seconds.
    pub max_age_s: Option<u64>,
    /// Allow credentials.
    pub allow_credentials: bool,
}

/// A TCP or TLS route rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L4Rule {
    /// `<virtualservice>.tcp[<i>]` or `.tls[<i>]`.
    pub name: String,
    /// Where it is defined.
    pub origin: Origin,
    /// Alternatives; empty: every connection.
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub destinations: Vec<WeightedDestination>,
}

/// A TCP/TLS match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L4Match {
    /// Destination port.
    pub port: Option<u16>,
    /// SNI hosts (TLS only), possibly `*.suffix`.
    pub sni_hosts: Vec<String>,
    /// Destination subnets.
    pub destination_subnets: Vec<String>,
    /// Labels of the calling workload.
    pub source_labels: Map<String, String>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<String>,
}

/// Client-side traffic policy towards a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: LoadBalancer,
    /// Connection-pool limits.
    pub connection_pool: ConnectionPool,
    /// Outlier detection; `None`: off.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS mode the client uses.
    pub tls: TlsMode,
    /// Overrides by port (already merged with the above).
    pub ports: BTreeMap<u16, PortPolicy>,
}

impl HostPolicy {
    /// A host of `namespace` visible everywhere (`exportTo: *`), with no
    /// ports, routes, subsets or endpoints yet, under `traffic_policy`.
    pub fn new(namespace: &str, traffic_policy: TrafficPolicy) -> HostPolicy {
        HostPolicy {
            namespace: namespace.to_string(),
            export_to: vec!["*".into()],
            ports: BTreeMap::new(),
            http: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            traffic_policy,
            subsets: BTreeMap::new(),
            endpoints: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// The traffic policy and the workloads of `subset` (the host's own for
    /// none, or for a subset the host does not define).
    pub fn target(&self, subset: Option<&str>) -> (&TrafficPolicy, &[String]) {
        match subset.and_then(|s| self.subsets.get(s)) {
            Some(s) => (&s.traffic_policy, &s.endpoints),
            None => (&self.traffic_policy, &self.endpoints),
        }
    }
}

impl TrafficPolicy {
    /// A policy with `settings` on every port but `ports`.
    pub fn new(settings: PortPolicy, ports: BTreeMap<u16, PortPolicy>) -> Self {
        TrafficPolicy {
            load_balancer: settings.load_balancer,
            connection_pool: settings.connection_pool,
            outlier_detection: settings.outlier_detection,
            tls: settings.tls,
            ports,
        }
    }
    /// The settings in force on `port` (its override, else the host's).
    pub fn for_port(&self, port: Option<u16>) -> PortPolicy {
        match port.and_then(|p| self.ports.get(&p)) {
            Some(p) => p.clone(),
            None => PortPolicy {
                load_balancer: self.load_balancer.clone(),
                connection_pool: self.connection_pool.clone(),
                outlier_detection: self.outlier_detection.clone(),
                tls: self.tls,
            },
        }
    }
}

/// A port-level override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPolicy {
    /// Load balancing.
    pub load_balancer: LoadBalancer,
    /// Connection-pool limits.
    pub connection_pool: ConnectionPool,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS mode.
    pub tls: TlsMode,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadBalancer {
    /// Round robin.
    RoundRobin,
    /// Least request (power of two choices); Istio's default.
    LeastRequest,
    /// Random.
    Random,
    /// Connect to the address the caller asked for.
    Passthrough,
    /// Consistent hash on a header, cookie, query parameter or source IP.
    ConsistentHash(HashKey),
}

/// What a consistent hash is computed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    QueryParameter(String),
    /// The caller's IP.
    SourceIp,
}

/// Connection-pool limits (Istio's defaults: effectively unlimited, 10 s connect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPool {
    /// Max TCP connections.
    pub max_connections: u32,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Max pending HTTP requests.
    pub http1_max_pending_requests: u32,
    /// Max concurrent HTTP requests.
    pub http2_max_requests: u32,
    /// Max requests per connection (0: unlimited).
    pub max_requests_per_connection: u32,
    /// Max concurrent retries.
    pub max_retries: u32,
    /// Whether HTTP/1.1 requests ride HTTP/2 between proxies (over mTLS):
    /// `h2UpgradePolicy: UPGRADE`; `false` for `DO_NOT_UPGRADE` and by
    /// default (Istio's mesh-wide default). Written only when `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2_upgrade: bool,
    /// How long an upstream HTTP connection may stay idle (no request on
    /// it) before it is closed, in milliseconds (`http.idleTimeout`); `0`:
    /// never (Envoy's reading of `0s`). `None`: the data plane's default.
    /// Written only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// How long a proxied TCP connection may carry no bytes either way
    /// before it is closed, in milliseconds (`tcp.idleTimeout`); `0`:
    /// never. `None`: the data plane's default (an hour, Istio's). Written
    /// only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_idle_timeout_ms: Option<u64>,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections: u32::MAX,
            connect_timeout_ms: 10_000,
            http1_max_pending_requests: u32::MAX,
            http2_max_requests: u32::MAX,
            max_requests_per_connection: 0,
            max_retries: u32::MAX,
            h2_upgrade: false,
            idle_timeout_ms: None,
            tcp_idle_timeout_ms: None,
        }
    }
}

/// Outlier detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx errors before ejection (0: off).
    pub consecutive_5xx_errors: u32,
    /// Consecutive gateway errors (502, 503, 504) before ejection (0: off).
    pub consecutive_gateway_errors: u32,
    /// Sweep interval in milliseconds.
    pub interval_ms: u64,
    /// Base ejection time in milliseconds.
    pub base_ejection_time_ms: u64,
    /// Max share of endpoints ejected, percent.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejection stops, percent.
    pub min_health_percent: u32,
}

/// Client-side TLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// TLS to the server.
    Simple,
    /// TLS with a client certificate configured by the user.
    Mutual,
    /// Mesh mTLS with SPIFFE certificates.
    IstioMutual,
}

/// Server-side mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext.
    Permissive,
    /// mTLS only.
    Strict,
}

impl MtlsMode {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

/// Inbound policy of one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadPolicy {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub identity: String,
    /// Pod labels.
    pub labels: Map<String, String>,
    /// Whether it runs a sidecar.
    pub meshed: bool,
    /// Effective server-side mTLS.
    pub mtls: Mtls,
    /// Authorization policies that apply, grouped by action.
    pub authz: Authz,
    /// Hosts its proxy needs: Sidecar egress patterns `namespace/host`
    /// (`*/*` by default).
    pub egress: Vec<String>,
}

/// Effective mTLS of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mtls {
    /// Mode on every port without an override.
    pub mode: MtlsMode,
    /// Overrides by (target) port.
    pub ports: BTreeMap<u16, MtlsMode>,
    /// The PeerAuthentication that decides the mode, or `None` for Istio's default.
    pub decided_by: Option<Origin>,
}

impl Mtls {
    /// The mode on `port`.
    pub fn mode_on(&self, port: Option<u16>) -> MtlsMode {
        port.and_then(|p| self.ports.get(&p).copied())
            .unwrap_or(self.mode)
    }
}

/// Authorization policies of a workload, in Istio's evaluation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authz {
    /// CUSTOM policies (external authorizers), evaluated first.
    pub custom: Vec<AuthzPolicy>,
    /// DENY policies.
    pub deny: Vec<AuthzPolicy>,
    /// ALLOW policies; none at all means allow everything.
    pub allow: Vec<AuthzPolicy>,
}

/// One authorization policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzPolicy {
    /// `namespace/name`.
    pub name: String,
    /// External provider (CUSTOM only).
    pub provider: Option<String>,
    /// Rules; the policy matches when any rule matches. No rules: matches nothing.
    pub rules: Vec<AuthzRule>,
}

/// One authorization rule: every part given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Any source matches (empty: any caller).
    pub from: Vec<SourceMatch>,
    /// Any operation matches (empty: any request).
    pub to: Vec<OperationMatch>,
    /// Every condition holds.
    pub when: Vec<Condition>,
}

/// Positive and negative value lists: a value matches when it matches one of
/// `values` (or `values` is absent) and none of `not_values`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Values {
    /// Any of these (Istio's patterns: exact, `prefix*`, `*suffix`, `*`); `None`: any.
    pub values: Option<Vec<String>>,
    /// None of these.
    pub not_values: Vec<String>,
}

impl Values {
    /// Whether it constrains nothing.
    pub fn is_any(&self) -> bool {
        self.values.is_none() && self.not_values.is_empty()
    }
}

/// Who the caller is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceMatch {
    /// Peer principals (`<td>/ns/<ns>/sa/<sa>`).
    pub principals: Values,
    /// Peer namespaces.
    pub namespaces: Values,
    /// Peer IP blocks (CIDR or address).
    pub ip_blocks: Values,
    /// Request principals (JWT `iss/sub`).
    pub request_principals: Values,
}

/// What is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationMatch {
    /// Host header.
    pub hosts: Values,
    /// Ports.
    pub ports: Values,
    /// Methods.
    pub methods: Values,
    /// Paths.
    pub paths: Values,
}

/// A `when` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Istio attribute (`request.headers[x-token]`, `source.namespace`...).
    pub key: String,
    /// Values.
    pub values: Values,
}

/// Ingress through one gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayPolicy {
    /// Labels of the gateway workloads.
    pub selector: Map<String, String>,
    /// Servers.
    pub servers: Vec<GatewayServer>,
    /// Routes of the VirtualServices bound to the gateway, by host.
    pub hosts: BTreeMap<String, Vec<HttpRule>>,
    /// TCP/TLS routes bound to the gateway, by host.
    pub l4: BTreeMap<String, Vec<L4Rule>>,
}

/// A gateway server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayServer {
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: String,
    /// Hosts (`namespace/host` as written is reduced to the host).
    pub hosts: Vec<String>,
    /// TLS mode (`SIMPLE`, `MUTUAL`, `PASSTHROUGH`...), if TLS.
    pub tls: Option<String>,
    /// For a server that terminates TLS (`SIMPLE`, `MUTUAL`,
    /// `OPTIONAL_MUTUAL`, `ISTIO_MUTUAL`): where its certificate comes from
    /// and how it checks clients' certificates.
    #[serde(default)]
    pub termination: Option<Termination>,
    /// A plaintext HTTP server that answers every request with a 301 to
    /// `https://` (`tls.httpsRedirect`).
    #[serde(default)]
    pub https_redirect: bool,
}

/// How a gateway server terminates TLS. A credential name is a Secret the
/// gateway reads from its credentials directory (the policy repository
/// holds no keys); file paths are read on the gateway's host. Unused under
/// `ISTIO_MUTUAL`, which presents the mesh certificate and requires mesh
/// clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Termination {
    /// `credentialName` (or the first of `credentialNames`): the Secret with
    /// the certificate chain and key, and, for mutual TLS, possibly the CA.
    pub credential_name: Option<String>,
    /// `caCertCredentialName`: the Secret with the CA that client
    /// certificates must chain to.
    pub ca_credential_name: Option<String>,
    /// `serverCertificate`: a PEM file with the certificate chain.
    pub server_certificate: Option<String>,
    /// `privateKey`: a PEM file with the key.
    pub private_key: Option<String>,
    /// `caCertificates`: a PEM file with the CA for client certificates.
    pub ca_certificates: Option<String>,
    /// `caCrl`: a PEM file of certificate revocation lists that client
    /// certificates are checked against (a Secret's `ca.crl` is read without
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// `subjectAltNames`: a client certificate must carry one of these.
    pub subject_alt_names: Vec<String>,
    /// `minProtocolVersion` (`TLSV1_2`, `TLSV1_3`), if set.
    pub min_protocol_version: Option<String>,
    /// `maxProtocolVersion`, if set.
    pub max_protocol_version: Option<String>,
    /// `verifyCertificateHash`: hex SHA-256 digests of the client
    /// certificates allowed (plain or colon-separated, as written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// `verifyCertificateSpki`: base64 SHA-256 digests of the public keys
    /// (SubjectPublicKeyInfo) of the client certificates allowed. With both
    /// lists, a certificate matching either is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// `cipherSuites`: the TLS 1.2 cipher suites allowed, by their OpenSSL
    /// names as written (`[A|B]` is a group of equal preference); empty: the
    /// proxy's defaults. TLS 1.3 suites are not configurable, as in Envoy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// `ecdhCurves`: the key-exchange groups allowed (`X25519`, `P-256`,
    /// `P-384`); empty: the proxy's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
}

impl Ir {
    /// An empty IR.
    pub fn new(mesh: Mesh) -> Self {
        Ir {
            schema: SCHEMA_VERSION,
            mesh,
            hosts: BTreeMap::new(),
            workloads: BTreeMap::new(),
            gateways: BTreeMap::new(),
        }
    }

    /// The canonical encoding: compact JSON, fields in declaration order,
    /// maps sorted by key. Also the wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the IR always serialises")
    }

    /// Read an encoded IR back.
    pub fn decode(bytes: &[u8]) -> Result<Ir, String> {
        let ir: Ir = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if ir.schema != SCHEMA_VERSION {
            return Err(format!(
                "IR schema {} is not the supported {SCHEMA_VERSION}",
                ir.schema
            ));
        }
        Ok(ir)
    }

    /// SHA-256 of the canonical encoding, in lower-case hex. The encoding is
    /// never held whole (a 10,000-service IR encodes to about 100 MB): the
    /// hosts, workloads and gateways are encoded a batch at a time, each
    /// batch's entries in parallel (feature `parallel`) while the batch
    /// before it goes through the digest. The bytes digested are exactly
    /// [`Ir::encode`]'s; `hash_is_of_the_encoding` checks it.
    pub fn hash(&self) -> String {
        let mut sha = Sha256::new();
        let mut head = b"{\"schema\":".to_vec();
        serde_json::to_writer(&mut head, &self.schema).expect("a number serialises");
        head.extend_from_slice(b",\"mesh\":");
        serde_json::to_writer(&mut head, &self.mesh).expect("the IR always serialises");
        sha.update(&head);
        sha.update(b",\"hosts\":{");
        digest_map(&mut sha, &self.hosts);
        sha.update(b"},\"workloads\":{");
        digest_map(&mut sha, &self.workloads);
        sha.update(b"},\"gateways\":{");
        digest_map(&mut sha, &self.gateways);
        sha.update(b"}}");
        hex(&sha.finalize())
    }

    /// The view one proxy receives: its workload's inbound policy and the
    /// hosts its egress patterns and the hosts' `exportTo` let it see. `None`
    /// when the workload is unknown.
    pub fn scope(&self, workload: &str) -> Option<Ir> {
        let w = self.workloads.get(workload)?;
        let mut out = Ir::new(self.mesh.clone());
        out.workloads.insert(workload.to_string(), w.clone());
        for (host, p) in &self.hosts {
            if w.sees(host, p) {
                out.hosts.insert(host.clone(), p.clone());
            }
        }
        for (name, g) in &self.gateways {
            if g.runs_on(w) {
                out.gateways.insert(name.clone(), g.clone());
            }
        }
        Some(out)
    }

    /// The workloads whose proxies see `host` (for impact analysis).
    pub fn clients_of(&self, host: &str) -> Vec<&str> {
        let Some(p) = self.hosts.get(host) else {
            return Vec::new();
        };
        self.workloads
            .iter()
            .filter(|(_, w)| w.sees(host, p))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The workloads that run gateway `name` (for impact analysis).
    pub fn gateway_workloads(&self, name: &str) -> Vec<&str> {
        let Some(g) = self.gateways.get(name) else {
            return Vec::new();
        };
        self.workloads
            .iter()
            .filter(|(_, w)| g.runs_on(w))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

impl WorkloadPolicy {
    /// Whether this workload's proxy sees `host`: its `exportTo` admits the
    /// workload's namespace and one of the workload's egress patterns names it.
    pub fn sees(&self, host: &str, p: &HostPolicy) -> bool {
        visible(p, &self.namespace)
            && self
                .egress
                .iter()
                .any(|e| egress_admits(e, &self.namespace, host, &p.namespace))
    }
}

impl GatewayPolicy {
    /// Whether workload `w` runs this gateway (its selector, which is never empty, matches).
    pub fn runs_on(&self, w: &WorkloadPolicy) -> bool {
        !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
    }
}

/// The SPIFFE id of a service account: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Entries per batch of [`Ir::hash`]: enough work to share out, little held.
const HASH_BATCH: usize = 256;

/// Feed `map`'s entries to `sha` as `serde_json` encodes them (`"key":value`,
/// comma-separated): each batch is encoded (its entries in parallel with
/// feature `parallel`) while the batch before it is digested.
fn digest_map<V: Serialize + Sync>(sha: &mut Sha256, map: &BTreeMap<String, V>) {
    let entries: Vec<(&String, &V)> = map.iter().collect();
    let entry = |(k, v): &(&String, &V)| {
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, k).expect("a string serialises");
        out.push(b':');
        serde_json::to_writer(&mut out, v).expect("the IR always serialises");
        out
    };
    let encode = |batch: &[(&String, &V)]| -> Vec<u8> {
        #[cfg(feature = "parallel")]
        let parts: Vec<Vec<u8>> = {
            use rayon::prelude::*;
            batch.par_iter().map(entry).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let parts: Vec<Vec<u8>> = batch.iter().map(entry).collect();
        parts.join(&b","[..])
    };
    let mut pending: Option<Vec<u8>> = None;
    for batch in entries.chunks(HASH_BATCH) {
        let previous = pending.take();
        let digest = |sha: &mut Sha256| {
            if let Some(bytes) = previous {
                sha.update(&bytes);
                sha.update(b",");
            }
        };
        #[cfg(feature = "parallel")]
        let ((), next) = rayon::join(|| digest(sha), || encode(batch));
        #[cfg(not(feature = "parallel"))]
        let next = {
            digest(sha);
            encode(batch)
        };
        pending = Some(next);
    }
    if let Some(bytes) = pending {
        sha.update(&bytes);
    }
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 * digest.len());
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `host`'s `exportTo` lets workloads in `ns` see it.
fn visible(p: &HostPolicy, ns: &str) -> bool {
    p.export_to
        .iter()
        .any(|e| e == "*" || e == ns || (e == "." && p.namespace == ns))
}

/// Whether a Sidecar egress pattern `namespace/host` admits `host` declared in
/// `host_ns`, for a workload in `ns`.
fn egress_admits(pattern: &str, ns: &str, host: &str, host_ns: &str) -> bool {
    let (pns, phost) = pattern.split_once('/').unwrap_or(("*", pattern));
    let ns_ok = match pns {
        "*" => true,
        "." => host_ns == ns,
        "~" => false,
        other => other == host_ns,
    };
    ns_ok && host_pattern_matches(phost, host)
}

/// Whether a host pattern (`*`, `*.suffix` or exact) matches `host`. A
/// wildcard host on the right matches when the pattern covers it.
pub fn host_pattern_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return host.ends_with(suffix) && host.len() > suffix.len();
    }
    pattern == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_patterns() {
        assert!(egress_admits("*/*", "a", "x.b.svc.cluster.local", "b"));
        assert!(egress_admits("./*", "a", "x.a.svc.cluster.local", "a"));
        assert!(!egress_admits("./*", "a", "x.b.svc.cluster.local", "b"));
        assert!(egress_admits(
            "b/*.b.svc.cluster.local",
            "a",
            "x.b.svc.cluster.local",
            "b"
        ));
        assert!(!egress_admits("~/*", "a", "x.a.svc.cluster.local", "a"));
        assert!(!egress_admits("*/*.example.com", "a", "example.com", "a"));
    }

    #[test]
    fn hash_is_of_the_encoding() {
        let ir = Ir::new(Mesh {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        });
        assert_eq!(ir.hash(), hash_bytes(&ir.encode()));
        assert_eq!(Ir::decode(&ir.encode()).unwrap(), ir);
        assert_eq!(ir.hash().len(), 64);
    }

    #[test]
    fn hash_is_of_the_encoding_across_batches() {
        // Several batches of hosts, a partial last one, one workload, no
        // gateway, and keys that need escaping.
        let mut ir = Ir::new(Mesh {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        });
        for i in 0..(2 * HASH_BATCH + 7) {
            let policy = TrafficPolicy {
                load_balancer: LoadBalancer::LeastRequest,
                connection_pool: ConnectionPool::default(),
                outlier_detection: None,
                tls: TlsMode::IstioMutual,
                ports: BTreeMap::new(),
            };
            let mut h = HostPolicy::new(&format!("ns-{}", i % 3), policy);
            h.ports.insert(80 + i as u16, "HTTP".into());
            ir.hosts.insert(format!("h{i}.\"q\\\u{e9}.svc"), h);
        }
        let workload = serde_json::json!({
            "namespace": "a", "service_account": "b",
            "identity": "spiffe://cluster.local/ns/a/sa/b", "labels": {"app": "b"},
            "meshed": true, "mtls": {"mode": "STRICT", "ports": {}, "decided_by": null},
            "authz": {"custom": [], "deny": [], "allow": []}, "egress": []
        });
        ir.workloads.insert(
            "a/b".into(),
            serde_json::from_value(workload).unwrap_or_else(|e| panic!("a workload: {e}")),
        );
        assert_eq!(ir.hash(), hash_bytes(&ir.encode()));
        ir.workloads.clear();
        assert_eq!(ir.hash(), hash_bytes(&ir.encode()));
        ir.hosts.clear();
        assert_eq!(ir.hash(), hash_bytes(&ir.encode()));
    }
}
