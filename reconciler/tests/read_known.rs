//! Reading a commit for a session that compiled the one before: only the
//! changed files' blobs are read, and the compile is the one every blob
//! would have given.

use git2::Repository;
use meshc_compiler::incremental::Session;
use meshc_compiler::{Options, compile, synth};
use meshc_reconciler::commit::{policy_at, policy_known};

#[path = "../../tests/common/net.rs"]
mod net;

use net::commit_all as commit;

#[test]
fn only_the_changed_blobs_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let files = synth::repository(20);
    for (p, text) in &files {
        let f = dir.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }
    let repo = Repository::init(dir.path()).unwrap();
    let first = commit(&repo, "generated");
    let (edited, text) = files
        .iter()
        .find(|(p, _)| p.ends_with("svc-00003.yaml"))
        .unwrap();
    std::fs::write(
        dir.path().join(edited),
        text.replacen("timeout: 2s", "timeout: 3s", 1),
    )
    .unwrap();
    std::fs::write(dir.path().join("added.yaml"), "# nothing yet\n").unwrap();
    let second = commit(&repo, "one timeout, one file more");

    let mut session = Session::new(Options::default());
    let (inputs, _) = policy_at(&repo, &first, "", str::to_string).unwrap();
    assert!(inputs.iter().all(|i| i.content.is_ok()));
    assert!(session.compile(inputs).ir.is_ok());

    let known = |p: &str, id: &[u8]| session.has(p, id);
    let (inputs, _) = policy_known(&repo, &second, "", str::to_string, known).unwrap();
    let mut read: Vec<&str> = inputs
        .iter()
        .filter(|i| i.content.is_ok())
        .map(|i| i.path.as_str())
        .collect();
    read.sort_unstable();
    assert_eq!(read, vec!["added.yaml", edited.as_str()]);
    let incremental = session.compile(inputs);
    let (all, _) = policy_at(&repo, &second, "", str::to_string).unwrap();
    let full = compile(all, &Options::default());
    assert_eq!(
        incremental.ir.as_ref().unwrap().hash(),
        full.ir.as_ref().unwrap().hash()
    );
    assert_eq!(
        incremental.analysis.diagnostics.len(),
        full.analysis.diagnostics.len()
    );
    assert_eq!(session.stats().loaded, 2);
}
