//! meshc's generated schemas agree with Istio's upstream CRD schemas.
//!
//! Every Istio-kind document under `../shared/conformance/` is validated with
//! meshc's schema (from the typed model) and with the upstream CRD's
//! `openAPIV3Schema` from `../shared/schemas/istio/crd-all.gen.yaml`, converted to
//! JSON Schema the way the API server applies it with strict field validation
//! (the `kubectl` default): unknown fields rejected, `int-or-string` as either,
//! `null` values pruned. The two verdicts must match; the test lists every
//! document where they do not. CEL rules are not JSON Schema and are not part
//! of either side.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use meshc_compiler::model::Kind;
use meshc_compiler::source::{FileId, SourceFile};
use meshc_compiler::yaml::{self, Limits};
use serde_json::{Value, json};

fn load_json(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let file = SourceFile::new(path.display().to_string(), text);
    let mut diags = Vec::new();
    yaml::load(FileId(0), &file, &Limits::default(), &mut diags)
        .into_iter()
        .filter_map(|d| d.root)
        .map(|n| n.to_json())
        .collect()
}

/// The API server's reading of a structural schema, as plain JSON Schema.
fn convert(schema: &Value) -> Value {
    let Value::Object(m) = schema else {
        return schema.clone();
    };
    if m.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        return json!({"anyOf": [{"type": "integer"}, {"type": "string"}]});
    }
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        if k.starts_with("x-kubernetes-") || k == "description" || k == "nullable" || k == "format"
        {
            continue;
        }
        let v = match k.as_str() {
            "properties" => Value::Object(
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(p, s)| (p.clone(), convert(s)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => convert(v),
            "oneOf" | "anyOf" | "allOf" => {
                Value::Array(v.as_array().unwrap().iter().map(convert).collect())
            }
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if m.contains_key("properties")
        && m.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(out)
}

fn upstream_validators() -> BTreeMap<(String, String), jsonschema::Validator> {
    let crds = load_json(&common::root().join("../shared/schemas/istio/crd-all.gen.yaml"));
    let mut out = BTreeMap::new();
    for crd in crds {
        let group = crd["spec"]["group"].as_str().unwrap().to_string();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        if Kind::lookup(&group, &kind).is_none() {
            continue;
        }
        for v in crd["spec"]["versions"].as_array().unwrap() {
            let mut schema = convert(&v["schema"]["openAPIV3Schema"]);
            let props = schema["properties"].as_object_mut().unwrap();
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), json!({"type": "object"}));
            let api = format!("{group}/{}", v["name"].as_str().unwrap());
            out.insert(
                (api, kind.clone()),
                jsonschema::validator_for(&schema).unwrap(),
            );
        }
    }
    out
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

/// Documents where meshc and upstream disagree on purpose, with the reason.
const ACCEPTED: &[(&str, &str)] = &[];

#[test]
fn meshc_schemas_agree_with_upstream_crds() {
    let upstream = upstream_validators();
    assert_eq!(
        upstream.len(),
        25,
        "11 kinds in all their served versions (5 × 3 networking, EnvoyFilter v1alpha3, 3 × 2 security, Telemetry v1 and v1alpha1, WasmPlugin v1alpha1)"
    );
    let mut files = Vec::new();
    yaml_files(&common::root().join("../shared/conformance"), &mut files);
    let (mut checked, mut invalid) = (0, 0);
    let mut disagreements = Vec::new();
    for path in &files {
        for (i, doc) in load_json(path).iter().enumerate() {
            let (Some(api), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
                continue;
            };
            let Some(up) = upstream.get(&(api.to_string(), kind.to_string())) else {
                continue;
            };
            let group = api.rsplit_once('/').map_or("", |(g, _)| g);
            let k = Kind::lookup(group, kind).unwrap();
            let ours_ok = meshc_compiler::schema::validate(
                k,
                &meshc_compiler::yaml::Node {
                    value: json_to_node_value(doc),
                    span: dummy(),
                },
                doc,
            )
            .is_empty();
            let theirs_ok = up.is_valid(doc);
            checked += 1;
            invalid += usize::from(!theirs_ok);
            if ours_ok != theirs_ok {
                let rel = path
                    .strip_prefix(common::root().join("../shared/conformance"))
                    .unwrap()
                    .display()
                    .to_string();
                let why: Vec<String> = up
                    .iter_errors(doc)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .take(2)
                    .collect();
                disagreements.push(format!(
                    "{rel}#{i} {kind}: meshc {} upstream {} {why:?}",
                    verdict(ours_ok),
                    verdict(theirs_ok)
                ));
            }
        }
    }
    assert!(checked > 300, "only {checked} Istio documents found");
    assert!(
        invalid > 0,
        "the corpus should contain invalid documents too"
    );
    let unexpected: Vec<&String> = disagreements
        .iter()
        .filter(|d| !ACCEPTED.iter().any(|(f, _)| d.starts_with(f)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} of {checked} documents disagree:\n{}",
        unexpected.len(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{checked} Istio documents checked, {invalid} invalid upstream, {} accepted disagreements",
        disagreements.len()
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "accepts" } else { "rejects" }
}

fn dummy() -> meshc_compiler::Span {
    meshc_compiler::Span::new(FileId(0), 0, 0)
}

/// A span-less node tree for a JSON value (only paths are used for messages).
fn json_to_node_value(v: &Value) -> yaml::Value {
    let node = |v: &Value| meshc_compiler::yaml::Node {
        value: json_to_node_value(v),
        span: dummy(),
    };
    match v {
        Value::Null => yaml::Value::Null,
        Value::Bool(b) => yaml::Value::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || yaml::Value::Float(n.as_f64().unwrap_or(0.0)),
            yaml::Value::Int,
        ),
        Value::String(s) => yaml::Value::String(s.as_str().into()),
        Value::Array(a) => yaml::Value::Seq(a.iter().map(node).collect()),
        Value::Object(o) => yaml::Value::Map(
            o.iter()
                .map(|(k, v)| yaml::Entry {
                    key: k.as_str().into(),
                    key_span: dummy(),
                    value: node(v),
                })
                .collect(),
        ),
    }
}
