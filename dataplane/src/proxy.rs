//! `meshc proxy`: the sidecar. Three listeners and one config.
//!
//! - **Outbound** (the application's traffic to other services): the route
//!   is chosen by [`meshc_ir::eval::route`], then fault injection, a weighted
//!   pick, the destination cluster's connection-pool limits, load balancing
//!   and outlier detection, retries and timeouts, mirrors and header
//!   operations; mesh mTLS to the peer proxy when the destination's TLS mode
//!   is `ISTIO_MUTUAL`.
//! - **Inbound** (peers to this workload's application): the workload's
//!   effective mTLS mode decides per connection (the first byte tells a TLS
//!   handshake from plaintext); [`meshc_ir::eval::authorize`] decides each
//!   request on the identity in the peer's certificate; 403 on deny.
//! - **Opaque TCP** (outbound listeners bound to one host each, and inbound
//!   streams marked by their ALPN protocol): see [`crate::tcp`].
//! - **Admin**: `/metrics`, `/ready`, `/config`.
//!
//! Every request reads the config in force when it starts and keeps it to the
//! end, so a config swap never touches a request in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshc_ir::eval::{self, Peer, Routed};
use meshc_ir::proto::Node;
use meshc_ir::{
    HeaderOps, HostPolicy, HttpAction, HttpRule, Ir, LoadBalancer, MtlsMode, PER_MILLION, TlsMode,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::balance::{Cluster, ClusterKey, Clusters, Endpoint, Outcome, hash_of};
use crate::client::{self, Applied, Check, Credentials};
use crate::http::{
    BoxError, Clients, Finished, Observed, ProxyBody, TraceIds, full, local, propagate_trace,
    strip_hop_by_hop,
};
use crate::metrics::Metrics;
use crate::tcp::TcpUpstream;
use crate::tls::{MeshTls, principal, spiffe_id};
use crate::upstream;

/// Request bodies up to this size are buffered, so they can be retried and
/// mirrored; larger or streaming bodies are forwarded as they come.
const REPLAYABLE: u64 = 64 * 1024;

/// A streaming request body is copied as it goes out, up to this size
/// (Envoy's default request buffer limit), so an attempt that fails after
/// the whole body went out can be retried. A larger body, or one still
/// streaming when the attempt fails, is not retried.
const RETRY_BUFFER: usize = 1024 * 1024;

/// Set by the calling proxy on an HTTP/1.1 request it carries to its peer
/// over HTTP/2 (Linkerd's `l5d-orig-proto`): the peer's inbound puts the
/// request back in HTTP/1.1 for the application. Removed from whatever
/// arrives from elsewhere, so an application cannot set it.
const ORIG_PROTO: HeaderName = HeaderName::from_static("meshc-orig-proto");

/// Where the proxy listens and who it is.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// The control plane's gRPC address.
    #[arg(
        long,
        env = "MESHC_CONTROL_PLANE",
        default_value = "https://127.0.0.1:15010"
    )]
    pub control_plane: String,
    /// The control plane's CA certificate (PEM): `ca.pem` in its data directory.
    #[arg(long, env = "MESHC_CA_FILE")]
    pub ca_file: std::path::PathBuf,
    /// The name in the control plane's serving certificate.
    #[arg(long, env = "MESHC_SERVER_NAME", default_value = "localhost")]
    pub server_name: String,
    /// Bootstrap token for the first certificate.
    #[arg(long, env = "MESHC_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: String,
    /// This proxy's workload, `namespace/name` as in the policy repository.
    #[arg(long, env = "MESHC_WORKLOAD")]
    pub workload: String,
    /// Its service account.
    #[arg(long, env = "MESHC_SERVICE_ACCOUNT")]
    pub service_account: String,
    /// Outbound listener (the application sends its requests here).
    #[arg(long, env = "MESHC_OUTBOUND_ADDR", default_value = "127.0.0.1:15001")]
    pub outbound_addr: SocketAddr,
    /// Inbound listener (peers connect here).
    #[arg(long, env = "MESHC_INBOUND_ADDR", default_value = "127.0.0.1:15006")]
    pub inbound_addr: SocketAddr,
    /// The inbound address peers should use (registered with the control
    /// plane); default: the inbound listener's address.
    #[arg(long, env = "MESHC_ADVERTISE_ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    /// The application behind this proxy.
    #[arg(long, env = "MESHC_APP_ADDR", default_value = "127.0.0.1:8080")]
    pub app_addr: SocketAddr,
    /// Admin listener: /metrics, /ready, /config.
    #[arg(long, env = "MESHC_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Static endpoints (JSON: workload `namespace/name` to a list of
    /// addresses), used with those the control plane distributes.
    #[arg(long, env = "MESHC_ENDPOINTS_FILE")]
    pub endpoints_file: Option<std::path::PathBuf>,
    /// Log requests as JSON lines on standard output, this share of them
    /// (0: off, 1: all).
    #[arg(long, env = "MESHC_ACCESS_LOG", default_value_t = 0.0)]
    pub access_log: f64,
    /// Worker threads. One is a sidecar's usual share. More run one event
    /// loop each, every one with its own listening sockets on the same
    /// addresses (`SO_REUSEPORT`: the kernel spreads the connections) and
    /// its own upstream connection pools, so a connection and everything
    /// it carries stay on one thread; the config, the clusters and the
    /// metrics are shared.
    #[arg(long, env = "MESHC_PROXY_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Outbound TCP: a listener for one host and port each,
    /// `LISTEN_ADDR=HOST:PORT` (`127.0.0.1:15432=db:5432`); repeat the flag
    /// or separate with commas.
    #[arg(
        long = "tcp-upstream",
        env = "MESHC_TCP_UPSTREAMS",
        value_delimiter = ','
    )]
    pub tcp_upstreams: Vec<TcpUpstream>,
    /// What the application speaks: `http`, or `tcp` to pass plaintext
    /// inbound connections through as opaque streams (over mTLS the peer's
    /// ALPN protocol says which).
    #[arg(long, env = "MESHC_APP_PROTOCOL", value_enum, default_value_t = AppProtocol::Http)]
    pub app_protocol: AppProtocol,
    /// Gateway mode: serve the gateway servers' port PORT at LISTEN_ADDR,
    /// `PORT=LISTEN_ADDR` (`80=0.0.0.0:8080`), for the Gateways whose
    /// selector matches this workload; repeat the flag or separate with
    /// commas.
    #[arg(
        long = "gateway-listen",
        env = "MESHC_GATEWAY_LISTEN",
        value_delimiter = ','
    )]
    pub gateway_listen: Vec<GatewayListen>,
    /// Gateway mode: where the Secrets named by the servers'
    /// `credentialName` are, one directory each, laid out as Kubernetes
    /// mounts them (`DIR/NAME/tls.crt`, `tls.key`, `ca.crt`).
    #[arg(long, env = "MESHC_GATEWAY_CREDENTIALS")]
    pub gateway_credentials: Option<std::path::PathBuf>,
}

/// A gateway port and where the proxy serves it: `PORT=LISTEN_ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayListen {
    /// The port of the Gateway servers (`spec.servers[].port.number`).
    pub port: u16,
    /// Where clients connect.
    pub listen: SocketAddr,
}

impl std::str::FromStr for GatewayListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("`{s}`: expected PORT=LISTEN_ADDR, e.g. 80=0.0.0.0:8080");
        let (port, listen) = s.split_once('=').ok_or_else(usage)?;
        Ok(GatewayListen {
            port: port
                .trim()
                .parse()
                .map_err(|e| format!("{}: the port: {e}", usage()))?,
            listen: listen
                .trim()
                .parse()
                .map_err(|e| format!("{}: the listen address: {e}", usage()))?,
        })
    }
}

/// The application's protocol on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppProtocol {
    /// HTTP/1.1, HTTP/2 or gRPC: requests are routed, authorized and measured one by one.
    Http,
    /// Anything else: each connection is authorized once and passed through.
    Tcp,
}

/// Workload `namespace/name` to the addresses of its proxies.
pub type Endpoints = BTreeMap<String, Vec<SocketAddr>>;

pub(crate) struct State {
    pub(crate) workload: String,
    pub(crate) namespace: String,
    pub(crate) app_addr: SocketAddr,
    /// `app_addr` as the authority of requests to the application.
    app_authority: Authority,
    app_protocol: AppProtocol,
    config: watch::Receiver<Option<Arc<Applied>>>,
    endpoints: RwLock<Arc<EndpointTable>>,
    static_endpoints: Endpoints,
    pub(crate) tls: Arc<RwLock<Option<MeshTls>>>,
    pub(crate) clusters: Clusters,
    /// One set of upstream clients (and so of connection pools) per worker
    /// thread.
    clients: PerWorker<Clients>,
    pub(crate) metrics: Metrics,
    access_log: f64,
    gateway_tls: crate::gateway_tls::GatewayCredentials,
    /// This workload as a caller under the config in force, made once per
    /// config and worker (the config is held so the comparison cannot be
    /// fooled by a reused address).
    me: PerWorker<Mutex<Option<MeUnder>>>,
}

