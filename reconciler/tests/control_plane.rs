//! The control plane with real parts: a real Git repository (file:// and
//! git://), the real store on disk, real gRPC clients (the proxy's own
//! distribution client) over real mutual TLS with certificates from the CA,
//! and the HTTP API over real TCP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::Repository;
use meshc_dataplane::client::{self, Applied, Check};
use meshc_ir::proto::Node;
use meshc_reconciler::control::SyncState;
use meshc_reconciler::serve::{self, Config, Running};
use meshc_reconciler::store::Verdict;
use tokio::sync::watch;

#[path = "../../tests/common/net.rs"]
mod net;

mod git_servers;

use git_servers::{HttpsGit, KillOnDrop, Sshd, wait_listening};
use meshc_reconciler::sync::{Auth, Mirror, Source};
use net::{free_port, http};

const TOKEN: &str = "bootstrap-secret";
const API_TOKEN: &str = "api-secret";
const HOOK_SECRET: &str = "hook-secret";

/// A policy repository with bookinfo and a Sidecar that narrows details-v1
/// to ratings.
struct PolicyRepo {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl PolicyRepo {
    fn new() -> PolicyRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies-examples/bookinfo");
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(
            dir.path().join("sidecar.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: details\n  namespace: bookinfo\nspec:\n  workloadSelector:\n    labels:\n      app: details\n  egress:\n  - hosts:\n    - ./ratings.bookinfo.svc.cluster.local\n",
        )
        .unwrap();
        let r = PolicyRepo { dir, repo };
        r.commit("bookinfo");
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The repository directory's name (its path under a server's root).
    fn name(&self) -> String {
        self.path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        net::commit_all(&self.repo, message)
    }

    /// The branch's commit.
    fn head(&self) -> String {
        self.repo
            .head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .id()
            .to_string()
    }

    /// Move the branch to `commit` and the work tree with it (a reset --hard).
    fn reset(&self, commit: &str) {
        let c = self
            .repo
            .find_commit(git2::Oid::from_str(commit).unwrap())
            .unwrap();
        self.repo
            .reset(c.as_object(), git2::ResetType::Hard, None)
            .unwrap();
    }
}

fn config(url: &str, data: &Path) -> Config {
    let mut c = Config::new(url, data.to_path_buf());
    c.grpc_addr = "127.0.0.1:0".parse().unwrap();
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c.poll = Duration::from_secs(3600);
    c.quiet = Duration::from_millis(20);
    c.max_delay = Duration::from_millis(200);
    c.bootstrap_token = TOKEN.into();
    c.api_token = Some(API_TOKEN.into());
    c.webhook_secret = Some(HOOK_SECRET.into());
    c
}

/// A control plane following `url`, with its data directory (kept alive by the caller).
async fn started(url: &str) -> (tempfile::TempDir, Running) {
    let data = tempfile::tempdir().unwrap();
    let server = serve::start(config(url, data.path())).await.unwrap();
    (data, server)
}

struct Proxy {
    out: watch::Receiver<Option<Arc<Applied>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn node(workload: &str, sa: &str) -> Node {
    Node {
        id: format!("{workload}-0"),
        namespace: "bookinfo".into(),
        workload: workload.into(),
        service_account: sa.into(),
        ..Default::default()
    }
}

fn client_config(server: &Running, node: Node) -> client::Config {
    client::Config {
        endpoint: format!("https://{}", server.grpc_addr),
        server_name: "localhost".into(),
        ca_pem: server.ca_pem.clone(),
        bootstrap_token: TOKEN.into(),
        node,
    }
}

fn proxy(server: &Running, node: Node, check: Check) -> Proxy {
    let (tx, out) = watch::channel(None);
    let (stop, stop_rx) = watch::channel(false);
    let cfg = client_config(server, node);
    let task = tokio::spawn(client::run(cfg, tx, check, stop_rx));
    Proxy { out, stop, task }
}

fn accept_all() -> Check {
    Arc::new(|_| Ok(()))
}

impl Proxy {
    async fn until(&mut self, what: &str, f: impl Fn(&Applied) -> bool) -> Arc<Applied> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(a) = self.out.borrow_and_update().clone()
                && f(&a)
            {
                return a;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, self.out.changed())
                .await
                .is_err()
            {
                panic!("timed out waiting for {what}");
            }
        }
    }

