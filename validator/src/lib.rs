//! meshc's validator: turns an [`Analysis`] into output for people and tools.
//!
//! Renderers: [`Format::Human`] (miette, with source excerpts), [`Format::Concise`]
//! (`file:line:col: severity[CODE] message`), [`Format::Json`] (the public
//! contract documented in the README), [`Format::Sarif`] (2.1.0, for code
//! scanning) and [`Format::Github`] (workflow annotations). The validator holds
//! no rule logic: everything comes from `meshc-compiler`'s diagnostics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod changes;
mod human;
mod json;
mod sarif;
pub mod service;
pub mod yaml;

use meshc_compiler::{Analysis, Diagnostic, Severity, SourceMap};

pub use json::{JsonDiagnostic, JsonReport, Summary, report as json_report};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Source excerpts and help, for terminals.
    Human,
    /// One line per diagnostic.
    Concise,
    /// `{"diagnostics": [...], "summary": {...}}`.
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// GitHub Actions workflow commands.
    Github,
}

impl Format {
    /// The names [`Format::parse`] accepts.
    pub const NAMES: [&'static str; 5] = ["human", "concise", "json", "sarif", "github"];

    /// Parse a format name.
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "human" => Format::Human,
            "concise" => Format::Concise,
            "json" => Format::Json,
            "sarif" => Format::Sarif,
            "github" => Format::Github,
            _ => return None,
        })
    }
}

/// Rendering options.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// ANSI colours in human output.
    pub color: bool,
    /// Terminal width for human output.
    pub width: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            color: false,
            width: 100,
        }
    }
}

/// Render `analysis` in `format`.
pub fn render(analysis: &Analysis, format: Format, options: RenderOptions) -> String {
    match format {
        Format::Human => human::render(analysis, options),
        Format::Concise => render_concise(analysis),
        Format::Json => json::render(analysis),
        Format::Sarif => sarif::render(analysis),
        Format::Github => render_github(analysis),
    }
}

/// Where a diagnostic starts and ends, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
}

pub(crate) fn position(sources: &SourceMap, d: &Diagnostic) -> Position {
    let f = sources.get(d.primary.span.file);
    let start = f.line_col(d.primary.span.start as usize);
    let end = f.line_col(d.primary.span.end as usize);
    Position {
        line: start.line,
        column: start.column,
        end_line: end.line,
        end_column: end.column,
    }
}

fn render_concise(analysis: &Analysis) -> String {
    let mut out = String::new();
    for d in &analysis.diagnostics {
        let p = position(&analysis.sources, d);
        let file = &analysis.sources.get(d.primary.span.file).path;
        out += &format!(
            "{file}:{}:{}: {}[{}] {}\n",
            p.line,
            p.column,
            d.severity,
            d.code(),
            d.message
        );
    }
    out
}

/// GitHub workflow commands: `::error file=..,line=..,col=..,endLine=..,endColumn=..,title=..::message`.
fn render_github(analysis: &Analysis) -> String {
    let mut out = String::new();
    for d in &analysis.diagnostics {
        let p = position(&analysis.sources, d);
        let file = &analysis.sources.get(d.primary.span.file).path;
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "notice",
        };
        let mut message = d.message.clone();
        if let Some(h) = &d.help {
            message += &format!("\nhelp: {h}");
        }
        out += &format!(
            "::{level} file={},line={},col={},endLine={},endColumn={},title={}::{}\n",
            escape_property(file),
            p.line,
            p.column,
            p.end_line,
            p.end_column,
            escape_property(&format!("{} {}", d.code(), d.rule.name)),
            escape_data(&message)
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes_properties_and_data() {
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
        assert_eq!(escape_data("x\ny"), "x%0Ay");
    }
}