/// This workload as a caller, and the config it was made under.
type MeUnder = (Arc<Applied>, Arc<Peer>);

/// One `T` per worker thread, each on cache lines of its own: what every
/// request writes (a lock, a reference count) stays with its thread
/// instead of moving between cores with each request.
pub(crate) struct PerWorker<T>(Box<[Padded<T>]>);

/// A value aligned to two cache lines (the adjacent-line prefetcher pairs
/// them), so that its neighbours' writes do not touch it.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    /// `workers` values (at least one), made by `make`.
    pub(crate) fn new(workers: usize, mut make: impl FnMut() -> T) -> Self {
        PerWorker((0..workers.max(1)).map(|_| Padded(make())).collect())
    }

    /// The value of the worker thread this runs on.
    pub(crate) fn get(&self) -> &T {
        &self.0[worker() % self.0.len()].0
    }
}

thread_local! {
    /// The worker thread this is (0: the thread that started the proxy, and
    /// any thread of another runtime).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The worker thread this runs on (see [`Settings::threads`]).
pub(crate) fn worker() -> usize {
    WORKER.get()
}

impl State {
    /// The upstream clients of the worker thread this runs on.
    fn clients(&self) -> &Clients {
        self.clients.get()
    }

    pub(crate) fn current(&self) -> Option<Arc<Applied>> {
        self.config.borrow().clone()
    }

    /// Count a connection refused for `reason`.
    pub(crate) fn refuse(&self, reason: &str) {
        self.metrics
            .refused
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// This workload as a caller under `applied`, for routing's source
    /// matches: its namespace and its labels in that config.
    pub(crate) fn me(&self, applied: &Arc<Applied>) -> Arc<Peer> {
        let mut cache = self.me.get().lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, me)) = cache.as_ref()
            && Arc::ptr_eq(a, applied)
        {
            return me.clone();
        }
        let me = Arc::new(Peer {
            namespace: Some(self.namespace.clone()),
            labels: applied
                .ir
                .workloads
                .get(&self.workload)
                .map(|w| w.labels.clone())
                .unwrap_or_default(),
            ..Default::default()
        });
        *cache = Some((applied.clone(), me.clone()));
        me
    }
}

/// A running proxy.
pub struct Proxy {
    /// Outbound listener.
    pub outbound_addr: SocketAddr,
    /// Inbound listener.
    pub inbound_addr: SocketAddr,
    /// Admin listener.
    pub admin_addr: SocketAddr,
    /// Outbound TCP listeners, as bound, and the hosts they stand for.
    pub tcp_upstreams: Vec<TcpUpstream>,
    /// Gateway listeners, as bound, and the gateway ports they serve.
    pub gateway_listeners: Vec<GatewayListen>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The extra worker threads.
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Stop listening and end the control-plane stream.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for w in self.workers {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

/// The endpoints in force: addresses by workload, and the identity each
/// registered workload proved (static endpoints have none: only their chain
/// is checked).
#[derive(Debug, Default, serde::Serialize)]
struct EndpointTable {
    #[serde(rename = "endpoints")]
    addresses: Endpoints,
    identities: BTreeMap<String, String>,
}

/// The endpoints the control plane distributes, in the scope's `endpoints`
/// resource, merged over the static ones.
fn merged_endpoints(applied: Option<&Applied>, static_endpoints: &Endpoints) -> EndpointTable {
    let mut all = static_endpoints.clone();
    let mut identities = BTreeMap::new();
    if let Some(r) = applied.and_then(|a| a.resources.get(meshc_ir::resources::ENDPOINTS))
        && let Ok(dynamic) =
            serde_json::from_slice::<BTreeMap<String, meshc_ir::resources::EndpointSet>>(&r.body)
    {
        for (w, set) in dynamic {
            let e = all.entry(w.clone()).or_default();
            e.extend(
                set.addresses
                    .iter()
                    .filter_map(|a| a.parse::<SocketAddr>().ok()),
            );
            e.sort();
            e.dedup();
            if !set.identity.is_empty() {
                identities.insert(w, set.identity);
            }
        }
    }
    EndpointTable {
        addresses: all,
        identities,
    }
}

/// Start a proxy: bind its listeners, then get a certificate and subscribe
/// in the background. Requests are answered 503 until the first config.
pub async fn start(settings: Settings) -> Result<Proxy> {
    let (namespace, name) = settings
        .workload
        .split_once('/')
        .context("--workload must be namespace/name")?;
    let ca_pem = std::fs::read_to_string(&settings.ca_file)
        .with_context(|| format!("reading {}", settings.ca_file.display()))?;
    let static_endpoints: Endpoints = match &settings.endpoints_file {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| {
            format!(
                "{}: expected {{\"namespace/workload\": [\"ip:port\"]}}",
                p.display()
            )
        })?,
        None => Endpoints::new(),
    };
    // Extra worker threads serve the same addresses through sockets of
    // their own (`SO_REUSEPORT`), which the first worker's must allow too.
    let threads = if cfg!(unix) {
        settings.threads.max(1)
    } else {
        1
    };
    let shared = threads > 1;
    let outbound = bind(settings.outbound_addr, shared)
        .await
        .with_context(|| format!("binding the outbound listener {}", settings.outbound_addr))?;
    let inbound = bind(settings.inbound_addr, shared)
        .await
        .with_context(|| format!("binding the inbound listener {}", settings.inbound_addr))?;
    let admin = TcpListener::bind(settings.admin_addr)
        .await
        .with_context(|| format!("binding the admin listener {}", settings.admin_addr))?;
    let mut tcp_listeners = Vec::new();
    for up in &settings.tcp_upstreams {
        let l = bind(up.listen, shared)
            .await
            .with_context(|| format!("binding the TCP upstream listener {up}"))?;
        let bound = TcpUpstream {
            listen: l.local_addr()?,
            ..up.clone()
        };
        tcp_listeners.push((l, bound));
    }
    let mut gateway = Vec::new();
    for g in &settings.gateway_listen {
        let l = bind(g.listen, shared).await.with_context(|| {
            format!(
                "binding the listener {} for gateway port {}",
                g.listen, g.port
            )
        })?;
        gateway.push((l, g.port));
    }
    let inbound_addr = inbound.local_addr()?;
    let node = Node {
        id: format!("{}-{}", settings.workload, std::process::id()),
        namespace: namespace.to_string(),
        workload: name.to_string(),
        service_account: settings.service_account.clone(),
        labels: Default::default(),
        address: settings.advertise_addr.unwrap_or(inbound_addr).to_string(),
    };
    let config = client::Config {
        endpoint: settings.control_plane.clone(),
        server_name: settings.server_name.clone(),
        ca_pem: ca_pem.clone(),
        bootstrap_token: settings.bootstrap_token.clone(),
        node,
    };
    let (config_tx, config_rx) = watch::channel(None);
    let (creds_tx, mut creds_rx) = watch::channel::<Option<Credentials>>(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tls = Arc::new(RwLock::new(None));
    let state = Arc::new(State {
        workload: settings.workload.clone(),
        namespace: namespace.to_string(),
        app_addr: settings.app_addr,
        app_authority: Authority::try_from(settings.app_addr.to_string().as_str())
            .context("the application address as an authority")?,
        app_protocol: settings.app_protocol,
        config: config_rx.clone(),
        endpoints: RwLock::new(Arc::new(EndpointTable {
            addresses: static_endpoints.clone(),
            identities: BTreeMap::new(),
        })),
        static_endpoints,
        clients: PerWorker::new(threads, || Clients::new(tls.clone())),
        tls,
        clusters: Clusters::default(),
        metrics: Metrics::new(threads),
        access_log: settings.access_log,
        gateway_tls: crate::gateway_tls::GatewayCredentials::new(
            settings.gateway_credentials.clone(),
        ),
        me: PerWorker::new(threads, || Mutex::new(None)),
    });
    let workload = settings.workload.clone();
    let check: Check = Arc::new(move |ir: &Ir| {
        if ir.workloads.contains_key(&workload) {
            Ok(())
        } else {
            Err(format!("the scope has no inbound policy for `{workload}`"))
        }
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(client::run_with_credentials(
        config, config_tx, creds_tx, check, stop_rx,
    ));
    // New certificates: new TLS settings (connections made before keep theirs).
    {
        let state = state.clone();
        tasks.spawn(async move {
            while creds_rx.changed().await.is_ok() {
                let creds = creds_rx.borrow_and_update().clone();
                if let Some(c) = creds {
                    match MeshTls::new(&ca_pem, &c) {
                        Ok(t) => *state.tls.write().expect("not poisoned") = Some(t),
                        Err(e) => tracing::error!("the issued certificate is unusable: {e:#}"),
                    }
                }
            }
        });
    }
    // New configs: new endpoints, metrics.
    {
        let state = state.clone();
        let mut rx = config_rx;
        tasks.spawn(async move {
            let mut last: Option<String> = None;
            while rx.changed().await.is_ok() {
                let applied = rx.borrow_and_update().clone();
                let merged = merged_endpoints(applied.as_deref(), &state.static_endpoints);
                *state.endpoints.write().expect("not poisoned") = Arc::new(merged);
                state
                    .clusters
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if let Some(a) = applied {
                    if let Some(old) = last.replace(a.version.clone()) {
                        state
                            .metrics
                            .config
                            .get_or_create(&vec![("version", old)])
                            .set(0);
                    }
                    state
                        .metrics
                        .config
                        .get_or_create(&vec![("version", a.version.clone())])
                        .set(1);
                    state.metrics.config_updates.inc();
                }
            }
        });
    }
    let outbound_addr = outbound.local_addr()?;
    let admin_addr = admin.local_addr()?;
    // What every worker serves; the first one's listeners, and from them
    // the addresses the others bind.
    let mut listeners = vec![
        (outbound, Serves::Http(Direction::Outbound)),
        (inbound, Serves::Http(Direction::Inbound)),
    ];
    let mut tcp_upstreams = Vec::new();
    for (l, up) in tcp_listeners {
        tcp_upstreams.push(up.clone());
        listeners.push((l, Serves::Tcp(Arc::new(up))));
    }
    let mut gateway_listeners = Vec::new();
    for (l, port) in gateway {
        let listen = l.local_addr()?;
        gateway_listeners.push(GatewayListen { port, listen });
        listeners.push((l, Serves::Http(Direction::Gateway(port))));
    }
    let mut serves = Vec::new();
    for (l, what) in listeners {
        serves.push((l.local_addr()?, what.clone()));
        tasks.spawn(what.accept(l, state.clone()));
    }
    tasks.spawn(accept(admin, state.clone(), Direction::Admin));
    let mut workers = Vec::new();
    for i in 1..threads {
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("meshc-worker-{i}"))
            .spawn({
                let (state, serves, stop) = (state.clone(), serves.clone(), stop_tx.subscribe());
                move || run_worker(i, state, serves, stop, ready_tx)
            })
            .context("starting a worker thread")?;
        workers.push(thread);
        // A worker that could not bind ends the start (dropping `stop_tx`
        // ends the workers already running).
        ready.await.context("a worker thread ended")??;
    }
    Ok(Proxy {
        outbound_addr,
        inbound_addr,
        admin_addr,
        tcp_upstreams,
        gateway_listeners,
        stop: stop_tx,
        tasks,
        workers,
    })
}

/// A listening socket at `addr`; with `shared`, one that other sockets
/// (other workers') may bind to the same address too (`SO_REUSEPORT`).
async fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    if !shared {
        return TcpListener::bind(addr).await;
    }
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// What a listener serves.
#[derive(Clone)]
enum Serves {
    Http(Direction),
    Tcp(Arc<TcpUpstream>),
}

impl Serves {
    /// Serve the connections of `listener`, for good.
    async fn accept(self, listener: TcpListener, state: Arc<State>) {
        match self {
            Serves::Http(dir) => accept(listener, state, dir).await,
            Serves::Tcp(up) => crate::tcp::accept(listener, state, up).await,
        }
    }
}

/// Worker thread `i` (1 and up): its own event loop, and its own sockets at
/// the addresses in `serves`, until `stop`. Says on `ready` whether they
/// could be bound.
fn run_worker(
    i: usize,
    state: Arc<State>,
    serves: Vec<(SocketAddr, Serves)>,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) {
    WORKER.set(i);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(anyhow::Error::from(e).context("a worker's runtime")));
            return;
        }
    };
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for (addr, what) in serves {
            match bind(addr, true).await {
                Ok(l) => listeners.push((l, what)),
                Err(e) => {
                    let e = anyhow::Error::from(e).context(format!("worker {i}: binding {addr}"));
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(()));
        for (l, what) in listeners {
            tokio::spawn(what.accept(l, state.clone()));
        }
        // Until told to stop, or the proxy is gone; then the runtime ends
        // with its connections.
        let _ = stop.wait_for(|s| *s).await;
    });
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outbound,
    Inbound,
    Admin,
    /// Into the mesh through the Gateway servers on this port.
    Gateway(u16),
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Admin => "admin",
            Direction::Gateway(_) => "gateway",
        }
    }
}

