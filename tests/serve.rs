//! `meshc serve` as a real process: proxies (the real distribution client
//! over mutual TLS) follow commits; the server is killed with SIGKILL in the
//! middle of a push and restarted; every proxy converges on the newest
//! accepted version and none ever applies anything but a whole scope of an
//! accepted commit.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::net::{commit_all, free_port, http, try_http};
use git2::Repository;
use meshc_dataplane::client::{self, Applied, Check};
use meshc_ir::Ir;
use meshc_ir::proto::Node;
use tokio::sync::watch;

/// The IR of `commit`, compiled here independently of the server.
fn ir_at(repo: &Repository, commit: &str) -> Ir {
    let files =
        meshc_reconciler::git::read_tree(repo, commit, "", |p| p.ends_with(".yaml")).unwrap();
    let inputs = files
        .into_iter()
        .map(|f| meshc_compiler::Input::bytes(f.path, f.bytes))
        .collect();
    let ir = meshc_compiler::compile(inputs, &meshc_compiler::Options::default())
        .ir
        .expect("accepted commits compile");
    std::sync::Arc::unwrap_or_clone(ir)
}

struct Server {
    child: Child,
    http: u16,
}

/// A server left running by a failing test would keep the test binary's
/// inherited stderr open, and with it any pipe CI reads the output through.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(repo: &Path, data: &Path, grpc: u16, http: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_meshc"))
        .args(["serve", "--poll-seconds", "3600", "--debounce-ms", "5"])
        .arg("--repo")
        .arg(repo)
        .arg("--data-dir")
        .arg(data)
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http}"))
        .env("MESHC_BOOTSTRAP_TOKEN", "boot")
        .env("MESHC_API_TOKEN", "api")
        .env("MESHC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("meshc serve starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(http, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "meshc serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, http }
}

fn get(port: u16, path: &str) -> Option<String> {
    try_http(([127, 0, 0, 1], port).into(), "GET", path, &[], "").map(|(_, body)| body)
}

fn sync_now(port: u16) {
    let (status, body) = http(
        ([127, 0, 0, 1], port).into(),
        "POST",
        "/api/v1/sync",
        &[("Authorization", "Bearer api")],
        "",
    );
    assert_eq!(status, 202, "{body}");
}

type Seen = Arc<Mutex<Vec<Ir>>>;

struct Proxy {
    workload: String,
    out: watch::Receiver<Option<Arc<Applied>>>,
    seen: Seen,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How many times the distribution client ran its after-apply hook.
static AFTER_APPLY: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_push_and_restarted_every_proxy_converges_on_whole_configs() {
    let work = tempfile::tempdir().unwrap();
    let repo = Repository::init(work.path()).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let src = common::root().join("policies-examples/bookinfo");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, work.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let c1 = commit_all(&repo, "bookinfo");
    client::after_apply(|| {
        AFTER_APPLY.fetch_add(1, Ordering::Relaxed);
    });
    let data = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut server = start(work.path(), data.path(), grpc, http);
    let ca_pem = std::fs::read_to_string(data.path().join("ca.pem")).unwrap();

    let workloads = [
        ("productpage-v1", "bookinfo-productpage"),
        ("details-v1", "bookinfo-details"),
        ("ratings-v1", "bookinfo-ratings"),
        ("reviews-v1", "bookinfo-reviews"),
        ("reviews-v2", "bookinfo-reviews"),
        ("reviews-v3", "bookinfo-reviews"),
    ];
    let mut proxies = Vec::new();
    for (i, (w, sa)) in workloads.iter().cycle().take(12).enumerate() {
        let (tx, out) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let check: Check = Arc::new(move |ir: &Ir| {
            record.lock().unwrap().push(ir.clone());
            Ok(())
        });
        let cfg = client::Config {
            endpoint: format!("https://127.0.0.1:{grpc}"),
            server_name: "localhost".into(),
            ca_pem: ca_pem.clone(),
            bootstrap_token: "boot".into(),
            node: Node {
                id: format!("{w}-{i}"),
                namespace: "bookinfo".into(),
                workload: w.to_string(),
                service_account: sa.to_string(),
                ..Default::default()
            },
        };
        let task = tokio::spawn(client::run(cfg, tx, check, stop_rx));
        proxies.push(Proxy {
            workload: format!("bookinfo/{w}"),
            out,
            seen,
            stop,
            task,
        });
    }
    let all_at = |proxies: &Vec<Proxy>, commit: &str| {
        proxies
            .iter()
            .all(|p| p.out.borrow().as_ref().is_some_and(|a| a.source == commit))
    };
    let wait_all = async |proxies: &Vec<Proxy>, commit: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_at(proxies, commit) {
            assert!(
                Instant::now() < deadline,
                "proxies did not converge on {commit}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_all(&proxies, &c1).await;

    // A change to a host every proxy sees, then SIGKILL while it is pushed.
    let routing = work.path().join("routing.yaml");
    let text = std::fs::read_to_string(&routing).unwrap();
    std::fs::write(
        &routing,
        text.replacen("weight: 90", "weight: 40", 1)
            .replacen("weight: 10", "weight: 60", 1),
    )
    .unwrap();
    let c2 = commit_all(&repo, "reviews 40/60");
    sync_now(server.http);
    tokio::time::sleep(Duration::from_millis(15)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Restarted on the same data directory, it follows the branch again.
    let mut server = start(work.path(), data.path(), grpc, http);
    wait_all(&proxies, &c2).await;
    let versions = get(server.http, "/api/v1/versions").unwrap();
    assert!(versions.contains(&c2), "{versions}");
    // The version's semantic changes were kept when it was recorded (by
    // the restarted server, which read c1's IR back from the store).
    let v2: serde_json::Value =
        serde_json::from_str(&get(server.http, &format!("/api/v1/versions/{c2}")).unwrap())
            .unwrap();
    let changes = v2["changes"].as_array().cloned().unwrap_or_default();
    assert!(
        changes.iter().any(|c| c["kind"] == "changed"
            && c["text"].as_str().is_some_and(|t| t.contains("40"))),
        "{v2:#}"
    );

    // Everything any proxy ever applied is the whole scope of an accepted commit.
    let irs: BTreeMap<String, Ir> = [
        (c1.clone(), ir_at(&repo, &c1)),
        (c2.clone(), ir_at(&repo, &c2)),
    ]
    .into_iter()
    .collect();
    let scopes: Vec<Ir> = irs
        .values()
        .collect::<Vec<_>>()
        .iter()
        .flat_map(|ir| {
            workloads
                .iter()
                .map(|(w, _)| ir.scope(&format!("bookinfo/{w}")).unwrap())
        })
        .collect();
    let mut seen_counts = Vec::new();
    for p in &proxies {
        let seen = p.seen.lock().unwrap();
        assert!(!seen.is_empty());
        seen_counts.push(seen.len());
        for ir in seen.iter() {
            assert!(
                scopes.contains(ir),
                "{} applied something that is not a whole scope of c1 or c2",
                p.workload
            );
            assert_eq!(ir.workloads.keys().next().unwrap(), &p.workload);
        }
        let last = p.out.borrow().clone().unwrap();
        assert_eq!(last.ir, irs[&c2].scope(&p.workload).unwrap());
    }
    for p in proxies {
        let _ = p.stop.send(true);
        let _ = p.task.await;
    }
    // The hook (the binary's heap trim) ran once per config applied, and
    // only then: every config checked here was applied.
    let checked: usize = seen_counts.iter().sum();
    assert_eq!(AFTER_APPLY.load(Ordering::Relaxed), checked);
    // Graceful shutdown on SIGTERM.
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "meshc serve exits cleanly on SIGTERM: {status}"
    );
}
