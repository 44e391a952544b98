//! Schema validation: raw documents against the JSON Schema generated from the
//! typed model, with each error mapped back to the YAML node it is about.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value as Json;

use crate::model::Kind;
use crate::yaml::{Node, YamlPath};

/// One schema violation, located by YAML path.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Path of the offending node (for an unknown field: the field itself).
    pub path: YamlPath,
    /// What is wrong, in one line.
    pub message: String,
    /// True when `path` names a mapping key that should be highlighted as the key.
    pub at_key: bool,
}

mod yaml_json;

struct Compiled {
    schema: Json,
    validator: jsonschema::Validator,
    /// The same schema, for the YAML tree itself.
    on_tree: jsonschema::Validator<yaml_json::Yaml>,
}

fn compiled(kind: Kind) -> &'static Compiled {
    static CELLS: [OnceLock<Compiled>; Kind::ALL.len()] =
        [const { OnceLock::new() }; Kind::ALL.len()];
    let i = Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL");
    CELLS[i].get_or_init(|| {
        let schema = kind.schema();
        fn build<F: jsonschema::json::Json>(schema: &Json) -> jsonschema::Validator<F> {
            jsonschema::options_for::<F>()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(schema)
                .expect("schemas generated from the model are valid JSON Schema")
        }
        Compiled {
            validator: build(&schema),
            on_tree: build(&schema),
            schema,
        }
    })
}

/// The generated JSON Schema of a kind (for tests and `meshc schema`).
pub fn schema_json(kind: Kind) -> &'static Json {
    &compiled(kind).schema
}

/// Validate the document `root` as a `kind`: on its YAML tree, and only
/// when that fails once more on its JSON, for the errors.
pub fn validate_tree(kind: Kind, root: &Node) -> Vec<Violation> {
    if valid_tree(kind, root) {
        return Vec::new();
    }
    violations(compiled(kind), root, &root.to_json())
}

/// Whether the document `root` is a valid `kind`, checked on its YAML tree
/// (the same answer its JSON gets; `tests/typed_decode.rs` compares them).
pub fn valid_tree(kind: Kind, root: &Node) -> bool {
    compiled(kind)
        .on_tree
        .is_valid(yaml_json::YNode::Tree(root))
}

/// Whether the JSON `doc` is a valid `kind`.
pub fn valid_json(kind: Kind, doc: &Json) -> bool {
    compiled(kind).validator.is_valid(doc)
}

/// Validate `doc` (the JSON form of `root`) as a `kind`.
pub fn validate(kind: Kind, root: &Node, doc: &Json) -> Vec<Violation> {
    let c = compiled(kind);
    if c.validator.is_valid(doc) {
        return Vec::new();
    }
    violations(c, root, doc)
}

/// The violations of `doc` (the JSON form of `root`), known to be invalid.
fn violations(c: &Compiled, root: &Node, doc: &Json) -> Vec<Violation> {
    let mut out: Vec<Violation> = Vec::new();
    for err in c.validator.iter_errors(doc) {
        let path = YamlPath::from_pointer(root, err.instance_path().as_str());
        let instance = err.instance();
        let message = match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    out.push(Violation {
                        path: path.join(field.as_str()),
                        message: format!("unknown field `{field}`"),
                        at_key: true,
                    });
                }
                continue;
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => ts
                        .iter()
                        .map(|t| t.to_string())
                        .filter(|t| t != "null")
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                format!("expected {expected}, found {}", json_type(instance))
            }
            ValidationErrorKind::Enum { options } => {
                let opts = options
                    .as_array()
                    .map(|a| a.iter().map(short).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                format!("{} is not one of: {opts}", short(instance))
            }
            ValidationErrorKind::Required { property } => {
                format!(
                    "missing required field `{}`",
                    property.as_str().unwrap_or("?")
                )
            }
            ValidationErrorKind::OneOfMultipleValid { .. }
            | ValidationErrorKind::OneOfNotValid { .. }
            | ValidationErrorKind::AnyOf { .. }
            | ValidationErrorKind::Not { .. } => {
                let fields = exclusive_fields(&c.schema, err.schema_path().as_str());
                let present: Vec<String> = instance
                    .as_object()
                    .map(|o| {
                        o.keys()
                            .filter(|k| fields.contains(k))
                            .map(|k| format!("`{k}`"))
                            .collect()
                    })
                    .unwrap_or_default();
                if present.len() > 1 {
                    format!("set only one of {}", present.join(", "))
                } else if !fields.is_empty() && present.is_empty() {
                    let shown: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
                    format!("set one of {}", shown.join(", "))
                } else {
                    truncate(&err.to_string())
                }
            }
            _ => truncate(&err.to_string()),
        };
        out.push(Violation {
            path,
            message,
            at_key: false,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.message.cmp(&b.message)));
    out.dedup();
    out
}

/// The field names a `oneOf`/`anyOf` at `schema_path` is about (its `required` lists).
fn exclusive_fields(root: &Json, schema_path: &str) -> Vec<String> {
    let mut node = root;
    let mut last_combinator = None;
    for seg in schema_path.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            let Some(target) = node
                .get("$ref")
                .and_then(Json::as_str)
                .and_then(|r| r.strip_prefix('#'))
            else {
                break;
            };
            match root.pointer(target) {
                Some(n) => node = n,
                None => break,
            }
            continue;
        }
        let next = match node {
            Json::Object(m) => m.get(&seg),
            Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => {
                if matches!(seg.as_str(), "oneOf" | "anyOf" | "not") {
                    last_combinator = Some(n);
                }
                node = n;
            }
            None => break,
        }
    }
    let mut fields = Vec::new();
    collect_required(last_combinator.unwrap_or(node), &mut fields);
    fields
}

fn collect_required(node: &Json, out: &mut Vec<String>) {
    match node {
        Json::Object(m) => {
            if let Some(Json::Array(req)) = m.get("required") {
                for r in req.iter().filter_map(Json::as_str) {
                    if !out.iter().any(|o| o == r) {
                        out.push(r.to_string());
                    }
                }
            }
            for k in ["oneOf", "anyOf", "allOf", "not"] {
                if let Some(n) = m.get(k) {
                    collect_required(n, out);
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|n| collect_required(n, out)),
        _ => {}
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "mapping",
    }
}

fn short(v: &Json) -> String {
    truncate(&v.to_string())
}

fn truncate(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}
