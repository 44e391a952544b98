//! Benchmark of the data plane (issue 6's targets): latency added by one
//! proxy hop (plaintext, 95/5 split) and by two hops with mTLS between them
//! (HTTP/1.1 between them, the default as in Istio, and HTTP/2: `UPGRADE`),
//! at a fixed request rate, against a direct connection to the same echo
//! application in the same run; the proxy's CPU per 1,000 requests per
//! second and its resident memory; the same figures for Debian's nginx
//! doing the same split (installed with apt-get when missing; its master's
//! and workers' CPU and resident memory added up), so the proxy is compared
//! with it in one run; maximum throughput direct, through one hop and
//! through nginx; a proxy's memory with the 1,000-service IR.
//!
//! Everything is a real process on loopback (release build): `meshc serve`,
//! `meshc echo` and the sidecar binary `meshc-proxy`; one more row runs the
//! same one-hop proxy as `meshc proxy`, from the whole `meshc` binary, whose
//! code pages cost resident memory the sidecar does not pay. The load generator is open-loop: request
//! *i* is due at `start + i / rate` and its latency is counted from that
//! moment, not from when it was sent, so a stall is not hidden by the
//! requests that waited behind it (coordinated omission).
//!
//! Run: `cargo bench --bench proxy_load` (`MESHC_BENCH_RPS`, default 2000;
//! `MESHC_BENCH_SECONDS`, default 10; `MESHC_BENCH_ROUNDS` of the maximum
//! throughput, default 3; `MESHC_BENCH_ONLY=throughput` or `memory` for that part alone;
//! `MESHC_BENCH_PROXY`, another build of `meshc-proxy` to measure). The
//! figures are printed, not asserted. `benches/callgrind_proxy.sh` runs it
//! with the one-hop proxy under callgrind for instructions per request.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use git2::Repository;
use meshc_dataplane::http::{Clients, admin_get, send};

#[path = "../tests/common/net.rs"]
mod net;

use net::{commit_all, free_port};

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
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
metadata: {name: ratings, namespace: shop}
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
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: DISABLE}}
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
  - name: canary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 95
    - destination: {host: reviews, subset: v2}
      weight: 5
---
# The same workloads under a second name whose HTTP/1.1 requests ride
# HTTP/2 between the proxies: the two-hop path with either protocol between
# them.
apiVersion: v1
kind: Service
metadata: {name: ratings-h2, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-h2, namespace: shop}
spec:
  host: ratings-h2
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings, namespace: shop}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: STRICT}
"#;

fn deployment(name: &str, app: &str, version: &str) -> String {
    format!(
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: {app}, version: {version}}}}}\n  \
         template:\n    metadata: {{labels: {{app: {app}, version: {version}}}}}\n    \
         spec: {{serviceAccountName: {app}, containers: [{{name: app, image: echo}}]}}\n"
    )
}

#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn spawn(&mut self, args: &[String]) -> u32 {
        self.spawn_exe(env!("CARGO_BIN_EXE_meshc"), args)
    }

    fn spawn_exe(&mut self, exe: &str, args: &[String]) -> u32 {
        let child = Command::new(exe)
            .args(args)
            .env("MESHC_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("meshc starts");
        let pid = child.id();
        self.0.push(child);
        pid
    }
}

/// Debian's nginx.
const NGINX: &str = "/usr/sbin/nginx";

