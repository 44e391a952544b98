//! The `meshc` command line as pre-commit hooks and CI use it: exit codes,
//! standard input, selection, configuration, suppression, output contracts.

mod common;

use common::{meshc, meshc_in, meshc_stdin, stdout};

const BAD_SUBSET: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
";

const PERMISSIVE: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
";

#[test]
fn exit_codes() {
    assert_eq!(
        meshc(&["lint", "policies-examples/bookinfo"]).status.code(),
        Some(0)
    );
    assert_eq!(
        meshc(&["lint", "policies-examples/mistakes"]).status.code(),
        Some(1)
    );
    let missing = meshc(&["lint", "no/such/path"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/path"));
    assert_eq!(meshc(&["lint", "--format", "xml"]).status.code(), Some(2));
    assert_eq!(meshc(&["explain", "MC9999"]).status.code(), Some(2));
    let unknown = meshc(&["lint", "--ignore", "MC9999", "policies-examples/bookinfo"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("`MC9999` names no rule"));
}

#[test]
fn stdin_is_linted() {
    let out = meshc_stdin(
        &["lint", "--format", "concise", "--select", "MC0101", "-"],
        BAD_SUBSET.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "<stdin>:8:44: error[MC0101] subset `v9` of host `reviews` is not defined by any DestinationRule\n"
    );
}

#[test]
fn warnings_fail_only_when_denied() {
    let out = meshc_stdin(&["lint", "--format", "concise", "-"], PERMISSIVE.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("warning[MC0301]"));
    let denied = meshc_stdin(&["lint", "--deny-warnings", "-"], PERMISSIVE.as_bytes());
    assert_eq!(denied.status.code(), Some(1));
}

#[test]
fn select_and_ignore() {
    let ignored = meshc_stdin(
        &["lint", "--format", "concise", "--ignore", "MC01", "-"],
        BAD_SUBSET.as_bytes(),
    );
    assert_eq!(ignored.status.code(), Some(0));
    assert_eq!(stdout(&ignored), "");
    let selected = meshc_stdin(
        &["lint", "--format", "concise", "--select", "MC0102", "-"],
        BAD_SUBSET.as_bytes(),
    );
    assert!(stdout(&selected).contains("MC0102") && !stdout(&selected).contains("MC0101"));
}

#[test]
fn config_file_and_annotation_suppress() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.yaml"), BAD_SUBSET).unwrap();
    std::fs::write(
        dir.path().join("meshc.toml"),
        "known-hosts = [\"*.shop.svc.cluster.local\"]\n[severity]\nMC0101 = \"warning\"\n",
    )
    .unwrap();
    let out = meshc_in(dir.path(), &["lint", "--format", "concise", "."]);
    assert_eq!(
        stdout(&out),
        "vs.yaml:8:44: warning[MC0101] subset `v9` of host `reviews` is not defined by any DestinationRule\n"
    );
    assert_eq!(out.status.code(), Some(0));

    let annotated = BAD_SUBSET.replace("metadata: {name: r, namespace: shop}", "metadata:\n  name: r\n  namespace: shop\n  annotations: {meshc.dev/ignore: \"MC0101, MC0102, MC7777\"}");
    std::fs::write(dir.path().join("vs.yaml"), annotated).unwrap();
    std::fs::write(dir.path().join("meshc.toml"), "ignore = [\"MC0999\"]\n").unwrap();
    let out = meshc_in(dir.path(), &["lint", "--format", "concise", "."]);
    let text = stdout(&out);
    assert!(
        !text.contains("MC0101") && !text.contains("MC0102"),
        "{text}"
    );
    assert!(
        text.contains("vs.yaml:6:35: warning[MC0020] `MC7777` in `meshc.dev/ignore` names no rule"),
        "{text}"
    );
    assert!(
        text.contains("meshc.toml:1:12: warning[MC0020] `MC0999` names no rule"),
        "{text}"
    );

    // Located by the TOML parser, not by searching the text.
    std::fs::write(
        dir.path().join("meshc.toml"),
        "# MC0999 was retired\nignore = [\"MC0999\"]\n[severity]\nMC0101 = \"loud\"\n",
    )
    .unwrap();
    let text = stdout(&meshc_in(dir.path(), &["lint", "--format", "concise", "."]));
    assert!(
        text.contains("meshc.toml:2:12: warning[MC0020] `MC0999` names no rule"),
        "{text}"
    );
    assert!(
        text.contains("meshc.toml:4:11: warning[MC0020] `loud` is not a severity"),
        "{text}"
    );

    std::fs::write(dir.path().join("meshc.toml"), "selekt = []\n").unwrap();
    let bad = meshc_in(dir.path(), &["lint", "."]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("selekt"));
}

#[test]
fn directories_honour_gitignore() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("generated")).unwrap();
    std::fs::write(dir.path().join("generated/vs.yaml"), BAD_SUBSET).unwrap();
    std::fs::write(dir.path().join("notes.txt"), BAD_SUBSET).unwrap();
    assert_eq!(meshc_in(dir.path(), &["lint", "."]).status.code(), Some(1));
    std::fs::write(dir.path().join(".gitignore"), "generated/\n").unwrap();
    let out = meshc_in(dir.path(), &["lint", "--format", "json", "."]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["summary"]["files"], 0);
}