    async fn at(&mut self, commit: &str) -> Arc<Applied> {
        let c = commit.to_string();
        self.until(&format!("commit {commit}"), move |a| a.source == c)
            .await
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json_body(body: &str) -> serde_json::Value {
    // axum sends JSON with Content-Length, never chunked.
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn github_push(server: &Running) -> (u16, String) {
    let payload = r#"{"ref":"refs/heads/main","after":"x"}"#;
    let sig = net::github_signature(HOOK_SECRET, payload);
    http(
        server.http_addr,
        "POST",
        "/api/v1/webhooks/github",
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "push")],
        payload,
    )
}

fn weight_of(a: &Applied, host: &str, subset: &str) -> Option<u32> {
    let p = a.ir.hosts.get(host)?;
    p.http.iter().find_map(|r| match &r.action {
        meshc_ir::HttpAction::Route(destinations) => destinations
            .iter()
            .find(|d| d.subset.as_deref() == Some(subset))
            .map(|d| d.weight),
        _ => None,
    })
}

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_proxies_rejections_rollback_nack_and_force_push() {
    let repo = PolicyRepo::new();
    let c1 = repo.head();
    let (_data, server) = started(&repo.url()).await;

    let mut product = proxy(
        &server,
        node("productpage-v1", "bookinfo-productpage"),
        accept_all(),
    );
    let mut details = proxy(
        &server,
        node("details-v1", "bookinfo-details"),
        accept_all(),
    );
    let refusing: Check = Arc::new(|_| Err("listener port 9080 is in use".to_string()));
    let nacker = proxy(&server, node("ratings-v1", "bookinfo-ratings"), refusing);

    // The first commit reaches every proxy; the refusing one is ERROR.
    let a1 = product.at(&c1).await;
    assert_eq!(
        weight_of(&a1, REVIEWS, "v2"),
        Some(10),
        "{:?}",
        a1.ir.hosts.keys()
    );
    let d1 = details.at(&c1).await;
    assert!(
        !d1.ir.hosts.contains_key(REVIEWS),
        "the Sidecar narrows details to ratings"
    );
    assert!(d1.ir.hosts.keys().any(|h| h.starts_with("ratings.")));
    let ctl = server.control.clone();
    eventually("the NACK to show", || {
        ctl.proxies()
            .iter()
            .any(|p| p.id == "ratings-v1-0" && p.state == SyncState::Error)
    })
    .await;
    eventually("both ACKs to arrive", || {
        ctl.proxies()
            .iter()
            .filter(|p| p.state == SyncState::Synced)
            .count()
            == 2
    })
    .await;
    let (status, body) = http(server.http_addr, "GET", "/api/v1/proxies", &[], "");
    assert_eq!(status, 200);
    let proxies = json_body(&body);
    let ratings = proxies["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "ratings-v1-0")
        .unwrap();
    assert_eq!(ratings["state"], "ERROR");
    assert!(
        ratings["message"]
            .as_str()
            .unwrap()
            .contains("port 9080 is in use")
    );
    let synced = proxies["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "SYNCED")
        .count();
    assert_eq!(synced, 2, "{proxies}");
    let (_, drift) = http(server.http_addr, "GET", "/api/v1/drift", &[], "");
    let drift = json_body(&drift);
    assert_eq!(drift["summary"]["error"], 1, "{drift}");
    assert_eq!(drift["summary"]["drifted"], 1, "{drift}");

    // A weight change, announced by a signed GitHub webhook, reaches the
    // proxies that see reviews and is not pushed to details.
    let details_pushes = |ctl: &meshc_reconciler::control::Control| {
        ctl.proxies()
            .iter()
            .find(|p| p.id == "details-v1-0")
            .unwrap()
            .pushes
    };
    let before = details_pushes(&ctl);
    repo.edit("routing.yaml", "weight: 90", "weight: 50");
    repo.edit("routing.yaml", "weight: 10", "weight: 50");
    let c2 = repo.commit("reviews: 50/50");
    let bad_sig = http(
        server.http_addr,
        "POST",
        "/api/v1/webhooks/github",
        &[
            ("X-Hub-Signature-256", "sha256=00"),
            ("X-GitHub-Event", "push"),
        ],
        r#"{"ref":"refs/heads/main"}"#,
    );
    assert_eq!(bad_sig.0, 401, "{bad_sig:?}");
    let (status, body) = github_push(&server);
    assert_eq!(status, 202, "{body}");
    let a2 = product.at(&c2).await;
    assert_eq!(weight_of(&a2, REVIEWS, "v2"), Some(50));
    eventually("details to be synced on the new version", || {
        ctl.proxies().iter().any(|p| {
            p.id == "details-v1-0"
                && p.state == SyncState::Synced
                && p.desired_commit.as_deref() == Some(c2.as_str())
        })
    })
    .await;
    assert_eq!(
        details_pushes(&ctl),
        before,
        "details' scope did not change; nothing is pushed to it"
    );

    // A commit with an error is rejected and never reaches a proxy.
    repo.edit("routing.yaml", "subset: v3", "subset: v9");
    let c3 = repo.commit("testers to v9 (no such subset)");
    let (status, _) = http(server.http_addr, "POST", "/api/v1/sync", &[], "");
    assert_eq!(status, 401, "actions need the token");
    let auth = format!("Bearer {API_TOKEN}");
    let (status, _) = http(
        server.http_addr,
        "POST",
        "/api/v1/sync",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 202);
    eventually("c3 to be recorded", || {
        ctl.store
            .versions(10)
            .unwrap()
            .iter()
            .any(|v| v.commit == c3)
    })
    .await;
    let v3 = ctl.store.find(&c3).unwrap().unwrap();
    assert_eq!(v3.verdict, Verdict::Rejected);
    assert!(v3.errors > 0 && v3.ir_hash.is_none());
    let (_, body) = http(
        server.http_addr,
        "GET",
        &format!("/api/v1/versions/{}", &c3[..12]),
        &[],
        "",
    );
    let v = json_body(&body);
    assert_eq!(v["verdict"], "rejected");
    assert!(
        v["diagnostics"]["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["message"].as_str().unwrap().contains("v9")),
        "{v}"
    );
    assert_eq!(
        ctl.current().unwrap().version.commit,
        c2,
        "last-known-good stays"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(product.out.borrow().as_ref().unwrap().source, c2);

    // Rollback to c1 (pinned, with who and why), then unpin.
    let body = format!(r#"{{"version":"{c1}","by":"ada","reason":"50/50 overloads v2"}}"#);
    let (status, resp) = http(
        server.http_addr,
        "POST",
        "/api/v1/rollback",
        &[("Authorization", &auth)],
        &body,
    );
    assert_eq!(status, 200, "{resp}");
    let back = product.at(&c1).await;
    assert_eq!(weight_of(&back, REVIEWS, "v2"), Some(10));
    let (_, versions) = http(server.http_addr, "GET", "/api/v1/versions", &[], "");
    let versions = json_body(&versions);
    assert_eq!(versions["served"]["pin"]["by"], "ada", "{versions}");
    let (status, _) = http(
        server.http_addr,
        "POST",
        "/api/v1/unpin",
        &[("Authorization", &auth)],
        r#"{"by":"ada"}"#,
    );
    assert_eq!(status, 200);
    product.at(&c2).await;

    // A force-push rewrites history (c2 and c3 gone); the server follows.
    repo.reset(&c1);
    repo.edit("routing.yaml", "weight: 90", "weight: 80");
    repo.edit("routing.yaml", "weight: 10", "weight: 20");
    let c4 = repo.commit("reviews: 80/20 (rewritten)");
    github_push(&server);
    let a4 = product.at(&c4).await;
    assert_eq!(weight_of(&a4, REVIEWS, "v2"), Some(20));
    assert!(
        ctl.store
            .events(10)
            .unwrap()
            .iter()
            .any(|e| e.kind == "force-push")
    );

    // Metrics (once the refusing proxy has refused the newest version too).
    eventually("the refusal of the newest version", || {
        ctl.proxies().iter().any(|p| {
            p.id == "ratings-v1-0"
                && p.state == SyncState::Error
                && p.desired_commit.as_deref() == Some(c4.as_str())
        })
    })
    .await;
    let (_, metrics) = http(server.http_addr, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("meshc_versions_total{verdict=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshc_proxies{state=\"ERROR\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshc_convergence_seconds_count"),
        "{metrics}"
    );

    product.stop().await;
    details.stop().await;
    nacker.stop().await;
    server.stop().await;
}

/// The stream's error; a stream that stays open (was accepted) fails the test.
async fn refused(f: impl std::future::Future<Output = Result<(), tonic::Status>>) -> tonic::Status {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("the stream ended without an error"),
        Err(_) => panic!("the stream was accepted and stayed open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_checked() {
    let repo = PolicyRepo::new();
    let (_data, server) = started(&repo.url()).await;
    let ctl = server.control.clone();
    eventually("the first version", || ctl.current().is_some()).await;

    // A wrong bootstrap token gets no certificate.
    let mut cfg = client_config(&server, node("details-v1", "bookinfo-details"));
    cfg.bootstrap_token = "guess".into();
    let err = client::issue_certificate(&cfg)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("bad bootstrap token"), "{err}");

    // No client certificate: no stream.
    let cfg = client_config(&server, node("details-v1", "bookinfo-details"));
    let plain = tonic::transport::Channel::from_shared(cfg.endpoint.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&cfg.ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, _) = watch::channel(None);
    let e = refused(client::subscribe(plain, &cfg.node, &tx, &accept_all())).await;
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // details' certificate cannot claim another service account...
    let creds = client::issue_certificate(&cfg).await.unwrap();

    // Renewal goes by the certificate, not the token: after the bootstrap
    // token is rotated, a valid certificate still renews itself...
    let mut rotated = cfg.clone();
    rotated.bootstrap_token = "rotated-away".into();
    let renewed = client::renew_certificate(&rotated, Some(&creds))
        .await
        .expect("renewed with the certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(renewed.certificate_pem.as_bytes())
        .expect("a PEM certificate");
    let ids = meshc_reconciler::ca::spiffe_ids(&pem.contents);
    assert_eq!(
        ids,
        ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details"]
    );
    // ...but never into another identity.
    let mut other = rotated.clone();
    other.node = node("productpage-v1", "bookinfo-productpage");
    let err = client::renew_certificate(&other, Some(&creds))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("is not spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"),
        "{err}"
    );
    let channel = client::connect(&cfg, &creds).await.unwrap();
    let claim = node("productpage-v1", "bookinfo-productpage");
    let e = refused(client::subscribe(channel, &claim, &tx, &accept_all())).await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // ...nor another workload's scope under its own service account.
    let channel = client::connect(&cfg, &creds).await.unwrap();
    let claim = node("productpage-v1", "bookinfo-details");
    let e = refused(client::subscribe(channel, &claim, &tx, &accept_all())).await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        tx.borrow().is_none(),
        "nothing of productpage's scope was applied"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_serves_the_same_version_without_recompiling() {
    let repo = PolicyRepo::new();
    let c1 = repo.head();
    let (data, server) = started(&repo.url()).await;
    let mut p = proxy(
        &server,
        node("productpage-v1", "bookinfo-productpage"),
        accept_all(),
    );
    let first = p.at(&c1).await;
    p.stop().await;
    server.stop().await;

    // The repository is gone: nothing can be fetched or compiled. The store
    // still has the accepted version, and a proxy that reconnects with what
    // it holds gets nothing re-sent.
    let gone = format!("file://{}", data.path().join("nowhere").display());
    let server = serve::start(config(&gone, data.path())).await.unwrap();
    assert_eq!(server.control.current().unwrap().version.commit, c1);
    let (tx, out) = watch::channel(Some(first.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let cfg = client_config(&server, node("productpage-v1", "bookinfo-productpage"));
    let task = tokio::spawn(client::run(cfg, tx, accept_all(), stop_rx));
    let ctl = server.control.clone();
    eventually("the reconnected proxy to be synced", || {
        ctl.proxies().iter().any(|p| p.state == SyncState::Synced)
    })
    .await;
    assert_eq!(
        ctl.proxies()[0].pushes,
        0,
        "nothing re-sent to a proxy that has the version"
    );
    assert_eq!(out.borrow().as_ref().unwrap().version, first.version);
    let _ = stop.send(true);
    let _ = task.await;
    server.stop().await;
}

/// `git daemon` on loopback, serving the repository over git://.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_git_daemon() {
    let repo = PolicyRepo::new();
    let c1 = repo.head();
    let port = free_port();
    let base: PathBuf = repo.path().parent().unwrap().to_path_buf();
    // `git daemon` runs `git-daemon` as a child that outlives a killed `git`
    // (holding the test's stdout, so a CI pipe never closes): start the daemon
    // itself, without our stdout, and kill it when the test ends either way.
    let exec_path = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git runs");
    let exec_path = String::from_utf8(exec_path.stdout).unwrap();
    let daemon = std::process::Command::new(PathBuf::from(exec_path.trim()).join("git-daemon"))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(&base)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon runs");
    let _daemon = KillOnDrop(daemon);
    let url = format!("git://127.0.0.1:{port}/{}", repo.name());
    wait_listening(port, "git daemon");
    let (_data, server) = started(&url).await;
    follows_two_commits(&repo, &server, c1, "git://").await;
    server.stop().await;
}

/// The server has `c1` from `repo`; a new commit, announced, arrives too.
async fn follows_two_commits(repo: &PolicyRepo, server: &Running, c1: String, over: &str) {
    let ctl = server.control.clone();
    eventually(&format!("the first commit over {over}"), || {
        ctl.current().is_some_and(|s| s.version.commit == c1)
    })
    .await;
    repo.edit("routing.yaml", "weight: 90", "weight: 70");
    repo.edit("routing.yaml", "weight: 10", "weight: 30");
    let c2 = repo.commit("70/30");
    ctl.sync_now.notify_one();
    eventually(&format!("the second commit over {over}"), || {
        ctl.current().is_some_and(|s| s.version.commit == c2)
    })
    .await;
}

/// The `main` branch of `url` with these credentials.
fn source(url: &str, auth: Auth, ca_file: Option<PathBuf>, known_hosts: Option<PathBuf>) -> Source {
    Source {
        url: url.to_string(),
        branch: "main".to_string(),
        subpath: String::new(),
        auth,
        ca_file,
        known_hosts,
    }
}

/// What fetching `source` into a fresh mirror fails with.
fn fetch_error(source: Source) -> String {
    let dir = tempfile::tempdir().unwrap();
    match Mirror::open(&dir.path().join("mirror"), source)
        .unwrap()
        .fetch()
    {
        Ok(f) => panic!("the fetch should fail, it gave {f:?}"),
        Err(e) => e.to_string(),
    }
}

/// `https://` with a token, against `git http-backend` behind TLS with a
/// private CA: a wrong token and an untrusted certificate are refused with
/// errors that never show the token; the right ones are followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_an_https_remote_with_a_token_and_a_private_ca() {
    const GIT_TOKEN: &str = "git-token-s3cret";
    let repo = PolicyRepo::new();
    let c1 = repo.head();
    let git = HttpsGit::start(repo.path().parent().unwrap(), GIT_TOKEN).await;
    let url = format!("https://{}/{}", git.addr, repo.name());
    let ca = Some(git.ca_file.clone());

    let wrong = tokio::task::spawn_blocking({
        let url = url.clone();
        let ca = ca.clone();
        move || fetch_error(source(&url, Auth::Token("wrong-t0ken".into()), ca, None))
    })
    .await
    .unwrap();
    assert!(!wrong.contains("wrong-t0ken"), "{wrong}");
    assert!(
        git.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the server refused the wrong token: {wrong}"
    );
    let untrusted = tokio::task::spawn_blocking({
        let url = url.clone();
        move || fetch_error(source(&url, Auth::Token(GIT_TOKEN.into()), None, None))
    })
    .await
    .unwrap();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    assert!(!untrusted.contains(GIT_TOKEN), "{untrusted}");

    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(&url, data.path());
    cfg.source = source(&url, Auth::Token(GIT_TOKEN.into()), ca, None);
    let server = serve::start(cfg).await.unwrap();
    follows_two_commits(&repo, &server, c1, "https://").await;
    assert!(git.served.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    server.stop().await;
}

/// `ssh://` with a key against a real `sshd`, host keys checked against the
/// given known_hosts: an unknown host and an unknown key are refused; the
/// right ones are followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_an_ssh_remote_with_a_key_and_known_hosts() {
    let repo = PolicyRepo::new();
    let c1 = repo.head();
    let sshd = tokio::task::spawn_blocking(Sshd::start).await.unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user,
        sshd.port,
        repo.path().display()
    );
    let key = Auth::SshKey(sshd.key.clone());
    let known = Some(sshd.known_hosts.clone());

    let empty = sshd.file("no_hosts");
    std::fs::write(&empty, "").unwrap();
    git_servers::keygen(&sshd.file("stranger_key"));
    let (unknown_host, unknown_key) = tokio::task::spawn_blocking({
        let (url, key, known) = (url.clone(), key.clone(), known.clone());
        let stranger = Auth::SshKey(sshd.file("stranger_key"));
        move || {
            (
                fetch_error(source(&url, key, None, Some(empty))),
                fetch_error(source(&url, stranger, None, known)),
            )
        }
    })
    .await
    .unwrap();
    assert!(
        unknown_host.contains("Host key verification failed"),
        "{unknown_host}"
    );
    assert!(unknown_key.contains("Permission denied"), "{unknown_key}");

    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(&url, data.path());
    cfg.source = source(&url, key, None, known);
    let server = serve::start(cfg).await.unwrap();
    follows_two_commits(&repo, &server, c1, "ssh://").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_webhooks_a_deleted_branch_and_certificate_rotation() {
    let repo = PolicyRepo::new();
    let c1 = repo.head();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(&repo.url(), data.path());
    cfg.cert_ttl = Duration::from_secs(3);
    let server = serve::start(cfg).await.unwrap();
    let ctl = server.control.clone();
    let mut p = proxy(
        &server,
        node("productpage-v1", "bookinfo-productpage"),
        accept_all(),
    );
    p.at(&c1).await;

    // GitLab: the token is checked, and pushes to other refs are ignored.
    let hook = "/api/v1/webhooks/gitlab";
    let main = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let (status, _) = http(
        server.http_addr,
        "POST",
        hook,
        &[("X-Gitlab-Token", "nope")],
        main,
    );
    assert_eq!(status, 401);
    let other = r#"{"object_kind":"push","ref":"refs/heads/feature"}"#;
    let (status, body) = http(
        server.http_addr,
        "POST",
        hook,
        &[("X-Gitlab-Token", HOOK_SECRET)],
        other,
    );
    assert_eq!(status, 200);
    assert!(body.contains("ignored"), "{body}");
    repo.edit("routing.yaml", "weight: 90", "weight: 60");
    repo.edit("routing.yaml", "weight: 10", "weight: 40");
    let c2 = repo.commit("60/40");
    // A GitLab webhook with a signing token (Standard Webhooks): signed id,
    // timestamp and body. A signature over another body is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sign = |body: &str| {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
        mac.update(format!("msg_1.{now}.{body}").as_bytes());
        let digest = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    let signed = |signature: &str| {
        http(
            server.http_addr,
            "POST",
            hook,
            &[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &now),
                ("webhook-signature", signature),
            ],
            main,
        )
    };
    assert_eq!(signed(&sign(other)).0, 401);
    assert_eq!(signed(&sign(main)).0, 202);
    p.at(&c2).await;

    // The branch is deleted: recorded, and the last accepted version stays.
    repo.repo
        .find_reference("refs/heads/main")
        .unwrap()
        .delete()
        .unwrap();
    ctl.sync_now.notify_one();
    eventually("the deleted branch to be noted", || {
        ctl.store
            .events(10)
            .unwrap()
            .iter()
            .any(|e| e.kind == "branch-deleted")
    })
    .await;
    assert_eq!(ctl.current().unwrap().version.commit, c2);

    // Certificates live 3 s; the proxy renews after 2 s and stays in sync
    // without anything being re-sent.
    let pushes_before = ctl.proxies()[0].pushes;
    eventually("a renewed certificate", || {
        ctl.metrics.certificates.get() >= 2
    })
    .await;
    eventually("the renewed proxy to be synced again", || {
        ctl.proxies()
            .iter()
            .any(|p| p.connected && p.state == SyncState::Synced)
    })
    .await;
    assert!(
        ctl.proxies()[0].pushes <= pushes_before,
        "nothing re-sent after renewal"
    );
    assert_eq!(p.out.borrow().as_ref().unwrap().source, c2);
    p.stop().await;
    server.stop().await;
}

/// A scope of a few hundred kilobytes goes out in parts; the proxy applies
/// the whole of it once, and it is exactly the scope compiled here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_scope_arrives_in_parts_and_is_applied_whole() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let files = meshc_compiler::synth::repository(80);
    for (path, text) in &files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let c1 = net::commit_all(&repo, "80 services");
    let inputs = files
        .into_iter()
        .map(|(p, t)| meshc_compiler::Input::new(p, t))
        .collect();
    let ir = meshc_compiler::compile(inputs, &meshc_compiler::Options::default())
        .ir
        .unwrap();
    let workload = "ns-000/svc-00003-v1";
    let expected = ir.scope(workload).unwrap();
    let size: usize = ir
        .scope_names(workload)
        .unwrap()
        .iter()
        .map(|n| ir.resources()[n].body.len())
        .sum();
    assert!(
        size > 4 * meshc_reconciler::distribution::PART_BYTES,
        "the scope ({size} bytes) needs several parts"
    );

    let (_data, server) = started(&format!("file://{}", dir.path().display())).await;
    let mut p = proxy(
        &server,
        Node {
            id: "svc-3".into(),
            namespace: "ns-000".into(),
            workload: "svc-00003-v1".into(),
            service_account: "svc-00003".into(),
            ..Default::default()
        },
        accept_all(),
    );
    let applied = p.at(&c1).await;
    assert_eq!(applied.ir, expected);
    assert_eq!(
        server.control.metrics.pushes.get(),
        1,
        "one update, however many parts"
    );
    p.stop().await;
    server.stop().await;
}

/// POST `body` to `path` over TLS, trusting `ca_pem` for `localhost`;
/// (status, body).
async fn https_post(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the webhook's certificate is valid for localhost under the CA");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The admission webhook over real TLS, judging resources against the
/// version being served, and following it when a commit changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_webhook_judges_against_the_served_version() {
    let repo = PolicyRepo::new();
    let data = tempfile::tempdir().unwrap();
    let mut c = config(&repo.url(), data.path());
    c.admission_addr = Some("127.0.0.1:0".parse().unwrap());
    let server = serve::start(c).await.unwrap();
    let addr = server.admission_addr.expect("the webhook listens");
    let ctl = server.control.clone();
    eventually("the first version", || ctl.current().is_some()).await;
    let review = |subset: &str| {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "b4f5c1d2",
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "namespace": "bookinfo",
                "operation": "UPDATE",
                "object": {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "VirtualService",
                    "metadata": {"name": "ratings", "namespace": "bookinfo"},
                    "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings", "subset": subset}}]}]}
                },
                "dryRun": false
            }
        })
        .to_string()
    };
    let judge = |subset: &'static str| {
        let ca = server.ca_pem.clone();
        let body = review(subset);
        async move {
            let (status, body) = https_post(addr, &ca, "/api/v1/admission", &body).await;
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["response"]["uid"], "b4f5c1d2");
            v["response"].clone()
        }
    };
    let r = judge("v1").await;
    assert_eq!(r["allowed"], true, "{r}");
    let r = judge("v2").await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"].as_str().unwrap().contains("MC0101"),
        "{r}"
    );

    // A commit defining subset v2 for ratings: once served, v2 is admitted.
    repo.edit(
        "destination-rules.yaml",
        "  host: ratings\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n",
        "  host: ratings\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v1\n",
    );
    let c2 = repo.commit("ratings v2");
    ctl.sync_now.notify_one();
    eventually("the second version", || {
        ctl.current().is_some_and(|s| s.version.commit == c2)
    })
    .await;
    let r = judge("v2").await;
    assert_eq!(r["allowed"], true, "{r}");

    // Malformed input is refused with 400 over TLS too.
    let (status, body) = https_post(addr, &server.ca_pem, "/api/v1/admission", "{}").await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}
