//! Benchmark: what the reconciler does per commit of the generated
//! 10,000-service repository, after one file changed: reading the commit's
//! policy files out of Git (`read_blobs`: every blob inflated; `read_ids`:
//! the tree walked for paths and blob ids only) and the whole step, read
//! and incremental compile: reading every blob (`read_and_compile`), or, as
//! the reconciler does, only those the session does not have
//! (`read_known_and_compile`).
//!
//! Run: `cargo bench -p meshc-reconciler --bench read_commit`.

use std::sync::OnceLock;

use git2::{Oid, Repository, Signature};
use meshc_compiler::incremental::Session;
use meshc_compiler::{Options, synth};
use meshc_reconciler::commit::{policy_at, policy_ids, policy_known};

fn main() {
    divan::main();
}

const SERVICES: usize = 10_000;

/// The repository and two commits: the generated policy, and one service's
/// VirtualService timeout edited.
struct Repo {
    _dir: tempfile::TempDir,
    repo_path: std::path::PathBuf,
    commits: [Oid; 2],
}

fn commit(repo: &Repository, message: &str) -> Oid {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("bench", "bench@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

fn repo() -> &'static Repo {
    static REPO: OnceLock<Repo> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy");
        let files = synth::repository(SERVICES);
        for (p, text) in &files {
            let f = path.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
        let repo = Repository::init(&path).unwrap();
        let first = commit(&repo, "generated");
        let (p, text) = files
            .iter()
            .find(|(p, _)| p.ends_with("svc-00042.yaml"))
            .unwrap();
        let edited = text.replacen("timeout: 2s", "timeout: 3s", 1);
        assert_ne!(&edited, text, "the generated file has a timeout to edit");
        std::fs::write(path.join(p), edited).unwrap();
        let second = commit(&repo, "one timeout");
        Repo {
            _dir: dir,
            repo_path: path,
            commits: [first, second],
        }
    })
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn read_blobs(bencher: divan::Bencher) {
    let r = repo();
    let repo = Repository::open(&r.repo_path).unwrap();
    let rev = r.commits[1].to_string();
    bencher.bench_local(|| policy_at(&repo, &rev, "", str::to_string).unwrap().0.len());
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn read_ids(bencher: divan::Bencher) {
    let r = repo();
    let repo = Repository::open(&r.repo_path).unwrap();
    let rev = r.commits[1].to_string();
    bencher.bench_local(|| policy_ids(&repo, &rev, "").unwrap().len());
}

/// Each sample reads the other commit and compiles it with the session that
/// compiled this one: one file changed.
#[divan::bench(sample_count = 6, sample_size = 1)]
fn read_and_compile(bencher: divan::Bencher) {
    let r = repo();
    let repo = Repository::open(&r.repo_path).unwrap();
    let mut session = Session::new(Options::default());
    let revs = r.commits.map(|c| c.to_string());
    let (inputs, _) = policy_at(&repo, &revs[0], "", str::to_string).unwrap();
    assert!(session.compile(inputs).ir.is_ok());
    let mut next = 1;
    bencher.bench_local(|| {
        let (inputs, _) = policy_at(&repo, &revs[next], "", str::to_string).unwrap();
        next = 1 - next;
        session.compile(inputs).ir.is_ok()
    });
}

#[divan::bench(sample_count = 6, sample_size = 1)]
fn read_known_and_compile(bencher: divan::Bencher) {
    let r = repo();
    let repo = Repository::open(&r.repo_path).unwrap();
    let mut session = Session::new(Options::default());
    let revs = r.commits.map(|c| c.to_string());
    let (inputs, _) = policy_at(&repo, &revs[0], "", str::to_string).unwrap();
    assert!(session.compile(inputs).ir.is_ok());
    let mut next = 1;
    bencher.bench_local(|| {
        let known = |p: &str, id: &[u8]| session.has(p, id);
        let (inputs, _) = policy_known(&repo, &revs[next], "", str::to_string, known).unwrap();
        next = 1 - next;
        assert_eq!(
            inputs.iter().filter(|i| i.content.is_ok()).count(),
            1,
            "one file read"
        );
        session.compile(inputs).ir.is_ok()
    });
}
