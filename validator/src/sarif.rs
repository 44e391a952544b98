//! SARIF 2.1.0 output, for GitHub code scanning and other SARIF viewers.
//!
//! Hand-written over `serde_json` rather than `serde-sarif`: meshc emits a small
//! subset (one run, rules with help, results with regions and related
//! locations), and the generated crate costs a minute of build. A test checks
//! the output against the official SARIF 2.1.0 JSON Schema.

use meshc_compiler::rules::ALL;
use meshc_compiler::{Analysis, Severity};
use serde_json::{Value, json};

use crate::position;

pub(crate) fn render(a: &Analysis) -> String {
    let rules: Vec<Value> = ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": pascal(r.name),
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": r.summary},
                "help": {"text": r.documentation(), "markdown": r.documentation()},
                "defaultConfiguration": {"level": level(r.severity)},
                "properties": {"tags": [r.group.as_str()], "equivalents": r.upstream_codes()},
            })
        })
        .collect();
    let results: Vec<Value> = a
        .diagnostics
        .iter()
        .map(|d| {
            let p = position(&a.sources, d);
            let file = &a.sources.get(d.primary.span.file).path;
            let mut message = d.message.clone();
            if let Some(h) = &d.help {
                message += &format!("\nhelp: {h}");
            }
            let related: Vec<Value> = d
                .related
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let f = a.sources.get(l.span.file);
                    let s = f.line_col(l.span.start as usize);
                    let e = f.line_col(l.span.end as usize);
                    json!({
                        "id": i,
                        "physicalLocation": {
                            "artifactLocation": {"uri": uri(&f.path)},
                            "region": {"startLine": s.line, "startColumn": s.column, "endLine": e.line, "endColumn": e.column},
                        },
                        "message": {"text": l.message.clone().unwrap_or_else(|| "related".into())},
                    })
                })
                .collect();
            let mut location = json!({
                "physicalLocation": {
                    "artifactLocation": {"uri": uri(file)},
                    "region": {"startLine": p.line, "startColumn": p.column, "endLine": p.end_line, "endColumn": p.end_column},
                },
            });
            if let Some(path) = &d.primary.path {
                location["logicalLocations"] = json!([{"fullyQualifiedName": path.to_string(), "kind": "member"}]);
            }
            let rule_index = ALL.iter().position(|r| r.code == d.code()).unwrap_or(0);
            let mut result = json!({
                "ruleId": d.code(),
                "ruleIndex": rule_index,
                "level": level(d.severity),
                "message": {"text": message},
                "locations": [location],
            });
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            if let Some(r) = &d.resource {
                result["properties"] = json!({"resource": r, "equivalents": d.upstream_codes()});
            }
            result
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "meshc",
                "informationUri": "https://github.com/meshc/meshc",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("SARIF serialises");
    s.push('\n');
    s
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// A relative URI reference for a path (SARIF wants `/`, percent-encoding of spaces).
fn uri(path: &str) -> String {
    let p = path.strip_prefix("./").unwrap_or(path).replace('\\', "/");
    p.replace('%', "%25").replace(' ', "%20")
}

fn pascal(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect()
}
