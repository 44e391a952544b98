//! The IR end to end: `meshc compile` snapshots, hash stability under
//! shuffling, `meshc diff` over real Git revisions, `meshc test`.

mod common;

use common::{meshc, meshc_in, root, stdout};
use std::collections::BTreeMap;

use meshc_compiler::{Input, Options};
use meshc_ir::resources::Resource;

/// The example repositories that compile (every one but `mistakes`).
fn example_repos() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("policies-examples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "mistakes")
        .collect();
    v.sort();
    assert!(v.len() >= 2, "bookinfo and store at least: {v:?}");
    v
}

#[test]
fn every_example_repository_compiles_to_a_snapshotted_ir_and_passes_its_tests() {
    for repo in example_repos() {
        let path = format!("policies-examples/{repo}");
        let out = meshc(&["compile", &path]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{repo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = stdout(&out);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The printed version is the hash of the printed IR's canonical encoding.
        let ir: meshc_ir::Ir = serde_json::from_value(v["ir"].clone()).unwrap();
        assert_eq!(v["version"].as_str().unwrap(), ir.hash());
        insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("ir-{repo}"), text);
        });
        let tests = meshc(&["test", &format!("{path}/tests")]);
        assert_eq!(tests.status.code(), Some(0), "{repo}: {}", stdout(&tests));
        assert!(stdout(&tests).contains(" passed, 0 failed"));
    }
}

