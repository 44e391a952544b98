//! Benchmark: from a push webhook to every connected proxy acknowledging the
//! new version, on the generated 1,000-service repository (issue 5's target:
//! 1,000 proxies, under 1 s, control plane under 300 MB).
//!
//! The control plane is the real `meshc serve` process (release build); the
//! proxies are 1,000 distribution clients in this process, each with its own
//! certificate from the CA and its own mutually authenticated HTTP/2
//! connection, acknowledging every response at once (they do not build
//! routing tables: this measures the control plane). Each iteration changes
//! one service's canary weight, commits, and posts a signed GitHub webhook.
//! Every proxy sees every host (no Sidecar), so every proxy gets the change.
//! The control plane's resident memory (VmRSS, VmHWM) is printed at the end.
//!
//! Run: `cargo bench --bench converge` (MESHC_BENCH_PROXIES changes the count).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use git2::Repository;
use meshc_dataplane::client;
use meshc_ir::proto::distribution_client::DistributionClient;
use meshc_ir::proto::{DiscoveryRequest, Node};

fn main() {
    divan::main();
}

#[path = "../tests/common/net.rs"]
mod net;

use net::{commit_all, free_port, http, try_http};

const SERVICES: usize = 1000;

fn webhook(port: u16) {
    let payload = r#"{"ref":"refs/heads/main"}"#;
    let sig = net::github_signature("hook", payload);
    let (status, body) = http(
        ([127, 0, 0, 1], port).into(),
        "POST",
        "/api/v1/webhooks/github",
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "push")],
        payload,
    );
    assert_eq!(status, 202, "{body}");
}

fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn webhook_to_all_acked(bencher: divan::Bencher) {
    let proxies: usize = std::env::var("MESHC_BENCH_PROXIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let work = tempfile::tempdir().unwrap();
    let repo = Repository::init(work.path()).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    for (path, text) in meshc_compiler::synth::repository(SERVICES) {
        let p = work.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    commit_all(&repo, "generated");
    let data = tempfile::tempdir().unwrap();
    let (grpc, http_port) = (free_port(), free_port());
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_meshc"))
            .args(["serve", "--poll-seconds", "3600"])
            .arg("--repo")
            .arg(work.path())
            .arg("--data-dir")
            .arg(data.path())
            .arg(format!("--grpc-addr=127.0.0.1:{grpc}"))
            .arg(format!("--http-addr=127.0.0.1:{http_port}"))
            .env("MESHC_BOOTSTRAP_TOKEN", "boot")
            .env("MESHC_WEBHOOK_SECRET", "hook")
            .env("MESHC_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("meshc serve starts"),
    );
    let pid = server.0.id();
    let api: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let started = Instant::now();
    loop {
        let up = try_http(api, "GET", "/api/v1/versions", &[], "")
            .is_some_and(|(_, body)| body.contains("\"served\":{"));
        if up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no version served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "first commit compiled and served after {:?}; {}",
        started.elapsed(),
        memory(pid)
    );
    let ca_pem = std::fs::read_to_string(data.path().join("ca.pem")).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // What each proxy last acknowledged: the commit.
    let acked: Arc<Vec<Mutex<String>>> = Arc::new((0..proxies).map(|_| Mutex::default()).collect());
    let connect_start = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..proxies {
            let service = format!("svc-{:05}", i / 2);
            let node = Node {
                id: format!("p{i}"),
                namespace: format!("ns-{:03}", i / 2 / 100),
                workload: format!("{service}-v{}", i % 2 + 1),
                service_account: service,
                ..Default::default()
            };
            let cfg = client::Config {
                endpoint: format!("https://127.0.0.1:{grpc}"),
                server_name: "localhost".into(),
                ca_pem: ca_pem.clone(),
                bootstrap_token: "boot".into(),
                node,
            };
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let creds = client::issue_certificate(&cfg).await.unwrap();
                let channel = client::connect(&cfg, &creds).await.unwrap();
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tx.send(DiscoveryRequest {
                    node: Some(cfg.node.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
                let mut responses = DistributionClient::new(channel)
                    .max_decoding_message_size(256 << 20)
                    .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .unwrap()
                    .into_inner();
                // Connected; acknowledge in a task of its own from here on.
                tokio::spawn(async move {
                    while let Ok(Some(r)) = responses.message().await {
                        if r.more {
                            continue;
                        }
                        *acked[i].lock().unwrap() = r.source.clone();
                        let ack = DiscoveryRequest {
                            version: r.version,
                            response_nonce: r.nonce,
                            ..Default::default()
                        };
                        if tx.send(ack).await.is_err() {
                            break;
                        }
                    }
                });
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let _guard = runtime.enter();
    let all_at = |commit: &str| acked.iter().all(|a| *a.lock().unwrap() == commit);
    let head = repo
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    while !all_at(&head) {
        assert!(
            connect_start.elapsed() < Duration::from_secs(600),
            "initial sync"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "{proxies} proxies connected and synced in {:?}; control plane {}",
        connect_start.elapsed(),
        memory(pid)
    );
    std::thread::sleep(Duration::from_secs(6));
    eprintln!("6 s later: {}", memory(pid));

    let file = work.path().join("ns-000/svc-00042.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut round = 0u32;
    bencher
        .with_inputs(|| {
            round += 1;
            // The route timeout: a change every proxy must get.
            assert!(original.contains("timeout: 5s"));
            let text =
                original.replacen("timeout: 5s", &format!("timeout: {}s", 6 + round % 50), 1);
            std::fs::write(&file, text).unwrap();
            commit_all(&repo, &format!("svc-00042 canary, round {round}"))
        })
        .bench_local_values(|commit| {
            webhook(http_port);
            while !all_at(&commit) {
                std::thread::sleep(Duration::from_micros(500));
            }
        });
    eprintln!("control plane after the pushes: {}", memory(pid));
    std::thread::sleep(Duration::from_secs(6));
    eprintln!("control plane 6 s later: {}", memory(pid));
    let (_, m) = http(api, "GET", "/metrics", &[], "");
    for line in m.lines().filter(|l| {
        l.starts_with("meshc_pushes_total")
            || l.starts_with("meshc_convergence_seconds_sum")
            || l.starts_with("meshc_convergence_seconds_count")
    }) {
        eprintln!("{line}");
    }
    drop(server);
}