/// The peer of an inbound connection.
#[derive(Clone, Default)]
pub(crate) struct Conn {
    pub(crate) remote: Option<SocketAddr>,
    /// SPIFFE id from the client certificate (mTLS only).
    pub(crate) identity: Option<String>,
    /// Whether a gateway server terminated TLS on the connection.
    terminated: bool,
}

/// The next connection on `listener`. An error (out of file descriptors,
/// say) is logged and waited out briefly rather than retried at once.
pub(crate) async fn next_connection(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, remote)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, remote);
            }
            Err(e) => {
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, dir: Direction) {
    loop {
        let (tcp, remote) = next_connection(&listener).await;
        let state = state.clone();
        tokio::spawn(async move {
            let open = state.metrics.accepted(dir.as_str(), worker());
            if let Err(e) = connection(tcp, remote, &state, dir).await {
                tracing::debug!(direction = dir.as_str(), %remote, "connection: {e:#}");
            }
            open.dec();
        });
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    state: &Arc<State>,
    dir: Direction,
) -> Result<()> {
    let mut conn = Conn {
        remote: Some(remote),
        identity: None,
        terminated: false,
    };
    if let Direction::Gateway(port) = dir
        && let Some(a) = state.current()
    {
        match eval::gateway_port(&a.ir, port) {
            eval::GatewayPort::L4 {
                passthrough,
                terminate,
            } => {
                let sni = if passthrough || terminate {
                    crate::tcp::server_name(&tcp).await
                } else {
                    None
                };
                let l4 = eval::L4Conn {
                    port: Some(port),
                    sni: sni.as_deref(),
                    destination: crate::tcp::original_destination(&tcp),
                };
                let rule = eval::route_gateway_tcp(&a.ir, port, l4, &state.me(&a));
                // A name no PASSTHROUGH route takes, with a server that
                // terminates it on the port: terminated.
                if terminate
                    && rule.is_none()
                    && eval::terminating_server(&a.ir, port, sni.as_deref()).is_some()
                {
                    return terminate_tls(state, &a, tcp, port, sni, conn).await;
                }
                crate::tcp::gateway(state, &a, tcp, rule).await;
                return Ok(());
            }
            eval::GatewayPort::Https => {
                let sni = crate::tcp::server_name(&tcp).await;
                return terminate_tls(state, &a, tcp, port, sni, conn).await;
            }
            eval::GatewayPort::Http | eval::GatewayPort::None => {}
        }
    }
    if dir == Direction::Inbound {
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.peek(&mut first)).await??;
        let is_tls = n == 1 && first[0] == 0x16;
        let mode = state.current().map_or(MtlsMode::Permissive, |a| {
            a.ir.workloads
                .get(&state.workload)
                .map_or(MtlsMode::Permissive, |w| {
                    w.mtls.mode_on(Some(state.app_addr.port()))
                })
        });
        let refuse = |reason: &str| state.refuse(reason);
        match (mode, is_tls) {
            (MtlsMode::Strict, false) => {
                refuse("plaintext under STRICT");
                bail!("plaintext refused: mTLS is STRICT");
            }
            (MtlsMode::Disable, true) => {
                refuse("TLS under DISABLE");
                bail!("TLS refused: mTLS is DISABLE");
            }
            _ => {}
        }
        if is_tls {
            let tls = state.tls.read().expect("not poisoned").clone();
            let Some(tls) = tls else {
                refuse("no certificate yet");
                bail!("no certificate yet");
            };
            let stream = match tokio_rustls::TlsAcceptor::from(tls.server)
                .accept(tcp)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    refuse("handshake failed");
                    bail!("TLS handshake: {e}");
                }
            };
            conn.identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(spiffe_id);
            if crate::tcp::is_opaque(stream.get_ref().1.alpn_protocol()) {
                crate::tcp::inbound(state, stream, &conn).await;
                return Ok(());
            }
            return serve(TokioIo::new(stream), state, dir, conn).await;
        }
        if state.app_protocol == AppProtocol::Tcp {
            crate::tcp::inbound(state, tcp, &conn).await;
            return Ok(());
        }
    }
    serve(TokioIo::new(tcp), state, dir, conn).await
}

