//! Snapshots of what users see: human and JSON output for every rule's fixture
//! (`policies-examples/mistakes/<CODE>-*.yaml`, linted with the shared context
//! in `services.yaml`) and for both example repositories.

mod common;

use common::{meshc, stdout};

fn snapshot(name: &str, args: &[&str]) -> String {
    let out = meshc(args);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
    text
}

#[test]
fn every_rule_has_a_fixture_with_snapshots() {
    let dir = common::root().join("policies-examples/mistakes");
    for rule in meshc_compiler::rules::ALL {
        let fixture = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(rule.code))
            .unwrap_or_else(|| {
                panic!("{} has no fixture in policies-examples/mistakes", rule.code)
            });
        let path = format!("policies-examples/mistakes/{fixture}");
        let ctx = "policies-examples/mistakes/services.yaml";
        let human = snapshot(
            &format!("rule-{}-human", rule.code),
            &["lint", "--format", "human", ctx, &path],
        );
        assert!(
            human.contains(rule.code),
            "{}: fixture does not trigger the rule:\n{human}",
            rule.code
        );
        let json = snapshot(
            &format!("rule-{}-json", rule.code),
            &["lint", "--format", "json", ctx, &path],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let codes: Vec<&str> = v["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["code"].as_str().unwrap())
            .collect();
        assert!(
            codes.iter().all(|c| *c == rule.code),
            "{}: fixture triggers other rules too: {codes:?}",
            rule.code
        );
    }
}

#[test]
fn bookinfo_is_clean() {
    let out = meshc(&["lint", "policies-examples/bookinfo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    snapshot("bookinfo-human", &["lint", "policies-examples/bookinfo"]);
    let json = snapshot(
        "bookinfo-json",
        &["lint", "--format", "json", "policies-examples/bookinfo"],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 0);
    assert!(v["summary"]["resources"].as_u64().unwrap() > 25);
}

#[test]
fn mistakes_report_every_rule() {
    let out = meshc(&["lint", "policies-examples/mistakes"]);
    assert_eq!(out.status.code(), Some(1));
    snapshot("mistakes-human", &["lint", "policies-examples/mistakes"]);
    let json = snapshot(
        "mistakes-json",
        &["lint", "--format", "json", "policies-examples/mistakes"],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for rule in meshc_compiler::rules::ALL {
        assert!(
            v["diagnostics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["code"] == rule.code),
            "{} not reported",
            rule.code
        );
    }
    snapshot(
        "mistakes-concise",
        &["lint", "--format", "concise", "policies-examples/mistakes"],
    );
    snapshot(
        "mistakes-github",
        &["lint", "--format", "github", "policies-examples/mistakes"],
    );
}
