//! Schema validation and typed decoding straight from the YAML tree
//! (`schema::valid_tree`, `Spec::from_node`) must give exactly what they
//! give on its JSON (`node.to_json()`): the same verdict, the same spec, or
//! an error with the same message. Checked on every document of the
//! repository's and the conformance corpora's YAML files and on documents
//! written to fail in every way a document can.

use std::path::Path;

mod common;
use common::yaml_files;

use meshc_compiler::model::{Kind, Spec};
use meshc_compiler::yaml::de::NodeDe;
use meshc_compiler::yaml::{Node, load_with};
use meshc_compiler::{FileId, Limits, SourceFile};
use serde::Deserialize;

/// Where the two readings of one document differ, if they do.
fn disagreement(root: &Node) -> Option<String> {
    let json = root.to_json();
    let through_node = serde_json::Value::deserialize(NodeDe(root)).map_err(|e| e.to_string());
    if through_node.as_ref() != Ok(&json) {
        return Some(format!("as JSON: {through_node:?}\nto_json: {json}"));
    }
    let text = |k: &str| root.get(k).and_then(Node::as_str);
    let (Some(api), Some(kind)) = (text("apiVersion"), text("kind")) else {
        return None;
    };
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = Kind::lookup(group, kind)?;
    let (on_tree, on_json) = (
        meshc_compiler::schema::valid_tree(kind, root),
        meshc_compiler::schema::valid_json(kind, &json),
    );
    if on_tree != on_json {
        return Some(format!(
            "valid on the tree: {on_tree}, on its JSON: {on_json}"
        ));
    }
    let show = |r: Result<_, serde_json::Error>| match r {
        Ok(typed) => format!("{typed:?}"),
        Err(e) => format!("error: {e}"),
    };
    let (a, b) = (
        show(Spec::from_node(kind, root)),
        show(Spec::from_json(kind, json)),
    );
    (a != b).then(|| format!("from_node: {a}\nfrom_json: {b}"))
}

/// Every document of `text`, checked; returns (documents, failures).
fn check(name: &str, text: &str, failures: &mut Vec<String>) -> usize {
    let file = SourceFile::new("t.yaml", text.to_owned());
    let docs = load_with(FileId(0), &file, &Limits::default(), &mut Vec::new(), true);
    let mut n = 0;
    for d in &docs {
        if let Some(root) = &d.root {
            n += 1;
            if let Some(why) = disagreement(root) {
                failures.push(format!("{name} document {}: {why}", d.index));
            }
        }
    }
    n
}

#[test]
fn every_corpus_document_decodes_alike_from_its_tree_and_its_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "policies-examples",
        "tests",
        "snapshots",
        "../shared/conformance",
    ] {
        yaml_files(&root.join(dir), &mut files);
    }
    files.sort();
    let (mut docs, mut failures) = (0, Vec::new());
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f) {
            docs += check(&f.display().to_string(), &text, &mut failures);
        }
    }
    assert!(docs > 500, "only {docs} documents found");
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn documents_that_fail_to_decode_fail_alike() {
    let head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: b}\n";
    let specs = [
        "spec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: 1.5}]}]}",
        "spec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: -3}]}]}",
        "spec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: .nan}]}]}",
        "spec: {hosts: [a], http: [{route: [{destination: {host: a, port: {number: 99999999999}}}]}]}",
        "spec: {hosts: a}",
        "spec: {hosts: [1, true, null, 2.5]}",
        "spec: {hosts: [a], http: {route: []}}",
        "spec: {hosts: [a], http: [{match: [{uri: {exact: [x]}}]}]}",
        "spec: {hosts: [a], http: [{match: [{uri: {exact: a, prefix: b}}]}]}",
        "spec: {hosts: [a], http: [{match: [{headers: {x: {regex: null}}}]}]}",
        "spec: {hosts: [a], http: [{match: [{headers: [x]}]}]}",
        "spec: {hosts: [a], unknown: 1}",
        "spec: {hosts: [a], unknown: null}",
        "spec: {hosts: [a], http: [{fault: {abort: {httpStatus: \"503\"}}}]}",
        "spec: {hosts: [a], tcp: [{match: [{port: 8080.0}]}]}",
        "spec: {hosts: [a], http: [{timeout: 5}]}",
        "spec: [a]",
        "spec: hello",
        "spec: null",
        "spec: {}",
    ];
    let others = [
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: MAYBE}",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: {ALLOW: 1}}",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: 3}, portLevelMtls: {'8080': {mode: DISABLE}}}",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {x: 1}}\nspec: {ports: [{port: 80, targetPort: http}, {port: 81, targetPort: 8081}, {port: 82, targetPort: -1}, {port: 83, targetPort: 1.5}]}",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: [80]}], selector: {app: [x]}}",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, annotations: {x: null}}\nstatus: {phase: Active, n: [1, -2, 3.5, .inf, null, {a: null}]}",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {template: {metadata: {labels: {app: a}}, spec: {serviceAccountName: 7}}}",
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\nspec: {configPatches: [{applyTo: HTTP_FILTER, patch: {operation: MERGE, value: {a: [1, {b: null}], c: .nan}}}]}",
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    let file = |t: &str| {
        let f = SourceFile::new("t.yaml", t.to_owned());
        load_with(FileId(0), &f, &Limits::default(), &mut Vec::new(), true)
    };
    let mut invalid = 0;
    for t in specs
        .iter()
        .map(|s| format!("{head}{s}\n"))
        .chain(others.iter().map(|o| format!("{o}\n")))
    {
        for d in file(&t) {
            let root = d.root.expect("a document");
            let kind = if t.contains("VirtualService") {
                Kind::VirtualService
            } else {
                continue;
            };
            invalid += usize::from(!meshc_compiler::schema::valid_tree(kind, &root));
        }
    }
    for s in specs {
        n += check(s, &format!("{head}{s}\n"), &mut failures);
    }
    for o in others {
        n += check(o, &format!("{o}\n"), &mut failures);
    }
    assert_eq!(n, specs.len() + others.len());
    // Some of them must be schema-valid and some not, or the verdicts were
    // never compared both ways.
    assert!(invalid > 0 && invalid < n, "{invalid} of {n} invalid");
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