/// Terminate TLS on gateway port `port` for the server that admits the
/// ClientHello's name `sni`, then serve the requests inside as the
/// gateway's (routed among the servers that terminate TLS), or, for a
/// `TLS`-protocol server, route the stream inside by the gateway's TCP
/// routes.
async fn terminate_tls(
    state: &Arc<State>,
    applied: &Arc<Applied>,
    tcp: TcpStream,
    port: u16,
    sni: Option<String>,
    mut conn: Conn,
) -> Result<()> {
    let refuse = |reason: &str| state.refuse(reason);
    let Some((gateway, server)) = eval::terminating_server(&applied.ir, port, sni.as_deref())
    else {
        refuse("no gateway server for the server name");
        bail!("no server on gateway port {port} admits the server name {sni:?}");
    };
    let termination = server.termination.as_ref().expect("a terminating server");
    let mode = server.tls.as_deref().unwrap_or("SIMPLE");
    let mesh = state.tls.read().expect("not poisoned").clone();
    // The address dialled, for the TCP routes of a stream inside.
    let destination = eval::terminates_tcp(server)
        .then(|| crate::tcp::original_destination(&tcp))
        .flatten();
    let config = match state.gateway_tls.config(mode, termination, mesh.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            refuse("gateway credential unavailable");
            tracing::warn!(%gateway, port, "cannot terminate TLS: {e:#}");
            bail!("gateway {gateway} port {port}: {e:#}");
        }
    };
    let stream = match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            refuse("handshake failed");
            bail!("TLS handshake: {e}");
        }
    };
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned();
    // `subjectAltNames`: a client certificate must carry one of them.
    if !termination.subject_alt_names.is_empty()
        && let Some(cert) = &client
    {
        let names = crate::tls::subject_alt_names(cert);
        if !termination
            .subject_alt_names
            .iter()
            .any(|n| names.contains(n))
        {
            refuse("client certificate name not allowed");
            bail!("the client certificate names none of the server's subjectAltNames");
        }
    }
    // `verifyCertificateHash` / `verifyCertificateSpki`: a client
    // certificate must be one of those pinned.
    if let Some(cert) = &client
        && !crate::tls::pinned(
            cert,
            &termination.verify_certificate_hash,
            &termination.verify_certificate_spki,
        )
    {
        refuse("client certificate not pinned");
        bail!("the client certificate matches none of the server's pinned digests");
    }
    conn.identity = client.as_ref().and_then(spiffe_id);
    if eval::terminates_tcp(server) {
        let l4 = eval::L4Conn {
            port: Some(port),
            sni: sni.as_deref(),
            destination,
        };
        let rule = eval::route_terminated_tcp(&applied.ir, gateway, port, l4, &state.me(applied));
        crate::tcp::gateway(state, applied, stream, rule).await;
        return Ok(());
    }
    conn.terminated = true;
    serve(TokioIo::new(stream), state, Direction::Gateway(port), conn).await
}

async fn serve<I>(io: I, state: &Arc<State>, dir: Direction, conn: Conn) -> Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let state = state.clone();
    // What the requests say of their caller is the connection's: worked out
    // once, not per request.
    let terminated = conn.terminated;
    let caller = Arc::new(Caller::of(&conn));
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let caller = caller.clone();
        async move {
            Ok::<_, Infallible>(match dir {
                Direction::Outbound => outbound(state, req, None).await,
                Direction::Gateway(port) => outbound(state, req, Some((port, terminated))).await,
                Direction::Inbound => inbound(state, req, &caller).await,
                Direction::Admin => admin(&state, &req),
            })
        }
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn admin(state: &State, req: &Request<Incoming>) -> Response<ProxyBody> {
    let current = state.current();
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.text(),
        ),
        "/ready" => match &current {
            Some(a) => (
                StatusCode::OK,
                "text/plain",
                format!("ready {}\n", a.version),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no config yet\n".to_string(),
            ),
        },
        "/config" => match &current {
            Some(a) => {
                /// Written straight from the IR (no intermediate JSON tree:
                /// a large IR would briefly double the proxy's memory).
                #[derive(serde::Serialize)]
                struct Dump<'a> {
                    version: &'a str,
                    source: &'a str,
                    #[serde(flatten)]
                    endpoints: &'a EndpointTable,
                    ir: &'a Ir,
                }
                let endpoints = state.endpoints.read().expect("not poisoned").clone();
                let body = serde_json::to_string(&Dump {
                    version: &a.version,
                    source: &a.source,
                    endpoints: &endpoints,
                    ir: &a.ir,
                })
                .unwrap_or_default();
                (StatusCode::OK, "application/json", body)
            }
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"version\":null}".to_string(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// A host without its `:port`.
fn host_only(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The request as the evaluator sees it, with the headers among `read` (see
/// [`meshc_ir::eval::headers_read`]; copying the others would cost an
/// allocation each and decide nothing).
fn eval_request(
    req: &Request<Incoming>,
    default_port: Option<u16>,
    read: &BTreeSet<String>,
) -> eval::Request {
    let authority = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .or(default_port);
    let mut headers = BTreeMap::new();
    for (k, v) in req
        .headers()
        .iter()
        .filter(|(k, _)| read.contains(k.as_str()))
    {
        if let Ok(v) = v.to_str() {
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e: &mut String| {
                    e.push(',');
                    e.push_str(v);
                })
                .or_insert_with(|| v.to_string());
        }
    }
    eval::Request {
        host: authority,
        port,
        // `as_str`, not `to_string`: no formatting machinery per request.
        method: req.method().as_str().to_owned(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        scheme: "http".into(),
        headers,
        gateway: None,
    }
}

fn apply_ops(h: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        h.remove(name.as_str());
    }
    for (name, v) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(v),
        ) {
            h.insert(n, v);
        }
    }
    for (name, v) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(v),
        ) {
            h.append(n, v);
        }
    }
}

/// The path after the rule's rewrite: the matched prefix replaced (the whole
/// path for other matches), or the regex substitution.
fn rewritten_path(rule: &HttpRule, req: &eval::Request, me: &Peer) -> Option<String> {
    let rw = rule.rewrite.as_ref()?;
    let path = req.path_only();
    let query = req.path.split_once('?').map(|(_, q)| q);
    let new = if let Some((re, with)) = &rw.uri_regex {
        re.replace_all(path, with)
    } else if let Some(uri) = &rw.uri {
        let matched = rule
            .matches
            .iter()
            .find(|m| eval::http_matches(m, req, me))
            .and_then(|m| m.uri.as_ref());
        match matched {
            Some(meshc_ir::StrMatch::Prefix(p)) if path.len() >= p.len() => {
                format!("{uri}{}", &path[p.len()..])
            }
            _ => uri.clone(),
        }
    } else {
        return None;
    };
    Some(match query {
        Some(q) => format!("{new}?{q}"),
        None => new,
    })
}

/// A request ready to send, its body either buffered (replayable) or a
/// stream, copied as it goes out while retries may need it.
struct Outgoing {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    version: Version,
    body: Option<Bytes>,
    stream: Option<Incoming>,
    /// An HTTP/2 request that the calling proxy upgraded from HTTP/1.1
    /// ([`ORIG_PROTO`]); only the inbound side reads it.
    orig_h1: bool,
    /// What the last attempt's streaming body left for the next one.
    replay: Option<Arc<Mutex<Replay>>>,
    /// An HTTP/1.1 upgrade (WebSocket...): the downstream connection once it
    /// switches, and the protocol asked for.
    upgrade: Option<(hyper::upgrade::OnUpgrade, HeaderValue)>,
}

/// A streaming body's copy, kept for a retry.
#[derive(Default)]
struct Replay {
    /// The bytes sent so far, while they fit in [`RETRY_BUFFER`]; `None`
    /// once they do not, or once trailers came (a replay has no trailers).
    kept: Option<bytes::BytesMut>,
    /// The stream ended: `kept` is the whole body.
    complete: bool,
    /// The stream itself, when the attempt dropped it before reading it (a
    /// connection that failed): the next attempt sends it.
    unread: Option<Incoming>,
}

impl Replay {
    /// The body for the next attempt, if there can be one.
    fn next(&mut self) -> Option<Result<Bytes, Incoming>> {
        if let Some(s) = self.unread.take() {
            return Some(Err(s));
        }
        match (&self.kept, self.complete) {
            (Some(b), true) => Some(Ok(b.clone().freeze())),
            _ => None,
        }
    }
    fn possible(&self) -> bool {
        self.unread.is_some() || (self.complete && self.kept.is_some())
    }
}

