//! Benchmark: what the reconciler does per commit of the generated
//! 10,000-service repository, after one file changed: reading the commit's
//! policy files out of Git (`read_blobs`: every blob inflated; `read_ids`:
//! the tree walked for paths and blob ids only) and the whole step, read
//! and incremental compile (`read_and_compile`): reading every blob, or, as
//! the reconciler does, only those the session does not have.
//!
//! Run: `cargo bench -p meshc-reconciler --bench read_commit`.

use std::sync::OnceLock;

use git2::{Oid, Repository};
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

#[path = "../../tests/common/net.rs"]
mod net;

fn commit(repo: &Repository, message: &str) -> Oid {
    net::commit_all(repo, message).parse().unwrap()
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
/// compiled this one: one file changed. `only_changed`: as the reconciler
/// does, the blobs of the files the session has are not read.
#[divan::bench(args = [false, true], sample_count = 6, sample_size = 1)]
fn read_and_compile(bencher: divan::Bencher, only_changed: bool) {
    let r = repo();
    let repo = Repository::open(&r.repo_path).unwrap();
    let mut session = Session::new(Options::default());
    let revs = r.commits.map(|c| c.to_string());
    let (inputs, _) = policy_at(&repo, &revs[0], "", str::to_string).unwrap();
    assert!(session.compile(inputs).ir.is_ok());
    let mut next = 1;
    bencher.bench_local(|| {
        let known = |p: &str, id: &[u8]| only_changed && session.has(p, id);
        let (inputs, _) = policy_known(&repo, &revs[next], "", str::to_string, known).unwrap();
        next = 1 - next;
        let read = inputs.iter().filter(|i| i.content.is_ok()).count();
        assert_eq!(read == 1, only_changed, "{read} files read");
        session.compile(inputs).ir.is_ok()
    });
}
