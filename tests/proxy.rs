//! The data plane end to end, with real processes on loopback: `meshc serve`
//! following a Git repository, `meshc echo` applications, and a `meshc proxy`
//! in front of each, registering its endpoint with the control plane and
//! talking mTLS to the others. Traffic goes through the proxies' real
//! listeners; what they do is checked against the policy (and against `ir`'s
//! evaluator for authorization), and their `/metrics` are parsed as
//! Prometheus text.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::net::{commit_all, http};
use git2::Repository;
use meshc_dataplane::http::{Answer, Clients, admin_get, send};

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reviews, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: flaky, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: pool, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: shop}
spec:
  selector: {app: flaky}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: pool, namespace: shop}
spec:
  selector: {app: pool}
  ports: [{name: http, port: 9080}]
---
DEPLOYMENTS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: testers
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]
  - name: grpc
    match: [{port: 9090}]
    route: [{destination: {host: reviews, subset: v1, port: {number: 9090}}}]
  - name: canary
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 95
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 5
    retries: {attempts: 3, retryOn: 5xx}
    timeout: 1s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: shop}
spec:
  host: flaky
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 2s
      maxEjectionPercent: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: shop}
spec:
  hosts: [flaky]
  http:
  - name: no-retries
    route: [{destination: {host: flaky}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: shop}
spec:
  host: pool
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pool, namespace: shop}
spec:
  selector: {matchLabels: {app: pool}}
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
    to:
    - {operation: {methods: [GET]}}
    - {operation: {methods: [POST], paths: [/echo.Echo/*]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-no-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin*]}}]
"#;

/// (workload, app label, version, service account).
type Workload = (&'static str, &'static str, &'static str, &'static str);

const WORKLOADS: &[Workload] = &[
    ("web-v1", "web", "v1", "web"),
    ("reviews-v1", "reviews", "v1", "reviews"),
    ("reviews-v2", "reviews", "v2", "reviews"),
    ("flaky-v1", "flaky", "v1", "flaky"),
    ("flaky-v2", "flaky", "v2", "flaky"),
    ("pool-v1", "pool", "v1", "pool"),
];

/// `template` with a Deployment per workload in place of `DEPLOYMENTS`.
fn policy(template: &str, workloads: &[Workload]) -> String {
    let deployments: Vec<String> = workloads
        .iter()
        .map(|(name, app, version, sa)| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
                 spec:\n  selector: {{matchLabels: {{app: {app}, version: {version}}}}}\n  \
                 template:\n    metadata: {{labels: {{app: {app}, version: {version}}}}}\n    \
                 spec: {{serviceAccountName: {sa}, containers: [{{name: app, image: echo}}]}}\n"
            )
        })
        .collect();
    template.replace("DEPLOYMENTS", &deployments.join("---\n"))
}

/// Child processes, killed when the test ends however it ends (a leaked one
/// would hold the test's output open).
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn spawn(&mut self, name: &str, logs: &Path, args: &[String]) {
        self.spawn_exe(env!("CARGO_BIN_EXE_meshc"), name, logs, args);
    }

    fn spawn_exe(&mut self, exe: &str, name: &str, logs: &Path, args: &[String]) {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let child = Command::new(exe)
            .args(args)
            .env("MESHC_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshc starts");
        self.0.push((name.to_string(), child));
    }

    fn kill(&mut self, name: &str) {
        let (_, c) = self.0.iter_mut().find(|(n, _)| n == name).expect("started");
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// The tail of every process log, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        if !tail.is_empty() {
            out += &format!("== {}\n", p.display());
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
    }
    out
}

struct Node {
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
    /// Its outbound TCP listeners, in the order of its `--tcp-upstream` flags.
    tcp: Vec<SocketAddr>,
    /// Its gateway listeners, in the order of its `--gateway-listen` flags.
    gateway: Vec<SocketAddr>,
}

struct Mesh {
    procs: Procs,
    nodes: BTreeMap<&'static str, Node>,
    /// The control plane's gRPC address and data directory (its CA).
    grpc: SocketAddr,
    data: PathBuf,
    api: u16,
    logs: PathBuf,
    client: Clients,
}

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

async fn get(mesh: &Mesh, addr: SocketAddr, path: &str) -> Option<Answer> {
    admin_get(&mesh.client, addr, path).await.ok()
}

async fn config_of(mesh: &Mesh, w: &str) -> Option<serde_json::Value> {
    let a = get(mesh, mesh.nodes[w].admin, "/config").await?;
    a.status
        .is_success()
        .then(|| serde_json::from_slice(&a.body).ok())
        .flatten()
}

async fn eventually<F, Fut>(what: &str, mesh: &Mesh, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            logs(&mesh.logs)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first line of `name`'s log that starts with `prefix`, once it is
/// there: the processes bind port 0 and print where they listen, so no port
/// is ever chosen here and raced for.
fn announced(dir: &Path, name: &str, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        // Only whole lines: the process may be writing this one.
        if let Some(line) = text
            .split_inclusive('\n')
            .find(|l| l.starts_with(prefix) && l.ends_with('\n'))
        {
            return line[prefix.len()..].trim_end().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not start\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(text: &str) -> SocketAddr {
    text.trim()
        .trim_start_matches("http://")
        .trim_start_matches("tcp://")
        .parse()
        .unwrap_or_else(|e| panic!("`{text}`: {e}"))
}

/// Extra arguments of a workload's echo application and of its proxy.
/// Extra arguments for a workload's echo application and its proxy, given
/// the test's work directory.
type Extra = fn(&str, &Path) -> (Vec<String>, Vec<String>);

/// A Git repository in `work/repo` whose one commit, `message`, holds
/// `text` as `policy.yaml`.
fn policy_repo(work: &Path, text: &str, message: &str) -> (std::path::PathBuf, Repository) {
    let dir = work.join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Repository::init(&dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    std::fs::write(dir.join("policy.yaml"), text).unwrap();
    commit_all(&repo, message);
    (dir, repo)
}

async fn start(work: &Path, repo: &Path, workloads: &[Workload], extra: Extra) -> Mesh {
    let data = work.join("data");
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut procs = Procs::default();
    let s = |v: &str| v.to_string();
    procs.spawn(
        "serve",
        &logs,
        &[
            s("serve"),
            s("--repo"),
            repo.display().to_string(),
            s("--data-dir"),
            data.display().to_string(),
            s("--grpc-addr"),
            s("127.0.0.1:0"),
            s("--http-addr"),
            s("127.0.0.1:0"),
            s("--poll-seconds"),
            s("3600"),
            s("--debounce-ms"),
            s("5"),
            s("--bootstrap-token"),
            s("boot"),
            s("--api-token"),
            s("api"),
        ],
    );
    // `meshc serve: gRPC on A, API on http://B`
    let line = announced(&logs, "serve", "meshc serve: gRPC on ");
    let (grpc, api) = line.split_once(", API on ").expect("both addresses");
    let (grpc, api) = (addr(grpc), addr(api));
    let mut nodes = BTreeMap::new();
    for (i, (name, app, version, sa)) in workloads.iter().enumerate() {
        let (echo_extra, proxy_extra) = extra(name, work);
        let mut echo = vec![
            s("echo"),
            s("--listen"),
            s("127.0.0.1:0"),
            s("--service"),
            s(app),
            s("--version"),
            s(version),
        ];
        echo.extend(echo_extra);
        procs.spawn(&format!("echo-{name}"), &logs, &echo);
        let app_addr = addr(&announced(&logs, &format!("echo-{name}"), "meshc echo: "));
        let proxy = format!("proxy-{name}");
        let mut args = proxy_args(grpc, &data, name, sa, app_addr, None);
        args.extend(proxy_extra);
        // Every other proxy is the sidecar binary with two worker threads,
        // the rest `meshc proxy` with one: the same proxy, so each test runs
        // both against each other.
        if i % 2 == 1 {
            args.extend(["--threads".to_string(), "2".to_string()]);
            procs.spawn_exe(env!("CARGO_BIN_EXE_meshc-proxy"), &proxy, &logs, &args[1..]);
        } else {
            procs.spawn(&proxy, &logs, &args);
        }
        // `meshc proxy: outbound A, inbound B, admin http://C`
        let line = announced(&logs, &proxy, "meshc proxy: outbound ");
        // `meshc proxy: tcp A to HOST:PORT`, one per upstream, and
        // `meshc proxy: gateway port P on A`, one per gateway listener,
        // printed before.
        let log = std::fs::read_to_string(logs.join(format!("{proxy}.log"))).unwrap();
        let tcp = log
            .lines()
            .filter_map(|l| l.strip_prefix("meshc proxy: tcp "))
            .map(|l| addr(l.split_once(" to ").expect("tcp upstream").0))
            .collect();
        let gateway = log
            .lines()
            .filter_map(|l| l.strip_prefix("meshc proxy: gateway port "))
            .map(|l| addr(l.split_once(" on ").expect("gateway listener").1))
            .collect();
        let (outbound, rest) = line.split_once(", inbound ").expect("inbound");
        let (inbound, admin) = rest.split_once(", admin ").expect("admin");
        nodes.insert(
            *name,
            Node {
                outbound: addr(outbound),
                inbound: addr(inbound),
                admin: addr(admin),
                tcp,
                gateway,
            },
        );
    }
    let api = api.port();
    let mesh = Mesh {
        procs,
        nodes,
        grpc,
        data,
        api,
        logs,
        client: Clients::new(Default::default()),
    };
    // Ready: every proxy has a config listing every workload's endpoint.
    for (name, ..) in workloads {
        eventually(
            &format!("{name}'s config with every endpoint"),
            &mesh,
            || async {
                config_of(&mesh, name).await.is_some_and(|c| {
                    c["endpoints"]
                        .as_object()
                        .is_some_and(|e| e.len() == workloads.len())
                })
            },
        )
        .await;
    }
    mesh
}

/// `meshc proxy` for workload `shop/<name>` on ephemeral ports, registering
/// `advertise` (default: its inbound listener) as its endpoint.
fn proxy_args(
    grpc: SocketAddr,
    data: &Path,
    name: &str,
    sa: &str,
    app: SocketAddr,
    advertise: Option<SocketAddr>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "proxy",
        "--control-plane",
        &format!("https://{grpc}"),
        "--ca-file",
        &data.join("ca.pem").display().to_string(),
        "--bootstrap-token",
        "boot",
        "--workload",
        &format!("shop/{name}"),
        "--service-account",
        sa,
        "--outbound-addr",
        "127.0.0.1:0",
        "--inbound-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--app-addr",
        &app.to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    if let Some(a) = advertise {
        args.extend(["--advertise-addr".to_string(), a.to_string()]);
    }
    args
}

/// A request from workload `from`'s application through its proxy.
async fn call(
    mesh: &Mesh,
    from: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(
        &mesh.client,
        mesh.nodes[from].outbound,
        host,
        method.parse().unwrap(),
        path,
        headers,
        Bytes::new(),
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("{from} -> {host}{path}: {e}\n{}", logs(&mesh.logs)))
}

/// `n` GETs of `host` sent at once through `from`'s outbound listener, each
/// held `delay_ms` by the application so that they overlap; the answers in
/// order.
async fn at_once(mesh: &Mesh, from: &str, host: &str, n: usize, delay_ms: &str) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, out) = (mesh.client.clone(), mesh.nodes[from].outbound);
            let (host, delay) = (host.to_string(), delay_ms.to_string());
            tokio::spawn(async move {
                send(
                    &client,
                    out,
                    &host,
                    http::Method::GET,
                    "/",
                    &[("x-echo-delay-ms", &delay)],
                    Bytes::new(),
                    false,
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{from} -> {host}: {e}")),
        );
    }
    answers
}

/// A request body of `chunks` chunks of `size` bytes with no length: the
/// client sends it chunked, as a stream.
struct Chunks(Vec<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = meshc_dataplane::http::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A POST with a streaming body through `from`'s outbound listener to
/// reviews, whose first answer for `key` is a 503.
async fn stream_call(mesh: &Mesh, from: &str, key: &str, chunks: usize, size: usize) -> Answer {
    use http_body_util::BodyExt;
    let body = Chunks(vec![Bytes::from(vec![b'x'; size]); chunks]);
    let mut req = http::Request::new(body.boxed());
    *req.method_mut() = http::Method::POST;
    // The AuthorizationPolicy lets POSTs through on the echo service's paths.
    *req.uri_mut() = format!("http://{}/echo.Echo/Upload", mesh.nodes[from].outbound)
        .parse()
        .unwrap();
    let h = req.headers_mut();
    h.insert(http::header::HOST, "reviews:9080".parse().unwrap());
    h.insert("x-echo-fail-first", "1".parse().unwrap());
    h.insert("x-echo-key", key.parse().unwrap());
    let resp = mesh.client.h1.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        trailers: None,
    }
}

/// Switch a connection through `from`'s outbound listener to reviews to the
/// echo protocol, then check bytes come back across the tunnel, before and
/// after the route timeout.
async fn upgraded_echo(mesh: &Mesh, from: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(mesh.nodes[from].outbound)
        .await
        .unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: reviews:9080\r\nConnection: Upgrade\r\nUpgrade: meshc-echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte))
            .await
            .expect("the response head in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: meshc-echo"), "{head}");
    for (i, wait) in [0u64, 1200].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let msg = format!("ping {i}\n");
        tcp.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
            .await
            .expect("the echo in time")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&back), msg);
    }
}

fn version(a: &Answer) -> String {
    a.headers
        .get("x-echo-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string()
}

fn flag(a: &Answer) -> &str {
    a.headers
        .get("x-meshc-flags")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The samples of `/metrics`, parsed as Prometheus text.
async fn metrics(mesh: &Mesh, w: &str) -> prometheus_parse::Scrape {
    let a = get(mesh, mesh.nodes[w].admin, "/metrics")
        .await
        .expect("metrics");
    assert!(a.status.is_success());
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The sum of the samples named `name` whose labels include `labels`.
fn sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_proxy_enforces_the_policy_on_real_traffic() {
    let work = tempfile::tempdir().unwrap();
    let (repo_dir, repo) = policy_repo(work.path(), &policy(POLICY, WORKLOADS), "the shop");
    let mut mesh = start(work.path(), &repo_dir, WORKLOADS, |_, _| Default::default()).await;

    // 95/5 over 2,000 requests, within four standard deviations.
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..2000 {
        let a = call(&mesh, "web-v1", "reviews:9080", "GET", "/r", &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        *by_version.entry(version(&a)).or_default() += 1;
    }
    let v2 = by_version.get("v2").copied().unwrap_or(0) as f64;
    let (n, p) = (2000.0, 0.05);
    let sd = f64::sqrt(n * p * (1.0 - p));
    assert!(
        (v2 - n * p).abs() <= 4.0 * sd,
        "95/5 split measured as {by_version:?}"
    );
    assert_eq!(by_version.len(), 2, "{by_version:?}");

    // Header routing.
    for _ in 0..20 {
        let a = call(
            &mesh,
            "web-v1",
            "reviews:9080",
            "GET",
            "/r",
            &[("end-user", "jason")],
        )
        .await;
        assert_eq!((a.status.as_u16(), version(&a)), (200, "v2".to_string()));
    }

    // Between the proxies HTTP/1.1 rides one multiplexed HTTP/2 connection
    // (reviews' `h2UpgradePolicy: UPGRADE`):
    // 24 requests at once (each held 300 ms by the application, so they
    // overlap) open at most one new connection per reviews proxy, where one
    // HTTP/1.1 connection per request in flight would open about 24, and
    // reach the application as HTTP/1.1 again.
    let inbound_connections = |m: &prometheus_parse::Scrape| {
        sum(
            m,
            "meshc_proxy_tcp_connections_total",
            &[("direction", "inbound")],
        )
    };
    let mut before = 0.0;
    for w in ["reviews-v1", "reviews-v2"] {
        before += inbound_connections(&metrics(&mesh, w).await);
    }
    for a in at_once(&mesh, "web-v1", "reviews:9080", 24, "300").await {
        assert_eq!(a.status, 200, "{a:?}");
        let echoed: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(echoed["protocol"], "HTTP/1.1", "{echoed}");
        assert!(
            echoed["headers"].get("meshc-orig-proto").is_none(),
            "{echoed}"
        );
    }
    let mut after = 0.0;
    for w in ["reviews-v1", "reviews-v2"] {
        after += inbound_connections(&metrics(&mesh, w).await);
    }
    assert!(
        after - before <= 2.0,
        "24 requests at once opened {} connections between the proxies",
        after - before
    );

    // reviews-v1's proxy runs two worker threads, each with its own socket
    // on the outbound address: calls to pool on connections of their own
    // reach both (the
    // kernel picks one by the connection's addresses; all 16 going to one
    // worker has a chance of 2 in 65,536), and every one is served.
    let reviews_out = mesh.nodes["reviews-v1"].outbound;
    for _ in 0..16 {
        let answer = plaintext_get(reviews_out, "pool:9080").await;
        let answer = answer.expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let m = metrics(&mesh, "reviews-v1").await;
    for worker in ["0", "1"] {
        let accepted = sum(
            &m,
            "meshc_proxy_tcp_connections_total",
            &[("direction", "outbound"), ("worker", worker)],
        );
        assert!(accepted >= 1.0, "worker {worker} accepted {accepted}");
    }

    // Traces continue across both hops: the trace id the application sent
    // arrives, under a new span id (B3 headers alongside).
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let a = call(
        &mesh,
        "web-v1",
        "reviews:9080",
        "GET",
        "/r",
        &[("traceparent", &format!("00-{trace}-{parent}-01"))],
    )
    .await;
    let echoed: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let tp = echoed["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{echoed}");
    assert_eq!(parts[1], trace, "{echoed}");
    assert_ne!(parts[2], parent, "a new span per hop: {echoed}");
    assert_eq!(
        echoed["headers"]["x-b3-traceid"].as_str(),
        Some(trace),
        "{echoed}"
    );
    assert!(
        echoed["headers"]["x-b3-parentspanid"].is_string(),
        "{echoed}"
    );

    // Retries turn the first two 503s into a success.
    let before = sum(
        &metrics(&mesh, "web-v1").await,
        "meshc_proxy_retries_total",
        &[],
    );
    let a = call(
        &mesh,
        "web-v1",
        "reviews:9080",
        "GET",
        "/r",
        &[("x-echo-fail-first", "2"), ("x-echo-key", "retry-1")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let after = sum(
        &metrics(&mesh, "web-v1").await,
        "meshc_proxy_retries_total",
        &[("destination_host", "reviews.shop.svc.cluster.local")],
    );
    assert!(after >= before + 2.0, "retries {before} -> {after}");

    // A streaming (chunked) request body is retried too, whole, when it fits
    // in the proxy's retry buffer; a larger one is not retried.
    let a = stream_call(&mesh, "web-v1", "retry-stream-1", 2, 40 * 1024).await;
    assert_eq!(a.status, 200, "{a:?}");
    let echoed: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        echoed["body_bytes"],
        80 * 1024,
        "the retry carried the whole body"
    );
    let a = stream_call(&mesh, "web-v1", "retry-stream-2", 48, 40 * 1024).await;
    assert_eq!(
        a.status, 503,
        "a body over the retry buffer is sent once: {a:?}"
    );

    // An HTTP/1.1 upgrade (as a WebSocket handshake does) is tunnelled
    // through both proxies, mTLS between them, and outlives the route's
    // 1 s timeout.
    upgraded_echo(&mesh, "web-v1").await;

    // The route's 1 s timeout.
    let started = Instant::now();
    let a = call(
        &mesh,
        "web-v1",
        "reviews:9080",
        "GET",
        "/r",
        &[("x-echo-delay-ms", "3000")],
    )
    .await;
    assert_eq!((a.status.as_u16(), flag(&a)), (504, "UT"), "{a:?}");
    assert!(started.elapsed() < Duration::from_millis(2500));

    // Connection-pool overflow: one connection, one pending, eight at once.
    let codes: Vec<(u16, String)> = at_once(&mesh, "web-v1", "pool:9080", 8, "400")
        .await
        .iter()
        .map(|a| (a.status.as_u16(), flag(a).to_string()))
        .collect();
    let overflowed = codes.iter().filter(|(c, f)| *c == 503 && f == "UO").count();
    let ok = codes.iter().filter(|(c, _)| *c == 200).count();
    assert!(
        overflowed >= 5 && ok >= 1 && ok + overflowed == 8,
        "{codes:?}"
    );
    let m = metrics(&mesh, "web-v1").await;
    assert_eq!(
        sum(&m, "meshc_proxy_circuit_breaker_overflows_total", &[]),
        overflowed as f64
    );

    // Outlier detection: v1 fails, is ejected after two errors, and traffic
    // goes to v2 until the ejection time is over.
    let mut seen = Vec::new();
    for _ in 0..12 {
        let a = call(
            &mesh,
            "web-v1",
            "flaky:9080",
            "GET",
            "/",
            &[("x-echo-fail-version", "v1")],
        )
        .await;
        seen.push((a.status.as_u16(), version(&a)));
    }
    let failures = seen.iter().filter(|(c, _)| *c == 503).count();
    assert_eq!(failures, 2, "{seen:?}");
    assert!(
        seen[seen.len() - 6..]
            .iter()
            .all(|s| *s == (200, "v2".into())),
        "{seen:?}"
    );
    let m = metrics(&mesh, "web-v1").await;
    assert_eq!(sum(&m, "meshc_proxy_outlier_ejections_total", &[]), 1.0);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut back = BTreeMap::<String, usize>::new();
    for _ in 0..6 {
        let a = call(&mesh, "web-v1", "flaky:9080", "GET", "/", &[]).await;
        assert_eq!(a.status, 200);
        *back.entry(version(&a)).or_default() += 1;
    }
    assert_eq!(
        back.get("v1"),
        Some(&3),
        "round robin again after the ejection: {back:?}"
    );

    // gRPC over HTTP/2 end to end: trailers arrive, statuses are counted.
    for (status, want) in [("0", "0"), ("14", "14")] {
        let a = send(
            &mesh.client,
            mesh.nodes["web-v1"].outbound,
            "reviews:9090",
            http::Method::POST,
            "/echo.Echo/Say",
            &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("x-echo-grpc-status", status),
            ],
            Bytes::from_static(b"\0\0\0\0\x02hi"),
            true,
        )
        .await
        .unwrap_or_else(|e| panic!("gRPC: {e}\n{}", logs(&mesh.logs)));
        assert_eq!(a.status, 200);
        assert_eq!(&a.body[..], b"\0\0\0\0\x02hi");
        let trailers = a.trailers.expect("trailers preserved");
        assert_eq!(trailers["grpc-status"], want);
    }
    let m = metrics(&mesh, "web-v1").await;
    assert_eq!(
        sum(
            &m,
            "meshc_proxy_grpc_responses_total",
            &[("grpc_status", "14")]
        ),
        1.0
    );
    let m = metrics(&mesh, "reviews-v1").await;
    assert_eq!(
        sum(
            &m,
            "meshc_proxy_grpc_responses_total",
            &[("grpc_status", "14"), ("direction", "inbound")]
        ),
        1.0
    );

    // Authorization: the proxies agree with ir's evaluator, case by case.
    let ir = {
        let inputs = vec![meshc_compiler::Input::bytes(
            "policy.yaml",
            policy(POLICY, WORKLOADS).into_bytes(),
        )];
        meshc_compiler::compile(inputs, &meshc_compiler::Options::default())
            .ir
            .expect("the policy compiles")
    };
    let reviews = &ir.workloads["shop/reviews-v1"];
    for (from, sa, method, path) in [
        ("web-v1", "web", "GET", "/reviews"),
        ("web-v1", "web", "POST", "/reviews"),
        ("web-v1", "web", "POST", "/echo.Echo/Say"),
        ("web-v1", "web", "GET", "/admin/x"),
        ("flaky-v1", "flaky", "GET", "/reviews"),
        ("pool-v1", "pool", "GET", "/admin"),
    ] {
        let expected = meshc_ir::eval::authorize(
            reviews,
            &meshc_ir::eval::Request {
                host: "reviews:9080".into(),
                port: None,
                method: method.into(),
                path: path.into(),
                scheme: "http".into(),
                headers: Default::default(),
                gateway: None,
            },
            &meshc_ir::eval::Peer {
                principal: Some(format!("cluster.local/ns/shop/sa/{sa}")),
                ..Default::default()
            },
        );
        let a = call(
            &mesh,
            from,
            "reviews:9080",
            method,
            path,
            &[("end-user", "jason")],
        )
        .await;
        let want = if expected.allowed { 200 } else { 403 };
        assert_eq!(
            a.status.as_u16(),
            want,
            "{from} {method} {path}: {expected:?} {a:?}"
        );
        if !expected.allowed {
            assert_eq!(
                &a.body[..],
                b"RBAC: access denied",
                "nothing of the application leaks"
            );
            assert!(a.headers.get("x-echo-service").is_none());
        }
    }

    // STRICT refuses plaintext and certificates of another CA; PERMISSIVE
    // takes plaintext.
    let reviews_in = mesh.nodes["reviews-v1"].inbound;
    assert!(
        plaintext_get(reviews_in, "pool").await.is_none(),
        "STRICT answered plaintext"
    );
    assert!(
        foreign_tls_get(reviews_in).await.is_none(),
        "STRICT accepted a foreign certificate"
    );
    let pool_in = mesh.nodes["pool-v1"].inbound;
    let answer = plaintext_get(pool_in, "pool")
        .await
        .expect("PERMISSIVE answers plaintext");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let m = metrics(&mesh, "reviews-v1").await;
    assert!(sum(&m, "meshc_proxy_tcp_connections_refused_total", &[]) >= 2.0);

    // A config swap under steady load: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
            let client = mesh.client.clone();
            let out = mesh.nodes["web-v1"].outbound;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match send(
                        &client,
                        out,
                        "reviews:9080",
                        http::Method::GET,
                        "/r",
                        &[],
                        Bytes::new(),
                        false,
                    )
                    .await
                    {
                        Ok(a) if a.status == 200 => {}
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let old = config_of(&mesh, "web-v1").await.unwrap()["version"].clone();
    let text = std::fs::read_to_string(repo_dir.join("policy.yaml")).unwrap();
    let text = text
        .replace("weight: 95", "weight: 50")
        .replace("weight: 5\n", "weight: 50\n");
    std::fs::write(repo_dir.join("policy.yaml"), text).unwrap();
    commit_all(&repo, "canary 50/50");
    let (status, body) = http(
        loopback(mesh.api),
        "POST",
        "/api/v1/sync",
        &[("Authorization", "Bearer api")],
        "",
    );
    assert_eq!(status, 202, "{body}");
    eventually("the new config at web-v1", &mesh, || async {
        config_of(&mesh, "web-v1")
            .await
            .is_some_and(|c| c["version"] != old)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed during the swap, of {}",
        done.load(Ordering::Relaxed)
    );
    let mut split = BTreeMap::<String, usize>::new();
    for _ in 0..200 {
        let a = call(&mesh, "web-v1", "reviews:9080", "GET", "/r", &[]).await;
        *split.entry(version(&a)).or_default() += 1;
    }
    let v2 = split.get("v2").copied().unwrap_or(0);
    assert!((60..=140).contains(&v2), "50/50 measured as {split:?}");

    // An impostor: a proxy with reviews-v2's certificate (service account
    // `reviews`) that registers flaky-v1's inbound address as its own. The
    // peer there presents flaky's identity, so clients refuse it (and retry
    // elsewhere) instead of sending reviews-v2's traffic to flaky.
    let flaky_in = mesh.nodes["flaky-v1"].inbound;
    let impostor_args = proxy_args(
        mesh.grpc,
        &mesh.data,
        "reviews-v2",
        "reviews",
        loopback(9),
        Some(flaky_in),
    );
    let logs_dir = mesh.logs.clone();
    mesh.procs
        .spawn("proxy-impostor", &logs_dir, &impostor_args);
    let flaky_in_text = flaky_in.to_string();
    eventually(
        "the impostor among reviews-v2's endpoints at web-v1",
        &mesh,
        || async {
            config_of(&mesh, "web-v1").await.is_some_and(|c| {
                c["endpoints"]["shop/reviews-v2"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|e| e.as_str() == Some(flaky_in_text.as_str())))
            })
        },
    )
    .await;
    let identity =
        config_of(&mesh, "web-v1").await.unwrap()["identities"]["shop/reviews-v2"].clone();
    assert_eq!(identity, "spiffe://cluster.local/ns/shop/sa/reviews");
    let before = metrics(&mesh, "web-v1").await;
    for _ in 0..40 {
        let a = call(
            &mesh,
            "web-v1",
            "reviews:9080",
            "GET",
            "/",
            &[("end-user", "jason")],
        )
        .await;
        let service = a
            .headers
            .get("x-echo-service")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            (a.status.as_u16(), service, version(&a).as_str()),
            (200, Some("reviews"), "v2"),
            "a request for reviews-v2 was answered by someone else"
        );
    }
    let after = metrics(&mesh, "web-v1").await;
    let retries = |m: &prometheus_parse::Scrape| sum(m, "meshc_proxy_retries_total", &[]);
    assert!(
        retries(&after) > retries(&before),
        "no request picked the impostor's address (nothing was refused)"
    );
    mesh.procs.kill("proxy-impostor");

    // The control plane goes away; the proxies keep serving their config.
    mesh.procs.kill("serve");
    for _ in 0..50 {
        let a = call(&mesh, "web-v1", "reviews:9080", "GET", "/r", &[]).await;
        assert_eq!(a.status, 200);
    }
    let ready = get(&mesh, mesh.nodes["web-v1"].admin, "/ready")
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    let m = metrics(&mesh, "web-v1").await;
    assert!(
        sum(
            &m,
            "meshc_proxy_requests_total",
            &[("route", "canary"), ("response_code", "200")]
        ) >= 2000.0
    );
}

const TCP_POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: intruder, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: db, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: tcp-postgres, port: 5432}, {name: tls-replication, port: 5433}]
---
DEPLOYMENTS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tls:
  - match: [{port: 5433, sniHosts: [db]}]
    route: [{destination: {host: db, subset: v2, port: {number: 5433}}}]
  tcp:
  - match: [{port: 5432}]
    route:
    - destination: {host: db, subset: v1, port: {number: 5432}}
      weight: 80
    - destination: {host: db, subset: v2, port: {number: 5432}}
      weight: 20
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
"#;

const TCP_WORKLOADS: &[Workload] = &[
    ("web-v1", "web", "v1", "web"),
    ("intruder-v1", "intruder", "v1", "intruder"),
    ("db-v1", "db", "v1", "db"),
    ("db-v2", "db", "v2", "db"),
];

/// Through a TCP connection: the banner line of the application that took
/// it (`db v1`), after checking that it echoes `payload` back; `None` when
/// the connection closes first.
async fn tcp_exchange(addr: SocketAddr, payload: &[u8]) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    banner_exchange(tcp, payload).await
}

/// Over `stream`: the banner line the application sends first, after
/// checking that it echoes `payload` back; `None` when the stream ends
/// first.
async fn banner_exchange<S>(stream: S, payload: &[u8]) -> Option<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut r = BufReader::new(stream);
    let mut banner = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut banner)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return None;
    }
    r.get_mut().write_all(payload).await.ok()?;
    let mut back = vec![0; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut back))
        .await
        .ok()?
        .ok()?;
    assert_eq!(back, payload, "the stream came back changed");
    Some(banner.trim_end().to_string())
}

/// Through a TCP connection that opens with a TLS ClientHello for `sni`:
/// the banner line of the application that took it, after checking that the
/// hello came back byte for byte; `None` when the connection closes first.
async fn tls_exchange(addr: SocketAddr, sni: &str) -> Option<String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut hello = Vec::new();
    rustls::ClientConnection::new(Arc::new(config), name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(&hello).await.ok()?;
    let mut r = BufReader::new(tcp);
    let mut banner = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut banner)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return None;
    }
    let mut back = vec![0; hello.len()];
    tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut back))
        .await
        .ok()?
        .ok()?;
    assert_eq!(back, hello, "the ClientHello came back changed");
    Some(banner.trim_end().to_string())
}

/// Opaque TCP end to end: the host's TCP route splits connections 80/20 by
/// subset, its TLS route sends a ClientHello naming `db` to v2, every stream
/// rides mTLS between the proxies and comes back byte for byte, the ALLOW policy lets the `web` identity in and closes the
/// `intruder`'s connections, and a plaintext client is refused under STRICT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opaque_tcp_is_split_routed_by_sni_authorized_and_spliced_over_mtls() {
    let work = tempfile::tempdir().unwrap();
    let (repo_dir, _) = policy_repo(
        work.path(),
        &policy(TCP_POLICY, TCP_WORKLOADS),
        "tcp policy",
    );
    let extra: Extra = |name, _| {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match name {
            "db-v1" | "db-v2" => (s(&["--tcp"]), s(&["--app-protocol", "tcp"])),
            // Two spellings of the host: short, and with its namespace.
            "web-v1" => (
                vec![],
                s(&["--tcp-upstream", "127.0.0.1:0=db:5432,127.0.0.1:0=db:5433"]),
            ),
            _ => (vec![], s(&["--tcp-upstream", "127.0.0.1:0=db.shop:5432"])),
        }
    };
    let mesh = start(work.path(), &repo_dir, TCP_WORKLOADS, extra).await;
    let web = mesh.nodes["web-v1"].tcp[0];

    // The split: 400 connections, 80% expected on v1 (binomial: sd 8).
    const N: usize = 400;
    let mut v2 = 0;
    for i in 0..N {
        let payload = format!("ping {i}\n");
        let banner = tcp_exchange(web, payload.as_bytes())
            .await
            .unwrap_or_else(|| panic!("connection {i} was closed\n{}", logs(&mesh.logs)));
        match banner.as_str() {
            "db v1" => {}
            "db v2" => v2 += 1,
            other => panic!("answered by `{other}`"),
        }
    }
    assert!(
        (44..=116).contains(&v2),
        "v2 took {v2} of {N} connections, not about 80"
    );
    // A stream is counted when both sides are done, just after the client
    // saw its end.
    let count = |w: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let mesh = &mesh;
        async move {
            sum(
                &metrics(mesh, w).await,
                "meshc_proxy_tcp_streams_total",
                labels,
            )
        }
    };
    const OUT_OK: &[(&str, &str)] = &[
        ("direction", "outbound"),
        ("destination", "db.shop.svc.cluster.local"),
        ("outcome", "ok"),
    ];
    const IN_OK: &[(&str, &str)] = &[("direction", "inbound"), ("outcome", "ok")];
    eventually("every outbound stream counted", &mesh, || async {
        count("web-v1", OUT_OK).await >= N as f64
    })
    .await;
    assert_eq!(count("web-v1", OUT_OK).await, N as f64);
    let m = metrics(&mesh, "web-v1").await;
    let sent = sum(
        &m,
        "meshc_proxy_tcp_stream_bytes_total",
        &[("direction", "outbound"), ("flow", "sent")],
    );
    assert!(sent >= (N * "ping 0\n".len()) as f64, "{sent} bytes sent");

    // The streams rode mTLS: the db proxies saw web's identity (ALLOW needs
    // it), and took them as opaque streams, not HTTP.
    eventually("every inbound stream counted", &mesh, || async {
        count("db-v1", IN_OK).await + count("db-v2", IN_OK).await >= N as f64
    })
    .await;
    assert_eq!(
        count("db-v1", IN_OK).await + count("db-v2", IN_OK).await,
        N as f64
    );
    for db in ["db-v1", "db-v2"] {
        let m = metrics(&mesh, db).await;
        assert_eq!(sum(&m, "meshc_proxy_requests_total", &[]), 0.0);
    }

    // The TLS route on 5433 chooses by the ClientHello's server name: `db`
    // goes to v2 only; another name falls through to the host (either).
    let tls_port = mesh.nodes["web-v1"].tcp[1];
    for _ in 0..20 {
        assert_eq!(tls_exchange(tls_port, "db").await.as_deref(), Some("db v2"));
    }
    let any = tls_exchange(tls_port, "elsewhere.example").await;
    assert!(matches!(any.as_deref(), Some("db v1" | "db v2")), "{any:?}");
    let m = metrics(&mesh, "web-v1").await;
    assert_eq!(
        sum(
            &m,
            "meshc_proxy_tcp_streams_total",
            &[("route", "db.tls[0]"), ("outcome", "ok")]
        ),
        20.0
    );

    // Another identity: its proxy routes it, the db proxy closes it.
    let intruder = mesh.nodes["intruder-v1"].tcp[0];
    for _ in 0..10 {
        assert_eq!(tcp_exchange(intruder, b"let me in\n").await, None);
    }
    const DENIED: &[(&str, &str)] = &[("direction", "inbound"), ("outcome", "denied")];
    eventually("every denied stream counted", &mesh, || async {
        count("db-v1", DENIED).await + count("db-v2", DENIED).await >= 10.0
    })
    .await;
    let mut denied = 0.0;
    for db in ["db-v1", "db-v2"] {
        let m = metrics(&mesh, db).await;
        denied += sum(&m, "meshc_proxy_tcp_streams_total", DENIED);
        // Denied for want of a matching ALLOW rule, and counted as such.
        denied -= sum(
            &m,
            "meshc_proxy_authz_denied_total",
            &[("policy", "no ALLOW policy matched")],
        );
    }
    assert_eq!(
        count("db-v1", DENIED).await + count("db-v2", DENIED).await,
        10.0
    );
    assert_eq!(
        denied, 0.0,
        "every denied stream is counted under the reason it was denied"
    );

    // Plaintext straight to a db proxy under STRICT: refused before the app.
    // (The client speaks first: the proxy tells TLS from plaintext by the
    // first byte.)
    let db_in = mesh.nodes["db-v1"].inbound;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(db_in).await.unwrap();
        tcp.write_all(b"plain\n").await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection was left open");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "",
            "the application answered"
        );
    }
    let m = metrics(&mesh, "db-v1").await;
    assert!(
        sum(
            &m,
            "meshc_proxy_tcp_connections_refused_total",
            &[("reason", "plaintext under STRICT")]
        ) >= 1.0
    );
}

const STALLED_POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: db, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: tcp-postgres, port: 5432}]
---
DEPLOYMENTS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {connectTimeout: 300ms}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

/// An endpoint that takes the TCP connection and never answers the mesh
/// TLS handshake holds an opaque stream only for the destination's connect
/// timeout: the timeout covers the handshake, the client's connection is
/// closed, and the stream is counted as a failed handshake. The endpoint
/// beside it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_tcp_peer_is_given_up_after_the_connect_timeout() {
    let work = tempfile::tempdir().unwrap();
    const WORKLOADS: &[Workload] = &[("web-v1", "web", "v1", "web"), ("db-v1", "db", "v1", "db")];
    let (repo_dir, _) = policy_repo(
        work.path(),
        &policy(STALLED_POLICY, WORKLOADS),
        "tcp policy, 300 ms connect timeout",
    );
    // Accepted by the kernel (the backlog), never read from or written to.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        work.path().join("endpoints.json"),
        serde_json::json!({"shop/db-v1": [stalled.local_addr().unwrap().to_string()]}).to_string(),
    )
    .unwrap();
    let extra: Extra = |name, work| {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match name {
            "db-v1" => (s(&["--tcp"]), s(&["--app-protocol", "tcp"])),
            _ => (
                vec![],
                vec![
                    "--tcp-upstream".into(),
                    "127.0.0.1:0=db:5432".into(),
                    "--endpoints-file".into(),
                    work.join("endpoints.json").display().to_string(),
                ],
            ),
        }
    };
    let mesh = start(work.path(), &repo_dir, WORKLOADS, extra).await;
    let web = mesh.nodes["web-v1"].tcp[0];

    // Round robin over the two endpoints of db-v1: the real one answers,
    // the stalled one is given up on.
    let (mut served, mut closed) = (0, 0);
    for i in 0..8 {
        let started = Instant::now();
        match tcp_exchange(web, format!("ping {i}\n").as_bytes()).await {
            Some(banner) => {
                assert_eq!(banner, "db v1");
                served += 1;
            }
            None => {
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(3),
                    "the stalled handshake held the connection for {took:?}"
                );
                closed += 1;
            }
        }
    }
    assert_eq!((served, closed), (4, 4), "round robin over both endpoints");
    const FAILED: &[(&str, &str)] = &[("direction", "outbound"), ("outcome", "handshake_failed")];
    eventually("the failed handshakes counted", &mesh, || async {
        sum(
            &metrics(&mesh, "web-v1").await,
            "meshc_proxy_tcp_streams_total",
            FAILED,
        ) >= 4.0
    })
    .await;
    assert_eq!(
        sum(
            &metrics(&mesh, "web-v1").await,
            "meshc_proxy_tcp_streams_total",
            FAILED
        ),
        4.0
    );
    drop(stalled);
}

const UPGRADE_POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec:
  selector: {app: plain}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: lifted, namespace: shop}
spec:
  selector: {app: lifted}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: once, namespace: shop}
spec:
  selector: {app: once}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: brief, namespace: shop}
spec:
  selector: {app: brief}
  ports: [{name: http, port: 9080}]
---
DEPLOYMENTS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lifted, namespace: shop}
spec:
  host: lifted
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: once, namespace: shop}
spec:
  host: once
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: brief, namespace: shop}
spec:
  host: brief
  trafficPolicy:
    connectionPool: {http: {idleTimeout: 1s}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

/// HTTP/1.1 requests ride their own HTTP/1.1 connections between proxies
/// (over mTLS) by default, as in Istio, and one multiplexed HTTP/2
/// connection to a host whose DestinationRule says `UPGRADE`: six
/// overlapping requests open six connections to the peer in the first case
/// and one in the second. A burst of a hundred HTTP/1.1 requests opens
/// fewer than half as many connections. `maxRequestsPerConnection: 1`
/// opens one per request. `idleTimeout: 1s` closes the connections a
/// second after their last request, with no more traffic, while those to
/// a host with the default timeout stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2_upgrade_policy_decides_the_protocol_between_proxies() {
    const BURST: usize = 100;
    let work = tempfile::tempdir().unwrap();
    const WORKLOADS: &[Workload] = &[
        ("web-v1", "web", "v1", "web"),
        ("plain-v1", "plain", "v1", "default"),
        ("lifted-v1", "lifted", "v1", "default"),
        ("once-v1", "once", "v1", "default"),
        ("brief-v1", "brief", "v1", "default"),
    ];
    let (repo_dir, _) = policy_repo(
        work.path(),
        &policy(UPGRADE_POLICY, WORKLOADS),
        "h2UpgradePolicy",
    );
    let mesh = start(work.path(), &repo_dir, WORKLOADS, |_, _| (vec![], vec![])).await;
    // Inbound connections of the workload's proxy, by `metric`.
    let inbound = |metric: &'static str, at: &'static str| {
        let mesh = &mesh;
        async move {
            sum(
                &metrics(mesh, at).await,
                metric,
                &[("direction", "inbound")],
            )
        }
    };
    // Connections the workload's proxy accepted from its peers.
    let inbound_connections = |at| inbound("meshc_proxy_tcp_connections_total", at);
    for (host, at) in [("plain", "plain-v1"), ("lifted", "lifted-v1")] {
        let before = inbound_connections(at).await;
        let answers = at_once(&mesh, "web-v1", host, 6, "300").await;
        for a in &answers {
            assert_eq!(a.status, 200, "{host}: {a:?}");
            assert_eq!(version(a), "v1");
        }
        let opened = inbound_connections(at).await - before;
        // Every request rode mTLS either way (the peer is STRICT).
        let m = metrics(&mesh, at).await;
        assert_eq!(
            sum(&m, "meshc_proxy_tcp_connections_refused_total", &[]),
            0.0
        );
        match host {
            "plain" => assert!(
                opened >= 6.0,
                "{opened} connections for 6 HTTP/1.1 requests"
            ),
            _ => assert!(
                opened <= 1.0,
                "{opened} connections for 6 multiplexed requests"
            ),
        }
        // The connections are kept: the same again, one after another and
        // then overlapping, opens none.
        let before = inbound_connections(at).await;
        for _ in 0..20 {
            let a = call(&mesh, "web-v1", host, "GET", "/", &[]).await;
            assert_eq!(a.status, 200);
        }
        at_once(&mesh, "web-v1", host, 6, "300").await;
        let again = inbound_connections(at).await - before;
        assert_eq!(again, 0.0, "{host}: {again} connections opened again");
    }

    // A burst over HTTP/1.1: the requests share the connections as they
    // free up, and a few are made at a time, instead of one connection and
    // mTLS handshake per request in flight.
    let before = inbound_connections("plain-v1").await;
    for a in at_once(&mesh, "web-v1", "plain", BURST, "0").await {
        assert_eq!(a.status, 200, "{a:?}");
    }
    // About 30 here; about 90 when every waiting request makes its own.
    let opened = inbound_connections("plain-v1").await - before;
    assert!(
        opened < (BURST / 2) as f64,
        "{opened} connections for a burst of {BURST}"
    );

    // `maxRequestsPerConnection: 1`: no connection carries a second
    // request (where `plain`'s carried 20 one after another above).
    let before = inbound_connections("once-v1").await;
    for _ in 0..5 {
        let a = call(&mesh, "web-v1", "once", "GET", "/", &[]).await;
        assert_eq!(a.status, 200);
    }
    let opened = inbound_connections("once-v1").await - before;
    assert_eq!(opened, 5.0, "{opened} connections for 5 requests");

    // `idleTimeout: 1s`: the connections go a second after their last
    // request, and nothing else comes to find them idle.
    let open = |at| inbound("meshc_proxy_tcp_connections_open", at);
    for a in at_once(&mesh, "web-v1", "brief", 6, "300").await {
        assert_eq!(a.status, 200, "{a:?}");
    }
    let last = std::time::Instant::now();
    assert!(open("brief-v1").await >= 6.0, "kept after their requests");
    while open("brief-v1").await > 0.0 {
        assert!(
            last.elapsed() < Duration::from_secs(10),
            "still open 10 s after the last request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = last.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}, before their idle timeout"
    );
    // The default timeout (90 s) has not come for `plain`'s.
    assert!(open("plain-v1").await > 0.0);
}

/// A plaintext HTTP/1.1 GET of `host` on a connection of its own; `None`
/// when the connection closes first.
async fn plaintext_get(addr: SocketAddr, host: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// A GET over TLS with a SPIFFE certificate from a CA the mesh does not
/// trust; `None` when the handshake or the request fails.
async fn foreign_tls_get(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Trusting its own CA, it will accept the server: the server must refuse it.
    let tls = meshc_dataplane::tls::MeshTls::self_issued("spiffe://cluster.local/ns/shop/sa/web")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("mesh.invalid").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls.client_h1)
        .connect(name, tcp)
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// A CA: its issuer and its certificate (PEM).
fn test_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    (rcgen::Issuer::new(params, key), pem)
}

/// Certificates for a gateway's TLS servers: a server CA its clients trust,
/// and a client CA for mutual TLS.
struct Pki {
    server_ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    server_ca_pem: String,
    client_ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    client_ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let (server_ca, server_ca_pem) = test_ca();
        let (client_ca, client_ca_pem) = test_ca();
        Pki {
            server_ca,
            server_ca_pem,
            client_ca,
            client_ca_pem,
        }
    }

    /// Write the Secret `name` into `dir` as Kubernetes mounts one: a
    /// certificate for `hosts` from the server CA, its key, and `ca.crt`
    /// when given.
    fn secret(&self, dir: &Path, name: &str, hosts: &[&str], ca: Option<&str>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.server_ca).unwrap();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        if let Some(ca) = ca {
            std::fs::write(dir.join("ca.crt"), ca).unwrap();
        }
    }

    /// A client certificate naming `uri` with serial number `serial`, from
    /// `issuer`, for a revocation list to name: (certificate, key).
    fn revocable(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        uri: &str,
        serial: u64,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A revocation list from `issuer` naming the certificates `serials`.
    fn crl(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        rcgen::CertificateRevocationListParams {
            this_update: now - hour,
            next_update: now + hour,
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now - hour,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// A client certificate naming `uri`, from `issuer`: (certificate, key).
    fn client(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, uri: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// How a gateway server pins client certificates: the SHA-256 digest of
/// certificate `by_hash` (PEM), as `verifyCertificateHash` takes it (hex
/// pairs with colons, upper case here), and that of the public key of
/// `by_spki`, as `verifyCertificateSpki` takes it (base64).
fn pin_digests(by_hash: &str, by_spki: &str) -> (String, String) {
    use base64::Engine as _;
    use rustls::pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};
    let der = |pem: &str| {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    let hash = Sha256::digest(der(by_hash))
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let cert = der(by_spki);
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let spki = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(parsed.tbs_certificate.subject_pki.raw));
    (hash, spki)
}

/// An HTTP/1.1 GET of `host``path` over TLS to `addr`, with `sni` in the
/// ClientHello, trusting `ca_pem`, presenting `client` (certificate, key)
/// when given: the status and the answering application's version, or
/// `None` when the handshake or the exchange fails.
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    path: &str,
    ca_pem: &str,
    client: Option<(String, String)>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls_connect(addr, sni, ca_pem, client).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let status = text.strip_prefix("http/1.1 ")?.get(..3)?.parse().ok()?;
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-version: "))
        .unwrap_or("none")
        .trim()
        .to_string();
    Some((status, version))
}

/// A TLS connection to `addr` asking for `sni`, trusting `ca_pem`, with a
/// client certificate and key (PEM) when given; `None` when the handshake
/// fails.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    client: Option<(String, String)>,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .ok()?
        .ok()
}

/// Through a gateway server that terminates TLS for `sni` (certificate
/// from `ca_pem`) and carries TCP inside: the banner line of the
/// application the decrypted stream reached, after checking that `payload`
/// came back unchanged; `None` when the handshake fails or the connection
/// closes first.
async fn terminated_exchange(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
    payload: &[u8],
) -> Option<String> {
    let s = tls_connect(addr, sni, ca_pem, None).await?;
    banner_exchange(s, payload).await
}

/// The README's first command: `meshc up` seeds bookinfo, runs the mesh, and
/// shows the canary split and the header route through real proxies.
#[test]
fn meshc_up_runs_bookinfo_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshc"))
        .args(["up", "--once", "--requests", "100"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--dir")
        .arg(dir.path().join("up"))
        .stdin(Stdio::null())
        .output()
        .expect("meshc up runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Bookinfo's six, and the ingress gateway its Gateway selects.
    assert!(stdout.contains("7 workloads"), "{stdout}");
    // HTTPS through the gateway, with the demo certificate, to the page its
    // bound VirtualService routes (and its ALLOW policy lets the gateway's
    // identity reach).
    assert!(
        stdout.contains(
            "20 requests through istio-system/istio-ingressgateway to \
             https://bookinfo.example.com/productpage: v1 20"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("--resolve bookinfo.example.com:"),
        "{stdout}"
    );
    // Bookinfo's canary is 90/10 between v1 and v2; jason always gets v3.
    let plain = stdout
        .lines()
        .find(|l| l.starts_with("100 requests plain"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let count = |v: &str| -> usize {
        plain
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(", ").find_map(|p| p.strip_prefix(&format!("{v} "))))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("v1") + count("v2"), 100, "{plain}");
    assert!(count("v2") < 30, "{plain}");
    assert!(
        stdout.contains("100 requests as end-user jason from productpage to reviews: v3 100"),
        "{stdout}"
    );
    // The repository was seeded with one commit and is kept for the next run.
    let repo = Repository::open(dir.path().join("up/repo")).unwrap();
    assert!(
        repo.head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .parent_count()
            == 0
    );
}

const GATEWAY_POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ingress, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reviews, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: db, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: tcp-postgres, port: 5432}, {name: tls-replication, port: 5433}]
---
DEPLOYMENTS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-tcp, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [public]
  tcp:
  - match: [{port: 9000, destinationSubnets: [127.0.0.2/32]}]
    route: [{destination: {host: db, subset: v2, port: {number: 5432}}}]
  - match: [{port: 9000}]
    route: [{destination: {host: db, subset: v1, port: {number: 5432}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-tls, namespace: shop}
spec:
  hosts: [db.example.com]
  gateways: [public]
  tls:
  - match: [{port: 9443, sniHosts: [db.example.com]}]
    route: [{destination: {host: db, subset: v2, port: {number: 5433}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {app: ingress}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [shop.example.com]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8080, name: http-secure, protocol: HTTP}
    hosts: [secure.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [shop.example.com, secure.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 8444, name: https-partner, protocol: HTTPS}
    hosts: [partner.example.com]
    tls:
      mode: MUTUAL
      credentialName: partner-cert
      subjectAltNames: [spiffe://partner.example/client]
      verifyCertificateHash: ["PINNED_HASH", "REVOKED_HASH"]
      verifyCertificateSpki: ["PINNED_SPKI"]
  - port: {number: 9444, name: tls-db, protocol: TLS}
    hosts: [db-secure.example.com]
    tls: {mode: SIMPLE, credentialName: db-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-secure, namespace: shop}
spec:
  hosts: [db-secure.example.com]
  gateways: [public]
  tcp:
  - match: [{port: 9444}]
    route: [{destination: {host: db, subset: v1, port: {number: 5432}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner, namespace: shop}
spec:
  hosts: [partner.example.com]
  gateways: [public]
  http:
  - name: partner
    route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: shop}
spec:
  hosts: [shop.example.com, secure.example.com]
  gateways: [public]
  http:
  - name: new-reviews
    match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rest
    route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
"#;

const GATEWAY_WORKLOADS: &[Workload] = &[
    ("ingress-v1", "ingress", "v1", "ingress"),
    ("reviews-v1", "reviews", "v1", "reviews"),
    ("reviews-v2", "reviews", "v2", "reviews"),
    ("db-v1", "db", "v1", "db"),
    ("db-v2", "db", "v2", "db"),
];

/// Gateway mode: a proxy whose workload the Gateway selects serves the
/// Gateway's HTTP server port and routes by the VirtualService bound to the
/// gateway (not by the mesh's routes for the same destination); a host no
/// server on the port admits gets 404, and gateway hosts are not mesh hosts.
/// Its TCP server splices connections by the bound TCP route, and its
/// PASSTHROUGH server by the ClientHello's server name, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_serves_its_servers_with_the_routes_bound_to_it() {
    let work = tempfile::tempdir().unwrap();
    let repo_dir = work.path().join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let repo = Repository::init(&repo_dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    // The partner server pins two client certificates: one by the digest
    // of the certificate (written with colons, upper case), the other by
    // its public key's.
    let pki = Pki::new();
    let good = Pki::client(&pki.client_ca, "spiffe://partner.example/client");
    let good_by_key = Pki::client(&pki.client_ca, "spiffe://partner.example/client");
    let unpinned = Pki::client(&pki.client_ca, "spiffe://partner.example/client");
    let pins = pin_digests(&good.0, &good_by_key.0);
    // Pinned too, but revoked by the CA's revocation list (`ca.crl` in the
    // Secret): refused at the handshake.
    let revoked = Pki::revocable(&pki.client_ca, "spiffe://partner.example/client", 4242);
    let revoked_pin = pin_digests(&revoked.0, &revoked.0).0;
    std::fs::write(
        repo_dir.join("policy.yaml"),
        policy(GATEWAY_POLICY, GATEWAY_WORKLOADS)
            .replace("PINNED_HASH", &pins.0)
            .replace("REVOKED_HASH", &revoked_pin)
            .replace("PINNED_SPKI", &pins.1),
    )
    .unwrap();
    commit_all(&repo, "gateway policy");
    let credentials = work.path().join("credentials");
    let shop_hosts = &["shop.example.com", "secure.example.com"];
    pki.secret(&credentials, "shop-cert", shop_hosts, None);
    pki.secret(&credentials, "db-cert", &["db-secure.example.com"], None);
    pki.secret(
        &credentials,
        "partner-cert",
        &["partner.example.com"],
        Some(&pki.client_ca_pem),
    );
    std::fs::write(
        credentials.join("partner-cert/ca.crl"),
        Pki::crl(&pki.client_ca, &[4242]),
    )
    .unwrap();
    let extra: Extra = |name, work| {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match name {
            // The TCP server's listener takes every loopback address, so
            // that its destination-subnet route can be tried.
            "ingress-v1" => (
                vec![],
                s(&[
                    "--gateway-listen",
                    "8080=127.0.0.1:0,9000=0.0.0.0:0,9443=127.0.0.1:0,\
                     8443=127.0.0.1:0,8444=127.0.0.1:0,9444=127.0.0.1:0",
                    "--gateway-credentials",
                    &work.join("credentials").display().to_string(),
                ]),
            ),
            "db-v1" | "db-v2" => (s(&["--tcp"]), s(&["--app-protocol", "tcp"])),
            _ => (vec![], vec![]),
        }
    };
    let mesh = start(work.path(), &repo_dir, GATEWAY_WORKLOADS, extra).await;
    let gateway = mesh.nodes["ingress-v1"].gateway[0];
    let enter = |host: &'static str, path: &'static str| {
        let mesh = &mesh;
        async move {
            send(
                &mesh.client,
                gateway,
                host,
                http::Method::GET,
                path,
                &[],
                Bytes::new(),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("gateway {host}{path}: {e}\n{}", logs(&mesh.logs)))
        }
    };
    // The gateway's routes, in order: /reviews... to v2, the rest to v1
    // (the mesh route for reviews sends everything to v1).
    for _ in 0..10 {
        let a = enter("shop.example.com", "/reviews/1").await;
        assert_eq!((a.status.as_u16(), version(&a).as_str()), (200, "v2"));
        let a = enter("shop.example.com:8080", "/").await;
        assert_eq!((a.status.as_u16(), version(&a).as_str()), (200, "v1"));
    }
    // A host no server on the port admits: nowhere to go.
    let a = enter("other.example.com", "/reviews/1").await;
    assert_eq!(a.status.as_u16(), 404);
    assert_eq!(
        version(&a),
        "none",
        "a refused request reached an application"
    );
    // The gateway host is not a mesh host: the ingress workload's own
    // outbound listener does not know it.
    let a = call(
        &mesh,
        "ingress-v1",
        "shop.example.com",
        "GET",
        "/reviews/1",
        &[],
    )
    .await;
    assert_eq!(a.status.as_u16(), 404);
    // Counted as gateway traffic, by route.
    let m = metrics(&mesh, "ingress-v1").await;
    let counted = |route: &str, code: &str| {
        sum(
            &m,
            "meshc_proxy_requests_total",
            &[
                ("direction", "gateway"),
                ("route", route),
                ("response_code", code),
            ],
        )
    };
    assert_eq!(counted("new-reviews", "200"), 10.0, "{m:?}");
    assert_eq!(counted("rest", "200"), 10.0);
    assert_eq!(counted("none", "404"), 1.0);

    // The TCP server: every connection by the bound TCP routes, the bytes
    // echoed back unchanged: to v1, or to v2 when the address the client
    // dialled is in the first route's destination subnet.
    let tcp_port = mesh.nodes["ingress-v1"].gateway[1].port();
    for i in 0..10 {
        let to = SocketAddr::from(([127, 0, 0, 1], tcp_port));
        let got = tcp_exchange(to, format!("row {i}\n").as_bytes()).await;
        assert_eq!(got.as_deref(), Some("db v1"), "{}", logs(&mesh.logs));
    }
    for i in 0..5 {
        let to = SocketAddr::from(([127, 0, 0, 2], tcp_port));
        let got = tcp_exchange(to, format!("row {i}\n").as_bytes()).await;
        assert_eq!(got.as_deref(), Some("db v2"), "{}", logs(&mesh.logs));
    }
    // The PASSTHROUGH server: the ClientHello naming db.example.com goes to
    // v2 as it was sent; another name has no server and is closed.
    let tls = mesh.nodes["ingress-v1"].gateway[2];
    for _ in 0..10 {
        assert_eq!(
            tls_exchange(tls, "db.example.com").await.as_deref(),
            Some("db v2")
        );
    }
    assert_eq!(tls_exchange(tls, "elsewhere.example.com").await, None);
    // A stream is counted when both sides are done, just after the client
    // saw its end.
    eventually("the gateway's streams counted", &mesh, || async {
        let m = metrics(&mesh, "ingress-v1").await;
        sum(
            &m,
            "meshc_proxy_tcp_streams_total",
            &[("direction", "gateway")],
        ) >= 26.0
    })
    .await;
    let m = metrics(&mesh, "ingress-v1").await;
    let streams = |route: &str, outcome: &str| {
        sum(
            &m,
            "meshc_proxy_tcp_streams_total",
            &[
                ("direction", "gateway"),
                ("route", route),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(streams("db-tcp.tcp[0]", "ok"), 5.0);
    assert_eq!(streams("db-tcp.tcp[1]", "ok"), 10.0);
    assert_eq!(streams("db-tls.tls[0]", "ok"), 10.0);
    assert_eq!(streams("none", "no_route"), 1.0);

    // A TLS server in SIMPLE mode: the proxy terminates TLS with the
    // Secret's certificate and routes the plaintext stream inside by the
    // gateway's TCP route (to v1); a name the server does not admit gets no
    // handshake.
    let secure = mesh.nodes["ingress-v1"].gateway[5];
    let ca = pki.server_ca_pem.as_str();
    for i in 0..5 {
        let payload = format!("row {i}\n");
        let got =
            terminated_exchange(secure, "db-secure.example.com", ca, payload.as_bytes()).await;
        assert_eq!(got.as_deref(), Some("db v1"), "{}", logs(&mesh.logs));
    }
    assert_eq!(
        terminated_exchange(secure, "db.example.com", ca, b"x\n").await,
        None
    );
    eventually("the terminated streams counted", &mesh, || async {
        let m = metrics(&mesh, "ingress-v1").await;
        sum(
            &m,
            "meshc_proxy_tcp_streams_total",
            &[("direction", "gateway"), ("route", "db-secure.tcp[0]")],
        ) >= 5.0
    })
    .await;

    // HTTPS: the SIMPLE server terminates TLS with the Secret's certificate
    // and routes the requests inside by the gateway's routes.
    let https = mesh.nodes["ingress-v1"].gateway[3];
    let get = |sni: &'static str, host: &'static str, path: &'static str, ca: &str| {
        let ca = ca.to_string();
        async move { https_get(https, sni, host, path, &ca, None).await }
    };
    for _ in 0..5 {
        let got = get("shop.example.com", "shop.example.com", "/reviews/1", ca).await;
        assert_eq!(got, Some((200, "v2".into())), "{}", logs(&mesh.logs));
        let got = get("shop.example.com", "shop.example.com:8443", "/", ca).await;
        assert_eq!(got, Some((200, "v1".into())));
    }
    // A name no server on the port admits: no certificate, no handshake.
    assert_eq!(
        get("other.example.com", "other.example.com", "/", ca).await,
        None
    );
    // Plaintext on the TLS port gets no HTTP answer.
    let plain = plaintext_get(https, "pool").await;
    assert!(
        !plain.as_deref().is_some_and(|r| r.starts_with("HTTP/")),
        "{plain:?}"
    );
    // `httpsRedirect`: plaintext for secure.example.com on 8080 is sent to
    // https, where the same routes serve it.
    let a = enter("secure.example.com", "/reviews/1?page=2").await;
    assert_eq!(a.status.as_u16(), 301);
    assert_eq!(
        a.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("https://secure.example.com/reviews/1?page=2")
    );
    assert_eq!(version(&a), "none");
    let got = get("secure.example.com", "secure.example.com", "/reviews/1", ca).await;
    assert_eq!(got, Some((200, "v2".into())));

    // MUTUAL: a client certificate from the Secret's CA naming one of the
    // server's subjectAltNames, and pinned, or no handshake.
    let partner = mesh.nodes["ingress-v1"].gateway[4];
    let wrong_name = Pki::client(&pki.client_ca, "spiffe://partner.example/other");
    let (foreign_ca, _) = test_ca();
    let foreign = Pki::client(&foreign_ca, "spiffe://partner.example/client");
    let mutual = |client: Option<&(String, String)>, host: &'static str| {
        https_get(
            partner,
            "partner.example.com",
            host,
            "/",
            ca,
            client.cloned(),
        )
    };
    for _ in 0..3 {
        let got = mutual(Some(&good), "partner.example.com").await;
        assert_eq!(got, Some((200, "v2".into())), "{}", logs(&mesh.logs));
    }
    assert_eq!(mutual(None, "partner.example.com").await, None);
    assert_eq!(mutual(Some(&foreign), "partner.example.com").await, None);
    assert_eq!(mutual(Some(&wrong_name), "partner.example.com").await, None);
    let got = mutual(Some(&good_by_key), "partner.example.com").await;
    assert_eq!(got, Some((200, "v2".into())));
    assert_eq!(mutual(Some(&unpinned), "partner.example.com").await, None);
    assert_eq!(mutual(Some(&revoked), "partner.example.com").await, None);
    // Through the partner server, only the hosts it admits.
    let got = mutual(Some(&good), "shop.example.com").await;
    assert_eq!(got, Some((404, "none".into())));

    // Rotation: a certificate from another CA written into the Secret is
    // presented from the next handshake on, without a restart.
    let rotated = Pki::new();
    rotated.secret(&credentials, "shop-cert", shop_hosts, None);
    let got = get(
        "shop.example.com",
        "shop.example.com",
        "/",
        &rotated.server_ca_pem,
    )
    .await;
    assert_eq!(got, Some((200, "v1".into())), "{}", logs(&mesh.logs));
    assert_eq!(
        get("shop.example.com", "shop.example.com", "/", ca).await,
        None
    );

    // Counted: the gateway's HTTPS requests by route, and each refusal by
    // its reason.
    let m = metrics(&mesh, "ingress-v1").await;
    // The certificate pinned by its digest three times, by its key once.
    assert_eq!(counted_in(&m, "partner", "200"), 3.0 + 1.0);
    assert_eq!(counted_in(&m, "new-reviews", "200"), 10.0 + 5.0 + 1.0);
    let refused = |reason: &str| {
        sum(
            &m,
            "meshc_proxy_tcp_connections_refused_total",
            &[("reason", reason)],
        )
    };
    // other.example.com and plaintext (no name) on 8443, db.example.com on
    // the terminating TLS server's port.
    assert_eq!(refused("no gateway server for the server name"), 3.0);
    assert_eq!(refused("client certificate name not allowed"), 1.0);
    assert_eq!(refused("client certificate not pinned"), 1.0);
    assert!(refused("handshake failed") >= 2.0, "{m:?}");
}

/// Requests the gateway counted on `route` with `code`.
fn counted_in(m: &prometheus_parse::Scrape, route: &str, code: &str) -> f64 {
    sum(
        m,
        "meshc_proxy_requests_total",
        &[
            ("direction", "gateway"),
            ("route", route),
            ("response_code", code),
        ],
    )
}