/// Debian's nginx splitting 95/5 between `v1` and `v2` (keep-alive
/// upstreams, no access log) with `workers` worker processes (`auto`: one
/// per core), installed with apt-get when missing.
fn start_nginx(dir: &Path, v1: SocketAddr, v2: SocketAddr, workers: &str) -> Result<Nginx, String> {
    if !Path::new(NGINX).exists() {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "nginx-light"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Err("nginx is not installed and apt-get could not install it".into());
        }
    }
    let dir = dir.join(format!("nginx-{workers}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let addr = loopback(free_port());
    let d = dir.display();
    let conf = format!(
        "user root;\nworker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream v1 {{ server {v1}; keepalive 64; }}\n  upstream v2 {{ server {v2}; keepalive 64; }}\n\
         split_clients \"${{request_id}}\" $backend {{ 95% v1; * v2; }}\n\
         server {{ listen {addr}; location / {{ proxy_pass http://$backend; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let nginx = Nginx {
        addr,
        conf: path,
        dir,
        master: child,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err("nginx did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(nginx)
}

/// A running nginx, stopped (master and workers) when dropped.
struct Nginx {
    addr: SocketAddr,
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
    master: Child,
}

impl Nginx {
    /// The master's pid and its workers'.
    fn pids(&self) -> Vec<u32> {
        let master = self.master.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Killing only the master would leave its workers serving.
        let _ = Command::new(NGINX)
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(&self.dir)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let _ = self.master.wait();
    }
}

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// CPU seconds a process has used in user space and in the kernel.
fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// A field of `/proc/PID/status`, in MB.
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The middle value of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS")
}

/// The resident size, split into memory of its own (heap, stacks) and pages
/// of files it maps (its executable and shared libraries).
fn rss_split(pid: u32) -> String {
    format!(
        "{:.1} MB: {:.1} own + {:.1} files",
        rss_mb(pid),
        status_mb(pid, "RssAnon"),
        status_mb(pid, "RssFile")
    )
}

struct Run {
    /// From sending to the end of the response.
    p50: f64,
    p90: f64,
    p99: f64,
    /// From the due time (includes the generator's own dispatch lag, up to
    /// a timer tick: compare these between rows, not with the above).
    p99_due: f64,
    failed: usize,
    cpu: Vec<f64>,
}

/// `rate` requests per second for `secs` to `addr` with `Host: host`,
/// open loop; latencies in milliseconds from each request's due time.
async fn open_loop(
    client: &Clients,
    addr: SocketAddr,
    host: &str,
    rate: u64,
    secs: u64,
    pids: &[u32],
) -> Run {
    let n = (rate * secs) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        let (client, host) = (client.clone(), host.to_string());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = send(
                &client,
                addr,
                &host,
                http::Method::GET,
                "/",
                &[],
                Bytes::new(),
                false,
            )
            .await
            .is_ok_and(|a| a.status == 200);
            (
                sent.elapsed().as_secs_f64() * 1000.0,
                due.elapsed().as_secs_f64() * 1000.0,
                ok,
            )
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut lat_due = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        let (ms, due_ms, ok) = t.await.unwrap();
        lat.push(ms);
        lat_due.push(due_ms);
        failed += usize::from(!ok);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| (cpu_seconds(*p) - c0) / wall)
        .collect();
    lat.sort_by(f64::total_cmp);
    lat_due.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    Run {
        p50: q(&lat, 0.50),
        p90: q(&lat, 0.90),
        p99: q(&lat, 0.99),
        p99_due: q(&lat_due, 0.99),
        failed,
        cpu,
    }
}

/// Requests per second with `workers` requests always in flight.
async fn closed_loop(
    client: &Clients,
    addr: SocketAddr,
    host: &str,
    workers: usize,
    secs: u64,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, host, stop, done) =
                (client.clone(), host.to_string(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if send(
                        &client,
                        addr,
                        &host,
                        http::Method::GET,
                        "/",
                        &[],
                        Bytes::new(),
                        false,
                    )
                    .await
                    .is_ok_and(|a| a.status == 200)
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn wait_ready(client: &Clients, admin: SocketAddr, endpoints: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = admin_get(client, admin, "/config")
            .await
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.body).ok())
            .is_some_and(|c| {
                c["endpoints"]
                    .as_object()
                    .is_some_and(|e| e.len() >= endpoints)
            });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "proxy at {admin} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start `meshc echo` answering as `service`'s `version`.
fn echo(procs: &mut Procs, service: &str, version: &str) -> SocketAddr {
    let addr = loopback(free_port());
    procs.spawn(&[
        s("echo"),
        s("--listen"),
        s(addr),
        s("--service"),
        s(service),
        s("--version"),
        s(version),
    ]);
    addr
}

fn start_serve(procs: &mut Procs, repo: &Path, data: &Path) -> (u16, u32) {
    let (grpc, api) = (free_port(), free_port());
    let pid = procs.spawn(&[
        s("serve"),
        s("--repo"),
        s(repo.display()),
        s("--data-dir"),
        s(data.display()),
        s("--grpc-addr"),
        s(loopback(grpc)),
        s("--http-addr"),
        s(loopback(api)),
        s("--bootstrap-token"),
        s("boot"),
        s("--api-token"),
        s("api"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.join("ca.pem").exists() || std::net::TcpStream::connect(loopback(grpc)).is_err() {
        assert!(Instant::now() < deadline, "meshc serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (grpc, pid)
}

struct ProxyAddrs {
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
    pid: u32,
}

/// How a proxy is started: the sidecar binary with this many worker
/// threads, or the `meshc` command (one thread, the default).
#[derive(Clone, Copy)]
enum ProxyExe {
    Sidecar(usize),
    Meshc,
}

#[allow(clippy::too_many_arguments)]
fn start_proxy(
    procs: &mut Procs,
    exe: ProxyExe,
    grpc: u16,
    data: &Path,
    workload: &str,
    sa: &str,
    app: SocketAddr,
    endpoints: Option<&Path>,
) -> ProxyAddrs {
    let (outbound, inbound, admin) = (
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
    );
    let mut args = vec![
        s("--control-plane"),
        format!("https://127.0.0.1:{grpc}"),
        s("--ca-file"),
        s(data.join("ca.pem").display()),
        s("--bootstrap-token"),
        s("boot"),
        s("--workload"),
        s(workload),
        s("--service-account"),
        s(sa),
        s("--outbound-addr"),
        s(outbound),
        s("--inbound-addr"),
        s(inbound),
        s("--admin-addr"),
        s(admin),
        s("--app-addr"),
        s(app),
    ];
    if let Some(e) = endpoints {
        args.push(s("--endpoints-file"));
        args.push(s(e.display()));
    }
    let pid = match exe {
        ProxyExe::Sidecar(threads) => {
            args.extend([s("--threads"), s(threads)]);
            // `MESHC_BENCH_PROXY`: another build of the sidecar, to compare.
            let exe = std::env::var("MESHC_BENCH_PROXY")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_meshc-proxy").to_string());
            procs.spawn_exe(&exe, &args)
        }
        ProxyExe::Meshc => procs.spawn(&[vec![s("proxy")], args].concat()),
    };
    ProxyAddrs {
        outbound,
        inbound,
        admin,
        pid,
    }
}

fn main() {
    let rate: u64 = std::env::var("MESHC_BENCH_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let secs: u64 = std::env::var("MESHC_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rounds: usize = std::env::var("MESHC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("MESHC_BENCH_ONLY").unwrap_or_default();
    // `cargo bench` passes `--bench`; nothing else is expected.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let work = tempfile::tempdir().unwrap();
        let client = Clients::new(Default::default());
        if only != "memory" {
            run(
                work.path(),
                &client,
                rate,
                secs,
                rounds,
                only == "throughput",
            )
            .await;
        }
        if only != "throughput" {
            big_ir(work.path(), &client).await;
        }
    });
}

async fn run(
    work: &Path,
    client: &Clients,
    rate: u64,
    secs: u64,
    rounds: usize,
    only_throughput: bool,
) {
    let repo_dir = work.join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let repo = Repository::init(&repo_dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let policy = POLICY.to_string()
        + &deployment("web-v1", "web", "v1")
        + &deployment("reviews-v1", "reviews", "v1")
        + &deployment("reviews-v2", "reviews", "v2")
        + &deployment("ratings-v1", "ratings", "v1");
    std::fs::write(repo_dir.join("policy.yaml"), policy).unwrap();
    commit_all(&repo, "bench");
    let data = work.join("data");
    let mut procs = Procs::default();
    let (grpc, _) = start_serve(&mut procs, &repo_dir, &data);

    let reviews_v1 = echo(&mut procs, "reviews", "v1");
    let reviews_v2 = echo(&mut procs, "reviews", "v2");
    let ratings = echo(&mut procs, "ratings", "v1");
    let web_app = echo(&mut procs, "web", "v1");
    // The one-hop proxy reaches reviews directly (static endpoints, TLS off).
    let endpoints = work.join("endpoints.json");
    std::fs::write(
        &endpoints,
        serde_json::json!({"shop/reviews-v1": [reviews_v1], "shop/reviews-v2": [reviews_v2]})
            .to_string(),
    )
    .unwrap();
    // web's proxy, reaching reviews directly (static endpoints, TLS off).
    let web = |procs: &mut Procs, exe| {
        start_proxy(
            procs,
            exe,
            grpc,
            &data,
            "shop/web-v1",
            "web",
            web_app,
            Some(&endpoints),
        )
    };
    let a = web(&mut procs, ProxyExe::Sidecar(1));
    // The same proxy as `a`, run as `meshc proxy` from the whole binary.
    let whole = web(&mut procs, ProxyExe::Meshc);
    let b = start_proxy(
        &mut procs,
        ProxyExe::Sidecar(1),
        grpc,
        &data,
        "shop/ratings-v1",
        "ratings",
        ratings,
        None,
    );
    wait_ready(client, a.admin, 4).await;
    wait_ready(client, whole.admin, 4).await;
    wait_ready(client, b.admin, 2).await;
    let _ = b.inbound;

    let nginx = start_nginx(work, reviews_v1, reviews_v2, "auto");
    // `MESHC_BENCH_ONLY=throughput`: the maximum throughput alone.
    if !only_throughput {
        println!(
            "meshc proxy benchmark: {rate} requests/s for {secs} s, open loop, latency from each request's due time\n"
        );
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>12} {:>7} {:>22} {:>14}",
            "path",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99 due ms",
            "failed",
            "proxy cores/1k rps",
            "proxy RSS"
        );
        // Two seconds to warm up, then the measured run (the CPU of `pids`).
        let measure = |addr, host: &'static str, pids: Vec<u32>| {
            let client = client.clone();
            async move {
                open_loop(&client, addr, host, rate, 2, &[]).await;
                open_loop(&client, addr, host, rate, secs, &pids).await
            }
        };
        let direct = measure(reviews_v1, "reviews:9080", vec![]).await;
        let one = measure(a.outbound, "reviews:9080", vec![a.pid]).await;
        let one_whole = measure(whole.outbound, "reviews:9080", vec![whole.pid]).await;
        let two = measure(a.outbound, "ratings:9080", vec![a.pid, b.pid]).await;
        let two_h2 = measure(a.outbound, "ratings-h2:9080", vec![a.pid, b.pid]).await;
        // nginx doing the same 95/5 split, for the targets' comparison: the
        // same open loop (its master and workers' CPU added up), then the
        // maximum throughput below.
        let nginx_run = match &nginx {
            Ok(n) => Some(measure(n.addr, "reviews:9080", n.pids()).await),
            Err(_) => None,
        };
        let per_k = |c: f64| c / (rate as f64 / 1000.0);
        let row = |name: &str, r: &Run, rss: &str| {
            let cores = if r.cpu.is_empty() {
                "-".to_string()
            } else if name.contains("nginx") {
                format!("{:.3}", per_k(r.cpu.iter().sum()))
            } else {
                r.cpu
                    .iter()
                    .map(|c| format!("{:.3}", per_k(*c)))
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            println!(
                "{:<34} {:>8.3} {:>8.3} {:>8.3} {:>12.3} {:>7} {:>22} {:>14}",
                name, r.p50, r.p90, r.p99, r.p99_due, r.failed, cores, rss
            );
        };
        row("direct to echo", &direct, "-");
        row(
            "one hop, plaintext, 95/5",
            &one,
            &format!("{:.1} MB", rss_mb(a.pid)),
        );
        row(
            "one hop, as `meshc proxy`",
            &one_whole,
            &format!("{:.1} MB", rss_mb(whole.pid)),
        );
        row(
            "two hops, mTLS between",
            &two,
            &format!("{:.1}+{:.1} MB", rss_mb(a.pid), rss_mb(b.pid)),
        );
        row(
            "  the same, HTTP/2 between",
            &two_h2,
            &format!("{:.1}+{:.1} MB", rss_mb(a.pid), rss_mb(b.pid)),
        );
        if let (Ok(n), Some(r)) = (&nginx, &nginx_run) {
            let rss: f64 = n.pids().into_iter().map(rss_mb).sum();
            row("one hop through nginx, 95/5", r, &format!("{rss:.1} MB"));
        }
        println!(
            "\nresident memory, one hop: meshc-proxy {}; meshc proxy {}",
            rss_split(a.pid),
            rss_split(whole.pid)
        );
        if let Ok(n) = &nginx {
            let pids = n.pids();
            let own: f64 = pids.iter().map(|p| status_mb(*p, "RssAnon")).sum();
            let files: f64 = pids.iter().map(|p| status_mb(*p, "RssFile")).sum();
            println!("resident memory, nginx: {own:.1} own + {files:.1} files");
        }
        println!(
            "added p50: one hop {:.3} ms, two hops with mTLS {:.3} ms (HTTP/1.1 between), {:.3} ms (HTTP/2 between)",
            one.p50 - direct.p50,
            two.p50 - direct.p50,
            two_h2.p50 - direct.p50
        );
        if let Some(r) = &nginx_run {
            println!("added p50 through nginx: {:.3} ms", r.p50 - direct.p50);
        }
    }

    // Maximum throughput, like for like: a one-thread proxy (the sidecar's
    // default) against one nginx worker, and two threads against two. In
    // rounds, each path in turn, and the medians: on this machine a path's
    // figure moves by a quarter from one run to the next.
    let wide = web(&mut procs, ProxyExe::Sidecar(2));
    wait_ready(client, wide.admin, 4).await;
    let nginx_one = start_nginx(work, reviews_v1, reviews_v2, "1");
    let nginx_skipped = match (&nginx_one, &nginx) {
        (Err(why), _) | (_, Err(why)) => Some(why.clone()),
        _ => None,
    };
    // Each path, and the processes whose CPU it costs beside the echo
    // application's (none for the direct one).
    let mut paths = vec![
        ("direct", reviews_v1, vec![]),
        ("meshc-proxy, one thread", a.outbound, vec![a.pid]),
        ("meshc-proxy --threads 2", wide.outbound, vec![wide.pid]),
    ];
    if let (Ok(n1), Ok(n2)) = (&nginx_one, &nginx) {
        paths.extend([
            ("nginx, one worker", n1.addr, n1.pids()),
            ("nginx, two workers", n2.addr, n2.pids()),
        ]);
    }
    let mut max: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    // CPU per request, in microseconds (user, system): the path's own
    // processes.
    let mut cost: Vec<Vec<(f64, f64)>> = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for (i, (_, addr, pids)) in paths.iter().enumerate() {
            let cpu = || {
                pids.iter()
                    .map(|p| cpu_split(*p))
                    .fold((0.0, 0.0), |(u, s), (pu, ps)| (u + pu, s + ps))
            };
            let (before, started) = (cpu(), Instant::now());
            let rps = closed_loop(client, *addr, "reviews:9080", 32, 5).await;
            let requests = rps * started.elapsed().as_secs_f64();
            let after = cpu();
            max[i].push(rps);
            let per = |a: f64, b: f64| 1e6 * (a - b) / requests.max(1.0);
            cost[i].push((per(after.0, before.0), per(after.1, before.1)));
        }
    }
    drop((nginx, nginx_one));
    println!(
        "\nmaximum throughput (32 in flight, 5 s, median of {rounds} rounds), requests/s, and the path's own CPU per request:"
    );
    let medians: Vec<f64> = max.iter_mut().map(|m| median(m)).collect();
    for (i, (name, _, pids)) in paths.iter().enumerate() {
        let all: Vec<String> = max[i].iter().map(|v| format!("{v:.0}")).collect();
        let us = if pids.is_empty() {
            String::new()
        } else {
            let mut total: Vec<f64> = cost[i].iter().map(|(u, s)| u + s).collect();
            let mut user: Vec<f64> = cost[i].iter().map(|(u, _)| *u).collect();
            format!(
                "{:>5.1} µs/request ({:.1} user)",
                median(&mut total),
                median(&mut user)
            )
        };
        println!(
            "  {name:<26} {:>7.0}   {us}   ({})",
            medians[i],
            all.join(", ")
        );
    }
    match nginx_skipped {
        None => println!(
            "maximum throughput doing the same 95/5 split: meshc-proxy one thread {:.0}% of nginx's one worker, two threads {:.0}% of its two",
            100.0 * medians[1] / medians[3],
            100.0 * medians[2] / medians[4]
        ),
        Some(why) => println!("nginx comparison skipped: {why}"),
    }
}

/// A proxy with the 1,000-service IR (every host in its scope): its
/// resident memory once ready, and after the periodic trim.
async fn big_ir(work: &Path, client: &Clients) {
    let big = work.join("big");
    std::fs::create_dir_all(&big).unwrap();
    let big_repo = Repository::init(&big).unwrap();
    big_repo.set_head("refs/heads/main").unwrap();
    for (path, text) in meshc_compiler::synth::repository(1000) {
        let p = big.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    commit_all(&big_repo, "1,000 services");
    let mut procs = Procs::default();
    let big_data = work.join("big-data");
    let (grpc, _) = start_serve(&mut procs, &big, &big_data);
    let app = echo(&mut procs, "svc-00000", "v1");
    let p = start_proxy(
        &mut procs,
        ProxyExe::Sidecar(1),
        grpc,
        &big_data,
        "ns-000/svc-00000-v1",
        "svc-00000",
        app,
        None,
    );
    // Ready (without asking for /config, whose dump of the IR would be
    // counted as the proxy's own memory).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !admin_get(client, p.admin, "/ready")
        .await
        .is_ok_and(|a| a.status == 200)
    {
        assert!(
            Instant::now() < deadline,
            "the 1,000-service proxy is not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resident = rss_mb(p.pid);
    let config = admin_get(client, p.admin, "/config").await.unwrap();
    let hosts = serde_json::from_slice::<serde_json::Value>(&config.body).unwrap()["ir"]["hosts"]
        .as_object()
        .map_or(0, |h| h.len());
    println!(
        "proxy with the 1,000-service IR ({hosts} hosts in scope): {resident:.1} MB resident, {:.1} MB after dumping /config",
        rss_mb(p.pid)
    );
    // The proxy returns freed memory to the system every 5 s (src/memory.rs).
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!(
        "proxy with the 1,000-service IR, 6 s later: {} resident",
        rss_split(p.pid)
    );
}