#[test]
fn json_contract() {
    let out = meshc(&[
        "lint",
        "--format",
        "json",
        "policies-examples/mistakes/services.yaml",
        "policies-examples/mistakes/MC0101-dangling-subset.yaml",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let d = &v["diagnostics"][0];
    for key in [
        "code",
        "severity",
        "message",
        "file",
        "line",
        "column",
        "end_line",
        "end_column",
        "path",
        "resource",
        "equivalents",
        "help",
    ] {
        assert!(d.get(key).is_some(), "missing `{key}` in {d}");
    }
    assert_eq!(d["code"], "MC0101");
    assert_eq!(d["path"], "spec.http[0].route[1].destination.subset");
    assert_eq!(d["resource"], "VirtualService shop/reviews-canary");
    assert_eq!(
        (
            d["line"].as_u64(),
            d["column"].as_u64(),
            d["end_column"].as_u64()
        ),
        (Some(11), Some(44), Some(46))
    );
    assert_eq!(d["equivalents"], serde_json::json!(["IST0101", "KIA1107"]));
    assert_eq!(v["summary"]["errors"], 1);
}

#[test]
fn sarif_validates_against_the_sarif_schema() {
    // The official schema's `language` patterns have a stray `]`, which
    // ECMAScript reads as a literal and Rust's regex engines reject; escape it.
    let text = include_str!("../validator/tests/data/sarif-schema-2.1.0.json");
    let stray = r#""^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$""#;
    assert_eq!(text.matches(stray).count(), 2);
    let schema: serde_json::Value = serde_json::from_str(
        &text.replace(stray, r#""^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}\\]?$""#),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for path in ["policies-examples/mistakes", "policies-examples/bookinfo"] {
        let out = meshc(&["lint", "--format", "sarif", path]);
        let sarif: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&sarif)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{path}: {errors:#?}");
        let results = sarif["runs"][0]["results"].as_array().unwrap();
        if path.ends_with("mistakes") {
            assert!(results.len() >= meshc_compiler::rules::ALL.len());
            let r = results.iter().find(|r| r["ruleId"] == "MC0101").unwrap();
            assert_eq!(
                r["locations"][0]["physicalLocation"]["region"]["startLine"],
                11
            );
            assert_eq!(
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
                "policies-examples/mistakes/MC0101-dangling-subset.yaml"
            );
        } else {
            assert!(results.is_empty());
        }
    }
}

#[test]
fn rules_and_explain() {
    let rules = stdout(&meshc(&["rules", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        meshc_compiler::rules::ALL.len()
    );
    for r in meshc_compiler::rules::ALL {
        let text = stdout(&meshc(&["explain", r.code]));
        assert!(text.starts_with(&format!("# {} {}", r.code, r.name)));
        assert!(text.contains("## Why is this bad?"));
    }
    assert_eq!(
        stdout(&meshc(&["explain", "dangling-subset"])),
        stdout(&meshc(&["explain", "mc0101"]))
    );
}

#[test]
fn readme_lists_every_rule_with_its_severity_and_upstream_codes() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    for r in meshc_compiler::rules::ALL {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {} | {}", r.code, r.name)))
            .unwrap_or_else(|| panic!("README's rules table has no row for {} {}", r.code, r.name));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[3], r.severity.as_str(), "{row}");
        assert_eq!(cells[4], r.upstream_codes().join(", "), "{row}");
    }
}

#[test]
fn closed_pipe_is_not_an_error() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshc"))
        .args(["lint", "--format", "json", "policies-examples"])
        .current_dir(common::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sidecar binary takes `meshc proxy`'s flags and fails as it does: a
/// usage error exits 2, and so does a CA file it cannot read, named.
#[test]
fn sidecar_binary_reports_bad_flags_and_files() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshc-proxy"))
            .args(args)
            .output()
            .expect("meshc-proxy runs")
    };
    let usage = run(&["--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--no-such-flag"));
    let missing = "/nonexistent/meshc-ca.pem";
    let out = run(&[
        "--workload",
        "shop/web-v1",
        "--service-account",
        "web",
        "--bootstrap-token",
        "t",
        "--ca-file",
        missing,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing), "{err}");
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("meshc-proxy "));
}
