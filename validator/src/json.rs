//! The JSON output: meshc's public, versioned contract for tools.

use meshc_compiler::diagnostic::Upstream;
use meshc_compiler::{Analysis, Severity};
use serde::Serialize;

use crate::position;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct JsonReport {
    /// Findings, sorted by file, position and code.
    pub diagnostics: Vec<JsonDiagnostic>,
    /// Counts.
    pub summary: Summary,
}

/// One finding.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    /// Rule code (`MC0101`).
    pub code: &'static str,
    /// Rule name (`dangling-subset`).
    pub rule: &'static str,
    /// `error`, `warning` or `info`.
    pub severity: Severity,
    /// One-line message.
    pub message: String,
    /// File path as given.
    pub file: String,
    /// 1-based start line.
    pub line: u32,
    /// 1-based start column (characters).
    pub column: u32,
    /// 1-based end line.
    pub end_line: u32,
    /// 1-based end column (exclusive).
    pub end_column: u32,
    /// YAML path (`spec.http[0].route[1].destination.subset`), or null.
    pub path: Option<String>,
    /// `Kind namespace/name`, or null.
    pub resource: Option<String>,
    /// Equivalent upstream codes (`IST0101`, `KIA1107`).
    pub equivalents: Vec<&'static str>,
    /// The same with the upstream analyzer or checker that emits each code.
    pub upstream: Vec<Upstream>,
    /// How to fix it, or null.
    pub help: Option<String>,
    /// Related places.
    pub related: Vec<JsonRelated>,
}

/// A related place.
#[derive(Debug, Serialize)]
pub struct JsonRelated {
    /// File path.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// YAML path, or null.
    pub path: Option<String>,
    /// What it says, or null.
    pub message: Option<String>,
}

/// Counts of the run.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Resources meshc models.
    pub resources: usize,
    /// Documents of other kinds, skipped.
    pub skipped: usize,
    /// Diagnostics at error level.
    pub errors: usize,
    /// At warning level.
    pub warnings: usize,
    /// At info level.
    pub infos: usize,
}

pub(crate) fn summary(a: &Analysis) -> Summary {
    Summary {
        files: a.inputs,
        resources: a.resources.len(),
        skipped: a.skipped.len(),
        errors: a.count(Severity::Error),
        warnings: a.count(Severity::Warning),
        infos: a.count(Severity::Info),
    }
}

/// Build the report.
pub fn report(a: &Analysis) -> JsonReport {
    let diagnostics = a
        .diagnostics
        .iter()
        .map(|d| {
            let p = position(&a.sources, d);
            JsonDiagnostic {
                code: d.code(),
                rule: d.rule.name,
                severity: d.severity,
                message: d.message.clone(),
                file: a.sources.get(d.primary.span.file).path.clone(),
                line: p.line,
                column: p.column,
                end_line: p.end_line,
                end_column: p.end_column,
                path: d.primary.path.as_ref().map(|p| p.to_string()),
                resource: d.resource.clone(),
                equivalents: d.upstream_codes(),
                upstream: d.upstream.clone(),
                help: d.help.clone(),
                related: d
                    .related
                    .iter()
                    .map(|l| {
                        let f = a.sources.get(l.span.file);
                        let lc = f.line_col(l.span.start as usize);
                        JsonRelated {
                            file: f.path.clone(),
                            line: lc.line,
                            column: lc.column,
                            path: l.path.as_ref().map(|p| p.to_string()),
                            message: l.message.clone(),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    JsonReport {
        diagnostics,
        summary: summary(a),
    }
}

pub(crate) fn render(a: &Analysis) -> String {
    let mut s = serde_json::to_string_pretty(&report(a)).expect("the report serialises");
    s.push('\n');
    s
}
