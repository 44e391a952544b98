//! Human output through miette: each diagnostic with its source excerpt, labels,
//! YAML path and help.

use std::fmt;
use std::sync::Arc;

use meshc_compiler::{Analysis, Diagnostic, Severity};
use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    NamedSource, SourceCode, SourceSpan, SpanContents,
};

use crate::RenderOptions;

/// Shared source text (no copy per diagnostic).
#[derive(Clone)]
struct Text(Arc<str>);

impl SourceCode for Text {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let c = self.0.as_ref().read_span(span, before, after)?;
        Ok(Box::new(MietteSpanContents::new(
            c.data(),
            *c.span(),
            c.line(),
            c.column(),
            c.line_count(),
        )))
    }
}

struct Report {
    code: String,
    message: String,
    severity: miette::Severity,
    help: Option<String>,
    source: NamedSource<Text>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report>,
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.code.is_empty()).then(|| Box::new(&self.code) as Box<dyn fmt::Display>)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        (!self.related.is_empty()).then(|| {
            Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic))
                as Box<dyn Iterator<Item = _>>
        })
    }
}

fn source(analysis: &Analysis, file: meshc_compiler::FileId) -> NamedSource<Text> {
    let f = analysis.sources.get(file);
    NamedSource::new(f.path.clone(), Text(f.text.clone())).with_language("yaml")
}

fn span(s: meshc_compiler::Span) -> SourceSpan {
    (s.start as usize, (s.end - s.start) as usize).into()
}

fn report(analysis: &Analysis, d: &Diagnostic) -> Report {
    let file = d.primary.span.file;
    let primary_text = match (&d.primary.message, &d.primary.path) {
        (Some(m), _) => Some(m.clone()),
        (None, Some(p)) if !p.0.is_empty() => Some(format!("at {p}")),
        _ => None,
    };
    let mut labels = vec![LabeledSpan::new_primary_with_span(
        primary_text,
        span(d.primary.span),
    )];
    let mut related = Vec::new();
    for l in &d.related {
        if l.span.file == file {
            labels.push(LabeledSpan::new_with_span(l.message.clone(), span(l.span)));
        } else {
            related.push(Report {
                code: String::new(),
                message: l.message.clone().unwrap_or_else(|| "related".into()),
                severity: miette::Severity::Advice,
                help: None,
                source: source(analysis, l.span.file),
                labels: vec![LabeledSpan::new_primary_with_span(
                    l.path.as_ref().map(|p| p.to_string()),
                    span(l.span),
                )],
                related: Vec::new(),
            });
        }
    }
    let mut message = d.message.clone();
    if let Some(r) = &d.resource {
        message = format!("{message} ({r})");
    }
    Report {
        code: d.code().to_string(),
        message,
        severity: match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Info => miette::Severity::Advice,
        },
        help: d.help.clone(),
        source: source(analysis, file),
        labels,
        related,
    }
}

pub(crate) fn render(analysis: &Analysis, options: RenderOptions) -> String {
    let theme = if options.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(options.width)
        .with_links(false)
        .with_urls(false);
    let mut out = String::new();
    for d in &analysis.diagnostics {
        let r = report(analysis, d);
        if handler.render_report(&mut out, &r).is_err() {
            out += &format!("{}: {}\n", d.code(), d.message);
        }
        out.push('\n');
    }
    let s = crate::json::summary(analysis);
    out += &format!(
        "{} error{}, {} warning{}, {} info in {} resource{} ({} file{})\n",
        s.errors,
        plural(s.errors),
        s.warnings,
        plural(s.warnings),
        s.infos,
        s.resources,
        plural(s.resources),
        s.files,
        plural(s.files)
    );
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