/// A streaming request body that keeps a copy in a [`Replay`] as it goes
/// out, and hands the stream back when dropped unread.
struct Tee {
    inner: Option<Incoming>,
    shared: Arc<Mutex<Replay>>,
    started: bool,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        this.started = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        let mut replay = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    let fits = replay
                        .kept
                        .as_ref()
                        .is_some_and(|k| k.len() + data.len() <= RETRY_BUFFER);
                    if fits {
                        if let Some(k) = replay.kept.as_mut() {
                            k.extend_from_slice(data);
                        }
                    } else {
                        replay.kept = None;
                    }
                }
                None => replay.kept = None,
            },
            Poll::Ready(None) => replay.complete = true,
            Poll::Ready(Some(Err(_))) => replay.kept = None,
            Poll::Pending => {}
        }
        drop(replay);
        polled.map(|f| f.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if !self.started
            && let Some(s) = self.inner.take()
        {
            let mut replay = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            replay.unread = Some(s);
        }
    }
}

impl Outgoing {
    async fn from(mut req: Request<Incoming>) -> Result<Outgoing, BoxError> {
        let upgrade = upgrade_asked(req.headers())
            .filter(|_| req.version() == Version::HTTP_11)
            .map(|protocol| (hyper::upgrade::on(&mut req), protocol));
        let (parts, body) = req.into_parts();
        let hint = http_body::Body::size_hint(&body);
        let replayable = http_body::Body::is_end_stream(&body)
            || hint
                .upper()
                .is_some_and(|u| u <= REPLAYABLE && u == hint.lower());
        let (body, stream) = if replayable {
            (Some(body.collect().await?.to_bytes()), None)
        } else {
            (None, Some(body))
        };
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        let orig_h1 = headers
            .remove(ORIG_PROTO)
            .is_some_and(|v| v == "HTTP/1.1" && parts.version == Version::HTTP_2);
        if let Some((_, protocol)) = &upgrade {
            headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            headers.insert(http::header::UPGRADE, protocol.clone());
        }
        Ok(Outgoing {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers,
            version: parts.version,
            body,
            stream,
            orig_h1,
            replay: None,
            upgrade,
        })
    }

    /// [`Outgoing::from`], recording the body size and continuing the
    /// trace; a request that cannot be read gets its answer.
    async fn read(
        req: Request<Incoming>,
        rec: &mut Recorded,
    ) -> Result<Outgoing, Response<ProxyBody>> {
        let mut out = Outgoing::from(req).await.map_err(|e| {
            local(
                StatusCode::BAD_REQUEST,
                "DC",
                &format!("reading the request: {e}\n"),
            )
        })?;
        rec.request_bytes = out.body.as_ref().map_or(0, |b| b.len() as u64);
        rec.trace = propagate_trace(&mut out.headers);
        Ok(out)
    }

    /// Whether the body can go out again: it is buffered, or a streaming
    /// body went out whole within [`RETRY_BUFFER`], or was never read.
    fn replayable(&self) -> bool {
        if self.upgrade.is_some() {
            return false;
        }
        self.body.is_some()
            || self
                .replay
                .as_ref()
                .is_some_and(|r| r.lock().unwrap_or_else(|e| e.into_inner()).possible())
    }

    /// Whether the body is buffered: mirrors copy only those.
    fn buffered(&self) -> bool {
        self.body.is_some() && self.upgrade.is_none()
    }