#[test]
fn yaml_output_is_the_same_ir() {
    let json = stdout(&meshc(&["compile", "policies-examples/store"]));
    let yaml = stdout(&meshc(&[
        "compile",
        "--format",
        "yaml",
        "policies-examples/store",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Read the YAML back with meshc's own loader: the same values.
    let file = meshc_compiler::SourceFile::new("ir.yaml", yaml);
    let mut diags = Vec::new();
    let docs = meshc_compiler::yaml::load(
        meshc_compiler::FileId(0),
        &file,
        &meshc_compiler::Limits::default(),
        &mut diags,
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(docs.len(), 1);
    // The loader drops `null` entries (as the API server does); so does the comparison.
    fn prune(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(prune);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(prune),
            _ => {}
        }
    }
    let mut expected = v.clone();
    prune(&mut expected);
    assert_eq!(docs[0].root.as_ref().unwrap().to_json(), expected);
    let hash = v["version"].as_str().unwrap();
    let hashed = stdout(&meshc(&["compile", "--hash", "policies-examples/store"]));
    assert_eq!(hashed.trim(), hash);
}

#[test]
fn a_scoped_view_holds_what_the_sidecar_lets_the_workload_see() {
    let out = meshc(&[
        "compile",
        "--workload",
        "store/web",
        "policies-examples/store",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let hosts: Vec<&String> = v["ir"]["hosts"].as_object().unwrap().keys().collect();
    assert_eq!(
        hosts,
        [
            "cart.store.svc.cluster.local",
            "payments.store.svc.cluster.local"
        ]
    );
    let workloads: Vec<&String> = v["ir"]["workloads"].as_object().unwrap().keys().collect();
    assert_eq!(workloads, ["store/web"]);
    // Without a Sidecar, a workload sees every host.
    let all = meshc(&[
        "compile",
        "--workload",
        "store/cart",
        "policies-examples/store",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&all)).unwrap();
    assert!(v["ir"]["hosts"].as_object().unwrap().len() > 2);
    let unknown = meshc(&[
        "compile",
        "--workload",
        "store/nope",
        "policies-examples/store",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no workload `store/nope`"));
}

/// The distribution resources of a scope put back together are the scope:
/// what a proxy assembles is exactly `Ir::scope`, and the scope version is
/// stable.
#[test]
fn scope_resources_assemble_to_the_scoped_view() {
    for repo in example_repos() {
        let inputs = documents(&repo)
            .into_iter()
            .enumerate()
            .map(|(i, d)| Input::new(format!("{i}.yaml"), d))
            .collect();
        let ir = meshc_compiler::compile(inputs, &Options::default())
            .ir
            .expect("the example compiles");
        let all = ir.resources();
        let mut previous: Option<(meshc_ir::Ir, BTreeMap<String, Resource>)> = None;
        for workload in ir.workloads.keys() {
            let names = ir.scope_names(workload).unwrap();
            let picked: Vec<_> = names.iter().map(|n| &all[n]).collect();
            assert!(picked.iter().all(|r| r.is_intact()));
            let assembled = meshc_ir::resources::assemble(picked.iter().copied()).unwrap();
            assert_eq!(assembled, ir.scope(workload).unwrap(), "{repo} {workload}");
            // Over the previous workload's scope (what a proxy does when its
            // scope changes), the result is the same.
            let over = meshc_ir::resources::assemble_over(
                previous.as_ref().map(|(i, held)| (i, held)),
                picked.iter().copied(),
            )
            .unwrap();
            assert_eq!(over, assembled, "{repo} {workload} over the previous scope");
            let held = picked
                .iter()
                .map(|r| (r.name.clone(), (*r).clone()))
                .collect();
            previous = Some((assembled.clone(), held));
            // An entry is taken from the previous IR exactly when the
            // previous resources had it at the same version.
            if let Some(host) = assembled.hosts.keys().next().cloned() {
                let mut doctored = assembled.clone();
                doctored.hosts.get_mut(&host).unwrap().namespace = "doctored".into();
                let mut held: BTreeMap<String, Resource> = picked
                    .iter()
                    .map(|r| (r.name.clone(), (*r).clone()))
                    .collect();
                let reused = meshc_ir::resources::assemble_over(
                    Some((&doctored, &held)),
                    picked.iter().copied(),
                )
                .unwrap();
                assert_eq!(
                    reused.hosts[&host].namespace, "doctored",
                    "{repo} {host} reused"
                );
                held.get_mut(&format!("host/{host}")).unwrap().version = "older".into();
                let decoded = meshc_ir::resources::assemble_over(
                    Some((&doctored, &held)),
                    picked.iter().copied(),
                )
                .unwrap();
                assert_eq!(decoded, assembled, "{repo} {host} decoded again");
            }
            let v1 = meshc_ir::resources::scope_version(
                picked.iter().map(|r| (r.name.as_str(), r.version.as_str())),
            );
            let v2 = meshc_ir::resources::scope_version(
                picked
                    .iter()
                    .rev()
                    .map(|r| (r.name.as_str(), r.version.as_str())),
            );
            assert_eq!(v1, v2, "order does not matter");
        }
        // A body that does not match its version is refused.
        let mut tampered = all["mesh"].clone();
        tampered.body =
            br#"{"trust_domain":"evil","cluster_domain":"x","root_namespace":"y"}"#.to_vec();
        let err = meshc_ir::resources::assemble([&tampered]).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }
}

#[test]
fn a_repository_with_errors_is_never_lowered() {
    let out = meshc(&["compile", "policies-examples/mistakes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error(s); it is not compiled"), "{err}");
    assert!(err.contains("MC0101"), "the diagnostics say why: {err}");
}

/// A tiny deterministic generator (no test-only dependency for shuffling).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn documents(repo: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("policies-examples").join(repo))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        docs.extend(
            text.split("\n---\n")
                .map(|d| d.trim_start_matches("---\n").to_string())
                .filter(|d| d.contains("kind:")),
        );
    }
    docs
}

fn hash_of(files: Vec<(String, String)>) -> String {
    let inputs = files.into_iter().map(|(p, t)| Input::new(p, t)).collect();
    let c = meshc_compiler::compile(inputs, &Options::default());
    c.ir.expect("the example compiles").hash()
}

#[test]
fn shuffling_files_and_documents_leaves_the_hash_unchanged() {
    for repo in example_repos() {
        let docs = documents(&repo);
        let baseline = hash_of(vec![("all.yaml".into(), docs.join("\n---\n"))]);
        let mut rng = Lcg(42);
        for round in 0..8 {
            let mut shuffled = docs.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.next(i + 1));
            }
            let files_n = 1 + rng.next(5);
            let mut files: Vec<(String, String)> = (0..files_n)
                .map(|k| {
                    (
                        format!("r{round}/f{}.yaml", rng.next(1000) * 10 + k),
                        String::new(),
                    )
                })
                .collect();
            for d in shuffled {
                let f = &mut files[rng.next(files_n)].1;
                if !f.is_empty() {
                    f.push_str("\n---\n");
                }
                f.push_str(&d);
            }
            assert_eq!(hash_of(files), baseline, "{repo}, round {round}");
        }
    }
}

fn commit(repo: &git2::Repository, files: &[(&str, String)], message: &str) {
    let dir = repo.workdir().unwrap().to_path_buf();
    for e in std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()) {
        if e.file_name() != ".git" {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    common::net::commit_all(repo, message);
}

#[test]
fn diff_between_git_revisions_is_semantic() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let read = |f: &str| {
        std::fs::read_to_string(root().join("policies-examples/bookinfo").join(f)).unwrap()
    };
    let names = [
        "namespaces.yaml",
        "workloads.yaml",
        "destination-rules.yaml",
        "routing.yaml",
        "security.yaml",
    ];
    let original: Vec<(&str, String)> = names.iter().map(|n| (*n, read(n))).collect();
    commit(&repo, &original, "bookinfo");

    // Renamed files, reordered documents, reformatted YAML: nothing changes.
    let mut moved: Vec<(&str, String)> = Vec::new();
    for (n, text) in &original {
        let mut docs: Vec<&str> = text.split("\n---\n").collect();
        docs.reverse();
        let renamed: &'static str = Box::leak(format!("renamed-{n}").into_boxed_str());
        moved.push((
            renamed,
            format!("# reformatted\n{}\n", docs.join("\n---\n# moved\n")),
        ));
    }
    commit(&repo, &moved, "rename and reorder");
    let out = meshc_in(dir.path(), &["diff", "HEAD~1", "HEAD"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "no semantic changes\n");

    // A weight shift and a tightened policy.
    let changed: Vec<(&str, String)> = moved
        .iter()
        .map(|(n, t)| {
            (
                *n,
                t.replace("weight: 90", "weight: 80")
                    .replace("weight: 10", "weight: 20")
                    .replace("methods: [GET, HEAD]", "methods: [GET]"),
            )
        })
        .collect();
    commit(&repo, &changed, "canary to 20%");
    let out = meshc_in(dir.path(), &["diff", "HEAD~1", "HEAD"]);
    let text = stdout(&out);
    assert!(
        text.contains(
            "reviews.bookinfo: http rule \"canary\" to reviews.bookinfo v2 weight 10 -> 20"
        ),
        "{text}"
    );
    assert!(text.contains("bookinfo/productpage-v1: ALLOW \"bookinfo/productpage-from-ingress\" rule removed from principal cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account to GET|HEAD"), "{text}");
    assert!(
        text.contains("    reaches: bookinfo/details-v1, bookinfo/productpage-v1"),
        "{text}"
    );
    let json = meshc_in(dir.path(), &["diff", "--format", "json", "HEAD~2", "HEAD"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{changes:#?}");
    assert_ne!(v["from"]["version"], v["to"]["version"]);

    // Directories work too, and an unknown revision is a usage error.
    let same = meshc(&[
        "diff",
        "policies-examples/bookinfo",
        "policies-examples/bookinfo",
    ]);
    assert_eq!(stdout(&same), "no semantic changes\n");
    let bad = meshc_in(dir.path(), &["diff", "HEAD~9", "HEAD"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`HEAD~9` is not a commit"));
}

#[test]
fn a_failing_policy_test_says_what_the_ir_decided() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).unwrap();
    std::fs::write(
        tests.join("wrong.yaml"),
        "apiVersion: meshc.dev/v1alpha1\nkind: PolicyTest\ntests:\n- name: wrong split\n  request: {host: reviews, port: 9080, from: bookinfo/productpage-v1, method: DELETE}\n  expect:\n    weights: {v1: 50, v2: 50}\n    allowed: true\n",
    )
    .unwrap();
    let policy = root().join("policies-examples/bookinfo");
    let out = meshc(&[
        "test",
        "--policy",
        policy.to_str().unwrap(),
        tests.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAIL wrong split"), "{text}");
    assert!(
        text.contains("expected: weights: expected v1 50%, v2 50%, got v1 90%, v2 10%"),
        "{text}"
    );
    assert!(text.contains("expected: allowed at bookinfo/reviews-v1: expected true, got false (no ALLOW policy matched)"), "{text}");
    assert!(text.contains("decided:  reviews.bookinfo: rule \"canary\" (VirtualService bookinfo/reviews spec.http[1])"), "{text}");
    assert!(text.contains("0 passed, 1 failed"), "{text}");

    std::fs::write(tests.join("wrong.yaml"), "apiVersion: meshc.dev/v1alpha1\nkind: PolicyTest\ntests:\n- name: typo\n  request: {host: reviews}\n  expct: {}\n").unwrap();
    let bad = meshc(&[
        "test",
        "--policy",
        policy.to_str().unwrap(),
        tests.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("wrong.yaml:4:3: tests[0]: unknown field `expct`"),
        "{err}"
    );
}
