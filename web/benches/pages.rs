//! Server-side rendering time of the UI's pages for the generated
//! 10,000-service repository (issue 7's target: under 100 ms), over a real
//! control plane that compiled two commits of it. The first render of a
//! version page (listing both commits' trees, reading the files that changed
//! for the YAML diff; the semantic changes were kept when the version was
//! recorded) is printed once; the benchmark measures renders after it, which
//! the page cache serves.
//!
//! Run: `cargo bench -p meshc-web --bench pages` (`MESHC_BENCH_SERVICES`
//! changes the size).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use git2::Repository;
use meshc_reconciler::serve::{self, Config, Running};
use tower::ServiceExt;

fn main() {
    divan::main();
}

struct Setup {
    _work: tempfile::TempDir,
    _data: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    _server: Running,
    app: axum::Router,
}

#[path = "../tests/common/mod.rs"]
mod common;

use common::commit;

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let services: usize = std::env::var("MESHC_BENCH_SERVICES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let work = tempfile::tempdir().unwrap();
        let repo = Repository::init(work.path()).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let mut first = None;
        for (path, text) in meshc_compiler::synth::repository(services) {
            let p = work.path().join(&path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            if first.is_none() && path.contains("svc-") {
                first = Some(p);
            }
        }
        commit(&repo, "generated");
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::new(
            &format!("file://{}", work.path().display()),
            data.path().into(),
        );
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.poll = Duration::from_secs(3600);
        config.bootstrap_token = "boot".into();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime.block_on(serve::start(config)).unwrap();
        let until = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(600);
            while server.control.store.versions(10).unwrap().len() < n {
                assert!(Instant::now() < deadline, "commit {n} was not compiled");
                server.control.sync_now.notify_one();
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        until(1);
        // A second commit changing one service's timeout.
        let changed = first.expect("a service file");
        let text = std::fs::read_to_string(&changed).unwrap();
        std::fs::write(&changed, text.replacen("timeout: 2s", "timeout: 3s", 1)).unwrap();
        commit(&repo, "one timeout");
        until(2);
        let app = meshc_web::router(Arc::new(meshc_web::Web::new(
            server.control.clone(),
            data.path().join("mirror.git"),
            String::new(),
            None,
        )));
        let s = Setup {
            _work: work,
            _data: data,
            runtime,
            _server: server,
            app,
        };
        let started = Instant::now();
        let body = render(&s, "/versions/2");
        assert!(body.contains("timeout"), "the semantic diff names the change");
        eprintln!(
            "{services} services: first render of /versions/2 (changed files read, stored changes): {:?}",
            started.elapsed()
        );
        s
    })
}

fn render(s: &Setup, path: &str) -> String {
    s.runtime.block_on(async {
        let resp = s
            .app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    })
}

#[divan::bench(args = ["/", "/versions/2", "/services", "/proxies", "/rules"])]
fn page(bencher: divan::Bencher, path: &str) {
    let s = setup();
    bencher.bench_local(|| render(s, path).len());
}