    /// The response to send downstream: hop-by-hop headers dropped, and for
    /// a switched upgrade the two connections spliced once both have
    /// switched (the tunnel outlives the request and its timeouts).
    fn respond(&mut self, r: Response<upstream::Body>) -> (http::response::Parts, upstream::Body) {
        let (mut parts, body) = r.into_parts();
        let switched = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        let protocol = parts.headers.get(http::header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if switched && let (Some((down, _)), Some(protocol)) = (self.upgrade.take(), protocol) {
            parts.headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            parts.headers.insert(http::header::UPGRADE, protocol);
            let up = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            tokio::spawn(async move {
                let Some(up) = up else { return };
                if let (Ok(down), Ok(up)) = tokio::join!(down, up) {
                    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
        (parts, body)
    }

    /// A request to `authority` (see [`crate::http::upstream_authority`]);
    /// the body is cloned when buffered. A streaming body is taken, and
    /// copied as it goes when `keep` (another attempt may follow); the
    /// headers are copied when `keep`, taken otherwise.
    fn build(
        &mut self,
        scheme: Scheme,
        authority: &Authority,
        h2: bool,
        keep: bool,
    ) -> Request<ProxyBody> {
        // The stream: the original, or what the last attempt left.
        let stream = self.stream.take().or_else(|| {
            let replay = self.replay.take()?;
            let next = replay.lock().unwrap_or_else(|e| e.into_inner()).next();
            match next? {
                Ok(bytes) => {
                    self.body = Some(bytes);
                    None
                }
                Err(unread) => Some(unread),
            }
        });
        let body = match (&self.body, stream) {
            (Some(b), _) => full(b.clone()),
            (None, Some(s)) if keep => {
                let shared = Arc::new(std::sync::Mutex::new(Replay {
                    kept: Some(bytes::BytesMut::new()),
                    ..Replay::default()
                }));
                self.replay = Some(shared.clone());
                Tee {
                    inner: Some(s),
                    shared,
                    started: false,
                }
                .boxed()
            }
            (None, Some(s)) => s.map_err(BoxError::from).boxed(),
            (None, None) => full(Bytes::new()),
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(scheme);
        uri.authority = Some(authority.clone());
        uri.path_and_query = Some(self.path.clone());
        *r.uri_mut() = http::Uri::from_parts(uri).unwrap_or_else(|_| http::Uri::from_static("/"));
        // The last attempt takes the headers; one another may follow copies them.
        *r.headers_mut() = if keep {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        *r.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        r
    }
}

/// The protocol an HTTP/1.1 request asks to switch to: an `Upgrade`
/// header named in `Connection`.
fn upgrade_asked(h: &HeaderMap) -> Option<HeaderValue> {
    let listed = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    listed
        .then(|| h.get(http::header::UPGRADE).cloned())
        .flatten()
}

/// What one attempt came to. Not boxed: it lives for one attempt on the
/// request's stack, and a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Response(Response<upstream::Body>),
    Failed {
        connect: bool,
        timeout: bool,
        message: String,
    },
}

/// `grpc-status`, named once: looking a header up by `&str` parses and
/// validates the name on every call.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

fn grpc_status(h: &HeaderMap) -> Option<&str> {
    h.get(&GRPC_STATUS).and_then(|v| v.to_str().ok())
}

/// Whether `retry_on` covers what the attempt came to (Envoy's conditions:
/// `5xx`, `gateway-error`, `connect-failure`, `reset`, `refused-stream`,
/// `retriable-4xx`, status codes, and the gRPC ones on `grpc-status`).
fn retriable(retry_on: &[String], a: &Attempt) -> bool {
    let tried = match a {
        Attempt::Response(r) => Tried::Answered(r.status().as_u16(), r.headers()),
        Attempt::Failed {
            connect, timeout, ..
        } => Tried::Failed {
            connect: *connect,
            timeout: *timeout,
        },
    };
    retry_covers(retry_on, tried)
}

/// What [`retriable`] reads of an attempt.
#[derive(Clone, Copy)]
enum Tried<'a> {
    /// A response: its status and headers.
    Answered(u16, &'a HeaderMap),
    /// No response: the connect failed, the per-try timeout fired, or the
    /// stream was reset.
    Failed { connect: bool, timeout: bool },
}

fn retry_covers(retry_on: &[String], tried: Tried<'_>) -> bool {
    match tried {
        Tried::Failed { connect, timeout } => retry_on.iter().any(|c| match c.as_str() {
            "5xx" | "gateway-error" => true,
            "connect-failure" => connect,
            "reset" => !connect && !timeout,
            _ => false,
        }),
        Tried::Answered(s, headers) => {
            // Looked up once, and only when a gRPC condition asks: most
            // responses are checked against conditions that read the
            // status alone.
            let mut grpc = None;
            for c in retry_on {
                let hit = match c.as_str() {
                    "5xx" => s >= 500,
                    "gateway-error" => matches!(s, 502..=504),
                    "retriable-4xx" => s == 409,
                    code if code.starts_with(|c: char| c.is_ascii_digit()) => code.parse() == Ok(s),
                    condition => {
                        let want = match condition {
                            "cancelled" => "1",
                            "deadline-exceeded" => "4",
                            "resource-exhausted" => "8",
                            "internal" => "13",
                            "unavailable" => "14",
                            _ => continue,
                        };
                        *grpc.get_or_insert_with(|| grpc_status(headers)) == Some(want)
                    }
                };
                if hit {
                    return true;
                }
            }
            false
        }
    }
}

fn roll(per_million: u32) -> bool {
    per_million >= PER_MILLION || fastrand::u32(..PER_MILLION) < per_million
}

/// What the metrics and the access log say of a request. The label
/// values start empty and are filled as the request goes (empty ones are
/// reported as `unknown` and `none`); the method and path are kept only
/// when the access log samples the request.
struct Recorded {
    dir: Direction,
    /// Whether the access log writes a line for it.
    log: bool,
    source: String,
    destination: String,
    host: String,
    route: String,
    method: String,
    path: String,
    request_bytes: u64,
    trace: TraceIds,
}

impl Recorded {
    /// A request about to be handled in `dir`; the access log's sampling
    /// is decided here.
    fn new(state: &State, dir: Direction, req: &eval::Request) -> Recorded {
        let log = state.access_log > 0.0 && fastrand::f64() < state.access_log;
        let kept = |s: &str| if log { s.to_string() } else { String::new() };
        Recorded {
            dir,
            log,
            source: String::new(),
            destination: String::new(),
            host: String::new(),
            route: String::new(),
            method: kept(&req.method),
            path: kept(&req.path),
            request_bytes: 0,
            trace: TraceIds::default(),
        }
    }
}

/// Replace a label value, reusing its allocation.
fn set(label: &mut String, value: &str) {
    label.clear();
    label.push_str(value);
}

/// A label value, or what an unset one is reported as.
fn or<'a>(value: &'a str, unset: &'a str) -> &'a str {
    if value.is_empty() { unset } else { value }
}

/// Wrap a response so metrics and the access log see it end.
fn record(
    state: &Arc<State>,
    rec: Recorded,
    start: Instant,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let code = resp.status().as_u16();
    let handles = state.metrics.handles(
        [
            rec.dir.as_str(),
            or(&rec.source, "unknown"),
            or(&rec.destination, "unknown"),
            or(&rec.host, "unknown"),
            or(&rec.route, "none"),
        ],
        code,
    );
    handles.requests.inc();
    handles.request_bytes.observe(rec.request_bytes as f64);
    let grpc = grpc_status(resp.headers()).map(str::to_string);
    let state2 = state.clone();
    // Only a logged request's record outlives this call.
    let log = rec.log.then_some(rec);
    let done = move |f: Finished| {
        let m = &state2.metrics;
        let elapsed = start.elapsed();
        handles.duration.observe(elapsed.as_secs_f64());
        handles.response_bytes.observe(f.bytes as f64);
        if let Some(g) = &f.grpc_status {
            let mut l = handles.base.clone();
            l.push(("grpc_status", g.clone()));
            m.grpc.get_or_create(&l).inc();
        }
        if let Some(rec) = &log {
            println!(
                "{}",
                serde_json::json!({
                    "direction": rec.dir.as_str(),
                    "source": or(&rec.source, "unknown"),
                    "destination": or(&rec.destination, "unknown"),
                    "host": or(&rec.host, "unknown"),
                    "route": or(&rec.route, "none"),
                    "method": rec.method,
                    "path": rec.path,
                    "code": code,
                    "grpc_status": f.grpc_status,
                    "duration_ms": elapsed.as_secs_f64() * 1000.0,
                    "request_bytes": rec.request_bytes,
                    "response_bytes": f.bytes,
                    "trace_id": rec.trace.trace_id(),
                    "span_id": rec.trace.span_id(),
                })
            );
        }
    };
    resp.map(|body| Observed::new(body, grpc, done).boxed())
}

/// A request from the application, or from a client of the gateway when
/// `gateway` is set: its port, and whether the connection's TLS was
/// terminated (routed by the routes bound to the gateway whose server on
/// that port admits the request's host over that transport).
async fn outbound(
    state: Arc<State>,
    req: Request<Incoming>,
    gateway: Option<(u16, bool)>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let applied = state.current();
    let read = applied.as_deref().map_or(&NONE_READ, |a| &a.headers_read);
    let mut ereq = eval_request(&req, gateway.map(|(port, _)| port), read);
    if let Some((_, true)) = gateway {
        ereq.scheme = "https".into();
    }
    let mut rec = Recorded::new(
        &state,
        gateway.map_or(Direction::Outbound, |(port, _)| Direction::Gateway(port)),
        &ereq,
    );
    rec.source.clone_from(&state.workload);
    let resp = match applied {
        Some(applied) => route_outbound(&state, &applied, req, ereq, &mut rec).await,
        None => local(StatusCode::SERVICE_UNAVAILABLE, "NC", "no config yet\n"),
    };
    record(&state, rec, start, resp)
}

/// No headers: what a request is evaluated with before the first config.
static NONE_READ: BTreeSet<String> = BTreeSet::new();

async fn route_outbound(
    state: &Arc<State>,
    applied: &Arc<Applied>,
    req: Request<Incoming>,
    ereq: eval::Request,
    rec: &mut Recorded,
) -> Response<ProxyBody> {
    let ir = &applied.ir;
    let me = state.me(applied);
    let mut ereq = ereq;
    if let Direction::Gateway(port) = rec.dir {
        // The gateway's own port, whatever the Host header says.
        ereq.port = Some(port);
        // Only the proxy sets the scheme: `https` when it terminated TLS.
        let terminated = ereq.scheme == "https";
        let Some((gateway, server)) = eval::gateway_for(ir, &ereq.host, port, terminated, &me)
        else {
            return local(
                StatusCode::NOT_FOUND,
                "NR",
                "no gateway server for this host and port\n",
            );
        };
        if server.https_redirect && !terminated {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            let to = format!("https://{}{}", host_only(&ereq.host), ereq.path);
            if let Ok(v) = HeaderValue::from_str(&to) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            return resp;
        }
        ereq.gateway = Some(gateway.to_string());
    }
    let Some(decision) = eval::route(ir, &ereq, &me) else {
        return local(StatusCode::NOT_FOUND, "NR", "no route: unknown host\n");
    };
    set(&mut rec.host, decision.host);
    set(&mut rec.route, decision.rule_name());
    let rule = match decision.routed {
        Routed::NoMatch => {
            return local(StatusCode::NOT_FOUND, "NR", "no route matched\n");
        }
        Routed::Rule { rule, .. } => Some(rule),
        Routed::Default => None,
    };
    match decision.action() {
        Some(HttpAction::Redirect(r)) => {
            let host = r
                .authority
                .clone()
                .unwrap_or_else(|| host_only(&ereq.host).to_string());
            let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
            let scheme = r.scheme.clone().unwrap_or_else(|| "http".into());
            let path = r.uri.clone().unwrap_or_else(|| ereq.path.clone());
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() =
                StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{port}{path}")) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            return resp;
        }
        Some(HttpAction::DirectResponse { status, body }) => {
            let mut resp = Response::new(full(body.clone().unwrap_or_default()));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return resp;
        }
        _ => {}
    }
    if let Some(f) = decision.fault() {
        if let Some((ms, pct)) = f.delay
            && roll(pct)
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some((status, pct)) = f.abort
            && roll(pct)
        {
            return local(
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "FI",
                "fault filter abort\n",
            );
        }
    }
    let destinations = decision.destinations();
    let Some(dest) = eval::pick(&destinations, fastrand::u32(..100)) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, "UH", "no destination\n");
    };
    let mut out = match Outgoing::read(req, rec).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Some(rule) = rule {
        if let Some(p) = rewritten_path(rule, &ereq, &me) {
            out.path = PathAndQuery::try_from(p).unwrap_or_else(|_| PathAndQuery::from_static("/"));
        }
        if let Some(a) = rule.rewrite.as_ref().and_then(|r| r.authority.as_ref())
            && let Ok(v) = HeaderValue::from_str(a)
        {
            out.headers.insert(http::header::HOST, v);
        }
        apply_ops(&mut out.headers, &rule.request_headers);
    }
    apply_ops(&mut out.headers, &dest.request_headers);
    // Mirrors: fire and forget, replayable bodies only.
    for m in decision.mirrors() {
        if out.buffered() && roll(m.percentage) {
            let mut copy = Outgoing {
                method: out.method.clone(),
                path: out.path.clone(),
                headers: out.headers.clone(),
                version: out.version,
                body: out.body.clone(),
                stream: None,
                orig_h1: false,
                replay: None,
                upgrade: None,
            };
            if let Some(h) = out
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                && let Ok(v) = HeaderValue::from_str(&format!("{h}-shadow"))
            {
                copy.headers.insert(http::header::HOST, v);
            }
            let state = state.clone();
            let applied = applied.clone();
            let m = m.clone();
            state
                .metrics
                .mirrors
                .get_or_create(&vec![("destination_host", m.host.clone())])
                .inc();
            tokio::spawn(async move {
                let target = meshc_ir::WeightedDestination {
                    host: m.host.clone(),
                    subset: m.subset.clone(),
                    port: m.port,
                    weight: 100,
                    labels: Default::default(),
                    request_headers: Default::default(),
                    response_headers: Default::default(),
                };
                let mut rec = Recorded {
                    dir: Direction::Outbound,
                    log: false,
                    source: state.workload.clone(),
                    destination: String::new(),
                    host: m.host.clone(),
                    route: "mirror".into(),
                    method: String::new(),
                    path: String::new(),
                    request_bytes: 0,
                    trace: Default::default(),
                };
                let never = meshc_ir::Retries {
                    attempts: 0,
                    per_try_timeout_ms: None,
                    retry_on: Vec::new(),
                };
                let resp = forward(
                    &state, &applied, &target, &never, None, None, copy, &mut rec,
                )
                .await;
                let _ = resp.into_body().collect().await;
            });
        }
    }
    let retries = decision.retries();
    let timeout = decision.timeout_ms();
    let hash = hash_key(ir, dest, &ereq);
    let mut resp = forward(state, applied, dest, &retries, timeout, hash, out, rec).await;
    if let Some(rule) = rule {
        apply_ops(resp.headers_mut(), &rule.response_headers);
    }
    apply_ops(resp.headers_mut(), &dest.response_headers);
    resp
}

/// The port a destination is reached on: its own, or its host's only one.
pub(crate) fn destination_port(
    dest: &meshc_ir::WeightedDestination,
    host: &HostPolicy,
) -> Option<u16> {
    dest.port
        .or_else(|| (host.ports.len() == 1).then(|| *host.ports.keys().next().expect("one")))
}

/// The consistent-hash key's hash, when the destination balances by one
/// (under the destination host's policy, which need not be the policy of
/// the host the request named, nor exist for a gateway's host).
fn hash_key(ir: &Ir, dest: &meshc_ir::WeightedDestination, req: &eval::Request) -> Option<u64> {
    let host = ir.hosts.get(&dest.host)?;
    let (tp, _) = host.target(dest.subset.as_deref());
    let LoadBalancer::ConsistentHash(key) = tp.for_port(destination_port(dest, host)).load_balancer
    else {
        return None;
    };
    let v = match &key {
        meshc_ir::HashKey::Header(h) => req.headers.get(&h.to_ascii_lowercase()).cloned(),
        meshc_ir::HashKey::Cookie(c) => req.headers.get("cookie").and_then(|all| {
            all.split(';')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == c)
                .map(|(_, v)| v.to_string())
        }),
        meshc_ir::HashKey::QueryParameter(q) => req.query().get(q.as_str()).map(|v| v.to_string()),
        meshc_ir::HashKey::SourceIp => None,
    };
    v.map(|v| hash_of(&v))
}

/// The cluster of `dest` on `port` under `policy`, and its endpoints (the
/// addresses of `workloads` in the endpoint table in force).
pub(crate) fn destination_cluster(
    state: &State,
    dest: &meshc_ir::WeightedDestination,
    port: Option<u16>,
    policy: meshc_ir::PortPolicy,
    workloads: &[String],
) -> (Arc<Cluster>, Arc<Vec<Arc<Endpoint>>>) {
    let key = ClusterKey {
        host: &dest.host,
        subset: dest.subset.as_deref(),
        port,
    };
    let cluster = state.clusters.get(&key, policy);
    let generation = state
        .clusters
        .generation
        .load(std::sync::atomic::Ordering::Acquire);
    let endpoints = cluster.endpoints(generation, || {
        let all = state.endpoints.read().expect("not poisoned").clone();
        workloads
            .iter()
            .flat_map(|w| {
                let id = all.identities.get(w);
                all.addresses
                    .get(w)
                    .into_iter()
                    .flatten()
                    .map(move |a| (w.clone(), *a, id.cloned()))
            })
            .collect()
    });
    (cluster, endpoints)
}

/// Record how a request or connection to `ep` went, for outlier detection,
/// counting the ejection it may cause.
pub(crate) fn record_outcome(
    state: &State,
    cluster: &Cluster,
    endpoints: &[Arc<Endpoint>],
    ep: &Endpoint,
    outcome: Outcome,
    host: &str,
) {
    if cluster.record(endpoints, ep, outcome, Instant::now()) {
        state
            .metrics
            .ejections
            .get_or_create(&vec![("destination_host", host.to_string())])
            .inc();
    }
}

/// Send to a destination: its cluster's endpoints, pool limits, retries and
/// timeouts.
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &Arc<State>,
    applied: &Applied,
    dest: &meshc_ir::WeightedDestination,
    retries: &meshc_ir::Retries,
    timeout_ms: Option<u64>,
    hash: Option<u64>,
    out: Outgoing,
    rec: &mut Recorded,
) -> Response<ProxyBody> {
    let ir = &applied.ir;
    let Some(host) = ir.hosts.get(&dest.host) else {
        return local(
            StatusCode::SERVICE_UNAVAILABLE,
            "UH",
            "destination host not in this proxy's scope\n",
        );
    };
    set(&mut rec.host, &dest.host);
    let port = destination_port(dest, host);
    let (tp, workloads) = host.target(dest.subset.as_deref());
    let policy = tp.for_port(port);
    let h2 = port.and_then(|p| host.ports.get(&p)).is_some_and(|proto| {
        ["GRPC", "HTTP2", "GRPC-WEB"]
            .iter()
            .any(|p| proto.eq_ignore_ascii_case(p))
    }) || out.version == Version::HTTP_2;
    let mtls = policy.tls == TlsMode::IstioMutual;
    // Between proxies a request goes in the protocol the application spoke
    // (Istio's default, `h2UpgradePolicy: DO_NOT_UPGRADE`): HTTP/1.1 over
    // mTLS on the pooled connections of `upstream::Upstream`, cheaper per
    // request than HTTP/2. `UPGRADE` lifts HTTP/1.1 to HTTP/2 between them:
    // one multiplexed mTLS connection per peer instead of one per request
    // in flight (Linkerd's way). Upgrades stay HTTP/1.1.
    let lift = mtls
        && policy.connection_pool.h2_upgrade
        && !h2
        && out.version == Version::HTTP_11
        && out.upgrade.is_none();
    let h2 = h2 || lift;
    let pool = &policy.connection_pool;
    let limits = upstream::Limits {
        connect_timeout: Duration::from_millis(pool.connect_timeout_ms.max(1)),
        max_requests: pool.max_requests_per_connection,
        idle_timeout: upstream::idle_after(pool.idle_timeout_ms, upstream::IDLE_TIMEOUT),
    };
    let (cluster, endpoints) = destination_cluster(state, dest, port, policy, workloads);
    let work = async {
        let mut out = out;
        let mut last_failed = None;
        let mut attempt = 0;
        let mut _slot = None;
        loop {
            let now = Instant::now();
            let Some(ep) = cluster.pick(&endpoints, hash, last_failed, now) else {
                return local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UH",
                    "no healthy upstream\n",
                );
            };
            set(&mut rec.destination, &ep.workload);
            let Some(permit) = cluster.admit().await else {
                state
                    .metrics
                    .overflows
                    .get_or_create(&vec![("destination_host", dest.host.clone())])
                    .inc();
                let mut r = local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UO",
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow\n",
                );
                r.headers_mut()
                    .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
                return r;
            };
            let active = ep.start();
            let keep = attempt < retries.attempts;
            let mut req = if mtls {
                out.build(Scheme::HTTPS, &ep.mesh_authority, h2, keep)
            } else {
                out.build(Scheme::HTTP, &ep.plain_authority, h2, keep)
            };
            if lift {
                req.headers_mut()
                    .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
            }
            let client = if h2 {
                &state.clients().h2
            } else {
                &state.clients().h1
            };
            let call = client.request_within(req, limits);
            let sent = Instant::now();
            let result = match retries.per_try_timeout_ms {
                Some(ms) => tokio::time::timeout(Duration::from_millis(ms), call).await,
                None => Ok(call.await),
            };
            let a = match result {
                Ok(Ok(r)) => Attempt::Response(r),
                Ok(Err(e)) => Attempt::Failed {
                    connect: e.is_connect(),
                    timeout: false,
                    message: format!("{e}"),
                },
                Err(_) => Attempt::Failed {
                    connect: false,
                    timeout: true,
                    message: "per-try timeout".into(),
                },
            };
            let outcome = match &a {
                Attempt::Response(r) => {
                    ep.observe(sent.elapsed(), Instant::now());
                    Outcome::Status(r.status().as_u16())
                }
                Attempt::Failed { .. } => Outcome::Failed,
            };
            record_outcome(state, &cluster, &endpoints, &ep, outcome, &dest.host);
            let more =
                attempt < retries.attempts && out.replayable() && retriable(&retries.retry_on, &a);
            if more && let Some(slot) = cluster.retry_slot() {
                _slot = Some(slot);
                attempt += 1;
                last_failed = Some(ep.addr);
                state
                    .metrics
                    .retries
                    .get_or_create(&vec![("destination_host", dest.host.clone())])
                    .inc();
                // Envoy's retry back-off: 25 ms base, jittered.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(
                    0..25 * (1 << attempt.min(4)),
                )))
                .await;
                continue;
            }
            return match a {
                Attempt::Response(r) => {
                    let (parts, body) = out.respond(r);
                    // The permit and the in-flight count last as long as the body.
                    let held = (permit, active);
                    let body =
                        Observed::new(body.map_err(BoxError::from).boxed(), None, move |_| {
                            drop(held)
                        });
                    Response::from_parts(parts, body.boxed())
                }
                Attempt::Failed { timeout: true, .. } => local(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UT",
                    "upstream request timeout\n",
                ),
                Attempt::Failed { message, .. } => local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UF",
                    &format!(
                        "upstream connect error or disconnect/reset before headers: {message}\n"
                    ),
                ),
            };
        }
    };
    match timeout_ms {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), work).await {
            Ok(r) => r,
            Err(_) => local(
                StatusCode::GATEWAY_TIMEOUT,
                "UT",
                "upstream request timeout\n",
            ),
        },
        None => work.await,
    }
}

