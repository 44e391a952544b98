//! A served bookinfo repository for the UI tests: a real Git repository, a
//! real control plane following it, the UI on its HTTP address.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::{Repository, Signature};
use meshc_reconciler::serve::{self, Config, Running};

/// The API token of the served control plane and its UI.
pub const TOKEN: &str = "ui-token";

/// Commit everything in the work tree (additions, changes, deletions).
pub fn commit(repo: &Repository, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Ann & \"O'Brien\"", "ann@example.invalid").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

/// Bookinfo in a fresh repository, followed by a control plane serving the UI.
pub struct Served {
    pub work: tempfile::TempDir,
    pub repo: Repository,
    pub data: tempfile::TempDir,
    pub server: Running,
}

impl Served {
    pub async fn bookinfo() -> Served {
        let work = tempfile::tempdir().unwrap();
        let repo = Repository::init(work.path()).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies-examples/bookinfo");
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&p, work.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        commit(&repo, "bookinfo");
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::new(
            &format!("file://{}", work.path().display()),
            data.path().into(),
        );
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.poll = Duration::from_secs(3600);
        config.bootstrap_token = "boot".into();
        config.api_token = Some(TOKEN.into());
        let server = serve::start_with(config, ui).await.unwrap();
        let served = Served {
            work,
            repo,
            data,
            server,
        };
        served.until_versions(1).await;
        served
    }

    /// The UI's router over this control plane (for `oneshot`).
    pub fn app(&self) -> axum::Router {
        meshc_web::router(Arc::new(meshc_web::Web::new(
            self.server.control.clone(),
            self.data.path().join("mirror.git"),
            String::new(),
            Some(TOKEN.into()),
        )))
    }

    /// Wait (triggering syncs) until `n` versions are recorded and the one
    /// the store says to serve is published: a version is recorded before
    /// the served snapshot is refreshed, and the pages that draw the served
    /// IR read the snapshot.
    pub async fn until_versions(&self, n: usize) {
        let control = &self.server.control;
        let deadline = Instant::now() + Duration::from_secs(30);
        let published = || {
            let served = control.store.served().unwrap().map(|(v, _)| v.id);
            served == control.current().map(|s| s.version.id)
        };
        while control.store.versions(100).unwrap().len() < n || !published() {
            assert!(
                Instant::now() < deadline,
                "version {n} never recorded and served"
            );
            control.sync_now.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn ui(control: &Arc<meshc_reconciler::control::Control>, config: &Config) -> axum::Router {
    meshc_web::router(Arc::new(meshc_web::Web::new(
        control.clone(),
        config.mirror_dir(),
        String::new(),
        Some(TOKEN.into()),
    )))
}
