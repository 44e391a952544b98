//! The real `pre-commit` tool running meshc's hook (`.pre-commit-hooks.yaml`,
//! `language: rust`) in a temporary Git repository: the hook fails with meshc's
//! message on a bad policy and passes once it is fixed.
//!
//! `pre-commit try-repo` snapshots this checkout (uncommitted changes included)
//! and builds the hook with `cargo install`, so the test exercises exactly what
//! users of the hook get. The build reuses `target/pre-commit-build` and a
//! debug-like release profile to stay fast. pre-commit itself comes from PyPI
//! into `target/pre-commit-venv` when it is not on the PATH.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const GOOD: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
";

fn pre_commit() -> PathBuf {
    if Command::new("pre-commit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("pre-commit");
    }
    let venv = common::root().join("target/pre-commit-venv");
    let bin = venv.join("bin/pre-commit");
    if !bin.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs")
            .success();
        assert!(ok, "python3 -m venv failed");
        let ok = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pre-commit>=3,<5",
            ])
            .status()
            .expect("pip runs")
            .success();
        assert!(ok, "pip install pre-commit failed");
    }
    bin
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_hook(pre_commit: &Path, repo: &Path) -> (bool, String) {
    let root = common::root();
    let out = Command::new(pre_commit)
        .args([
            "try-repo",
            root.to_str().unwrap(),
            "meshc-lint",
            "--all-files",
            "--color",
            "never",
        ])
        .current_dir(repo)
        .env("PRE_COMMIT_HOME", root.join("target/pre-commit-home"))
        .env("CARGO_TARGET_DIR", root.join("target/pre-commit-build"))
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .output()
        .expect("pre-commit runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn hook_fails_on_bad_policy_and_passes_when_fixed() {
    let pre_commit = pre_commit();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    git(repo, &["config", "user.email", "ci@example.invalid"]);
    git(repo, &["config", "user.name", "CI"]);
    std::fs::write(
        repo.join("policy.yaml"),
        GOOD.replace("subset: v1}\n", "subset: v2}\n"),
    )
    .unwrap();
    git(repo, &["add", "."]);

    let (ok, text) = run_hook(&pre_commit, repo);
    assert!(!ok, "the hook passed a dangling subset:\n{text}");
    assert!(
        text.contains("MC0101") && text.contains("subset `v2` of host `reviews`"),
        "{text}"
    );

    std::fs::write(repo.join("policy.yaml"), GOOD).unwrap();
    git(repo, &["add", "."]);
    let (ok, text) = run_hook(&pre_commit, repo);
    assert!(ok, "the hook failed on a clean policy:\n{text}");
    assert!(
        text.contains("meshc lint") && text.contains("Passed"),
        "{text}"
    );
}