/// The caller of a connection: its address, and what its client
/// certificate says.
pub(crate) struct Caller {
    /// Its principal (`<trust domain>/ns/<ns>/sa/<sa>`), for authorization.
    principal: Option<String>,
    /// `<ns>/sa/<sa>`, or `unknown`: the metrics' `source`.
    source: String,
    /// Its address, for authorization's `ipBlocks`.
    ip: Option<std::net::IpAddr>,
}

impl Caller {
    fn of(conn: &Conn) -> Caller {
        let principal = conn.identity.as_deref().and_then(principal);
        let source = principal
            .as_deref()
            .and_then(|p| {
                let mut parts = p.split('/');
                let (_td, _ns, ns, _sa, sa) = (
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                );
                Some(format!("{ns}/sa/{sa}"))
            })
            .unwrap_or_else(|| "unknown".into());
        Caller {
            principal,
            source,
            ip: conn.remote.map(|a| a.ip()),
        }
    }
}

async fn inbound(
    state: Arc<State>,
    req: Request<Incoming>,
    caller: &Caller,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let applied = state.current();
    let read = applied.as_deref().map_or(&NONE_READ, |a| &a.headers_read);
    let ereq = eval_request(&req, Some(state.app_addr.port()), read);
    let principal = caller.principal.clone();
    let mut rec = Recorded::new(&state, Direction::Inbound, &ereq);
    set(&mut rec.source, &caller.source);
    rec.destination.clone_from(&state.workload);
    rec.host.push_str(host_only(&ereq.host));
    rec.route.push_str("inbound");
    let resp = async {
        let Some(applied) = applied else {
            return local(StatusCode::SERVICE_UNAVAILABLE, "NC", "no config yet\n");
        };
        let Some(w) = applied.ir.workloads.get(&state.workload) else {
            return local(StatusCode::SERVICE_UNAVAILABLE, "NC", "no inbound policy\n");
        };
        let peer = Peer {
            namespace: None,
            labels: meshc_ir::Map::default(),
            principal,
            ip: caller.ip,
            request_principal: None,
        };
        let decision = eval::authorize(w, &ereq, &peer);
        if !decision.allowed {
            state.metrics.count_denied(decision.policy);
            set(&mut rec.route, "denied");
            // Envoy's RBAC answer: nothing of the application's leaks.
            return local(StatusCode::FORBIDDEN, "RBAC", "RBAC: access denied");
        }
        let mut out = match Outgoing::read(req, &mut rec).await {
            Ok(o) => o,
            Err(r) => return r,
        };
        let h2 = out.version == Version::HTTP_2 && !out.orig_h1;
        let req = out.build(Scheme::HTTP, &state.app_authority, h2, false);
        let client = if h2 {
            &state.clients().h2
        } else {
            &state.clients().h1
        };
        match client.request(req).await {
            Ok(r) => {
                let (parts, body) = out.respond(r);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed())
            }
            Err(e) => local(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                &format!("the application is not reachable: {e}\n"),
            ),
        }
    }
    .await;
    record(&state, rec, start, resp)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use meshc_ir::{
        ConnectionPool, HashKey, HostPolicy, Ir, LoadBalancer, Mesh, TlsMode, TrafficPolicy,
        WeightedDestination,
    };

    use super::*;

    fn host(lb: LoadBalancer) -> HostPolicy {
        let policy = TrafficPolicy {
            load_balancer: lb,
            connection_pool: ConnectionPool::default(),
            outlier_detection: None,
            tls: TlsMode::IstioMutual,
            ports: BTreeMap::new(),
        };
        HostPolicy {
            ports: [(9080, "HTTP".to_string())].into(),
            ..HostPolicy::new("shop", policy)
        }
    }

    /// The hash key comes from the destination host's policy: not from the
    /// host the request named (a gateway host has none; a route may lead to
    /// another host), and not on the port the request came in on.
    #[test]
    fn retry_conditions_read_the_status_and_grpc_status() {
        let on = |conds: &str, tried: Tried<'_>| {
            let conds: Vec<String> = conds.split(',').map(str::to_string).collect();
            retry_covers(&conds, tried)
        };
        let none = HeaderMap::new();
        let mut unavailable = HeaderMap::new();
        unavailable.insert("grpc-status", HeaderValue::from_static("14"));
        let ok = Tried::Answered(200, &none);
        // The Istio default.
        let default = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
        assert!(!on(default, ok));
        assert!(on(default, Tried::Answered(200, &unavailable)));
        assert!(!on("cancelled", Tried::Answered(200, &unavailable)));
        assert!(on(
            default,
            Tried::Failed {
                connect: true,
                timeout: false
            }
        ));
        assert!(!on(
            "connect-failure",
            Tried::Failed {
                connect: false,
                timeout: true
            }
        ));
        assert!(on(
            "reset",
            Tried::Failed {
                connect: false,
                timeout: false
            }
        ));
        assert!(on("5xx", Tried::Answered(503, &none)));
        assert!(!on("5xx", Tried::Answered(404, &none)));
        assert!(on("gateway-error", Tried::Answered(504, &none)));
        assert!(!on("gateway-error", Tried::Answered(500, &none)));
        assert!(on("retriable-4xx", Tried::Answered(409, &none)));
        // Status codes, after conditions that do not match.
        assert!(on("unavailable,404,503", Tried::Answered(503, &none)));
        assert!(!on("unavailable,404,503", ok));
        assert!(on("200", ok));
    }

    #[test]
    fn hash_key_follows_the_destination_hosts_policy() {
        let mut ir = Ir::new(Mesh {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        });
        let reviews = "reviews.shop.svc.cluster.local";
        ir.hosts.insert(
            reviews.into(),
            host(LoadBalancer::ConsistentHash(HashKey::Header(
                "X-User".into(),
            ))),
        );
        ir.hosts.insert(
            "front.shop.svc.cluster.local".into(),
            host(LoadBalancer::RoundRobin),
        );
        let dest = |h: &str| WeightedDestination {
            host: h.into(),
            subset: None,
            port: None,
            weight: 100,
            labels: meshc_ir::Map::default(),
            request_headers: Default::default(),
            response_headers: Default::default(),
        };
        let req = |user: Option<&str>| eval::Request {
            host: "shop.example.com".into(),
            port: Some(8080),
            method: "GET".into(),
            path: "/".into(),
            scheme: "http".into(),
            headers: user
                .map(|u| ("x-user".to_string(), u.to_string()))
                .into_iter()
                .collect(),
            gateway: Some("shop/public".into()),
        };
        let a = hash_key(&ir, &dest(reviews), &req(Some("ann")));
        assert_eq!(a, Some(crate::balance::hash_of("ann")));
        assert_ne!(a, hash_key(&ir, &dest(reviews), &req(Some("bob"))));
        assert_eq!(hash_key(&ir, &dest(reviews), &req(None)), None);
        assert_eq!(
            hash_key(
                &ir,
                &dest("front.shop.svc.cluster.local"),
                &req(Some("ann"))
            ),
            None
        );
        assert_eq!(hash_key(&ir, &dest("elsewhere"), &req(Some("ann"))), None);
    }
}
